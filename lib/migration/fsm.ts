/**
 * The VFIO v2 migration state machine as data: the kernel's first-hop table
 * and algorithm (`vfio_mig_get_next_state`, drivers/vfio/vfio_main.c, 6.12),
 * and a planner that lists the exact arcs a driver walks for one
 * `MIG_DEVICE_STATE` SET, with what each arc does to the data-transfer session.
 *
 * The library sends the target in one SET, as QEMU does; the plan tells it in
 * advance whether the kernel will answer -EINVAL and whether a data fd comes back.
 */
import { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } from './state-names.js';
import { MigrationStateError, type MigrationStateErrorReason } from '../errors.js';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_RUNNING_P2P,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
} from '../vfio/uapi/constants.js';

/** A value of `enum vfio_device_mig_state` (0 = ERROR ... 7 = PRE_COPY_P2P). */
export type MigrationState =
  | typeof VFIO_DEVICE_STATE_ERROR
  | typeof VFIO_DEVICE_STATE_STOP
  | typeof VFIO_DEVICE_STATE_RUNNING
  | typeof VFIO_DEVICE_STATE_STOP_COPY
  | typeof VFIO_DEVICE_STATE_RESUMING
  | typeof VFIO_DEVICE_STATE_RUNNING_P2P
  | typeof VFIO_DEVICE_STATE_PRE_COPY
  | typeof VFIO_DEVICE_STATE_PRE_COPY_P2P;

/** What one arc does to the data-transfer session (the data fd). */
export type SessionEffect = 'opens' | 'continues' | 'ends' | 'none';

/** One direct arc a driver implements, as walked by the kernel. */
export interface Arc {
  readonly from: MigrationState;
  readonly to: MigrationState;
  readonly session: SessionEffect;
}

// Short aliases so the table below reads like the kernel's.

const NAMES: readonly string[] = ['ERROR', 'STOP', 'RUNNING', 'STOP_COPY', 'RESUMING', 'RUNNING_P2P', 'PRE_COPY', 'PRE_COPY_P2P'];

/**
 * `state_flags_table`: the migration flags a state needs. ERROR is absent
 * (the kernel uses ~0u), so it is never supported, as are unknown values.
 */
const REQUIRED_FLAGS: ReadonlyMap<number, number> = new Map([
  [STOP, VFIO_MIGRATION_STOP_COPY],
  [RUNNING, VFIO_MIGRATION_STOP_COPY],
  [STOP_COPY, VFIO_MIGRATION_STOP_COPY],
  [RESUMING, VFIO_MIGRATION_STOP_COPY],
  [RUNNING_P2P, VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P],
  [PRE_COPY, VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY],
  [PRE_COPY_P2P, VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY],
]);

/**
 * `vfio_from_fsm_table`: `FIRST_HOP[cur][target]` is the first state on the way
 * from `cur` to `target` when every optional feature is present.
 * Rows and columns are in state order: ERROR, STOP, RUNNING, STOP_COPY,
 * RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P.
 */
const FIRST_HOP: readonly (readonly MigrationState[])[] = [
  /* ERROR        */ [ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR],
  /* STOP         */ [ERROR, STOP, RUNNING_P2P, STOP_COPY, RESUMING, RUNNING_P2P, RUNNING_P2P, RUNNING_P2P],
  /* RUNNING      */ [ERROR, RUNNING_P2P, RUNNING, RUNNING_P2P, RUNNING_P2P, RUNNING_P2P, PRE_COPY, RUNNING_P2P],
  /* STOP_COPY    */ [ERROR, STOP, STOP, STOP_COPY, STOP, STOP, ERROR, ERROR],
  /* RESUMING     */ [ERROR, STOP, STOP, STOP, RESUMING, STOP, STOP, STOP],
  /* RUNNING_P2P  */ [ERROR, STOP, RUNNING, STOP, STOP, RUNNING_P2P, RUNNING, PRE_COPY_P2P],
  /* PRE_COPY     */ [ERROR, RUNNING, RUNNING, PRE_COPY_P2P, RUNNING, RUNNING, PRE_COPY, PRE_COPY_P2P],
  /* PRE_COPY_P2P */ [ERROR, RUNNING_P2P, RUNNING_P2P, STOP_COPY, RUNNING_P2P, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P],
];

/** Arcs that create a new data fd (mtty's and QEMU's "open" arcs). */
const OPENING_ARCS: ReadonlySet<string> = new Set([
  arcKey(RUNNING, PRE_COPY),
  arcKey(RUNNING_P2P, PRE_COPY_P2P),
  arcKey(STOP, STOP_COPY),
  arcKey(STOP, RESUMING),
]);
/** Arcs that move inside the saving group, keeping the same fd. */
const CONTINUING_ARCS: ReadonlySet<string> = new Set([
  arcKey(PRE_COPY, PRE_COPY_P2P),
  arcKey(PRE_COPY_P2P, PRE_COPY),
  arcKey(PRE_COPY, STOP_COPY),
  arcKey(PRE_COPY_P2P, STOP_COPY),
]);
/** Arcs after which reads or writes on the old fd fail. */
const ENDING_ARCS: ReadonlySet<string> = new Set([
  arcKey(STOP_COPY, STOP),
  arcKey(PRE_COPY, RUNNING),
  arcKey(PRE_COPY_P2P, RUNNING_P2P),
  arcKey(RESUMING, STOP),
]);

function arcKey(from: number, to: number): string {
  return `${from}>${to}`;
}

/** True if `value` is a value of `enum vfio_device_mig_state` (e.g. one read back with GET). */
export function isMigrationState(value: number): value is MigrationState {
  return Number.isInteger(value) && value >= ERROR && value <= PRE_COPY_P2P;
}

/** The uAPI name of a state (`'PRE_COPY_P2P'`), or `'<unknown N>'`. */
export function stateName(state: number): string {
  return isMigrationState(state) ? NAMES[state] : `<unknown ${state}>`;
}

/**
 * True if a device with these `VFIO_DEVICE_FEATURE_MIGRATION` flags can be put
 * into (or be in) `state`. ERROR is never supported: it cannot be requested.
 */
export function isStateSupported(state: number, flags: number): boolean {
  const need = REQUIRED_FLAGS.get(state);
  return need !== undefined && (flags & need) === need;
}

/** The states a device with these migration flags supports, in numeric order (ERROR excluded). */
export function supportedStates(flags: number): MigrationState[] {
  const requestable: readonly MigrationState[] = [STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P];
  return requestable.filter((s) => isStateSupported(s, flags));
}

/** True for PRE_COPY, PRE_COPY_P2P and STOP_COPY, the states that share one saving session. */
export function isSavingState(state: number): boolean {
  return state === PRE_COPY || state === PRE_COPY_P2P || state === STOP_COPY;
}

/** What the direct arc `from → to` does to the data-transfer session. */
export function arcSession(from: MigrationState, to: MigrationState): SessionEffect {
  const key = arcKey(from, to);
  if (OPENING_ARCS.has(key)) return 'opens';
  if (CONTINUING_ARCS.has(key)) return 'continues';
  if (ENDING_ARCS.has(key)) return 'ends';
  return 'none';
}

function refuse(cur: number, target: number, flags: number, reason: MigrationStateErrorReason, why: string): MigrationStateError {
  const hex = `0x${flags.toString(16)}`;
  return new MigrationStateError(
    `cannot move a device from ${stateName(cur)} to ${stateName(target)} (migration flags ${hex}): ${why}`,
    cur,
    target,
    flags,
    reason,
  );
}

/**
 * The next state the kernel steps to on the way from `cur` to `target`
 * (`vfio_mig_get_next_state`); `cur` itself when they are equal (and supported).
 * @throws MigrationStateError wherever the kernel answers -EINVAL: `cur` is ERROR
 *   or unsupported, `target` is ERROR or unsupported, or the move is blocked
 *   (STOP_COPY → PRE_COPY or PRE_COPY_P2P).
 */
export function nextState(cur: MigrationState, target: MigrationState, flags: number): MigrationState {
  if (cur === ERROR) throw refuse(cur, target, flags, 'current-is-error', 'the device is in ERROR; only a device reset leaves it');
  if (!isStateSupported(cur, flags)) throw refuse(cur, target, flags, 'current-unsupported', 'the current state is not supported by the device');
  if (target === ERROR) throw refuse(cur, target, flags, 'target-is-error', 'ERROR cannot be requested');
  if (!isStateSupported(target, flags)) throw refuse(cur, target, flags, 'target-unsupported', 'the target state is not supported by the device');
  let next = hop(cur, target);
  // The table assumes every feature; skip the optional states this device lacks.
  while (next !== ERROR && !isStateSupported(next, flags)) next = hop(next, target);
  if (next === ERROR) throw refuse(cur, target, flags, 'blocked', 'the kernel defines no path for this move');
  return next;
}

function hop(cur: MigrationState, target: MigrationState): MigrationState {
  return FIRST_HOP[cur][target];
}

/**
 * The exact arcs a driver walks for one SET from `cur` to `target`, each with
 * its session effect. `cur === target` gives no arcs and no error, whatever the
 * state (even ERROR): every in-tree driver loops `while (cur != target)`, so the
 * kernel never consults the table and the SET succeeds.
 * @throws MigrationStateError as {@link nextState} does.
 */
export function planTransition(cur: MigrationState, target: MigrationState, flags: number): Arc[] {
  const arcs: Arc[] = [];
  let from = cur;
  while (from !== target) {
    const to = nextState(from, target, flags);
    arcs.push({ from, to, session: arcSession(from, to) });
    from = to;
  }
  return arcs;
}

/**
 * True if the SET that walks `arcs` returns a new data fd: only when the
 * **last** arc opens a session (drivers reject a session opened mid-path).
 */
export function returnsDataFd(arcs: readonly Arc[]): boolean {
  return arcs.at(-1)?.session === 'opens';
}
