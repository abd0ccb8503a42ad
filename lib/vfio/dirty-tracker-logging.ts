/**
 * Dirty tracking by the devices themselves (DMA logging, reference §6.2):
 * START on every device over QEMU's reduction of the mappings (at most three
 * ranges), a REPORT per device ORed together at each sync, STOP at the end.
 * A mapping outside the logged ranges makes the tracker re-arm at the next
 * sync; a failed report marks its whole range dirty.
 */
import { VfioSystemError } from '../errors.js';
import type { MappingChange } from './container.js';
import type { VfioDevice } from './device.js';
import type { DirtyBitmap } from './dirty-bitmap.js';
import { BaseDirtyTracker, orReports, type MappingSource } from './dirty-tracker-base.js';
import { DmaLogging } from './dma-logging.js';
import { reduceLoggingRanges } from './dma-logging-ranges.js';
import { chunkSpan, type RamLayout, type RamRange } from './ram-layout.js';
import type { IovaSpan } from './type1-dirty.js';

/** The device DMA logging tracker: one {@link DmaLogging} per device, reports ORed together. */
export class DeviceLoggingTracker extends BaseDirtyTracker {
  readonly kind = 'device-logging';
  readonly #logs: DmaLogging[];
  #ranges: IovaSpan[] = [];

  constructor(devices: readonly VfioDevice[], source: MappingSource | null, layout: RamLayout, reason: string) {
    super(source, layout, reason);
    this.#logs = devices.map((d) => new DmaLogging(d));
  }

  /** The page size each device chose at START (it may differ from the one asked for), by device name. */
  get devicePageSizes(): ReadonlyMap<string, bigint> {
    return new Map(this.#logs.map((l) => [l.device.name, l.pageSize]));
  }

  /** The ranges being logged. */
  get loggedRanges(): readonly IovaSpan[] {
    return this.#ranges;
  }

  protected arm(): void {
    const spans = this.layout.ranges(this.source?.mappings.values() ?? []);
    this.#ranges = reduceLoggingRanges(spans);
    // START needs at least one range: with nothing mapped, wait for the first mapping.
    if (this.#ranges.length === 0) return;
    const started: DmaLogging[] = [];
    try {
      for (const l of this.#logs) {
        l.start(this.#ranges, this.pageSize);
        started.push(l);
      }
    } catch (e) {
      for (const l of started) l.stop();
      this.#ranges = [];
      throw e;
    }
  }

  protected disarm(): void {
    for (const l of this.#logs) if (!l.device.closed) l.stop();
    this.#ranges = [];
  }

  protected override onChange(change: MappingChange): void {
    super.onChange(change);
    if (change.kind !== 'map') return;
    const m = change.mapping;
    const end = m.iova + BigInt(m.size);
    if (!this.#ranges.some((r) => m.iova >= r.iova && end <= r.iova + r.size)) this.rearmAtSync();
  }

  protected collect(range: RamRange, bitmap: DirtyBitmap): void {
    if (this.#ranges.length === 0) return;
    for (const chunk of chunkSpan(range, this.pageSize, this.chunkPages(bitmap))) {
      const npages = Number(chunk.size / this.pageSize);
      let bits: Uint8Array | null = null;
      try {
        for (const l of this.#logs) {
          // The first report lands in the buffer; the others are ORed into it.
          const got = l.report(chunk.iova, chunk.size, this.pageSize, bits === null ? this.buffer(bitmap, npages) : undefined);
          bits = orReports(bits, got);
        }
      } catch (e) {
        if (!(e instanceof VfioSystemError)) throw e;
        // After any error, treat the whole range as dirty.
        this.lastError = e;
        this.markPages(bitmap, chunk);
        continue;
      }
      if (bits !== null) this.merge(bitmap, chunk, bits);
    }
  }
}
