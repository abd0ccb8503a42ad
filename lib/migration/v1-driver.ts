/**
 * The v1 migration protocol (reference §3) behind {@link MigrationDriver}:
 * the driver interface's states are mapped onto the `device_state` bits of a
 * {@link MigrationRegion} (RUNNING 001, PRE_COPY 011, STOP_COPY 010, STOP
 * 000, RESUMING 100, ERROR 110), each {@link read} is one §3.4 iteration and
 * each {@link write} one §3.5 iteration.
 *
 * v1 has no data fd: the "session" is the device's saving or resuming state
 * itself, so opening and closing one is the state change, and
 * {@link closeSession} has nothing to release.
 *
 * Every state change runs inside the {@link SavingLayoutSwitch}: a device
 * that offers vfio-ts's saving layout gets its regions re-mapped before the
 * SAVING bit is set, and back after it is cleared.
 */
import { MigrationError, MigrationStateError, UapiFormatError, VfioArgumentError, VfioClosedError, type VfioError } from '../errors.js';
import type { Sys } from '../sys/sys.js';
import type { VfioDevice } from '../vfio/device.js';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
} from '../vfio/uapi/constants.js';
import { vfio_device_migration_info } from '../vfio/uapi/structs.js';
import type { MigrationDriver, PrecopyInfo } from './driver.js';
import { stateName, type MigrationState } from './fsm.js';
import { SavingLayoutSwitch } from './saving-layout.js';
import { MigrationRegion, V1_HEADER_SIZE, type MigrationRegionOptions } from './v1-region.js';
import { migrationStateToV1, v1StateName, v1ToMigrationState } from './v1-state.js';

/** The v1 driver of one device. */
export class MigrationRegionDriver implements MigrationDriver {
  readonly protocol = 'v1';
  /** Every v1 device has pre-copy (§3.3: a vendor must accept 011 even with nothing to send) and no P2P states. */
  readonly flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY;
  /** Each source chunk is one transaction and must reach the destination whole (§3.5). */
  readonly resumeFraming = 'record';
  readonly sys: Sys;
  readonly #device: VfioDevice;
  readonly #region: MigrationRegion;
  readonly #layout: SavingLayoutSwitch;
  #state: MigrationState = VFIO_DEVICE_STATE_RUNNING;
  #closed = false;

  constructor(device: VfioDevice, region: MigrationRegion) {
    this.#device = device;
    this.#region = region;
    this.#layout = new SavingLayoutSwitch(device);
    this.sys = device.sys;
    this.queryState();
  }

  /**
   * The v1 driver of `device`, after finding its migration region.
   * @throws MigrationError `unsupported` when the device has no v1 migration region
   */
  static open(device: VfioDevice, options: MigrationRegionOptions = {}): MigrationRegionDriver {
    const region = MigrationRegion.find(device, options);
    if (region === undefined) throw new MigrationError('the device has no v1 migration region (type 3, subtype 1)', 'unsupported', device.name);
    return new MigrationRegionDriver(device, region);
  }

  get label(): string {
    return this.#device.name;
  }

  get state(): MigrationState {
    return this.#state;
  }

  /** The protocol object underneath, for what the driver interface does not cover. */
  get region(): MigrationRegion {
    return this.#region;
  }

  /** A transaction can use the whole region past the header: data_offset is the vendor's choice. */
  get maxChunkSize(): number {
    return this.#region.region.size - V1_HEADER_SIZE;
  }

  /**
   * Reads `device_state`.
   * @throws UapiFormatError for RESUMING combined with another bit, which no state means
   */
  queryState(): MigrationState {
    this.#open();
    const raw = this.#region.readDeviceState();
    const state = v1ToMigrationState(raw);
    if (state === undefined) {
      throw new UapiFormatError(`device_state ${v1StateName(raw)} is not a valid v1 state`, vfio_device_migration_info.name, vfio_device_migration_info.fields.device_state.offset);
    }
    this.#state = state;
    return state;
  }

  /**
   * Writes the v1 bits of `target` (a read-modify-write of `device_state`),
   * with the saving-layout switch around it. After a failure the state is
   * re-read; a device found in the error state has already been reset by
   * {@link MigrationRegion.setState}.
   * @throws MigrationStateError before any system call for ERROR, the P2P states, or a device known to be in ERROR
   * @throws MigrationV1StateError, MigrationV1TransitionError from {@link MigrationRegion.setState}
   * @throws VfioSystemError when the saving layout cannot be set up (before the write) or the normal one restored (after it)
   */
  setState(target: MigrationState): void {
    this.#open();
    // Already there: only a normal layout that failed to come back is tried again.
    if (target === this.#state) return this.#layout.settle(this.#state);
    const bits = migrationStateToV1(target);
    if (bits === undefined || this.#state === VFIO_DEVICE_STATE_ERROR) {
      const reason = this.#state === VFIO_DEVICE_STATE_ERROR ? 'current-is-error' : target === VFIO_DEVICE_STATE_ERROR ? 'target-is-error' : 'target-unsupported';
      throw new MigrationStateError(`${this.label}: v1 cannot move from ${stateName(this.#state)} to ${stateName(target)} (${reason})`, this.#state, target, this.flags, reason);
    }
    this.#layout.change(
      this.#state,
      target,
      () => {
        try {
          this.#region.setState(bits);
        } catch (e) {
          this.#resync();
          throw e;
        }
        this.#state = target;
      },
      () => this.#state,
    );
  }

  /**
   * One §3.4 iteration into `buf`, which must hold {@link maxChunkSize}
   * bytes: a v1 chunk is consumed as it is read and could not be read again.
   * @returns the chunk's length; 0 when nothing is pending (complete, in STOP_COPY)
   * @throws MigrationError `no-session` outside PRE_COPY and STOP_COPY
   * @throws VfioArgumentError for a buffer smaller than {@link maxChunkSize}
   */
  async read(buf: Uint8Array): Promise<number> {
    this.#session(this.#state === VFIO_DEVICE_STATE_PRE_COPY || this.#state === VFIO_DEVICE_STATE_STOP_COPY, 'saving');
    if (buf.byteLength < this.maxChunkSize) {
      throw new VfioArgumentError('read migration data', `a ${buf.byteLength}-byte buffer cannot hold a ${this.maxChunkSize}-byte v1 transaction`);
    }
    const chunk = this.#region.readChunk();
    if (chunk === null) return 0;
    buf.set(chunk);
    return chunk.byteLength;
  }

  /**
   * One §3.5 iteration: `bytes` must be one whole source chunk.
   * @throws MigrationError `no-session` outside RESUMING
   */
  async write(bytes: Uint8Array): Promise<void> {
    this.#session(this.#state === VFIO_DEVICE_STATE_RESUMING, 'resuming');
    this.#region.writeChunk(bytes);
  }

  /**
   * v1 has one figure, `pending_bytes`: it is reported as dirty bytes, with no
   * initial bytes (so a switchover-ack destination is never waited for).
   * @throws MigrationError `no-session` outside PRE_COPY
   */
  precopyInfo(): PrecopyInfo {
    this.#session(this.#state === VFIO_DEVICE_STATE_PRE_COPY, 'pre-copy');
    return { initialBytes: 0, dirtyBytes: this.#pending() };
  }

  /**
   * v1 has no MIG_DATA_SIZE: the estimate is `pending_bytes` in the saving
   * states, and 0 elsewhere, where a v1 device reports nothing.
   */
  stopCopySize(): number {
    this.#open();
    return this.#state === VFIO_DEVICE_STATE_PRE_COPY || this.#state === VFIO_DEVICE_STATE_STOP_COPY ? this.#pending() : 0;
  }

  /** Nothing to release: the session ends with the state change that leaves it. */
  closeSession(): void {}

  /** `VFIO_DEVICE_RESET`: the device is RUNNING afterwards, with the normal mmap layout. */
  reset(): void {
    this.#open();
    this.#region.reset();
    this.#state = VFIO_DEVICE_STATE_RUNNING;
    this.#layout.settle(this.#state);
  }

  /** What the device's remap IRQ could not do (SavingLayoutSwitch.onWarning). */
  onWarning(listener: (error: VfioError) => void): () => void {
    return this.#layout.onWarning(listener);
  }

  /** Releases the data section's mappings; the device stays open. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#region.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ------------------------------------------------------------ internals

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`migration driver of ${this.label}`);
  }

  #session(ok: boolean, want: string): void {
    this.#open();
    if (!ok) throw new MigrationError(`no ${want} session is open (device in ${stateName(this.#state)})`, 'no-session', this.label);
  }

  /** pending_bytes as a number; beyond 2^53 it describes no device state. */
  #pending(): number {
    const pending = this.#region.pendingBytes();
    if (pending > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new UapiFormatError(`pending_bytes ${pending} is beyond any device state`, vfio_device_migration_info.name, vfio_device_migration_info.fields.pending_bytes.offset);
    }
    return Number(pending);
  }

  /** After a failed change: where the device is now, or ERROR when it cannot be read (only a reset helps then). */
  #resync(): void {
    try {
      this.queryState();
    } catch {
      this.#state = VFIO_DEVICE_STATE_ERROR;
    }
  }
}
