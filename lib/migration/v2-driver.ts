/**
 * The v2 migration protocol (Linux 5.18+, reference §4) behind
 * {@link MigrationDriver}: `VFIO_DEVICE_FEATURE` MIG_DEVICE_STATE SET/GET,
 * the data fd, `VFIO_MIG_GET_PRECOPY_INFO` and MIG_DATA_SIZE.
 *
 * The data fd is owned here and never handed out. The planner
 * (`planTransition`) says before each SET which arcs the kernel will walk, so
 * the driver knows whether a new fd must come back, whether the open one
 * continues (PRE_COPY → STOP_COPY gives -1 and the same fd goes on) and
 * whether it ends; a fd that contradicts the plan is "out of sync" (QEMU's
 * -EBADF), closed at once and reported.
 *
 * Every state change runs inside the {@link SavingLayoutSwitch}: a device
 * that offers vfio-ts's saving layout gets its regions re-mapped before it
 * enters PRE_COPY, PRE_COPY_P2P or STOP_COPY, and back after it left them.
 */
import { MigrationError, UapiFormatError, VfioClosedError, VfioSystemError, type VfioError } from '../errors.js';
import type { Sys } from '../sys/sys.js';
import type { VfioDevice } from '../vfio/device.js';
import { ioctl, type IoctlTarget } from '../vfio/ioctl.js';
import {
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_MIGRATION_STOP_COPY,
} from '../vfio/uapi/constants.js';
import { VFIO_MIG_GET_PRECOPY_INFO } from '../vfio/uapi/ioctls.js';
import { decode, encode } from '../vfio/uapi/layout.js';
import { vfio_device_feature_mig_data_size, vfio_device_feature_mig_state, vfio_precopy_info } from '../vfio/uapi/structs.js';
import type { MigrationDriver, PrecopyInfo } from './driver.js';
import { isMigrationState, isSavingState, isStateSupported, planTransition, returnsDataFd, stateName, type Arc, type MigrationState } from './fsm.js';
import { SavingLayoutSwitch } from './saving-layout.js';

/** Which way the open data fd carries state. */
type Session = 'saving' | 'resuming';

/** The v2 driver of one device: its migration state and its data fd. */
export class MigrationFile implements MigrationDriver {
  readonly protocol = 'v2';
  readonly resumeFraming = 'stream';
  readonly maxChunkSize = undefined;
  readonly sys: Sys;
  readonly #device: VfioDevice;
  readonly #layout: SavingLayoutSwitch;
  #state: MigrationState;
  #dataFd: number | undefined;
  #session: Session | undefined;
  /** Reads or writes in flight on the thread pool: the fd must outlive them. */
  #busy = 0;
  /** Fds to close once the I/O in flight settles (closing under a blocked read(2) would let the number be reused). */
  #closeLater: number[] = [];
  #closed = false;

  /**
   * @param flags the device's `VFIO_MIGRATION_*` flags, as read by {@link MigrationFile.open}
   * @throws MigrationError `unsupported` when the flags lack STOP_COPY
   */
  constructor(
    device: VfioDevice,
    readonly flags: number,
  ) {
    if ((flags & VFIO_MIGRATION_STOP_COPY) === 0) {
      throw new MigrationError(`migration flags 0x${flags.toString(16)} lack VFIO_MIGRATION_STOP_COPY: the device cannot migrate`, 'unsupported', device.name);
    }
    this.#device = device;
    this.#layout = new SavingLayoutSwitch(device);
    this.sys = device.sys;
    this.#state = VFIO_DEVICE_STATE_RUNNING;
    this.queryState();
  }

  /**
   * The v2 driver of `device`, after reading its migration flags and state.
   * @throws MigrationError `unsupported` when the device has no v2 migration (ENOTTY) or no STOP_COPY
   */
  static open(device: VfioDevice): MigrationFile {
    return new MigrationFile(device, device.migrationFlags());
  }

  get label(): string {
    return this.#device.name;
  }

  get state(): MigrationState {
    return this.#state;
  }

  /** True while a data session (a data fd) is open. */
  get hasSession(): boolean {
    return this.#dataFd !== undefined;
  }

  /**
   * MIG_DEVICE_STATE GET.
   * @throws UapiFormatError when the kernel reports a value that is no state, or one the flags do not allow
   */
  queryState(): MigrationState {
    this.#open();
    const p = this.#device.featureGet(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, vfio_device_feature_mig_state.size);
    const state = decode(vfio_device_feature_mig_state, p).device_state;
    if (!isMigrationState(state) || (state !== VFIO_DEVICE_STATE_ERROR && !isStateSupported(state, this.flags))) {
      throw new UapiFormatError(`device_state ${state} is not a state this device can be in (flags 0x${this.flags.toString(16)})`, vfio_device_feature_mig_state.name, 0);
    }
    this.#state = state;
    return state;
  }

  /**
   * MIG_DEVICE_STATE SET of `target`, with the session bookkeeping of the
   * planned arcs and the saving-layout switch around it. A SET to the
   * current state makes no call (it retries a failed restore of the normal layout).
   * @throws MigrationStateError before any system call when the kernel would refuse the move
   * @throws VfioSystemError when the SET fails; {@link state} is then re-read. Also when the
   *   saving layout cannot be set up (before the SET) or the normal one restored (after it)
   * @throws MigrationError `data-fd-out-of-sync` when the SET succeeded but its data fd contradicts the plan
   */
  setState(target: MigrationState): void {
    this.#open();
    const arcs = planTransition(this.#state, target, this.flags);
    // Already there: only a normal layout that failed to come back is tried again.
    if (arcs.length === 0) return this.#layout.settle(this.#state);
    this.#layout.change(this.#state, target, () => this.#set(target, arcs), () => this.#state);
  }

  /** The SET itself and what it does to the data session. */
  #set(target: MigrationState, arcs: readonly Arc[]): void {
    let dataFd: number;
    try {
      const p = encode(vfio_device_feature_mig_state, { device_state: target, data_fd: -1 });
      dataFd = decode(vfio_device_feature_mig_state, this.#device.featureSet(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, p)).data_fd;
    } catch (e) {
      this.#resync(e);
      throw e;
    }
    this.#state = target;
    if (arcs.some((a) => a.session === 'ends')) this.closeSession();
    const opens = returnsDataFd(arcs);
    if (dataFd < -1) throw new UapiFormatError(`data_fd ${dataFd} is neither -1 nor an fd`, vfio_device_feature_mig_state.name, 4);
    if (dataFd >= 0 && (!opens || this.#dataFd !== undefined)) {
      this.#release(dataFd);
      const why = opens ? 'while the previous one is still open' : `although no arc of ${this.#path(arcs)} opens a session`;
      throw new MigrationError(`data_fd out of sync: the kernel returned a data fd ${why}`, 'data-fd-out-of-sync', this.label);
    }
    if (dataFd < 0 && opens) {
      throw new MigrationError(`data_fd out of sync: ${this.#path(arcs)} opens a session but the kernel returned no data fd`, 'data-fd-out-of-sync', this.label);
    }
    if (dataFd >= 0) {
      this.#dataFd = dataFd;
      this.#session = target === VFIO_DEVICE_STATE_RESUMING ? 'resuming' : 'saving';
    }
  }

  /**
   * One `read(2)` of the saving data fd into `buf` (page-aligned buffers read
   * fastest). ENOMSG, the uAPI's temporary end of precopy data, reads as 0,
   * like mtty's plain 0 and QEMU's handling of both.
   * @throws MigrationError `no-session` when no saving session is open
   * @throws VfioSystemError for any other read failure
   */
  async read(buf: Uint8Array): Promise<number> {
    const fd = this.#sessionFd('saving');
    const n = await this.#io('read migration data', () => this.sys.readAsync(fd, buf)).catch((e: unknown) => {
      if (e instanceof VfioSystemError && e.code === 'ENOMSG') return 0;
      throw e;
    });
    if (!Number.isSafeInteger(n) || n < 0 || n > buf.byteLength) throw new UapiFormatError(`read returned ${n} for a ${buf.byteLength}-byte buffer`, 'migration data fd');
    return n;
  }

  /**
   * Writes all of `bytes` to the resuming data fd, looping over partial writes
   * (QEMU's `qemu_file_get_to_fd`).
   * @throws MigrationError `no-session` without a resuming session, `short-transfer` when a write makes no progress
   * @throws VfioSystemError when a write fails
   */
  async write(bytes: Uint8Array): Promise<void> {
    const fd = this.#sessionFd('resuming');
    let done = 0;
    while (done < bytes.byteLength) {
      const rest = bytes.subarray(done);
      const n = await this.#io('write migration data', () => this.sys.writeAsync(fd, rest));
      if (n === 0) throw new MigrationError(`write of ${rest.byteLength} bytes to the data fd wrote nothing`, 'short-transfer', this.label);
      if (!Number.isSafeInteger(n) || n < 0 || n > rest.byteLength) throw new UapiFormatError(`write returned ${n} for ${rest.byteLength} bytes`, 'migration data fd');
      done += n;
    }
  }

  /**
   * `VFIO_MIG_GET_PRECOPY_INFO` on the saving data fd. `flags` goes in as 0
   * and is ignored on the way out: mtty echoes it, and after 6.12 it means
   * something only to users who opted in (§4.7).
   * @throws MigrationError `no-session` without a saving session
   * @throws UapiFormatError for sizes no device state could have (beyond 2^53)
   */
  precopyInfo(): PrecopyInfo {
    const fd = this.#sessionFd('saving');
    const buf = encode(vfio_precopy_info, { argsz: vfio_precopy_info.size, flags: 0 });
    ioctl(this.#dataTarget(fd), VFIO_MIG_GET_PRECOPY_INFO, buf);
    const info = decode(vfio_precopy_info, buf);
    return {
      initialBytes: safeSize(info.initial_bytes, 'initial_bytes', vfio_precopy_info.name, 8),
      dirtyBytes: safeSize(info.dirty_bytes, 'dirty_bytes', vfio_precopy_info.name, 16),
    };
  }

  /**
   * `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`: the device's estimate of its STOP_COPY data.
   * @throws UapiFormatError for a size beyond 2^53
   */
  stopCopySize(): number {
    this.#open();
    const p = this.#device.featureGet(VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, vfio_device_feature_mig_data_size.size);
    const { stop_copy_length } = decode(vfio_device_feature_mig_data_size, p);
    return safeSize(stop_copy_length, 'stop_copy_length', vfio_device_feature_mig_data_size.name, 0);
  }

  closeSession(): void {
    const fd = this.#dataFd;
    this.#dataFd = undefined;
    this.#session = undefined;
    if (fd !== undefined) this.#release(fd);
  }

  /**
   * `VFIO_DEVICE_RESET`; the device is RUNNING afterwards (§4.2), the session
   * is gone and the normal mmap layout is back.
   * @throws VfioSystemError from closing the data fd, after the reset was still done
   */
  reset(): void {
    this.#open();
    // A close(2) error still releases the fd, so the reset that recovers the device goes ahead; the errno follows.
    let closeError: unknown;
    try {
      this.closeSession();
    } catch (e) {
      closeError = e;
    }
    this.#device.reset();
    this.#state = VFIO_DEVICE_STATE_RUNNING;
    this.#layout.settle(this.#state);
    if (closeError !== undefined) throw closeError;
  }

  /** What the device's remap IRQ could not do (SavingLayoutSwitch.onWarning). */
  onWarning(listener: (error: VfioError) => void): () => void {
    return this.#layout.onWarning(listener);
  }

  close(): void {
    if (this.#closed) return;
    this.closeSession();
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ------------------------------------------------------------ internals

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`migration driver of ${this.label}`);
  }

  #sessionFd(want: Session): number {
    this.#open();
    const fd = this.#dataFd;
    if (fd === undefined || this.#session !== want) {
      throw new MigrationError(`no ${want} session is open (device in ${stateName(this.#state)})`, 'no-session', this.label);
    }
    return fd;
  }

  #dataTarget(fd: number): IoctlTarget {
    return { sys: this.sys, fd, kind: 'migration', label: this.label };
  }

  /** Runs one async system call on the data fd, keeping the fd alive until it settles. */
  async #io(op: string, call: () => Promise<number>): Promise<number> {
    this.#busy++;
    try {
      return await call();
    } catch (e) {
      if (e instanceof VfioSystemError) e.annotate({ op, device: this.label });
      throw e;
    } finally {
      this.#busy--;
      if (this.#busy === 0) this.#closeDeferred();
    }
  }

  /** Closes `fd` now, or once the I/O in flight has settled. */
  #release(fd: number): void {
    this.#closeLater.push(fd);
    if (this.#busy === 0) this.#closeDeferred();
  }

  /**
   * Linux releases an fd even when close(2) reports an error, so every fd is
   * closed and the first errno goes to the caller of the step that ended the session.
   */
  #closeDeferred(): void {
    const fds = this.#closeLater;
    this.#closeLater = [];
    let failure: unknown;
    for (const fd of fds) {
      try {
        this.sys.close(fd);
      } catch (e) {
        if (e instanceof VfioSystemError) e.annotate({ op: 'close migration data fd', device: this.label });
        failure ??= e;
      }
    }
    if (failure !== undefined) throw failure;
  }

  /**
   * After a failed SET the device may be anywhere on the path, or in ERROR:
   * ask it, and drop the session if the device left it.
   * @throws MigrationError `bad-state` (caused by both failures) when the GET fails too; the state is then taken as ERROR, which only a reset leaves
   */
  #resync(setError: unknown): void {
    let getError: unknown;
    try {
      this.queryState();
    } catch (e) {
      getError = e;
      this.#state = VFIO_DEVICE_STATE_ERROR;
    }
    const keep = this.#session === 'saving' ? isSavingState(this.#state) : this.#state === VFIO_DEVICE_STATE_RESUMING;
    if (!keep) this.closeSession();
    if (getError !== undefined) {
      throw new MigrationError('the state change failed and the state cannot be read back', 'bad-state', this.label, {
        cause: new AggregateError([setError, getError]),
      });
    }
  }

  #path(arcs: readonly { from: MigrationState; to: MigrationState }[]): string {
    return [stateName(arcs[0]?.from ?? this.#state), ...arcs.map((a) => stateName(a.to))].join(' -> ');
  }
}

/** A u64 size from the kernel as a number; beyond 2^53 it describes no device state. */
function safeSize(value: bigint, field: string, struct: string, offset: number): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new UapiFormatError(`${field} ${value} is beyond any device state`, struct, offset);
  return Number(value);
}
