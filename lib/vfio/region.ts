/**
 * A device region (a BAR, PCI config space, a device-specific region): its
 * info and capabilities, register access at natural widths, bulk access, and
 * mmap of the whole region or of its sparse areas.
 *
 * Accesses that fall inside a mapped area go straight to the mapping; the
 * rest go through the kernel with pread/pwrite at `info.offset + offset`, as
 * QEMU does for trapped parts of a BAR.
 *
 * The mapped areas follow a layout that can change under a mapped region:
 * {@link Region.refresh} re-reads the capabilities, and
 * {@link Region.relayout} switches between the normal layout and the
 * saving layout of vfio-ts's opt-in extension (`uapi/extensions.ts`). Both
 * re-map in place: areas that stay are kept (their objects stay valid),
 * areas that go are unmapped and their objects revoked, new ones are mapped.
 */
import { UapiFormatError, VfioArgumentError, VfioClosedError } from '../errors.js';
import { PROT_READ, PROT_WRITE } from '../sys/sys.js';
import { syscall, ioctl, type IoctlTarget } from './ioctl.js';
import { MappedArea } from './mapped-area.js';
import { queryWithCaps } from './uapi/caps.js';
import { VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE } from './uapi/constants.js';
import { decodeSavingLayout } from './uapi/extensions.js';
import { decodeRegionInfo, type RegionInfo, type SparseArea } from './uapi/info.js';
import { VFIO_DEVICE_GET_REGION_INFO } from './uapi/ioctls.js';
import { dataView } from './uapi/layout.js';
import { vfio_region_info } from './uapi/structs.js';

/** `VFIO_DEVICE_GET_REGION_INFO` for `index`, with the capability chain (argsz re-query included). */
export function queryRegionInfo(device: IoctlTarget, index: number): RegionInfo {
  const buf = queryWithCaps(
    vfio_region_info.size,
    (b) => dataView(b).setUint32(8, index, true),
    (b) => ioctl(device, VFIO_DEVICE_GET_REGION_INFO, b),
    vfio_region_info.name,
  );
  return decodeRegionInfo(buf);
}

/** Natural access widths in bytes. */
export type AccessWidth = 1 | 2 | 4 | 8;

/**
 * Which layout a region's mappings follow: `'normal'` (SPARSE_MMAP, or the
 * whole region) or `'saving'` (the saving layout, while the device is in a
 * saving state; the normal one for a region without that capability).
 */
export type RegionLayoutMode = 'normal' | 'saving';

export class Region {
  #info: RegionInfo;
  #saving: readonly SparseArea[] | undefined;
  #mode: RegionLayoutMode = 'normal';
  #areas: MappedArea[] = [];
  /** Set by mmap() until unmap(): the mappings then follow every layout change, even through an empty layout. */
  #mapped = false;
  #closed = false;
  /** The region's fd offset as a number when exact (fast path), else as a bigint. */
  #base: number | bigint;
  readonly #scratch = new Uint8Array(8);
  readonly #dv = dataView(this.#scratch);

  constructor(
    private readonly device: IoctlTarget,
    info: RegionInfo,
  ) {
    this.#info = info;
    this.#saving = decodeSavingLayout(info, device.sys.pageSize);
    this.#base = exactOffset(info);
  }

  get info(): RegionInfo {
    return this.#info;
  }
  get index(): number {
    return this.#info.index;
  }
  /** Size in bytes; 0 for a region the device does not implement. */
  get size(): number {
    return this.#info.size;
  }
  get readable(): boolean {
    return (this.#info.flags & VFIO_REGION_INFO_FLAG_READ) !== 0;
  }
  get writable(): boolean {
    return (this.#info.flags & VFIO_REGION_INFO_FLAG_WRITE) !== 0;
  }
  get mmappable(): boolean {
    return (this.#info.flags & VFIO_REGION_INFO_FLAG_MMAP) !== 0;
  }
  /** The currently mapped areas (empty until {@link Region.mmap}). */
  get areas(): readonly MappedArea[] {
    return this.#areas;
  }

  /** True once {@link Region.close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** True between {@link Region.mmap} and {@link Region.unmap} (the areas may be empty in a saving layout). */
  get mapped(): boolean {
    return this.#mapped;
  }

  /**
   * The areas that may stay mmapped while the device is in a saving state
   * (vfio-ts's saving-layout capability); undefined for a region without one.
   */
  get savingLayout(): readonly SparseArea[] | undefined {
    return this.#saving;
  }

  /** The layout the mappings follow now. */
  get layoutMode(): RegionLayoutMode {
    return this.#mode;
  }

  /**
   * The parts of the region that may be mmapped in `mode` (default: the
   * current one). Normal: the sparse areas when the region has a SPARSE_MMAP
   * capability, else the whole region if it is mmap-able, else none. Saving:
   * the saving layout, or the normal one when the region has none.
   */
  mmapLayout(mode: RegionLayoutMode = this.#mode): readonly SparseArea[] {
    if (!this.mmappable) return [];
    if (mode === 'saving' && this.#saving !== undefined) return this.#saving;
    return this.#info.sparse ?? [{ offset: 0, size: this.size }];
  }

  read8(offset: number): number {
    return this.#read(offset, 1, (a, o) => a.read8(o), () => this.#dv.getUint8(0));
  }
  read16(offset: number): number {
    return this.#read(offset, 2, (a, o) => a.read16(o), () => this.#dv.getUint16(0, true));
  }
  read32(offset: number): number {
    return this.#read(offset, 4, (a, o) => a.read32(o), () => this.#dv.getUint32(0, true));
  }
  read64(offset: number): bigint {
    return this.#read(offset, 8, (a, o) => a.read64(o), () => this.#dv.getBigUint64(0, true));
  }
  write8(offset: number, value: number): void {
    this.#write(offset, 1, (a, o) => a.write8(o, value), () => this.#dv.setUint8(0, value));
  }
  write16(offset: number, value: number): void {
    this.#write(offset, 2, (a, o) => a.write16(o, value), () => this.#dv.setUint16(0, value, true));
  }
  write32(offset: number, value: number): void {
    this.#write(offset, 4, (a, o) => a.write32(o, value), () => this.#dv.setUint32(0, value >>> 0, true));
  }
  write64(offset: number, value: bigint): void {
    this.#write(offset, 8, (a, o) => a.write64(o, value), () => this.#dv.setBigUint64(0, BigInt.asUintN(64, value), true));
  }

  /** Reads `length` bytes at `offset` (through a mapping when one covers them, else one pread). */
  readBytes(offset: number, length: number): Uint8Array {
    this.#check(offset, length);
    const area = this.#areaFor(offset, length);
    if (area) return area.copyOut(offset - area.offset, length);
    const out = new Uint8Array(length);
    this.#pread(out, offset);
    return out;
  }

  /** Writes `data` at `offset` (through a mapping when one covers it, else one pwrite). */
  writeBytes(offset: number, data: Uint8Array): void {
    this.#check(offset, data.byteLength);
    const area = this.#areaFor(offset, data.byteLength);
    if (area) area.copyIn(offset - area.offset, data);
    else this.#pwrite(data, offset);
  }

  /**
   * Maps every mmap-able part of the region in the current layout
   * ({@link Region.mmapLayout}) and returns the areas. From then on the
   * mappings follow {@link Region.refresh} and {@link Region.relayout}.
   * Idempotent while mapped.
   * @throws VfioArgumentError when the region cannot be mmapped at all
   */
  mmap(): readonly MappedArea[] {
    this.#open();
    if (this.#mapped) return this.#areas;
    if (this.mmapLayout('normal').length === 0) throw new VfioArgumentError(`mmap region ${this.index}`, `region ${this.index} of ${this.device.label} is not mmap-able`);
    this.#mapped = true;
    try {
      this.#apply();
    } catch (e) {
      this.unmap();
      throw e;
    }
    return this.#areas;
  }

  /**
   * Unmaps every area; their objects raise MappingRevokedError from then on. Idempotent.
   * @throws VfioSystemError when a munmap fails, after every area was revoked and the others unmapped
   */
  unmap(): void {
    const areas = this.#areas;
    this.#areas = [];
    this.#mapped = false;
    unmapAll(areas);
  }

  /**
   * Re-reads the region info (its capabilities may have changed) and, if the
   * region is mapped, re-maps in place in the current layout mode: areas that
   * are gone are unmapped (and their objects revoked), new ones are mapped,
   * unchanged ones are kept.
   * @returns the new info
   * @throws UapiFormatError for a malformed reply; the mappings are then unchanged
   * @throws VfioSystemError when an mmap fails; the areas mapped so far stay mapped, the rest goes through pread/pwrite.
   *   Also when a munmap fails, after every area that left the layout was revoked
   */
  refresh(): RegionInfo {
    this.#open();
    const info = queryRegionInfo(this.device, this.index);
    const saving = decodeSavingLayout(info, this.device.sys.pageSize);
    this.#info = info;
    this.#saving = saving;
    this.#base = exactOffset(info);
    this.#apply();
    return info;
  }

  /**
   * Switches the mappings to the layout of `mode` (see {@link RegionLayoutMode})
   * and re-maps in place, synchronously: when this returns, no mapping
   * outside the new layout is left, and accesses there go through
   * pread/pwrite. An unmapped region only records the mode: a later
   * {@link Region.mmap} follows it.
   * @throws VfioSystemError when an mmap fails (the narrowing part always
   *   happens first, so the areas left mapped are within the new layout), or
   *   a munmap (every area that left the layout is revoked all the same)
   */
  relayout(mode: RegionLayoutMode): void {
    this.#open();
    this.#mode = mode;
    this.#apply();
  }

  /** Unmaps the region; the object is unusable afterwards. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.unmap();
  }

  /**
   * Makes the mapped areas match {@link Region.mmapLayout} when the region
   * is mapped: unmaps what the layout no longer has first (so a failure
   * later never leaves a forbidden mapping), keeps what it still has, maps
   * what is new. An area counts as the same only with the same offset and size.
   */
  #apply(): void {
    if (!this.#mapped) return;
    const want = this.mmapLayout();
    const same = (a: MappedArea, w: SparseArea): boolean => a.offset === w.offset && a.size === w.size;
    const keep = this.#areas.filter((a) => want.some((w) => same(a, w)));
    const gone = this.#areas.filter((a) => !keep.includes(a));
    this.#areas = keep;
    unmapAll(gone);
    for (const w of want) {
      if (keep.some((a) => same(a, w))) continue;
      this.#areas = [...this.#areas, this.#mapArea(w)].sort((x, y) => x.offset - y.offset);
    }
  }

  #mapArea(a: SparseArea): MappedArea {
    const prot = (this.readable ? PROT_READ : 0) | (this.writable ? PROT_WRITE : 0);
    const label = `${this.device.label} region ${this.index} area @0x${a.offset.toString(16)}`;
    const offset = typeof this.#base === 'number' ? this.#base + a.offset : this.#base + BigInt(a.offset);
    const mapping = syscall(this.device, `mmap region ${this.index}`, () => this.device.sys.mmap(this.device.fd, a.size, prot, offset));
    return new MappedArea(a.offset, a.size, mapping, label);
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`${this.device.label} region ${this.index}`);
  }

  #check(offset: number, length: number): void {
    this.#open();
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new VfioArgumentError(
        `access region ${this.index}`,
        `[${offset}, +${length}) is outside the ${this.size}-byte region ${this.index} of ${this.device.label}`,
      );
    }
  }

  #areaFor(offset: number, length: number): MappedArea | undefined {
    for (const a of this.#areas) if (a.covers(offset, length)) return a;
    return undefined;
  }

  #read<T>(offset: number, width: AccessWidth, viaArea: (a: MappedArea, o: number) => T, fromScratch: () => T): T {
    this.#check(offset, width);
    const area = this.#areaFor(offset, width);
    if (area && offset % width === 0) return viaArea(area, offset - area.offset);
    this.#pread(this.#scratch.subarray(0, width), offset);
    return fromScratch();
  }

  #write(offset: number, width: AccessWidth, viaArea: (a: MappedArea, o: number) => void, toScratch: () => void): void {
    this.#check(offset, width);
    const area = this.#areaFor(offset, width);
    if (area && offset % width === 0) {
      viaArea(area, offset - area.offset);
      return;
    }
    toScratch();
    this.#pwrite(this.#scratch.subarray(0, width), offset);
  }

  #pread(buf: Uint8Array, offset: number): void {
    const at = typeof this.#base === 'number' ? this.#base + offset : this.#base + BigInt(offset);
    const n = syscall(this.device, `read region ${this.index}`, () => this.device.sys.pread(this.device.fd, buf, at));
    if (n !== buf.byteLength) throw new UapiFormatError(`short read: ${n} of ${buf.byteLength} bytes at ${offset}`, `${this.device.label} region ${this.index}`);
  }

  #pwrite(buf: Uint8Array, offset: number): void {
    const at = typeof this.#base === 'number' ? this.#base + offset : this.#base + BigInt(offset);
    const n = syscall(this.device, `write region ${this.index}`, () => this.device.sys.pwrite(this.device.fd, buf, at));
    if (n !== buf.byteLength) throw new UapiFormatError(`short write: ${n} of ${buf.byteLength} bytes at ${offset}`, `${this.device.label} region ${this.index}`);
  }
}

/**
 * Unmaps every area even when one fails (an area that fails is revoked all
 * the same), then throws the first failure: stopping at it would leave the
 * rest mapped and usable though the region no longer lists them.
 */
function unmapAll(areas: readonly MappedArea[]): void {
  let failure: unknown;
  for (const a of areas) {
    try {
      a.unmap();
    } catch (e) {
      failure ??= e;
    }
  }
  if (failure !== undefined) throw failure;
}

function exactOffset(info: RegionInfo): number | bigint {
  return info.offset + BigInt(info.size) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(info.offset) : info.offset;
}
