/**
 * An iommufd IO address space (IOAS): user memory mapped at IOVAs, shared by
 * every HWPT and device attached to it. The library keeps the live mappings,
 * which the dirty-bitmap rules need (a query must not cross a gap), and
 * reports changes to listeners such as a dirty tracker.
 */
import { UapiFormatError, VfioArgumentError, VfioClosedError, VfioSystemError } from '../errors.js';
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
/** Asks of IOVA_RANGES before giving up: the list only grows when a device attaches in between. */
const MAX_RANGE_QUERIES = 4;
const U64_LIMIT = 1n << 64n;
/** `iova == 0 && length == U64_MAX` asks `iommufd_ioas_unmap` to unmap everything. */
const U64_MAX = U64_LIMIT - 1n;

/** Refuses an IOVA span the uAPI's u64 fields cannot carry (the kernel then judges the rest). */
function checkSpan(op: string, iova: bigint, length: bigint): void {
  if (iova < 0n || length < 0n || iova >= U64_LIMIT || length >= U64_LIMIT) {
    throw new VfioArgumentError(op, `IOVA 0x${iova.toString(16)} and length 0x${length.toString(16)} must each fit in 64 bits`);
  }
}

/** An IOAS object of an {@link Iommufd}: its mappings, kept by the library. Holds no fd of its own. */
export class IommufdIoas {
  readonly #mappings = new Map<bigint, DmaRecord>();
  readonly #listeners = new Set<MappingListener>();
  #destroyed = false;

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

  /** True once {@link Iommufd.destroy} destroyed the IOAS. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** `IOMMU_IOAS_MAP` with FIXED_IOVA: maps memory at `iova`; the buffer is kept alive while mapped. */
  map(options: IoasMapOptions): DmaMapping {
    const fd = this.iommufd;
    this.check();
    const { vaddr, size, keep } = resolveDmaMemory(fd.sys, options);
    if (!Number.isSafeInteger(size)) throw new VfioArgumentError('IommufdIoas.map', `size ${size} is not an integer`);
    checkSpan('IommufdIoas.map', options.iova, BigInt(size));
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
   * mappings (ENOENT otherwise, or when nothing is mapped there); `iova` 0
   * with `length` 2^64 - 1 unmaps everything. Listeners hear of every
   * mapping the kernel removed, also when it failed part way.
   * @returns the bytes unmapped
   */
  unmap(iova: bigint, length: bigint): bigint {
    const fd = this.iommufd;
    this.check();
    checkSpan('IommufdIoas.unmap', iova, length);
    const arg = encode(iommu_ioas_unmap, { size: iommu_ioas_unmap.size, ioas_id: this.id, iova, length });
    try {
      ioctl(fd, IOMMU_IOAS_UNMAP, arg);
    } catch (e) {
      // iopt_unmap_iova_range removes whole areas in IOVA order and stops at the first one the range bisects (ENOENT): those before it are gone.
      if (e instanceof VfioSystemError && e.code === 'ENOENT') this.#forgetUntilBisected(iova, length);
      throw e;
    }
    if (iova === 0n && length === U64_MAX) {
      // iopt_unmap_all covers [0, ULONG_MAX], one byte more than the span: a mapping ending at 2^64 goes too.
      this.#mappings.clear();
      this.#emit({ kind: 'unmap', iova, size: U64_LIMIT, dirty: null });
    } else {
      forgetMappings(this.#mappings, iova, length);
      this.#emit({ kind: 'unmap', iova, size: length, dirty: null });
    }
    return decode(iommu_ioas_unmap, arg).length;
  }

  /** `IOMMU_IOAS_IOVA_RANGES`, growing the array while the kernel answers EMSGSIZE. */
  iovaRanges(): IoasIovaRanges {
    const op = 'iommu_ioas_iova_ranges';
    const fd = this.iommufd;
    this.check();
    let room = 8;
    for (let attempt = 1; ; attempt++) {
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
      if (r.num_iovas > MAX_IOVA_RANGES) throw new UapiFormatError(`the kernel reports ${r.num_iovas} ranges, more than ${MAX_IOVA_RANGES}`, op);
      // EMSGSIZE means more ranges than the array held; a kernel that says so of an array big enough is wrong.
      if (tooSmall && r.num_iovas <= room) throw new UapiFormatError(`EMSGSIZE with ${r.num_iovas} ranges for room of ${room}`, op);
      // A kernel that claims more than the array held without EMSGSIZE gets asked again, never read past.
      if (r.num_iovas > room) {
        if (attempt === MAX_RANGE_QUERIES) throw new UapiFormatError(`still more ranges than room after ${attempt} asks`, op);
        room = r.num_iovas;
        continue;
      }
      if (r.out_iova_alignment === 0n || (r.out_iova_alignment & (r.out_iova_alignment - 1n)) !== 0n) {
        throw new UapiFormatError(`IOVA alignment ${r.out_iova_alignment} is not a power of two`, op, 24);
      }
      const ranges = [];
      let next = 0n;
      for (let i = 0; i < r.num_iovas; i++) {
        const d = decode(iommu_iova_range, array, i * iommu_iova_range.size);
        // interval_tree_for_each_span reports the holes in order, disjoint and non-empty.
        if (d.start > d.last || (i > 0 && d.start < next)) throw new UapiFormatError(`range ${i} [0x${d.start.toString(16)}, 0x${d.last.toString(16)}] is empty or out of order`, 'iommu_iova_range');
        next = d.last + 1n;
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

  /** @internal The kernel destroyed the IOAS (and its mappings with it). */
  markDestroyed(): void {
    this.#destroyed = true;
    this.#mappings.clear();
  }

  /** @internal Throws when the context is closed or the IOAS destroyed. */
  check(): void {
    this.iommufd.check();
    if (this.#destroyed) throw new VfioClosedError(`IOAS ${this.id}`);
  }

  /** Forgets the mappings an unmap that failed on a bisected area removed before it, and tells the listeners. */
  #forgetUntilBisected(iova: bigint, length: bigint): void {
    const hit = [...this.#mappings.values()].filter((m) => m.iova < iova + length && m.iova + BigInt(m.size) > iova).sort((a, b) => (a.iova < b.iova ? -1 : 1));
    let end = iova;
    for (const m of hit) {
      if (m.iova < iova || m.iova + BigInt(m.size) > iova + length) break;
      this.#mappings.delete(m.iova);
      end = m.iova + BigInt(m.size);
    }
    if (end > iova) this.#emit({ kind: 'unmap', iova, size: end - iova, dirty: null });
  }

  #emit(change: MappingChange): void {
    for (const l of [...this.#listeners]) l(change);
  }
}
