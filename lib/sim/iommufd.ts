/**
 * The simulated iommufd (`/dev/iommu`, drivers/iommu/iommufd in Linux 6.12):
 * the ioctl dispatch with its size rules (`copy_struct_from_user`: EINVAL
 * below the minimum size, E2BIG for non-zero bytes past the struct), IOAS
 * allocation, map and unmap with the io_pagetable checks, HWPT allocation
 * with DIRTY_TRACKING, dirty tracking on and off, the dirty bitmap with
 * NO_CLEAR, GET_HW_INFO, DESTROY and the device side (bind, attach, DMA
 * through the attached HWPT, which sets IOPTE dirty bits while tracking).
 *
 * Not simulated (EOPNOTSUPP): IOAS_ALLOW_IOVAS, IOAS_COPY, OPTION, VFIO_IOAS,
 * HWPT_INVALIDATE, FAULT_QUEUE_ALLOC, nested HWPTs and the VFIO compat ioctls.
 */
import { dataView, decode, encode, type StructLayout } from '../vfio/uapi/layout.js';
import {
  IOMMUFD_CMD_BASE,
  IOMMUFD_TYPE,
  IOMMU_DESTROY,
  IOMMU_FAULT_QUEUE_ALLOC,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HWPT_ALLOC_NEST_PARENT,
  IOMMU_HWPT_DATA_NONE,
  IOMMU_HWPT_DIRTY_TRACKING_ENABLE,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
  IOMMU_HWPT_INVALIDATE,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_HW_INFO_TYPE_INTEL_VTD,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_ALLOW_IOVAS,
  IOMMU_IOAS_COPY,
  IOMMU_IOAS_IOVA_RANGES,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_MAP_WRITEABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_OPTION,
  IOMMU_VFIO_IOAS,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_iova_ranges,
  iommu_ioas_map,
  iommu_ioas_unmap,
} from '../vfio/uapi/iommufd.js';
import { fail, userBuf } from './errno.js';
import type { FileOps, IoctlArg } from './file.js';
import type { SimMemory } from './memory.js';
import type { SimIommuDomain } from './type1.js';

const PAGE = 4096n;
const ULONG_MAX = (1n << 64n) - 1n;
/** `sizeof(struct iommu_hw_info_vtd)`: the driver data GET_HW_INFO reports for VT-d. */
const VTD_INFO_BYTES = 16;

/** The IOMMU behind a device bound to iommufd. */
export interface SimIommufdDomain extends SimIommuDomain {
  /** The IOMMU supports dirty tracking (`IOMMU_CAP_DIRTY_TRACKING`). */
  readonly dirtyTracking: boolean;
}

interface Area {
  readonly iova: bigint;
  readonly length: bigint;
  readonly vaddr: bigint;
  readonly writable: boolean;
  readonly readable: boolean;
}

interface Ioas {
  readonly type: 'ioas';
  readonly id: number;
  /** Sorted by IOVA, never overlapping. */
  readonly areas: Area[];
  /** Reserved IOVA ranges (inclusive), added by attached domains. */
  readonly reserved: { start: bigint; last: bigint }[];
  alignment: bigint;
  users: number;
}

interface Hwpt {
  readonly type: 'hwpt';
  readonly id: number;
  readonly ioas: Ioas;
  readonly domain: SimIommufdDomain;
  /** Allocated with DIRTY_TRACKING: the domain has dirty ops. */
  readonly dirtyOps: boolean;
  /** Made by an attach to an IOAS rather than by HWPT_ALLOC. */
  readonly auto: boolean;
  tracking: boolean;
  /** IOVAs of 4 KiB IOPTEs whose dirty bit is set. */
  readonly dirty: Set<bigint>;
  users: number;
}

interface Idev {
  readonly type: 'device';
  readonly id: number;
  readonly domain: SimIommufdDomain;
  hwpt: Hwpt | null;
}

type Obj = Ioas | Hwpt | Idev;

interface Op {
  readonly layout: StructLayout;
  readonly minSize: number;
  run(cmd: Uint8Array, user: Uint8Array): void;
}

/** One open `/dev/iommu` (`struct iommufd_ctx`). */
export class SimIommufd implements FileOps {
  readonly kind = 'iommufd';
  readonly label = '/dev/iommu';
  readonly #objects = new Map<number, Obj>();
  readonly #ops: ReadonlyMap<number, Op>;

  constructor(private readonly memory: SimMemory) {
    const unsupported = (layout: StructLayout, minSize: number): Op => ({ layout, minSize, run: () => fail('EOPNOTSUPP') });
    this.#ops = new Map<number, Op>([
      [IOMMU_DESTROY, { layout: iommu_destroy, minSize: 8, run: (c) => this.#destroy(c) }],
      [IOMMU_IOAS_ALLOC, { layout: iommu_ioas_alloc, minSize: 12, run: (c, u) => this.#ioasAlloc(c, u) }],
      [IOMMU_IOAS_ALLOW_IOVAS, unsupported(iommu_ioas_alloc, 24)],
      [IOMMU_IOAS_COPY, unsupported(iommu_ioas_map, 40)],
      [IOMMU_IOAS_IOVA_RANGES, { layout: iommu_ioas_iova_ranges, minSize: 32, run: (c, u) => this.#iovaRanges(c, u) }],
      [IOMMU_IOAS_MAP, { layout: iommu_ioas_map, minSize: 40, run: (c, u) => this.#map(c, u) }],
      [IOMMU_IOAS_UNMAP, { layout: iommu_ioas_unmap, minSize: 24, run: (c, u) => this.#unmap(c, u) }],
      [IOMMU_OPTION, unsupported(iommu_ioas_unmap, 24)],
      [IOMMU_VFIO_IOAS, unsupported(iommu_ioas_alloc, 12)],
      [IOMMU_HWPT_ALLOC, { layout: iommu_hwpt_alloc, minSize: 24, run: (c, u) => this.#hwptAlloc(c, u) }],
      [IOMMU_GET_HW_INFO, { layout: iommu_hw_info, minSize: 32, run: (c, u) => this.#hwInfo(c, u) }],
      [IOMMU_HWPT_SET_DIRTY_TRACKING, { layout: iommu_hwpt_set_dirty_tracking, minSize: 16, run: (c) => this.#setDirty(c) }],
      [IOMMU_HWPT_GET_DIRTY_BITMAP, { layout: iommu_hwpt_get_dirty_bitmap, minSize: 48, run: (c) => this.#getDirty(c) }],
      [IOMMU_HWPT_INVALIDATE, unsupported(iommu_hw_info, 32)],
      [IOMMU_FAULT_QUEUE_ALLOC, unsupported(iommu_hwpt_set_dirty_tracking, 16)],
    ]);
  }

  /** `iommufd_fops_ioctl`. */
  ioctl(request: number, arg: IoctlArg): number {
    const nr = request & 0xff;
    const op = this.#ops.get(request);
    // Outside the table goes to the VFIO compat layer, which knows nothing else: -ENOIOCTLCMD, ENOTTY to the user.
    if (((request >> 8) & 0xff) !== IOMMUFD_TYPE || nr < IOMMUFD_CMD_BASE || op === undefined) fail('ENOTTY');
    const user = userBuf(arg, 4);
    const userSize = dataView(user).getUint32(0, true);
    if (userSize < op.minSize) fail('EINVAL');
    if (user.byteLength < Math.min(userSize, op.layout.size)) fail('EFAULT');
    // copy_struct_from_user: bytes the kernel does not know must be zero.
    if (userSize > op.layout.size && user.subarray(op.layout.size, userSize).some((b) => b !== 0)) fail('E2BIG');
    const cmd = new Uint8Array(op.layout.size);
    cmd.set(user.subarray(0, Math.min(userSize, op.layout.size)));
    op.run(cmd, user);
    return 0;
  }

  /** Releasing the fd destroys every object. */
  release(): void {
    this.#objects.clear();
  }

  // ------------------------------------------------------------ device side (vfio cdev)

  /** `iommufd_device_bind`: a device joins the context; returns its `devid`. */
  bindDevice(domain: SimIommufdDomain): number {
    const id = this.#newId();
    this.#objects.set(id, { type: 'device', id, domain, hwpt: null });
    return id;
  }

  /** `iommufd_device_unbind`: detaches and forgets the device. */
  unbindDevice(devId: number): void {
    this.detach(devId);
    this.#objects.delete(devId);
  }

  /**
   * `iommufd_device_attach`: attaches device `devId` to `ptId`, a HWPT or an
   * IOAS (for which a HWPT without dirty tracking is found or made). Returns
   * the HWPT id, which the kernel writes back into `pt_id`.
   */
  attach(devId: number, ptId: number): number {
    const idev = this.#get(devId, 'device');
    const pt = this.#objects.get(ptId);
    if (pt === undefined) fail('ENOENT');
    let hwpt: Hwpt;
    if (pt.type === 'hwpt') hwpt = pt;
    else if (pt.type === 'ioas') {
      hwpt = [...this.#objects.values()].find((o): o is Hwpt => o.type === 'hwpt' && o.auto && o.ioas === pt) ?? this.#addHwpt(pt, idev.domain, false, true);
    } else fail('EINVAL');
    if (idev.hwpt === hwpt) return hwpt.id;
    this.#reserveFor(hwpt.ioas, idev.domain);
    this.detach(devId);
    idev.hwpt = hwpt;
    hwpt.users++;
    return hwpt.id;
  }

  /** `iommufd_device_detach`. */
  detach(devId: number): void {
    const idev = this.#get(devId, 'device');
    if (idev.hwpt === null) return;
    const hwpt = idev.hwpt;
    idev.hwpt = null;
    hwpt.users--;
    if (hwpt.auto && hwpt.users === 0) this.#removeHwpt(hwpt);
  }

  /**
   * Device DMA through the attached HWPT: the user memory behind
   * `[iova, iova + length)` (one area). A write sets the dirty bit of every
   * IOPTE it touches while dirty tracking is on, as the IOMMU does.
   */
  translate(devId: number, iova: bigint, length: number, write: boolean): Uint8Array {
    const hwpt = this.#get(devId, 'device').hwpt;
    if (hwpt === null) fail('EFAULT');
    const end = iova + BigInt(length);
    const area = hwpt.ioas.areas.find((a) => iova >= a.iova && end <= a.iova + a.length);
    if (area === undefined) fail('EFAULT');
    if (!(write ? area.writable : area.readable)) fail('EPERM');
    if (write && hwpt.tracking) for (let p = iova - (iova % PAGE); p < end; p += PAGE) hwpt.dirty.add(p);
    return this.memory.resolve(area.vaddr + (iova - area.iova), length);
  }

  // ------------------------------------------------------------ ioctls

  #destroy(cmd: Uint8Array): void {
    const { id } = decode(iommu_destroy, cmd);
    const obj = this.#objects.get(id);
    if (obj === undefined) fail('ENOENT');
    // Devices are owned by VFIO, IOAS by their HWPTs, HWPTs by their devices.
    if (obj.type === 'device' || obj.users > 0) fail('EBUSY');
    if (obj.type === 'hwpt') this.#removeHwpt(obj);
    else this.#objects.delete(id);
  }

  #ioasAlloc(cmd: Uint8Array, user: Uint8Array): void {
    const c = decode(iommu_ioas_alloc, cmd);
    if (c.flags !== 0) fail('EOPNOTSUPP');
    const id = this.#newId();
    this.#objects.set(id, { type: 'ioas', id, areas: [], reserved: [], alignment: 1n, users: 0 });
    respond(iommu_ioas_alloc, encode(iommu_ioas_alloc, { out_ioas_id: id }, cmd), user);
  }

  #iovaRanges(cmd: Uint8Array, user: Uint8Array): void {
    const c = decode(iommu_ioas_iova_ranges, cmd);
    if (c.__reserved !== 0) fail('EOPNOTSUPP');
    const ioas = this.#get(c.ioas_id, 'ioas');
    const holes = holesOf(ioas.reserved);
    holes.slice(0, c.num_iovas).forEach((h, i) => {
      const out = this.memory.resolve(c.allowed_iovas + BigInt(16 * i), 16);
      dataView(out).setBigUint64(0, h.start, true);
      dataView(out).setBigUint64(8, h.last, true);
    });
    respond(iommu_ioas_iova_ranges, encode(iommu_ioas_iova_ranges, { num_iovas: holes.length, out_iova_alignment: ioas.alignment }, cmd), user);
    if (holes.length > c.num_iovas) fail('EMSGSIZE');
  }

  #map(cmd: Uint8Array, user: Uint8Array): void {
    const c = decode(iommu_ioas_map, cmd);
    const known = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE;
    if ((c.flags & ~known) !== 0 || c.__reserved !== 0) fail('EOPNOTSUPP');
    if (c.iova >= ULONG_MAX || c.length >= ULONG_MAX) fail('EOVERFLOW');
    if ((c.flags & (IOMMU_IOAS_MAP_WRITEABLE | IOMMU_IOAS_MAP_READABLE)) === 0) fail('EINVAL');
    const ioas = this.#get(c.ioas_id, 'ioas');
    // iopt_map_user_pages pins the memory: it must be there.
    if (c.length === 0n || !this.memory.isMapped(c.user_va, Number(c.length))) fail(c.length === 0n ? 'EINVAL' : 'EFAULT');
    if (c.length % ioas.alignment !== 0n) fail('EINVAL');
    let iova = c.iova;
    if ((c.flags & IOMMU_IOAS_MAP_FIXED_IOVA) === 0) iova = allocIova(ioas, c.user_va, c.length);
    else checkIova(ioas, iova, c.length);
    // iopt_insert_area: the offset into the first page must keep the IOVA alignment.
    if ((c.user_va % PAGE) % ioas.alignment !== 0n) fail('EINVAL');
    const area: Area = {
      iova,
      length: c.length,
      vaddr: c.user_va,
      writable: (c.flags & IOMMU_IOAS_MAP_WRITEABLE) !== 0,
      readable: (c.flags & IOMMU_IOAS_MAP_READABLE) !== 0,
    };
    ioas.areas.push(area);
    ioas.areas.sort((a, b) => (a.iova < b.iova ? -1 : 1));
    respond(iommu_ioas_map, encode(iommu_ioas_map, { iova }, cmd), user);
  }

  #unmap(cmd: Uint8Array, user: Uint8Array): void {
    const c = decode(iommu_ioas_unmap, cmd);
    const ioas = this.#get(c.ioas_id, 'ioas');
    let unmapped = 0n;
    if (c.iova === 0n && c.length === ULONG_MAX) {
      // iopt_unmap_all: the reply is the bytes unmapped (0 for an empty IOAS, which is no error).
      for (const a of ioas.areas.splice(0)) {
        this.#dropArea(ioas, a);
        unmapped += a.length;
      }
    } else {
      if (c.iova >= ULONG_MAX || c.length >= ULONG_MAX) fail('EOVERFLOW');
      if (c.length === 0n) fail('EINVAL');
      const last = c.iova + c.length - 1n;
      if (last > ULONG_MAX) fail('EOVERFLOW');
      // iopt_unmap_iova_range: whole areas in IOVA order; a bisected one stops the walk with ENOENT.
      for (const a of ioas.areas.filter((x) => x.iova <= last && x.iova + x.length - 1n >= c.iova)) {
        if (a.iova < c.iova || a.iova + a.length - 1n > last) fail('ENOENT');
        ioas.areas.splice(ioas.areas.indexOf(a), 1);
        this.#dropArea(ioas, a);
        unmapped += a.length;
      }
      if (unmapped === 0n) fail('ENOENT');
    }
    respond(iommu_ioas_unmap, encode(iommu_ioas_unmap, { length: unmapped }, cmd), user);
  }

  #hwptAlloc(cmd: Uint8Array, user: Uint8Array): void {
    const c = decode(iommu_hwpt_alloc, cmd);
    if (c.__reserved !== 0) fail('EOPNOTSUPP');
    if ((c.data_type === IOMMU_HWPT_DATA_NONE) !== (c.data_len === 0)) fail('EINVAL');
    const idev = this.#get(c.dev_id, 'device');
    const pt = this.#objects.get(c.pt_id);
    if (pt === undefined) fail('EINVAL');
    // A HWPT as parent asks for a nested one, which is not simulated.
    if (pt.type !== 'ioas') fail(pt.type === 'hwpt' ? 'EOPNOTSUPP' : 'EINVAL');
    if ((c.flags & ~(IOMMU_HWPT_ALLOC_NEST_PARENT | IOMMU_HWPT_ALLOC_DIRTY_TRACKING)) !== 0 || c.data_len !== 0) fail('EOPNOTSUPP');
    const dirty = (c.flags & IOMMU_HWPT_ALLOC_DIRTY_TRACKING) !== 0;
    if (dirty && !idev.domain.dirtyTracking) fail('EOPNOTSUPP');
    const hwpt = this.#addHwpt(pt, idev.domain, dirty, false);
    respond(iommu_hwpt_alloc, encode(iommu_hwpt_alloc, { out_hwpt_id: hwpt.id }, cmd), user);
  }

  #hwInfo(cmd: Uint8Array, user: Uint8Array): void {
    const c = decode(iommu_hw_info, cmd);
    if (c.flags !== 0 || cmd.subarray(29, 32).some((b) => b !== 0)) fail('EOPNOTSUPP');
    const idev = this.#get(c.dev_id, 'device');
    const copy = Math.min(c.data_len, VTD_INFO_BYTES);
    // The VT-d cap and ecap registers: zeros here; bytes past ours are cleared, as the kernel does.
    if (c.data_len > 0) this.memory.resolve(c.data_uptr, c.data_len).fill(0, 0, Math.max(copy, c.data_len));
    const caps = idev.domain.dirtyTracking ? BigInt(IOMMU_HW_CAP_DIRTY_TRACKING) : 0n;
    encode(iommu_hw_info, { data_len: VTD_INFO_BYTES, out_data_type: IOMMU_HW_INFO_TYPE_INTEL_VTD, out_max_pasid_log2: 0, out_capabilities: caps }, cmd);
    respond(iommu_hw_info, cmd, user);
  }

  #setDirty(cmd: Uint8Array): void {
    const c = decode(iommu_hwpt_set_dirty_tracking, cmd);
    if ((c.flags & ~IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0) fail('EOPNOTSUPP');
    const hwpt = this.#get(c.hwpt_id, 'hwpt');
    if (!hwpt.dirtyOps) fail('EOPNOTSUPP');
    const enable = (c.flags & IOMMU_HWPT_DIRTY_TRACKING_ENABLE) !== 0;
    // iopt_set_dirty_tracking clears every IOPTE dirty bit before enabling: a clean snapshot.
    if (enable) hwpt.dirty.clear();
    hwpt.tracking = enable;
  }

  #getDirty(cmd: Uint8Array): void {
    const c = decode(iommu_hwpt_get_dirty_bitmap, cmd);
    if ((c.flags & ~IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) !== 0 || c.__reserved !== 0) fail('EOPNOTSUPP');
    const hwpt = this.#get(c.hwpt_id, 'hwpt');
    // iommufd_check_iova_range
    const align = hwpt.ioas.alignment;
    if (c.length === 0n) fail('EINVAL');
    const last = c.iova + c.length - 1n;
    if (last > ULONG_MAX) fail('EOVERFLOW');
    if (c.iova % align !== 0n || (last + 1n) % align !== 0n) fail('EINVAL');
    if (c.page_size === 0n) fail('EINVAL');
    if (c.iova % c.page_size !== 0n || (last + 1n) % c.page_size !== 0n) fail('EINVAL');
    if (!hwpt.dirtyOps) fail('EOPNOTSUPP');
    const npages = Number(c.length / c.page_size);
    // The bitmap is pinned page by page as bits are set; a bad pointer sets nothing.
    const bitmap = this.memory.isMapped(c.data, Math.ceil(npages / 64) * 8) ? this.memory.resolve(c.data, Math.ceil(npages / 64) * 8) : null;
    const clear = (c.flags & IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) === 0;
    // __iommu_read_and_clear_dirty walks contiguous areas; at a gap it stops with -EINVAL, which
    // 6.12's iommu_read_and_clear_dirty drops (its ret stays 0): the call succeeds, bits past the gap unread.
    let at = c.iova;
    for (const a of hwpt.ioas.areas) {
      if (a.iova + a.length <= at) continue;
      if (a.iova > at || at > last) break;
      const stop = a.iova + a.length - 1n < last ? a.iova + a.length - 1n : last;
      for (let p = at - (at % PAGE); p <= stop; p += PAGE) {
        if (!hwpt.dirty.has(p)) continue;
        if (clear) hwpt.dirty.delete(p);
        const bit = Number((p - c.iova) / c.page_size);
        if (bitmap !== null && bit >= 0 && bit < npages) bitmap[bit >> 3] = (bitmap[bit >> 3] ?? 0) | (1 << (bit & 7));
      }
      at = stop + 1n;
    }
  }

  // ------------------------------------------------------------ objects

  #newId(): number {
    let id = 1;
    while (this.#objects.has(id)) id++;
    return id;
  }

  #get<T extends Obj['type']>(id: number, type: T): Extract<Obj, { type: T }> {
    const obj = this.#objects.get(id);
    if (obj === undefined || obj.type !== type) fail('ENOENT');
    return obj as Extract<Obj, { type: T }>;
  }

  /** `iommufd_hwpt_paging_alloc` + `iopt_table_add_domain`. */
  #addHwpt(ioas: Ioas, domain: SimIommufdDomain, dirtyOps: boolean, auto: boolean): Hwpt {
    const pg = domain.pgsizeBitmap & -domain.pgsizeBitmap;
    const alignment = pg > ioas.alignment ? pg : ioas.alignment;
    if (alignment > PAGE) fail('EINVAL');
    if (ioas.areas.some((a) => a.iova % alignment !== 0n || a.length % alignment !== 0n)) fail('EADDRINUSE');
    ioas.alignment = alignment;
    const id = this.#newId();
    const hwpt: Hwpt = { type: 'hwpt', id, ioas, domain, dirtyOps, auto, tracking: false, dirty: new Set(), users: 0 };
    ioas.users++;
    this.#objects.set(id, hwpt);
    return hwpt;
  }

  #removeHwpt(hwpt: Hwpt): void {
    hwpt.ioas.users--;
    this.#objects.delete(hwpt.id);
  }

  /** `iopt_table_enforce_dev_resv_regions`: what the device's IOMMU cannot map becomes reserved. */
  #reserveFor(ioas: Ioas, domain: SimIommufdDomain): void {
    // The domain's usable ranges are the complement of what is reserved for it.
    const reserve = holesOf(domain.iovaRanges.map((r) => ({ start: r.start, last: r.end })));
    for (const r of reserve) {
      if (ioas.areas.some((a) => a.iova <= r.last && a.iova + a.length - 1n >= r.start)) fail('EADDRINUSE');
    }
    for (const r of reserve) if (!ioas.reserved.some((x) => x.start === r.start && x.last === r.last)) ioas.reserved.push(r);
  }

  #dropArea(ioas: Ioas, a: Area): void {
    // The IOPTEs go, and their dirty bits with them.
    for (const o of this.#objects.values()) {
      if (o.type !== 'hwpt' || o.ioas !== ioas) continue;
      for (let p = a.iova; p < a.iova + a.length; p += PAGE) o.dirty.delete(p);
    }
  }
}

/** The gaps between `ranges` (inclusive) over the whole 64-bit space. */
function holesOf(ranges: readonly { start: bigint; last: bigint }[]): { start: bigint; last: bigint }[] {
  const sorted = [...ranges].sort((a, b) => (a.start < b.start ? -1 : 1));
  const out: { start: bigint; last: bigint }[] = [];
  let at = 0n;
  for (const r of sorted) {
    if (r.start > at) out.push({ start: at, last: r.start - 1n });
    if (r.last + 1n > at) at = r.last + 1n;
    if (at > ULONG_MAX) return out;
  }
  out.push({ start: at, last: ULONG_MAX });
  return out;
}

/** `iopt_check_iova`. */
function checkIova(ioas: Ioas, iova: bigint, length: bigint): void {
  if (iova % ioas.alignment !== 0n) fail('EINVAL');
  const last = iova + length - 1n;
  if (last > ULONG_MAX) fail('EOVERFLOW');
  if (ioas.reserved.some((r) => r.start <= last && r.last >= iova)) fail('EINVAL');
  if (ioas.areas.some((a) => a.iova <= last && a.iova + a.length - 1n >= iova)) fail('EEXIST');
}

/** `iopt_alloc_iova`, simplified to first fit: the lowest free IOVA keeping the user address's page offset. */
function allocIova(ioas: Ioas, uva: bigint, length: bigint): bigint {
  const step = ioas.alignment > PAGE ? ioas.alignment : PAGE;
  const used = [...ioas.reserved, ...ioas.areas.map((a) => ({ start: a.iova, last: a.iova + a.length - 1n }))];
  for (const hole of holesOf(used)) {
    const iova = ((hole.start + step - 1n) / step) * step + (uva % PAGE);
    if (iova + length - 1n <= hole.last) return iova;
  }
  fail('ENOSPC');
}

/** `iommufd_ucmd_respond`: copies the command back, as much of it as the user's size covers. */
function respond(layout: StructLayout, cmd: Uint8Array, user: Uint8Array): void {
  const size = dataView(user).getUint32(0, true);
  user.set(cmd.subarray(0, Math.min(size, layout.size, user.byteLength)));
}
