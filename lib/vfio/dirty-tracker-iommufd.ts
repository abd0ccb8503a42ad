/**
 * Dirty tracking by the IOMMU through iommufd (reference §6.3): dirty
 * tracking enabled on every HWPT (which clears the IOPTE dirty bits first),
 * the HWPT bitmaps ORed at each sync, over the mapped parts of each RAM range
 * only (a range with a hole is refused, and 6.12 would silently stop at it).
 * A failed read marks its range dirty.
 */
import { VfioSystemError } from '../errors.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import { BaseDirtyTracker, orReports } from './dirty-tracker-base.js';
import type { IommufdDirtySource } from './dirty-tracker.js';
import { chunkSpan, mappedRuns, type RamLayout, type RamRange } from './ram-layout.js';

/** The iommufd tracker: dirty tracking on every HWPT, their bitmaps ORed together. */
export class IommufdDirtyTracker extends BaseDirtyTracker {
  readonly kind = 'iommufd';

  constructor(
    private readonly fd: IommufdDirtySource,
    layout: RamLayout,
    reason: string,
  ) {
    super(fd.ioas, layout, reason);
  }

  protected arm(): void {
    for (const h of this.fd.hwpts) h.setDirtyTracking(true);
  }

  protected disarm(): void {
    if (this.fd.ioas.iommufd.closed) return;
    // A HWPT the VMM destroyed meanwhile has no tracking left to stop.
    for (const h of this.fd.hwpts) if (!h.destroyed) h.setDirtyTracking(false);
  }

  protected collect(range: RamRange, bitmap: DirtyBitmap): void {
    for (const run of mappedRuns(this.fd.ioas.mappings.values(), range)) {
      for (const chunk of chunkSpan(run, this.pageSize, this.chunkPages(bitmap))) {
        const npages = Number(chunk.size / this.pageSize);
        try {
          let bits: Uint8Array | null = null;
          for (const h of this.fd.hwpts) {
            const got = h.getDirtyBitmap({ iova: chunk.iova, length: chunk.size, pageSize: this.pageSize, out: bits === null ? this.buffer(bitmap, npages) : undefined });
            bits = orReports(bits, got);
          }
          if (bits !== null) this.merge(bitmap, chunk, bits);
        } catch (e) {
          if (!(e instanceof VfioSystemError)) throw e;
          this.lastError = e;
          this.markPages(bitmap, chunk);
        }
      }
    }
  }
}
