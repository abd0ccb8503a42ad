/**
 * mtty's migration driver (`mtty_migration_ops`): the state walk of
 * `mtty_set_state` over `vfio_mig_get_next_state`, the arcs of
 * `mtty_step_state`, and the saving and resuming sessions. Also the
 * injectable device-side faults the simulator adds for tests.
 */
import { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } from '../migration/state-names.js';
import type { MigrationState } from '../migration/fsm.js';
import {
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
} from '../vfio/uapi/constants.js';
import { checkArcFault, type SimArcFault } from './arc-fault.js';
import { fail } from './errno.js';
import type { SimFile } from './file.js';
import { nextArc } from './mig-next-arc.js';
import { MttyResumeFile, MttySaveFile, mttyDataSize, type MttyMigrationFileOwner, type MttySaveFaults } from './mtty-migration-file.js';
import type { SimMigrationOps } from './vfio-device.js';


/** A failure injected into one arc of `mtty_step_state`. */
export type MttyArcFault = SimArcFault;

/**
 * Device-side faults for tests; none of them exists in mtty.c. Every field
 * stays in force until the plan is replaced.
 */
export interface MttyFaultPlan extends MttySaveFaults {
  /** Fail this arc whenever a SET walks it. */
  readonly arc?: MttyArcFault;
}

/** What the migration driver needs from the device. */
export interface MttyMigrationDevice {
  readonly name: string;
  readonly nrPorts: 1 | 2;
  /** The fault plan in force now (tests replace it at any time). */
  faults(): MttyFaultPlan;
  /** Writes port `index`'s `struct serial_port` image into `buf` at `at`. */
  encodePort(index: number, buf: Uint8Array, at: number): void;
  /** Loads port `index` from the image in `buf` at `at`. */
  decodePort(index: number, buf: Uint8Array, at: number): void;
}

/** `mtty_migration_ops` with `migration_flags`, over `mdev_state->state` and the two migration files. */
export class MttyMigration implements SimMigrationOps, MttyMigrationFileOwner {
  readonly flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
  #state: MigrationState = RUNNING;
  #saving: MttySaveFile | null = null;
  #resuming: MttyResumeFile | null = null;

  constructor(private readonly device: MttyMigrationDevice) {}

  get name(): string {
    return this.device.name;
  }

  get nrPorts(): 1 | 2 {
    return this.device.nrPorts;
  }

  get state(): MigrationState {
    return this.#state;
  }

  get saveFaults(): MttySaveFaults {
    return this.device.faults();
  }

  /** `mtty_get_state`. */
  getState(): number {
    return this.#state;
  }

  /** `mtty_get_data_size`. */
  getDataSize(): bigint {
    return BigInt(mttyDataSize(this.device.nrPorts));
  }

  /**
   * `mtty_set_state`: one arc at a time; on failure the device stays in the
   * last state reached (mtty never enters ERROR by itself).
   */
  setState(target: number): SimFile | null {
    let ret: SimFile | null = null;
    while (this.#state !== target) {
      const next = nextArc(this.#state, target, this.flags);
      ret = this.#stepState(next);
      this.#state = next;
    }
    return ret;
  }

  /**
   * `mtty_reset`: the deferred reset runs at the state mutex's next unlock,
   * which in the single-threaded simulator is at once: RUNNING, files
   * disabled. The UARTs are not reset.
   */
  reset(): void {
    this.#state = RUNNING;
    this.disableFiles();
  }

  /** `mtty_disable_files`: the old fds fail with ENODEV from now on. */
  disableFiles(): void {
    if (this.#saving !== null) {
      this.#saving.disable();
      this.#saving.file.put();
      this.#saving = null;
    }
    if (this.#resuming !== null) {
      this.#resuming.disable();
      this.#resuming.file.put();
      this.#resuming = null;
    }
  }

  /** `mtty_step_state`: one direct arc; a new file (with a reference for the caller) on opening arcs. */
  #stepState(next: MigrationState): SimFile | null {
    const cur = this.#state;
    checkArcFault(this.device.faults().arc, cur, next, () => {
      this.#state = ERROR;
    });
    // No-ops: mtty does no DMA and needs no explicit start or stop.
    if (
      (cur === RUNNING && next === RUNNING_P2P) ||
      (cur === RUNNING_P2P && (next === RUNNING || next === STOP)) ||
      (cur === PRE_COPY && next === PRE_COPY_P2P) ||
      (cur === PRE_COPY_P2P && next === PRE_COPY) ||
      (cur === STOP && next === RUNNING_P2P)
    ) {
      return null;
    }
    if (cur === RESUMING && next === STOP) {
      this.#loadState();
      this.disableFiles();
      return null;
    }
    // Leaving a session ends it.
    if ((cur === PRE_COPY && next === RUNNING) || (cur === PRE_COPY_P2P && next === RUNNING_P2P) || (cur === STOP_COPY && next === STOP)) {
      this.disableFiles();
      return null;
    }
    if (
      (cur === RUNNING && next === PRE_COPY) ||
      (cur === RUNNING_P2P && next === PRE_COPY_P2P) ||
      (cur === STOP && next === STOP_COPY) ||
      (cur === PRE_COPY_P2P && next === STOP_COPY)
    ) {
      return this.#saveDeviceData(next);
    }
    if (cur === STOP && next === RESUMING) {
      const migf = new MttyResumeFile(this);
      this.#resuming = migf;
      return migf.file.get();
    }
    // vfio_mig_get_next_state() uses no other arc (the kernel WARNs here).
    fail('EINVAL');
  }

  /**
   * `mtty_save_device_data`: opens the session (header only), or reuses it;
   * entering STOP_COPY appends the ports. Only a new session returns a file.
   */
  #saveDeviceData(next: MigrationState): SimFile | null {
    let ret: SimFile | null = null;
    let migf = this.#saving;
    if (migf === null) {
      migf = new MttySaveFile(this);
      this.#saving = migf;
      ret = migf.file.get();
    } else if (next !== STOP_COPY) {
      return null;
    }
    if (next === STOP_COPY) migf.saveState((i, buf, at) => this.device.encodePort(i, buf, at));
    return ret;
  }

  /** `mtty_load_state`. */
  #loadState(): void {
    const migf = this.#resuming;
    // RESUMING always has its file: only this arc and a reset end the session.
    if (migf === null) fail('EINVAL');
    migf.loadState((i, buf, at) => this.device.decodePort(i, buf, at));
  }
}
