/**
 * Dirty tracking by the type1 container (`VFIO_IOMMU_DIRTY_PAGES`). What it
 * reports is the kernel's scope rule (reference §6.1): pages pinned by a
 * vendor driver and pages written through `vfio_dma_rw`, or every mapped page
 * as soon as one IOMMU-backed group never pinned. Unmaps while tracking carry
 * the kernel's bitmap of the range (the container asks for it), so nothing
 * written before an unmap is lost.
 */
import { DirtyTrackingError } from '../errors.js';
import type { VfioContainer } from './container.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import { BaseDirtyTracker } from './dirty-tracker-base.js';
import type { RamLayout, RamRange } from './ram-layout.js';
import { planType1Queries, type IovaSpan, type Type1DirtyParams } from './type1-dirty.js';

/** The type1 container tracker: `VFIO_IOMMU_DIRTY_PAGES` GET_BITMAP per RAM range, split as the kernel requires. */
export class Type1DirtyTracker extends BaseDirtyTracker {
  readonly kind = 'type1';

  constructor(
    private readonly container: VfioContainer,
    layout: RamLayout,
    reason: string,
  ) {
    super(container, layout, reason);
  }

  protected arm(): void {
    // After a reset (the last group left) there is no IOMMU to track with until a group joins again.
    if (this.container.iommuType !== null) this.container.startDirtyTracking();
  }

  protected disarm(): void {
    if (!this.container.closed && this.container.iommuType !== null) this.container.stopDirtyTracking();
  }

  protected collect(range: RamRange, bitmap: DirtyBitmap): void {
    if (!this.container.dirtyTracking) {
      if (this.container.iommuType !== null) this.rearmAtSync();
      return;
    }
    const params = this.container.startDirtyTracking();
    for (const q of this.#plan(params, range, bitmap)) {
      const npages = Number(q.size / params.pgsize);
      const bits = this.container.getDirtyBitmap(q.iova, q.size, this.buffer(bitmap, npages));
      this.merge(bitmap, q, bits);
    }
  }

  /** Queries that fit the kernel buffer when the mappings allow it, else ones that fit the kernel's limit. */
  #plan(params: Type1DirtyParams, range: RamRange, bitmap: DirtyBitmap): IovaSpan[] {
    const mappings = this.container.mappings.values();
    if (bitmap.kernelBufferPages > 0) {
      try {
        return planType1Queries(params, mappings, range.iova, range.size, bitmap.kernelBufferPages);
      } catch (e) {
        if (!(e instanceof DirtyTrackingError && e.rule === 'bitmap-size')) throw e;
      }
    }
    return planType1Queries(params, this.container.mappings.values(), range.iova, range.size);
  }
}
