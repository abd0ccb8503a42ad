/**
 * The v2 migration driver of the simulated bulk device: the state walk over
 * `vfio_mig_get_next_state` one arc at a time, as the in-tree drivers do,
 * with a saving session that PRE_COPY opens and STOP_COPY continues, and a
 * resuming session validated by RESUMING → STOP. Faults are injected per arc
 * and into the reported sizes.
 */
import { STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } from '../migration/state-names.js';
import type { MigrationState } from '../migration/fsm.js';
import type { ErrnoName } from '../sys/errno.js';
import { VFIO_DEVICE_STATE_ERROR } from '../vfio/uapi/constants.js';
import { checkArcFault, type SimArcFault } from './arc-fault.js';
import { BulkResumeFile, BulkSaveFile, bulkStreamSize, type BulkStreamFaults, type BulkStreamOwner } from './bulk-stream.js';
import { fail } from './errno.js';
import type { SimFile } from './file.js';
import { nextArc } from './mig-next-arc.js';
import type { SimMigrationOps } from './vfio-device.js';

/** Device-side faults of the bulk device; every field stays in force until the plan is replaced. */
export interface BulkFaultPlan extends BulkStreamFaults {
  /** Fail this arc whenever a SET walks it. */
  readonly arc?: SimArcFault;
  /** MIG_DATA_SIZE reports this instead of the truth (0, 2^64 - 1, ...). */
  readonly dataSize?: bigint;
  /** MIG_DATA_SIZE fails with this errno. */
  readonly dataSizeErrno?: ErrnoName;
}

/** What the driver needs from the device. */
export interface BulkMigrationDevice {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly pageSize: number;
  readonly pageCount: number;
  /** The fault plan in force now (tests replace it at any time). */
  faults(): BulkFaultPlan;
  /** Runs before each arc the walk takes; a variant driver refuses the arc by failing (`fail('EBUSY')`). */
  checkArc(from: MigrationState, to: MigrationState): void;
}

/** True in the states where the device runs, so its state may change. */
export function bulkRunning(state: number): boolean {
  return state === RUNNING || state === RUNNING_P2P || state === PRE_COPY || state === PRE_COPY_P2P;
}

/** `vfio_migration_ops` of the bulk device. */
export class BulkMigration implements SimMigrationOps, BulkStreamOwner {
  #state: MigrationState = RUNNING;
  #saving: BulkSaveFile | null = null;
  #resuming: BulkResumeFile | null = null;

  constructor(
    private readonly device: BulkMigrationDevice,
    readonly flags: number,
  ) {}

  get name(): string {
    return this.device.name;
  }
  get bytes(): Uint8Array {
    return this.device.bytes;
  }
  get pageSize(): number {
    return this.device.pageSize;
  }
  get pageCount(): number {
    return this.device.pageCount;
  }
  get faults(): BulkFaultPlan {
    return this.device.faults();
  }
  get state(): MigrationState {
    return this.#state;
  }

  getState(): number {
    return this.#state;
  }

  /** The rest of the saving stream while a session is open, else the whole stream. */
  getDataSize(): bigint {
    const faults = this.device.faults();
    if (faults.dataSizeErrno !== undefined) fail(faults.dataSizeErrno);
    if (faults.dataSize !== undefined) return faults.dataSize;
    return BigInt(this.#saving?.remaining ?? bulkStreamSize(this.device.pageSize, this.device.pageCount));
  }

  /** One arc at a time; on failure the device stays in the last state reached (or ERROR, if the fault says so). */
  setState(target: number): SimFile | null {
    let ret: SimFile | null = null;
    while (this.#state !== target) {
      const next = nextArc(this.#state, target, this.flags);
      ret = this.#step(next);
      this.#state = next;
    }
    return ret;
  }

  /** The device wrote page `page` (the saving session re-sends it). */
  pageWritten(page: number): void {
    this.#saving?.pageWritten(page);
  }

  /** VFIO_DEVICE_RESET: RUNNING, sessions ended. Like mtty's, it leaves the device's data alone. */
  reset(): void {
    this.#state = RUNNING;
    this.disableFiles();
  }

  /** Ends both sessions: their fds fail with ENODEV from now on. */
  disableFiles(): void {
    this.#saving?.disable();
    this.#saving?.file.put();
    this.#saving = null;
    this.#resuming?.disable();
    this.#resuming?.file.put();
    this.#resuming = null;
  }

  #step(next: MigrationState): SimFile | null {
    const cur = this.#state;
    this.device.checkArc(cur, next);
    checkArcFault(this.device.faults().arc, cur, next, () => {
      this.#state = VFIO_DEVICE_STATE_ERROR;
    });
    if ((cur === RUNNING && next === PRE_COPY) || (cur === RUNNING_P2P && next === PRE_COPY_P2P) || (cur === STOP && next === STOP_COPY)) {
      const migf = new BulkSaveFile(this);
      if (next === STOP_COPY) migf.stop();
      this.#saving = migf;
      return migf.file.get();
    }
    if ((cur === PRE_COPY || cur === PRE_COPY_P2P) && next === STOP_COPY) {
      this.#saving?.stop();
      return null;
    }
    if ((cur === PRE_COPY && next === RUNNING) || (cur === PRE_COPY_P2P && next === RUNNING_P2P) || (cur === STOP_COPY && next === STOP)) {
      this.disableFiles();
      return null;
    }
    if (cur === STOP && next === RESUMING) {
      const migf = new BulkResumeFile(this);
      this.#resuming = migf;
      return migf.file.get();
    }
    if (cur === RESUMING && next === STOP) {
      // The session is the driver's, so it survives the user closing the fd first (as QEMU does).
      if (this.#resuming === null) fail('EINVAL');
      this.#resuming.validate();
      this.disableFiles();
    }
    // Everything else (P2P quiesce and un-quiesce, RUNNING <-> STOP without P2P) changes nothing here.
    return null;
  }
}
