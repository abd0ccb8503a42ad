/**
 * VfioPciDevice (lib/pci/pci-device.ts) on the simulated test function:
 * discovery (header, capabilities, BARs with their cross-check and mmap
 * layout), the guest's MSI and MSI-X views and the SET_IRQS calls they
 * cause (recorded with the simulator's trace), INTx with end of interrupt,
 * and config and BAR accesses as a guest makes them.
 */
import t, { type Test } from 'tap';
import { ConfigSpaceError, VfioArgumentError, VfioClosedError } from '../lib/errors.js';
import { VfioPciDevice } from '../lib/pci/pci-device.js';
import { SimKernel, type SyscallRecord } from '../lib/sim/index.js';
import type { IoctlArg } from '../lib/sim/file.js';
import { SimTestDev, SimTestDevDriver, TESTDEV_BAR4_AREAS } from '../lib/sim/pci-testdev.js';
import { addVfioPci } from '../lib/sim/vfio-pci.js';
import type { SparseArea } from '../lib/vfio/uapi/info.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD } from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { dataView, decode } from '../lib/vfio/uapi/layout.js';
import { vfio_irq_set, vfio_region_info } from '../lib/vfio/uapi/structs.js';
import { eventsDuring, nextEvent } from './helpers/events.js';
import { thrown } from './helpers/expect.js';
import { openTestDev, type SimPciSetup } from './helpers/sim-pci.js';

/** One SET_IRQS call: index, action flags, start, and the fds (-1 for none; [] for DATA_NONE). */
interface SetIrqs {
  readonly index: number;
  readonly action: number;
  readonly start: number;
  readonly count: number;
  readonly fds: readonly number[];
}

function setIrqsCalls(trace: readonly SyscallRecord[]): SetIrqs[] {
  return trace
    .filter((r) => r.request === VFIO_DEVICE_SET_IRQS && r.arg !== undefined)
    .map((r) => {
      const arg = r.arg ?? new Uint8Array(20);
      const h = decode(vfio_irq_set, arg);
      const fds = (h.flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0 ? Array.from({ length: h.count }, (_, i) => dataView(arg).getInt32(20 + 4 * i, true)) : [];
      return { index: h.index, action: h.flags & 0x38, start: h.start, count: h.count, fds };
    });
}

/** `fds` with every real fd replaced by 1, so calls compare without fd numbers. */
const shape = (calls: readonly SetIrqs[]): SetIrqs[] => calls.map((c) => ({ ...c, fds: c.fds.map((f) => (f >= 0 ? 1 : -1)) }));
const TRIGGER = VFIO_IRQ_SET_ACTION_TRIGGER;

function open(t: Test, options: Parameters<typeof openTestDev>[1] = {}): SimPciSetup<SimTestDevDriver> & { pci: VfioPciDevice } {
  const setup = openTestDev(t, options);
  return { ...setup, pci: new VfioPciDevice(setup.device) };
}

t.test('discovery: header, capabilities, BARs', async (t) => {
  const { pci } = open(t);
  t.equal(pci.header.vendorId, 0x1b36);
  t.equal(pci.header.interruptPin, 1);
  t.same(pci.capabilities.map((c) => c.id), [0x01, 0x05, 0x11, 0x10, 0x09]);
  t.same(pci.extCapabilities.map((c) => c.id), [0x01, 0x03, 0x0e, 0x18]);
  t.same(
    pci.bars.map((b) => ({ index: b.index, kind: b.kind, prefetchable: b.prefetchable, is64: b.is64, size: b.size, msix: b.msixRanges })),
    [
      { index: 0, kind: 'mem32', prefetchable: false, is64: false, size: 0x1000, msix: [] },
      { index: 2, kind: 'mem32', prefetchable: false, is64: false, size: 0x4000, msix: [{ offset: 0, size: 256 }, { offset: 0x3000, size: 8 }] },
      { index: 4, kind: 'mem64', prefetchable: true, is64: true, size: 0x10000, msix: [] },
    ],
  );
  t.equal(pci.bar(0).isIo, false);
  t.type(thrown(() => pci.bar(1)), VfioArgumentError, 'BAR1 is not implemented');
  t.same(pci.bar(4).mmapLayout(), TESTDEV_BAR4_AREAS, 'sparse areas');
  t.same(pci.bar(4).map().map((a) => a.offset), [0, 0x8000]);
  t.same(pci.bar(2).map().map((a) => [a.offset, a.size]), [[0, 0x4000]], 'MSIX_MAPPABLE: the whole BAR');
  pci.bar(2).unmap();
  t.equal(pci.bar(2).region.areas.length, 0);
  t.equal(pci.msi?.vectorsCapable, 1, 'vfio-pci shows one MSI vector until MSI was enabled with more (msi_qmax)');
  t.equal(pci.msix?.entries, 16);
  t.equal(pci.interruptMode, 'intx', 'INTx wired at open');
  t.ok(pci.intx?.enabled);
});

t.test('BAR checks', async (t) => {
  /** A variant driver that lies about a BAR's region size, or maps the MSI-X table without saying MSIX_MAPPABLE. */
  class Bogus extends SimTestDevDriver {
    constructor(
      readonly lies: { bar: number; size: bigint } | null,
      readonly wholeMsixBar: boolean,
    ) {
      super('0000:00:08.0', new SimTestDev());
    }
    override ioctl(request: number, arg: IoctlArg): number {
      const r = super.ioctl(request, arg);
      if (request === VFIO_DEVICE_GET_REGION_INFO && arg instanceof Uint8Array && this.lies !== null && decode(vfio_region_info, arg).index === this.lies.bar) {
        dataView(arg).setBigUint64(16, this.lies.size, true);
      }
      return r;
    }
    protected override mmapAreas(index: number): readonly SparseArea[] | undefined {
      return this.wholeMsixBar && index === 2 ? [{ offset: 0, size: 0x4000 }] : super.mmapAreas(index);
    }
  }
  /** What opening a VfioPciDevice on `driver` throws. */
  const openFailure = (driver: Bogus): unknown => {
    const sim = new SimKernel();
    addVfioPci(sim, driver);
    const c = VfioContainer.open({ sys: sim });
    t.teardown(() => c.close());
    const d = c.openDevice(driver.name);
    return thrown(() => new VfioPciDevice(d));
  };
  const e = openFailure(new Bogus({ bar: 0, size: 0x2000n }, false));
  t.type(e, ConfigSpaceError, 'a region size that sizing the BAR contradicts');
  t.equal((e as ConfigSpaceError).offset, 0x10);
  t.match((e as Error).message, /BAR0 decodes 4096 bytes but its VFIO region is 8192 bytes/);

  const sim = new SimKernel();
  const small = addVfioPci(sim, new Bogus({ bar: 2, size: 0x800n }, false));
  const c = VfioContainer.open({ sys: sim });
  t.teardown(() => c.close());
  const d = c.openDevice(small.name);
  const pba = thrown(() => new VfioPciDevice(d, { crossCheckBars: false }));
  t.type(pba, ConfigSpaceError, 'without the cross-check, the PBA outside its BAR is still caught');
  t.match((pba as Error).message, /PBA/);

  const sim2 = new SimKernel();
  const whole = addVfioPci(sim2, new Bogus(null, true));
  const c2 = VfioContainer.open({ sys: sim2 });
  t.teardown(() => c2.close());
  using pci = new VfioPciDevice(c2.openDevice(whole.name));
  t.type(thrown(() => pci.bar(2).map()), ConfigSpaceError, 'an area over the MSI-X table without MSIX_MAPPABLE is refused');
});

t.test('MSI: the guest enables four vectors, one SET_IRQS; masking and pending', async (t) => {
  const { pci, sim, driver, device } = (() => {
    const setup = openTestDev(t);
    // vfio-pci shows the MSI vectors last enabled through SET_IRQS: enable four once.
    const fd = setup.sim.eventfd(0);
    setup.sim.ioctl(setup.device.fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(TRIGGER, 1, 0, [fd, fd, fd, fd]));
    setup.sim.ioctl(setup.device.fd, VFIO_DEVICE_SET_IRQS, irqSetNone(TRIGGER, 1, 0, 0));
    setup.sim.close(fd);
    return { ...setup, pci: new VfioPciDevice(setup.device) };
  })();
  t.equal(pci.msi?.vectorsCapable, 4);
  const trace = sim.startTrace();
  pci.writeConfig(0x54, 4, 0xfee00000);
  pci.writeConfig(0x58, 4, 0);
  pci.writeConfig(0x5c, 2, 0x4020);
  pci.writeConfig(0x52, 2, 0x0121);
  t.equal(pci.interruptMode, 'msi');
  t.same(shape(setIrqsCalls(trace)), [
    { index: 0, action: TRIGGER, start: 0, count: 0, fds: [] },
    { index: 1, action: TRIGGER, start: 0, count: 4, fds: [1, 1, 1, 1] },
  ], 'INTx off, then the four vectors in one call');
  t.same(pci.wiredVectors, [0, 1, 2, 3]);
  t.equal(pci.readConfig(0x52, 2), 0x01a5, 'the guest sees its enable and MME; the kernel does not');
  t.equal(device.region(7).read16(0x52) & 0x01, 0, 'vfio-pci keeps its own enable bit clear');
  pci.writeConfig(0x04, 2, pci.readConfig(0x04, 2) | 0x4);
  const got = nextEvent(pci, 'msi');
  driver.fn.fireMsi(2);
  t.same(await got, [{ address: 0xfee00000n, data: 0x4022 }, { kind: 'msi', vector: 2 }]);

  pci.writeConfig(0x60, 4, 0x2);
  driver.fn.fireMsi(1);
  t.same(await eventsDuring(pci, 'msi', 20), [], 'masked by the guest');
  const late = nextEvent(pci, 'msi');
  pci.writeConfig(0x60, 4, 0x0);
  t.same(await late, [{ address: 0xfee00000n, data: 0x4021 }, { kind: 'msi', vector: 1 }], 'delivered when unmasked');

  trace.length = 0;
  pci.writeConfig(0x52, 2, 0x0120);
  t.equal(pci.interruptMode, 'intx');
  t.same(shape(setIrqsCalls(trace)), [
    { index: 1, action: TRIGGER, start: 0, count: 0, fds: [] },
    { index: 0, action: TRIGGER, start: 0, count: 1, fds: [1] },
  ], 'MSI off, INTx back');
  sim.stopTrace();
});

t.test('MSI-X: vectors wired one by one as the guest unmasks them', async (t) => {
  const { pci, sim, driver } = open(t);
  const trace = sim.startTrace();
  pci.writeConfig(0x72, 2, 0xc000);
  t.equal(pci.interruptMode, 'msix');
  t.same(shape(setIrqsCalls(trace)), [
    { index: 0, action: TRIGGER, start: 0, count: 0, fds: [] },
    { index: 2, action: TRIGGER, start: 0, count: 1, fds: [-1] },
  ], 'INTx off, MSI-X on with no vector (the function is masked)');
  trace.length = 0;
  const entry = (v: number, address: bigint, data: number, masked: boolean): void => {
    pci.writeBar(2, v * 16, 8, address);
    pci.writeBar(2, v * 16 + 8, 4, BigInt(data));
    pci.writeBar(2, v * 16 + 12, 4, masked ? 1n : 0n);
  };
  entry(3, 0xfee03000n, 0x4063, false);
  t.same(setIrqsCalls(trace), [], 'the function mask still holds it');
  pci.writeConfig(0x72, 2, 0x8000);
  entry(7, 0xfee07000n, 0x4067, false);
  t.same(shape(setIrqsCalls(trace)), [
    { index: 2, action: TRIGGER, start: 3, count: 1, fds: [1] },
    { index: 2, action: TRIGGER, start: 7, count: 1, fds: [1] },
  ], 'one vector per call, nothing re-enabled');
  t.same(pci.wiredVectors, [3, 7]);
  t.equal(pci.readBar(2, 3 * 16 + 8, 4), 0x4063n, 'the guest reads its own table');
  t.equal(driver.fn.msix?.message(3).data, 0x43, 'the device holds the host\'s message');

  pci.writeConfig(0x04, 2, pci.readConfig(0x04, 2) | 0x4);
  const got = nextEvent(pci, 'msi');
  driver.fn.fireMsix(3);
  t.same(await got, [{ address: 0xfee03000n, data: 0x4063 }, { kind: 'msix', vector: 3 }]);

  trace.length = 0;
  pci.writeBar(2, 3 * 16 + 12, 4, 1n);
  t.same(setIrqsCalls(trace), [], 'masking keeps the wiring');
  driver.fn.fireMsix(3);
  t.same(await eventsDuring(pci, 'msi', 20), []);
  t.equal(pci.readBar(2, 0x3000, 8), 0x8n, 'pending in the guest\'s PBA');
  pci.writeBar(2, 0x3000, 8, 0n);
  t.equal(pci.readBar(2, 0x3000, 8), 0x8n, 'the PBA is read-only');
  const late = nextEvent(pci, 'msi');
  pci.writeBar(2, 3 * 16 + 12, 4, 0n);
  t.same(await late, [{ address: 0xfee03000n, data: 0x4063 }, { kind: 'msix', vector: 3 }], 'delivered at unmask');
  t.equal(pci.readBar(2, 0x3000, 8), 0n);

  t.equal(pci.readConfig(0x70, 4), 0x800f8011, 'the guest\'s MSI-X capability');
  trace.length = 0;
  pci.writeConfig(0x72, 2, 0x0000);
  t.same(shape(setIrqsCalls(trace)), [
    { index: 2, action: TRIGGER, start: 0, count: 0, fds: [] },
    { index: 0, action: TRIGGER, start: 0, count: 1, fds: [1] },
  ], 'MSI-X off, INTx back');
  sim.stopTrace();
});

t.test('MSI-X on a kernel that cannot grow it (NORESIZE)', async (t) => {
  const { pci, sim, driver } = open(t, { dynMsix: false });
  pci.writeBar(2, 0, 8, 0xfee00000n);
  pci.writeBar(2, 8, 4, 0x4060n);
  pci.writeBar(2, 12, 4, 0n);
  const trace = sim.startTrace();
  pci.writeConfig(0x72, 2, 0x8000);
  t.same(shape(setIrqsCalls(trace)).slice(1), [{ index: 2, action: TRIGGER, start: 0, count: 1, fds: [1] }], 'enabled with vector 0, no empty enable first');
  trace.length = 0;
  pci.writeBar(2, 2 * 16 + 8, 4, 0x4062n);
  pci.writeBar(2, 2 * 16 + 12, 4, 0n);
  t.same(shape(setIrqsCalls(trace)), [
    { index: 2, action: TRIGGER, start: 0, count: 0, fds: [] },
    { index: 2, action: TRIGGER, start: 0, count: 3, fds: [1, -1, 1] },
  ], 'disable, then enable 3 vectors with the unused one as -1 (vfio_msix_vector_do_use)');
  pci.writeConfig(0x04, 2, pci.readConfig(0x04, 2) | 0x4);
  const got = nextEvent(pci, 'msi');
  driver.fn.fireMsix(2);
  t.same(await got, [{ address: 0n, data: 0x4062 }, { kind: 'msix', vector: 2 }]);
  sim.stopTrace();
});

t.test('INTx: assert, end of interrupt, resampling', async (t) => {
  const { pci, driver } = open(t);
  const up = nextEvent(pci, 'intx');
  driver.fn.setIntx(true);
  t.same(await up, [true]);
  const down = nextEvent(pci, 'intx');
  pci.intxEoi();
  t.same(await down, [false]);
  t.same(await nextEvent(pci, 'intx'), [true], 'still asserted by the device: again');
  driver.fn.setIntx(false);
  pci.intxEoi();
  t.same(await eventsDuring(pci, 'intx', 20), [], 'serviced');
  pci.intxEoi();
  t.equal(pci.intx?.pending, false, 'an EOI with nothing pending does nothing');
  pci.close();

  const r = openTestDev(t);
  const trace = r.sim.startTrace();
  using res = new VfioPciDevice(r.device, { intxResample: true });
  t.same(shape(setIrqsCalls(trace)), [
    { index: 0, action: TRIGGER, start: 0, count: 1, fds: [1] },
    { index: 0, action: VFIO_IRQ_SET_ACTION_UNMASK, start: 0, count: 1, fds: [1] },
  ], 'trigger and unmask eventfds');
  trace.length = 0;
  const a = nextEvent(res, 'intx');
  r.driver.fn.setIntx(true);
  t.same(await a, [true]);
  r.driver.fn.setIntx(false);
  res.intxEoi();
  t.same(setIrqsCalls(trace), [], 'the end of interrupt is an eventfd write, not an ioctl');
  const b = nextEvent(res, 'intx');
  r.driver.fn.setIntx(true);
  t.same(await b, [true], 'unmasked');
  res.intx?.mask();
  res.intx?.unmask();
  r.sim.stopTrace();
});

t.test('guest config and BAR accesses', async (t) => {
  const { pci, device } = open(t);
  device.region(7).write32(0x68, 0xa1b2c3d4);
  t.equal(pci.readConfig(0x66, 4), 0xc3d40000, 'MSI bytes from the emulation, the gap after it from the device');
  pci.writeConfig(0x0c, 1, 0x10);
  t.equal(pci.readConfig(0x0c, 1), 0x10, 'ordinary registers go to the kernel');
  t.equal(pci.readBar(0, 0, 4), 0x7e57de71n);
  pci.writeBar(0, 4, 4, 0x55n);
  t.equal(pci.readBar(0, 4, 2), 0x55n);
  pci.writeBar(4, 0x100, 8, 0x0102030405060708n);
  t.equal(pci.readBar(4, 0x100, 8), 0x0102030405060708n);
  pci.writeBar(4, 0x108, 1, 0xffn);
  pci.writeBar(4, 0x10a, 2, 0xeeeen);
  t.equal(pci.readBar(4, 0x108, 4), 0xeeee00ffn);
  t.equal(pci.readBar(4, 0x108, 1), 0xffn);
  pci.close();
  pci.close();
  t.type(thrown(() => pci.writeConfig(0x0c, 1, 0)), VfioClosedError, 'closed');
  t.equal(device.closed, true, 'the VFIO device went with it');
});
