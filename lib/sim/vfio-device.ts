/**
 * The simulated vfio core for devices (`drivers/vfio/vfio_main.c`): the
 * device a driver implements ({@link SimVfioDevice}, the `vfio_device_ops`,
 * `vfio_migration_ops` and `vfio_log_ops`), and the device fd that the core
 * puts in front of it, with VFIO_DEVICE_FEATURE handled as the core does.
 */
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MASK,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
} from '../vfio/uapi/constants.js';
import { VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_FEATURE } from '../vfio/uapi/ioctls.js';
import { dataView, decode, encode } from '../vfio/uapi/layout.js';
import {
  vfio_device_feature,
  vfio_device_feature_dma_logging_control,
  vfio_device_feature_dma_logging_range,
  vfio_device_feature_dma_logging_report,
  vfio_device_feature_mig_data_size,
  vfio_device_feature_mig_state,
  vfio_device_feature_migration,
} from '../vfio/uapi/structs.js';
import { KernelErrno, fail, userBuf } from './errno.js';
import type { FileOps, IoctlArg, SimFile, SimMmap } from './file.js';
import type { SimSyscalls } from './syscalls.js';

const U64_MAX = (1n << 64n) - 1n;
/** `PAGE_SIZE / sizeof(struct vfio_device_feature_dma_logging_range)`. */
export const LOG_MAX_RANGES = 256;

/** `struct vfio_migration_ops` plus `migration_flags`. */
export interface SimMigrationOps {
  /** `VFIO_MIGRATION_*` flags the device offers. */
  readonly flags: number;
  /** Walks to `target`; returns a new data file (with a reference for the caller) when the last arc opens a session. */
  setState(target: number): SimFile | null;
  getState(): number;
  /** Estimated STOP_COPY data length in bytes. */
  getDataSize(): bigint;
}

/** An inclusive IOVA range handed to `log_start`. */
export interface SimIovaRange {
  readonly start: bigint;
  readonly last: bigint;
}

/** `struct vfio_log_ops` (device DMA logging). */
export interface SimLogOps {
  /** Starts logging; returns the page size the device will use (it may change the requested one). */
  start(ranges: readonly SimIovaRange[], pageSize: bigint): bigint;
  stop(): void;
  /** Reports (and clears) dirty pages in `[iova, iova + length)` by calling `setDirty`. */
  readAndClear(iova: bigint, length: bigint, setDirty: (iova: bigint, length: bigint) => void): void;
}

/** A device a simulated VFIO driver registers (`struct vfio_device` + `vfio_device_ops`). */
export abstract class SimVfioDevice {
  /** `dev_name()`: the PCI address or mdev UUID used by GROUP_GET_DEVICE_FD. */
  abstract readonly name: string;
  /** Set while the device is open (the kernel's `open_count`). */
  openCount = 0;
  /** Migration support, if any (`mig_ops`). */
  migration: SimMigrationOps | undefined;
  /** DMA logging support, if any (`log_ops`). */
  log: SimLogOps | undefined;
  #kernel: SimSyscalls | undefined;

  /** The kernel the device is registered with. */
  get kernel(): SimSyscalls {
    if (this.#kernel === undefined) throw new Error(`${this.name} is not registered with a simulated kernel`);
    return this.#kernel;
  }

  /** Called by the kernel at registration. */
  bind(kernel: SimSyscalls): void {
    this.#kernel = kernel;
  }

  /** `open_device`: the first open of the device. */
  openDevice(): void {}
  /** `close_device`: the last close. */
  closeDevice(): void {}
  /** `ioctl` for everything but VFIO_DEVICE_FEATURE. */
  abstract ioctl(request: number, arg: IoctlArg): number;
  /** `read` at a device-fd offset (region index << 40 | offset for PCI). */
  read(_buf: Uint8Array, _offset: bigint): number {
    fail('EINVAL');
  }
  write(_buf: Uint8Array, _offset: bigint): number {
    fail('EINVAL');
  }
  mmap(_offset: bigint, _length: number, _prot: number): SimMmap {
    fail('EINVAL');
  }
  /** `device_feature` for feature ids the core does not handle. */
  deviceFeature(_flags: number, _payload: Uint8Array): number {
    fail('ENOTTY');
  }
}

/** `vfio_check_feature`: 1 to go on, 0 for a successful probe; throws EINVAL. */
export function checkFeature(flags: number, argsz: number, supported: number, minsz: number): 0 | 1 {
  if ((flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET) & ~supported) !== 0) fail('EINVAL');
  if ((flags & VFIO_DEVICE_FEATURE_PROBE) !== 0) return 0;
  if ((flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)) === 0) fail('EINVAL');
  if (argsz < minsz) fail('EINVAL');
  return 1;
}

/** The file behind a device fd (`vfio_device_fops`, group path). */
export class SimDeviceFile implements FileOps {
  readonly kind = 'device';

  constructor(
    private readonly device: SimVfioDevice,
    private readonly kernel: SimSyscalls,
    private readonly onRelease: () => void,
  ) {}

  get label(): string {
    return this.device.name;
  }

  ioctl(request: number, arg: IoctlArg): number {
    // Debian's 6.12 has no CONFIG_VFIO_DEVICE_CDEV: the bind stub answers ENOTTY.
    if (request === VFIO_DEVICE_BIND_IOMMUFD) fail('ENOTTY');
    if (request === VFIO_DEVICE_FEATURE) return this.#feature(arg);
    return this.device.ioctl(request, arg);
  }

  read(buf: Uint8Array, pos: bigint | null): number {
    return this.device.read(buf, pos ?? 0n);
  }

  write(buf: Uint8Array, pos: bigint | null): number {
    return this.device.write(buf, pos ?? 0n);
  }

  mmap(offset: bigint, length: number, prot: number): SimMmap {
    return this.device.mmap(offset, length, prot);
  }

  release(): void {
    this.onRelease();
  }

  /** `vfio_ioctl_device_feature`. */
  #feature(arg: IoctlArg): number {
    const minsz = vfio_device_feature.size;
    const buf = userBuf(arg, minsz);
    const { argsz, flags } = decode(vfio_device_feature, buf);
    if (argsz < minsz) fail('EINVAL');
    if ((flags & ~(VFIO_DEVICE_FEATURE_MASK | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_PROBE)) !== 0) fail('EINVAL');
    if ((flags & VFIO_DEVICE_FEATURE_PROBE) === 0 && (flags & VFIO_DEVICE_FEATURE_SET) !== 0 && (flags & VFIO_DEVICE_FEATURE_GET) !== 0) {
      fail('EINVAL');
    }
    const size = argsz - minsz;
    // The payload as the kernel's copy_from_user/copy_to_user see it: the user buffer past the header.
    const payload = (need: number): Uint8Array => userBuf(arg, minsz + need).subarray(minsz);
    const mig = this.device.migration;
    const log = this.device.log;
    switch (flags & VFIO_DEVICE_FEATURE_MASK) {
      case VFIO_DEVICE_FEATURE_MIGRATION: {
        if (mig === undefined) fail('ENOTTY');
        if (checkFeature(flags, size, VFIO_DEVICE_FEATURE_GET, vfio_device_feature_migration.size) === 0) return 0;
        encode(vfio_device_feature_migration, { flags: BigInt(mig.flags) }, payload(8));
        return 0;
      }
      case VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE:
        if (mig === undefined) fail('ENOTTY');
        if (checkFeature(flags, size, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET, vfio_device_feature_mig_state.size) === 0) return 0;
        return this.#migDeviceState(mig, flags, payload(8));
      case VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: {
        if (mig === undefined) fail('ENOTTY');
        if (checkFeature(flags, size, VFIO_DEVICE_FEATURE_GET, vfio_device_feature_mig_data_size.size) === 0) return 0;
        const len = mig.getDataSize();
        encode(vfio_device_feature_mig_data_size, { stop_copy_length: len }, payload(8));
        return 0;
      }
      case VFIO_DEVICE_FEATURE_DMA_LOGGING_START:
        if (log === undefined) fail('ENOTTY');
        if (checkFeature(flags, size, VFIO_DEVICE_FEATURE_SET, vfio_device_feature_dma_logging_control.size) === 0) return 0;
        return this.#logStart(log, payload(vfio_device_feature_dma_logging_control.size));
      case VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP:
        if (log === undefined) fail('ENOTTY');
        if (checkFeature(flags, size, VFIO_DEVICE_FEATURE_SET, 0) === 0) return 0;
        log.stop();
        return 0;
      case VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT:
        if (log === undefined) fail('ENOTTY');
        if (checkFeature(flags, size, VFIO_DEVICE_FEATURE_GET, vfio_device_feature_dma_logging_report.size) === 0) return 0;
        return this.#logReport(log, payload(vfio_device_feature_dma_logging_report.size));
      default:
        return this.device.deviceFeature(flags, buf.subarray(minsz));
    }
  }

  #migDeviceState(mig: SimMigrationOps, flags: number, p: Uint8Array): number {
    const m = decode(vfio_device_feature_mig_state, p);
    if ((flags & VFIO_DEVICE_FEATURE_GET) !== 0) {
      encode(vfio_device_feature_mig_state, { device_state: mig.getState(), data_fd: -1 }, p);
      return 0;
    }
    let file: SimFile | null;
    try {
      file = mig.setState(m.device_state);
    } catch (e) {
      if (e instanceof KernelErrno) encode(vfio_device_feature_mig_state, { device_state: m.device_state, data_fd: -1 }, p);
      throw e;
    }
    if (file === null) {
      encode(vfio_device_feature_mig_state, { device_state: m.device_state, data_fd: -1 }, p);
      return 0;
    }
    const fd = this.kernel.installFile(file);
    encode(vfio_device_feature_mig_state, { device_state: m.device_state, data_fd: fd }, p);
    return 0;
  }

  /** `vfio_ioctl_device_feature_logging_start`. */
  #logStart(log: SimLogOps, p: Uint8Array): number {
    const control = decode(vfio_device_feature_dma_logging_control, p);
    const n = control.num_ranges;
    if (n === 0) fail('EINVAL');
    if (n > LOG_MAX_RANGES) fail('E2BIG');
    const raw = this.kernel.memory.resolve(control.ranges, n * vfio_device_feature_dma_logging_range.size);
    const ranges: SimIovaRange[] = [];
    for (let i = 0; i < n; i++) {
      const r = decode(vfio_device_feature_dma_logging_range, raw, i * 16);
      // IS_ALIGNED with a zero page size is a mask of all ones: only 0 passes.
      const mask = control.page_size === 0n ? U64_MAX : control.page_size - 1n;
      if ((r.iova & mask) !== 0n || (r.length & mask) !== 0n) fail('EINVAL');
      if (r.iova + r.length > U64_MAX) fail('EOVERFLOW');
      const range = { start: r.iova, last: r.iova + r.length - 1n };
      if (ranges.some((x) => x.start <= range.last && range.start <= x.last)) fail('EINVAL');
      ranges.push(range);
    }
    const pageSize = log.start(ranges, control.page_size);
    encode(vfio_device_feature_dma_logging_control, { page_size: pageSize }, p);
    return 0;
  }

  /** `vfio_ioctl_device_feature_logging_report` with the iova_bitmap the kernel fills. */
  #logReport(log: SimLogOps, p: Uint8Array): number {
    const r = decode(vfio_device_feature_dma_logging_report, p);
    if (r.page_size < 4096n || (r.page_size & (r.page_size - 1n)) !== 0n) fail('EINVAL');
    if (r.iova + r.length > U64_MAX) fail('EOVERFLOW');
    const npages = (r.length + r.page_size - 1n) / r.page_size;
    const bitmap = this.kernel.memory.resolve(r.bitmap, Number(((npages + 63n) / 64n) * 8n));
    const dv = dataView(bitmap);
    log.readAndClear(r.iova, r.length, (iova, length) => {
      // iova_bitmap_set: clamp to the reported range, set one bit per touched page.
      const start = iova < r.iova ? r.iova : iova;
      const end = iova + length > r.iova + r.length ? r.iova + r.length : iova + length;
      for (let page = (start - r.iova) / r.page_size; page * r.page_size + r.iova < end; page++) {
        const at = Number(page >> 3n);
        dv.setUint8(at, dv.getUint8(at) | (1 << Number(page & 7n)));
      }
    });
    return 0;
  }
}
