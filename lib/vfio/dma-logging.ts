/**
 * Device DMA logging (`VFIO_DEVICE_FEATURE` DMA_LOGGING_START / STOP /
 * REPORT, features 6, 7 and 8; reference §6.2): the device itself records
 * the pages it writes, independently of the migration state machine. Every
 * rule the vfio core checks is checked here first, so a bad request is a
 * {@link DirtyTrackingError} and never reaches the kernel.
 */
import { DirtyTrackingError, VfioClosedError } from '../errors.js';
import type { VfioDevice } from './device.js';
import { kernelBitmapBytes } from './dirty-bitmap.js';
import { ioctl } from './ioctl.js';
import type { IovaSpan } from './type1-dirty.js';
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_SET,
} from './uapi/constants.js';
import { featureBuffer, featurePayload } from './uapi/feature.js';
import { VFIO_DEVICE_FEATURE } from './uapi/ioctls.js';
import { decode, encode } from './uapi/layout.js';
import {
  vfio_device_feature_dma_logging_control,
  vfio_device_feature_dma_logging_range,
  vfio_device_feature_dma_logging_report,
} from './uapi/structs.js';

const U64_LIMIT = 1n << 64n;
const isPow2 = (v: bigint): boolean => v > 0n && (v & (v - 1n)) === 0n;

/** The most ranges START accepts: `PAGE_SIZE / sizeof(struct vfio_device_feature_dma_logging_range)`. */
export function maxLoggingRanges(hostPageSize: number): number {
  return Math.floor(hostPageSize / vfio_device_feature_dma_logging_range.size);
}

/**
 * Checks START's ranges as the vfio core would: 1 to `max` of them, each
 * non-empty, aligned to `pageSize`, not wrapping, and none overlapping another.
 * @throws DirtyTrackingError naming the rule
 */
export function checkLoggingRanges(ranges: readonly IovaSpan[], pageSize: bigint, max: number): void {
  const op = 'DmaLogging.start';
  if (ranges.length === 0 || ranges.length > max) {
    throw new DirtyTrackingError(op, 'range-count', `${ranges.length} ranges given, the kernel takes 1 to ${max}`);
  }
  if (!isPow2(pageSize)) throw new DirtyTrackingError(op, 'page-size', `page size ${pageSize} is not a power of two`);
  const sorted = [...ranges].sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
  let prevEnd = -1n;
  for (const r of sorted) {
    if (r.size <= 0n || r.iova < 0n || r.iova % pageSize !== 0n || r.size % pageSize !== 0n || r.iova + r.size > U64_LIMIT) {
      throw new DirtyTrackingError(op, 'alignment', `range [0x${r.iova.toString(16)}, +0x${r.size.toString(16)}) must be non-empty and aligned to ${pageSize}`);
    }
    if (r.iova < prevEnd) throw new DirtyTrackingError(op, 'range-overlap', `range at 0x${r.iova.toString(16)} overlaps the one before it`);
    prevEnd = r.iova + r.size;
  }
}

/** DMA logging on one device. Holds no fd of its own: the device's. */
export class DmaLogging {
  /** The ranges being logged, or null when logging is off. */
  #ranges: readonly IovaSpan[] | null = null;
  /** The page size the device chose at START. */
  #pageSize = 0n;

  constructor(
    /** The device whose DMA writes are logged. */
    readonly device: VfioDevice,
  ) {}

  /** True when the device supports DMA logging (`PROBE | SET` of DMA_LOGGING_START). */
  static probe(device: VfioDevice): boolean {
    return device.featureProbe(VFIO_DEVICE_FEATURE_DMA_LOGGING_START, VFIO_DEVICE_FEATURE_SET);
  }

  /** The ranges being logged, or null when logging is off. */
  get ranges(): readonly IovaSpan[] | null {
    return this.#ranges;
  }

  /** The page size the device logs at (it may have changed the one asked for); 0 while off. */
  get pageSize(): bigint {
    return this.#pageSize;
  }

  /**
   * DMA_LOGGING_START over `ranges` at `pageSize`. The driver may pick
   * another page size; it is accepted and returned (reports may still use
   * any page size: the driver replicates bits).
   * @throws DirtyTrackingError when logging is already on or a range rule is broken
   */
  start(ranges: readonly IovaSpan[], pageSize: bigint): bigint {
    if (this.#ranges !== null) throw new DirtyTrackingError('DmaLogging.start', 'unsupported', `${this.device.name}: logging is already started; stop it first`);
    checkLoggingRanges(ranges, pageSize, maxLoggingRanges(this.device.sys.pageSize));
    const array = new Uint8Array(ranges.length * vfio_device_feature_dma_logging_range.size);
    ranges.forEach((r, i) => encode(vfio_device_feature_dma_logging_range, { iova: r.iova, length: r.size }, array, i * vfio_device_feature_dma_logging_range.size));
    const control = encode(vfio_device_feature_dma_logging_control, {
      page_size: pageSize,
      num_ranges: ranges.length,
      ranges: this.device.sys.addressOf(array),
    });
    const out = decode(vfio_device_feature_dma_logging_control, this.device.featureSet(VFIO_DEVICE_FEATURE_DMA_LOGGING_START, control));
    // Untrusted: a driver could write anything back. Keep ours if it is nonsense.
    const chosen = isPow2(out.page_size) ? out.page_size : pageSize;
    this.#ranges = ranges.map((r) => ({ iova: r.iova, size: r.size }));
    this.#pageSize = chosen;
    return chosen;
  }

  /** DMA_LOGGING_STOP. Idempotent; the device forgets what it logged. */
  stop(): void {
    if (this.#ranges === null) return;
    this.#ranges = null;
    this.#pageSize = 0n;
    this.device.featureSet(VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP);
  }

  /**
   * DMA_LOGGING_REPORT of `[iova, iova + length)` at `pageSize` (at least
   * 4096, a power of two): bit i of the bitmap is page `iova + i * pageSize`.
   * The device clears what it reports. `out` (default a new buffer) is zeroed
   * first, as the kernel only sets bits.
   * @throws DirtyTrackingError for a bad page size, alignment or a short buffer
   */
  report(iova: bigint, length: bigint, pageSize: bigint, out?: Uint8Array): Uint8Array {
    const op = 'DmaLogging.report';
    if (this.#ranges === null) throw new DirtyTrackingError(op, 'not-tracking', `${this.device.name}: logging is not started`);
    if (pageSize < 4096n || !isPow2(pageSize)) throw new DirtyTrackingError(op, 'page-size', `page size ${pageSize} must be a power of two of at least 4096`);
    if (length <= 0n || iova < 0n || iova % pageSize !== 0n || length % pageSize !== 0n || iova + length > U64_LIMIT) {
      throw new DirtyTrackingError(op, 'alignment', `[0x${iova.toString(16)}, +0x${length.toString(16)}) must be non-empty and aligned to ${pageSize}`);
    }
    const bytes = kernelBitmapBytes(Number(length / pageSize));
    if (out !== undefined && out.byteLength < bytes) throw new DirtyTrackingError(op, 'bitmap-size', `${bytes} bytes of bitmap needed, got ${out.byteLength}`);
    const bitmap = out === undefined ? new Uint8Array(bytes) : out.subarray(0, bytes).fill(0);
    const buf = featureBuffer(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, vfio_device_feature_dma_logging_report.size);
    encode(vfio_device_feature_dma_logging_report, { iova, length, page_size: pageSize, bitmap: this.device.sys.addressOf(bitmap) }, featurePayload(buf));
    if (this.device.closed) throw new VfioClosedError(`device ${this.device.name}`);
    ioctl(this.device, VFIO_DEVICE_FEATURE, buf);
    return bitmap;
  }
}
