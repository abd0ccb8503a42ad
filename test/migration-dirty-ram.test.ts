/**
 * RAM consistency across a live migration, on the simulated kernel: a DMA
 * device writes "guest RAM" while the runner migrates it, the RAM in the
 * stream as QEMU's "ram" section. The runner syncs the dirty tracker and
 * sends the dirty pages each round, syncs once more after the vCPUs and the
 * device stopped, and at the end the destination RAM equals the source RAM
 * byte for byte while the destination device carries on from the source's
 * state. With each tracker: device logging, type1 over pinned pages, type1
 * over `vfio_dma_rw`, iommufd (the device opened through its cdev), and
 * all-dirty. A dropped dirty page, or a skipped final sync, makes the RAM differ.
 */
import t from 'tap';
import { noConfigState } from '../lib/migration/config-state.js';
import { GuestRam } from '../lib/migration/guest-ram.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { RamLoader } from '../lib/migration/ram-load.js';
import { RamSaver } from '../lib/migration/ram-save.js';
import { addDmaDevice, type SimDmaDevice } from '../lib/sim/dma-device.js';
import type { SimKernel } from '../lib/sim/kernel.js';
import { VfioContainer } from '../lib/vfio/container.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import { DirtyBitmap } from '../lib/vfio/dirty-bitmap.js';
import { createDirtyTracker, type DirtyTracker } from '../lib/vfio/dirty-tracker.js';
import { Iommufd } from '../lib/vfio/iommufd.js';
import { IommufdDevice } from '../lib/vfio/iommufd-device.js';
import { VFIO_DEVICE_STATE_PRE_COPY_P2P, VFIO_DEVICE_STATE_STOP_COPY } from '../lib/vfio/uapi/constants.js';
import { EXPECTED_KIND, PAGE, RAM_IOVA, dmaSetup, type Scenario } from './helpers/dirty-sim.js';
import { runBoth } from './helpers/migration-sim.js';

const SCENARIOS: Scenario[] = ['device-logging', 'type1-pinned', 'type1-rw', 'iommufd', 'all-dirty'];
const RAM_PAGES = 128;
/** Trackers that report every RAM page at every sync. */
const EVERYTHING_DIRTY: ReadonlySet<Scenario> = new Set(['type1-pinned', 'all-dirty']);
/** Convergence checks during which the device writes; then it goes quiet until the final stretch. */
const BUSY_CHECKS = 4;

/** The destination: a second DMA device (no writes until started), opened the way the source's was. */
function destination(sim: SimKernel, scenario: Scenario, mode: SimDmaDevice['mode']): { dma: SimDmaDevice; device: VfioDevice } & Disposable {
  const name = mode === 'iommu' ? '0000:00:06.0' : 'd3a0d3a0-0000-4000-8000-00000000d3a1';
  const dma = addDmaDevice(sim, { mode, name, logging: false, seed: 99 });
  if (scenario === 'iommufd') {
    const fd = Iommufd.open({ sys: sim });
    const idev = IommufdDevice.bind(fd, name);
    idev.attach(fd.allocIoas().id);
    return {
      dma,
      device: idev.device,
      [Symbol.dispose]: () => {
        idev.close();
        fd.close();
      },
    };
  }
  const container = VfioContainer.open({ sys: sim });
  return { dma, device: container.openDevice(name), [Symbol.dispose]: () => container.close() };
}

/** A tracker that loses what `lose` says, to show the test would catch it. */
function lossy(inner: DirtyTracker, lose: (fresh: DirtyBitmap) => void): DirtyTracker {
  return {
    get kind() {
      return inner.kind;
    },
    get reason() {
      return inner.reason;
    },
    get pageSize() {
      return inner.pageSize;
    },
    get tracking() {
      return inner.tracking;
    },
    get lastError() {
      return inner.lastError;
    },
    start: () => inner.start(),
    stop: () => inner.stop(),
    close: () => inner.close(),
    [Symbol.dispose]: () => inner.close(),
    sync: (bitmap) => {
      // Only what this sync reports can be lost: pages already dirty stay dirty.
      const fresh = new DirtyBitmap(bitmap.npages);
      inner.sync(fresh);
      lose(fresh);
      bitmap.mergeKernelBitmap(fresh.toKernelBitmap(), 0, bitmap.npages);
    },
  };
}

type Loss = 'none' | 'drop-one-page' | 'skip-final-sync';

async function migrate(scenario: Scenario, loss: Loss = 'none') {
  using s = dmaSetup(scenario, { ramPages: RAM_PAGES });
  // Some content before the migration, the rest zero: both page kinds go out.
  const srcBytes = s.ram.view();
  for (let i = 0; i < srcBytes.length / 2; i++) srcBytes[i] = (i * 31 + 7) & 0xff;
  const ram = new GuestRam([{ name: 'pc.ram', memory: s.ram, iova: RAM_IOVA }]);
  using tracker = createDirtyTracker({ ...s.trackerOptions, ram: ram.ranges, pageSize: BigInt(ram.pageSize) });
  let vcpusStopped = false;
  let dropped = 0;
  const watched =
    loss === 'none'
      ? tracker
      : lossy(tracker, (fresh) => {
          if (loss === 'skip-final-sync' && vcpusStopped) fresh.clear();
          if (loss === 'drop-one-page') {
            const [first] = fresh.runs();
            if (first !== undefined) {
              fresh.testAndClear(first[0]);
              dropped++;
            }
          }
        });
  using saver = new RamSaver({ ram, tracker: watched, batchPages: 16 });
  using dst = destination(s.sim, scenario, s.dma.mode);
  // Garbage on the destination: every page, zero ones included, must be written.
  const dstMemory = new Uint8Array(ram.size).fill(0xee);
  const loader = new RamLoader(new GuestRam([{ name: 'pc.ram', memory: dstMemory, iova: RAM_IOVA }]));
  using src = VfioMigration.open(s.device, { config: noConfigState });
  using into = VfioMigration.open(dst.device, { idstr: src.idstr, config: noConfigState });
  const dma = { precopy: 0, finalStretch: 0, afterStop: 0 };
  const rounds: number[] = [];
  // A tracker that sees every page dirty converges only once the measured bandwidth makes room for all of RAM;
  // with the others a budget under a page makes RAM iterate until the device goes quiet.
  const bandwidth = EVERYTHING_DIRTY.has(scenario) ? undefined : 1024;
  const busy = (): boolean => rounds.length < BUSY_CHECKS;
  const outcome = await runBoth(
    { devices: [src], ram: saver, bandwidth, maxIterations: 50, stopVcpus: () => void (vcpusStopped = true) },
    { devices: [into], ram: loader },
    (source) => {
      // Precopy: the device writes before each convergence check and after each round, for a while.
      source.on('pending', () => void (dma.precopy += busy() ? s.dma.step(60) : 0));
      source.on('iteration', (i) => {
        rounds.push(i.ramPages);
        if (busy()) dma.precopy += s.dma.step(10);
      });
      // The final stretch: after the last round, before the vCPUs stop, and during the P2P quiesce.
      source.on('switchover', () => void (dma.finalStretch += s.dma.step(30)));
      source.on('state', (_id, _from, to) => {
        if (to === VFIO_DEVICE_STATE_PRE_COPY_P2P) dma.finalStretch += s.dma.step(25);
        // The device stopped: its DMA is over, the final sync comes next.
        if (to === VFIO_DEVICE_STATE_STOP_COPY) dma.afterStop += s.dma.step(10);
      });
    },
  );
  const equal = Buffer.compare(Buffer.from(dstMemory), Buffer.from(s.ram.view())) === 0;
  return { outcome, equal, dma, rounds, dropped, tracker, srcWrites: s.dma.writes, dstWrites: dst.dma.writes, dstWindow: dst.dma.window, faults: s.dma.faults };
}

for (const scenario of SCENARIOS) {
  t.test(`${scenario}: destination RAM equals source RAM after a live migration`, async (t) => {
    const r = await migrate(scenario);
    if (!r.outcome.source.ok) t.error(r.outcome.source.error, 'the source side completed');
    if (!r.outcome.destination.ok) t.error(r.outcome.destination.error, 'the destination side completed');
    if (!r.outcome.source.ok || !r.outcome.destination.ok) return;
    const sent = r.outcome.source.result;
    const loaded = r.outcome.destination.result;
    t.equal(r.tracker.kind, EXPECTED_KIND[scenario], r.tracker.reason);
    t.ok(r.dma.precopy > 0 && r.dma.finalStretch > 0, `the device wrote in precopy (${r.dma.precopy}) and in the final stretch (${r.dma.finalStretch})`);
    t.equal(r.dma.afterStop, 0, 'no DMA once the device stopped');
    t.equal(r.faults, 0, 'no DMA fault');
    t.ok(r.equal, 'destination RAM equals source RAM byte for byte');
    const ram = sent.ram;
    t.ok(ram !== undefined && ram.syncs > ram.rounds, `RAM in ${ram?.rounds} rounds (pages: ${r.rounds.join(', ')}), ${ram?.syncs} syncs`);
    t.equal(ram?.rounds, r.rounds.length, 'one RAM section per precopy round');
    t.equal(r.rounds[0], RAM_PAGES, 'the first round sends every page');
    if (EVERYTHING_DIRTY.has(scenario)) t.ok(r.rounds.every((n) => n === RAM_PAGES), 'every round sends every page');
    else t.ok(r.rounds.length >= BUSY_CHECKS && r.rounds.slice(1).every((n) => n > 0 && n < RAM_PAGES / 2), 'later rounds send the pages written since the last sync');
    t.ok(ram !== undefined && ram.pages + ram.zeroPages >= RAM_PAGES, `${ram?.pages} pages and ${ram?.zeroPages} zero pages sent, ${ram?.bytes} bytes`);
    t.ok(ram !== undefined && ram.zeroPages > 0 && ram.stopCopyPages > 0, `zero pages sent, and ${ram?.stopCopyPages} pages after the stop`);
    t.same(loaded.ram, { pages: ram?.pages, zeroPages: ram?.zeroPages, sizesMatched: true }, 'the destination loaded what was sent');
    t.equal(r.dstWrites, r.srcWrites, 'the destination engine carries on from the source state');
    t.same(r.dstWindow, { iova: RAM_IOVA, size: RAM_PAGES * PAGE, writeBytes: 48 }, 'with the same DMA window');
  });
}

t.test('a tracker that drops one dirty page per sync leaves the destination RAM stale', async (t) => {
  const r = await migrate('device-logging', 'drop-one-page');
  t.ok(r.outcome.source.ok && r.outcome.destination.ok, 'the migration itself completes');
  t.ok(r.dropped > 0, `${r.dropped} pages dropped`);
  t.notOk(r.equal, 'the RAM differs: the test catches a missed dirty page');
});

t.test('skipping the final sync leaves the destination RAM stale', async (t) => {
  const r = await migrate('device-logging', 'skip-final-sync');
  t.ok(r.outcome.source.ok && r.outcome.destination.ok, 'the migration itself completes');
  t.ok(r.dma.finalStretch > 0, 'the device wrote after the last precopy sync');
  t.notOk(r.equal, 'the RAM differs: the writes of the final stretch are lost');
});
