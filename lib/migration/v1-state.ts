/**
 * The `device_state` word of the v1 migration region (reference §3.2, §3.3)
 * as pure logic: the three defined bits, the uAPI's validity macros, the
 * read-modify-write that keeps the reserved bits 3-31, and what the library
 * refuses before writing. No I/O: {@link MigrationRegion} does the accesses.
 */
import type { MigrationV1StateErrorReason } from '../errors.js';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_MASK,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_DEVICE_STATE_V1_RESUMING,
  VFIO_DEVICE_STATE_V1_RUNNING,
  VFIO_DEVICE_STATE_V1_SAVING,
  VFIO_DEVICE_STATE_V1_STOP,
} from '../vfio/uapi/constants.js';
import type { MigrationState } from './fsm.js';

/** One of the eight patterns of the bits R (RESUMING), S (SAVING), U (RUNNING). */
export type V1StateBits = 0 | 1 | 2 | 3 | 4 | 5 | 6 | 7;

/** 000: stopped, neither saving nor resuming. */
export const V1_STOP = v1Bits(VFIO_DEVICE_STATE_V1_STOP);
/** 001: running, the state at open. */
export const V1_RUNNING = v1Bits(VFIO_DEVICE_STATE_V1_RUNNING);
/** 010: stop-and-copy. */
export const V1_STOP_COPY = v1Bits(VFIO_DEVICE_STATE_V1_SAVING);
/** 011: pre-copy (running and saving). */
export const V1_PRE_COPY = v1Bits(VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING);
/** 100: resuming. */
export const V1_RESUMING = v1Bits(VFIO_DEVICE_STATE_V1_RESUMING);
/** 110: the error state (`VFIO_DEVICE_STATE_SET_ERROR`); only VFIO_DEVICE_RESET leaves it. */
export const V1_ERROR = v1Bits(VFIO_DEVICE_STATE_V1_SAVING | VFIO_DEVICE_STATE_V1_RESUMING);

/** What a bit pattern means (§3.3's table). */
export type V1StateMeaning = 'stopped' | 'running' | 'stop-and-copy' | 'pre-copy' | 'resuming' | 'error' | 'invalid';

const MEANINGS: readonly V1StateMeaning[] = ['stopped', 'running', 'stop-and-copy', 'pre-copy', 'resuming', 'invalid', 'error', 'invalid'];

/** The v2 state each pattern plays in the driver interface, by bits. */
const V1_TO_V2: readonly (MigrationState | undefined)[] = [
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_RESUMING,
  undefined,
  VFIO_DEVICE_STATE_ERROR,
  undefined,
];

/** The three defined bits of a raw `device_state` word. */
export function v1Bits(raw: number): V1StateBits {
  return (raw & VFIO_DEVICE_STATE_MASK) as V1StateBits;
}

/** `VFIO_DEVICE_STATE_VALID`: RESUMING may only appear alone. */
export function isV1StateValid(raw: number): boolean {
  return (raw & VFIO_DEVICE_STATE_V1_RESUMING) !== 0 ? v1Bits(raw) === VFIO_DEVICE_STATE_V1_RESUMING : true;
}

/** `VFIO_DEVICE_STATE_IS_ERROR`: SAVING|RESUMING. */
export function isV1StateError(raw: number): boolean {
  return v1Bits(raw) === V1_ERROR;
}

/** `VFIO_DEVICE_STATE_SET_ERROR`: the error state with `raw`'s reserved bits (what a vendor driver reports). */
export function v1ErrorState(raw: number): number {
  return v1WithBits(raw, V1_ERROR);
}

/**
 * The word to write for `target`: `raw` with its three defined bits replaced
 * and bits 3-31 kept, because the uAPI reserves them and a driver may give
 * them meaning (QEMU's `(old & mask) | value`).
 */
export function v1WithBits(raw: number, target: V1StateBits): number {
  return ((raw & ~VFIO_DEVICE_STATE_MASK) | target) >>> 0;
}

/** §3.3's meaning of a raw word's bits. */
export function v1StateMeaning(raw: number): V1StateMeaning {
  return MEANINGS[v1Bits(raw)] ?? 'invalid';
}

/** The bits by name, for messages: `'RUNNING|SAVING'`, `'STOP'`. */
export function v1StateName(raw: number): string {
  const bits = v1Bits(raw);
  if (bits === V1_STOP) return 'STOP';
  const names: string[] = [];
  if ((bits & VFIO_DEVICE_STATE_V1_RUNNING) !== 0) names.push('RUNNING');
  if ((bits & VFIO_DEVICE_STATE_V1_SAVING) !== 0) names.push('SAVING');
  if ((bits & VFIO_DEVICE_STATE_V1_RESUMING) !== 0) names.push('RESUMING');
  return names.join('|');
}

/**
 * Why the library refuses to write `target` over the current word `raw`
 * (before any system call), or `undefined` when the write may go ahead:
 * an invalid pattern (RESUMING with another bit), the error state as a target
 * (only a driver enters it), or a device that is in the error state or in an
 * invalid one now (only VFIO_DEVICE_RESET helps there).
 */
export function v1TransitionRefusal(raw: number, target: V1StateBits): MigrationV1StateErrorReason | undefined {
  if (isV1StateError(target)) return 'target-is-error';
  if (!isV1StateValid(target)) return 'target-invalid';
  if (isV1StateError(raw)) return 'current-is-error';
  if (!isV1StateValid(raw)) return 'current-invalid';
  return undefined;
}

/**
 * After a failed `device_state` write, the re-read word says whether the
 * device needs VFIO_DEVICE_RESET: in the error state (§3.3), and also in an
 * invalid pattern, which no documented transition leaves.
 */
export function v1NeedsReset(raw: number): boolean {
  return isV1StateError(raw) || !isV1StateValid(raw);
}

/**
 * The v2 state (`enum vfio_device_mig_state`) that a v1 bit pattern plays in
 * the driver interface: 000 STOP, 001 RUNNING, 010 STOP_COPY, 011 PRE_COPY,
 * 100 RESUMING, 110 ERROR; undefined for the two invalid patterns.
 */
export function v1ToMigrationState(raw: number): MigrationState | undefined {
  return V1_TO_V2[v1Bits(raw)];
}

/** The v1 bits for a v2 state; undefined for ERROR and the P2P states, which v1 has no bits for. */
export function migrationStateToV1(state: MigrationState): V1StateBits | undefined {
  const i = V1_TO_V2.indexOf(state);
  return i < 0 || i === V1_ERROR ? undefined : v1Bits(i);
}
