/**
 * An iommufd context (`/dev/iommu`): the fd every iommufd object lives in.
 * It allocates IOAS ({@link IommufdIoas}) and HWPT ({@link IommufdHwpt})
 * objects and answers `IOMMU_GET_HW_INFO` for bound devices. A bound device
 * holds the kernel's context (`iommufd_ctx_get` pins the file), so closing
 * closes the devices bound through it first: the fd's release then destroys
 * every object and unpins the memory.
 *
 * The uAPI's errno conventions (reference §1.8): ENOTTY for an unknown ioctl,
 * E2BIG for non-zero bytes past what the kernel knows, EOPNOTSUPP for a known
 * field with an unsupported value, EINVAL for a wrong field, ENOENT for an
 * unknown object id or IOVA, EOVERFLOW for arithmetic overflow.
 */
import { attempt, throwCollected } from '../attempt.js';
import { VfioClosedError } from '../errors.js';
import { libcSys } from '../sys/libc.js';
import { O_CLOEXEC, O_RDWR, type Sys } from '../sys/sys.js';
import type { IommufdDevice } from './iommufd-device.js';
import { IommufdHwpt } from './iommufd-hwpt.js';
import { IommufdIoas } from './iommufd-ioas.js';
import { ioctl, syscall, type IoctlTarget } from './ioctl.js';
import {
  IOMMU_DESTROY,
  IOMMU_GET_HW_INFO,
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
  IOMMU_HW_CAP_DIRTY_TRACKING,
  IOMMU_IOAS_ALLOC,
  iommu_destroy,
  iommu_hw_info,
  iommu_hwpt_alloc,
  iommu_ioas_alloc,
} from './uapi/iommufd.js';
import { decode, encode } from './uapi/layout.js';

/** What `IOMMU_GET_HW_INFO` says about the IOMMU behind a device. */
export interface IommuHwInfo {
  /** `enum iommu_hw_info_type` (0 = none, 1 = Intel VT-d). */
  readonly dataType: number;
  /** Bytes of driver data the kernel has (the data itself is not fetched). */
  readonly dataLength: number;
  /** `IOMMU_HW_CAP_*` bits. */
  readonly capabilities: bigint;
  /** The IOMMU can track dirty pages (`IOMMU_HW_CAP_DIRTY_TRACKING`). */
  readonly dirtyTracking: boolean;
  readonly maxPasidLog2: number;
}

/** Options of {@link Iommufd.allocHwpt}. */
export interface HwptOptions {
  /** The bound device the HWPT is allocated for (its `out_devid`). */
  readonly devId: number;
  /** The IOAS the HWPT maps. */
  readonly ioas: IommufdIoas;
  /** Allocate with `IOMMU_HWPT_ALLOC_DIRTY_TRACKING` (EOPNOTSUPP if the IOMMU cannot). */
  readonly dirtyTracking?: boolean;
}

/** An open `/dev/iommu`. */
export class Iommufd implements IoctlTarget, Disposable {
  readonly kind = 'iommufd';
  readonly label = '/dev/iommu';
  readonly sys: Sys;
  readonly fd: number;
  #closed = false;
  /** Devices bound through this context and not closed yet. */
  readonly #devices = new Set<IommufdDevice>();
  /** The IOAS and HWPT objects allocated here and not destroyed, by id (the kernel reuses ids). */
  readonly #objects = new Map<number, IommufdIoas | IommufdHwpt>();

  private constructor(sys: Sys) {
    this.sys = sys;
    this.fd = syscall(this, 'open iommufd', () => sys.open(this.label, O_RDWR | O_CLOEXEC));
  }

  /** Opens `/dev/iommu` (ENOENT on a kernel without iommufd, such as Debian's 6.12). */
  static open(options: { sys?: Sys } = {}): Iommufd {
    return new Iommufd(options.sys ?? libcSys());
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** `IOMMU_IOAS_ALLOC`: a new, empty IO address space. */
  allocIoas(): IommufdIoas {
    this.check();
    const arg = encode(iommu_ioas_alloc, { size: iommu_ioas_alloc.size, flags: 0 });
    ioctl(this, IOMMU_IOAS_ALLOC, arg);
    return this.#adopt(new IommufdIoas(this, decode(iommu_ioas_alloc, arg).out_ioas_id));
  }

  /** `IOMMU_GET_HW_INFO` for bound device `devId` (driver data not fetched: `data_len` 0). */
  hwInfo(devId: number): IommuHwInfo {
    this.check();
    const arg = encode(iommu_hw_info, { size: iommu_hw_info.size, dev_id: devId });
    ioctl(this, IOMMU_GET_HW_INFO, arg);
    const d = decode(iommu_hw_info, arg);
    return {
      dataType: d.out_data_type,
      dataLength: d.data_len,
      capabilities: d.out_capabilities,
      dirtyTracking: (d.out_capabilities & BigInt(IOMMU_HW_CAP_DIRTY_TRACKING)) !== 0n,
      maxPasidLog2: d.out_max_pasid_log2,
    };
  }

  /** `IOMMU_HWPT_ALLOC` of a paging HWPT over `ioas` for device `devId`. */
  allocHwpt(options: HwptOptions): IommufdHwpt {
    this.check();
    const dirty = options.dirtyTracking === true;
    const arg = encode(iommu_hwpt_alloc, {
      size: iommu_hwpt_alloc.size,
      flags: dirty ? IOMMU_HWPT_ALLOC_DIRTY_TRACKING : 0,
      dev_id: options.devId,
      pt_id: options.ioas.id,
    });
    ioctl(this, IOMMU_HWPT_ALLOC, arg);
    return this.#adopt(new IommufdHwpt(this, decode(iommu_hwpt_alloc, arg).out_hwpt_id, options.ioas, dirty));
  }

  /**
   * `IOMMU_DESTROY` of object `id`. The kernel answers EBUSY while something
   * uses it: detach (or close) the devices before destroying their HWPT, and
   * destroy the HWPTs before their IOAS. Once destroyed, the library's
   * {@link IommufdIoas} or {@link IommufdHwpt} of that id refuses every call
   * with `VfioClosedError`, as the kernel hands the id to the next object.
   */
  destroy(id: number): void {
    this.check();
    ioctl(this, IOMMU_DESTROY, encode(iommu_destroy, { size: iommu_destroy.size, id }));
    this.#objects.get(id)?.markDestroyed();
    this.#objects.delete(id);
  }

  /**
   * Closes every device bound through this context, then the fd: the kernel
   * destroys every object. Idempotent; every step runs even if one fails.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const errors: unknown[] = [];
    for (const d of [...this.#devices]) attempt(errors, () => d.close());
    this.#devices.clear();
    this.#objects.clear();
    attempt(errors, () => this.sys.close(this.fd));
    throwCollected(errors, 'closing the iommufd failed');
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** @internal Throws when the context is closed. */
  check(): void {
    if (this.#closed) throw new VfioClosedError(this.label);
  }

  /** @internal A device bound through this context: closed with it. */
  adoptDevice(device: IommufdDevice): void {
    this.#devices.add(device);
  }

  /** @internal A device closed on its own. */
  forgetDevice(device: IommufdDevice): void {
    this.#devices.delete(device);
  }

  #adopt<T extends IommufdIoas | IommufdHwpt>(obj: T): T {
    this.#objects.set(obj.id, obj);
    return obj;
  }
}
