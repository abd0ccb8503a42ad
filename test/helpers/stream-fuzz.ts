/**
 * The machinery of the framing fuzz tests: a seeded PRNG's helpers, byte
 * mutations (truncations, flipped bits and tags, huge sizes, insertions,
 * deletions) and structural ones (swapped, duplicated, dropped sections,
 * splices) of QEMU-shaped streams, random chunking, and the loop that feeds
 * mutated streams to a parser, checking that it accepts them or throws a
 * StreamFormatError, never another error, in time linear in the input.
 *
 * The PRNG seed is fixed so a failure reproduces; set FUZZ_SEED to explore.
 */
import type { Test } from 'tap';
import { StreamFormatError } from '../../lib/errors.js';
import type { VfioParserOptions } from '../../lib/migration/stream.js';
import { CONFIG_SIZE, concatBytes, type SectionSpan } from './migration-streams.js';

/** The seed of every fuzz test: fixed unless FUZZ_SEED says otherwise. */
export const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed5eed);
/** Generous per-input bound: inputs are small and parsing is linear, so anything near this is a hang. */
const MAX_MS_PER_INPUT = 250;

export type Rng = () => number;

export const int = (rng: Rng, n: number): number => Math.floor(rng() * n);
export const pick = <T>(rng: Rng, items: readonly T[]): T => {
  const item = items[int(rng, items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
};

/**
 * VFIO parser options a fuzz case runs with: mostly the corpus's config
 * size, sometimes a wrong one, sometimes a data size limit; `mode` adds what
 * a suite fixes (the config-before-data mode).
 */
export function fuzzVfioOptions(rng: Rng, mode: Partial<VfioParserOptions> = {}): VfioParserOptions {
  return {
    configStateSize: pick(rng, [CONFIG_SIZE, CONFIG_SIZE, 0, CONFIG_SIZE - 1, CONFIG_SIZE + 1]),
    ...mode,
    ...(rng() < 0.3 ? { maxDataSize: pick(rng, [0, 100, 1000]) } : {}),
  };
}

/** A stream whose sections' spans are known, for structural mutations. */
export interface SpannedStream {
  readonly bytes: Uint8Array;
  readonly sections: readonly SectionSpan[];
}

/** A named mutation of bytes. */
export type ByteMutation = readonly [string, (b: Uint8Array, rng: Rng) => Uint8Array];
/** A named mutation of a stream whose sections are known. */
export type SectionMutation = readonly [string, (s: SpannedStream, rng: Rng, all: readonly SpannedStream[]) => Uint8Array];

/** Offsets of 8-byte VFIO tags (0xffffffffef10....) in `bytes`. */
export function tagOffsets(bytes: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i + 8 <= bytes.length; i++) {
    if (bytes[i] === 0xff && bytes[i + 1] === 0xff && bytes[i + 2] === 0xff && bytes[i + 3] === 0xff && bytes[i + 4] === 0xef && bytes[i + 5] === 0x10) {
      out.push(i);
    }
  }
  return out;
}

export const HUGE: readonly bigint[] = [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n, 2n ** 53n - 1n, 2n ** 40n, 64n * 2n ** 30n + 1n, 257n, 0n];

/** Byte-level mutations; each returns a new array. */
export const BYTE_MUTATIONS: readonly ByteMutation[] = [
  ['truncate', (b, rng) => b.slice(0, int(rng, b.length + 1))],
  [
    'flip-bit',
    (b, rng) => {
      const c = b.slice();
      if (c.length > 0) {
        const i = int(rng, c.length);
        c[i] = (c[i] ?? 0) ^ (1 << int(rng, 8));
      }
      return c;
    },
  ],
  [
    'random-byte',
    (b, rng) => {
      const c = b.slice();
      if (c.length > 0) c[int(rng, c.length)] = int(rng, 256);
      return c;
    },
  ],
  [
    'flip-tag',
    (b, rng) => {
      const c = b.slice();
      const tags = tagOffsets(c);
      if (tags.length > 0) c[pick(rng, tags) + 7] = rng() < 0.7 ? int(rng, 9) : int(rng, 256);
      return c;
    },
  ],
  [
    'huge-size',
    (b, rng) => {
      const c = b.slice();
      const sizes = tagOffsets(c).filter((o) => c[o + 7] === 0x04 && o + 16 <= c.length);
      if (sizes.length > 0) new DataView(c.buffer).setBigUint64(pick(rng, sizes) + 8, rng() < 0.8 ? pick(rng, HUGE) : BigInt(int(rng, 2 ** 31)));
      return c;
    },
  ],
  [
    'insert-random',
    (b, rng) => {
      const at = int(rng, b.length + 1);
      const junk = Uint8Array.from({ length: 1 + int(rng, 16) }, () => int(rng, 256));
      return concatBytes([b.subarray(0, at), junk, b.subarray(at)]);
    },
  ],
  [
    'delete-range',
    (b, rng) => {
      const at = int(rng, b.length + 1);
      return concatBytes([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + int(rng, 24)))]);
    },
  ],
];

/** Structural mutations, on a stream whose section spans are known. */
export const SECTION_MUTATIONS: readonly SectionMutation[] = [
  [
    'swap-sections',
    (s, rng) => {
      const i = int(rng, s.sections.length);
      const j = int(rng, s.sections.length);
      const [a, c] = [s.sections[Math.min(i, j)], s.sections[Math.max(i, j)]];
      if (a === undefined || c === undefined || a === c) return s.bytes.slice();
      const b = s.bytes;
      return concatBytes([b.subarray(0, a.start), b.subarray(c.start, c.end), b.subarray(a.end, c.start), b.subarray(a.start, a.end), b.subarray(c.end)]);
    },
  ],
  [
    'duplicate-section',
    (s, rng) => {
      const a = pick(rng, s.sections);
      return concatBytes([s.bytes.subarray(0, a.end), s.bytes.subarray(a.start, a.end), s.bytes.subarray(a.end)]);
    },
  ],
  [
    'drop-section',
    (s, rng) => {
      const a = pick(rng, s.sections);
      return concatBytes([s.bytes.subarray(0, a.start), s.bytes.subarray(a.end)]);
    },
  ],
  [
    'retarget-section-id',
    (s, rng) => {
      const c = s.bytes.slice();
      const a = pick(rng, s.sections);
      const where = rng() < 0.5 ? a.start + 1 : a.end - 4; // the header's or the footer's id
      new DataView(c.buffer).setUint32(where, rng() < 0.5 ? int(rng, 4) : int(rng, 2 ** 32));
      return c;
    },
  ],
  [
    'idstr-length',
    (s, rng) => {
      const c = s.bytes.slice();
      const full = s.sections.filter((a) => c[a.start] === 0x01 || c[a.start] === 0x04);
      if (full.length > 0) c[pick(rng, full).start + 5] = int(rng, 256);
      return c;
    },
  ],
  [
    'splice-streams',
    (s, rng, all) => {
      const other = pick(rng, all);
      return concatBytes([s.bytes.subarray(0, int(rng, s.bytes.length + 1)), other.bytes.subarray(int(rng, other.bytes.length + 1))]);
    },
  ],
  ['random-bytes', (_s, rng) => Uint8Array.from({ length: int(rng, 300) }, () => (rng() < 0.3 ? 0xff : int(rng, 256)))],
];

/** Cuts `bytes` into 1 to 6 random chunks (occasionally one byte at a time). */
export function chunksOf(bytes: Uint8Array, rng: Rng): Uint8Array[] {
  if (rng() < 0.05) return Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  const cuts = Array.from({ length: int(rng, 6) }, () => int(rng, bytes.length + 1)).sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(bytes.subarray(from, cut));
    from = cut;
  }
  return out;
}

export interface Tally {
  accepted: number;
  rejected: number;
  readonly kinds: Map<string, number>;
  maxMs: number;
}

/** Runs one input through a parser; returns an error message if the parser misbehaved. */
export function runOne(
  chunks: readonly Uint8Array[],
  make: () => { push(c: Uint8Array): readonly unknown[]; end(): void },
  tally: Tally,
): string | undefined {
  const size = chunks.reduce((n, c) => n + c.length, 0);
  const started = performance.now();
  let records = 0;
  try {
    const parser = make();
    for (const c of chunks) records += parser.push(c).length;
    parser.end();
    tally.accepted++;
  } catch (err) {
    if (!(err instanceof StreamFormatError)) return `threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`;
    tally.rejected++;
    const kind = err.message
      .replace(/\(at byte.*$/, '')
      .replace(/"(?:[^"\\]|\\.)*"|0x[0-9a-f]+|\d+/g, 'N')
      .trim();
    tally.kinds.set(kind, (tally.kinds.get(kind) ?? 0) + 1);
  }
  const ms = performance.now() - started;
  tally.maxMs = Math.max(tally.maxMs, ms);
  if (ms > MAX_MS_PER_INPUT) return `took ${ms.toFixed(0)} ms for ${size} bytes`;
  // Each record but data fragments (at most one per chunk and record) covers at least one byte.
  if (records > size + chunks.length + 1) return `${records} records for ${size} bytes in ${chunks.length} chunks`;
  return undefined;
}

export function describe(label: string, index: number, input: Uint8Array, problem: string): string {
  const hex = Buffer.from(input.subarray(0, 96)).toString('hex');
  return `${label} case ${index} (FUZZ_SEED=${SEED}): ${problem}; input ${input.length} bytes: ${hex}${input.length > 96 ? '...' : ''}`;
}

/** What {@link fuzzSavevm} feeds. */
export interface SavevmFuzz {
  readonly label: string;
  readonly cases: number;
  readonly rng: Rng;
  /** Valid streams to mutate. */
  readonly bases: readonly SpannedStream[];
  readonly sectionMutations: readonly SectionMutation[];
  readonly byteMutations: readonly ByteMutation[];
  /** A fresh parser for one input (the rng may pick its options). */
  readonly parser: (rng: Rng) => { push(c: Uint8Array): readonly unknown[]; end(): void };
  /** Distinct error kinds the inputs must reach. */
  readonly minKinds: number;
}

/**
 * Feeds `cases` mutated streams to fresh parsers: sometimes a structural
 * mutation, then one to three byte mutations, in random chunks. Asserts that
 * every input is accepted or refused with a StreamFormatError within the
 * work bound, that both outcomes happen, that `minKinds` error kinds are
 * reached and every mutation is used over 100 times.
 */
export function fuzzSavevm(t: Test, f: SavevmFuzz): void {
  const { rng } = f;
  const tally: Tally = { accepted: 0, rejected: 0, kinds: new Map(), maxMs: 0 };
  const used = new Map<string, number>();
  const started = performance.now();
  let failures = 0;
  for (let i = 0; i < f.cases; i++) {
    const base = pick(rng, f.bases);
    const names: string[] = [];
    let bytes = base.bytes;
    if (rng() < 0.4) {
      const [name, mutate] = pick(rng, f.sectionMutations);
      bytes = mutate(base, rng, f.bases);
      names.push(name);
    }
    for (let n = rng() < 0.4 ? 1 : 1 + int(rng, 3); n > 0; n--) {
      if (names.length > 0 && rng() < 0.5) break;
      const [name, mutate] = pick(rng, f.byteMutations);
      bytes = mutate(bytes, rng);
      names.push(name);
    }
    for (const name of names) used.set(name, (used.get(name) ?? 0) + 1);
    const parser = f.parser(rng);
    const problem = runOne(chunksOf(bytes, rng), () => parser, tally);
    if (problem !== undefined && failures++ < 10) t.fail(describe(`${f.label} [${names.join(', ')}]`, i, bytes, problem));
  }
  const elapsed = performance.now() - started;
  t.equal(failures, 0, 'only StreamFormatError, within the work bound');
  t.equal(tally.accepted + tally.rejected + failures, f.cases);
  t.ok(tally.accepted > 0 && tally.rejected > 0, `${tally.accepted} accepted, ${tally.rejected} rejected`);
  t.ok(tally.kinds.size >= f.minKinds, `${tally.kinds.size} distinct error kinds reached`);
  t.ok(
    [...f.byteMutations, ...f.sectionMutations].every(([name]) => (used.get(name) ?? 0) > 100),
    'every mutation was applied over 100 times',
  );
  t.comment(`${f.cases} ${f.label} inputs in ${elapsed.toFixed(0)} ms (slowest input ${tally.maxMs.toFixed(2)} ms)`);
  t.comment(`mutations: ${[...used].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  for (const [kind, count] of [...tally.kinds].sort((a, b) => b[1] - a[1])) t.comment(`  ${count} x ${kind}`);
}

/** What {@link fuzzVfio} feeds: device streams without savevm framing, byte mutations only. */
export interface VfioFuzz {
  readonly label: string;
  readonly cases: number;
  readonly rng: Rng;
  /** Valid VFIO-only streams to mutate. */
  readonly bases: readonly Uint8Array[];
  readonly byteMutations: readonly ByteMutation[];
  /** A fresh parser for one input (the rng may pick its options). */
  readonly parser: (rng: Rng) => { push(c: Uint8Array): readonly unknown[]; end(): void };
  /** Distinct StreamFormatError kinds the run must reach. */
  readonly minKinds: number;
}

/** Feeds `f.cases` device streams with 1 to 3 byte mutations each to fresh parsers, in random chunks. */
export function fuzzVfio(t: Test, f: VfioFuzz): void {
  const { rng } = f;
  const tally: Tally = { accepted: 0, rejected: 0, kinds: new Map(), maxMs: 0 };
  const started = performance.now();
  let failures = 0;
  for (let i = 0; i < f.cases; i++) {
    let bytes = pick(rng, f.bases);
    const names: string[] = [];
    for (let n = 1 + int(rng, 3); n > 0; n--) {
      const [name, mutate] = pick(rng, f.byteMutations);
      bytes = mutate(bytes, rng);
      names.push(name);
    }
    const parser = f.parser(rng);
    const problem = runOne(chunksOf(bytes, rng), () => parser, tally);
    if (problem !== undefined && failures++ < 10) t.fail(describe(`${f.label} [${names.join(', ')}]`, i, bytes, problem));
  }
  t.equal(failures, 0, 'only StreamFormatError, within the work bound');
  t.ok(tally.accepted > 0 && tally.rejected > 0, `${tally.accepted} accepted, ${tally.rejected} rejected`);
  t.ok(tally.kinds.size >= f.minKinds, `${tally.kinds.size} distinct error kinds reached`);
  t.comment(`${f.cases} ${f.label} inputs in ${(performance.now() - started).toFixed(0)} ms (slowest input ${tally.maxMs.toFixed(2)} ms)`);
  for (const [kind, count] of [...tally.kinds].sort((a, b) => b[1] - a[1])) t.comment(`  ${count} x ${kind}`);
}
