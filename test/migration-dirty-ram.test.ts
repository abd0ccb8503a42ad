/**
 * RAM consistency across a live migration, on the simulated kernel: a DMA
 * device writes "guest RAM" while the runner migrates its state; during
 * precopy and at the switchover the VMM syncs the dirty tracker and copies
 * the dirty RAM pages; at the end the destination RAM equals the source RAM
 * byte for byte and the destination device carries on from the source's
 * state. With each tracker: device logging, type1 over pinned pages, type1
 * over `vfio_dma_rw`, and all-dirty. A missed sync makes the RAM differ.
 *
 * The runner migrates device state only; RAM is copied beside it, from its
 * events (a RAM section in the stream would be the runner's). The iommufd
 * tracker is not here: its device is opened through the vfio cdev, and
 * `VfioMigration` takes a group-opened `VfioDevice` (see test/dirty-tracker.test.ts).
 */
import t from 'tap';
import { noConfigState } from '../lib/migration/config-state.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { addDmaDevice } from '../lib/sim/dma-device.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { DirtyBitmap } from '../lib/vfio/dirty-bitmap.js';
import { createDirtyTracker } from '../lib/vfio/dirty-tracker.js';
import { VFIO_DEVICE_STATE_PRE_COPY_P2P, VFIO_DEVICE_STATE_STOP, VFIO_DEVICE_STATE_STOP_COPY } from '../lib/vfio/uapi/constants.js';
import { EXPECTED_KIND, PAGE, RAM_IOVA, RamMirror, dmaSetup, type Scenario } from './helpers/dirty-sim.js';
import { runBoth } from './helpers/migration-sim.js';

const SCENARIOS: Scenario[] = ['device-logging', 'type1-pinned', 'type1-rw', 'all-dirty'];

async function migrate(scenario: Scenario, skipFinalSync = false) {
  using s = dmaSetup(scenario, { ramPages: 128 });
  if (s.device === null || s.container === null) throw new Error('a group-opened device is needed');
  const dstDma = addDmaDevice(s.sim, { mode: s.dma.mode, name: s.dma.mode === 'iommu' ? '0000:00:06.0' : 'd3a0d3a0-0000-4000-8000-00000000d3a1', logging: false, seed: 99 });
  using dstContainer = VfioContainer.open({ sys: s.sim });
  const dstDevice = dstContainer.openDevice(dstDma.name);
  using src = VfioMigration.open(s.device, { config: noConfigState });
  using dst = VfioMigration.open(dstDevice, { idstr: src.idstr, config: noConfigState });
  using tracker = createDirtyTracker(s.trackerOptions);
  const bitmap = new DirtyBitmap(s.bitmapPages, { kernelBufferPages: 32 });
  const mirror = new RamMirror(s.ram, Number(RAM_IOVA) / PAGE);
  // log_global_start: tracking is on before the first copy of RAM.
  tracker.start();
  s.dma.step(100);
  mirror.copyAll();
  let ramRounds = 0;
  let finalSyncs = 0;
  let dmaAfterStop = 0;
  const round = (): void => {
    s.dma.step(60);
    tracker.sync(bitmap);
    s.dma.step(10);
    mirror.copyDirty(bitmap);
    ramRounds++;
  };
  const outcome = await runBoth({ devices: [src], maxIterations: 50 }, { devices: [dst] }, (source) => {
    // Precopy: RAM rounds while the device runs in PRE_COPY and writes.
    source.on('pending', () => {
      for (let i = 0; i < 3; i++) round();
    });
    source.on('state', (_id, _from, to) => {
      if (to === VFIO_DEVICE_STATE_PRE_COPY_P2P) s.dma.step(25);
      // The device stopped: its DMA is over, the last dirty pages are final.
      if ((to === VFIO_DEVICE_STATE_STOP_COPY || to === VFIO_DEVICE_STATE_STOP) && finalSyncs++ === 0 && !skipFinalSync) {
        dmaAfterStop = s.dma.step(10);
        tracker.sync(bitmap);
        mirror.copyDirty(bitmap);
      }
    });
  });
  tracker.stop();
  return { outcome, mirror, ramRounds, tracker, dmaAfterStop, srcWrites: s.dma.writes, dstWrites: dstDma.writes, dstWindow: dstDma.window, ramPages: s.ramPages };
}

for (const scenario of SCENARIOS) {
  t.test(`${scenario}: destination RAM equals source RAM after a live migration`, async (t) => {
    const r = await migrate(scenario);
    t.ok(r.outcome.source.ok, 'the source side completed');
    t.ok(r.outcome.destination.ok, 'the destination side completed');
    if (!r.outcome.source.ok) t.error(r.outcome.source.error);
    if (!r.outcome.destination.ok) t.error(r.outcome.destination.error);
    t.equal(r.tracker.kind, EXPECTED_KIND[scenario], r.tracker.reason);
    t.equal(r.dmaAfterStop, 0, 'no DMA once the device stopped');
    t.ok(r.ramRounds >= 3, `${r.ramRounds} RAM rounds during precopy`);
    t.ok(r.mirror.matches(), `RAM is byte for byte equal (${r.mirror.copied} pages copied, ${r.srcWrites} DMA writes)`);
    t.equal(r.dstWrites, r.srcWrites, 'the destination engine carries on from the source state');
    t.same(r.dstWindow, { iova: RAM_IOVA, size: r.ramPages * PAGE, writeBytes: 48 }, 'with the same DMA window');
  });
}

t.test('a migration that misses the last sync leaves the destination RAM stale', async (t) => {
  const r = await migrate('device-logging', true);
  t.ok(r.outcome.source.ok && r.outcome.destination.ok, 'the migration itself completes');
  t.notOk(r.mirror.matches(), 'the RAM differs: the test would catch a missed dirty page');
});
