/**
 * An iommufd IO address space (IOAS): user memory mapped at IOVAs, shared by
 * every HWPT and device attached to it. The library keeps the live mappings,
 * which the dirty-bitmap rules need (a query must not cross a gap), and
 * reports changes to listeners such as a dirty tracker.
 */
import { VfioArgumentError, VfioSystemError } from '../errors.js';
import type { MappingChange, MappingListener } from './container.js';
import { forgetMappings, resolveDmaMemory, type DmaMapping, type DmaMemory, type DmaRecord } from './dma-memory.js';
import { ioctl } from './ioctl.js';
import type { Iommufd } from './iommufd.js';
import {
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
  iommu_iova_range,
} from './uapi/iommufd.js';
import { decode, encode } from './uapi/layout.js';

/** Options of {@link IommufdIoas.map}: like `VfioContainer.mapDma`, at a fixed IOVA. */
export type IoasMapOptions = DmaMemory & {
  readonly iova: bigint;
  readonly read?: boolean;
  readonly write?: boolean;
};

/** `IOMMU_IOAS_IOVA_RANGES`: the usable IOVA ranges (inclusive) and the alignment every IOVA must keep. */
export interface IoasIovaRanges {
  readonly ranges: readonly { readonly start: bigint; readonly last: bigint }[];
  readonly alignment: bigint;
}

/** Largest number of IOVA ranges accepted from the kernel (the reply is untrusted). */
const MAX_IOVA_RANGES = 4096;

/** An IOAS object of an {@link Iommufd}: its mappings, kept by the library. Holds no fd of its own. */
export class IommufdIoas {
  readonly #mappings = new Map<bigint, DmaRecord>();
  readonly #listeners = new Set<MappingListener>();

  /** @internal Use {@link Iommufd.allocIoas}. */
  constructor(
    readonly iommufd: Iommufd,
    /** The IOAS object id. */
    readonly id: number,
  ) {}

  /** Live mappings, by IOVA. */
  get mappings(): ReadonlyMap<bigint, DmaMapping> {
    return this.#mappings;
  }

  /** `IOMMU_IOAS_MAP` with FIXED_IOVA: maps memory at `iova`; the buffer is kept alive while mapped. */
  map(options: IoasMapOptions): DmaMapping {
    const fd = this.iommufd;
    fd.check();
    const { vaddr, size, keep } = resolveDmaMemory(fd.sys, options);
    const flags =
      IOMMU_IOAS_MAP_FIXED_IOVA | (options.read === false ? 0 : IOMMU_IOAS_MAP_READABLE) | (options.write === false ? 0 : IOMMU_IOAS_MAP_WRITEABLE);
    const arg = encode(iommu_ioas_map, { size: iommu_ioas_map.size, flags, ioas_id: this.id, user_va: vaddr, length: BigInt(size), iova: options.iova });
    ioctl(fd, IOMMU_IOAS_MAP, arg);
    const rec: DmaRecord = { iova: options.iova, size, vaddr, keep };
    this.#mappings.set(rec.iova, rec);
    const mapping = { iova: rec.iova, size: rec.size, vaddr: rec.vaddr };
    this.#emit({ kind: 'map', mapping });
    return mapping;
  }

  /**
   * `IOMMU_IOAS_UNMAP` of `[iova, iova + length)`, which must cover whole
   * mappings (ENOENT otherwise, or when nothing is mapped there).
   * @returns the bytes unmapped
   */
  unmap(iova: bigint, length: bigint): bigint {
    const fd = this.iommufd;
    fd.check();
    const arg = encode(iommu_ioas_unmap, { size: iommu_ioas_unmap.size, ioas_id: this.id, iova, length });
    try {
      ioctl(fd, IOMMU_IOAS_UNMAP, arg);
    } catch (e) {
      // The kernel unmaps whole areas in IOVA order and stops at the first one the range bisects (ENOENT): those before it are gone.
      if (e instanceof VfioSystemError && e.code === 'ENOENT') this.#forgetUntilBisected(iova, length);
      throw e;
    }
    forgetMappings(this.#mappings, iova, length);
    this.#emit({ kind: 'unmap', iova, size: length, dirty: null });
    return decode(iommu_ioas_unmap, arg).length;
  }

  /** `IOMMU_IOAS_IOVA_RANGES`, growing the array while the kernel answers EMSGSIZE. */
  iovaRanges(): IoasIovaRanges {
    const fd = this.iommufd;
    fd.check();
    let room = 8;
    for (;;) {
      const array = new Uint8Array(room * iommu_iova_range.size);
      const arg = encode(iommu_ioas_iova_ranges, { size: iommu_ioas_iova_ranges.size, ioas_id: this.id, num_iovas: room, allowed_iovas: fd.sys.addressOf(array) });
      let tooSmall = false;
      try {
        ioctl(fd, IOMMU_IOAS_IOVA_RANGES, arg);
      } catch (e) {
        if (!(e instanceof VfioSystemError && e.code === 'EMSGSIZE')) throw e;
        tooSmall = true;
      }
      const r = decode(iommu_ioas_iova_ranges, arg);
      if (r.num_iovas > MAX_IOVA_RANGES) throw new VfioArgumentError('IommufdIoas.iovaRanges', `the kernel reports ${r.num_iovas} ranges, more than ${MAX_IOVA_RANGES}`);
      // A kernel that claims more than the array held without EMSGSIZE gets asked again, never read past.
      if (tooSmall || r.num_iovas > room) {
        room = r.num_iovas;
        continue;
      }
      const ranges = [];
      for (let i = 0; i < r.num_iovas; i++) {
        const d = decode(iommu_iova_range, array, i * iommu_iova_range.size);
        ranges.push({ start: d.start, last: d.last });
      }
      return { ranges, alignment: r.out_iova_alignment };
    }
  }

  /** Calls `listener` after every map and unmap; returns a function that removes it. */
  onMappingChange(listener: MappingListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  #forgetUntilBisected(iova: bigint, length: bigint): void {
    const hit = [...this.#mappings.values()].filter((m) => m.iova < iova + length && m.iova + BigInt(m.size) > iova).sort((a, b) => (a.iova < b.iova ? -1 : 1));
    for (const m of hit) {
      if (m.iova < iova || m.iova + BigInt(m.size) > iova + length) return;
      this.#mappings.delete(m.iova);
    }
  }

  #emit(change: MappingChange): void {
    for (const l of [...this.#listeners]) l(change);
  }
}
