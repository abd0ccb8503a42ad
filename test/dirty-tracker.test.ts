/**
 * DirtyTracker on the simulated kernel: the ladder's choice and its reason,
 * and RAM consistency without a migration. A VMM copies guest RAM while a
 * DMA device writes it, syncing the tracker and copying the dirty pages each
 * round; once the device stops, the copy equals the source byte for byte,
 * with each tracker. A dropped dirty page breaks the equality.
 */
import t from 'tap';
import { DirtyTrackingError, VfioSystemError } from '../lib/errors.js';
import { IOMMU_HWPT_GET_DIRTY_BITMAP } from '../lib/vfio/uapi/iommufd.js';
import { VFIO_DEVICE_FEATURE } from '../lib/vfio/uapi/ioctls.js';
import { DirtyBitmap } from '../lib/vfio/dirty-bitmap.js';
import { createDirtyTracker } from '../lib/vfio/dirty-tracker.js';
import type { DeviceLoggingTracker } from '../lib/vfio/dirty-tracker-logging.js';
import { VFIO_DEVICE_STATE_STOP } from '../lib/vfio/uapi/constants.js';
import { EXPECTED_KIND, PAGE, RAM_IOVA, RamMirror, dmaSetup, type Scenario } from './helpers/dirty-sim.js';
import { thrown } from './helpers/expect.js';

const SCENARIOS: Scenario[] = ['device-logging', 'type1-pinned', 'type1-rw', 'iommufd', 'all-dirty'];

for (const scenario of SCENARIOS) {
  t.test(`${scenario}: the ladder picks ${EXPECTED_KIND[scenario]} and RAM copies stay consistent`, async (t) => {
    using s = dmaSetup(scenario);
    using tracker = createDirtyTracker(s.trackerOptions);
    t.equal(tracker.kind, EXPECTED_KIND[scenario], tracker.reason);
    t.ok(tracker.reason.length > 0, 'says why');
    const bitmap = new DirtyBitmap(s.bitmapPages, { kernelBufferPages: 64 });
    const mirror = new RamMirror(s.ram, Number(RAM_IOVA) / PAGE);
    tracker.start();
    mirror.copyAll();
    let rounds = 0;
    for (; rounds < 8; rounds++) {
      s.dma.step(150);
      tracker.sync(bitmap);
      // Writes between the sync and the copy are caught by the next sync.
      s.dma.step(20);
      mirror.copyDirty(bitmap);
    }
    s.dma.step(20);
    t.notOk(mirror.matches(), 'the device wrote after the last copy');
    s.dma.configure(null);
    tracker.sync(bitmap);
    mirror.copyDirty(bitmap);
    t.ok(mirror.matches(), `destination RAM equals source RAM after ${rounds} rounds (${mirror.copied} pages copied, ${s.dma.writes} writes)`);
    t.equal(s.dma.faults, 0, 'no DMA fault');
    if (scenario === 'all-dirty' || scenario === 'type1-pinned') {
      t.equal(mirror.copied, s.ramPages * (rounds + 2), 'every page copied at every round');
    } else t.ok(mirror.copied < s.ramPages * (rounds + 2), `only dirty pages copied (${mirror.copied})`);
    tracker.stop();
    t.notOk(tracker.tracking);
  });
}

t.test('a missed dirty page makes the copies differ', async (t) => {
  using s = dmaSetup('device-logging');
  using tracker = createDirtyTracker(s.trackerOptions);
  const bitmap = new DirtyBitmap(s.bitmapPages);
  const mirror = new RamMirror(s.ram, Number(RAM_IOVA) / PAGE);
  tracker.start();
  mirror.copyAll();
  s.dma.step(50);
  s.dma.configure(null);
  tracker.sync(bitmap);
  const [first] = bitmap.runs(mirror.firstPage);
  t.ok(first, 'something is dirty');
  if (first) bitmap.testAndClear(first[0]);
  mirror.copyDirty(bitmap);
  t.notOk(mirror.matches(), 'one lost page is seen');
});

t.test('the device migration state gates DMA; the tracker runs without a migration', async (t) => {
  using s = dmaSetup('device-logging');
  t.ok(s.device);
  t.equal(s.dma.step(10), 10, 'RUNNING: writes');
  s.dma.migration.setState(VFIO_DEVICE_STATE_STOP);
  t.equal(s.dma.step(10), 0, 'STOP: no DMA');
});

t.test('device logging accepts a page size the device changed', async (t) => {
  using s2 = dmaSetup('device-logging', { ramPages: 128, logPageSize: 8192n });
  using tracker = createDirtyTracker(s2.trackerOptions);
  tracker.start();
  t.equal(tracker.kind, 'device-logging');
  t.same([...(tracker as DeviceLoggingTracker).devicePageSizes.values()], [8192n], 'the device chose 8 KiB pages');
  const bitmap = new DirtyBitmap(s2.bitmapPages);
  const mirror = new RamMirror(s2.ram, Number(RAM_IOVA) / PAGE);
  mirror.copyAll();
  s2.dma.step(100);
  s2.dma.configure(null);
  tracker.sync(bitmap);
  mirror.copyDirty(bitmap);
  t.ok(mirror.matches(), 'the kernel replicates 8 KiB bits into 4 KiB ones');
});

t.test('mapping changes while tracking: re-arm and no lost page', async (t) => {
  for (const scenario of ['device-logging', 'type1-rw', 'iommufd'] as const) {
    using s = dmaSetup(scenario, { ramPages: 64 });
    using tracker = createDirtyTracker(s.trackerOptions);
    tracker.start();
    const extra = s.sim.allocPages(16 * PAGE);
    const extraIova = RAM_IOVA + BigInt(s.ramPages * PAGE) + 0x100000n;
    const bitmap = new DirtyBitmap(Number(extraIova) / PAGE + 16);
    if (s.container !== null) s.container.mapDma({ iova: extraIova, buffer: extra });
    else s.trackerOptions.iommufd?.ioas.map({ iova: extraIova, buffer: extra });
    s.dma.configure({ iova: extraIova, size: 16 * PAGE });
    s.dma.step(40);
    tracker.sync(bitmap);
    t.ok(bitmap.count(Number(extraIova) / PAGE, 16) > 0, `${scenario}: writes to the new mapping are seen`);
    bitmap.clear();
    s.dma.step(40);
    s.dma.configure(null);
    if (s.container !== null) s.container.unmapDma(extraIova, 16 * PAGE);
    else s.trackerOptions.iommufd?.ioas.unmap(extraIova, BigInt(16 * PAGE));
    tracker.sync(bitmap);
    t.ok(bitmap.count(Number(extraIova) / PAGE, 16) > 0, `${scenario}: writes before the unmap are not lost`);
  }
});

t.test('sync before start is refused', async (t) => {
  using s = dmaSetup('type1-rw');
  using tracker = createDirtyTracker(s.trackerOptions);
  const e = thrown(() => tracker.sync(new DirtyBitmap(s.bitmapPages)));
  t.type(e, DirtyTrackingError);
  t.equal((e as DirtyTrackingError).rule, 'not-tracking');
});

t.test('the ladder explains what it skipped', async (t) => {
  using s = dmaSetup('type1-pinned');
  const tracker = createDirtyTracker(s.trackerOptions);
  t.match(tracker.reason, /no DMA logging on/);
  t.match(tracker.reason, /no iommufd HWPT/);
  t.match(tracker.reason, /type1/);
  const none = createDirtyTracker({});
  t.equal(none.kind, 'all-dirty');
  none.start();
  const bm = new DirtyBitmap(100);
  none.sync(bm);
  t.equal(bm.count(), 100, 'without any layout, the whole bitmap is dirty');
  none.close();
});

t.test('after a failed report or HWPT read, the whole range is dirty', async (t) => {
  for (const scenario of ['device-logging', 'iommufd'] as const) {
    using s = dmaSetup(scenario, { ramPages: 32 });
    using tracker = createDirtyTracker(s.trackerOptions);
    tracker.start();
    s.dma.step(3);
    const request = scenario === 'device-logging' ? VFIO_DEVICE_FEATURE : IOMMU_HWPT_GET_DIRTY_BITMAP;
    s.sim.faults.inject({ syscall: 'ioctl', request, nth: 1, errno: 'EIO' });
    const bitmap = new DirtyBitmap(s.bitmapPages);
    tracker.sync(bitmap);
    t.equal(bitmap.count(), 32, `${scenario}: every RAM page is dirty`);
    t.type(tracker.lastError, VfioSystemError, 'and the error is kept');
    bitmap.clear();
    tracker.sync(bitmap);
    const again = bitmap.count();
    t.ok(again > 0 && again <= 3, `the next sync reads the device again: the ${again} pages the failed read left`);
  }
});
