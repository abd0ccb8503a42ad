/**
 * The simulated edu (lib/sim/edu.ts): its config space against the bytes
 * read from the test guest's edu, its registers (access sizes, liveness,
 * factorial, interrupt status), INTx and MSI raising, and the DMA engine
 * through the type1 IOMMU: both directions, the completion interrupt, the
 * 28-bit mask, QEMU 7.2's range check, IOMMU faults and bus mastering.
 */
import t from 'tap';
import { hex } from './helpers/pci-fixtures.js';
import { EDU_DMA_IRQ, EDU_DMA_RUN, EDU_DMA_START, EDU_DMA_TO_PCI, EDU_DMA_IRQ_ENABLE, EDU_STATUS_COMPUTING, EDU_STATUS_IRQFACT } from '../lib/sim/edu.js';
import { VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX } from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { until } from './helpers/events.js';
import { eventfdCount, openEdu } from './helpers/sim-pci.js';

/** The guest's edu: config bytes 0x00-0x4f as read through vfio-pci on the test guest. */
const GUEST_EDU_CONFIG = hex(`
  34 12 e8 11 03 01 10 00 10 00 ff 00 00 00 00 00
  00 00 a0 fe 00 00 00 00 00 00 00 00 00 00 00 00
  00 00 00 00 00 00 00 00 00 00 00 00 f4 1a 00 11
  00 00 00 00 40 00 00 00 00 00 00 00 0b 01 00 00
  05 00 80 00 00 00 00 00 00 00 00 00 00 00 00 00`);

t.test('config space and BAR0 registers', async (t) => {
  const { device: d, driver } = openEdu(t);
  const cfg = d.region(7).readBytes(0, 0x50);
  t.same([...cfg], [...GUEST_EDU_CONFIG], 'byte for byte as on the guest');
  const edu = driver.fn;
  t.equal(edu.barRead(0, 0x00, 4), 0x010000edn);
  t.equal(edu.barRead(0, 0x00, 1), 0n, 'a 1-byte access is invalid');
  t.equal(edu.barRead(0, 0x02, 4), 0n, 'an unaligned access is invalid');
  t.equal(edu.barRead(0, 0x00, 8), 0xffff_ffff_ffff_ffffn, '8 bytes below 0x80');
  t.equal(edu.barRead(0, 0x84, 4), 0xffffffffn, 'not a register');
  edu.barWrite(0, 0x04, 2, 0x1234n);
  t.equal(edu.barRead(0, 0x04, 4), 0n, 'the 2-byte write was dropped (liveness starts at 0, as on the guest)');
  edu.barWrite(0, 0x04, 8, 0n);
  t.equal(edu.barRead(0, 0x04, 4), 0n, 'an 8-byte write below 0x80 too');
  edu.barWrite(0, 0x04, 4, 0n);
  t.equal(edu.barRead(0, 0x04, 4), 0xffffffffn, 'a 4-byte write lands');
  edu.barWrite(0, 0x80, 8, 0x1122334455667788n);
  t.equal(edu.barRead(0, 0x80, 8), 0x1122334455667788n, 'DMA registers take 8 bytes');
  t.equal(edu.barRead(0, 0x80, 4), 0x55667788n);
  edu.barWrite(0, 0x20, 4, 0xffffffffn);
  t.equal(edu.barRead(0, 0x20, 4), BigInt(EDU_STATUS_IRQFACT), 'only the interrupt bit of the status is writable');
  edu.barWrite(0, 0x20, 4, 0n);
});

t.test('factorial', async (t) => {
  const { driver } = openEdu(t);
  const edu = driver.fn;
  const fact = async (n: number): Promise<bigint> => {
    edu.barWrite(0, 0x08, 4, BigInt(n));
    t.equal(edu.barRead(0, 0x20, 4) & BigInt(EDU_STATUS_COMPUTING), BigInt(EDU_STATUS_COMPUTING), `computing ${n}!`);
    edu.barWrite(0, 0x08, 4, 99n);
    await until(() => (edu.barRead(0, 0x20, 4) & 1n) === 0n);
    return edu.barRead(0, 0x08, 4);
  };
  t.equal(await fact(5), 120n, 'a write while computing is ignored');
  t.equal(await fact(0), 1n);
  t.equal(await fact(13), 0x7328cc00n, '32-bit arithmetic');
  edu.barWrite(0, 0x20, 4, BigInt(EDU_STATUS_IRQFACT));
  t.equal(await fact(3), 6n);
  t.equal(edu.irqStatus, 1, 'FACT_IRQ raised');
  t.equal(edu.intxLine, true, 'as INTx without MSI');
  edu.barWrite(0, 0x64, 4, 1n);
  t.equal(edu.intxLine, false);
});

t.test('raising and lowering: INTx level, or MSI when enabled', async (t) => {
  const { device: d, driver, sim } = openEdu(t);
  const edu = driver.fn;
  edu.barWrite(0, 0x60, 4, 0x6n);
  t.equal(edu.irqStatus, 6);
  t.equal(edu.intxLine, true);
  edu.barWrite(0, 0x64, 4, 0x2n);
  t.equal(edu.intxLine, true, 'still a bit set');
  edu.barWrite(0, 0x64, 4, 0x4n);
  t.equal(edu.intxLine, false);
  const e = sim.eventfd(0);
  sim.ioctl(d.fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [e]));
  edu.barWrite(0, 0x60, 4, 0x1n);
  t.equal(eventfdCount(sim, e), 1n, 'INTx through vfio-pci');
  edu.barWrite(0, 0x64, 4, 0x1n);
  sim.ioctl(d.fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, 0));
  const m = sim.eventfd(0);
  sim.ioctl(d.fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [m]));
  d.region(7).write16(0x04, 0x0107);
  edu.barWrite(0, 0x60, 4, 0x1n);
  edu.barWrite(0, 0x60, 4, 0x1n);
  t.equal(eventfdCount(sim, m), 2n, 'an MSI for every raise, even with the bit already set');
  t.equal(edu.intxLine, false, 'no INTx with MSI');
  edu.barWrite(0, 0x64, 4, 0x1n);
  t.equal(edu.irqStatus, 0);
});

t.test('the DMA engine', async (t) => {
  const { device: d, driver, container, sim } = openEdu(t, { dmaDelayMs: 1 });
  const edu = driver.fn;
  const ram = sim.allocPages(2 * 4096);
  const mem = ram.view();
  mem.set(Array.from({ length: 64 }, (_, i) => i + 1), 0x10);
  container.mapDma({ iova: 0x100000n, buffer: ram });
  const regs = d.region(0);
  const run = async (src: bigint, dst: bigint, cnt: number, cmd: bigint): Promise<void> => {
    regs.write64(0x80, src);
    regs.write64(0x88, dst);
    regs.write64(0x90, BigInt(cnt));
    regs.write64(0x98, cmd);
    t.equal(edu.dmaRunning, true);
    t.ok(await until(() => (regs.read64(0x98) & EDU_DMA_RUN) === 0n), 'completes');
  };

  await run(0x100010n, EDU_DMA_START, 64, EDU_DMA_RUN);
  t.equal(edu.dmaFaults[0]?.reason, 'bus-master-off', 'without bus mastering nothing moves');
  t.same([...edu.dmaBuffer.subarray(0, 4)], [0, 0, 0, 0], 'reads give zeros');

  d.region(7).write16(0x04, 0x0107);
  await run(0x100010n, EDU_DMA_START + 0x100n, 64, EDU_DMA_RUN);
  t.same([...edu.dmaBuffer.subarray(0x100, 0x140)], [...mem.subarray(0x10, 0x50)], 'memory into the buffer');

  await run(EDU_DMA_START + 0x100n, 0x1_0010_1000n, 64, EDU_DMA_RUN | EDU_DMA_TO_PCI | EDU_DMA_IRQ_ENABLE);
  t.same([...mem.subarray(0x1000, 0x1040)], [...mem.subarray(0x10, 0x50)], 'the buffer into memory, the IOVA masked to 28 bits');
  t.equal(edu.irqStatus, EDU_DMA_IRQ, 'completion interrupt');
  regs.write32(0x64, EDU_DMA_IRQ);

  regs.write64(0x80, 0x100000n);
  regs.write64(0x88, EDU_DMA_START);
  regs.write64(0x90, 8n);
  regs.write64(0x98, EDU_DMA_RUN);
  regs.write64(0x80, 0x222n);
  regs.write64(0x98, EDU_DMA_RUN | EDU_DMA_TO_PCI);
  t.equal(regs.read64(0x80), 0x100000n, 'registers ignore writes while a transfer runs');
  t.equal(regs.read64(0x98), EDU_DMA_RUN, 'the command too');
  await until(() => !edu.dmaRunning);

  const faults = edu.dmaFaults.length;
  await run(0x200000n, EDU_DMA_START, 16, EDU_DMA_RUN);
  t.same(edu.dmaFaults.slice(faults), [{ address: 0x200000n, length: 16, write: false, reason: 'iommu-fault' }], 'an unmapped IOVA faults');
  await run(EDU_DMA_START, 0x100ff8n + 0x1000n, 16, EDU_DMA_RUN | EDU_DMA_TO_PCI);
  t.same(edu.dmaFaults.slice(faults + 1).map((f) => [f.address, f.length]), [[0x102000n, 8]], 'page by page: only the part past the mapping faults');

  await run(0x100000n, EDU_DMA_START + 4088n, 8, EDU_DMA_RUN);
  t.match(edu.guestErrors, [/out of bounds/], 'QEMU 7.2 refuses a transfer that reaches the end of the buffer');
  await run(0x100000n, EDU_DMA_START, 0, EDU_DMA_RUN);
  t.equal(edu.guestErrors.length, 2, 'and an empty one');
  await run(0x100000n, EDU_DMA_START + 4087n, 8, EDU_DMA_RUN);
  t.equal(edu.guestErrors.length, 2, 'the last byte stays out of reach');
});
