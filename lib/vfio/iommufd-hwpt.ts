/**
 * An iommufd hardware page table (HWPT) over an IOAS, and its dirty tracking
 * (reference §6.3): `IOMMU_HWPT_SET_DIRTY_TRACKING` (enabling clears every
 * dirty bit first, for a clean snapshot) and `IOMMU_HWPT_GET_DIRTY_BITMAP`
 * (bit i = page `iova + i * page_size`; reading clears the IOPTE dirty bits
 * unless NO_CLEAR). The kernel's checks (a non-empty range aligned to the
 * IOAS alignment and the page size, no unmapped gap inside) run here first.
 */
import { DirtyTrackingError, VfioClosedError } from '../errors.js';
import { kernelBitmapBytes } from './dirty-bitmap.js';
import { ioctl } from './ioctl.js';
import type { Iommufd } from './iommufd.js';
import type { IommufdIoas } from './iommufd-ioas.js';
import {
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
} from './uapi/iommufd.js';
import { encode } from './uapi/layout.js';

/** A power of two a u64 field can carry. */
const isPow2 = (v: bigint): boolean => v > 0n && v < 1n << 64n && (v & (v - 1n)) === 0n;

/** Options of {@link IommufdHwpt.getDirtyBitmap}. */
export interface HwptDirtyQuery {
  readonly iova: bigint;
  readonly length: bigint;
  /** The bitmap's page size (a power of two; default 4096). */
  readonly pageSize?: bigint;
  /** Leave the IOPTE dirty bits set (`NO_CLEAR`), e.g. to read before an unmap. */
  readonly noClear?: boolean;
  /** Where the kernel writes the bitmap (zeroed first; default a new buffer). */
  readonly out?: Uint8Array;
}

/** A paging HWPT object of an {@link Iommufd}. Holds no fd of its own. */
export class IommufdHwpt {
  #tracking = false;
  #destroyed = false;

  /** @internal Use {@link Iommufd.allocHwpt}. */
  constructor(
    readonly iommufd: Iommufd,
    /** The HWPT object id (attach devices to it with `VFIO_DEVICE_ATTACH_IOMMUFD_PT`). */
    readonly id: number,
    /** The IOAS the HWPT maps. */
    readonly ioas: IommufdIoas,
    /** Allocated with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`. */
    readonly dirtyCapable: boolean,
  ) {}

  /** True while dirty tracking is enabled (by this object). */
  get dirtyTracking(): boolean {
    return this.#tracking;
  }

  /** True once {@link Iommufd.destroy} destroyed the HWPT. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** `IOMMU_HWPT_SET_DIRTY_TRACKING`: enabling clears every dirty bit first. */
  setDirtyTracking(enable: boolean): void {
    this.#check();
    const arg = encode(iommu_hwpt_set_dirty_tracking, {
      size: iommu_hwpt_set_dirty_tracking.size,
      flags: enable ? IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
      hwpt_id: this.id,
    });
    ioctl(this.iommufd, IOMMU_HWPT_SET_DIRTY_TRACKING, arg);
    this.#tracking = enable;
  }

  /**
   * `IOMMU_HWPT_GET_DIRTY_BITMAP` of `[iova, iova + length)`.
   * @throws DirtyTrackingError for a bad page size, alignment, a gap in the mappings or a short buffer
   */
  getDirtyBitmap(q: HwptDirtyQuery): Uint8Array {
    const op = 'IommufdHwpt.getDirtyBitmap';
    this.#check();
    const pageSize = q.pageSize ?? 4096n;
    if (!isPow2(pageSize)) throw new DirtyTrackingError(op, 'page-size', `page size ${pageSize} is not a power of two below 2^64`);
    const { alignment } = this.ioas.iovaRanges();
    const align = alignment > pageSize ? alignment : pageSize;
    if (q.length <= 0n || q.iova < 0n || q.iova % align !== 0n || q.length % align !== 0n || q.iova + q.length > 1n << 64n) {
      throw new DirtyTrackingError(op, 'alignment', `[0x${q.iova.toString(16)}, +0x${q.length.toString(16)}) must be non-empty and aligned to ${align}`);
    }
    checkNoGap(op, this.ioas, q.iova, q.length);
    const bytes = kernelBitmapBytes(Number(q.length / pageSize));
    if (q.out !== undefined && q.out.byteLength < bytes) throw new DirtyTrackingError(op, 'bitmap-size', `${bytes} bytes of bitmap needed, got ${q.out.byteLength}`);
    const bitmap = q.out === undefined ? new Uint8Array(bytes) : q.out.subarray(0, bytes).fill(0);
    const arg = encode(iommu_hwpt_get_dirty_bitmap, {
      size: iommu_hwpt_get_dirty_bitmap.size,
      hwpt_id: this.id,
      flags: q.noClear === true ? IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0,
      iova: q.iova,
      length: q.length,
      page_size: pageSize,
      data: this.iommufd.sys.addressOf(bitmap),
    });
    ioctl(this.iommufd, IOMMU_HWPT_GET_DIRTY_BITMAP, arg);
    return bitmap;
  }

  /** @internal The kernel destroyed the HWPT (its tracking went with it). */
  markDestroyed(): void {
    this.#destroyed = true;
    this.#tracking = false;
  }

  #check(): void {
    this.iommufd.check();
    if (this.#destroyed) throw new VfioClosedError(`HWPT ${this.id}`);
  }
}

/** The kernel walks only mapped areas and fails a range with a hole (EINVAL): refuse it first. */
function checkNoGap(op: string, ioas: IommufdIoas, iova: bigint, length: bigint): void {
  const spans = [...ioas.mappings.values()]
    .filter((m) => m.iova < iova + length && m.iova + BigInt(m.size) > iova)
    .sort((a, b) => (a.iova < b.iova ? -1 : 1));
  let at = iova;
  for (const m of spans) {
    if (m.iova > at) break;
    const end = m.iova + BigInt(m.size);
    if (end > at) at = end;
  }
  if (at < iova + length) throw new DirtyTrackingError(op, 'unmapped-range', `nothing is mapped at 0x${at.toString(16)}, inside the range`);
}
