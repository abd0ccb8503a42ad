/**
 * Contract tests: the same assertions on the simulated kernel (`npm test`)
 * and on the real one (`npm run test:kernel` inside ../shared/vm/run), with
 * two mtty-2 mdevs. Where they disagree, the kernel is right.
 */
import t from 'tap';
import { VfioArgumentError, VfioSystemError } from '../lib/errors.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { queryRegionInfo } from '../lib/vfio/region.js';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VFIO_TYPE1v2_IOMMU,
} from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { backend } from './helpers/backend.js';
import { expectErrno } from './helpers/expect.js';

// 16550 registers (offsets in BAR0) and bits used below.
const UART_TX = 0;
const UART_RX = 0;
const UART_IER = 1;
const UART_FCR = 2;
const UART_LSR = 5;
const UART_IER_RDI = 0x01;
const UART_FCR_ENABLE_FIFO = 0x01;
const UART_FCR_TRIGGER_4 = 0x40;
const UART_LSR_DR = 0x01;

t.test('open both mtty devices through a container and their groups', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const d0 = c.openDevice(b.mttys[0]);
  const d1 = c.openDevice(b.mttys[1]);
  t.equal(c.iommuType, VFIO_TYPE1v2_IOMMU, 'type1v2 chosen');
  t.equal(c.groups.size, 2, 'one group each');
  t.not(d0.group, d1.group);
  for (const d of [d0, d1]) {
    t.equal(d.info.flags, VFIO_DEVICE_FLAGS_PCI, 'mtty reports only FLAGS_PCI');
    t.equal(d.info.numRegions, 9);
    t.equal(d.info.numIrqs, 5);
    t.ok(d.group.status().containerSet);
  }
  t.equal(d0.name, b.mttys[0]);
});

t.test('config header', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const d = c.openDevice(b.mttys[0]);
  const cfg = d.region(VFIO_PCI_CONFIG_REGION_INDEX);
  t.equal(cfg.read32(0), 0x32534348, 'vendor/device dword');
  t.equal(cfg.read16(0), 0x4348, 'vendor');
  t.equal(cfg.read16(2), 0x3253, 'device');
  t.equal(cfg.read8(8), 0x10, 'revision');
  t.same([...cfg.readBytes(9, 3)], [0x02, 0x00, 0x07], 'class 07/00/02 (16550)');
  t.equal(cfg.read16(0x2c), 0x4348, 'subsystem vendor');
  t.equal(cfg.read8(0x3d), 1, 'interrupt pin INTA');
});

t.test('region info', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const d = c.openDevice(b.mttys[0]);
  const rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
  const expected = [8, 8, 0, 0, 0, 0, 0, 255, 0];
  for (const r of d.regions()) {
    t.equal(r.size, expected[r.index], `region ${r.index} size`);
    t.equal(r.info.offset, BigInt(r.index) << 40n, `region ${r.index} offset`);
    t.equal(r.info.flags, rw, `region ${r.index} flags`);
    t.notOk(r.info.sparse, 'no sparse areas');
    t.equal(r.mmapLayout().length, 0, 'nothing to mmap');
  }
  expectErrno(t, () => queryRegionInfo(d, 9), 'EINVAL', 'GET_REGION_INFO past the last region');
  t.throws(() => d.region(9), VfioArgumentError, 'the object refuses it before the kernel');
});

t.test('UART loopback: bytes written to TX come back from RX', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const bar0 = c.openDevice(b.mttys[0]).region(0);
  t.equal(bar0.read8(UART_LSR) & UART_LSR_DR, 0, 'receive FIFO empty at start');
  const msg = new TextEncoder().encode('hello vfio');
  for (const byte of msg) bar0.write8(UART_TX, byte);
  t.equal(bar0.read8(UART_LSR) & UART_LSR_DR, UART_LSR_DR, 'data ready');
  const back: number[] = [];
  while (bar0.read8(UART_LSR) & UART_LSR_DR) back.push(bar0.read8(UART_RX));
  t.equal(new TextDecoder().decode(new Uint8Array(back)), 'hello vfio');
});

t.test('an MSI reaches its eventfd when the receive FIFO hits the trigger level', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const d = c.openDevice(b.mttys[1]);
  const msi = d.irq(VFIO_PCI_MSI_IRQ_INDEX);
  t.equal(msi.count, 1);
  t.equal(msi.info.flags, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE);
  const intx = d.irq(VFIO_PCI_INTX_IRQ_INDEX);
  t.equal(intx.info.flags, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED);
  msi.enable(1);
  t.same(msi.enabledVectors, [0]);
  const bar0 = d.region(0);
  bar0.write8(UART_FCR, UART_FCR_ENABLE_FIFO | UART_FCR_TRIGGER_4);
  bar0.write8(UART_IER, UART_IER_RDI);
  const first = msi.signals().next();
  for (const byte of [1, 2, 3, 4]) bar0.write8(UART_TX, byte);
  const timeout = setTimeout(() => t.fail('no interrupt within 10 s'), 10_000);
  const sig = await first;
  clearTimeout(timeout);
  t.notOk(sig.done);
  t.equal(sig.value?.vector, 0);
  t.ok((sig.value?.count ?? 0n) >= 1n, 'counted at least once');
  msi.disable();
  t.same(msi.enabledVectors, []);
});

t.test('DMA map and unmap', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  c.openDevice(b.mttys[0]);
  const info = c.iommuInfo();
  t.ok(info.migration, 'type1 advertises dirty tracking');
  t.equal(info.migration?.pgsizeBitmap, 4096n, 'smallest page 4 KiB');
  t.equal(info.migration?.maxDirtyBitmapSize, 268435456n, '256 MiB bitmaps');
  t.equal(info.iovaRanges, undefined, 'an mdev-only container has no IOVA ranges');
  const before = info.dmaAvail ?? 0;
  const mem = b.sys.allocPages(2 * 1024 * 1024);
  const m = c.mapDma({ iova: 0x10_0000n, buffer: mem });
  t.equal(m.size, 2 * 1024 * 1024);
  t.equal(c.iommuInfo().dmaAvail, before - 1, 'one DMA entry used');
  expectErrno(t, () => c.mapDma({ iova: 0x20_0000n, buffer: mem }), 'EEXIST', 'overlapping mapping');
  expectErrno(t, () => c.mapDma({ iova: 0x40_1000n, vaddr: m.vaddr + 0x800n, size: 4096 }), 'EINVAL', 'misaligned vaddr');
  expectErrno(t, () => c.mapDma({ iova: 0x40_0800n, vaddr: m.vaddr, size: 4096 }), 'EINVAL', 'misaligned IOVA');
  expectErrno(t, () => c.unmapDma(0x10_0000n, 4096), 'EINVAL', 'unmap bisecting a mapping (type1v2)');
  t.equal(c.unmapDma(0x10_0000n, 2 * 1024 * 1024), 2n * 1024n * 1024n, 'unmapped the whole mapping');
  t.equal(c.unmapDma(0x10_0000n, 2 * 1024 * 1024), 0n, 'nothing left to unmap');
  t.equal(c.iommuInfo().dmaAvail, before);
  mem.unmap();
});

t.test('exact errnos for bad requests', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const d = c.openDevice(b.mttys[0]);
  const msi = d.irq(VFIO_PCI_MSI_IRQ_INDEX);
  expectErrno(t, () => msi.enable(2), 'EINVAL', 'SET_IRQS past the vector count');
  expectErrno(t, () => d.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX), 'EINVAL', 'GET_IRQ_INFO for MSI-X');
  expectErrno(t, () => d.irq(VFIO_PCI_MSIX_IRQ_INDEX), 'EINVAL', 'no MSI-X index object either');
  expectErrno(t, () => b.sys.ioctl(d.fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, 5, 0, 0)), 'EINVAL', 'SET_IRQS index past num_irqs');
  expectErrno(t, () => b.sys.ioctl(d.fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSIX_IRQ_INDEX, 0, [-1])), 'ENOTTY', 'SET_IRQS on MSI-X');
  try {
    c.openDevice('00000000-0000-0000-0000-000000000000');
    t.fail('a missing device opened');
  } catch (e) {
    t.equal((e as { code?: string }).code, 'ERR_VFIO_DEVICE_NOT_FOUND');
  }
  const err = (() => {
    try {
      msi.enable(2);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  t.type(err, VfioSystemError);
  t.match((err as VfioSystemError).message, /^VFIO_DEVICE_SET_IRQS on [0-9a-f-]{36} failed: EINVAL/, 'the error names the ioctl and device');
  t.equal((err as VfioSystemError).syscall, 'ioctl');
  t.equal((err as VfioSystemError).errno, 22);
});

t.test('opening and closing a device 1,000 times leaks no fd', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const first = c.openDevice(b.mttys[0]);
  first.irq(VFIO_PCI_MSI_IRQ_INDEX).enable(1);
  first.close();
  const before = b.openFds();
  for (let i = 0; i < 1000; i++) {
    const d = c.openDevice(b.mttys[0]);
    d.region(0).read8(UART_LSR);
    d.irq(VFIO_PCI_MSI_IRQ_INDEX).enable(1);
    d.close();
  }
  t.equal(b.openFds(), before, `fd count unchanged (${before})`);
});
