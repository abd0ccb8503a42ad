/**
 * The devices of one VM, migrated together: QEMU's VM-state notifiers run
 * every device's `prepare_cb` before any device's state change, so all P2P
 * devices are quiesced (no new peer-to-peer DMA) before any one stops, and
 * the same on start. With several devices, one without P2P blocks migration
 * (QEMU's blocker in `vfio_migration_realize`): it could not be quiesced
 * while its peers still target it.
 */
import { MigrationError } from '../errors.js';
import type { VfioMigration } from './hooks.js';

/** The hooks of several devices, stopped and started as one VM. */
export class MigrationGroup {
  readonly members: readonly VfioMigration[];

  /**
   * @throws MigrationError `blocked` for several devices when one lacks P2P
   */
  constructor(members: readonly VfioMigration[]) {
    if (members.length > 1) {
      const lacking = members.find((m) => !m.supportsP2P);
      if (lacking !== undefined) {
        throw new MigrationError('cannot migrate several devices when one of them lacks VFIO_MIGRATION_P2P', 'blocked', lacking.idstr);
      }
    }
    this.members = [...members];
  }

  /** QEMU's VM stop for the switchover: every device's P2P quiesce, then every device's stop (STOP_COPY or STOP). */
  stop(): void {
    for (const m of this.members) m.prepareStop();
    for (const m of this.members) m.vmStop();
  }

  /** QEMU's VM start: every device to RUNNING_P2P (the destination's data is validated there), then every device RUNNING. */
  start(): void {
    for (const m of this.members) m.prepareStart();
    for (const m of this.members) m.vmStart();
  }

  /** The sum of the devices' `state_pending_estimate`. */
  pendingEstimate(): number {
    return this.members.reduce((sum, m) => sum + m.statePendingEstimate(), 0);
  }

  /** The sum of the devices' `state_pending_exact`. */
  pendingExact(): number {
    return this.members.reduce((sum, m) => sum + m.statePendingExact(), 0);
  }

  /** The devices whose `saveLiveIterate` has something to do. */
  iterating(): VfioMigration[] {
    return this.members.filter((m) => m.isActiveIterate());
  }
}
