/**
 * The pure rules of dirty tracking: type1 query planning (no bisected
 * mapping, split by max_dirty_bitmap_size), QEMU's reduction of the memory
 * map to three DMA logging ranges, START's range checks (against the
 * simulated vfio core's errnos when sent raw), and the RAM layout.
 */
import t from 'tap';
import { DirtyTrackingError } from '../lib/errors.js';
import { addDmaDevice } from '../lib/sim/dma-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { DmaLogging, checkLoggingRanges, maxLoggingRanges } from '../lib/vfio/dma-logging.js';
import { reduceLoggingRanges } from '../lib/vfio/dma-logging-ranges.js';
import { RamLayout, chunkSpan, mappedRuns } from '../lib/vfio/ram-layout.js';
import { checkType1Query, planType1Queries, type1DirtyParams } from '../lib/vfio/type1-dirty.js';
import { VFIO_DEVICE_FEATURE_DMA_LOGGING_START, VFIO_DEVICE_FEATURE_SET } from '../lib/vfio/uapi/constants.js';
import { featureBuffer, featurePayload } from '../lib/vfio/uapi/feature.js';
import { VFIO_DEVICE_FEATURE } from '../lib/vfio/uapi/ioctls.js';
import { encode } from '../lib/vfio/uapi/layout.js';
import { vfio_device_feature_dma_logging_control, vfio_device_feature_dma_logging_range } from '../lib/vfio/uapi/structs.js';
import { expectErrno, thrown } from './helpers/expect.js';

const P = 4096n;
const rule = (f: () => unknown): string => {
  const e = thrown(f);
  return e instanceof DirtyTrackingError ? e.rule : String(e);
};

t.test('type1 parameters come from the MIGRATION capability', async (t) => {
  t.same(type1DirtyParams({ flags: 0, iovaPgsizes: 0n, otherCaps: [], migration: { flags: 0, pgsizeBitmap: 0x1000n | 0x200000n, maxDirtyBitmapSize: 256n } }), {
    pgsize: 4096n,
    maxBitmapBytes: 256n,
  });
  t.equal(type1DirtyParams({ flags: 0, iovaPgsizes: 0n, otherCaps: [] }), null, 'no capability: no tracking (the iommufd compat container)');
});

t.test('type1 queries never bisect a mapping and fit the bitmap limit', async (t) => {
  const params = { pgsize: P, maxBitmapBytes: 16n }; // 128 pages per query
  const maps = [
    { iova: 0n, size: 64n * P },
    { iova: 64n * P, size: 64n * P },
    { iova: 200n * P, size: 32n * P },
    { iova: 1000n * P, size: 128n * P },
  ];
  t.same(planType1Queries(params, maps, 0n, 2000n * P), [
    { iova: 0n, size: 128n * P },
    { iova: 200n * P, size: 32n * P },
    { iova: 1000n * P, size: 128n * P },
  ]);
  t.same(
    planType1Queries(params, maps, 0n, 232n * P, 64),
    [
      { iova: 0n, size: 64n * P },
      { iova: 64n * P, size: 64n * P },
      { iova: 200n * P, size: 32n * P },
    ],
    'a page limit splits further, still at mapping boundaries',
  );
  t.equal(rule(() => planType1Queries(params, maps, 0n, 2000n * P, 100)), 'bitmap-size', 'one mapping bigger than the limit');
  t.equal(rule(() => planType1Queries(params, maps, P, 10n * P)), 'bisects-mapping');
  t.same(planType1Queries(params, maps, 3000n * P, 10n * P), [], 'nothing mapped: nothing to ask');
  t.equal(rule(() => checkType1Query('q', params, maps, 0n, 0n)), 'alignment', 'empty');
  t.equal(rule(() => checkType1Query('q', params, maps, 0n, 100n * P)), 'bisects-mapping');
  t.equal(rule(() => checkType1Query('q', params, maps, 0n, 2000n * P)), 'bitmap-size', 'above max_dirty_bitmap_size');
  checkType1Query('q', params, maps, 0n, 128n * P);
});

t.test("QEMU's three logging ranges", async (t) => {
  const G = 1n << 30n;
  t.same(reduceLoggingRanges([]), []);
  t.same(
    reduceLoggingRanges([
      { iova: 0n, size: 640n << 10n },
      { iova: 1n << 20n, size: 2n * G },
      { iova: 4n * G, size: 4n * G },
      { iova: 1n << 40n, size: G },
      { iova: 64n << 40n, size: 1n << 28n, vfioPci: true },
      { iova: 0xfe000000n, size: 1n << 20n, vfioPci: true },
    ]),
    [
      { iova: 0n, size: 0xfe100000n },
      { iova: 4n * G, size: (1n << 40n) + G - 4n * G },
      { iova: 64n << 40n, size: 1n << 28n },
    ],
    'below 4 GiB, above it, and the 64-bit PCI hole; a 32-bit BAR joins the 32-bit range',
  );
  t.same(reduceLoggingRanges([{ iova: 4n * G, size: 0n }]), [], 'empty sections are skipped');
});

t.test('START range checks, before the kernel and by it', async (t) => {
  t.equal(maxLoggingRanges(4096), 256);
  t.equal(rule(() => checkLoggingRanges([], P, 256)), 'range-count');
  const many = Array.from({ length: 257 }, (_, i) => ({ iova: BigInt(i) * 2n * P, size: P }));
  t.equal(rule(() => checkLoggingRanges(many, P, 256)), 'range-count');
  checkLoggingRanges(many.slice(0, 256), P, 256);
  t.equal(rule(() => checkLoggingRanges([{ iova: 1n, size: P }], P, 256)), 'alignment');
  t.equal(rule(() => checkLoggingRanges([{ iova: 0n, size: 2n * P }, { iova: P, size: P }], P, 256)), 'range-overlap');
  t.equal(rule(() => checkLoggingRanges([{ iova: 0n, size: P }], 3000n, 256)), 'page-size');

  const sim = new SimKernel();
  const dma = addDmaDevice(sim, { mode: 'iommu' });
  using c = VfioContainer.open({ sys: sim });
  const dev = c.openDevice(dma.name);
  t.ok(DmaLogging.probe(dev), 'the DMA device offers logging');
  const raw = (ranges: { iova: bigint; size: bigint }[], count = ranges.length): number => {
    const array = new Uint8Array(Math.max(1, ranges.length) * 16);
    ranges.forEach((r, i) => encode(vfio_device_feature_dma_logging_range, { iova: r.iova, length: r.size }, array, i * 16));
    const buf = featureBuffer(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, vfio_device_feature_dma_logging_control.size);
    encode(vfio_device_feature_dma_logging_control, { page_size: P, num_ranges: count, ranges: sim.addressOf(array) }, featurePayload(buf));
    return sim.ioctl(dev.fd, VFIO_DEVICE_FEATURE, buf);
  };
  expectErrno(t, () => raw(many), 'E2BIG', 'kernel: 257 ranges');
  expectErrno(t, () => raw([], 0), 'EINVAL', 'kernel: no range');
  expectErrno(t, () => raw([{ iova: 0n, size: 2n * P }, { iova: P, size: P }]), 'EINVAL', 'kernel: overlapping ranges');
  const log = new DmaLogging(dev);
  t.equal(log.start([{ iova: 0n, size: 16n * P }], P), P);
  t.equal(rule(() => log.start([{ iova: 0n, size: 16n * P }], P)), 'unsupported', 'one START at a time');
  t.equal(rule(() => log.report(0n, 16n * P, 2048n)), 'page-size', 'report pages of at least 4 KiB');
  t.equal(rule(() => log.report(0n, 16n * P, P, new Uint8Array(1))), 'bitmap-size');
  log.stop();
  log.stop();
  t.equal(rule(() => log.report(0n, 16n * P, P)), 'not-tracking');
});

t.test('RAM layout and spans', async (t) => {
  const identity = new RamLayout(P);
  t.same(identity.ranges([{ iova: 0x1000n, size: 0x3000 }]), [{ iova: 0x1000n, size: 0x3000n, firstPage: 1 }]);
  t.same(identity.pagesOf({ iova: 0x1800n, size: 0x1000n }), [[1, 2]]);
  t.equal(identity.locate({ iova: 0x2000n, size: P }), 2);
  const ram = new RamLayout(P, [
    { iova: 0x100000n, size: 0x10000n, firstPage: 0 },
    { iova: 0x400000n, size: 0x10000n, firstPage: 16 },
  ]);
  t.same(ram.pagesOf({ iova: 0x10f000n, size: 0x300000n + 0x2000n }), [
    [15, 1],
    [16, 16],
  ]);
  t.equal(ram.locate({ iova: 0x401000n, size: P }), 17);
  t.equal(ram.locate({ iova: 0x10f000n, size: 2n * P }), null, 'a span across two RAM ranges');
  t.throws(() => new RamLayout(P, [{ iova: 1n, size: P, firstPage: 0 }]));
  t.same(mappedRuns([{ iova: 0n, size: 4096 }, { iova: 4096n, size: 4096 }, { iova: 16384n, size: 4096 }], { iova: 0n, size: 32768n }), [
    { iova: 0n, size: 8192n },
    { iova: 16384n, size: 4096n },
  ]);
  t.same(chunkSpan({ iova: 0n, size: 5n * P }, P, 2), [
    { iova: 0n, size: 2n * P },
    { iova: 2n * P, size: 2n * P },
    { iova: 4n * P, size: P },
  ]);
});
