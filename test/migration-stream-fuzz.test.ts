/**
 * Fuzzing the savevm and VFIO framing parsers: mutated QEMU-shaped streams
 * (truncations, flipped tags, random bytes, huge sizes, swapped, duplicated
 * and dropped sections, splices) fed in random chunks. Whatever the input,
 * the parsers must either accept it or throw a StreamFormatError, never
 * another error, and their work must stay linear in the input.
 *
 * The PRNG seed is fixed so a failure reproduces; set FUZZ_SEED to explore.
 */
import t from 'tap';
import { StreamFormatError } from '../lib/errors.js';
import { SavevmParser, type SavevmParserOptions } from '../lib/migration/sections.js';
import {
  encodeDevConfigState,
  encodeDataHeader,
  encodeDataState,
  encodeEndOfState,
  encodeInitDataSent,
  encodeSetupState,
  encodeTag,
  VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY,
  VfioStreamParser,
  type VfioParserOptions,
} from '../lib/migration/stream.js';
import { CONFIG_SIZE, concatBytes, pattern, prng, StreamBuilder, typicalStream, type BuiltStream } from './helpers/migration-streams.js';

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed5eed);
const SAVEVM_CASES = 10_000;
const VFIO_CASES = 5_000;
/** Generous per-input bound: inputs are < 4 KiB and parsing is linear, so anything near this is a hang. */
const MAX_MS_PER_INPUT = 250;

type Rng = () => number;

const int = (rng: Rng, n: number): number => Math.floor(rng() * n);
const pick = <T>(rng: Rng, items: readonly T[]): T => {
  const item = items[int(rng, items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
};

/** The seed corpus: valid streams of different shapes. */
function corpus(): BuiltStream[] {
  const multi = new StreamBuilder()
    .fileHeader()
    .full('start', 2, 'dev-a/vfio', [encodeSetupState()])
    .full('start', 3, 'dev-b/vfio', [encodeSetupState()])
    .part('part', 2, [encodeDataState(pattern(40, 1)), encodeEndOfState()])
    .part('part', 3, [encodeInitDataSent()])
    .part('end', 2, [encodeDataHeader(0), encodeDataState(pattern(9, 2)), encodeEndOfState()])
    .part('end', 3, [encodeEndOfState()])
    .full('full', 2, 'dev-a/vfio', [encodeDevConfigState(pattern(CONFIG_SIZE, 3))])
    .full('full', 3, 'dev-b/vfio', [encodeTag(VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY)])
    .eof()
    .build();
  const big = new StreamBuilder()
    .full('start', 7, 'big/vfio', [encodeSetupState()])
    .part('end', 7, [encodeDataState(pattern(1500, 4)), encodeDataState(pattern(700, 5)), encodeEndOfState()])
    .eof()
    .build();
  return [typicalStream(), typicalStream({ fileHeader: false, sectionId: 0 }), multi, big];
}

/** Offsets of 8-byte VFIO tags (0xffffffffef10....) in `bytes`. */
function tagOffsets(bytes: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i + 8 <= bytes.length; i++) {
    if (bytes[i] === 0xff && bytes[i + 1] === 0xff && bytes[i + 2] === 0xff && bytes[i + 3] === 0xff && bytes[i + 4] === 0xef && bytes[i + 5] === 0x10) {
      out.push(i);
    }
  }
  return out;
}

const HUGE: readonly bigint[] = [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n, 2n ** 53n - 1n, 2n ** 40n, 64n * 2n ** 30n + 1n, 257n, 0n];

/** Byte-level mutations; each returns a new array. */
const BYTE_MUTATIONS: ReadonlyArray<[string, (b: Uint8Array, rng: Rng) => Uint8Array]> = [
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
const SECTION_MUTATIONS: ReadonlyArray<[string, (s: BuiltStream, rng: Rng, all: readonly BuiltStream[]) => Uint8Array]> = [
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
function chunksOf(bytes: Uint8Array, rng: Rng): Uint8Array[] {
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

function vfioOptions(rng: Rng): VfioParserOptions {
  return {
    configStateSize: pick(rng, [CONFIG_SIZE, CONFIG_SIZE, 0, CONFIG_SIZE - 1, CONFIG_SIZE + 1]),
    ...(rng() < 0.3 ? { maxDataSize: pick(rng, [0, 100, 1000]) } : {}),
  };
}

interface Tally {
  accepted: number;
  rejected: number;
  readonly kinds: Map<string, number>;
  maxMs: number;
}

/** Runs one input through a parser; returns an error message if the parser misbehaved. */
function runOne(
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

function describe(label: string, index: number, input: Uint8Array, problem: string): string {
  const hex = Buffer.from(input.subarray(0, 96)).toString('hex');
  return `${label} case ${index} (FUZZ_SEED=${SEED}): ${problem}; input ${input.length} bytes: ${hex}${input.length > 96 ? '...' : ''}`;
}

t.test(`savevm + VFIO parsers on ${SAVEVM_CASES} mutated streams (seed ${SEED})`, async (t) => {
  const rng = prng(SEED);
  const bases = corpus();
  const tally: Tally = { accepted: 0, rejected: 0, kinds: new Map(), maxMs: 0 };
  const used = new Map<string, number>();
  const started = performance.now();
  let failures = 0;
  for (let i = 0; i < SAVEVM_CASES; i++) {
    const base = pick(rng, bases);
    const names: string[] = [];
    let bytes = base.bytes;
    if (rng() < 0.4) {
      const [name, mutate] = pick(rng, SECTION_MUTATIONS);
      bytes = mutate(base, rng, bases);
      names.push(name);
    }
    for (let n = rng() < 0.4 ? 1 : 1 + int(rng, 3); n > 0; n--) {
      if (names.length > 0 && rng() < 0.5) break;
      const [name, mutate] = pick(rng, BYTE_MUTATIONS);
      bytes = mutate(bytes, rng);
      names.push(name);
    }
    for (const name of names) used.set(name, (used.get(name) ?? 0) + 1);
    const vfio = vfioOptions(rng);
    const options: SavevmParserOptions = { device: (h) => (h.idstr.length === 0 ? undefined : vfio) };
    const problem = runOne(chunksOf(bytes, rng), () => new SavevmParser(options), tally);
    if (problem !== undefined && failures++ < 10) t.fail(describe(`savevm [${names.join(', ')}]`, i, bytes, problem));
  }
  const elapsed = performance.now() - started;
  t.equal(failures, 0, 'only StreamFormatError, within the work bound');
  t.equal(tally.accepted + tally.rejected + failures, SAVEVM_CASES);
  t.ok(tally.accepted > 0 && tally.rejected > 0, `${tally.accepted} accepted, ${tally.rejected} rejected`);
  t.ok(tally.kinds.size >= 20, `${tally.kinds.size} distinct error kinds reached`);
  t.ok(
    [...BYTE_MUTATIONS, ...SECTION_MUTATIONS].every(([name]) => (used.get(name) ?? 0) > 100),
    'every mutation was applied over 100 times',
  );
  t.comment(`${SAVEVM_CASES} savevm inputs in ${elapsed.toFixed(0)} ms (slowest input ${tally.maxMs.toFixed(2)} ms)`);
  t.comment(`mutations: ${[...used].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  for (const [kind, count] of [...tally.kinds].sort((a, b) => b[1] - a[1])) t.comment(`  ${count} x ${kind}`);
});

t.test(`VFIO stream parser alone on ${VFIO_CASES} mutated device streams (seed ${SEED})`, async (t) => {
  const rng = prng(SEED ^ 0xa5a5a5a5);
  const bases = corpus().map((s) => s.vfioOnly);
  const tally: Tally = { accepted: 0, rejected: 0, kinds: new Map(), maxMs: 0 };
  const started = performance.now();
  let failures = 0;
  for (let i = 0; i < VFIO_CASES; i++) {
    let bytes = pick(rng, bases);
    const names: string[] = [];
    for (let n = 1 + int(rng, 3); n > 0; n--) {
      const [name, mutate] = pick(rng, BYTE_MUTATIONS);
      bytes = mutate(bytes, rng);
      names.push(name);
    }
    const options = vfioOptions(rng);
    const problem = runOne(chunksOf(bytes, rng), () => new VfioStreamParser(options), tally);
    if (problem !== undefined && failures++ < 10) t.fail(describe(`vfio [${names.join(', ')}]`, i, bytes, problem));
  }
  t.equal(failures, 0, 'only StreamFormatError, within the work bound');
  t.ok(tally.accepted > 0 && tally.rejected > 0, `${tally.accepted} accepted, ${tally.rejected} rejected`);
  t.ok(tally.kinds.size >= 10, `${tally.kinds.size} distinct error kinds reached`);
  t.comment(`${VFIO_CASES} VFIO inputs in ${(performance.now() - started).toFixed(0)} ms (slowest input ${tally.maxMs.toFixed(2)} ms)`);
  for (const [kind, count] of [...tally.kinds].sort((a, b) => b[1] - a[1])) t.comment(`  ${count} x ${kind}`);
});
