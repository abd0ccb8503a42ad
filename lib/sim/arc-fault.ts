/**
 * A failure a simulated migration driver injects into one arc of its state
 * walk (no in-tree driver has such a hook): the arc fails with an errno, and
 * optionally leaves the device in ERROR, from which only VFIO_DEVICE_RESET
 * gets it out.
 */
import type { MigrationState } from '../migration/fsm.js';
import type { ErrnoName } from '../sys/errno.js';
import { fail } from './errno.js';

/** Fail the arc `from → to` whenever a SET walks it. */
export interface SimArcFault {
  readonly from: MigrationState;
  readonly to: MigrationState;
  readonly errno: ErrnoName;
  /** Leave the device in ERROR instead of in `from`. */
  readonly enterError?: boolean;
}

/**
 * Fails the arc `cur → next` if `fault` names it, after calling `enterError`
 * when the fault asks for ERROR.
 */
export function checkArcFault(fault: SimArcFault | undefined, cur: MigrationState, next: MigrationState, enterError: () => void): void {
  if (fault === undefined || fault.from !== cur || fault.to !== next) return;
  if (fault.enterError === true) enterError();
  fail(fault.errno);
}
