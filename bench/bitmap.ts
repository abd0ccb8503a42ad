/**
 * DirtyBitmap against C, for a 1 TiB guest of 4 KiB pages (2^28 pages, a
 * 32 MiB bitmap): merging a 32 MiB kernel bitmap (at page 0, and at page 3,
 * which shifts every word), counting dirty runs, counting pages and visiting
 * runs, at 0.1%, 1% and 50% dirty, random and clustered.
 *
 * bench/c/bitmap.c is compiled in the same run (gcc -O2 as the baseline, and
 * gcc -O2 -march=native for reference) and generates the same data from the
 * same seeds; every operation returns a checksum, which must agree on both
 * sides. The C programs run as children answering one command at a time, so
 * C and JS samples alternate rep by rep and see the same machine load (it is
 * noisy); each figure is the median of its samples. Timings are reported,
 * never asserted.
 *
 *   npx tsx bench/bitmap.ts [--alternatives] [--rounds N] [--reps N] [--npages N]
 *
 * Merges are timed twice: "in place" reads the kernel bitmap from
 * DirtyBitmap.kernelBuffer() (where the kernel would have written it), and
 * "staged" from an ordinary Uint8Array (copied through a 64 KiB staging area).
 * --alternatives adds the plain-JS Uint32Array versions (SWAR popcount), the
 * best approach measured without WebAssembly.
 */
import { type ChildProcessByStdio, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { DirtyBitmap, kernelBitmapBytes } from '../lib/vfio/dirty-bitmap.js';

/** A dirty-page pattern: independent random pages, or runs of 1-127 pages with random gaps. */
export interface Pattern {
  kind: 'random' | 'clustered';
  /** Dirty pages per million. */
  ppm: number;
}

export interface BitmapBenchOptions {
  /** Pages in the guest (default 2^28: 1 TiB of 4 KiB pages). A multiple of 64. */
  npages?: number;
  /** Samples per operation and round (default 5). */
  reps?: number;
  /** Rounds, each from freshly generated state (default 3). */
  rounds?: number;
  patterns?: Pattern[];
  /** Also time the plain-JS Uint32Array versions (default false). */
  alternatives?: boolean;
  /** Progress and the table go here (default console.log). */
  log?: (line: string) => void;
}

/** One operation on one pattern: medians in ms, and ratios to C. */
export interface OpResult {
  op: string;
  ms: number;
  /** gcc -O2 (for countRuns, the faster of the two C versions). */
  cMs: number;
  ratio: number;
  /** gcc -O2 -march=native (popcnt instruction, AVX2). */
  cNativeMs: number;
  ratioNative: number;
  samples: number;
}

export interface PatternResult {
  pattern: string;
  /** Dirty pages and runs of the VMM bitmap, as both sides computed them. */
  count: number;
  runs: number;
  ops: OpResult[];
}

export interface BitmapBenchResult {
  npages: number;
  reps: number;
  rounds: number;
  node: string;
  cpu: string;
  gcc: string;
  patterns: PatternResult[];
  /** Worst ratio to gcc -O2 over the targets: countRuns and the in-place merges. */
  worstRatio: number;
}

export const DEFAULT_PATTERNS: Pattern[] = [
  { kind: 'random', ppm: 1000 },
  { kind: 'clustered', ppm: 1000 },
  { kind: 'random', ppm: 10000 },
  { kind: 'clustered', ppm: 10000 },
  { kind: 'random', ppm: 500000 },
  { kind: 'clustered', ppm: 500000 },
];

/** The operations the target (ratio <= 1.5x) applies to. */
const TARGET_OPS = new Set(['countRuns', 'merge@0 in place', 'merge@3 in place']);

/** Which C timing each JS operation is compared with. */
const C_OP: Record<string, string> = {
  'merge@0 in place': 'merge0',
  'merge@0 staged': 'merge0',
  'merge@3 in place': 'merge3',
  'merge@3 staged': 'merge3',
  'countRuns (JS Uint32Array)': 'countRuns',
  'merge@0 (JS Uint32Array)': 'merge0',
  'merge@3 (JS Uint32Array)': 'merge3',
};

/** mulberry32, bit-identical to rng() in bench/c/bitmap.c. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function setPages(w: Uint32Array, npages: number, start: number, len: number): void {
  const end = Math.min(start + len, npages);
  for (let p = start; p < end; p++) w[p >>> 5] |= 1 << (p & 31);
}

/** Same algorithm as generate() in bench/c/bitmap.c; `npages` is a multiple of 64 and below 2^32. */
function generate(npages: number, pattern: Pattern, seed: number): Uint8Array {
  const w = new Uint32Array(npages / 32);
  const rng = prng(seed);
  if (pattern.kind === 'random') {
    if (pattern.ppm === 500000) {
      for (let i = 0; i < w.length; i++) w[i] = rng();
    } else {
      const k = Math.floor((npages * pattern.ppm) / 1e6);
      for (let i = 0; i < k; i++) setPages(w, npages, rng() % npages, 1);
    }
  } else {
    const gapMean = Math.floor((64 * (1e6 - pattern.ppm)) / pattern.ppm);
    let p = rng() % (2 * gapMean + 1);
    while (p < npages) {
      const len = 1 + (rng() % 127);
      setPages(w, npages, p, len);
      p += len + 1 + (rng() % (2 * gapMean + 1));
    }
  }
  return new Uint8Array(w.buffer);
}

const describe = (p: Pattern): string => `${p.kind} ${p.ppm / 10000}%`;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
};

/** Timing samples by operation name. */
type Samples = Map<string, number[]>;

function addSample(samples: Samples, op: string, ms: number): void {
  const list = samples.get(op);
  if (list === undefined) samples.set(op, [ms]);
  else list.push(ms);
}

/** A C build of bench/c/bitmap.c, answering commands on stdin. */
class CProgram {
  readonly samples: Samples = new Map();
  private readonly child: ChildProcessByStdio<Writable, Readable, null>;
  private readonly waiting: Array<(line: string) => void> = [];
  private exited: string | undefined;

  constructor(binary: string, npages: number) {
    this.child = spawn(binary, [String(npages)], { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout }).on('line', (line) => this.waiting.shift()?.(line));
    this.child.on('exit', (code) => {
      this.exited = `C benchmark ${binary} exited (${code})`;
      for (const w of this.waiting.splice(0)) w('');
    });
  }

  /** Sends a command; resolves to its checksum, recording its time under the command's name. */
  async run(command: string): Promise<number> {
    const line = await new Promise<string>((resolve) => {
      this.waiting.push(resolve);
      this.child.stdin.write(`${command}\n`);
    });
    if (this.exited !== undefined) throw new Error(`${this.exited} on "${command}"`);
    const [ms = NaN, check = NaN] = line.split(' ').map(Number);
    if (!command.startsWith('pattern') && command !== 'reset') addSample(this.samples, command, ms);
    return check;
  }

  close(): void {
    this.child.stdin.end();
  }
}

function compile(dir: string, name: string, flags: string[]): string {
  const source = fileURLToPath(new URL('./c/bitmap.c', import.meta.url));
  const out = join(dir, name);
  execFileSync('gcc', [...flags, '-o', out, source]);
  return out;
}

/** Plain-JS run count on u32 words: two words per step, SWAR popcount (the fastest JS variant measured). */
function jsCountRuns(w: Uint32Array): number {
  let runs = 0;
  let carry = 0;
  for (let i = 0; i < w.length; i += 2) {
    const w0 = w[i];
    const w1 = w[i + 1];
    if ((w0 | w1) === 0) {
      carry = 0;
      continue;
    }
    let s0 = w0 & ~((w0 << 1) | carry);
    let s1 = w1 & ~((w1 << 1) | (w0 >>> 31));
    carry = w1 >>> 31;
    s0 -= (s0 >>> 1) & 0x55555555;
    s1 -= (s1 >>> 1) & 0x55555555;
    s0 = (s0 & 0x33333333) + ((s0 >>> 2) & 0x33333333) + (s1 & 0x33333333) + ((s1 >>> 2) & 0x33333333);
    runs += Math.imul((s0 & 0x0f0f0f0f) + ((s0 >>> 4) & 0x0f0f0f0f), 0x01010101) >>> 24;
  }
  return runs;
}

/** Plain-JS merge on u32 words at page `shift` (< 32); bits shifted past the end fall off, as they must here. */
function jsMerge(dst: Uint32Array, src: Uint32Array, shift: number): void {
  if (shift === 0) {
    for (let i = 0; i < src.length; i++) dst[i] |= src[i];
    return;
  }
  let carry = 0;
  for (let i = 0; i < src.length; i++) {
    const w = src[i];
    dst[i] |= (w << shift) | carry;
    carry = w >>> (32 - shift);
  }
}

/** Population count of u32 words (the checksum of the plain-JS merges). */
function jsCount(w: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < w.length; i++) {
    let v = w[i];
    v -= (v >>> 1) & 0x55555555;
    v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
    n += Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24;
  }
  return n;
}

/** One pattern: C (both builds) and JS alternate sample by sample; checksums must agree. */
async function runPattern(
  pattern: Pattern,
  seed: number,
  bm: DirtyBitmap,
  cs: readonly CProgram[],
  reps: number,
  rounds: number,
  alternatives: boolean,
): Promise<{ js: Samples; count: number; runs: number }> {
  const n = bm.npages;
  const name = describe(pattern);
  const a = generate(n, pattern, seed);
  const b = generate(n, pattern, seed + 1);
  for (const c of cs) await c.run(`pattern ${pattern.kind} ${pattern.ppm} ${seed} ${seed + 1}`);
  const js: Samples = new Map();
  /**
   * `command` on every C build, then `work` (timed under `op`); `check` turns
   * its result into the checksum, untimed (for merges: the dirty pages after
   * it; merging the same bitmap again changes nothing, so every rep agrees).
   */
  const step = async (command: string, op: string, work: () => number, check = (result: number) => result): Promise<number> => {
    const expected: number[] = [];
    for (const c of cs) expected.push(await c.run(command));
    const t0 = performance.now();
    const result = work();
    addSample(js, op, performance.now() - t0);
    const got = check(result);
    if (expected.some((e) => e !== got)) throw new Error(`${name}: ${op} gives ${got} in JS, ${expected.join('/')} in C`);
    return got;
  };
  const merged = (): number => bm.count();
  const noResult = (fn: () => void) => (): number => {
    fn();
    return 0;
  };
  const alt = new Uint32Array(n / 32);
  const altSrc = new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  let count = 0;
  let runs = 0;
  for (let round = 0; round < rounds; round++) {
    for (const c of cs) await c.run('reset');
    bm.bytes.set(a);
    alt.set(new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4));
    for (let r = 0; r < reps; r++) {
      count = await step('count', 'count', () => bm.count());
      runs = await step('countRuns', 'countRuns', () => bm.countRuns());
      for (const c of cs) await c.run('countRunsBranchless');
      if (alternatives) await step('countRuns', 'countRuns (JS Uint32Array)', () => jsCountRuns(alt));
      await step('forEachRun', 'forEachRun', () => {
        let sink = 0;
        bm.forEachRun((start, len) => {
          // Sum of start + len mod 2^32, as the C callback: exact, since |sink| < 2^31.
          sink = (sink + start + len) | 0;
        });
        return sink >>> 0;
      });
    }
    const inPlace0 = bm.kernelBuffer(n);
    inPlace0.set(b);
    for (let r = 0; r < reps; r++) {
      await step('merge0', 'merge@0 in place', noResult(() => bm.mergeKernelBitmap(inPlace0, 0, n)), merged);
      await step('merge0', 'merge@0 staged', noResult(() => bm.mergeKernelBitmap(b, 0, n)), merged);
      if (alternatives) await step('merge0', 'merge@0 (JS Uint32Array)', noResult(() => jsMerge(alt, altSrc, 0)), () => jsCount(alt));
    }
    const inPlace3 = bm.kernelBuffer(n - 3);
    inPlace3.set(b.subarray(0, kernelBitmapBytes(n - 3)));
    for (let r = 0; r < reps; r++) {
      await step('merge3', 'merge@3 in place', noResult(() => bm.mergeKernelBitmap(inPlace3, 3, n - 3)), merged);
      await step('merge3', 'merge@3 staged', noResult(() => bm.mergeKernelBitmap(b, 3, n - 3)), merged);
      if (alternatives) await step('merge3', 'merge@3 (JS Uint32Array)', noResult(() => jsMerge(alt, altSrc, 3)), () => jsCount(alt));
    }
  }
  return { js, count, runs };
}

function cMedian(samples: Samples, op: string): number {
  const m = median(samples.get(op) ?? []);
  // Two C versions of the run count; the baseline is the better one.
  return op === 'countRuns' ? Math.min(m, median(samples.get('countRunsBranchless') ?? [])) : m;
}

/** Runs the benchmark, prints the table, writes bench/out/bitmap.json, and returns the results. */
export async function run(options: BitmapBenchOptions = {}): Promise<BitmapBenchResult> {
  const npages = options.npages ?? 2 ** 28;
  const reps = options.reps ?? 5;
  const rounds = options.rounds ?? 3;
  const patterns = options.patterns ?? DEFAULT_PATTERNS;
  const log = options.log ?? ((line: string) => console.log(line));
  if (npages % 64 !== 0 || npages >= 2 ** 32) throw new Error('npages must be a multiple of 64 below 2^32');

  const result: BitmapBenchResult = {
    npages,
    reps,
    rounds,
    node: process.version,
    cpu: /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown',
    gcc: execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? 'unknown',
    patterns: [],
    worstRatio: NaN,
  };
  const dir = mkdtempSync(join(tmpdir(), 'vfio-bitmap-bench-'));
  const cO2 = new CProgram(compile(dir, 'bitmap', ['-O2']), npages);
  const cNative = new CProgram(compile(dir, 'bitmap-native', ['-O2', '-march=native']), npages);
  try {
    const bm = new DirtyBitmap(npages, { kernelBufferPages: npages });
    log(`dirty bitmap: ${npages} pages (${npages / 8 / 2 ** 20} MiB), ${rounds} rounds x ${reps} reps, ${result.cpu}, node ${process.version}`);
    for (const [i, pattern] of patterns.entries()) {
      const { js, count, runs } = await runPattern(pattern, 2 * i + 1, bm, [cO2, cNative], reps, rounds, options.alternatives ?? false);
      const ops = [...js].map(([op, samples]): OpResult => {
        const cOp = C_OP[op] ?? op;
        const ms = median(samples);
        const cMs = cMedian(cO2.samples, cOp);
        const cNativeMs = cMedian(cNative.samples, cOp);
        return { op, ms, cMs, ratio: ms / cMs, cNativeMs, ratioNative: ms / cNativeMs, samples: samples.length };
      });
      cO2.samples.clear();
      cNative.samples.clear();
      result.patterns.push({ pattern: describe(pattern), count, runs, ops });
      log(`  ${describe(pattern)}: ${count} dirty pages in ${runs} runs; checksums agree with C`);
    }
  } finally {
    cO2.close();
    cNative.close();
    rmSync(dir, { recursive: true, force: true });
  }
  result.worstRatio = Math.max(...result.patterns.flatMap((p) => p.ops.filter((o) => TARGET_OPS.has(o.op)).map((o) => o.ratio)));
  printTable(result, log);
  const outDir = fileURLToPath(new URL('./out/', import.meta.url));
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'bitmap.json'), `${JSON.stringify(result, null, 2)}\n`);
  return result;
}

function printTable(result: BitmapBenchResult, log: (line: string) => void): void {
  const header = ['pattern', 'operation', 'DirtyBitmap ms', 'C -O2 ms', 'ratio', 'C native ms', 'ratio'];
  const rows = result.patterns.flatMap((p) =>
    p.ops.map((o) => [
      p.pattern,
      o.op,
      o.ms.toFixed(2),
      o.cMs.toFixed(2),
      `${o.ratio.toFixed(2)}x`,
      o.cNativeMs.toFixed(2),
      `${o.ratioNative.toFixed(2)}x`,
    ]),
  );
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  log('');
  log(line(header));
  log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) log(line(r));
  log('');
  log(`worst ratio to gcc -O2 over countRuns and the in-place merges: ${result.worstRatio.toFixed(2)}x (target <= 1.5x)`);
}

function numberFlag(name: string): number | undefined {
  const i = process.argv.indexOf(name);
  const v = i < 0 ? undefined : process.argv[i + 1];
  return v === undefined ? undefined : Number(v);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  await run({
    alternatives: process.argv.includes('--alternatives'),
    rounds: numberFlag('--rounds'),
    reps: numberFlag('--reps'),
    npages: numberFlag('--npages'),
  });
}
