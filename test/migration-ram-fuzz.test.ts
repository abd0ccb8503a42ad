/**
 * Fuzzing the savevm parser with "ram" sections: the mutations of
 * migration-stream-fuzz (truncations, flipped bits, random bytes, swapped,
 * duplicated and dropped sections, splices) plus RAM ones (other flags,
 * offsets, idstr lengths, block sizes), fed in random chunks, every RAM
 * record loaded into a destination RAM. Whatever the input, the parser and
 * the loader must accept it or throw a StreamFormatError, never another
 * error, in time linear in the input.
 */
import t from 'tap';
import { RamLoader } from '../lib/migration/ram-load.js';
import type { RamRecord } from '../lib/migration/ram-parser.js';
import { SavevmParser } from '../lib/migration/sections.js';
import { concatBytes, CONFIG_SIZE, prng, type SectionSpan } from './helpers/migration-streams.js';
import { RAM_STREAM_DEVICE, blankRam, ramStream } from './helpers/ram-streams.js';
import { BYTE_MUTATIONS, HUGE, SECTION_MUTATIONS, SEED, fuzzSavevm, int, pick, type Rng, type SectionMutation, type SpannedStream } from './helpers/stream-fuzz.js';

const CASES = 5_000;
const PAGE = 1024;

/** Where a base's RAM records start, by kind (from parsing it once). */
interface RamOffsets {
  readonly pages: readonly number[];
  readonly named: readonly number[];
  readonly memSize: readonly number[];
}

function savevmParser(loader: RamLoader): SavevmParser<RamRecord> {
  return new SavevmParser<RamRecord>({
    device: (h) => (h.idstr === RAM_STREAM_DEVICE ? { configStateSize: CONFIG_SIZE } : undefined),
    section: (h, offset) => loader.sectionParser(h, offset),
  });
}

/** A parser that loads what it parses into a destination RAM: sometimes one whose geometry the stream does not match. */
function parser(rng: Rng): { push(c: Uint8Array): readonly unknown[]; end(): void } {
  const loader = new RamLoader(blankRam(rng() < 0.1 ? 2 * PAGE : PAGE));
  const p = savevmParser(loader);
  return {
    push: (c) => {
      const records = p.push(c);
      for (const r of records) if (r.kind === 'content') loader.loadRecord(r.record);
      return records;
    },
    end: () => p.end(),
  };
}

function offsetsOf(bytes: Uint8Array): RamOffsets {
  const p = savevmParser(new RamLoader(blankRam(PAGE)));
  const records = p.push(bytes);
  p.end();
  const pages: number[] = [];
  const named: number[] = [];
  const memSize: number[] = [];
  for (const r of records) {
    if (r.kind !== 'content') continue;
    const c = r.record;
    if (c.kind === 'page' || c.kind === 'zero') {
      pages.push(c.offset);
      // Without CONTINUE the idstr length follows the be64.
      if (((bytes[c.offset + 7] ?? 0) & 0x20) === 0) named.push(c.offset);
    } else if (c.kind === 'mem-size') memSize.push(c.offset);
  }
  return { pages, named, memSize };
}

/** The RAM sections of `s` alone, between a file header and EOF. */
function ramOnly(s: SpannedStream, ram: readonly number[]): SpannedStream {
  const parts: Uint8Array[] = [s.bytes.subarray(0, 8)];
  const sections: SectionSpan[] = [];
  let at = 8;
  for (const i of ram) {
    const span = s.sections[i];
    if (span === undefined) continue;
    parts.push(s.bytes.subarray(span.start, span.end));
    sections.push({ start: at, end: at + span.end - span.start });
    at += span.end - span.start;
  }
  parts.push(Uint8Array.of(0));
  return { bytes: concatBytes(parts), sections };
}

const offsets = new Map<Uint8Array, RamOffsets>();
const ramOffsets = (s: SpannedStream): RamOffsets => offsets.get(s.bytes) ?? { pages: [], named: [], memSize: [] };

/** Writes a be64 at `at`, keeping the low `keepBits` bits of what was there. */
function setBe64(bytes: Uint8Array, at: number, value: bigint, keepBits = 0n): Uint8Array {
  const c = bytes.slice();
  if (at + 8 > c.length) return c;
  const view = new DataView(c.buffer);
  const mask = (1n << keepBits) - 1n;
  view.setBigUint64(at, (value & ~mask) | (view.getBigUint64(at) & mask));
  return c;
}

const RAM_MUTATIONS: readonly SectionMutation[] = [
  [
    'ram-flags',
    (s, rng) => {
      const at = pick(rng, [...ramOffsets(s).pages, ...ramOffsets(s).memSize]);
      const flags = rng() < 0.8 ? pick(rng, [0x01, 0x02, 0x04, 0x08, 0x0a, 0x10, 0x22, 0x28, 0x30, 0x40, 0x80, 0x100, 0x200]) : int(rng, 0x400);
      return setBe64(s.bytes, at, BigInt(flags) | (new DataView(s.bytes.buffer, s.bytes.byteOffset).getBigUint64(at) & ~0x3ffn));
    },
  ],
  ['ram-offset', (s, rng) => setBe64(s.bytes, pick(rng, ramOffsets(s).pages), rng() < 0.5 ? pick(rng, HUGE) : BigInt(int(rng, 8) * PAGE), 10n)],
  [
    'ram-idstr-length',
    (s, rng) => {
      const c = s.bytes.slice();
      const named = [...ramOffsets(s).named, ...ramOffsets(s).memSize];
      c[pick(rng, named) + 8] = rng() < 0.5 ? int(rng, 10) : int(rng, 256);
      return c;
    },
  ],
  [
    // A be64 alone before a page: mostly MULTIFD_FLUSH, which must be skipped.
    'ram-insert-record',
    (s, rng) => {
      const at = pick(rng, ramOffsets(s).pages);
      const record = new Uint8Array(8);
      new DataView(record.buffer).setBigUint64(0, pick(rng, [0x200n, 0x200n, 0x220n, 0x1200n, 0x10n, 0x02n]));
      return concatBytes([s.bytes.subarray(0, at), record, s.bytes.subarray(at)]);
    },
  ],
  [
    'ram-sizes',
    (s, rng) => {
      const at = pick(rng, ramOffsets(s).memSize);
      // The total, or the first block's length after its 6-byte idstr.
      const where = rng() < 0.5 ? at : at + 8 + 1 + 6;
      return setBe64(s.bytes, where, rng() < 0.5 ? pick(rng, HUGE) : BigInt(int(rng, 16) * PAGE), rng() < 0.5 ? 0n : 10n);
    },
  ],
];

t.test(`savevm parser with "ram" sections on ${CASES} mutated streams (seed ${SEED})`, async (t) => {
  const full = await ramStream(PAGE);
  const bases = [full, ramOnly(full, [0, 2, 4, 5])];
  for (const b of bases) offsets.set(b.bytes, offsetsOf(b.bytes));
  t.ok(bases.every((b) => ramOffsets(b).pages.length === 7 && ramOffsets(b).memSize.length === 1), 'the bases hold seven pages and a block list');
  fuzzSavevm(t, {
    label: 'ram',
    cases: CASES,
    rng: prng(SEED ^ 0x7a4d7a4d),
    bases,
    sectionMutations: [...SECTION_MUTATIONS, ...RAM_MUTATIONS],
    byteMutations: BYTE_MUTATIONS,
    parser,
    minKinds: 25,
  });
});
