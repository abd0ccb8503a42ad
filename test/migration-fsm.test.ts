/**
 * The v2 migration state machine (lib/migration/fsm.ts) against three
 * independent references: the first-hop table as printed in
 * vfio-reference.md §4.5, a breadth-first search over the direct arcs of §4.4,
 * and the full paths listed in §4.5 and in the kernel's comment on
 * `vfio_mig_get_next_state` (drivers/vfio/vfio_main.c, 6.12).
 */
import t from 'tap';
import { MigrationStateError, VfioError } from '../lib/errors.js';
import {
  arcSession,
  isMigrationState,
  isSavingState,
  isStateSupported,
  nextState,
  planTransition,
  returnsDataFd,
  stateName,
  supportedStates,
  type Arc,
  type MigrationState,
} from '../lib/migration/fsm.js';
import {
  VFIO_DEVICE_STATE_ERROR as ERROR,
  VFIO_DEVICE_STATE_PRE_COPY as PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P as PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING as RESUMING,
  VFIO_DEVICE_STATE_RUNNING as RUNNING,
  VFIO_DEVICE_STATE_RUNNING_P2P as RUNNING_P2P,
  VFIO_DEVICE_STATE_STOP as STOP,
  VFIO_DEVICE_STATE_STOP_COPY as STOP_COPY,
  VFIO_MIGRATION_P2P as P2P,
  VFIO_MIGRATION_PRE_COPY as PRE,
  VFIO_MIGRATION_STOP_COPY as SC,
} from '../lib/vfio/uapi/constants.js';

const ALL: readonly MigrationState[] = [ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P];
const BY_NAME: ReadonlyMap<string, MigrationState> = new Map([
  ['ERROR', ERROR],
  ['STOP', STOP],
  ['RUNNING', RUNNING],
  ['STOP_COPY', STOP_COPY],
  ['RESUMING', RESUMING],
  ['RUNNING_P2P', RUNNING_P2P],
  ['PRE_COPY', PRE_COPY],
  ['PRE_COPY_P2P', PRE_COPY_P2P],
]);
/** The four flag sets a real device can have (STOP_COPY is mandatory). */
const FLAG_SETS: readonly number[] = [SC, SC | P2P, SC | PRE, SC | P2P | PRE];
/** Every combination of the three flag bits, including those without STOP_COPY. */
const ALL_FLAGS: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7];

function st(name: string): MigrationState {
  const s = BY_NAME.get(name);
  if (s === undefined) throw new Error(`bad state name ${name}`);
  return s;
}

/** `'A>B>C'` to the states of the path. */
function parsePath(path: string): MigrationState[] {
  return path.split('>').map((n) => st(n.trim()));
}

function pathOf(cur: MigrationState, arcs: readonly Arc[]): string {
  return [cur, ...arcs.map((a) => a.to)].map(stateName).join('>');
}

function flagsName(flags: number): string {
  return ['STOP_COPY', 'P2P', 'PRE_COPY'].filter((_, i) => flags & (1 << i)).join('|') || 'none';
}

function refusal(fn: () => unknown): MigrationStateError | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof MigrationStateError) return err;
    throw err;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// The reference search (§4.4), independent of the kernel table.

/** §4.2: the flags each state needs; ERROR is never requestable. */
function needs(s: MigrationState): number | undefined {
  switch (s) {
    case ERROR:
      return undefined;
    case STOP:
    case RUNNING:
    case STOP_COPY:
    case RESUMING:
      return SC;
    case RUNNING_P2P:
      return SC | P2P;
    case PRE_COPY:
      return SC | PRE;
    case PRE_COPY_P2P:
      return SC | P2P | PRE;
  }
}

function refSupported(s: MigrationState, flags: number): boolean {
  const n = needs(s);
  return n !== undefined && (flags & n) === n;
}

/** §4.4, "Arcs that must exist for each feature set", with the table's "only when" rows. */
function allowedArcs(flags: number): Set<string> {
  const arcs = new Set<string>();
  const add = (from: string, to: string): void => {
    arcs.add(`${st(from)}>${st(to)}`);
  };
  if (!(flags & SC)) return arcs;
  add('RESUMING', 'STOP');
  add('STOP', 'RESUMING');
  add('STOP', 'STOP_COPY');
  add('STOP_COPY', 'STOP');
  const p2p = (flags & P2P) !== 0;
  const pre = (flags & PRE) !== 0;
  if (p2p) {
    add('RUNNING', 'RUNNING_P2P');
    add('RUNNING_P2P', 'RUNNING');
    add('RUNNING_P2P', 'STOP');
    add('STOP', 'RUNNING_P2P');
  } else {
    add('RUNNING', 'STOP');
    add('STOP', 'RUNNING');
  }
  if (pre && !p2p) {
    add('RUNNING', 'PRE_COPY');
    add('PRE_COPY', 'RUNNING');
    add('PRE_COPY', 'STOP_COPY');
  }
  if (pre && p2p) {
    add('PRE_COPY', 'RUNNING');
    add('PRE_COPY', 'PRE_COPY_P2P');
    add('PRE_COPY_P2P', 'PRE_COPY');
    add('PRE_COPY_P2P', 'RUNNING_P2P');
    add('PRE_COPY_P2P', 'STOP_COPY');
    add('RUNNING', 'PRE_COPY');
    add('RUNNING_P2P', 'PRE_COPY_P2P');
  }
  return arcs;
}

const SAVING: ReadonlySet<MigrationState> = new Set([PRE_COPY, PRE_COPY_P2P, STOP_COPY]);

/**
 * §4.5's rule "saving-group states only at the start or the end of a path",
 * read as: the path's saving-group states form one contiguous run that touches
 * its start or its end, i.e. one SET never ends a saving session and then
 * opens another (which is why STOP_COPY → PRE_COPY has no path).
 */
function savingRunOk(path: readonly MigrationState[]): boolean {
  const idx = path.flatMap((s, i) => (SAVING.has(s) ? [i] : []));
  const first = idx[0];
  const last = idx.at(-1);
  if (first === undefined || last === undefined) return true;
  const contiguous = last - first + 1 === idx.length;
  return contiguous && (first === 0 || last === path.length - 1);
}

/** Breadth-first search over simple paths; the first valid one reaching `to` is a shortest valid path. */
function searchPath(from: MigrationState, to: MigrationState, flags: number): MigrationState[] | undefined {
  if (!refSupported(from, flags) || !refSupported(to, flags)) return undefined;
  const arcs = allowedArcs(flags);
  const queue: MigrationState[][] = [[from]];
  for (let i = 0; i < queue.length; i++) {
    const path = queue[i] ?? [];
    const last = path[path.length - 1];
    if (last === undefined) continue;
    if (last === to && path.length > 1) {
      if (savingRunOk(path)) return path;
      continue;
    }
    for (const next of ALL) {
      if (arcs.has(`${last}>${next}`) && !path.includes(next)) queue.push([...path, next]);
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------

t.test('state values, names and predicates', async (t) => {
  t.same(ALL.map(stateName), ['ERROR', 'STOP', 'RUNNING', 'STOP_COPY', 'RESUMING', 'RUNNING_P2P', 'PRE_COPY', 'PRE_COPY_P2P']);
  t.equal(stateName(8), '<unknown 8>');
  for (const s of ALL) t.ok(isMigrationState(s));
  for (const bad of [-1, 8, 2.5, Number.NaN]) t.notOk(isMigrationState(bad), `${bad} is not a state`);
  t.same(ALL.filter(isSavingState), [STOP_COPY, PRE_COPY, PRE_COPY_P2P]);
});

t.test('supported states per flag combination (§4.1, §4.2)', async (t) => {
  const expected: Record<number, string> = {
    0: '',
    [P2P]: '',
    [PRE]: '',
    [P2P | PRE]: '',
    [SC]: 'STOP RUNNING STOP_COPY RESUMING',
    [SC | P2P]: 'STOP RUNNING STOP_COPY RESUMING RUNNING_P2P',
    [SC | PRE]: 'STOP RUNNING STOP_COPY RESUMING PRE_COPY',
    [SC | P2P | PRE]: 'STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P',
  };
  for (const flags of ALL_FLAGS) {
    t.equal(supportedStates(flags).map(stateName).join(' '), expected[flags], flagsName(flags));
    for (const s of ALL) t.equal(isStateSupported(s, flags), refSupported(s, flags), `${stateName(s)} with ${flagsName(flags)}`);
  }
  t.notOk(isStateSupported(ERROR, 0xffffffff), 'ERROR is never supported');
  t.notOk(isStateSupported(8, 0xffffffff), 'unknown values are not supported');
  t.ok(isStateSupported(RUNNING, SC | 0x100), 'unknown flag bits are ignored');
});

t.test('with every feature, the first hop is the table of §4.5', async (t) => {
  // Transcribed from vfio-reference.md §4.5; columns: STOP RUNNING STOP_COPY RESUMING RUNNING_P2P PRE_COPY PRE_COPY_P2P.
  const doc = `
    STOP         | STOP        | RUNNING_P2P | STOP_COPY    | RESUMING    | RUNNING_P2P | RUNNING_P2P | RUNNING_P2P
    RUNNING      | RUNNING_P2P | RUNNING     | RUNNING_P2P  | RUNNING_P2P | RUNNING_P2P | PRE_COPY    | RUNNING_P2P
    STOP_COPY    | STOP        | STOP        | STOP_COPY    | STOP        | STOP        | ERROR       | ERROR
    RESUMING     | STOP        | STOP        | STOP         | RESUMING    | STOP        | STOP        | STOP
    RUNNING_P2P  | STOP        | RUNNING     | STOP         | STOP        | RUNNING_P2P | RUNNING     | PRE_COPY_P2P
    PRE_COPY     | RUNNING     | RUNNING     | PRE_COPY_P2P | RUNNING     | RUNNING     | PRE_COPY    | PRE_COPY_P2P
    PRE_COPY_P2P | RUNNING_P2P | RUNNING_P2P | STOP_COPY    | RUNNING_P2P | RUNNING_P2P | PRE_COPY    | PRE_COPY_P2P`;
  const columns: readonly MigrationState[] = [STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P];
  const rows = doc.trim().split('\n');
  t.equal(rows.length, 7);
  for (const row of rows) {
    const [curName = '', ...cells] = row.split('|').map((c) => c.trim());
    const cur = st(curName);
    cells.forEach((cell, i) => {
      const target = columns[i] ?? ERROR;
      const label = `${curName} -> ${stateName(target)}`;
      if (cell === 'ERROR') t.equal(refusal(() => nextState(cur, target, SC | P2P | PRE))?.reason, 'blocked', label);
      else t.equal(stateName(nextState(cur, target, SC | P2P | PRE)), cell, label);
    });
  }
});

t.test('planTransition agrees with a breadth-first search over the arcs of §4.4', async (t) => {
  let compared = 0;
  let paths = 0;
  for (const flags of ALL_FLAGS) {
    const arcs = allowedArcs(flags);
    for (const cur of ALL) {
      for (const target of ALL) {
        if (cur === target) continue;
        const label = `${stateName(cur)} -> ${stateName(target)} with ${flagsName(flags)}`;
        const ref = searchPath(cur, target, flags);
        const err = refusal(() => planTransition(cur, target, flags));
        compared++;
        if (ref === undefined) {
          t.ok(err, `${label}: no path, so -EINVAL`);
          continue;
        }
        if (err !== undefined) {
          t.fail(`${label}: the search found ${ref.map(stateName).join('>')} but the planner refused: ${err.message}`);
          continue;
        }
        paths++;
        const plan = planTransition(cur, target, flags);
        t.equal(plan.length, ref.length - 1, `${label}: ${pathOf(cur, plan)} is as short as ${ref.map(stateName).join('>')}`);
        let at: MigrationState = cur;
        for (const arc of plan) {
          t.equal(arc.from, at, `${label}: arcs are chained`);
          t.ok(arcs.has(`${arc.from}>${arc.to}`), `${label}: ${stateName(arc.from)}>${stateName(arc.to)} is a direct arc of §4.4`);
          at = arc.to;
        }
        t.ok(savingRunOk([cur, ...plan.map((a) => a.to)]), `${label}: saving states only at the start or the end`);
        // mtty's loop refuses a session opened before the last hop (-EINVAL); the table never makes one.
        t.notOk(
          plan.slice(0, -1).some((a) => a.session === 'opens'),
          `${label}: no session opens mid-path`,
        );
      }
    }
  }
  t.equal(compared, 8 * 8 * 7);
  t.comment(`${compared} (flags, from, to) triples compared, ${paths} with a path`);
});

/** §4.5's listed paths; pairs not listed are as in `base`, or direct if they involve a state `base` lacks. */
const DOC_PATHS: ReadonlyArray<{ flags: number; base?: number; paths: readonly string[] }> = [
  {
    flags: SC,
    paths: [
      'STOP>RUNNING',
      'RUNNING>STOP>STOP_COPY',
      'RUNNING>STOP>RESUMING',
      'STOP_COPY>STOP>RUNNING',
      'STOP_COPY>STOP>RESUMING',
      'RESUMING>STOP>RUNNING',
      'RESUMING>STOP>STOP_COPY',
    ],
  },
  {
    flags: SC | P2P,
    base: SC,
    paths: [
      'STOP>RUNNING_P2P>RUNNING',
      'RUNNING>RUNNING_P2P>STOP',
      'RUNNING>RUNNING_P2P>STOP>STOP_COPY',
      'RUNNING>RUNNING_P2P>STOP>RESUMING',
      'STOP_COPY>STOP>RUNNING_P2P>RUNNING',
      'STOP_COPY>STOP>RUNNING_P2P',
      'RESUMING>STOP>RUNNING_P2P>RUNNING',
      'RESUMING>STOP>RUNNING_P2P',
      'RUNNING_P2P>STOP>STOP_COPY',
      'RUNNING_P2P>STOP>RESUMING',
    ],
  },
  {
    flags: SC | PRE,
    base: SC,
    paths: [
      'STOP>RUNNING>PRE_COPY',
      'RESUMING>STOP>RUNNING>PRE_COPY',
      'PRE_COPY>RUNNING>STOP',
      'PRE_COPY>STOP_COPY',
      'PRE_COPY>RUNNING>STOP>RESUMING',
      'STOP_COPY>PRE_COPY=X',
    ],
  },
  {
    flags: SC | P2P | PRE,
    base: SC | P2P,
    paths: [
      'STOP>RUNNING_P2P>RUNNING>PRE_COPY',
      'STOP>RUNNING_P2P>PRE_COPY_P2P',
      'RUNNING>RUNNING_P2P>PRE_COPY_P2P',
      'RESUMING>STOP>RUNNING_P2P>RUNNING>PRE_COPY',
      'RESUMING>STOP>RUNNING_P2P>PRE_COPY_P2P',
      'RUNNING_P2P>RUNNING>PRE_COPY',
      'PRE_COPY>RUNNING>RUNNING_P2P>STOP',
      'PRE_COPY>PRE_COPY_P2P>STOP_COPY',
      'PRE_COPY>RUNNING>RUNNING_P2P>STOP>RESUMING',
      'PRE_COPY>RUNNING>RUNNING_P2P',
      'PRE_COPY_P2P>RUNNING_P2P>STOP',
      'PRE_COPY_P2P>RUNNING_P2P>RUNNING',
      'PRE_COPY_P2P>RUNNING_P2P>STOP>RESUMING',
      'STOP_COPY>PRE_COPY=X',
      'STOP_COPY>PRE_COPY_P2P=X',
    ],
  },
];

/** The expected path (`'A>B'`, or `'X'` for -EINVAL) of every pair under `flags`, from DOC_PATHS. */
function docExpectation(flags: number): Map<string, string> {
  const set = DOC_PATHS.find((d) => d.flags === flags);
  if (set === undefined) throw new Error(`no doc paths for ${flags}`);
  const out = set.base === undefined ? new Map<string, string>() : docExpectation(set.base);
  for (const entry of set.paths) {
    const [path = '', verdict] = entry.split('=');
    const states = parsePath(path);
    const key = `${stateName(states[0] ?? ERROR)}>${stateName(states.at(-1) ?? ERROR)}`;
    out.set(key, verdict ?? states.map(stateName).join('>'));
  }
  return out;
}

t.test('full paths listed in §4.5, and every unlisted pair direct', async (t) => {
  for (const { flags } of DOC_PATHS) {
    const expected = docExpectation(flags);
    for (const cur of supportedStates(flags)) {
      for (const target of supportedStates(flags)) {
        if (cur === target) continue;
        const key = `${stateName(cur)}>${stateName(target)}`;
        const want = expected.get(key) ?? key;
        const label = `${key} with ${flagsName(flags)}`;
        if (want === 'X') t.equal(refusal(() => planTransition(cur, target, flags))?.reason, 'blocked', `${label} is -EINVAL`);
        else t.equal(pathOf(cur, planTransition(cur, target, flags)), want, label);
      }
    }
  }
});

t.test("the multi-step walks listed in the kernel's comment (all features)", async (t) => {
  const walks = [
    'PRE_COPY>PRE_COPY_P2P>STOP_COPY',
    'PRE_COPY>RUNNING>RUNNING_P2P',
    'PRE_COPY>RUNNING>RUNNING_P2P>STOP',
    'PRE_COPY>RUNNING>RUNNING_P2P>STOP>RESUMING',
    'PRE_COPY_P2P>RUNNING_P2P>RUNNING',
    'PRE_COPY_P2P>RUNNING_P2P>STOP',
    'PRE_COPY_P2P>RUNNING_P2P>STOP>RESUMING',
    'RESUMING>STOP>RUNNING_P2P',
    'RESUMING>STOP>RUNNING_P2P>PRE_COPY_P2P',
    'RESUMING>STOP>RUNNING_P2P>RUNNING',
    'RESUMING>STOP>RUNNING_P2P>RUNNING>PRE_COPY',
    'RESUMING>STOP>STOP_COPY',
    'RUNNING>RUNNING_P2P>PRE_COPY_P2P',
    'RUNNING>RUNNING_P2P>STOP',
    'RUNNING>RUNNING_P2P>STOP>RESUMING',
    'RUNNING>RUNNING_P2P>STOP>STOP_COPY',
    'RUNNING_P2P>RUNNING>PRE_COPY',
    'RUNNING_P2P>STOP>RESUMING',
    'RUNNING_P2P>STOP>STOP_COPY',
    'STOP>RUNNING_P2P>PRE_COPY_P2P',
    'STOP>RUNNING_P2P>RUNNING',
    'STOP>RUNNING_P2P>RUNNING>PRE_COPY',
    'STOP_COPY>STOP>RESUMING',
    'STOP_COPY>STOP>RUNNING_P2P',
    'STOP_COPY>STOP>RUNNING_P2P>RUNNING',
  ];
  for (const walk of walks) {
    const states = parsePath(walk);
    const cur = states[0] ?? ERROR;
    const target = states.at(-1) ?? ERROR;
    t.equal(pathOf(cur, planTransition(cur, target, SC | P2P | PRE)), walk);
  }
});

t.test('session effects of arcs, and which SETs return a data fd', async (t) => {
  const effects: Array<[string, string]> = [
    ['RUNNING>PRE_COPY', 'opens'],
    ['RUNNING_P2P>PRE_COPY_P2P', 'opens'],
    ['STOP>STOP_COPY', 'opens'],
    ['STOP>RESUMING', 'opens'],
    ['PRE_COPY>PRE_COPY_P2P', 'continues'],
    ['PRE_COPY_P2P>PRE_COPY', 'continues'],
    ['PRE_COPY>STOP_COPY', 'continues'],
    ['PRE_COPY_P2P>STOP_COPY', 'continues'],
    ['STOP_COPY>STOP', 'ends'],
    ['PRE_COPY>RUNNING', 'ends'],
    ['PRE_COPY_P2P>RUNNING_P2P', 'ends'],
    ['RESUMING>STOP', 'ends'],
    ['RUNNING>RUNNING_P2P', 'none'],
    ['RUNNING_P2P>RUNNING', 'none'],
    ['RUNNING_P2P>STOP', 'none'],
    ['STOP>RUNNING_P2P', 'none'],
    ['RUNNING>STOP', 'none'],
    ['STOP>RUNNING', 'none'],
  ];
  for (const [arc, effect] of effects) {
    const [from = ERROR, to = ERROR] = parsePath(arc);
    t.equal(arcSession(from, to), effect, arc);
  }

  // PRE_COPY -> STOP_COPY continues the precopy fd in both precopy flag sets: no new fd.
  const direct = planTransition(PRE_COPY, STOP_COPY, SC | PRE);
  t.same(direct, [{ from: PRE_COPY, to: STOP_COPY, session: 'continues' }]);
  t.notOk(returnsDataFd(direct));
  const viaP2p = planTransition(PRE_COPY, STOP_COPY, SC | P2P | PRE);
  t.same(
    viaP2p.map((a) => a.session),
    ['continues', 'continues'],
  );
  t.notOk(returnsDataFd(viaP2p));

  const fd = (cur: MigrationState, target: MigrationState, flags: number): boolean => returnsDataFd(planTransition(cur, target, flags));
  t.ok(fd(RUNNING, PRE_COPY, SC | PRE), 'RUNNING -> PRE_COPY opens the precopy session');
  t.ok(fd(RUNNING_P2P, PRE_COPY_P2P, SC | P2P | PRE));
  t.ok(fd(RESUMING, PRE_COPY, SC | P2P | PRE), 'ends the resume session, then opens a saving one on the last arc');
  t.ok(fd(RUNNING, STOP_COPY, SC | P2P), 'RUNNING -> STOP_COPY opens on its last arc (STOP -> STOP_COPY)');
  t.ok(fd(RUNNING, RESUMING, SC | P2P | PRE), 'QEMU load_setup: RUNNING -> RUNNING_P2P -> STOP -> RESUMING');
  t.notOk(fd(STOP_COPY, STOP, SC), 'ending a session returns no fd');
  t.notOk(fd(RESUMING, RUNNING, SC | P2P), 'RESUMING -> STOP -> RUNNING_P2P -> RUNNING');
  t.notOk(fd(PRE_COPY, PRE_COPY_P2P, SC | P2P | PRE));
  t.notOk(returnsDataFd([]));

  // Over every pair: a fd comes back exactly when the target starts a session other than by continuing one.
  for (const flags of FLAG_SETS) {
    for (const cur of supportedStates(flags)) {
      for (const target of supportedStates(flags)) {
        const plan = refusal(() => planTransition(cur, target, flags)) === undefined ? planTransition(cur, target, flags) : undefined;
        if (plan === undefined) continue;
        const expectFd = cur !== target && (target === RESUMING || (isSavingState(target) && !isSavingState(cur)));
        t.equal(returnsDataFd(plan), expectFd, `${pathOf(cur, plan)} with ${flagsName(flags)}`);
      }
    }
  }
});

t.test('refusals: the -EINVAL cases, with their reasons', async (t) => {
  const all = SC | P2P | PRE;
  const cases: Array<[string, () => unknown, string]> = [
    ['from ERROR', () => planTransition(ERROR, RUNNING, all), 'current-is-error'],
    ['to ERROR', () => planTransition(RUNNING, ERROR, all), 'target-is-error'],
    ['to an unsupported state', () => planTransition(RUNNING, PRE_COPY, SC | P2P), 'target-unsupported'],
    ['to RUNNING_P2P without P2P', () => planTransition(STOP, RUNNING_P2P, SC | PRE), 'target-unsupported'],
    ['from an unsupported state', () => planTransition(PRE_COPY, RUNNING, SC), 'current-unsupported'],
    ['without STOP_COPY nothing is supported', () => planTransition(RUNNING, STOP, P2P | PRE), 'current-unsupported'],
    ['STOP_COPY -> PRE_COPY', () => planTransition(STOP_COPY, PRE_COPY, all), 'blocked'],
    ['STOP_COPY -> PRE_COPY_P2P', () => planTransition(STOP_COPY, PRE_COPY_P2P, all), 'blocked'],
    ['STOP_COPY -> PRE_COPY without P2P', () => nextState(STOP_COPY, PRE_COPY, SC | PRE), 'blocked'],
    ['an out-of-range current value', () => nextState(9 as MigrationState, RUNNING, all), 'current-unsupported'],
    ['an out-of-range target value', () => nextState(RUNNING, 8 as MigrationState, all), 'target-unsupported'],
  ];
  for (const [label, fn, reason] of cases) {
    const err = refusal(fn);
    t.ok(err instanceof VfioError, `${label}: a VfioError`);
    t.equal(err?.code, 'ERR_VFIO_MIGRATION_STATE', label);
    t.equal(err?.reason, reason, label);
  }
  const err = refusal(() => planTransition(STOP_COPY, PRE_COPY_P2P, all));
  t.match(err, { name: 'MigrationStateError', from: STOP_COPY, to: PRE_COPY_P2P, flags: all });
  t.match(err?.message, /STOP_COPY to PRE_COPY_P2P \(migration flags 0x7\)/);
});

t.test('cur === target: no arcs and no error, as in the drivers (they loop while cur != target)', async (t) => {
  for (const flags of ALL_FLAGS) {
    for (const s of ALL) t.same(planTransition(s, s, flags), [], `${stateName(s)} with ${flagsName(flags)}`);
  }
  t.equal(nextState(STOP, STOP, SC), STOP, 'the kernel function itself answers cur for a supported cur');
  t.equal(refusal(() => nextState(ERROR, ERROR, SC))?.reason, 'current-is-error', 'but refuses ERROR');
});
