/**
 * A VFIO container, `/dev/vfio/vfio`: the IOMMU context its groups share.
 * Checks the API version and IOMMU support, sets the IOMMU type when the
 * first group joins (type1v2 preferred, as QEMU), maps guest memory for DMA,
 * tracks the pages devices dirty (`VFIO_IOMMU_DIRTY_PAGES`, the rules in
 * type1-dirty.ts), reports mapping changes to listeners such as a dirty
 * tracker, and opens devices by sysfs path, PCI address or mdev UUID.
 */
import { attempt, throwCollected } from '../attempt.js';
import { DirtyTrackingError, UapiFormatError, VfioArgumentError, VfioClosedError } from '../errors.js';
import { libcSys } from '../sys/libc.js';
import { O_CLOEXEC, O_RDWR, type Sys } from '../sys/sys.js';
import type { VfioDevice } from './device.js';
import { kernelBitmapBytes } from './dirty-bitmap.js';
import { forgetMappings, resolveDmaMemory, type DmaMapping, type DmaMemory, type DmaRecord } from './dma-memory.js';
import { locateDevice } from './discovery.js';
import { VfioGroup } from './group.js';
import { ioctl, syscall, type IoctlTarget } from './ioctl.js';
import { queryWithCaps } from './uapi/caps.js';
import {
  checkType1Query,
  encodeDirtyBitmapGet,
  encodeDirtyPagesFlag,
  encodeUnmapWithBitmap,
  type Type1DirtyParams,
  type1DirtyParams,
} from './type1-dirty.js';
import {
  VFIO_API_VERSION,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
  VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
  VFIO_TYPE1_IOMMU,
  VFIO_TYPE1v2_IOMMU,
} from './uapi/constants.js';
import { decodeIommuInfo, type IommuInfo } from './uapi/info.js';
import {
  VFIO_CHECK_EXTENSION,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_GET_INFO,
  VFIO_IOMMU_MAP_DMA,
  VFIO_IOMMU_UNMAP_DMA,
  VFIO_SET_IOMMU,
} from './uapi/ioctls.js';
import { decode, encode } from './uapi/layout.js';
import { vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, vfio_iommu_type1_info } from './uapi/structs.js';

/** Options of {@link VfioContainer.open}. */
export interface ContainerOptions {
  /** The system-call layer: the real kernel (default) or a `SimKernel`. */
  sys?: Sys;
  /** The IOMMU type to set when the first group joins (default: type1v2 if offered, else type1). */
  iommuType?: number;
}


export type { DmaMapping, DmaMemory } from './dma-memory.js';

/** Options of {@link VfioContainer.mapDma}. */
export type DmaMapOptions = DmaMemory & {
  /** The IO virtual address the device will use. */
  iova: bigint;
  /** The device may read the memory (default true). */
  read?: boolean;
  /** The device may write the memory (default true). */
  write?: boolean;
};


/** A kernel dirty bitmap of an IOVA range: bit i is page `iova + i * pgsize`. */
export interface IovaDirtyBitmap {
  readonly iova: bigint;
  readonly size: bigint;
  readonly pgsize: bigint;
  /** u64 words, host-endian, as the kernel wrote them. */
  readonly bitmap: Uint8Array;
}

/**
 * A change of the container's DMA mappings, as {@link VfioContainer.onMappingChange}
 * reports it: a new mapping, an unmap (with the kernel's dirty bitmap of the
 * unmapped range when dirty tracking was on and the range allowed one), or a
 * reset (the last group left: the kernel dropped every mapping and the tracking).
 */
export type MappingChange =
  | { readonly kind: 'map'; readonly mapping: DmaMapping }
  | { readonly kind: 'unmap'; readonly iova: bigint; readonly size: bigint; readonly dirty: IovaDirtyBitmap | null }
  | { readonly kind: 'reset' };

/** Receives {@link MappingChange}s. */
export type MappingListener = (change: MappingChange) => void;

export class VfioContainer implements IoctlTarget, Disposable {
  readonly kind = 'container';
  readonly label = '/dev/vfio/vfio';
  readonly sys: Sys;
  readonly fd: number;
  readonly #groups = new Map<number, VfioGroup>();
  readonly #mappings = new Map<bigint, DmaRecord>();
  readonly #preferredType: number | undefined;
  readonly #listeners = new Set<MappingListener>();
  #iommuType: number | null = null;
  /** The dirty-tracking parameters while VFIO_IOMMU_DIRTY_PAGES tracking is on, else null. */
  #dirty: Type1DirtyParams | null = null;
  #closed = false;

  private constructor(sys: Sys, options: ContainerOptions) {
    this.sys = sys;
    this.#preferredType = options.iommuType;
    this.fd = syscall(this, 'open container', () => sys.open(this.label, O_RDWR | O_CLOEXEC));
    try {
      const version = ioctl(this, VFIO_GET_API_VERSION);
      if (version !== VFIO_API_VERSION) throw new UapiFormatError(`API version ${version}, expected ${VFIO_API_VERSION}`, this.label);
      if (!this.checkExtension(VFIO_TYPE1v2_IOMMU) && !this.checkExtension(VFIO_TYPE1_IOMMU)) {
        throw new UapiFormatError('no type1 IOMMU driver (is vfio_iommu_type1 loaded?)', this.label);
      }
    } catch (e) {
      sys.close(this.fd);
      throw e;
    }
  }

  /** Opens a new container. */
  static open(options: ContainerOptions = {}): VfioContainer {
    return new VfioContainer(options.sys ?? libcSys(), options);
  }

  /** The IOMMU type set on the container, or null before the first group joined. */
  get iommuType(): number | null {
    return this.#iommuType;
  }
  /** The groups in the container, by number. */
  get groups(): ReadonlyMap<number, VfioGroup> {
    return this.#groups;
  }
  /** Live DMA mappings, by IOVA. */
  get mappings(): ReadonlyMap<bigint, DmaMapping> {
    return this.#mappings;
  }
  get closed(): boolean {
    return this.#closed;
  }

  /** `VFIO_CHECK_EXTENSION`: true when the kernel supports `extension`. */
  checkExtension(extension: number): boolean {
    this.#open();
    return ioctl(this, VFIO_CHECK_EXTENSION, extension) > 0;
  }

  /**
   * Adds `group` to the container; the first group also sets the IOMMU
   * type. On failure the group is left out of the container.
   */
  addGroup(group: VfioGroup): void {
    this.#open();
    if (group.sys !== this.sys) throw new VfioArgumentError('addGroup', `${group.label} was opened through another Sys`);
    if (this.#groups.get(group.id) === group) return;
    group.setContainer(this);
    try {
      if (this.#iommuType === null) {
        const type = this.#preferredType ?? (this.checkExtension(VFIO_TYPE1v2_IOMMU) ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU);
        ioctl(this, VFIO_SET_IOMMU, type);
        this.#iommuType = type;
      }
    } catch (e) {
      group.unsetContainer();
      throw e;
    }
    this.#groups.set(group.id, group);
  }

  /**
   * Removes `group` (its devices must be closed). The last group to leave
   * resets the container: the kernel drops the IOMMU and every mapping.
   */
  removeGroup(group: VfioGroup): void {
    if (this.#groups.get(group.id) !== group) return;
    group.unsetContainer();
    this.#groups.delete(group.id);
    if (this.#groups.size === 0) {
      this.#iommuType = null;
      this.#mappings.clear();
      this.#dirty = null;
      this.#emit({ kind: 'reset' });
    }
  }

  /** Opens group `id` and adds it, or returns it if it is already here. */
  openGroup(id: number): VfioGroup {
    this.#open();
    const have = this.#groups.get(id);
    if (have) return have;
    const group = new VfioGroup(id, this.sys);
    try {
      this.addGroup(group);
    } catch (e) {
      group.close();
      throw e;
    }
    return group;
  }

  /**
   * Opens a device given its sysfs path, PCI address (`0000:00:03.0`) or
   * mdev UUID: finds its IOMMU group as QEMU does, opens and adds the group
   * when needed, and opens the device.
   */
  openDevice(spec: string): VfioDevice<VfioGroup> {
    this.#open();
    const loc = locateDevice(this.sys, spec);
    const existed = this.#groups.has(loc.groupId);
    const group = this.openGroup(loc.groupId);
    try {
      return group.openDevice(loc.name);
    } catch (e) {
      if (!existed) group.close();
      throw e;
    }
  }

  /** `VFIO_IOMMU_GET_INFO` with its capabilities (page sizes, IOVA ranges, dirty-tracking limits, DMA entries left). */
  iommuInfo(): IommuInfo {
    this.#open();
    const buf = queryWithCaps(vfio_iommu_type1_info.size, () => undefined, (b) => ioctl(this, VFIO_IOMMU_GET_INFO, b), vfio_iommu_type1_info.name);
    return decodeIommuInfo(buf);
  }

  /** Maps memory for device DMA at `iova` (`VFIO_IOMMU_MAP_DMA`). The buffer is kept alive while mapped. */
  mapDma(options: DmaMapOptions): DmaMapping {
    this.#open();
    const { vaddr, size, keep } = resolveDmaMemory(this.sys, options);
    const flags = (options.read === false ? 0 : VFIO_DMA_MAP_FLAG_READ) | (options.write === false ? 0 : VFIO_DMA_MAP_FLAG_WRITE);
    const arg = encode(vfio_iommu_type1_dma_map, { argsz: vfio_iommu_type1_dma_map.size, flags, vaddr, iova: options.iova, size: BigInt(size) });
    ioctl(this, VFIO_IOMMU_MAP_DMA, arg);
    const rec: DmaRecord = { iova: options.iova, size, vaddr, keep };
    this.#mappings.set(options.iova, rec);
    const mapping = { iova: rec.iova, size: rec.size, vaddr: rec.vaddr };
    this.#emit({ kind: 'map', mapping });
    return mapping;
  }

  /**
   * Unmaps `[iova, iova + size)` (`VFIO_IOMMU_UNMAP_DMA`); with type1v2 the
   * range must not bisect a mapping. While dirty tracking is on, the unmap
   * asks for the dirty bitmap of the range when the rules allow one, and
   * hands it to the mapping listeners (a dirty tracker), so no page written
   * before the unmap is lost.
   * @returns the number of bytes the kernel unmapped
   */
  unmapDma(iova: bigint, size: number | bigint): bigint {
    this.#open();
    const span = BigInt(size);
    if (this.#dirty !== null && this.#listeners.size > 0 && this.#bitmapAllowed(iova, span)) {
      return this.unmapDmaWithDirtyBitmap(iova, span).unmapped;
    }
    const arg = encode(vfio_iommu_type1_dma_unmap, { argsz: vfio_iommu_type1_dma_unmap.size, flags: 0, iova, size: span });
    ioctl(this, VFIO_IOMMU_UNMAP_DMA, arg);
    forgetMappings(this.#mappings, iova, span);
    this.#emit({ kind: 'unmap', iova, size: span, dirty: null });
    return decode(vfio_iommu_type1_dma_unmap, arg).size;
  }

  /**
   * `VFIO_IOMMU_UNMAP_DMA` with `GET_DIRTY_BITMAP`: the kernel writes the
   * dirty bitmap of `[iova, iova + size)` (bit i = page `iova + i * pgsize`)
   * into `out` (zeroed first; default a new buffer), then unmaps. Needs dirty
   * tracking on, an aligned range that bisects no mapping, and a bitmap within
   * `max_dirty_bitmap_size`.
   * @throws DirtyTrackingError when a rule is broken (the kernel is not asked)
   */
  unmapDmaWithDirtyBitmap(iova: bigint, size: bigint, out?: Uint8Array): { unmapped: bigint; dirty: IovaDirtyBitmap } {
    const op = 'unmapDmaWithDirtyBitmap';
    this.#open();
    const params = this.#tracking(op);
    checkType1Query(op, params, this.#mappings.values(), iova, size);
    const bitmap = this.#bitmapBuffer(op, size / params.pgsize, out);
    const arg = encodeUnmapWithBitmap({ iova, size }, params.pgsize, bitmap.byteLength, this.sys.addressOf(bitmap));
    ioctl(this, VFIO_IOMMU_UNMAP_DMA, arg);
    forgetMappings(this.#mappings, iova, size);
    const dirty: IovaDirtyBitmap = { iova, size, pgsize: params.pgsize, bitmap };
    this.#emit({ kind: 'unmap', iova, size, dirty });
    return { unmapped: decode(vfio_iommu_type1_dma_unmap, arg).size, dirty };
  }

  /** True while `VFIO_IOMMU_DIRTY_PAGES` tracking is on (started here and not stopped). */
  get dirtyTracking(): boolean {
    return this.#dirty !== null;
  }

  /**
   * The container's dirty-tracking parameters from the MIGRATION capability
   * (page size, largest bitmap per query), or null when there is none.
   */
  dirtyParams(): Type1DirtyParams | null {
    return this.#iommuType === VFIO_TYPE1v2_IOMMU ? type1DirtyParams(this.iommuInfo()) : null;
  }

  /**
   * `VFIO_IOMMU_DIRTY_PAGES` START: the kernel keeps a bitmap per mapping
   * (and for mappings made later) until {@link stopDirtyTracking}. Idempotent.
   * @throws DirtyTrackingError without a type1v2 IOMMU or its MIGRATION capability
   */
  startDirtyTracking(): Type1DirtyParams {
    this.#open();
    if (this.#dirty !== null) return this.#dirty;
    const params = this.dirtyParams();
    if (params === null) throw new DirtyTrackingError('startDirtyTracking', 'unsupported', 'the container has no type1v2 IOMMU with the MIGRATION capability');
    ioctl(this, VFIO_IOMMU_DIRTY_PAGES, encodeDirtyPagesFlag(VFIO_IOMMU_DIRTY_PAGES_FLAG_START));
    this.#dirty = params;
    return params;
  }

  /** `VFIO_IOMMU_DIRTY_PAGES` STOP: the kernel frees its bitmaps. Idempotent. */
  stopDirtyTracking(): void {
    this.#open();
    if (this.#dirty === null) return;
    ioctl(this, VFIO_IOMMU_DIRTY_PAGES, encodeDirtyPagesFlag(VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP));
    this.#dirty = null;
  }

  /**
   * `VFIO_IOMMU_DIRTY_PAGES` GET_BITMAP of `[iova, iova + size)`: bit i of
   * the result is page `iova + i * pgsize`; reading clears the kernel's bits
   * (pinned pages stay dirty). `out` (default a new buffer) is zeroed first,
   * as the kernel ORs into it; pass a {@link DirtyBitmap.kernelBuffer} to let
   * the kernel write where the merge reads. Use {@link planType1Queries} to
   * split a range that is too large for one query.
   * @throws DirtyTrackingError when a rule is broken (the kernel is not asked)
   */
  getDirtyBitmap(iova: bigint, size: bigint, out?: Uint8Array): Uint8Array {
    const op = 'getDirtyBitmap';
    this.#open();
    const params = this.#tracking(op);
    checkType1Query(op, params, this.#mappings.values(), iova, size);
    const bitmap = this.#bitmapBuffer(op, size / params.pgsize, out);
    ioctl(this, VFIO_IOMMU_DIRTY_PAGES, encodeDirtyBitmapGet({ iova, size }, params.pgsize, bitmap.byteLength, this.sys.addressOf(bitmap)));
    return bitmap;
  }

  /**
   * Calls `listener` after every mapping change (map, unmap, reset); returns
   * a function that removes it. Dirty trackers use it to re-arm.
   */
  onMappingChange(listener: MappingListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /**
   * Closes every group (and their devices), then the container fd.
   * Idempotent; every step runs even if one fails.
   */
  close(): void {
    if (this.#closed) return;
    const errors: unknown[] = [];
    for (const g of [...this.#groups.values()]) attempt(errors, () => g.close());
    this.#closed = true;
    this.#mappings.clear();
    this.#dirty = null;
    this.#listeners.clear();
    attempt(errors, () => this.sys.close(this.fd));
    throwCollected(errors, 'closing the container failed');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(this.label);
  }

  #tracking(op: string): Type1DirtyParams {
    if (this.#dirty === null) throw new DirtyTrackingError(op, 'not-tracking', 'dirty tracking is not started on this container');
    return this.#dirty;
  }

  /** Whether an unmap of the range may carry a bitmap (otherwise it goes without, and the kernel judges it). */
  #bitmapAllowed(iova: bigint, size: bigint): boolean {
    const params = this.#dirty;
    if (params === null) return false;
    try {
      checkType1Query('unmapDma', params, this.#mappings.values(), iova, size);
      return true;
    } catch (e) {
      if (e instanceof DirtyTrackingError) return false;
      throw e;
    }
  }

  /** A zeroed bitmap of `npages` pages: `out` (which must hold them) or a new one. */
  #bitmapBuffer(op: string, npages: bigint, out: Uint8Array | undefined): Uint8Array {
    const bytes = kernelBitmapBytes(Number(npages));
    if (out === undefined) return new Uint8Array(bytes);
    if (out.byteLength < bytes) throw new DirtyTrackingError(op, 'bitmap-size', `${npages} pages need ${bytes} bytes of bitmap, got ${out.byteLength}`);
    const bitmap = out.subarray(0, bytes);
    bitmap.fill(0);
    return bitmap;
  }

  #emit(change: MappingChange): void {
    for (const l of [...this.#listeners]) l(change);
  }
}
