/**
 * The rules of type1 container dirty tracking (`VFIO_IOMMU_DIRTY_PAGES` and
 * `VFIO_IOMMU_UNMAP_DMA` with `GET_DIRTY_BITMAP`, reference §6.1), as pure
 * functions: the parameters from the MIGRATION capability, the checks the
 * kernel would fail with EINVAL, the plan that splits a range into queries
 * that never bisect a mapping and fit `max_dirty_bitmap_size`, and the
 * argument encoders. {@link VfioContainer} runs them before every ioctl, so a
 * broken rule is a {@link DirtyTrackingError} and the kernel is never asked.
 */
import { DirtyTrackingError } from '../errors.js';
import { kernelBitmapBytes } from './dirty-bitmap.js';
import { VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP } from './uapi/constants.js';
import type { IommuInfo } from './uapi/info.js';
import { encode } from './uapi/layout.js';
import { vfio_bitmap, vfio_iommu_type1_dirty_bitmap, vfio_iommu_type1_dirty_bitmap_get, vfio_iommu_type1_dma_unmap } from './uapi/structs.js';

/** What the MIGRATION capability of `VFIO_IOMMU_GET_INFO` allows. */
export interface Type1DirtyParams {
  /** The only page size a bitmap may use: the smallest IOMMU page size. */
  readonly pgsize: bigint;
  /** The largest bitmap one query may fill, in bytes (`max_dirty_bitmap_size`). */
  readonly maxBitmapBytes: bigint;
}

/** An IOVA range: `[iova, iova + size)`. */
export interface IovaSpan {
  readonly iova: bigint;
  readonly size: bigint;
}

/** A mapping as the rules see it (a container's `DmaMapping` fits). */
export interface MappedSpan {
  readonly iova: bigint;
  readonly size: number | bigint;
}

/** Bytes of the argument of a GET_BITMAP query and of an unmap with a bitmap: 8 + 40 and 24 + 24. */
export const DIRTY_GET_ARGSZ = vfio_iommu_type1_dirty_bitmap.size + vfio_iommu_type1_dirty_bitmap_get.size;
export const UNMAP_BITMAP_ARGSZ = vfio_iommu_type1_dma_unmap.size + vfio_bitmap.size;

/**
 * The dirty-tracking parameters of a container, or null when its IOMMU
 * reports no MIGRATION capability (the iommufd compat container, for one).
 * The kernel advertises only the smallest page size; a bitmap with several
 * bits is taken at its lowest, as the kernel's `__ffs` does.
 */
export function type1DirtyParams(info: IommuInfo): Type1DirtyParams | null {
  const m = info.migration;
  if (m === undefined || m.pgsizeBitmap === 0n) return null;
  return { pgsize: m.pgsizeBitmap & -m.pgsizeBitmap, maxBitmapBytes: m.maxDirtyBitmapSize };
}

const end = (m: MappedSpan): bigint => m.iova + BigInt(m.size);

/** The mappings that overlap `[iova, iova + size)`, in IOVA order. */
export function mappingsIn(mappings: Iterable<MappedSpan>, iova: bigint, size: bigint): MappedSpan[] {
  const out: MappedSpan[] = [];
  for (const m of mappings) if (m.iova < iova + size && end(m) > iova) out.push(m);
  return out.sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
}

/**
 * Checks that `[iova, iova + size)` is non-empty, aligned to `pg` and
 * bisects no mapping: what type1v2 requires of a query and of an unmap.
 * @throws DirtyTrackingError naming the rule
 */
export function checkType1Span(op: string, pg: bigint, mappings: Iterable<MappedSpan>, iova: bigint, size: bigint): void {
  if (size <= 0n || iova < 0n || iova % pg !== 0n || size % pg !== 0n || iova + size > 1n << 64n) {
    throw new DirtyTrackingError(op, 'alignment', `[0x${iova.toString(16)}, +0x${size.toString(16)}) must be non-empty and aligned to the ${pg}-byte page`);
  }
  for (const m of mappingsIn(mappings, iova, size)) {
    if (m.iova < iova || end(m) > iova + size) {
      throw new DirtyTrackingError(
        op,
        'bisects-mapping',
        `[0x${iova.toString(16)}, +0x${size.toString(16)}) bisects the mapping [0x${m.iova.toString(16)}, +0x${BigInt(m.size).toString(16)})`,
      );
    }
  }
}

/**
 * Checks a query (or an unmap with a bitmap) of `[iova, iova + size)`: the
 * span rules of {@link checkType1Span} at the container's page size, and a
 * bitmap within `max_dirty_bitmap_size`.
 * @throws DirtyTrackingError naming the rule
 */
export function checkType1Query(op: string, params: Type1DirtyParams, mappings: Iterable<MappedSpan>, iova: bigint, size: bigint): void {
  const pg = params.pgsize;
  checkType1Span(op, pg, mappings, iova, size);
  const bytes = BigInt(kernelBitmapBytes(Number(size / pg)));
  if (bytes > params.maxBitmapBytes) {
    throw new DirtyTrackingError(op, 'bitmap-size', `${size / pg} pages need a ${bytes}-byte bitmap, above max_dirty_bitmap_size ${params.maxBitmapBytes}`);
  }
}

/**
 * Splits `[iova, iova + size)` into queries the kernel accepts: each starts
 * at a mapping's start and ends at a mapping's end (gaps between mappings may
 * lie inside), and needs at most `maxBitmapBytes` of bitmap and, when given,
 * at most `maxPages` pages. Ranges holding no mapping are left out (there is
 * nothing to report there). The range itself must not bisect a mapping.
 * @throws DirtyTrackingError when the range bisects a mapping or one mapping alone is too large
 */
export function planType1Queries(params: Type1DirtyParams, mappings: Iterable<MappedSpan>, iova: bigint, size: bigint, maxPages?: number): IovaSpan[] {
  const op = 'planType1Queries';
  const pg = params.pgsize;
  const inRange = mappingsIn(mappings, iova, size);
  if (inRange.length === 0) return [];
  checkType1Span(op, pg, inRange, iova, size);
  const maxBits = (params.maxBitmapBytes / 8n) * 64n;
  const limit = maxPages === undefined || BigInt(maxPages) > maxBits ? maxBits : BigInt(maxPages);
  const out: IovaSpan[] = [];
  let start: bigint | null = null;
  let stop = 0n;
  for (const m of inRange) {
    if ((end(m) - m.iova) / pg > limit) {
      throw new DirtyTrackingError(op, 'bitmap-size', `the mapping at 0x${m.iova.toString(16)} has more pages than one query may hold (${limit})`);
    }
    if (start !== null && (end(m) - start) / pg > limit) {
      out.push({ iova: start, size: stop - start });
      start = null;
    }
    start ??= m.iova;
    stop = end(m);
  }
  if (start !== null) out.push({ iova: start, size: stop - start });
  return out;
}

/** The `VFIO_IOMMU_DIRTY_PAGES` argument for START or STOP (no data). */
export function encodeDirtyPagesFlag(flag: number): Uint8Array {
  return encode(vfio_iommu_type1_dirty_bitmap, { argsz: vfio_iommu_type1_dirty_bitmap.size, flags: flag });
}

/** The `VFIO_IOMMU_DIRTY_PAGES` GET_BITMAP argument: the kernel writes `bitmapBytes` at user address `data`. */
export function encodeDirtyBitmapGet(span: IovaSpan, pgsize: bigint, bitmapBytes: number, data: bigint): Uint8Array {
  const buf = encode(vfio_iommu_type1_dirty_bitmap, { argsz: DIRTY_GET_ARGSZ, flags: VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP }, new Uint8Array(DIRTY_GET_ARGSZ));
  encode(
    vfio_iommu_type1_dirty_bitmap_get,
    { iova: span.iova, size: span.size, 'bitmap.pgsize': pgsize, 'bitmap.size': BigInt(bitmapBytes), 'bitmap.data': data },
    buf,
    vfio_iommu_type1_dirty_bitmap.size,
  );
  return buf;
}

/** The `VFIO_IOMMU_UNMAP_DMA` argument with GET_DIRTY_BITMAP. */
export function encodeUnmapWithBitmap(span: IovaSpan, pgsize: bigint, bitmapBytes: number, data: bigint): Uint8Array {
  const buf = encode(
    vfio_iommu_type1_dma_unmap,
    { argsz: UNMAP_BITMAP_ARGSZ, flags: VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, iova: span.iova, size: span.size },
    new Uint8Array(UNMAP_BITMAP_ARGSZ),
  );
  encode(vfio_bitmap, { pgsize, size: BigInt(bitmapBytes), data }, buf, vfio_iommu_type1_dma_unmap.size);
  return buf;
}
