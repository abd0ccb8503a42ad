/**
 * One interface over every way of learning which guest pages a device wrote,
 * and the choice among them, following QEMU's ladder (reference §6.4):
 * device DMA logging when every device offers it, else IOMMU dirty tracking
 * (iommufd HWPTs allocated with DIRTY_TRACKING), else type1 container
 * tracking (whose answer may be "every mapped page", see §6.1), else the
 * all-dirty fallback. A tracker stands alone: it works without a migration,
 * e.g. to draw a guest's memory-write pattern.
 */
import type { DirtyBitmap } from './dirty-bitmap.js';
import type { VfioContainer } from './container.js';
import type { VfioDevice } from './device.js';
import { AllDirtyTracker } from './dirty-tracker-all.js';
import { DeviceLoggingTracker } from './dirty-tracker-logging.js';
import { IommufdDirtyTracker } from './dirty-tracker-iommufd.js';
import { Type1DirtyTracker } from './dirty-tracker-type1.js';
import { DmaLogging } from './dma-logging.js';
import type { IommufdHwpt } from './iommufd-hwpt.js';
import type { IommufdIoas } from './iommufd-ioas.js';
import { RamLayout, type RamRange } from './ram-layout.js';

/** The trackers, in the ladder's order. */
export type DirtyTrackerKind = 'device-logging' | 'iommufd' | 'type1' | 'all-dirty';

/**
 * Dirty-page tracking for a set of devices, synced into a VMM bitmap.
 * `start` arms it (idempotent), `sync` ORs what was written since the last
 * sync into the bitmap, `stop` disarms it. Mapping changes while tracking
 * are followed: the tracker re-arms where its method needs it, and marks
 * dirty whatever it could not watch in between.
 */
export interface DirtyTracker extends Disposable {
  readonly kind: DirtyTrackerKind;
  /** Why this tracker was picked (and why the ones above it were not). */
  readonly reason: string;
  /** The bitmap's page size. */
  readonly pageSize: bigint;
  readonly tracking: boolean;
  /** The last error a sync survived by marking pages dirty (device report or HWPT read failures), or null. */
  readonly lastError: unknown;
  start(): void;
  stop(): void;
  /** ORs the pages dirtied since the last sync (or since start) into `bitmap`. */
  sync(bitmap: DirtyBitmap): void;
  /** Stops and forgets; idempotent. */
  close(): void;
}

/** The iommufd side of a VMM: its IOAS and the HWPTs its devices are attached to. */
export interface IommufdDirtySource {
  readonly ioas: IommufdIoas;
  readonly hwpts: readonly IommufdHwpt[];
}

/** Options of {@link createDirtyTracker}. */
export interface DirtyTrackerOptions {
  /** The type1 container the devices' DMA is mapped in. */
  readonly container?: VfioContainer;
  /** The devices whose writes matter (device logging needs every one of them to offer it). */
  readonly devices?: readonly VfioDevice[];
  /** The iommufd IOAS and HWPTs, when the devices use iommufd. */
  readonly iommufd?: IommufdDirtySource;
  /** Where guest RAM is (default: the identity over the mappings, bitmap page = IOVA / page size). */
  readonly ram?: readonly RamRange[];
  /** The bitmap's page size (default: the host page size). */
  readonly pageSize?: bigint;
  /** Trackers not to use (for tests, or QEMU's `x-device-dirty-page-tracking=off`). */
  readonly disable?: readonly DirtyTrackerKind[];
}

/**
 * Picks a tracker down the ladder and says why. Nothing is started: call
 * `start()` (a migration's setup, or at once to watch a running guest).
 */
export function createDirtyTracker(options: DirtyTrackerOptions): DirtyTracker {
  const sys = options.container?.sys ?? options.iommufd?.ioas.iommufd.sys ?? options.devices?.[0]?.sys;
  const pageSize = options.pageSize ?? BigInt(sys?.pageSize ?? 4096);
  const layout = new RamLayout(pageSize, options.ram);
  const source = options.iommufd?.ioas ?? options.container ?? null;
  const off = new Set(options.disable ?? []);
  const why: string[] = [];

  const devices = options.devices ?? [];
  if (off.has('device-logging')) why.push('device logging is disabled');
  else if (devices.length === 0) why.push('no devices to log');
  else {
    const lacking = devices.filter((d) => !DmaLogging.probe(d)).map((d) => d.name);
    if (lacking.length === 0) {
      const reason = `every device (${devices.map((d) => d.name).join(', ')}) offers DMA logging`;
      return new DeviceLoggingTracker(devices, source, layout, reason);
    }
    why.push(`no DMA logging on ${lacking.join(', ')}`);
  }

  const fd = options.iommufd;
  if (off.has('iommufd')) why.push('iommufd tracking is disabled');
  else if (fd === undefined || fd.hwpts.length === 0) why.push('no iommufd HWPT');
  else if (fd.hwpts.some((h) => !h.dirtyCapable)) why.push('an iommufd HWPT was allocated without DIRTY_TRACKING');
  else return new IommufdDirtyTracker(fd, layout, [...why, `the IOMMU tracks dirty pages for HWPT ${fd.hwpts.map((h) => h.id).join(', ')}`].join('; '));

  const c = options.container;
  if (off.has('type1')) why.push('type1 tracking is disabled');
  else if (c === undefined) why.push('no type1 container');
  else {
    const params = c.dirtyParams();
    // QEMU: the MIGRATION capability must exist and offer the host page size.
    if (params === null) why.push('the container has no MIGRATION capability');
    else if (params.pgsize !== pageSize) why.push(`type1 tracks at ${params.pgsize}-byte pages, not ${pageSize}`);
    else return new Type1DirtyTracker(c, layout, [...why, `type1 VFIO_IOMMU_DIRTY_PAGES at ${params.pgsize}-byte pages`].join('; '));
  }

  return new AllDirtyTracker(source, layout, [...why, 'every RAM page is reported dirty at each sync'].join('; '), options.ram === undefined && source === null);
}
