/**
 * The simulated trap-BAR device as a vendor driver: its region and IRQ
 * infos, BAR0's trapped accesses, which mmaps it allows, and the SET_IRQS
 * rules of its remap IRQ, driven with raw system calls.
 */
import t from 'tap';
import { SimKernel } from '../lib/sim/kernel.js';
import { SimTrapBarDevice, TRAP_BAR_REMAP_IRQ_INDEX, addTrapBarDevice } from '../lib/sim/trap-bar-device.js';
import { PROT_READ } from '../lib/sys/sys.js';
import { VfioContainer } from '../lib/vfio/container.js';
import {
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
} from '../lib/vfio/uapi/constants.js';
import { decodeSavingLayout } from '../lib/vfio/uapi/extensions.js';
import { decodeRegionInfo } from '../lib/vfio/uapi/info.js';
import { VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { dataView, encode } from '../lib/vfio/uapi/layout.js';
import { irqSetBool, irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { vfio_irq_info, vfio_region_info } from '../lib/vfio/uapi/structs.js';
import { expectErrno } from './helpers/expect.js';
import { STATE_SIZE } from './helpers/sim-trap-bar.js';

const PAGE = 4096;
const IRQ = TRAP_BAR_REMAP_IRQ_INDEX;

function open(options: { remapIrq?: boolean } = {}) {
  const kernel = new SimKernel();
  const sim = addTrapBarDevice(kernel, { stateSize: STATE_SIZE, ...options });
  const container = VfioContainer.open({ sys: kernel });
  const device = container.openDevice(sim.name);
  return { kernel, sim, container, device, fd: device.fd };
}

t.test('geometry', async (t) => {
  t.throws(() => new SimTrapBarDevice('x', { stateSize: 6 * 1024, pageSize: 1024 }), /not a multiple of 4096/);
  const { sim, container, device, kernel, fd } = open();
  t.equal(sim.barSize, STATE_SIZE + PAGE);
  const buf = encode(vfio_region_info, { argsz: 32, index: 0 });
  kernel.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, buf);
  t.equal(dataView(buf).getUint32(0, true), 32 + 48 + 32, 'argsz raised for SPARSE_MMAP (2 areas) and the saving layout (1 area)');
  const info = device.region(0).info;
  t.equal(info.flags & (VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS), VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS);
  t.same(decodeSavingLayout(info), [{ offset: STATE_SIZE, size: PAGE }]);
  t.equal(decodeRegionInfo(buf).size, STATE_SIZE + PAGE);
  t.equal(device.region(1).size, 0, "the other regions are the bulk device's");
  t.throws(() => sim.setBarLayout([{ offset: STATE_SIZE - PAGE, size: 2 * PAGE }]), /not a page range within the state or the doorbell/);
  t.throws(() => sim.setBarLayout([{ offset: 100, size: PAGE }]), RangeError);
  t.throws(() => sim.setBarLayout([{ offset: 0, size: 0 }]), RangeError);
  sim.setBarLayout([]);
  t.same(sim.events.at(-1), 'layout: none');
  t.same(device.region(0).refresh().sparse, []);
  t.same(decodeSavingLayout(device.region(0).info), [], 'the saving layout never exceeds the normal one');
  container.close();
});

t.test('BAR0 accesses: cut at the end, state writes trapped, doorbell writes not', async (t) => {
  const { sim, container, kernel, fd } = open();
  const buf = new Uint8Array(8).fill(0xab);
  t.equal(kernel.pwrite(fd, buf, BigInt(STATE_SIZE - 4)), 8, 'one write across the state and the doorbell');
  t.equal(sim.trappedWrites, 1);
  t.same(sim.readState(STATE_SIZE - 4, 4), Uint8Array.of(0xab, 0xab, 0xab, 0xab));
  t.same(sim.doorbell.subarray(0, 4), Uint8Array.of(0xab, 0xab, 0xab, 0xab));
  kernel.pwrite(fd, buf, BigInt(STATE_SIZE + 8));
  t.equal(sim.trappedWrites, 1, 'the doorbell is no device state');
  const back = new Uint8Array(16);
  t.equal(kernel.pread(fd, back, BigInt(STATE_SIZE + PAGE - 8)), 8, 'cut at the end of the BAR');
  expectErrno(t, () => kernel.pread(fd, back, BigInt(STATE_SIZE + PAGE)), 'EINVAL', 'past the BAR');
  t.equal(kernel.pread(fd, new Uint8Array(4), 7n << 40n), 4, 'config space still answers');
  container.close();
});

t.test('mmaps the device allows', async (t) => {
  const { container, kernel, fd, sim } = open();
  expectErrno(t, () => kernel.mmap(fd, PAGE, PROT_READ, 1n << 40n), 'EINVAL', 'another region');
  expectErrno(t, () => kernel.mmap(fd, 2 * PAGE, PROT_READ, BigInt(STATE_SIZE - PAGE)), 'EINVAL', 'across two areas');
  sim.setBarLayout([{ offset: 0, size: PAGE }]);
  expectErrno(t, () => kernel.mmap(fd, PAGE, PROT_READ, BigInt(PAGE)), 'EINVAL', 'outside the layout');
  const m = kernel.mmap(fd, PAGE, PROT_READ, 0n);
  t.equal(sim.barMappings, 1);
  m.unmap();
  m.unmap();
  t.equal(sim.barMappings, 0, 'the unmap is seen once');
  container.close();
});

t.test('SET_IRQS and GET_IRQ_INFO of the remap IRQ', async (t) => {
  const { container, kernel, fd, sim, device } = open();
  const remap = sim.remapIrq;
  if (remap === undefined) throw new Error('offered by default');
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0, 0)), 'EINVAL', 'a standard index has no vectors');
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, 2)), 'EINVAL', 'one vector only');
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_UNMASK, IRQ, 0, 1)), 'EINVAL', 'unmask while disabled');
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetBool(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, [true])), 'EINVAL', 'DATA_BOOL');
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, [999])), 'EBADF', 'no such eventfd');
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ + 1, 0, 0)), 'EINVAL', 'past num_irqs');
  const efd = kernel.eventfd(0);
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, [efd]));
  t.ok(remap.enabled);
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, 1)), 'EINVAL', 'no loopback trigger');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_MASK, IRQ, 0, 1));
  sim.setBarLayout([{ offset: 0, size: PAGE }]);
  t.equal(kernel.eventfdOf(efd).count, 0n, 'masked: held back');
  t.equal(remap.pending, 1n);
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_UNMASK, IRQ, 0, 1));
  t.equal(kernel.eventfdOf(efd).count, 1n, 'sent at unmask: bit 0');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, [-1]));
  t.notOk(remap.enabled, 'fd -1 disables');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, [efd]));
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, 0));
  t.notOk(remap.enabled, 'DATA_NONE with count 0 disables');
  const info = encode(vfio_irq_info, { argsz: 16, index: 0 });
  kernel.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, info);
  t.equal(dataView(info).getUint32(12, true), 0, 'standard indexes: no vectors');
  expectErrno(t, () => kernel.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, encode(vfio_irq_info, { argsz: 16, index: IRQ + 1 })), 'EINVAL', 'past num_irqs');
  kernel.close(efd);
  t.equal(device.info.numIrqs, 6);
  container.close();

  const without = open({ remapIrq: false });
  t.equal(without.device.info.numIrqs, 5);
  expectErrno(t, () => without.kernel.ioctl(without.fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, IRQ, 0, 0)), 'EINVAL', 'no index 5');
  without.container.close();
});
