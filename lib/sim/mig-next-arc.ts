/**
 * The vfio core's `vfio_mig_get_next_state` as a simulated driver calls it
 * from its `set_state`: the next direct arc toward `target`, or the kernel's
 * -EINVAL for a target the FSM refuses (unknown, unsupported or blocked).
 */
import { MigrationStateError } from '../errors.js';
import { isMigrationState, nextState, type MigrationState } from '../migration/fsm.js';
import { fail } from './errno.js';

/** The next state on the way from `cur` to `target` for a device with `flags`; EINVAL when there is none. */
export function nextArc(cur: MigrationState, target: number, flags: number): MigrationState {
  if (!isMigrationState(target)) fail('EINVAL');
  try {
    return nextState(cur, target, flags);
  } catch (e) {
    if (e instanceof MigrationStateError) fail('EINVAL');
    throw e;
  }
}
