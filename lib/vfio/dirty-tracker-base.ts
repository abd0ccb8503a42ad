/**
 * What every dirty tracker shares: the start/stop/sync life cycle, following
 * mapping changes while tracking (re-arming when the method needs it), the
 * pages it must mark dirty because it could not watch them, and merging
 * kernel bitmaps into the VMM bitmap through the RAM layout.
 */
import { DirtyTrackingError, VfioClosedError } from '../errors.js';
import type { DmaMapping, IovaDirtyBitmap, MappingChange, MappingListener } from './container.js';
import { kernelBitmapBytes, type DirtyBitmap } from './dirty-bitmap.js';
import type { DirtyTracker, DirtyTrackerKind } from './dirty-tracker.js';
import type { RamLayout, RamRange } from './ram-layout.js';
import type { IovaSpan } from './type1-dirty.js';

/** ORs `got` into `into` (a device or HWPT report into the ones before it); the first report is taken as it is. */
export function orReports(into: Uint8Array | null, got: Uint8Array): Uint8Array {
  if (into === null) return got;
  for (let i = 0; i < got.byteLength; i++) into[i] = (into[i] ?? 0) | (got[i] ?? 0);
  return into;
}

/** Whatever holds the DMA mappings: a type1 container or an iommufd IOAS. */
export interface MappingSource {
  readonly mappings: ReadonlyMap<bigint, DmaMapping>;
  onMappingChange(listener: MappingListener): () => void;
}

/** The shared part of every {@link DirtyTracker}; subclasses arm, disarm and collect. */
export abstract class BaseDirtyTracker implements DirtyTracker {
  abstract readonly kind: DirtyTrackerKind;
  lastError: unknown = null;
  #tracking = false;
  #closed = false;
  /** Re-arm before the next collection. */
  #stale = false;
  /** Mark every RAM page dirty at the next sync (after a re-arm or a reset). */
  #allDirty = false;
  readonly #spans: IovaSpan[] = [];
  readonly #bitmaps: IovaDirtyBitmap[] = [];
  #unsubscribe: (() => void) | null = null;
  #scratch = new Uint8Array(0);

  constructor(
    protected readonly source: MappingSource | null,
    protected readonly layout: RamLayout,
    readonly reason: string,
  ) {}

  get pageSize(): bigint {
    return this.layout.pageSize;
  }

  get tracking(): boolean {
    return this.#tracking;
  }

  start(): void {
    if (this.#closed) throw new VfioClosedError(`${this.kind} dirty tracker`);
    if (this.#tracking) return;
    this.arm();
    this.#tracking = true;
    this.#unsubscribe = this.source?.onMappingChange((c) => this.onChange(c)) ?? null;
  }

  stop(): void {
    if (!this.#tracking) return;
    this.#tracking = false;
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#spans.length = 0;
    this.#bitmaps.length = 0;
    this.#stale = false;
    this.#allDirty = false;
    this.disarm();
  }

  sync(bitmap: DirtyBitmap): void {
    if (!this.#tracking) throw new DirtyTrackingError(`${this.kind} tracker sync`, 'not-tracking', 'start the tracker first');
    const ranges = this.layout.ranges(this.source?.mappings.values() ?? []);
    for (const r of ranges) this.collect(r, bitmap);
    if (this.#stale) {
      this.#stale = false;
      // Writes between the last read and the new arming cannot be known: everything counts.
      this.disarm();
      this.arm();
      this.#allDirty = true;
    }
    if (this.#allDirty) {
      this.#allDirty = false;
      for (const r of ranges) this.markPages(bitmap, r);
    }
    for (const s of this.#spans.splice(0)) this.markPages(bitmap, s);
    for (const b of this.#bitmaps.splice(0)) this.merge(bitmap, b, b.bitmap);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.stop();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Starts the kernel- or device-side tracking. */
  protected abstract arm(): void;
  /** Stops it. */
  protected abstract disarm(): void;
  /** ORs what was written in `range` since the last collection into `bitmap`. */
  protected abstract collect(range: RamRange, bitmap: DirtyBitmap): void;

  /**
   * Follows a mapping change. By default: an unmapped range is dirty (its
   * dirty state cannot be read any more) unless the change carries the
   * kernel's bitmap; a reset re-arms and makes everything dirty.
   */
  protected onChange(change: MappingChange): void {
    if (change.kind === 'unmap') {
      if (change.dirty === null) this.#spans.push({ iova: change.iova, size: change.size });
      else this.#bitmaps.push({ ...change.dirty, bitmap: change.dirty.bitmap.slice() });
    } else if (change.kind === 'reset') this.rearmAtSync();
  }

  /** Re-arms at the next sync, and marks every RAM page dirty then. */
  protected rearmAtSync(): void {
    this.#stale = true;
  }

  /** Marks the bitmap pages of `span` dirty (those inside the bitmap). */
  protected markPages(bitmap: DirtyBitmap, span: IovaSpan): void {
    for (const [first, n] of this.layout.pagesOf(span)) {
      const end = Math.min(first + n, bitmap.npages);
      if (end > first) bitmap.setRange(first, end - first);
    }
  }

  /** Merges a kernel bitmap of `span` (bit 0 = `span.iova`) into the VMM bitmap, or marks the span dirty if it does not fit one RAM range. */
  protected merge(bitmap: DirtyBitmap, span: IovaSpan, bits: Uint8Array): void {
    const first = this.layout.locate(span);
    if (first === null) {
      this.markPages(bitmap, span);
      return;
    }
    bitmap.mergeKernelBitmap(bits, first, Number(span.size / this.pageSize));
  }

  /** A zeroed buffer for `npages` pages: the bitmap's kernel buffer when it is large enough (no copy on merge), else a scratch one. */
  protected buffer(bitmap: DirtyBitmap, npages: number): Uint8Array {
    if (npages <= bitmap.kernelBufferPages) return bitmap.kernelBuffer(npages);
    const bytes = kernelBitmapBytes(npages);
    if (this.#scratch.byteLength < bytes) this.#scratch = new Uint8Array(bytes);
    return this.#scratch.subarray(0, bytes).fill(0);
  }

  /** Pages per read: what the kernel buffer holds, or a 64 MiB bitmap's worth when there is none. */
  protected chunkPages(bitmap: DirtyBitmap): number {
    return bitmap.kernelBufferPages > 0 ? bitmap.kernelBufferPages : 1 << 29;
  }
}
