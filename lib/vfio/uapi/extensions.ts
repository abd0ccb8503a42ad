/**
 * vfio-ts's opt-in uAPI extensions. Linux never merged either (reference
 * §7); simulated devices offer them, and a vendor driver could. Kept out of
 * `constants.ts`/`structs.ts` so the C layout test does not look for them.
 *
 * **Saving layout** (Alex Williamson's `VFIO_REGION_INFO_CAP_SPARSE_MMAP_SAVING`):
 * a second sparse-mmap capability on a region, id
 * {@link VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING}, version 1, with the
 * body of `struct vfio_region_info_cap_sparse_mmap` (u32 nr_areas at +8, u32
 * reserved at +12, then nr_areas × { u64 offset, u64 size } from +16). It
 * lists the areas that may stay mmapped while the device is in a saving state.
 *
 * **Remap IRQ** (Yan Zhao's RFC, reshaped after Alex's review): an IRQ index
 * past the bus's standard ones whose GET_IRQ_INFO reply carries a
 * capability chain. `struct vfio_irq_info` has no `cap_offset` in 6.12, so
 * the reply is extended:
 * ```
 * struct vfio_ts_irq_info {          // 24 bytes, then the chain
 *   u32 argsz;      // +0
 *   u32 flags;      // +4  VFIO_IRQ_INFO_* | VFIO_TS_IRQ_INFO_FLAG_CAPS (1u << 31)
 *   u32 index;      // +8
 *   u32 count;      // +12
 *   u32 cap_offset; // +16 first capability, from the start of the buffer; 0 if argsz was too small
 *   u32 reserved;   // +20 0: keeps the chain 8-byte aligned
 * };
 * struct vfio_ts_irq_info_cap_type { // 16 bytes, id 0xf001, version 1
 *   struct vfio_info_cap_header header;
 *   u32 type;       // VFIO_TS_IRQ_TYPE_REMAP (1)
 *   u32 subtype;    // VFIO_TS_IRQ_SUBTYPE_REMAP_SPARSE_MMAP (1)
 * };
 * ```
 * The argsz dance is the region info's: with argsz < 24 + chain the call
 * succeeds, FLAG_CAPS is set, argsz is raised and cap_offset is 0; a caller
 * that passes 16 bytes (any 6.12 user) gets the plain 16-byte reply.
 */
import { UapiFormatError } from '../../errors.js';
import { walkCapChain, requireCapBytes, type CapEntry } from './caps.js';
import { decodeSparseAreas, type IrqInfo, type RawCap, type RegionInfo, type SparseArea } from './info.js';
import { VFIO_REGION_INFO_FLAG_MMAP } from './constants.js';
import { dataView, decode, struct, u32 } from './layout.js';

/** Region-info capability id of the saving layout: outside the kernel's ids (1-5), version 1. */
export const VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING = 0xf001;

/** `vfio_irq_info.flags`: the reply is a {@link vfio_ts_irq_info} with a capability chain. */
export const VFIO_TS_IRQ_INFO_FLAG_CAPS = 0x8000_0000;
/** IRQ-info capability id of the type capability (the IRQ-info namespace has no kernel ids). */
export const VFIO_TS_IRQ_INFO_CAP_TYPE = 0xf001;
/** IRQ type: the signal asks the user to re-evaluate mmaps. */
export const VFIO_TS_IRQ_TYPE_REMAP = 1;
/** Subtype: re-read the sparse mmap capabilities of the regions named by the eventfd count. */
export const VFIO_TS_IRQ_SUBTYPE_REMAP_SPARSE_MMAP = 1;
/**
 * The highest region index a remap bitmap can name. Bit 63 stays clear: the
 * eventfd counter saturates at 2^64 - 2, so a bitmap with every bit set
 * could not be signalled.
 */
export const VFIO_TS_REMAP_MAX_REGION = 62;

/** The extended GET_IRQ_INFO reply (see the module comment). */
export const vfio_ts_irq_info = struct('vfio_ts_irq_info', 24, {
  argsz: u32(0),
  flags: u32(4),
  index: u32(8),
  count: u32(12),
  cap_offset: u32(16),
  reserved: u32(20),
});

const SAVING_CAP = 'vfio_ts_region_info_cap_sparse_mmap_saving';
const IRQ_TYPE_CAP = 'vfio_ts_irq_info_cap_type';

/**
 * The saving layout of a region (from the capability {@link decodeRegionInfo}
 * keeps in `otherCaps`), or undefined when the region has none, or one of a
 * version this library does not know (the device then refuses the saving
 * transition while mappings conflict: a clean failure).
 * @param pageSize the system's page size (mmap granularity); 4096, the smallest Linux has, by default
 * @throws UapiFormatError for a malformed capability, or an area that is empty, not page-aligned,
 *   overlaps another, or lies outside every area the region may map normally
 */
export function decodeSavingLayout(info: RegionInfo, pageSize = 4096): readonly SparseArea[] | undefined {
  const cap = info.otherCaps.find((c) => c.id === VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING && c.version === 1);
  if (cap === undefined) return undefined;
  const areas = decodeSparseAreas(cap.bytes, entryOf(cap), info.size);
  const inNormal = containment((info.flags & VFIO_REGION_INFO_FLAG_MMAP) === 0 ? [] : (info.sparse ?? [{ offset: 0, size: info.size }]));
  const bad = (i: number, a: SparseArea, why: string): UapiFormatError => new UapiFormatError(`saving area ${i} [${a.offset}, +${a.size}) ${why}`, SAVING_CAP, 16 + 16 * i);
  areas.forEach((a, i) => {
    // mmap works in whole pages: a partial page would map (and leave untrapped) bytes outside the area.
    // Only the region's end may be unaligned, where the kernel pads the last page of a small BAR.
    const end = a.offset + a.size;
    if (a.size === 0) throw bad(i, a, 'is empty');
    if (a.offset % pageSize !== 0 || (end % pageSize !== 0 && end !== info.size)) throw bad(i, a, `is not aligned to the ${pageSize}-byte page`);
    // "May stay mmapped" is a subset of what may be mapped at all; anything else is a vendor bug.
    if (!inNormal(a.offset, end)) throw bad(i, a, 'is not inside an area the region may map');
  });
  // Overlapping areas would be mapped twice. Checked in offset order: a pairwise check of a reply
  // holding tens of thousands of areas would stall the caller.
  let reach: { a: SparseArea; i: number } | undefined;
  for (const next of areas.map((a, i) => ({ a, i })).sort((x, y) => x.a.offset - y.a.offset)) {
    if (reach !== undefined && next.a.offset < reach.a.offset + reach.a.size) throw bad(next.i, next.a, `overlaps saving area ${reach.i}`);
    // Every area is non-empty and sorted, so the one just checked reaches furthest unless it overlapped.
    reach = next;
  }
  return areas;
}

/**
 * A test for "`[start, end)` lies inside one of `areas`" in O(log n): the
 * areas sorted by offset, with the furthest end reached so far, so that a
 * reply with tens of thousands of areas on both sides cannot stall the caller.
 */
function containment(areas: readonly SparseArea[]): (start: number, end: number) => boolean {
  const sorted = [...areas].sort((x, y) => x.offset - y.offset);
  let furthest = 0;
  const reach = sorted.map((a) => (furthest = Math.max(furthest, a.offset + a.size)));
  return (start, end) => {
    // The last area that starts at or before `start`; any area before it that covers `end` does as well.
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid].offset <= start) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && reach[lo - 1] >= end;
  };
}

/** A raw capability as a chain entry of its own bytes. */
function entryOf(cap: RawCap): CapEntry {
  return { id: cap.id, version: cap.version, offset: 0, end: cap.bytes.byteLength };
}

/**
 * The body (after the 8-byte header) of a sparse-mmap-shaped capability:
 * `nr_areas`, `reserved`, then the areas. The simulated kernel builds both
 * SPARSE_MMAP and the saving layout with it.
 */
export function encodeSparseAreas(areas: readonly SparseArea[]): Uint8Array {
  const body = new Uint8Array(8 + 16 * areas.length);
  const dv = dataView(body);
  dv.setUint32(0, areas.length, true);
  areas.forEach((a, i) => {
    dv.setBigUint64(8 + 16 * i, BigInt(a.offset), true);
    dv.setBigUint64(16 + 16 * i, BigInt(a.size), true);
  });
  return body;
}

/** An extended GET_IRQ_INFO reply, decoded. */
export interface IrqInfoExt extends IrqInfo {
  /** The type capability, when the reply has one. */
  readonly type?: { readonly type: number; readonly subtype: number };
  /** Capabilities not interpreted here. */
  readonly otherCaps: readonly RawCap[];
}

/**
 * Decodes a GET_IRQ_INFO reply made with a {@link vfio_ts_irq_info}-sized
 * buffer (or larger). Without {@link VFIO_TS_IRQ_INFO_FLAG_CAPS} bytes 16-23
 * are not the device's and are ignored, as a 6.12 kernel leaves them.
 * @throws UapiFormatError for a malformed chain
 */
export function decodeIrqInfoExt(buf: Uint8Array): IrqInfoExt {
  const d = decode(vfio_ts_irq_info, buf);
  const base = { index: d.index, flags: d.flags, count: d.count };
  if ((d.flags & VFIO_TS_IRQ_INFO_FLAG_CAPS) === 0) return { ...base, otherCaps: [] };
  let type: { type: number; subtype: number } | undefined;
  const otherCaps: RawCap[] = [];
  for (const c of walkCapChain(buf, d.cap_offset, vfio_ts_irq_info.size, vfio_ts_irq_info.name)) {
    // Only version 1's layout is known: another version is kept raw, so its IRQ is not taken for the remap IRQ.
    if (c.id === VFIO_TS_IRQ_INFO_CAP_TYPE && c.version === 1) {
      requireCapBytes(c, 16, IRQ_TYPE_CAP);
      const dv = dataView(buf);
      type = { type: dv.getUint32(c.offset + 8, true), subtype: dv.getUint32(c.offset + 12, true) };
    } else otherCaps.push({ id: c.id, version: c.version, bytes: buf.slice(c.offset, c.end) });
  }
  return { ...base, ...(type ? { type } : {}), otherCaps };
}

/** True for the remap IRQ: the type capability says "re-evaluate sparse mmap". */
export function isRemapIrq(info: IrqInfoExt): boolean {
  return info.type?.type === VFIO_TS_IRQ_TYPE_REMAP && info.type.subtype === VFIO_TS_IRQ_SUBTYPE_REMAP_SPARSE_MMAP;
}

/** A remap signal's eventfd count, read as a bitmap of region indexes. */
export interface RemapBitmap {
  /** The region indexes named, ascending. */
  readonly regions: readonly number[];
  /** Bits that name no region of the device (a vendor bug, or a count that is no bitmap). */
  readonly stray: bigint;
}

/**
 * Splits a remap signal's count into region indexes: bit `i` is region `i`.
 * Bits at or past `numRegions` (or past {@link VFIO_TS_REMAP_MAX_REGION})
 * name nothing and are returned as `stray`.
 */
export function decodeRemapBitmap(count: bigint, numRegions: number): RemapBitmap {
  const regions: number[] = [];
  const limit = Math.min(numRegions, VFIO_TS_REMAP_MAX_REGION + 1);
  for (let i = 0; i < limit; i++) if (((count >> BigInt(i)) & 1n) !== 0n) regions.push(i);
  const named = regions.reduce((m, i) => m | (1n << BigInt(i)), 0n);
  return { regions, stray: count & ~named };
}
