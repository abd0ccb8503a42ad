/**
 * The last rung of the ladder: nothing can say what the devices wrote, so
 * every RAM page is dirty at every sync (what QEMU does with
 * `physical_memory_set_dirty_range` when no tracking is available).
 */
import type { DirtyBitmap } from './dirty-bitmap.js';
import { BaseDirtyTracker, type MappingSource } from './dirty-tracker-base.js';
import type { RamLayout, RamRange } from './ram-layout.js';

/** The all-dirty fallback: marks every RAM page at each sync. */
export class AllDirtyTracker extends BaseDirtyTracker {
  readonly kind = 'all-dirty';

  constructor(
    source: MappingSource | null,
    layout: RamLayout,
    reason: string,
    /** No layout and no mappings to derive one from: the whole bitmap is RAM. */
    private readonly wholeBitmap: boolean,
  ) {
    super(source, layout, reason);
  }

  override sync(bitmap: DirtyBitmap): void {
    super.sync(bitmap);
    if (this.wholeBitmap) bitmap.markAll();
  }

  protected arm(): void {}
  protected disarm(): void {}

  protected collect(range: RamRange, bitmap: DirtyBitmap): void {
    this.markPages(bitmap, range);
  }
}
