/**
 * Contract tests for QEMU's edu device on vfio-pci: the same assertions on
 * the simulated kernel (`npm test`) and on the real one (`npm run
 * test:kernel` inside ../shared/vm/run, `$EDU_BDF`). Values were first
 * observed on the guest; where the two disagree, the kernel is right.
 *
 * The real edu keeps its registers across opens (it has no reset), so no
 * test assumes what a previous one left in them.
 */
import t, { type Test } from 'tap';
import { ConfigSpaceError, InterruptGateClosedError } from '../lib/errors.js';
import { PciConfig } from '../lib/pci/config-access.js';
import { InterruptGate } from '../lib/pci/interrupt-gate.js';
import { VfioPciDevice } from '../lib/pci/pci-device.js';
import { PCI_COMMAND, PCI_COMMAND_MASTER } from '../lib/pci/regs.js';
import { VfioContainer } from '../lib/vfio/container.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { queryRegionInfo } from '../lib/vfio/region.js';
import { EventFd } from '../lib/vfio/eventfd.js';
import { backend, onKernel } from './helpers/backend.js';
import { eventsDuring, nextEvent, until } from './helpers/events.js';
import { expectErrno, thrown } from './helpers/expect.js';
import { EDU_CONFIG_STATE, EDU_MSI, programEdu } from './helpers/pci-guest.js';

const EDU_ID = 0x010000ed;
const RW = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;

function open(t: Test): { c: VfioContainer; d: VfioDevice } {
  const b = backend();
  if (b.edu === '') throw new Error('$EDU_BDF is not set (run inside ../shared/vm/run)');
  const c = VfioContainer.open({ sys: b.sys });
  t.teardown(() => c.close());
  return { c, d: c.openDevice(b.edu) };
}

t.test('device, region and IRQ infos', async (t) => {
  const { d } = open(t);
  t.equal(d.info.flags, VFIO_DEVICE_FLAGS_PCI, 'PCI, no RESET (edu has no reset method)');
  t.equal(d.info.numRegions, 9);
  t.equal(d.info.numIrqs, 5);
  expectErrno(t, () => d.reset(), 'EINVAL', 'VFIO_DEVICE_RESET');
  const sizes = [1 << 20, 0, 0, 0, 0, 0, 0, 256];
  for (let i = 0; i < 8; i++) {
    const r = d.region(i);
    t.equal(r.size, sizes[i], `region ${i} size`);
    t.equal(r.info.flags, i === 0 ? RW | VFIO_REGION_INFO_FLAG_MMAP : i === 7 ? RW : 0, `region ${i} flags`);
    t.equal(r.info.offset, BigInt(i) << 40n, `region ${i} offset`);
    t.same(r.info.otherCaps, [], `region ${i} has no capabilities`);
    t.equal(r.info.msixMappable, false);
  }
  expectErrno(t, () => queryRegionInfo(d, VFIO_PCI_VGA_REGION_INDEX), 'EINVAL', 'VGA region');
  t.same(d.regions().map((r) => r.index), [0, 1, 2, 3, 4, 5, 6, 7], 'regions() leaves VGA out');
  t.same(d.irqInfo(VFIO_PCI_INTX_IRQ_INDEX), { index: 0, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, count: 1 });
  t.same(d.irqInfo(VFIO_PCI_MSI_IRQ_INDEX), { index: 1, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 1 });
  t.same(d.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX), { index: 2, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 0 });
  expectErrno(t, () => d.irqInfo(VFIO_PCI_ERR_IRQ_INDEX), 'EINVAL', 'ERR is PCIe only');
  t.same(d.irqInfo(VFIO_PCI_REQ_IRQ_INDEX), { index: 4, flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 1 });
  t.equal(d.migrationFlags(), 0, 'no migration (ENOTTY)');
});

t.test('config header, MSI capability and BAR0 through VfioPciDevice', async (t) => {
  const { d } = open(t);
  using p = new VfioPciDevice(d);
  const h = p.header;
  t.equal(h.vendorId, 0x1234);
  t.equal(h.deviceId, 0x11e8);
  t.equal(h.revisionId, 0x10);
  t.equal(h.classCode, 0x00ff00);
  t.equal(h.subsystemVendorId, 0x1af4);
  t.equal(h.subsystemId, 0x1100);
  t.equal(h.interruptPin, 1);
  t.equal(h.capabilitiesPointer, 0x40);
  t.equal(h.command & PCI_COMMAND_MASTER, 0, 'vfio-pci cleared bus mastering at open');
  t.same(p.capabilities, [{ id: 0x05, offset: 0x40, next: 0 }], 'one capability: MSI at 0x40');
  t.same(p.extCapabilities, []);
  const msi = p.msi;
  t.ok(msi);
  t.equal(msi?.offset, 0x40);
  t.equal(msi?.is64Bit, true);
  t.equal(msi?.perVectorMasking, false);
  t.equal(msi?.vectorsCapable, 1);
  t.equal(msi?.size, 0x0e);
  t.equal(p.msix, undefined);
  t.equal(p.bars.length, 1, 'BAR0 only (sized through config space and equal to its region)');
  const bar = p.bar(0);
  t.equal(bar.kind, 'mem32');
  t.equal(bar.prefetchable, false);
  t.equal(bar.size, 1 << 20);
  t.same(bar.mmapLayout(), [{ offset: 0, size: 1 << 20 }]);
  t.equal(p.interruptMode, 'intx', 'INTx wired at open, as QEMU does');
});

t.test('config space virtualization', async (t) => {
  const { d } = open(t);
  const cfg = new PciConfig(d.region(VFIO_PCI_CONFIG_REGION_INDEX));
  const bar0 = cfg.read32(0x10);
  t.equal(bar0, 0xfea00000, 'BAR0 as the host assigned it');
  cfg.write32(0x10, 0xffffffff);
  t.equal(cfg.read32(0x10), 0xfff00000, 'BAR sizing answers ~(1 MiB - 1)');
  cfg.write32(0x10, 0x12345678);
  t.equal(cfg.read32(0x10), 0x12300000, 'BAR addresses keep the size alignment');
  cfg.write32(0x10, bar0);
  t.equal(cfg.read32(0x14), 0, 'BAR1 unimplemented');
  cfg.write32(0x00, 0xffffffff);
  t.equal(cfg.read32(0x00), 0x11e81234, 'ids are read-only');
  cfg.write16(0x06, 0xffff);
  t.equal(cfg.read16(0x06), 0x0010, 'status writes are dropped (CAP_LIST only)');
  cfg.write8(0x34, 0x80);
  t.equal(cfg.read8(0x34), 0x40, 'capability pointer is read-only');
  cfg.write32(0x3c, 0x22110305);
  t.equal(cfg.read32(0x3c), 0x00000105, 'interrupt line writable, pin read-only');
  cfg.write16(0x42, 0x0071);
  t.equal(cfg.read16(0x42), 0x0000, 'MSI flags: enable only through SET_IRQS, queue size clamped, and the low byte is the user\'s');
  cfg.write16(0x42, 0x0080);
  t.equal(cfg.read16(0x42), 0x0080);
  t.same([...cfg.region.readBytes(1, 3)], [0x12, 0xe8, 0x11], 'an unaligned read is split');
  expectErrno(t, () => d.sys.pread(d.fd, new Uint8Array(8), (7n << 40n) + 0xfcn), 'EFAULT', 'a read past the config space');
});

t.test('BAR0 mmapped: identification and liveness registers', async (t) => {
  const { d } = open(t);
  const areas = d.region(0).mmap();
  t.equal(areas.length, 1);
  const a = areas[0];
  if (a === undefined) return;
  t.equal(a.read32(0x00), EDU_ID, 'identification');
  for (const v of [0x12345678, 0, 0xffffffff]) {
    a.write32(0x04, v);
    t.equal(a.read32(0x04), ~v >>> 0, `liveness of 0x${v.toString(16)}`);
  }
  t.equal(a.read16(0x00), 0, 'a 2-byte access is invalid: reads 0');
  t.equal(a.read64(0x00), 0xffff_ffff_ffff_ffffn, 'an 8-byte access below 0x80 reads all ones');
  t.equal(a.read32(0x0c), 0xffffffff, 'an unused register reads all ones');
  a.write32(0x80, 0x11223344);
  t.equal(a.read64(0x80), 0x11223344n, 'a 4-byte write to a DMA register clears its upper half');
  // The same registers through pread/pwrite.
  const r = d.region(0);
  r.unmap();
  t.equal(r.read32(0x00), EDU_ID);
  r.write32(0x04, 0xa5a5a5a5);
  t.equal(r.read32(0x04), 0x5a5a5a5a);
  t.same([...r.readBytes(0xffffc, 4)], [0xff, 0xff, 0xff, 0xff], 'the last dword');
});

t.test('an MSI reaches the eventfd when edu raises an interrupt', async (t) => {
  const { d } = open(t);
  using p = new VfioPciDevice(d);
  const regs = p.bar(0).map()[0];
  if (regs === undefined) return;
  regs.write32(0x64, 0xffffffff);
  p.writeConfig(0x44, 4, 0xfee01000);
  p.writeConfig(0x48, 4, 0);
  p.writeConfig(0x4c, 2, 0x4041);
  p.writeConfig(0x42, 2, 0x0081);
  t.equal(p.interruptMode, 'msi');
  t.same(p.wiredVectors, [0]);
  t.equal(p.readConfig(0x40, 4), 0x00810005, 'the guest sees MSI enabled');

  // Without bus mastering the message goes nowhere.
  regs.write32(0x60, 0x1);
  t.same(await eventsDuring(p, 'msi', 100), [], 'no MSI without bus mastering');
  regs.write32(0x64, 0x1);

  p.writeConfig(PCI_COMMAND, 2, p.readConfig(PCI_COMMAND, 2) | PCI_COMMAND_MASTER);
  const raised = nextEvent(p, 'msi');
  regs.write32(0x60, 0x2);
  t.same(await raised, [{ address: 0xfee01000n, data: 0x4041 }, { kind: 'msi', vector: 0 }], 'raise-interrupt register');
  t.equal(regs.read32(0x24), 0x2, 'interrupt status');
  regs.write32(0x64, 0x2);
  t.equal(regs.read32(0x24), 0, 'acknowledged');

  // Factorial with the interrupt bit.
  regs.write32(0x20, 0x80);
  const fact = nextEvent(p, 'msi');
  regs.write32(0x08, 5);
  t.ok(await fact, 'FACT_IRQ as an MSI');
  t.ok(await until(() => (regs.read32(0x20) & 0x01) === 0), 'computation done');
  t.equal(regs.read32(0x08), 120, '5!');
  t.equal(regs.read32(0x24), 0x1, 'FACT_IRQ in the interrupt status');
  regs.write32(0x64, 0x1);
  regs.write32(0x20, 0);

  p.writeConfig(0x42, 2, 0x0080);
  t.equal(p.interruptMode, 'intx', 'disabling MSI goes back to INTx');
});

t.test("saveConfig/loadConfig round trip: QEMU's bytes, writable config restored, MSI after the gate opens", async (t) => {
  const { d } = open(t);
  const gate = new InterruptGate();
  using p = new VfioPciDevice(d, { interruptGate: gate });
  t.equal(p.interruptMode, 'none', 'behind a closed gate not even INTx is wired');
  const regs = p.bar(0).map()[0];
  if (regs === undefined) return;
  regs.write32(0x64, 0xffffffff);
  programEdu(p);
  t.equal(p.interruptMode, 'none', 'the guest enabled MSI: only recorded');
  const saved = p.saveConfig();
  t.same(saved, EDU_CONFIG_STATE, 'the bytes QEMU would write for this edu');

  p.writeConfig(0x3c, 1, 0x05);
  p.writeConfig(0x44, 4, 0xfee02000);
  p.writeConfig(0x4c, 2, 0x4077);
  t.equal(p.readConfig(0x4c, 2), 0x4077, 'modified');
  p.loadConfig(saved);
  t.equal(p.readConfig(0x44, 4), 0xfee01000, 'MSI address back');
  t.equal(p.readConfig(0x4c, 2), 0x4041, 'MSI data back');
  t.equal(p.qemuConfig()[0x3c], 0x0b, 'interrupt line back in QEMU\'s view');
  t.same(p.saveConfig(), saved, 'saved again: equal');
  t.equal(PCI_COMMAND_MASTER & d.region(VFIO_PCI_CONFIG_REGION_INDEX).read16(PCI_COMMAND), PCI_COMMAND_MASTER, 'the command register reached the device');
  t.equal(p.interruptMode, 'none', 'loaded, still behind the gate');
  t.type(thrown(() => p.checkCanStart()), InterruptGateClosedError, 'the VM may not start yet');
  const other = saved.slice();
  other[4 + 2] ^= 1;
  t.throws(() => p.loadConfig(other), ConfigSpaceError, 'another device id is refused');

  gate.open();
  t.equal(p.interruptMode, 'msi', 'wired when the gate opens');
  t.same(p.wiredVectors, [0]);
  const raised = nextEvent(p, 'msi');
  regs.write32(0x60, 0x2);
  t.same(await raised, [EDU_MSI, { kind: 'msi', vector: 0 }], 'the MSI reaches its eventfd');
  regs.write32(0x64, 0x2);
});

t.test('INTx: automasked, re-signalled on unmask while asserted', async (t) => {
  const { d } = open(t);
  using p = new VfioPciDevice(d);
  const regs = p.bar(0).map()[0];
  if (regs === undefined) return;
  regs.write32(0x64, 0xffffffff);
  const up = nextEvent(p, 'intx');
  regs.write32(0x60, 0x4);
  t.same(await up, [true], 'asserted');
  t.same(await eventsDuring(p, 'intx', 100), [], 'masked until the end of interrupt');
  const again = nextEvent(p, 'intx');
  p.intxEoi();
  t.same(await again, [false], 'deasserted at EOI');
  t.same(await nextEvent(p, 'intx'), [true], 'still asserted by edu: signalled again');
  regs.write32(0x64, 0x4);
  const down = nextEvent(p, 'intx');
  p.intxEoi();
  t.same(await down, [false]);
  t.same(await eventsDuring(p, 'intx', 100), [], 'acknowledged: nothing more');
});

t.test('SET_IRQS errnos', async (t) => {
  const { d } = open(t);
  using efd = new EventFd(d.sys);
  const set = (buf: Uint8Array): number => d.sys.ioctl(d.fd, VFIO_DEVICE_SET_IRQS, buf);
  expectErrno(t, () => set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [efd.fd, efd.fd])), 'EINVAL', 'two MSI vectors on a one-vector device');
  expectErrno(t, () => set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSIX_IRQ_INDEX, 0, [efd.fd])), 'EINVAL', 'MSI-X on a device without it');
  expectErrno(t, () => set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_ERR_IRQ_INDEX, 0, [efd.fd])), 'EINVAL', 'ERR on conventional PCI');
  expectErrno(t, () => set(irqSetNone(VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_MSI_IRQ_INDEX, 0, 1)), 'ENOTTY', 'MSI masking is not exported');
  expectErrno(t, () => set(irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, 0)), 'EINVAL', 'disabling MSI that is not enabled');
  t.equal(set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [efd.fd])), 0, 'INTx on');
  expectErrno(t, () => set(irqSetEventfd(VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_INTX_IRQ_INDEX, 0, [efd.fd])), 'ENOTTY', 'no mask eventfd');
  expectErrno(t, () => set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [efd.fd])), 'EINVAL', 'MSI while INTx is on');
  t.equal(set(irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, 0)), 0, 'INTx off');
  expectErrno(t, () => set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [d.fd])), 'EINVAL', 'MSI with a file that is not an eventfd');
  t.equal(set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, [efd.fd])), 0, 'REQ on');
  t.equal(set(irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, 1)), 0, 'REQ loopback');
  t.equal(efd.drain(), 1n);
  t.equal(set(irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, 0)), 0, 'REQ off');
  expectErrno(t, () => set(irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, 0)), 'EINVAL', 'REQ off twice');
});

t.test('sysfs placement', async (t) => {
  const b = backend();
  t.equal(b.sys.realpath(`/sys/bus/pci/devices/${b.edu}`), `/sys/devices/pci0000:00/${b.edu}`);
  t.equal(b.sys.readlink(`/sys/bus/pci/devices/${b.edu}/driver`).split('/').pop(), 'vfio-pci');
  if (onKernel) t.comment(`edu ${b.edu} in IOMMU group ${b.sys.readlink(`/sys/bus/pci/devices/${b.edu}/iommu_group`)}`);
});
