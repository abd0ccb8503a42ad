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

/** Which dirty-tracking rule a request broke (each is one the kernel would refuse, or one the tracker relies on). */
export type DirtyTrackingRule =
  | 'not-tracking'
  | 'page-size'
  | 'alignment'
  | 'bisects-mapping'
  | 'bitmap-size'
  | 'range-count'
  | 'range-overlap'
  | 'unmapped-range'
  | 'unsupported';

/**
 * A dirty-tracking request was refused before the kernel was asked: it would
 * break a rule of `VFIO_IOMMU_DIRTY_PAGES`, device DMA logging or iommufd
 * dirty tracking (reference §6), or the tracker cannot honour it.
 */
export class DirtyTrackingError extends VfioError {
  readonly code = 'ERR_VFIO_DIRTY_TRACKING';
  constructor(
    /** The operation that refused the request. */
    readonly op: string,
    readonly rule: DirtyTrackingRule,
    message: string,
  ) {
    super(`${op}: ${message}`);
  }
}

/** Why the library refused a v1 `device_state` write before making it. */
export type MigrationV1StateErrorReason = 'target-invalid' | 'target-is-error' | 'current-is-error' | 'current-invalid';

/**
 * A v1 `device_state` write the library refused before making it (reference
 * §3.2): RESUMING combined with another bit, the error state as a target, or
 * a device that is in the error state (it needs VFIO_DEVICE_RESET first).
 */
export class MigrationV1StateError extends VfioError {
  readonly code = 'ERR_VFIO_MIGRATION_V1_STATE';
  constructor(
    message: string,
    /** The raw `device_state` word read before the write. */
    readonly from: number,
    /** The requested bits (RESUMING, SAVING, RUNNING). */
    readonly to: number,
    readonly reason: MigrationV1StateErrorReason,
  ) {
    super(message);
  }
}

/**
 * What the library did after a failed v1 `device_state` write: nothing (the
 * re-read state is valid), a reset (the device was in the error state), a
 * reset that failed too, or nothing because the state could not be re-read.
 */
export type MigrationV1Recovery = 'none' | 'reset' | 'reset-failed' | 'unreadable';

/**
 * A v1 `device_state` write failed. As §3.3 prescribes, the library re-read
 * the state and, if the device was in the error state, reset it; `state` is
 * where the device is now and `cause` the failed write.
 */
export class MigrationV1TransitionError extends VfioError {
  readonly code = 'ERR_VFIO_MIGRATION_V1_TRANSITION';
  /** Why the re-read or the reset failed, when `recovery` is `'unreadable'` or `'reset-failed'`. */
  readonly recoveryError: unknown;

  constructor(
    message: string,
    /** The raw `device_state` word before the write. */
    readonly from: number,
    /** The requested bits. */
    readonly to: number,
    /** The raw word after recovery; undefined when it could not be read. */
    readonly state: number | undefined,
    readonly recovery: MigrationV1Recovery,
    options: { cause: unknown; recoveryError?: unknown },
  ) {
    super(message, { cause: options.cause });
    this.recoveryError = options.recoveryError;
  }
}

/** Why a migration step failed, for {@link MigrationError}. */
export type MigrationErrorReason =
  /** The device cannot migrate (no `VFIO_MIGRATION_STOP_COPY`), or lacks what the request needs. */
  | 'unsupported'
  /** A hook was called in a device state where it makes no sense (QEMU's "Invalid device state"). */
  | 'bad-state'
  /** A SET returned a data fd while one was open, or none where the plan promised one (QEMU's "data_fd out of sync"). */
  | 'data-fd-out-of-sync'
  /** A data transfer was asked for with no data session open. */
  | 'no-session'
  /** A write to the data fd made no progress. */
  | 'short-transfer'
  /** QEMU's migration blockers: several devices, and one of them lacks P2P. */
  | 'blocked'
  /** The stream ended without something the destination needs (a device's config state). */
  | 'incomplete'
  /** The peer reported a failure over the return path. */
  | 'peer-failed'
  /** Pending data never fitted the downtime budget within the allowed iterations. */
  | 'no-convergence'
  /** The byte stream carrying the migration failed. */
  | 'transport'
  /** Recovery needed a device reset, and the reset failed: the device state is unknown. */
  | 'reset-failed';

/** A migration step failed for a reason that is not a system call's errno or a malformed stream. */
export class MigrationError extends VfioError {
  readonly code = 'ERR_VFIO_MIGRATION';
  constructor(
    message: string,
    readonly reason: MigrationErrorReason,
    /** The device (mdev UUID, PCI address or idstr) concerned, when there is one. */
    readonly device?: string,
    options?: { cause?: unknown },
  ) {
    super(device === undefined ? message : `${device}: ${message}`, options);
  }
}

/** A migration was cancelled through its `AbortSignal`; `cause` is the signal's reason. */
export class MigrationAbortedError extends VfioError {
  readonly code = 'ERR_VFIO_MIGRATION_ABORTED';
  constructor(options?: { cause?: unknown }) {
    super('the migration was aborted', options);
  }
}

/**
 * A VM start, or an interrupt wiring (SET_IRQS with eventfds on INTx, MSI or
 * MSI-X), was refused because a device's interrupts are still held back:
 * the VMM has not opened the device's `InterruptGate` (its interrupt
 * controller is not restored yet), or the config-before-data stream never
 * sent the record that enables them. Nothing was changed.
 */
export class InterruptGateClosedError extends VfioError {
  readonly code = 'ERR_VFIO_INTERRUPT_GATE';
  constructor(
    /** The device (PCI address or idstr). */
    readonly device: string,
    /** `'gate'`: the interrupt controller is not restored; `'config'`: the stream has not enabled them yet. */
    readonly held: 'gate' | 'config',
  ) {
    super(
      held === 'gate'
        ? `${device}: interrupts are held (no wiring, no VM start) until its interrupt controller is restored (open the InterruptGate first)`
        : `${device}: interrupts are held (no wiring, no VM start) while the migrated config holds them back (no enable record was loaded)`,
    );
  }
}
