/**
 * What {@link VfioMigration} needs from a migration protocol: the device's
 * capabilities, state changes, the data transfer, estimates, and recovery.
 *
 * Two protocols sit behind it:
 * - v2 (`MigrationFile`, Linux 5.18+): `VFIO_DEVICE_FEATURE` MIG_DEVICE_STATE
 *   and a data fd (reference §4);
 * - v1 (`MigrationRegion`, Linux 5.8-5.17 and vendor drivers of that era): the
 *   `device_state` bits of a migration region and its data section (§3).
 *
 * States are spoken in v2's vocabulary (`enum vfio_device_mig_state`); a v1
 * driver maps them onto its bits: RUNNING = 001, PRE_COPY = 011 (RUNNING |
 * SAVING), STOP_COPY = 010, STOP = 000, RESUMING = 100, ERROR = 110, and it
 * reports `VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY` (v1 has no P2P
 * states).
 *
 * The data transfer is chunked by the driver: each {@link MigrationDriver.read}
 * returns one chunk, which the save hooks frame as one `DEV_DATA_STATE` record.
 * v2's data fd is an opaque byte stream, so on the destination any split will
 * do. v1's "same transaction size" rule (§3.5) needs each source chunk written
 * back as one unit: such a driver says `resumeFraming: 'record'`, and the load
 * hooks then hand it exactly one DATA record per {@link MigrationDriver.write}.
 */
import type { VfioError } from '../errors.js';
import type { Sys } from '../sys/sys.js';
import type { MigrationState } from './fsm.js';

/** What the device still has to send in its precopy phase (`VFIO_MIG_GET_PRECOPY_INFO`). */
export interface PrecopyInfo {
  /**
   * Bytes of the initial image not yet read. Drains as it is read, and only
   * then may a switchover-ack destination approve (v1 has no such split: 0).
   */
  readonly initialBytes: number;
  /** Bytes of state that changed and were not read yet; rises with device activity (v1: `pending_bytes`). */
  readonly dirtyBytes: number;
}

/**
 * How the destination must feed {@link MigrationDriver.write}:
 * - `'stream'`: in any split, as bytes arrive (v2: an opaque byte stream);
 * - `'record'`: exactly the chunks the source read, one `DEV_DATA_STATE`
 *   record per call, never split nor merged (v1's same transaction size).
 */
export type ResumeFraming = 'stream' | 'record';

/**
 * One device's migration protocol. The driver owns whatever carries the data
 * (v2: the data fd, never handed out), opens and closes it as state changes
 * require, and throws typed errors: `VfioSystemError` for a failed system call
 * (with its errno), `UapiFormatError` for nonsense from the kernel,
 * `MigrationStateError` for a state change refused before any system call,
 * `MigrationError` for protocol trouble (a data fd out of sync, no session).
 *
 * Calls are not reentrant: at most one {@link read} or {@link write} is in
 * flight, and the caller awaits it before anything else but {@link close}.
 */
export interface MigrationDriver extends Disposable {
  /** Which protocol this is. */
  readonly protocol: 'v1' | 'v2';
  /** The device name (mdev UUID or PCI address), for messages and QEMU idstrs. */
  readonly label: string;
  /** The system the device lives on; the hooks allocate page-aligned buffers from it. */
  readonly sys: Sys;
  /** `VFIO_MIGRATION_*` flags: which states exist. Always includes STOP_COPY. */
  readonly flags: number;
  /**
   * The state the device was last seen in: after each {@link setState},
   * {@link queryState} and {@link reset}, and re-read after a failed change
   * (ERROR when even that fails: only a reset helps then).
   */
  readonly state: MigrationState;
  /** How the destination must feed {@link write}. */
  readonly resumeFraming: ResumeFraming;
  /**
   * Listens for failures that happen outside any call (a remap IRQ's
   * re-map, `SavingLayoutSwitch.onWarning`); returns the unsubscribe.
   * Optional: a driver without such work has none to report.
   */
  onWarning?(listener: (error: VfioError) => void): () => void;
  /**
   * The largest chunk one {@link read} may return or one {@link write} accept,
   * when the protocol bounds it (v1: the data section); the hooks make their
   * buffer at least this big. `undefined` when unbounded (v2).
   */
  readonly maxChunkSize: number | undefined;

  /** Reads the current state from the device and caches it. */
  queryState(): MigrationState;

  /**
   * Moves the device to `target`, as one request to the kernel. Opens the data
   * session when the last arc opens one (RUNNING→PRE_COPY, STOP→STOP_COPY,
   * STOP→RESUMING, ...), keeps it across PRE_COPY(_P2P)→STOP_COPY, and ends it
   * when an arc ends it. A no-op when the device is already in `target`.
   * On failure {@link state} tells where the device is now.
   */
  setState(target: MigrationState): void;

  /**
   * Reads the next chunk of the saving session into `buf` and returns its
   * length (at most `buf.length`). 0 means "nothing more now" in a precopy
   * state (v2: ENOMSG, or mtty's 0) and "complete" in STOP_COPY.
   */
  read(buf: Uint8Array): Promise<number>;

  /** Writes all of `bytes` into the resuming session (see {@link resumeFraming}). */
  write(bytes: Uint8Array): Promise<void>;

  /** The precopy estimates; only meaningful in PRE_COPY or PRE_COPY_P2P (the kernel refuses elsewhere). */
  precopyInfo(): PrecopyInfo;

  /** The device's estimate of its STOP_COPY data size in bytes (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`). */
  stopCopySize(): number;

  /**
   * Closes the data session without a state change, as QEMU's cleanup hooks
   * do (on the destination before RESUMING→STOP: drivers must not take that
   * close for an abort). Idempotent.
   */
  closeSession(): void;

  /** `VFIO_DEVICE_RESET`: the device is RUNNING afterwards and any session is gone. */
  reset(): void;

  /** Releases what the driver owns (the data fd); the device stays open. Idempotent. */
  close(): void;
}
