/**
 * Error classes of vfio-ts. Every error the library throws on purpose is a
 * {@link VfioError} with a stable `code`; match on `code`, not on messages.
 */
import { errnoMessage, errnoName } from './sys/errno.js';

/** Base class of every error vfio-ts throws deliberately. */
export abstract class VfioError extends Error {
  /** A stable, machine-readable code (`'EINVAL'`, `'ERR_VFIO_STREAM_FORMAT'`, ...). */
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Where a failed system call happened, for {@link VfioSystemError}. */
export interface SyscallContext {
  /** The operation: the ioctl name (`'VFIO_DEVICE_SET_IRQS'`) or a library step (`'mmap region 2'`). */
  op?: string;
  /** The device (PCI address or mdev UUID), group or path the call was made on. */
  device?: string;
  /** A file-system path involved in the call. */
  path?: string;
}

/**
 * A system call failed with an errno. Shaped like Node's `SystemError`:
 * `errno` is the positive C value (`22`), `code` its name (`'EINVAL'`),
 * `syscall` the libc call (`'ioctl'`), plus the ioctl name in `op` and the device.
 */
export class VfioSystemError extends VfioError {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
  op: string | undefined;
  device: string | undefined;
  path: string | undefined;

  constructor(errno: number, syscall: string, context: SyscallContext = {}) {
    super('');
    this.errno = errno;
    this.code = errnoName(errno);
    this.syscall = syscall;
    this.op = context.op;
    this.device = context.device;
    this.path = context.path;
    this.message = this.describe();
  }

  /** Fills in the operation and device once the caller knows them, keeping the errno. */
  annotate(context: SyscallContext): this {
    this.op ??= context.op;
    this.device ??= context.device;
    this.path ??= context.path;
    this.message = this.describe();
    return this;
  }

  private describe(): string {
    const what = this.op ?? this.syscall;
    const where = this.device ?? this.path;
    return `${what}${where === undefined ? '' : ` on ${where}`} failed: ${this.code} (${errnoMessage(this.errno)})`;
  }
}

/** Data from the kernel (or a device) broke the uAPI's rules: a bad capability chain, an impossible size. */
export class UapiFormatError extends VfioError {
  readonly code = 'ERR_VFIO_UAPI_FORMAT';
  constructor(
    message: string,
    /** The struct or capability being decoded. */
    readonly struct: string,
    /** Byte offset in the buffer where the problem was found, when known. */
    readonly offset?: number,
  ) {
    super(`${struct}: ${message}`);
  }
}

/** An argument was refused by the library before any system call was made (it would break a kernel rule). */
export class VfioArgumentError extends VfioError {
  readonly code = 'ERR_VFIO_INVALID_ARGUMENT';
  constructor(
    /** The operation that refused it. */
    readonly op: string,
    message: string,
  ) {
    super(`${op}: ${message}`);
  }
}

/** An object was used after `close()`. */
export class VfioClosedError extends VfioError {
  readonly code = 'ERR_VFIO_CLOSED';
  constructor(readonly what: string) {
    super(`${what} is closed`);
  }
}

/** A view of an mmapped area was used after the area was unmapped or re-laid out. */
export class MappingRevokedError extends VfioError {
  readonly code = 'ERR_VFIO_MAPPING_REVOKED';
  constructor(readonly what: string) {
    super(`${what} was unmapped; take a new view from the region`);
  }
}

/** A device lookup found nothing usable (no such sysfs device, no IOMMU group, not viable). */
export class DeviceNotFoundError extends VfioError {
  readonly code = 'ERR_VFIO_DEVICE_NOT_FOUND';
  constructor(
    readonly device: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${device}: ${message}`, options);
  }
}

/** Why a migration state change was refused (each is an -EINVAL from the kernel). */
export type MigrationStateErrorReason =
  | 'current-is-error'
  | 'current-unsupported'
  | 'target-is-error'
  | 'target-unsupported'
  | 'blocked';

/** A v2 migration state change the kernel would refuse with -EINVAL (`vfio_mig_get_next_state`). */
export class MigrationStateError extends VfioError {
  readonly code = 'ERR_VFIO_MIGRATION_STATE';
  constructor(
    message: string,
    /** The current state (`enum vfio_device_mig_state`). */
    readonly from: number,
    /** The requested state. */
    readonly to: number,
    /** The device's `VFIO_DEVICE_FEATURE_MIGRATION` flags. */
    readonly flags: number,
    readonly reason: MigrationStateErrorReason,
  ) {
    super(message);
  }
}

/** A migration stream (QEMU savevm framing or VFIO device framing) is malformed, truncated or over a limit. */
export class StreamFormatError extends VfioError {
  readonly code = 'ERR_VFIO_STREAM_FORMAT';
  constructor(
    message: string,
    /** Byte offset in the stream where the offending field starts (or where input ended). */
    readonly offset: number,
    /** The VFIO tag (`0xffffffffef10000N`) being parsed, when relevant. */
    readonly tag?: bigint,
  ) {
    super(`${message} (at byte ${offset}${tag === undefined ? '' : `, tag 0x${tag.toString(16)}`})`);
  }
}

/**
 * A PCI config image, or the config state QEMU migrates for a VFIO PCI device,
 * breaks the rules: a capability pointer into the header or past the image, a
 * capability loop, a truncated or unsupported `VFIOPCIDevice` vmstate, or
 * read-only bits that differ from the device's.
 */
export class ConfigSpaceError extends VfioError {
  readonly code = 'ERR_VFIO_CONFIG_SPACE';
  constructor(
    /** What was being read: `'capability list'`, `'VFIOPCIDevice vmstate'`, ... */
    readonly context: string,
    /** The problem, without the context and offset the full message adds. */
    readonly detail: string,
    /** Offset of the offending byte: in the config image, or in the encoded config state for vmstate errors. */
    readonly offset?: number,
  ) {
    super(`${context}: ${detail}${offset === undefined ? '' : ` (at offset 0x${offset.toString(16)})`}`);
  }
}
