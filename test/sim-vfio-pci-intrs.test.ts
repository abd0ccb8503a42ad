/**
 * SET_IRQS on the simulated vfio-pci (lib/sim/vfio-pci-intrs.ts), with raw
 * ioctls and simulated eventfds: INTx with automasking, mask/unmask and the
 * unmask eventfd; MSI and MSI-X enable, per-vector changes, masking through
 * the host's free_irq/request_irq, dynamic MSI-X growth versus NORESIZE;
 * ERR and REQ; and the kernel's validation errnos.
 */
import t, { type Test } from 'tap';
import type { SimKernel } from '../lib/sim/kernel.js';
import type { SimTestDevDriver, TestDevOptions } from '../lib/sim/pci-testdev.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import {
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
} from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { irqSetBool, irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { encode } from '../lib/vfio/uapi/layout.js';
import { vfio_irq_set } from '../lib/vfio/uapi/structs.js';
import { expectErrno } from './helpers/expect.js';
import { eventfdCount, openTestDev } from './helpers/sim-pci.js';

const TRIGGER = VFIO_IRQ_SET_ACTION_TRIGGER;
const UNMASK = VFIO_IRQ_SET_ACTION_UNMASK;
const MASK = VFIO_IRQ_SET_ACTION_MASK;
const INTX = VFIO_PCI_INTX_IRQ_INDEX;
const MSI = VFIO_PCI_MSI_IRQ_INDEX;
const MSIX = VFIO_PCI_MSIX_IRQ_INDEX;

class Rig {
  readonly sim: SimKernel;
  readonly driver: SimTestDevDriver;
  readonly device: VfioDevice;

  constructor(t: Test, options: TestDevOptions = {}) {
    const { sim, driver, device } = openTestDev(t, options);
    this.sim = sim;
    this.driver = driver;
    this.device = device;
  }

  get fn(): SimTestDevDriver['fn'] {
    return this.driver.fn;
  }

  set(buf: Uint8Array): number {
    return this.sim.ioctl(this.device.fd, VFIO_DEVICE_SET_IRQS, buf);
  }

  efd(): number {
    return this.sim.eventfd(0);
  }

  count(fd: number): bigint {
    return eventfdCount(this.sim, fd);
  }

  /** Reads (and so clears) an eventfd's count. */
  take(fd: number): bigint {
    const n = eventfdCount(this.sim, fd);
    if (n > 0n) this.sim.read(fd, new Uint8Array(8));
    return n;
  }

  /** A 2-byte write through the CONFIG region, as the user would do it. */
  config16(offset: number, value: number): void {
    this.device.region(7).write16(offset, value);
  }

  config32(offset: number, value: number): void {
    this.device.region(7).write32(offset, value);
  }

  /** Bus mastering on: messages reach the host. */
  master(): void {
    this.config16(0x04, 0x0006);
  }
}

t.test('INTx: trigger, automask, unmask while asserted, mask', async (t) => {
  const r = new Rig(t);
  const fn = r.fn;
  const e = r.efd();
  t.equal(r.set(irqSetEventfd(TRIGGER, INTX, 0, [e])), 0);
  fn.setIntx(true);
  t.equal(r.take(e), 1n, 'the line rose: signalled');
  t.equal(fn.configRead(0x04, 2) & 0x400, 0x400, 'and masked with DisINTx');
  fn.setIntx(false);
  fn.setIntx(true);
  t.equal(r.count(e), 0n, 'masked: nothing more');
  t.equal(r.set(irqSetNone(UNMASK, INTX, 0, 1)), 0);
  t.equal(r.take(e), 1n, 'unmasking while the device still asserts signals again');
  t.equal(fn.configRead(0x04, 2) & 0x400, 0x400, 'and stays masked');
  fn.setIntx(false);
  r.set(irqSetBool(UNMASK, INTX, 0, [true]));
  t.equal(r.count(e), 0n, 'deasserted: unmasked quietly');
  t.equal(fn.configRead(0x04, 2) & 0x400, 0);
  r.set(irqSetBool(MASK, INTX, 0, [false]));
  fn.setIntx(true);
  t.equal(r.take(e), 1n, 'a false mask bool does nothing');
  fn.setIntx(false);
  r.set(irqSetNone(UNMASK, INTX, 0, 1));
  r.set(irqSetNone(MASK, INTX, 0, 1));
  fn.setIntx(true);
  t.equal(r.count(e), 0n, 'masked by the user');
  r.set(irqSetNone(UNMASK, INTX, 0, 1));
  t.equal(r.take(e), 1n, 'the pending interrupt comes at unmask');
  r.set(irqSetBool(TRIGGER, INTX, 0, [true]));
  t.equal(r.take(e), 1n, 'loopback trigger');
  r.set(irqSetBool(TRIGGER, INTX, 0, [false]));
  t.equal(r.count(e), 0n, 'a false trigger bool does nothing');
  expectErrno(t, () => r.set(irqSetEventfd(MASK, INTX, 0, [e])), 'ENOTTY', 'no mask eventfd');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSI, 0, [e])), 'EINVAL', 'MSI while INTx is on');
  t.equal(r.set(irqSetNone(TRIGGER, INTX, 0, 0)), 0, 'disabled');
  expectErrno(t, () => r.set(irqSetNone(UNMASK, INTX, 0, 1)), 'EINVAL', 'unmask without INTx');
  expectErrno(t, () => r.set(irqSetNone(MASK, INTX, 0, 1)), 'EINVAL', 'mask without INTx');
  expectErrno(t, () => r.set(irqSetNone(TRIGGER, INTX, 0, 1)), 'EINVAL', 'loopback without INTx');
});

t.test('INTx: enabled on an asserted line, a new trigger, virtual DisINTx', async (t) => {
  const r = new Rig(t);
  const fn = r.fn;
  fn.setIntx(true);
  const e = r.efd();
  r.set(irqSetEventfd(TRIGGER, INTX, 0, [e]));
  t.equal(r.take(e), 1n, 'request_irq on an asserted level-triggered line runs the handler');
  fn.setIntx(false);
  r.set(irqSetNone(UNMASK, INTX, 0, 1));
  const e2 = r.efd();
  r.set(irqSetEventfd(TRIGGER, INTX, 0, [e2]));
  fn.setIntx(true);
  t.equal(r.take(e2), 1n, 'a second trigger eventfd replaces the first');
  t.equal(r.count(e), 0n);
  fn.setIntx(false);
  r.set(irqSetNone(UNMASK, INTX, 0, 1));

  r.config16(0x04, 0x0402);
  fn.setIntx(true);
  t.equal(r.count(e2), 0n, 'INTx disabled in the virtual command register');
  r.config16(0x04, 0x0002);
  t.equal(r.take(e2), 1n, 'clearing it delivers the pending interrupt');
  fn.setIntx(false);

  r.set(irqSetEventfd(TRIGGER, INTX, 0, [-1]));
  r.set(irqSetNone(UNMASK, INTX, 0, 1));
  fn.setIntx(true);
  t.equal(r.count(e2), 0n, 'fd -1 drops the trigger but keeps INTx');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSI, 0, [e])), 'EINVAL', 'still INTx');
  r.set(irqSetNone(TRIGGER, INTX, 0, 0));
  fn.setIntx(false);
  r.set(irqSetEventfd(TRIGGER, INTX, 0, [-1]));
  t.equal(r.driver.irqs.irqType, INTX, 'fd -1 from no interrupt enables INTx without a trigger');
});

t.test('INTx unmask eventfd (resampling)', async (t) => {
  const r = new Rig(t);
  const fn = r.fn;
  const e = r.efd();
  const u = r.efd();
  const kick = (): void => void r.sim.write(u, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]));
  r.set(irqSetEventfd(TRIGGER, INTX, 0, [e]));
  t.equal(r.set(irqSetEventfd(UNMASK, INTX, 0, [u])), 0);
  expectErrno(t, () => r.set(irqSetEventfd(UNMASK, INTX, 0, [u])), 'EBUSY', 'one unmask eventfd at a time');
  fn.setIntx(true);
  t.equal(r.take(e), 1n);
  kick();
  t.equal(r.count(u), 0n, 'the kernel consumes the unmask eventfd');
  t.equal(r.take(e), 1n, 'still asserted: signalled again');
  fn.setIntx(false);
  kick();
  t.equal(r.count(e), 0n, 'unmasked');
  fn.setIntx(true);
  t.equal(r.take(e), 1n);
  r.set(irqSetEventfd(UNMASK, INTX, 0, [-1]));
  fn.setIntx(false);
  kick();
  t.equal(r.count(u), 1n, 'fd -1 unregisters it');
  t.equal(r.set(irqSetEventfd(UNMASK, INTX, 0, [u])), 0, 'a pending count at registration unmasks at once');
  t.equal(r.count(u), 1n, '(without consuming it)');
  fn.setIntx(true);
  t.equal(r.take(e), 1n, 'so the next interrupt comes');
  expectErrno(t, () => r.set(irqSetEventfd(UNMASK, INTX, 0, [999])), 'EBADF', 'not a file');
  r.set(irqSetNone(TRIGGER, INTX, 0, 0));
  fn.setIntx(false);
  kick();
  t.equal(r.count(u), 2n, 'disabling INTx drops the unmask eventfd');
});

t.test('MSI: enable, per-vector eventfds, masking, loopback, disable', async (t) => {
  const r = new Rig(t);
  const fn = r.fn;
  const [e0, e1, e2] = [r.efd(), r.efd(), r.efd()];
  t.equal(r.set(irqSetEventfd(TRIGGER, MSI, 0, [e0, e1])), 0, 'two vectors');
  t.equal(r.driver.irqs.msiQmax, 1);
  t.equal(r.device.region(7).read16(0x52), 0x0182, 'the capable count the user sees follows msi_qmax');
  t.equal(fn.msiEnabled, true);
  t.equal(fn.configRead(0x52, 2) & 0x71, 0x11, 'the device: enabled with two vectors');
  t.equal(fn.configRead(0x04, 2) & 0x400, 0x400, 'INTx disabled in the device');
  fn.fireMsi(0);
  t.equal(r.count(e0), 0n, 'no bus mastering: the message goes nowhere');
  r.master();
  fn.fireMsi(0);
  fn.fireMsi(1);
  fn.fireMsi(2);
  t.same([r.take(e0), r.take(e1)], [1n, 1n], 'one signal per vector; vector 2 is not enabled');

  t.equal(r.set(irqSetEventfd(TRIGGER, MSI, 1, [e2])), 0, 'vector 1 rewired without re-enabling');
  fn.fireMsi(1);
  t.same([r.count(e1), r.take(e2)], [0n, 1n]);

  r.set(irqSetEventfd(TRIGGER, MSI, 1, [-1]));
  fn.fireMsi(1);
  t.equal(fn.configRead(0x64, 4), 0x2, 'without a handler the vector is masked in the device: pending');
  r.set(irqSetEventfd(TRIGGER, MSI, 1, [e1]));
  t.equal(r.take(e1), 1n, 'request_irq unmasks it and the pending message arrives');
  t.equal(fn.configRead(0x64, 4), 0);

  r.config32(0x60, 0x1);
  fn.fireMsi(0);
  t.equal(r.count(e0), 0n, 'the user\'s mask bits reach the device');
  r.config32(0x60, 0x0);
  t.equal(r.take(e0), 1n, 'and unmasking delivers');

  r.set(irqSetNone(TRIGGER, MSI, 0, 2));
  t.same([r.take(e0), r.take(e1)], [1n, 1n], 'loopback');
  r.set(irqSetBool(TRIGGER, MSI, 0, [false, true]));
  t.same([r.take(e0), r.take(e1)], [0n, 1n], 'loopback by bool');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSIX, 0, [e0])), 'EINVAL', 'MSI-X while MSI is on');
  expectErrno(t, () => r.set(irqSetNone(MASK, MSI, 0, 1)), 'ENOTTY', 'no MSI masking ioctl');

  t.equal(r.set(irqSetNone(TRIGGER, MSI, 0, 0)), 0, 'disabled');
  t.equal(fn.msiEnabled, false);
  t.equal(fn.configRead(0x04, 2) & 0x400, 0, 'INTx back');
  t.equal(r.device.region(7).read16(0x52), 0x0182, 'msi_qmax outlives the disable');
  expectErrno(t, () => r.set(irqSetNone(TRIGGER, MSI, 0, 1)), 'EINVAL', 'loopback without MSI');
});

t.test('MSI: failures roll back', async (t) => {
  const r = new Rig(t);
  const e = r.efd();
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSI, 0, [e, 999])), 'EBADF', 'a bad fd while enabling');
  t.equal(r.fn.msiEnabled, false, 'MSI disabled again');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSI, 0, [r.device.fd])), 'EINVAL', 'not an eventfd');
  t.equal(r.set(irqSetEventfd(TRIGGER, MSI, 0, [e, e])), 0, 'the same eventfd twice');
  r.master();
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSI, 0, [e, 999])), 'EBADF', 'a bad fd while enabled');
  t.equal(r.fn.msiEnabled, true, 'MSI stays enabled');
  r.fn.fireMsi(0);
  r.fn.fireMsi(1);
  t.equal(r.count(e), 0n, 'both vectors of the block were de-assigned');

  const short = new Rig(t, { multiMsi: false });
  const s = short.efd();
  t.equal(short.set(irqSetEventfd(TRIGGER, MSI, 0, [s, s])), 1, 'one MSI vector only: the ioctl returns the count');
  t.equal(short.fn.msiEnabled, false, 'and enables nothing');
  t.equal(short.set(irqSetEventfd(TRIGGER, MSI, 0, [s])), 0);
});

t.test('MSI-X: enable with no vector, grow vector by vector (dynamic allocation)', async (t) => {
  const r = new Rig(t);
  const fn = r.fn;
  const [e3, e5] = [r.efd(), r.efd()];
  t.equal(r.set(irqSetEventfd(TRIGGER, MSIX, 0, [-1])), 0, 'QEMU\'s vfio_enable_msix_no_vec');
  t.equal(fn.msixEnabled, true);
  t.equal(r.device.region(7).read16(0x72), 0x800f, 'the device\'s MSI-X control, unmasked as a whole');
  r.master();
  t.equal(r.set(irqSetEventfd(TRIGGER, MSIX, 5, [e5])), 0, 'vector 5 allocated on demand');
  fn.fireMsix(5);
  t.equal(r.take(e5), 1n);
  fn.fireMsix(3);
  t.equal(fn.msix?.pending(3), true, 'an unused vector is masked: pending in the PBA');
  t.equal(r.set(irqSetEventfd(TRIGGER, MSIX, 3, [e3])), 0);
  t.equal(r.take(e3), 1n, 'delivered when wired');
  t.equal(fn.msix?.message(5).data, 0x45, 'the host programmed the entry');
  r.set(irqSetBool(TRIGGER, MSIX, 3, [true, false, true]));
  t.same([r.take(e3), r.take(e5)], [1n, 1n], 'loopback skips vectors without a handler');
  t.equal(r.set(irqSetNone(TRIGGER, MSIX, 0, 0)), 0);
  t.equal(fn.msixEnabled, false);
  t.equal(fn.msix?.masked(5), true, 'vectors masked again');
});

t.test('MSI-X without dynamic allocation (NORESIZE)', async (t) => {
  const r = new Rig(t, { dynMsix: false });
  const fn = r.fn;
  const [e0, e5] = [r.efd(), r.efd()];
  r.set(irqSetEventfd(TRIGGER, MSIX, 0, [e0]));
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSIX, 5, [e5])), 'EINVAL', 'vector 5 was not allocated');
  r.set(irqSetNone(TRIGGER, MSIX, 0, 0));
  t.equal(r.set(irqSetEventfd(TRIGGER, MSIX, 0, [e0, -1, -1, -1, -1, e5])), 0, 'QEMU re-enables with one vector more');
  r.master();
  fn.fireMsix(5);
  fn.fireMsix(1);
  t.equal(r.take(e5), 1n);
  t.equal(fn.msix?.pending(1), true, 'allocated without a handler: masked');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSIX, 6, [e5])), 'EINVAL', 'still cannot grow');
  t.equal(r.set(irqSetEventfd(TRIGGER, MSIX, 1, [e0])), 0, 'but an allocated vector can be wired');
  t.equal(r.take(e0), 1n, 'and its pending message arrives');
});

t.test('ERR and REQ', async (t) => {
  const r = new Rig(t);
  const [err, req] = [r.efd(), r.efd()];
  t.equal(r.set(irqSetEventfd(TRIGGER, VFIO_PCI_ERR_IRQ_INDEX, 0, [err])), 0, 'ERR exists on PCIe');
  t.equal(r.set(irqSetEventfd(TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, [req])), 0);
  r.driver.reportError();
  r.driver.requestRelease();
  t.same([r.take(err), r.take(req)], [1n, 1n]);
  r.set(irqSetBool(TRIGGER, VFIO_PCI_ERR_IRQ_INDEX, 0, [true]));
  t.equal(r.take(err), 1n, 'loopback by bool');
  expectErrno(t, () => r.set(irqSetBool(TRIGGER, VFIO_PCI_ERR_IRQ_INDEX, 0, [])), 'EINVAL', 'bool without a vector');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, [-2])), 'EINVAL', 'fd -2');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, [])), 'EINVAL', 'eventfd without a vector');
  expectErrno(t, () => r.set(irqSetNone(MASK, VFIO_PCI_REQ_IRQ_INDEX, 0, 1)), 'ENOTTY', 'REQ has only TRIGGER');
  r.set(irqSetEventfd(TRIGGER, VFIO_PCI_REQ_IRQ_INDEX, 0, [-1]));
  r.driver.requestRelease();
  t.equal(r.count(req), 0n, 'fd -1 drops it');
  r.device.close();
  r.driver.reportError();
  t.equal(r.count(err), 0n, 'closing the device drops ERR too');
});

t.test('SET_IRQS validation', async (t) => {
  const r = new Rig(t);
  const e = r.efd();
  const raw = (fields: { argsz: number; flags: number; index: number; start: number; count: number }, extra = 0): Uint8Array =>
    encode(vfio_irq_set, fields, new Uint8Array(Math.max(20, fields.argsz) + extra));
  expectErrno(t, () => r.set(raw({ argsz: 19, flags: VFIO_IRQ_SET_DATA_NONE | TRIGGER, index: INTX, start: 0, count: 1 })), 'EINVAL', 'argsz < 20');
  expectErrno(t, () => r.set(raw({ argsz: 20, flags: VFIO_IRQ_SET_DATA_NONE | TRIGGER, index: 5, start: 0, count: 1 })), 'EINVAL', 'index 5');
  expectErrno(t, () => r.set(raw({ argsz: 21, flags: VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | TRIGGER, index: INTX, start: 0, count: 1 })), 'EINVAL', 'two data types');
  expectErrno(t, () => r.set(raw({ argsz: 20, flags: VFIO_IRQ_SET_DATA_NONE | TRIGGER | MASK, index: INTX, start: 0, count: 1 })), 'ENOTTY', 'two actions');
  expectErrno(t, () => r.set(raw({ argsz: 20, flags: VFIO_IRQ_SET_DATA_NONE | TRIGGER, index: MSI, start: 2, count: 3 })), 'EINVAL', 'past the 4 MSI vectors');
  expectErrno(t, () => r.set(raw({ argsz: 24, flags: VFIO_IRQ_SET_DATA_BOOL | TRIGGER, index: MSI, start: 0, count: 8 })), 'EINVAL', 'argsz too small for the data');
  expectErrno(t, () => r.set(raw({ argsz: 28, flags: 0x4 | TRIGGER, index: MSI, start: 0, count: 2 }).subarray(0, 24)), 'EFAULT', 'the buffer ends before the data');
  expectErrno(t, () => r.set(irqSetEventfd(TRIGGER, MSIX, 0, [])), 'ERANGE', 'enabling MSI-X with no vector: pci_alloc_irq_vectors(1, 0)');
  t.equal(r.set(irqSetEventfd(TRIGGER, MSIX, 0, [e])), 0);
  t.equal(r.set(irqSetEventfd(TRIGGER, MSIX, 0, [])), 0, 'an empty block while MSI-X is on does nothing');
});
