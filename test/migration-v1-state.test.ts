/**
 * The pure v1 `device_state` logic against reference §3.2 / §3.3, for all
 * eight bit patterns, with and without reserved bits set.
 */
import t from 'tap';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_RUNNING_P2P,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
} from '../lib/vfio/uapi/constants.js';
import {
  V1_ERROR,
  V1_PRE_COPY,
  V1_RESUMING,
  V1_RUNNING,
  V1_STOP,
  V1_STOP_COPY,
  isV1StateError,
  isV1StateValid,
  migrationStateToV1,
  v1Bits,
  v1ErrorState,
  v1NeedsReset,
  v1StateMeaning,
  v1StateName,
  v1ToMigrationState,
  v1TransitionRefusal,
  v1WithBits,
  type V1StateBits,
} from '../lib/migration/v1-state.js';
import type { MigrationState } from '../lib/migration/fsm.js';

/** §3.3's table, row by row (R S U): valid per VFIO_DEVICE_STATE_VALID, IS_ERROR, meaning, names, v2 role. */
const TABLE = [
  { bits: 0b000, valid: true, error: false, meaning: 'stopped', name: 'STOP', v2: VFIO_DEVICE_STATE_STOP },
  { bits: 0b001, valid: true, error: false, meaning: 'running', name: 'RUNNING', v2: VFIO_DEVICE_STATE_RUNNING },
  { bits: 0b010, valid: true, error: false, meaning: 'stop-and-copy', name: 'SAVING', v2: VFIO_DEVICE_STATE_STOP_COPY },
  { bits: 0b011, valid: true, error: false, meaning: 'pre-copy', name: 'RUNNING|SAVING', v2: VFIO_DEVICE_STATE_PRE_COPY },
  { bits: 0b100, valid: true, error: false, meaning: 'resuming', name: 'RESUMING', v2: VFIO_DEVICE_STATE_RESUMING },
  { bits: 0b101, valid: false, error: false, meaning: 'invalid', name: 'RUNNING|RESUMING', v2: undefined },
  { bits: 0b110, valid: false, error: true, meaning: 'error', name: 'SAVING|RESUMING', v2: VFIO_DEVICE_STATE_ERROR },
  { bits: 0b111, valid: false, error: false, meaning: 'invalid', name: 'RUNNING|SAVING|RESUMING', v2: undefined },
] as const;

/** Reserved-bit patterns a vendor may leave in bits 3-31. */
const RESERVED = [0, 0x8, 0xfffffff8, 0x5a5a5a58, 0x80000000];

t.test('named states have the reference bit values', async (t) => {
  t.same([V1_STOP, V1_RUNNING, V1_STOP_COPY, V1_PRE_COPY, V1_RESUMING, V1_ERROR], [0, 1, 2, 3, 4, 6]);
});

t.test('all eight patterns: validity, error, meaning, name, reserved bits ignored', async (t) => {
  for (const row of TABLE) {
    for (const reserved of RESERVED) {
      const raw = (reserved | row.bits) >>> 0;
      const at = `0x${raw.toString(16)}`;
      t.equal(v1Bits(raw), row.bits, `bits of ${at}`);
      t.equal(isV1StateValid(raw), row.valid, `VALID(${at})`);
      t.equal(isV1StateError(raw), row.error, `IS_ERROR(${at})`);
      t.equal(v1StateMeaning(raw), row.meaning, `meaning of ${at}`);
      t.equal(v1StateName(raw), row.name, `name of ${at}`);
      t.equal(v1NeedsReset(raw), !row.valid, `needs reset: ${at}`);
      t.equal(v1ToMigrationState(raw), row.v2, `v2 role of ${at}`);
    }
  }
});

t.test('read-modify-write keeps bits 3-31 and sets exactly the target bits', async (t) => {
  // Golden words: the macro VFIO_DEVICE_STATE_SET_ERROR and QEMU's (old & ~MASK) | value.
  t.equal(v1WithBits(0xdeadbeef, V1_STOP_COPY), 0xdeadbeea);
  t.equal(v1WithBits(0x5a5a5a58, V1_PRE_COPY), 0x5a5a5a5b);
  t.equal(v1WithBits(0xffffffff, V1_STOP), 0xfffffff8);
  t.equal(v1ErrorState(0x5a5a5a59), 0x5a5a5a5e);
  t.equal(v1ErrorState(0x1), 0x6);
  for (const reserved of RESERVED) {
    for (const from of TABLE) {
      for (const to of TABLE) {
        const w = v1WithBits((reserved | from.bits) >>> 0, to.bits);
        t.equal(w >>> 3, reserved >>> 3, `reserved 0x${reserved.toString(16)} kept writing ${to.name} over ${from.name}`);
        t.equal(w & 7, to.bits);
        t.ok(w >= 0 && w <= 0xffffffff, 'an unsigned u32');
      }
    }
  }
});

t.test('refusals over all 8 x 8 (current, target) pairs', async (t) => {
  let allowed = 0;
  for (const cur of TABLE) {
    for (const target of TABLE) {
      const expected = target.error
        ? 'target-is-error'
        : !target.valid
          ? 'target-invalid'
          : cur.error
            ? 'current-is-error'
            : !cur.valid
              ? 'current-invalid'
              : undefined;
      if (expected === undefined) allowed++;
      t.equal(v1TransitionRefusal((0xfffffff8 | cur.bits) >>> 0, target.bits), expected, `${cur.name} -> ${target.name}`);
    }
  }
  t.equal(allowed, 25, 'the five valid states may be written over each other');
});

t.test('v2 states map onto v1 bits and back', async (t) => {
  const cases: [MigrationState, V1StateBits | undefined][] = [
    [VFIO_DEVICE_STATE_ERROR, undefined],
    [VFIO_DEVICE_STATE_STOP, V1_STOP],
    [VFIO_DEVICE_STATE_RUNNING, V1_RUNNING],
    [VFIO_DEVICE_STATE_STOP_COPY, V1_STOP_COPY],
    [VFIO_DEVICE_STATE_RESUMING, V1_RESUMING],
    [VFIO_DEVICE_STATE_RUNNING_P2P, undefined],
    [VFIO_DEVICE_STATE_PRE_COPY, V1_PRE_COPY],
    [VFIO_DEVICE_STATE_PRE_COPY_P2P, undefined],
  ];
  for (const [v2, v1] of cases) {
    t.equal(migrationStateToV1(v2), v1, `v2 state ${v2}`);
    if (v1 !== undefined) t.equal(v1ToMigrationState(v1), v2, `round trip of ${v2}`);
  }
});
