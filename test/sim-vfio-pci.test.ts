/**
 * The simulated vfio-pci (lib/sim/vfio-pci*.ts) on the test function:
 * device and region info with their capabilities, config-space
 * virtualization, BAR and ROM access through the device fd, mmap, reset,
 * open and close. Expected values follow vfio_pci_core.c, vfio_pci_config.c
 * and vfio_pci_rdwr.c (Linux 6.12).
 */
import t from 'tap';
import { VfioSystemError } from '../lib/errors.js';
import { listCapabilities, listExtCapabilities } from '../lib/pci/capabilities.js';
import { PciConfig } from '../lib/pci/config-access.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { SimConfigBuilder } from '../lib/sim/pci-config-builder.js';
import { SimPciFunction } from '../lib/sim/pci-function.js';
import { TESTDEV_BAR4_AREAS, TESTDEV_ID, TESTDEV_REGION_SUBTYPE, TESTDEV_REGION_TYPE, TESTDEV_REG_SCRATCH } from '../lib/sim/pci-testdev.js';
import { addVfioPci, SimVfioPciDevice } from '../lib/sim/vfio-pci.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { PROT_READ } from '../lib/sys/sys.js';
import { queryRegionInfo } from '../lib/vfio/region.js';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_IOEVENTFD, VFIO_DEVICE_PCI_HOT_RESET } from '../lib/vfio/uapi/ioctls.js';
import { decode, encode } from '../lib/vfio/uapi/layout.js';
import { vfio_region_info } from '../lib/vfio/uapi/structs.js';
import { expectErrno, thrown } from './helpers/expect.js';
import { openEdu, openTestDev, regionOffset } from './helpers/sim-pci.js';

const RW = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
const MMAP = VFIO_REGION_INFO_FLAG_MMAP;
const CAPS = VFIO_REGION_INFO_FLAG_CAPS;

t.test('device and region info', async (t) => {
  const { device: d } = openTestDev(t);
  t.equal(d.info.flags, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, 'FLR works, so RESET is offered');
  t.equal(d.info.numRegions, 10, '9 + one device-specific region');
  t.equal(d.info.numIrqs, 5);
  const info = (i: number): { flags: number; size: number } => ({ flags: d.region(i).info.flags, size: d.region(i).size });
  t.same(info(0), { flags: RW | MMAP, size: 0x1000 }, 'BAR0: registers');
  t.same(d.region(0).info.otherCaps, []);
  t.same(info(1), { flags: 0, size: 0 }, 'BAR1 unimplemented');
  t.same(info(2), { flags: RW | MMAP | CAPS, size: 0x4000 }, 'BAR2 holds the MSI-X table');
  t.equal(d.region(2).info.msixMappable, true, 'MSIX_MAPPABLE, as vfio-pci since 4.16');
  t.equal(d.region(2).info.sparse, undefined);
  t.same(info(4), { flags: RW | MMAP | CAPS, size: 0x10000 }, 'BAR4: 64-bit prefetchable');
  t.same(d.region(4).info.sparse, TESTDEV_BAR4_AREAS, 'the variant driver restricts BAR4');
  t.equal(d.region(4).info.msixMappable, false);
  t.same(info(5), { flags: 0, size: 0 }, 'BAR5 is the upper half of BAR4');
  t.same(info(6), { flags: VFIO_REGION_INFO_FLAG_READ, size: 2048 }, 'ROM: the BAR size, read-only');
  t.same(info(7), { flags: RW, size: 4096 }, 'config space of a PCIe function');
  expectErrno(t, () => queryRegionInfo(d, 8), 'EINVAL', 'no VGA');
  t.same(info(9), { flags: VFIO_REGION_INFO_FLAG_READ | CAPS, size: 4096 }, 'device-specific region');
  t.same(d.region(9).info.type, { type: TESTDEV_REGION_TYPE, subtype: TESTDEV_REGION_SUBTYPE });
  t.equal(d.region(9).info.offset, 9n << 40n);
  expectErrno(t, () => queryRegionInfo(d, 10), 'EINVAL', 'past the last region');
  t.same(d.regions().map((r) => r.index), [0, 1, 2, 3, 4, 5, 6, 7, 9]);
});

t.test('region info with too small an argsz reports the size the capabilities need', async (t) => {
  const { device: d, sim } = openTestDev(t);
  const buf = encode(vfio_region_info, { argsz: 32, index: 4 });
  sim.ioctl(d.fd, VFIO_DEVICE_GET_REGION_INFO, buf);
  const r = decode(vfio_region_info, buf);
  t.equal(r.argsz, 32 + 48, 'a sparse capability with two areas: 16 + 2 * 16 bytes, padded to 8');
  t.equal(r.cap_offset, 0, 'no capability copied');
  t.equal(r.flags, RW | MMAP | CAPS);
  expectErrno(t, () => sim.ioctl(d.fd, VFIO_DEVICE_GET_REGION_INFO, encode(vfio_region_info, { argsz: 31, index: 0 })), 'EINVAL', 'argsz below 32');
  expectErrno(t, () => sim.ioctl(d.fd, VFIO_DEVICE_GET_REGION_INFO, new Uint8Array(16)), 'EFAULT', 'a short buffer');
});

t.test('without MSIX_MAPPABLE the table pages are left out of the BAR mmap', async (t) => {
  const { device: d, sim } = openTestDev(t, { msixMappable: false });
  const r = d.region(2);
  t.equal(r.info.msixMappable, false);
  t.same(r.info.sparse, [{ offset: 0x1000, size: 0x3000 }], 'the table occupies page 0');
  expectErrno(t, () => sim.mmap(d.fd, 4096, PROT_READ, regionOffset(2, 0)), 'EINVAL', 'the table page');
  const areas = r.mmap();
  t.same(areas.map((a) => [a.offset, a.size]), [[0x1000, 0x3000]]);
});

t.test('IRQ info', async (t) => {
  const { device: d } = openTestDev(t, { msixEntries: 64 });
  t.same(d.irqInfo(0), { index: 0, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, count: 1 });
  t.same(d.irqInfo(1), { index: 1, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 4 }, 'MSI: the capable count of the device');
  t.same(d.irqInfo(2), { index: 2, flags: VFIO_IRQ_INFO_EVENTFD, count: 64 }, 'MSI-X can grow: no NORESIZE');
  t.same(d.irqInfo(3), { index: 3, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 1 }, 'ERR on PCIe');
  t.same(d.irqInfo(4), { index: 4, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 1 });
  expectErrno(t, () => d.irqInfo(5), 'EINVAL', 'index 5');
  const { device: fixed } = openTestDev(t, { dynMsix: false });
  t.equal(fixed.irqInfo(2).flags, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 'without dynamic MSI-X allocation: NORESIZE');
});

t.test('config space as vfio-pci virtualizes it', async (t) => {
  const { device: d, driver } = openTestDev(t);
  const cfg = new PciConfig(d.region(7));
  const image = cfg.image();
  t.equal(cfg.read16(0x04), 0x0002, 'memory decode on, bus mastering cleared at open');
  t.same(
    listCapabilities(image).map((c) => [c.id, c.offset]),
    [
      [0x01, 0x40],
      [0x05, 0x50],
      [0x11, 0x70],
      [0x10, 0x80],
      [0x09, 0xc0],
    ],
  );
  t.same(
    listExtCapabilities(image).map((c) => [c.id, c.offset]),
    [
      [0x01, 0x100],
      [0x03, 0x148],
      [0x0e, 0x160],
      [0x18, 0x170],
    ],
    'L1SS (no length known to vfio-pci) unlinked from the chain',
  );
  t.equal(cfg.read32(0x154), 0x1601001e, 'but its bytes are still there, raw');
  t.equal(cfg.read16(0x42), 0x0603, 'PM: PME support hidden, D1 and D2 kept');
  t.equal(driver.fn.configRead(0x42, 2), 0xfe03, 'the device supports PME from every state');
  t.equal(cfg.read16(0x52), 0x0180, 'MSI flags: 64-bit, masking, and one vector until MSI was enabled with more (msi_qmax)');
  t.equal(cfg.read16(0x72), 0x000f, 'MSI-X flags straight from the device: 16 entries');
  cfg.write16(0x72, 0xc000);
  t.equal(cfg.read16(0x72), 0x000f, 'MSI-X control is not writable through vfio-pci');
  t.equal(driver.fn.configRead(0x72, 2), 0x000f);

  cfg.write32(0x24, 0xffffffff);
  cfg.write32(0x20, 0xffffffff);
  t.equal(cfg.read32(0x20), 0xffff000c, 'BAR4 sizing: 64 KiB, prefetchable, 64-bit');
  t.equal(cfg.read32(0x24), 0xffffffff, 'upper half');
  cfg.write32(0x18, 0xffffffff);
  t.equal(cfg.read32(0x18), 0xffffc000, 'BAR2 sizing');
  cfg.write32(0x30, 0xffffffff);
  t.equal(cfg.read32(0x30), 0xfffff801, 'ROM sizing keeps the enable bit');
  t.equal(driver.fn.configRead(0x20, 4), 0x0000000c, 'the device\'s BARs are untouched');

  cfg.write32(0x68, 0x12345678);
  t.equal(cfg.read32(0x68), 0x12345678, 'a gap between capabilities is raw device space');
  cfg.write32(0x60, 0xffffffff);
  t.equal(cfg.read32(0x60), 0x0000000f, 'MSI mask bits go to the device, which has four vectors');
  cfg.write32(0xc8, 0xcafef00d);
  t.equal(cfg.read32(0xc8), 0xcafef00d, 'vendor-specific capabilities are written raw');
  cfg.write32(0x108, 0xffffffff);
  t.equal(cfg.read32(0x108), 0x03fff031, 'AER: only the defined uncorrectable bits are writable');
  cfg.write32(0x100, 0);
  t.equal(cfg.read32(0x100), 0x14820001, 'extended headers are virtualized');

  cfg.write16(0x04, 0x0402);
  t.equal(cfg.read16(0x04), 0x0402, 'INTx disable is virtualized');
  t.equal(driver.fn.configRead(0x04, 2) & 0x0400, 0x0400, 'and follows to the device');
  t.equal(driver.irqs.virqDisabled, true);
  cfg.write16(0x04, 0x0002);
  t.equal(driver.irqs.virqDisabled, false);
  expectErrno(t, () => d.sys.pread(d.fd, new Uint8Array(4), regionOffset(7, 4096)), 'EFAULT', 'past the config space');
  t.equal(d.sys.pread(d.fd, new Uint8Array(0), regionOffset(7, 4096)), 0, 'an empty read');
});

t.test('power state and memory decode gate BAR access', async (t) => {
  const { device: d, driver } = openTestDev(t);
  const cfg = new PciConfig(d.region(7));
  const bar0 = d.region(0);
  t.equal(bar0.read32(0), TESTDEV_ID);
  cfg.write16(0x44, 0x0003);
  t.equal(driver.fn.powerState, 3, 'D3hot through pci_set_power_state');
  expectErrno(t, () => bar0.read32(0), 'EIO', 'BAR read in D3hot');
  cfg.write16(0x44, 0x0000);
  t.equal(bar0.read32(0), TESTDEV_ID, 'back in D0');
  cfg.write16(0x04, 0x0000);
  expectErrno(t, () => bar0.read32(0), 'EIO', 'memory decode off');
  const mapped = bar0.mmap()[0];
  const e = thrown(() => mapped?.read32(0));
  t.type(e, VfioSystemError, 'a mapped access with decode off (SIGBUS on a real kernel)');
  t.equal((e as VfioSystemError).code, 'EFAULT');
  cfg.write16(0x04, 0x0002);
  t.equal(mapped?.read32(0), TESTDEV_ID);
});

t.test('BAR and ROM access through the device fd', async (t) => {
  const { device: d, driver, sim } = openTestDev(t);
  const fd = d.fd;
  const read = (region: number, offset: number, length: number): number[] => {
    const buf = new Uint8Array(length);
    const n = sim.pread(fd, buf, regionOffset(region, offset));
    return [...buf.subarray(0, n)];
  };
  t.same(read(0, 0, 4), [0x71, 0xde, 0x57, 0x7e], 'identification');
  d.region(0).write32(TESTDEV_REG_SCRATCH, 0xdeadbeef);
  t.equal(d.region(0).read32(TESTDEV_REG_SCRATCH), 0xdeadbeef);
  t.same(read(0, 0xffc, 8), [0, 0, 0, 0], 'cut at the end of the BAR');
  expectErrno(t, () => read(0, 0x1000, 4), 'EINVAL', 'at the end of the BAR');
  expectErrno(t, () => read(1, 0, 4), 'EINVAL', 'an unimplemented BAR');

  sim.pwrite(fd, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), regionOffset(2, 0x100));
  t.same(read(2, 0xf8, 16), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8], 'the MSI-X table reads as all ones, the memory after it is there');
  sim.pwrite(fd, new Uint8Array(16), regionOffset(2, 0));
  t.equal(driver.fn.msix?.masked(0), true, 'writes to the table are dropped');
  t.same(read(2, 0x3000, 8), [0, 0, 0, 0, 0, 0, 0, 0], 'the PBA is readable');

  t.same(read(6, 0, 4), [0x55, 0xaa, 0x02, 0x00], 'ROM image');
  t.same(read(6, 1022, 4), [0, 0, 0xff, 0xff], 'past the image: all ones');
  expectErrno(t, () => sim.pwrite(fd, new Uint8Array(4), regionOffset(6, 0)), 'EINVAL', 'ROM write');

  t.same(read(9, 0x10, 4), [0x10, 0x11, 0x12, 0x13], 'device-specific region');
  t.same(read(9, 0xffe, 4), [0xfe, 0xff], 'cut at its end');
  expectErrno(t, () => read(9, 0x1000, 1), 'EINVAL', 'past it');
  expectErrno(t, () => sim.pwrite(fd, new Uint8Array(1), regionOffset(9, 0)), 'EINVAL', 'read-only');
  expectErrno(t, () => read(8, 0, 4), 'EINVAL', 'VGA');
  expectErrno(t, () => read(10, 0, 4), 'EINVAL', 'no region 10');
});

t.test('mmap of BARs', async (t) => {
  const { device: d, driver, sim } = openTestDev(t);
  const regs = d.region(0).mmap()[0];
  t.equal(regs?.read32(0), TESTDEV_ID, 'registers through a trapped mapping');
  regs?.write32(TESTDEV_REG_SCRATCH, 0x01020304);
  t.equal(d.region(0).read32(TESTDEV_REG_SCRATCH), 0x01020304);
  t.same([...(regs?.copyOut(0, 8) ?? [])], [0x71, 0xde, 0x57, 0x7e, 4, 3, 2, 1], 'bulk copies are register accesses too');

  const ram = d.region(4).mmap();
  t.same(ram.map((a) => [a.offset, a.size]), [[0, 0x4000], [0x8000, 0x8000]], 'the sparse areas');
  ram[1]?.write32(0x10, 0xa5a5a5a5);
  t.equal(d.region(4).read32(0x8010), 0xa5a5a5a5, 'memory BARs are shared memory');
  expectErrno(t, () => sim.mmap(d.fd, 4096, PROT_READ, regionOffset(4, 0x4000)), 'EINVAL', 'outside the sparse areas');
  expectErrno(t, () => sim.mmap(d.fd, 0x8000, PROT_READ, regionOffset(4, 0x2000)), 'EINVAL', 'across two areas');

  const table = d.region(2).mmap()[0];
  t.equal(table?.read32(0xc), 1, 'with MSIX_MAPPABLE the real table is visible: vector 0 masked');
  t.equal(driver.fn.msix?.masked(0), true);

  expectErrno(t, () => sim.mmap(d.fd, 4096, PROT_READ, regionOffset(6, 0)), 'EINVAL', 'the ROM');
  expectErrno(t, () => sim.mmap(d.fd, 4096, PROT_READ, regionOffset(7, 0)), 'EINVAL', 'config space');
  expectErrno(t, () => sim.mmap(d.fd, 8192, PROT_READ, regionOffset(0, 0)), 'EINVAL', 'past the BAR');
  expectErrno(t, () => sim.mmap(d.fd, 4096, PROT_READ, regionOffset(9, 0)), 'EINVAL', 'a region without MMAP');
  expectErrno(t, () => sim.mmap(d.fd, 4096, PROT_READ, regionOffset(10, 0)), 'EINVAL', 'no such region');
});

t.test('reset, open and close', async (t) => {
  const { device: d, driver, container } = openTestDev(t);
  const bar0 = d.region(0);
  const cfg = new PciConfig(d.region(7));
  bar0.write32(TESTDEV_REG_SCRATCH, 7);
  cfg.write8(0x0c, 0x10);
  d.reset();
  t.equal(bar0.read32(TESTDEV_REG_SCRATCH), 0, 'FLR cleared the device');
  t.equal(cfg.read8(0x0c), 0x10, 'config space restored around it');
  cfg.write16(0x88, 0x8000);
  t.equal(cfg.read16(0x88) & 0x8000, 0, 'the FLR bit reads 0');
  bar0.write32(TESTDEV_REG_SCRATCH, 9);
  cfg.write16(0x04, 0x0006);
  t.equal(driver.fn.busMaster, true);
  d.close();
  t.equal(driver.fn.busMaster, false, 'closing restores the config saved at open');
  t.equal(driver.vconfig, null);
  const again = container.openDevice(driver.name);
  t.equal(again.region(0).read32(TESTDEV_REG_SCRATCH), 0, 'opening resets an FLR-capable function');
  t.equal(new PciConfig(again.region(7)).read8(0x0c), 0x00);

  const edu = openEdu(t);
  edu.device.region(0).write32(4, 0x0f0f0f0f);
  edu.device.close();
  t.equal(edu.container.openDevice(edu.driver.name).region(0).read32(4), 0xf0f0f0f0, 'edu has no reset: its registers outlive a close');
});

t.test('hot reset and unsupported ioctls', async (t) => {
  const { device: d, sim } = openTestDev(t);
  const hdr = (argsz: number, flags = 0): Uint8Array => {
    const b = new Uint8Array(16);
    new DataView(b.buffer).setUint32(0, argsz, true);
    new DataView(b.buffer).setUint32(4, flags, true);
    return b;
  };
  expectErrno(t, () => sim.ioctl(d.fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hdr(16)), 'ENODEV', 'alone on a root bus: no slot or bus reset');
  expectErrno(t, () => sim.ioctl(d.fd, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, hdr(8)), 'EINVAL', 'argsz too small');
  expectErrno(t, () => sim.ioctl(d.fd, VFIO_DEVICE_PCI_HOT_RESET, hdr(16, 1)), 'EINVAL', 'flags must be 0');
  expectErrno(t, () => sim.ioctl(d.fd, VFIO_DEVICE_PCI_HOT_RESET, hdr(16)), 'ENODEV', 'hot reset');
  expectErrno(t, () => sim.ioctl(d.fd, VFIO_DEVICE_IOEVENTFD, hdr(32)), 'ENOTTY', 'ioeventfds are not simulated');
});

t.test('capability lengths vfio-pci computes decide what is read-only', async (t) => {
  /**
   * A function whose capabilities claim 4 bytes in the device and leave the
   * rest writable: vfio-pci makes the length it computes read-only and
   * passes what lies past it through raw, so one write on each side of the
   * computed end shows the length.
   */
  class Caps extends SimPciFunction {
    constructor() {
      const b = new SimConfigBuilder({ vendor: 1, device: 2, revision: 0, classCode: 0, subsystemVendor: 0, subsystemId: 0, interruptPin: 0, interruptLine: 0, command: 0, size: 4096 });
      b.capability(0x12, 0xd0, 4).set(0xd4, [0x0f]); // SATA, registers inline: 16 bytes
      b.capability(0x12, 0xc0, 4); // SATA, registers in a BAR: 8 bytes
      b.capability(0x08, 0xa0, 4).set(0xa3, [0x00]); // HyperTransport slave/primary: 28 bytes
      b.capability(0x08, 0x80, 4).set(0x83, [0x20]); // HyperTransport host/secondary: 24 bytes
      b.capability(0x07, 0x60, 4).set(0x62, [0x00, 0x10]); // PCI-X version 1: 24 bytes
      b.capability(0x07, 0x50, 4); // PCI-X version 0: 8 bytes
      b.capability(0x10, 0x40, 4).set(0x42, [0x91, 0x00]); // PCIe v1 root-complex endpoint: 12 bytes
      b.capability(0x09, 0xf0, 4).set(0xf2, [0x0c]); // vendor-specific (written raw: its length does not show)
      b.extCapability(0x0b, 1, 0x100, 4).set(0x104, [0, 0, 0x40, 0x01]); // VSEC (written raw)
      b.extCapability(0x23, 1, 0x140, 4).set(0x144, [0, 0, 0x80, 0x01]); // DVSEC (written raw)
      b.extCapability(0x15, 1, 0x180, 4).set(0x188, [0x40]); // resizable BAR, 2 BARs: 20 bytes
      b.extCapability(0x0d, 1, 0x1c0, 4).set(0x1c4, [0x20, 0x40]); // ACS with a 64-bit egress vector: 16 bytes
      b.extCapability(0x0d, 1, 0x200, 4); // ACS without: 8 bytes
      b.extCapability(0x02, 1, 0x240, 4); // virtual channels: hidden by the simulator
      super({ config: b.build(), bars: [] });
    }
    protected override mmioRead(): bigint {
      return 0n;
    }
    protected override mmioWrite(): void {}
    protected override resetDevice(): void {}
  }
  const sim = new SimKernel();
  const drv = addVfioPci(sim, new SimVfioPciDevice('0000:00:09.0', new Caps()));
  const c = VfioContainer.open({ sys: sim });
  t.teardown(() => c.close());
  const cfg = new PciConfig(c.openDevice(drv.name).region(7));
  const length = (at: number, guess: number): [boolean, boolean] => {
    const probe = (o: number): boolean => {
      cfg.write8(o, 0xa5);
      return cfg.read8(o) === 0xa5;
    };
    return [probe(at + guess - 1), probe(at + guess)];
  };
  const cases: [string, number, number][] = [
    ['SATA inline', 0xd0, 16],
    ['SATA', 0xc0, 8],
    ['HT long', 0xa0, 28],
    ['HT short', 0x80, 24],
    ['PCI-X v1', 0x60, 24],
    ['PCI-X v0', 0x50, 8],
    ['PCIe v1 RC endpoint', 0x40, 12],
    ['resizable BAR', 0x180, 20],
    ['ACS with egress', 0x1c0, 16],
    ['ACS', 0x200, 8],
  ];
  for (const [name, at, len] of cases) t.same(length(at, len), [false, true], `${name}: ${len} bytes`);
  t.same(
    listExtCapabilities(cfg.image()).map((e) => e.offset),
    [0x100, 0x140, 0x180, 0x1c0, 0x200],
    'the VC capability is unlinked',
  );
  t.same(listCapabilities(cfg.image()).map((e) => e.offset), [0xf0, 0x40, 0x50, 0x60, 0x80, 0xa0, 0xc0, 0xd0], 'QEMU links new capabilities first');
});

t.test('trapped bulk writes are split like a BAR pwrite', async (t) => {
  const { device: d, driver } = openTestDev(t);
  const regs = d.region(0).mmap()[0];
  regs?.copyIn(TESTDEV_REG_SCRATCH - 2, new Uint8Array([0xee, 0xee, 1, 2, 3, 4]));
  t.equal(driver.fn.barRead(0, TESTDEV_REG_SCRATCH, 4), 0x04030201n, 'a 2-byte access, then a 4-byte one');
});
