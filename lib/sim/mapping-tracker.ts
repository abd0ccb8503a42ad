/**
 * The live user mappings of one region, as a vendor driver tracks its vmas
 * (through `SimMmap.unmap`, the simulated munmap): what a driver that
 * offers a saving layout needs to refuse a saving transition while a
 * mapping outside that layout is still in place (Alex Williamson's
 * "the vendor driver tracks vmas and refuses the device_state change").
 */
import type { SparseArea } from '../vfio/uapi/info.js';
import type { SimMmap } from './file.js';

/** A live mapping: where it starts in the region and how long it is. */
interface LiveMapping {
  readonly offset: number;
  readonly size: number;
}

export class SimMappingTracker {
  readonly #live = new Set<LiveMapping>();

  /** Mappings in place now. */
  get count(): number {
    return this.#live.size;
  }

  /**
   * A mapping of `bytes` at `offset` of the region, tracked until it is unmapped.
   * `onUnmap` runs once, after the tracker forgot it.
   */
  map(offset: number, bytes: Uint8Array, onUnmap?: (offset: number, size: number) => void): SimMmap {
    const entry: LiveMapping = { offset, size: bytes.byteLength };
    this.#live.add(entry);
    return {
      bytes,
      unmap: () => {
        if (!this.#live.delete(entry)) return;
        onUnmap?.(entry.offset, entry.size);
      },
    };
  }

  /** Live mappings that are not inside one of `allowed`. */
  outside(allowed: readonly SparseArea[]): number {
    let n = 0;
    for (const m of this.#live) if (!allowed.some((a) => m.offset >= a.offset && m.offset + m.size <= a.offset + a.size)) n++;
    return n;
  }
}
