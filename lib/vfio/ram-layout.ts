/**
 * Where guest RAM sits in the VMM's dirty bitmap and in the device's IO
 * address space: the translation a dirty tracker needs between IOVAs (what
 * the kernel reports) and bitmap pages (what the VMM copies). Pure.
 *
 * Either the VMM lists its RAM ranges, or the layout is the identity
 * (bitmap page = IOVA / page size, as for a guest without a vIOMMU whose RAM
 * is mapped at its guest-physical addresses) over whatever is mapped.
 */
import { VfioArgumentError } from '../errors.js';
import type { IovaSpan, MappedSpan } from './type1-dirty.js';

/** One range of guest RAM: `size` bytes at `iova`, pages `[firstPage, firstPage + size / pageSize)` of the bitmap. */
export interface RamRange {
  readonly iova: bigint;
  readonly size: bigint;
  readonly firstPage: number;
}

/** A run of bitmap pages: the first page and the number of pages. */
export type PageRun = readonly [firstPage: number, npages: number];

/** The translation between IOVAs and bitmap pages. */
export class RamLayout {
  readonly #ranges: readonly RamRange[] | null;

  /**
   * @param pageSize the bitmap's page size (a power of two)
   * @param ranges the RAM ranges (page-aligned, not overlapping); omitted: the identity layout
   * @throws VfioArgumentError for a misaligned or overlapping range
   */
  constructor(
    readonly pageSize: bigint,
    ranges?: readonly RamRange[],
  ) {
    if (ranges !== undefined) {
      const sorted = [...ranges].sort((a, b) => (a.iova < b.iova ? -1 : 1));
      let end = -1n;
      for (const r of sorted) {
        if (r.size <= 0n || r.iova % pageSize !== 0n || r.size % pageSize !== 0n || !Number.isSafeInteger(r.firstPage) || r.firstPage < 0) {
          throw new VfioArgumentError('RamLayout', `RAM range at 0x${r.iova.toString(16)} must be non-empty and aligned to ${pageSize}`);
        }
        if (r.iova < end) throw new VfioArgumentError('RamLayout', `RAM range at 0x${r.iova.toString(16)} overlaps the one before it`);
        end = r.iova + r.size;
      }
      this.#ranges = sorted;
    } else this.#ranges = null;
  }

  /** The ranges to sync: the listed ones, or (identity) one per mapping. */
  ranges(mappings: Iterable<MappedSpan>): RamRange[] {
    if (this.#ranges !== null) return [...this.#ranges];
    const out: RamRange[] = [];
    for (const m of mappings) {
      const size = BigInt(m.size);
      const first = m.iova - (m.iova % this.pageSize);
      const last = m.iova + size + ((this.pageSize - ((m.iova + size) % this.pageSize)) % this.pageSize);
      out.push({ iova: first, size: last - first, firstPage: Number(first / this.pageSize) });
    }
    return out.sort((a, b) => (a.iova < b.iova ? -1 : 1));
  }

  /** The bitmap pages holding `[iova, iova + size)` (whole pages; IOVAs outside RAM map to nothing). */
  pagesOf(span: IovaSpan): PageRun[] {
    const pg = this.pageSize;
    const start = span.iova - (span.iova % pg);
    const end = span.iova + span.size;
    if (this.#ranges === null) return [[Number(start / pg), Number((end - start + pg - 1n) / pg)]];
    const out: PageRun[] = [];
    for (const r of this.#ranges) {
      const lo = start > r.iova ? start : r.iova;
      const hi = end < r.iova + r.size ? end : r.iova + r.size;
      if (lo < hi) out.push([r.firstPage + Number((lo - r.iova) / pg), Number((hi - lo + pg - 1n) / pg)]);
    }
    return out;
  }

  /** The bitmap page of `span.iova` when one RAM range holds all of `span` and `iova` is page-aligned; null otherwise. */
  locate(span: IovaSpan): number | null {
    if (span.iova % this.pageSize !== 0n) return null;
    if (this.#ranges === null) return Number(span.iova / this.pageSize);
    const r = this.#ranges.find((x) => span.iova >= x.iova && span.iova + span.size <= x.iova + x.size);
    return r === undefined ? null : r.firstPage + Number((span.iova - r.iova) / this.pageSize);
  }
}

/** The parts of `[iova, iova + size)` covered by mappings without a gap, in order (iommufd reads only those). */
export function mappedRuns(mappings: Iterable<MappedSpan>, span: IovaSpan): IovaSpan[] {
  const end = span.iova + span.size;
  const hit = [...mappings].filter((m) => m.iova < end && m.iova + BigInt(m.size) > span.iova).sort((a, b) => (a.iova < b.iova ? -1 : 1));
  const out: IovaSpan[] = [];
  let runStart = -1n;
  let runEnd = -1n;
  for (const m of hit) {
    const lo = m.iova > span.iova ? m.iova : span.iova;
    const mEnd = m.iova + BigInt(m.size);
    const hi = mEnd < end ? mEnd : end;
    if (runStart >= 0n && lo <= runEnd) {
      if (hi > runEnd) runEnd = hi;
      continue;
    }
    if (runStart >= 0n) out.push({ iova: runStart, size: runEnd - runStart });
    runStart = lo;
    runEnd = hi;
  }
  if (runStart >= 0n) out.push({ iova: runStart, size: runEnd - runStart });
  return out;
}

/** `span` cut into pieces of at most `maxPages` pages of `pageSize`. */
export function chunkSpan(span: IovaSpan, pageSize: bigint, maxPages: number): IovaSpan[] {
  const step = pageSize * BigInt(Math.max(1, maxPages));
  const out: IovaSpan[] = [];
  for (let at = span.iova; at < span.iova + span.size; at += step) {
    const left = span.iova + span.size - at;
    out.push({ iova: at, size: left < step ? left : step });
  }
  return out;
}
