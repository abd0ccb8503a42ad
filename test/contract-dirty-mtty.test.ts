/**
 * Contract tests of type1 dirty tracking on an mtty container, on the
 * simulated kernel and on the real one (`npm run test:kernel`): tracking
 * starts, maps give empty bitmaps (mtty pins nothing), unmap-with-bitmap
 * works, and a bisecting query or a wrong page size fails: refused by the
 * library before the kernel is asked, and with EINVAL when sent raw.
 */
import t from 'tap';
import { DirtyTrackingError } from '../lib/errors.js';
import { VfioContainer, type MappingChange } from '../lib/vfio/container.js';
import { kernelBitmapBytes } from '../lib/vfio/dirty-bitmap.js';
import { encodeDirtyBitmapGet, encodeDirtyPagesFlag, encodeUnmapWithBitmap } from '../lib/vfio/type1-dirty.js';
import { VFIO_IOMMU_DIRTY_PAGES_FLAG_START, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP } from '../lib/vfio/uapi/constants.js';
import { VFIO_IOMMU_DIRTY_PAGES, VFIO_IOMMU_UNMAP_DMA } from '../lib/vfio/uapi/ioctls.js';
import { backend } from './helpers/backend.js';
import { expectErrno, thrown } from './helpers/expect.js';

const PAGE = 4096;
const A = 0x100000n;
const B = 0x200000n;
const PAGES = 16;

function setup(): { c: VfioContainer; bufs: Uint8Array[] } {
  const b = backend();
  const c = VfioContainer.open({ sys: b.sys });
  c.openDevice(b.mttys[0]);
  const bufs = [A, B].map((iova) => {
    const m = c.sys.allocPages(PAGES * PAGE);
    c.mapDma({ iova, buffer: m });
    return m.view();
  });
  return { c, bufs };
}

function rule(e: unknown): string {
  return e instanceof DirtyTrackingError ? e.rule : String(e);
}

t.test('mtty: tracking starts with the MIGRATION capability, and maps give empty bitmaps', async (t) => {
  const { c } = setup();
  using _ = c;
  const params = c.startDirtyTracking();
  t.equal(params.pgsize, 4096n, 'smallest page size 4 KiB');
  t.equal(params.maxBitmapBytes, 268435456n, 'max_dirty_bitmap_size 256 MiB');
  t.ok(c.dirtyTracking);
  t.equal(c.startDirtyTracking(), params, 'START again is a no-op');
  for (const iova of [A, B]) {
    const bm = c.getDirtyBitmap(iova, BigInt(PAGES * PAGE));
    t.equal(bm.byteLength, kernelBitmapBytes(PAGES));
    t.ok(bm.every((x) => x === 0), `mapping at 0x${iova.toString(16)}: no dirty page (mtty pins nothing)`);
  }
  const both = c.getDirtyBitmap(A, B + BigInt(PAGES * PAGE) - A);
  t.ok(both.every((x) => x === 0), 'one query may span several mappings and the gap between them');
  const garbage = new Uint8Array(64).fill(0xff);
  c.getDirtyBitmap(A, BigInt(PAGES * PAGE), garbage);
  t.ok(garbage.subarray(0, 8).every((x) => x === 0), 'the user buffer is zeroed before the kernel ORs into it');
  c.stopDirtyTracking();
  t.notOk(c.dirtyTracking);
});

t.test('mtty: a bisecting query or a wrong page size', async (t) => {
  const { c } = setup();
  using _ = c;
  t.equal(rule(thrown(() => c.getDirtyBitmap(A, BigInt(PAGE)))), 'not-tracking', 'refused before START');
  c.startDirtyTracking();
  t.equal(rule(thrown(() => c.getDirtyBitmap(A, BigInt(PAGE)))), 'bisects-mapping', 'library: a query ending inside a mapping');
  t.equal(rule(thrown(() => c.getDirtyBitmap(A + BigInt(PAGE), BigInt((PAGES - 1) * PAGE)))), 'bisects-mapping', 'library: a query starting inside a mapping');
  t.equal(rule(thrown(() => c.getDirtyBitmap(A + 1n, BigInt(PAGE)))), 'alignment', 'library: an unaligned query');
  const bitmap = new Uint8Array(kernelBitmapBytes(PAGES));
  const addr = c.sys.addressOf(bitmap);
  const raw = (iova: bigint, size: number, pgsize: bigint): number =>
    c.sys.ioctl(c.fd, VFIO_IOMMU_DIRTY_PAGES, encodeDirtyBitmapGet({ iova, size: BigInt(size) }, pgsize, bitmap.byteLength, addr));
  expectErrno(t, () => raw(A, PAGE, 4096n), 'EINVAL', 'kernel: a bisecting query');
  expectErrno(t, () => raw(A + BigInt(PAGE), (PAGES - 1) * PAGE, 4096n), 'EINVAL', 'kernel: a query starting inside a mapping');
  expectErrno(t, () => raw(A, PAGES * PAGE, 8192n), 'EINVAL', 'kernel: a wrong page size');
  t.equal(raw(A, PAGES * PAGE, 4096n), 0, 'kernel: the same query at the right page size');
  const unmap = encodeUnmapWithBitmap({ iova: A, size: BigInt(PAGES * PAGE) }, 8192n, bitmap.byteLength, addr);
  expectErrno(t, () => c.sys.ioctl(c.fd, VFIO_IOMMU_UNMAP_DMA, unmap), 'EINVAL', 'kernel: unmap with a bitmap at a wrong page size');
  c.stopDirtyTracking();
  expectErrno(t, () => raw(A, PAGES * PAGE, 4096n), 'EINVAL', 'kernel: GET_BITMAP with tracking off');
});

t.test('mtty: START and STOP together are refused by the kernel', async (t) => {
  const { c } = setup();
  using _ = c;
  expectErrno(t, () => c.sys.ioctl(c.fd, VFIO_IOMMU_DIRTY_PAGES, encodeDirtyPagesFlag(VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)), 'EINVAL', 'two flags');
  expectErrno(t, () => c.sys.ioctl(c.fd, VFIO_IOMMU_DIRTY_PAGES, encodeDirtyPagesFlag(0)), 'EINVAL', 'no flag');
});

t.test('mtty: unmap with the dirty bitmap', async (t) => {
  const { c } = setup();
  using _ = c;
  t.equal(rule(thrown(() => c.unmapDmaWithDirtyBitmap(A, BigInt(PAGES * PAGE)))), 'not-tracking', 'refused before START');
  c.startDirtyTracking();
  t.equal(rule(thrown(() => c.unmapDmaWithDirtyBitmap(A, BigInt(PAGE)))), 'bisects-mapping', 'refused when bisecting');
  const { unmapped, dirty } = c.unmapDmaWithDirtyBitmap(A, BigInt(PAGES * PAGE));
  t.equal(unmapped, BigInt(PAGES * PAGE), 'the whole mapping went');
  t.equal(dirty.pgsize, 4096n);
  t.ok(dirty.bitmap.every((x) => x === 0), 'nothing dirty');
  t.notOk(c.mappings.has(A));
  const seen: MappingChange[] = [];
  const off = c.onMappingChange((e) => seen.push(e));
  c.unmapDma(B, PAGES * PAGE);
  off();
  const ev = seen[0];
  t.equal(ev?.kind, 'unmap');
  t.ok(ev?.kind === 'unmap' && ev.dirty !== null, 'a plain unmap while tracking also fetched the bitmap for the listener');
  c.stopDirtyTracking();
});
