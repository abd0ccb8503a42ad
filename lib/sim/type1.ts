/**
 * The simulated type1 IOMMU driver (`drivers/vfio/vfio_iommu_type1.c`, 6.12):
 * DMA mappings with the kernel's checks and errnos, GET_INFO with its
 * capabilities in the kernel's order, and dirty-page tracking with the
 * pinned-pages scope rule.
 */
import {
  VFIO_DMA_CC_IOMMU,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_VADDR,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_ALL,
  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
  VFIO_DMA_UNMAP_FLAG_VADDR,
  VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
  VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
  VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1_NESTING_IOMMU,
  VFIO_TYPE1v2_IOMMU,
  VFIO_UNMAP_ALL,
  VFIO_UPDATE_VADDR,
} from '../vfio/uapi/constants.js';
import { buildCapChain, type CapSpec } from '../vfio/uapi/info.js';
import {
  VFIO_CHECK_EXTENSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
} from '../vfio/uapi/ioctls.js';
import { dataView, decode, encode } from '../vfio/uapi/layout.js';
import {
  vfio_bitmap,
  vfio_iommu_type1_dirty_bitmap,
  vfio_iommu_type1_dirty_bitmap_get,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_info,
} from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg } from './file.js';
import type { SimMemory } from './memory.js';

const U64_MAX = (1n << 64n) - 1n;
/** `PAGE_MASK` on 4 KiB pages: the bitmap of a container without an IOMMU domain. */
const PAGE_MASK = U64_MAX ^ 0xfffn;
/** `DIRTY_BITMAP_BYTES(INT_MAX)`: 256 MiB. */
export const DIRTY_BITMAP_SIZE_MAX = 268435456n;
/** The `dma_entry_limit` module parameter's default. */
export const DMA_ENTRY_LIMIT = 65535;

const dirtyBitmapBytes = (npages: bigint): bigint => ((npages + 63n) / 64n) * 8n;
const ffs = (v: bigint): bigint => {
  let n = 0n;
  while (((v >> n) & 1n) === 0n && n < 64n) n++;
  return n;
};

/** What an IOMMU-backed (hardware) domain contributes when a group attaches. */
export interface SimIommuDomain {
  /** Page sizes the IOMMU supports (e.g. 4 KiB | 2 MiB | 1 GiB). */
  readonly pgsizeBitmap: bigint;
  /** Usable IOVA ranges, inclusive (aperture minus reserved regions such as the MSI window). */
  readonly iovaRanges: readonly { start: bigint; end: bigint }[];
}

/** A group as type1 sees it. */
export interface SimType1Group {
  readonly id: number;
  /** `null` for an emulated-IOMMU (mdev) group. */
  readonly domain: SimIommuDomain | null;
}

interface Dma {
  readonly iova: bigint;
  readonly size: bigint;
  vaddr: bigint;
  /** Set by UNMAP_DMA with FLAG_VADDR until MAP_DMA with FLAG_VADDR supplies a new one. */
  vaddrInvalid: boolean;
  readonly prot: number;
  /** Mapped into a hardware IOMMU domain (pinned): such pages may be dirtied without the kernel seeing it. */
  iommuMapped: boolean;
  /** One bit per page while dirty tracking is on. */
  bitmap: Uint8Array | null;
  /** IOVAs of pages pinned by a vendor driver (`vfio_pin_pages`). */
  readonly pinned: Set<bigint>;
}

interface AttachedGroup {
  readonly group: SimType1Group;
  pinnedScope: boolean;
}

/** One opened type1 IOMMU (a container after VFIO_SET_IOMMU). */
export class SimType1 {
  readonly v2: boolean;
  pgsizeBitmap = PAGE_MASK;
  dmaAvail = DMA_ENTRY_LIMIT;
  dirtyTracking = false;
  readonly #dmas: Dma[] = [];
  readonly #groups: AttachedGroup[] = [];
  #iovaRanges: { start: bigint; end: bigint }[] = [];

  constructor(
    type: number,
    private readonly memory: SimMemory,
  ) {
    if (type !== VFIO_TYPE1_IOMMU && type !== VFIO_TYPE1v2_IOMMU && type !== VFIO_TYPE1_NESTING_IOMMU) fail('EINVAL');
    this.v2 = type !== VFIO_TYPE1_IOMMU;
  }

  /** `vfio_iommu_type1_check_extension`; `iommu` is null before SET_IOMMU. */
  static checkExtension(iommu: SimType1 | null, arg: number): number {
    switch (arg) {
      case VFIO_TYPE1_IOMMU:
      case VFIO_TYPE1v2_IOMMU:
      case VFIO_TYPE1_NESTING_IOMMU:
      case VFIO_UNMAP_ALL:
        return 1;
      case VFIO_UPDATE_VADDR:
        return iommu !== null && !iommu.#groups.some((g) => g.group.domain === null) ? 1 : 0;
      case VFIO_DMA_CC_IOMMU:
        return iommu !== null && iommu.#hasDomain() ? 1 : 0;
      default:
        return 0;
    }
  }

  /** Number of live mappings (for tests). */
  get mappings(): number {
    return this.#dmas.length;
  }

  /** IOMMU-backed groups that never pinned a page: while any exists, every IOMMU-mapped page is dirty. */
  get nonPinnedGroups(): number {
    return this.#groups.filter((g) => !g.pinnedScope).length;
  }

  attachGroup(group: SimType1Group): void {
    if (this.#groups.some((g) => g.group.id === group.id)) fail('EINVAL');
    if (group.domain === null) {
      this.#groups.push({ group, pinnedScope: true });
      return;
    }
    const domain = group.domain;
    this.#groups.push({ group, pinnedScope: false });
    // The usable IOVA space is the intersection of every domain's ranges.
    this.#iovaRanges = this.#hasDomain(group.id) ? intersect(this.#iovaRanges, domain.iovaRanges) : domain.iovaRanges.map((r) => ({ ...r }));
    this.pgsizeBitmap &= domain.pgsizeBitmap;
    // vfio_iommu_replay: existing mappings are pinned into the new domain.
    for (const d of this.#dmas) d.iommuMapped = true;
  }

  detachGroup(id: number): void {
    const i = this.#groups.findIndex((g) => g.group.id === id);
    if (i < 0) return;
    this.#groups.splice(i, 1);
    if (this.#groups.length === 0) this.#dmas.length = 0;
    if (!this.#hasDomain()) {
      this.pgsizeBitmap = PAGE_MASK;
      this.#iovaRanges = [];
      for (const d of this.#dmas) d.iommuMapped = false;
    }
  }

  ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_CHECK_EXTENSION:
        return SimType1.checkExtension(this, typeof arg === 'number' ? arg : -1);
      case VFIO_IOMMU_GET_INFO:
        return this.#getInfo(arg);
      case VFIO_IOMMU_MAP_DMA:
        return this.#mapDma(arg);
      case VFIO_IOMMU_UNMAP_DMA:
        return this.#unmapDma(arg);
      case VFIO_IOMMU_DIRTY_PAGES:
        return this.#dirtyPages(arg);
      default:
        fail('ENOTTY');
    }
  }

  // ------------------------------------------------------------ vendor-driver side (mdev, DMA devices)

  /** `vfio_pin_pages` by an mdev driver of `groupId`: pins and (while tracking) dirties the pages. */
  pinPages(groupId: number, iova: bigint, npages: number): void {
    const pg = this.#pgsize();
    for (let i = 0n; i < BigInt(npages); i++) {
      const at = iova + i * pg;
      const dma = this.#find(at, 1n);
      if (dma === undefined) fail('EINVAL');
      dma.pinned.add(at - ((at - dma.iova) % pg));
      this.#markDirty(dma, at, pg);
    }
    const g = this.#groups.find((x) => x.group.id === groupId);
    if (g) g.pinnedScope = true;
  }

  /** `vfio_unpin_pages`. */
  unpinPages(iova: bigint, npages: number): void {
    const pg = this.#pgsize();
    for (let i = 0n; i < BigInt(npages); i++) this.#find(iova + i * pg, 1n)?.pinned.delete(iova + i * pg);
  }

  /**
   * `vfio_dma_rw`: copies between a mapped IOVA range and `data`; writes are
   * recorded as dirty while tracking. Ranges may span mappings.
   */
  dmaRw(iova: bigint, data: Uint8Array, write: boolean): void {
    let done = 0;
    while (done < data.byteLength) {
      const at = iova + BigInt(done);
      const dma = this.#find(at, 1n);
      if (dma === undefined) fail('EINVAL');
      if ((dma.prot & (write ? VFIO_DMA_MAP_FLAG_WRITE : VFIO_DMA_MAP_FLAG_READ)) === 0) fail('EPERM');
      const n = Math.min(data.byteLength - done, Number(dma.iova + dma.size - at));
      const mem = this.memory.resolve(dma.vaddr + (at - dma.iova), n);
      if (write) {
        mem.set(data.subarray(done, done + n));
        this.#markDirty(dma, at, BigInt(n));
      } else data.set(mem, done);
      done += n;
    }
  }

  /** The user memory behind `[iova, iova + length)` of one mapping, for a device that DMAs through an IOMMU. */
  translate(iova: bigint, length: number, write: boolean): Uint8Array {
    const dma = this.#find(iova, BigInt(length));
    if (dma === undefined || iova < dma.iova || iova + BigInt(length) > dma.iova + dma.size) fail('EFAULT');
    if ((dma.prot & (write ? VFIO_DMA_MAP_FLAG_WRITE : VFIO_DMA_MAP_FLAG_READ)) === 0) fail('EPERM');
    return this.memory.resolve(dma.vaddr + (iova - dma.iova), length);
  }

  // ------------------------------------------------------------ ioctls

  #getInfo(arg: IoctlArg): number {
    const minsz = 16; // offsetofend(iova_pgsizes)
    const buf = userBuf(arg, minsz);
    const argsz = dataView(buf).getUint32(0, true);
    if (argsz < minsz) fail('EINVAL');
    const caps: CapSpec[] = [this.#migrationCap(), this.#dmaAvailCap()];
    if (this.#iovaRanges.length > 0) caps.push(this.#iovaCap());
    const chain = buildCapChain(caps, vfio_iommu_type1_info.size);
    const fixed = vfio_iommu_type1_info.size;
    let outArgsz = argsz;
    let capOffset = 0;
    if (argsz < fixed + chain.byteLength) outArgsz = fixed + chain.byteLength;
    else {
      userBuf(arg, fixed + chain.byteLength).set(chain, fixed);
      capOffset = fixed;
    }
    const info = encode(vfio_iommu_type1_info, {
      argsz: outArgsz,
      flags: VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS,
      iova_pgsizes: this.pgsizeBitmap,
      cap_offset: capOffset,
      pad: 0,
    });
    // copy_to_user(arg, &info, min(argsz, sizeof(info)))
    buf.set(info.subarray(0, Math.min(argsz, fixed, buf.byteLength)));
    return 0;
  }

  #migrationCap(): CapSpec {
    const body = new Uint8Array(24);
    const dv = dataView(body);
    dv.setUint32(0, 0, true);
    dv.setBigUint64(8, 1n << ffs(this.pgsizeBitmap), true);
    dv.setBigUint64(16, DIRTY_BITMAP_SIZE_MAX, true);
    return { id: VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, version: 1, body };
  }

  #dmaAvailCap(): CapSpec {
    const body = new Uint8Array(4);
    dataView(body).setUint32(0, this.dmaAvail, true);
    return { id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version: 1, body };
  }

  #iovaCap(): CapSpec {
    const body = new Uint8Array(8 + 16 * this.#iovaRanges.length);
    const dv = dataView(body);
    dv.setUint32(0, this.#iovaRanges.length, true);
    this.#iovaRanges.forEach((r, i) => {
      dv.setBigUint64(8 + 16 * i, r.start, true);
      dv.setBigUint64(16 + 16 * i, r.end, true);
    });
    return { id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version: 1, body };
  }

  #mapDma(arg: IoctlArg): number {
    const buf = userBuf(arg, vfio_iommu_type1_dma_map.size);
    const map = decode(vfio_iommu_type1_dma_map, buf);
    const mask = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE | VFIO_DMA_MAP_FLAG_VADDR;
    if (map.argsz < vfio_iommu_type1_dma_map.size || (map.flags & ~mask) !== 0) fail('EINVAL');
    const setVaddr = (map.flags & VFIO_DMA_MAP_FLAG_VADDR) !== 0;
    const prot = map.flags & (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
    if ((prot !== 0 && setVaddr) || (prot === 0 && !setVaddr)) fail('EINVAL');
    const pg = this.#pgsize();
    const { iova, vaddr, size } = map;
    if (size === 0n || ((size | iova | vaddr) & (pg - 1n)) !== 0n) fail('EINVAL');
    if (iova + size - 1n > U64_MAX || vaddr + size - 1n > U64_MAX) fail('EINVAL');
    const existing = this.#find(iova, size);
    if (setVaddr) {
      if (existing === undefined) fail('ENOENT');
      if (!existing.vaddrInvalid || existing.iova !== iova || existing.size !== size) fail('EINVAL');
      existing.vaddr = vaddr;
      existing.vaddrInvalid = false;
      return 0;
    }
    if (existing !== undefined) fail('EEXIST');
    if (this.dmaAvail === 0) fail('ENOSPC');
    if (!this.#iovaValid(iova, iova + size - 1n)) fail('EINVAL');
    const iommuMapped = this.#hasDomain();
    // Pinning for a hardware domain faults on memory that is not there.
    if (iommuMapped && !this.memory.isMapped(vaddr, Number(size))) fail('EFAULT');
    const dma: Dma = { iova, size, vaddr, vaddrInvalid: false, prot, iommuMapped, bitmap: null, pinned: new Set() };
    if (this.dirtyTracking) dma.bitmap = new Uint8Array(Number(dirtyBitmapBytes(size / pg)));
    this.dmaAvail--;
    this.#dmas.splice(this.#lowerBound(iova), 0, dma);
    return 0;
  }

  #unmapDma(arg: IoctlArg): number {
    const minsz = vfio_iommu_type1_dma_unmap.size;
    const buf = userBuf(arg, minsz);
    const unmap = decode(vfio_iommu_type1_dma_unmap, buf);
    const mask = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VFIO_DMA_UNMAP_FLAG_VADDR | VFIO_DMA_UNMAP_FLAG_ALL;
    if (unmap.argsz < minsz || (unmap.flags & ~mask) !== 0) fail('EINVAL');
    const withBitmap = (unmap.flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) !== 0;
    if (withBitmap && (unmap.flags & (VFIO_DMA_UNMAP_FLAG_ALL | VFIO_DMA_UNMAP_FLAG_VADDR)) !== 0) fail('EINVAL');
    let bitmap = { pgsize: 0n, size: 0n, data: 0n };
    if (withBitmap) {
      if (unmap.argsz < minsz + vfio_bitmap.size) fail('EINVAL');
      bitmap = decode(vfio_bitmap, userBuf(arg, minsz + vfio_bitmap.size), minsz);
      if (!this.memory.isMapped(bitmap.data, Number(bitmap.size))) fail('EINVAL');
      verifyBitmapSize(unmap.size >> ffs(bitmap.pgsize), bitmap.size);
    }
    const unmapped = this.#doUnmap(unmap.flags, unmap.iova, unmap.size, bitmap);
    // copy_to_user of the header happens only on success.
    encode(vfio_iommu_type1_dma_unmap, { size: unmapped }, buf);
    return 0;
  }

  /** `vfio_dma_do_unmap`; returns the bytes unmapped. */
  #doUnmap(flags: number, iova: bigint, sizeIn: bigint, bitmap: { pgsize: bigint; data: bigint }): bigint {
    const all = (flags & VFIO_DMA_UNMAP_FLAG_ALL) !== 0;
    if ((flags & VFIO_DMA_UNMAP_FLAG_VADDR) !== 0 && this.#groups.some((g) => g.group.domain === null)) fail('EBUSY');
    const pg = this.#pgsize();
    if ((iova & (pg - 1n)) !== 0n) fail('EINVAL');
    let size = sizeIn;
    if (all) {
      if (iova !== 0n || size !== 0n) fail('EINVAL');
      size = U64_MAX;
    } else if (size === 0n || (size & (pg - 1n)) !== 0n || iova + size - 1n > U64_MAX) fail('EINVAL');
    if ((flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) !== 0 && (!this.dirtyTracking || bitmap.pgsize !== pg)) fail('EINVAL');
    if (this.v2 && !all) {
      const first = this.#find(iova, 1n);
      if (first !== undefined && first.iova !== iova) fail('EINVAL');
      const last = this.#find(iova + size - 1n, 0n);
      if (last !== undefined && last.iova + last.size !== iova + size) fail('EINVAL');
    }
    const end = all ? U64_MAX + 1n : iova + size;
    const hit = this.#dmas.filter((d) => d.iova < end && d.iova + d.size > iova);
    // v1 stops at the first mapping that starts before the request.
    const stop = this.v2 ? -1 : hit.findIndex((d) => iova > d.iova);
    if (stop >= 0) hit.length = stop;
    let unmapped = 0n;
    if ((flags & VFIO_DMA_UNMAP_FLAG_VADDR) !== 0) {
      // All or nothing: one already-invalid mapping undoes the whole request.
      if (hit.some((d) => d.vaddrInvalid)) fail('EINVAL');
      for (const d of hit) {
        d.vaddrInvalid = true;
        unmapped += d.size;
      }
      return unmapped;
    }
    for (const dma of hit) {
      if ((flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) !== 0) this.#updateUserBitmap(bitmap.data, dma, iova, pg);
      unmapped += dma.size;
      this.#dmas.splice(this.#dmas.indexOf(dma), 1);
      this.dmaAvail++;
    }
    return unmapped;
  }

  #dirtyPages(arg: IoctlArg): number {
    if (!this.v2) fail('EACCES');
    const minsz = vfio_iommu_type1_dirty_bitmap.size;
    const buf = userBuf(arg, minsz);
    const d = decode(vfio_iommu_type1_dirty_bitmap, buf);
    const mask = VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP | VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
    if (d.argsz < minsz || (d.flags & ~mask) !== 0) fail('EINVAL');
    // Exactly one flag (the kernel's __ffs == __fls, which also rejects 0 through the final EINVAL).
    if (d.flags === 0 || (d.flags & (d.flags - 1)) !== 0) fail('EINVAL');
    const pg = this.#pgsize();
    if (d.flags === VFIO_IOMMU_DIRTY_PAGES_FLAG_START) {
      if (!this.dirtyTracking) {
        for (const dma of this.#dmas) {
          dma.bitmap = new Uint8Array(Number(dirtyBitmapBytes(dma.size / pg)));
          this.#populate(dma, pg);
        }
        this.dirtyTracking = true;
      }
      return 0;
    }
    if (d.flags === VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP) {
      if (this.dirtyTracking) {
        this.dirtyTracking = false;
        for (const dma of this.#dmas) dma.bitmap = null;
      }
      return 0;
    }
    const dataSize = d.argsz - minsz;
    if (dataSize < vfio_iommu_type1_dirty_bitmap_get.size) fail('EINVAL');
    const range = decode(vfio_iommu_type1_dirty_bitmap_get, userBuf(arg, minsz + vfio_iommu_type1_dirty_bitmap_get.size), minsz);
    const bm = { pgsize: range['bitmap.pgsize'], size: range['bitmap.size'], data: range['bitmap.data'] };
    if (range.iova + range.size > U64_MAX) fail('EINVAL');
    if (!this.memory.isMapped(bm.data, Number(bm.size))) fail('EINVAL');
    verifyBitmapSize(range.size >> ffs(bm.pgsize), bm.size);
    if (bm.pgsize !== pg) fail('EINVAL');
    if ((range.iova & (pg - 1n)) !== 0n) fail('EINVAL');
    if (range.size === 0n || (range.size & (pg - 1n)) !== 0n) fail('EINVAL');
    if (!this.dirtyTracking) fail('EINVAL');
    // vfio_iova_dirty_bitmap: the range must not bisect a mapping.
    const first = this.#find(range.iova, 1n);
    if (first !== undefined && first.iova !== range.iova) fail('EINVAL');
    const last = this.#find(range.iova + range.size - 1n, 0n);
    if (last !== undefined && last.iova + last.size !== range.iova + range.size) fail('EINVAL');
    for (const dma of this.#dmas) {
      if (dma.iova < range.iova) continue;
      if (dma.iova > range.iova + range.size - 1n) break;
      this.#updateUserBitmap(bm.data, dma, range.iova, pg);
      dma.bitmap?.fill(0);
      this.#populate(dma, pg);
    }
    return 0;
  }

  /** `update_user_bitmap`: writes the mapping's bits at their offset from `base`; the first word is ORed with what the user had. */
  #updateUserBitmap(userAddr: bigint, dma: Dma, base: bigint, pg: bigint): void {
    const shiftBits = ffs(pg);
    const nbits = dma.size >> shiftBits;
    const bitOffset = (dma.iova - base) >> shiftBits;
    const copyOffset = bitOffset / 64n;
    const shift = bitOffset % 64n;
    const own = dma.bitmap ?? new Uint8Array(Number(dirtyBitmapBytes(nbits)));
    if (this.nonPinnedGroups > 0 && dma.iommuMapped) setBits(own, 0n, nbits);
    const words = Number(dirtyBitmapBytes(nbits + shift) / 8n);
    const out = this.memory.resolve(userAddr + copyOffset * 8n, words * 8);
    const odv = dataView(out);
    const idv = dataView(own);
    const ownWord = (w: number): bigint => (w >= 0 && w * 8 < own.byteLength ? idv.getBigUint64(w * 8, true) : 0n);
    for (let w = 0; w < words; w++) {
      let v = shift === 0n ? ownWord(w) : ((ownWord(w) << shift) | (ownWord(w - 1) >> (64n - shift))) & U64_MAX;
      if (w === 0 && shift !== 0n) v |= odv.getBigUint64(0, true);
      odv.setBigUint64(w * 8, v, true);
    }
  }

  #populate(dma: Dma, pg: bigint): void {
    const bm = dma.bitmap;
    if (bm === null) return;
    for (const at of dma.pinned) setBits(bm, (at - dma.iova) / pg, 1n);
  }

  #markDirty(dma: Dma, at: bigint, length: bigint): void {
    if (!this.dirtyTracking || dma.bitmap === null) return;
    const pg = this.#pgsize();
    const first = (at - dma.iova) / pg;
    const last = (at + length - 1n - dma.iova) / pg;
    setBits(dma.bitmap, first, last - first + 1n);
  }

  #pgsize(): bigint {
    return 1n << ffs(this.pgsizeBitmap);
  }

  #hasDomain(exceptGroup?: number): boolean {
    return this.#groups.some((g) => g.group.domain !== null && g.group.id !== exceptGroup);
  }

  #iovaValid(start: bigint, end: bigint): boolean {
    if (this.#iovaRanges.length === 0) return true;
    return this.#iovaRanges.some((r) => start >= r.start && end <= r.end);
  }

  /** `vfio_find_dma`: a mapping overlapping `[start, start + size)`, with the kernel's size-0 quirk. */
  #find(start: bigint, size: bigint): Dma | undefined {
    let lo = 0;
    let hi = this.#dmas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const d = this.#dmas[mid];
      if (d === undefined) break;
      if (start + size <= d.iova) hi = mid - 1;
      else if (start >= d.iova + d.size) lo = mid + 1;
      else return d;
    }
    return undefined;
  }

  #lowerBound(iova: bigint): number {
    let lo = 0;
    let hi = this.#dmas.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const d = this.#dmas[mid];
      if (d !== undefined && d.iova + d.size <= iova) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

function verifyBitmapSize(npages: bigint, bitmapSize: bigint): void {
  if (npages === 0n || bitmapSize === 0n || bitmapSize > DIRTY_BITMAP_SIZE_MAX || bitmapSize < dirtyBitmapBytes(npages)) fail('EINVAL');
}

function setBits(bm: Uint8Array, first: bigint, count: bigint): void {
  for (let b = first; b < first + count; b++) {
    const i = Number(b >> 3n);
    bm[i] = (bm[i] ?? 0) | (1 << Number(b & 7n));
  }
}

function intersect(a: readonly { start: bigint; end: bigint }[], b: readonly { start: bigint; end: bigint }[]): { start: bigint; end: bigint }[] {
  const out: { start: bigint; end: bigint }[] = [];
  for (const x of a) {
    for (const y of b) {
      const start = x.start > y.start ? x.start : y.start;
      const end = x.end < y.end ? x.end : y.end;
      if (start <= end) out.push({ start, end });
    }
  }
  return out;
}
