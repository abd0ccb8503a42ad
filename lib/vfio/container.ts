/**
 * A VFIO container, `/dev/vfio/vfio`: the IOMMU context its groups share.
 * Checks the API version and IOMMU support, sets the IOMMU type when the
 * first group joins (type1v2 preferred, as QEMU), maps guest memory for DMA,
 * and opens devices by sysfs path, PCI address or mdev UUID.
 */
import { UapiFormatError, VfioArgumentError, VfioClosedError } from '../errors.js';
import { libcSys } from '../sys/libc.js';
import { O_CLOEXEC, O_RDWR, type Mapping, type Sys } from '../sys/sys.js';
import type { VfioDevice } from './device.js';
import { locateDevice } from './discovery.js';
import { VfioGroup } from './group.js';
import { ioctl, syscall, type IoctlTarget } from './ioctl.js';
import { queryWithCaps } from './uapi/caps.js';
import { VFIO_API_VERSION, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_WRITE, VFIO_TYPE1_IOMMU, VFIO_TYPE1v2_IOMMU } from './uapi/constants.js';
import { decodeIommuInfo, type IommuInfo } from './uapi/info.js';
import { VFIO_CHECK_EXTENSION, VFIO_GET_API_VERSION, VFIO_IOMMU_GET_INFO, VFIO_IOMMU_MAP_DMA, VFIO_IOMMU_UNMAP_DMA, VFIO_SET_IOMMU } from './uapi/ioctls.js';
import { decode, encode } from './uapi/layout.js';
import { vfio_iommu_type1_dma_map, vfio_iommu_type1_dma_unmap, vfio_iommu_type1_info } from './uapi/structs.js';

/** Options of {@link VfioContainer.open}. */
export interface ContainerOptions {
  /** The system-call layer: the real kernel (default) or a `SimKernel`. */
  sys?: Sys;
  /** The IOMMU type to set when the first group joins (default: type1v2 if offered, else type1). */
  iommuType?: number;
}

/** What to map for DMA: a buffer or mapping the process owns, or a raw user address. */
export type DmaMemory = { buffer: ArrayBufferView | Mapping } | { vaddr: bigint; size: number };

/** Options of {@link VfioContainer.mapDma}. */
export type DmaMapOptions = DmaMemory & {
  /** The IO virtual address the device will use. */
  iova: bigint;
  /** The device may read the memory (default true). */
  read?: boolean;
  /** The device may write the memory (default true). */
  write?: boolean;
};

/** A live DMA mapping. */
export interface DmaMapping {
  readonly iova: bigint;
  readonly size: number;
  readonly vaddr: bigint;
}

interface MappingRecord extends DmaMapping {
  /** Held so the memory outlives the mapping (the kernel pins it by address). */
  readonly keep: ArrayBufferView | Mapping | null;
}

export class VfioContainer implements IoctlTarget, Disposable {
  readonly kind = 'container';
  readonly label = '/dev/vfio/vfio';
  readonly sys: Sys;
  readonly fd: number;
  readonly #groups = new Map<number, VfioGroup>();
  readonly #mappings = new Map<bigint, MappingRecord>();
  readonly #preferredType: number | undefined;
  #iommuType: number | null = null;
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
  openDevice(spec: string): VfioDevice {
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
    const { vaddr, size, keep } = this.#memory(options);
    const flags = (options.read === false ? 0 : VFIO_DMA_MAP_FLAG_READ) | (options.write === false ? 0 : VFIO_DMA_MAP_FLAG_WRITE);
    const arg = encode(vfio_iommu_type1_dma_map, { argsz: vfio_iommu_type1_dma_map.size, flags, vaddr, iova: options.iova, size: BigInt(size) });
    ioctl(this, VFIO_IOMMU_MAP_DMA, arg);
    const rec: MappingRecord = { iova: options.iova, size, vaddr, keep };
    this.#mappings.set(options.iova, rec);
    return { iova: rec.iova, size: rec.size, vaddr: rec.vaddr };
  }

  /**
   * Unmaps `[iova, iova + size)` (`VFIO_IOMMU_UNMAP_DMA`); with type1v2 the
   * range must not bisect a mapping.
   * @returns the number of bytes the kernel unmapped
   */
  unmapDma(iova: bigint, size: number | bigint): bigint {
    this.#open();
    const arg = encode(vfio_iommu_type1_dma_unmap, { argsz: vfio_iommu_type1_dma_unmap.size, flags: 0, iova, size: BigInt(size) });
    ioctl(this, VFIO_IOMMU_UNMAP_DMA, arg);
    const end = iova + BigInt(size);
    for (const [at, m] of this.#mappings) if (at >= iova && at + BigInt(m.size) <= end) this.#mappings.delete(at);
    return decode(vfio_iommu_type1_dma_unmap, arg).size;
  }

  /**
   * Closes every group (and their devices), then the container fd.
   * Idempotent; every step runs even if one fails.
   */
  close(): void {
    if (this.#closed) return;
    const errors: unknown[] = [];
    for (const g of [...this.#groups.values()]) {
      try {
        g.close();
      } catch (e) {
        errors.push(e);
      }
    }
    this.#closed = true;
    this.#mappings.clear();
    try {
      this.sys.close(this.fd);
    } catch (e) {
      errors.push(e);
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, 'closing the container failed');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #memory(m: DmaMemory): { vaddr: bigint; size: number; keep: ArrayBufferView | Mapping | null } {
    if ('vaddr' in m) return { vaddr: m.vaddr, size: m.size, keep: null };
    const b = m.buffer;
    if (ArrayBuffer.isView(b)) return { vaddr: this.sys.addressOf(b), size: b.byteLength, keep: b };
    return { vaddr: b.address, size: b.length, keep: b };
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(this.label);
  }
}
