/**
 * DirtyBitmap against a naive reference (one byte per page), on random
 * bitmaps from a fixed seed, at the word-boundary offsets that break shifts
 * (0, 1, 31, 32, 63, 64, 65) and with ranges that cross words and the 64 KiB
 * staging chunks. No timings here: see bench/bitmap.ts.
 */
import { readFileSync } from 'node:fs';
import t from 'tap';
import { assemble, renderModule } from '../scripts/wat2wasm.js';
import { VfioArgumentError } from '../lib/errors.js';
import { DirtyBitmap, kernelBitmapBytes, type DirtyRun } from '../lib/vfio/dirty-bitmap.js';

/** mulberry32: small, fast, and the same sequence on every run. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = Math.imul(s ^ (s >>> 15), s | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return (x ^ (x >>> 14)) >>> 0;
  };
}
const rand = prng(0x5eed);
const below = (n: number): number => rand() % n;

/** The reference: one byte per page. */
class Ref {
  readonly bits: Uint8Array;
  constructor(readonly npages: number) {
    this.bits = new Uint8Array(npages);
  }
  fill(first: number, n: number, v: 0 | 1): void {
    this.bits.fill(v, first, first + n);
  }
  count(first: number, n: number): number {
    let c = 0;
    for (let p = first; p < first + n; p++) c += this.bits[p] ?? 0;
    return c;
  }
  runs(first: number, n: number): DirtyRun[] {
    const out: DirtyRun[] = [];
    let p = first;
    while (p < first + n) {
      if (this.bits[p] === 1) {
        const s = p;
        while (p < first + n && this.bits[p] === 1) p++;
        out.push([s, p - s]);
      } else {
        p++;
      }
    }
    return out;
  }
  /** Kernel format of [first, first+n); `junk` sets the bits past n in the last word. */
  kernel(first: number, n: number, junk = false): Uint8Array {
    const out = new Uint8Array(kernelBitmapBytes(n));
    for (let i = 0; i < n; i++) if (this.bits[first + i] === 1) out[i >> 3] = (out[i >> 3] ?? 0) | (1 << (i & 7));
    if (junk) for (let i = n; i < out.length * 8; i++) out[i >> 3] = (out[i >> 3] ?? 0) | (1 << (i & 7));
    return out;
  }
  or(src: Ref, first: number): void {
    for (let i = 0; i < src.npages; i++) if (src.bits[i] === 1) this.bits[first + i] = 1;
  }
}

/** Fills both with a random pattern: isolated pages and runs, at a random density. */
function randomize(ref: Ref, bm?: DirtyBitmap): void {
  ref.bits.fill(0);
  const style = below(4);
  if (style === 0) {
    for (let p = 0; p < ref.npages; p++) ref.bits[p] = rand() & 1;
  } else {
    const density = [0, 0.01, 0.2, 0.7][style] ?? 0;
    const meanRun = 1 + below(100);
    let p = below(Math.max(1, Math.round(meanRun / density)));
    while (p < ref.npages) {
      const len = 1 + below(2 * meanRun);
      ref.fill(p, Math.min(len, ref.npages - p), 1);
      p += len + 1 + below(Math.max(1, Math.round((2 * meanRun * (1 - density)) / density)));
    }
  }
  if (bm !== undefined) {
    bm.clear();
    bm.mergeKernelBitmap(ref.kernel(0, ref.npages), 0, ref.npages);
  }
}

/** The first page where bm and ref differ, or -1. */
function firstDiff(bm: DirtyBitmap, ref: Ref): number {
  const bytes = bm.bytes;
  for (let p = 0; p < ref.npages; p++) {
    if ((((bytes[p >> 3] ?? 0) >> (p & 7)) & 1) !== ref.bits[p]) return p;
  }
  // Bits past npages must stay clear: the kernels rely on it.
  for (let p = ref.npages; p < bytes.length * 8; p++) if ((((bytes[p >> 3] ?? 0) >> (p & 7)) & 1) !== 0) return p;
  return -1;
}

const EDGES = [0, 1, 31, 32, 63, 64, 65];
const SIZES = [1, 2, 31, 63, 64, 65, 127, 128, 129, 200, 1000, 4159];

/** Ranges worth testing in a bitmap of n pages: edge offsets, word-crossing lengths, random ones. */
function ranges(n: number): Array<[number, number]> {
  const out: Array<[number, number]> = [[0, n], [0, 0], [n, 0]];
  for (const first of [...EDGES, n - 1, n - 64, n - 65].filter((f) => f >= 0 && f <= n)) {
    for (const len of [1, 2, 63, 64, 65, 127, 128, 129, n - first, below(n - first + 1)]) {
      if (len >= 0 && first + len <= n) out.push([first, len]);
    }
  }
  for (let i = 0; i < 8; i++) {
    const first = below(n + 1);
    out.push([first, below(n - first + 1)]);
  }
  return out;
}

t.test('the committed wasm module is the assembled .wat', async (t) => {
  const wat = readFileSync(new URL('../lib/vfio/dirty-bitmap.wat', import.meta.url), 'utf8');
  const committed = readFileSync(new URL('../lib/vfio/dirty-bitmap-wasm.ts', import.meta.url), 'utf8');
  t.equal(committed, renderModule(assemble(wat), 'dirty-bitmap.wat'), 'regenerate with scripts/wat2wasm.ts');
});

t.test('count, countRuns, runs and forEachRun match the reference', async (t) => {
  let checks = 0;
  for (const n of SIZES) {
    const ref = new Ref(n);
    const bm = new DirtyBitmap(n);
    for (let round = 0; round < 6; round++) {
      randomize(ref, bm);
      t.equal(firstDiff(bm, ref), -1, `n=${n} loaded`);
      for (const [first, len] of ranges(n)) {
        const what = `n=${n} round=${round} [${first}, +${len})`;
        const expected = ref.runs(first, len);
        if (bm.count(first, len) !== ref.count(first, len)) t.fail(`count ${what}`);
        if (bm.countRuns(first, len) !== expected.length) t.fail(`countRuns ${what}`);
        t.same([...bm.runs(first, len)], expected, `runs ${what}`);
        const seen: DirtyRun[] = [];
        const returned = bm.forEachRun((s, l) => seen.push([s, l]), first, len);
        if (returned !== expected.length) t.fail(`forEachRun count ${what}`);
        t.same(seen, expected, `forEachRun ${what}`);
        checks++;
      }
    }
  }
  t.ok(checks > 500, `${checks} ranges checked`);
  const bm = new DirtyBitmap(300);
  t.equal(bm.count(), 0);
  t.equal(bm.countRuns(), 0);
  t.same([...bm.runs()], []);
});

t.test('mergeKernelBitmap ORs at any page offset and ignores bits past npages', async (t) => {
  for (const n of [200, 1000, 4159]) {
    const ref = new Ref(n);
    const bm = new DirtyBitmap(n, { kernelBufferPages: n });
    for (const first of [...EDGES, 100, 127, 128, 129]) {
      for (const len of [0, 1, 2, 63, 64, 65, 66, 127, 128, 129, 130, n - first, below(n - first + 1)]) {
        if (len < 0 || first + len > n) continue;
        randomize(ref, bm);
        const src = new Ref(len);
        randomize(src);
        const junk = (rand() & 1) === 1;
        const kernel = src.kernel(0, len, junk);
        if ((rand() & 1) === 1) {
          bm.mergeKernelBitmap(kernel, first, len);
        } else {
          const kb = bm.kernelBuffer(len);
          t.ok(kb.every((b) => b === 0), 'kernelBuffer is zeroed');
          kb.set(kernel);
          bm.mergeKernelBitmap(kb, first, len);
        }
        ref.or(src, first);
        const diff = firstDiff(bm, ref);
        if (diff !== -1) t.fail(`n=${n} merge [${first}, +${len}) junk=${junk}: first difference at page ${diff}`);
      }
    }
  }
  t.pass('merges checked');
});

t.test('large merges cross the 64 KiB staging chunks, at unaligned offsets', async (t) => {
  const n = 3 * 524288 + 1234;
  const ref = new Ref(n);
  const bm = new DirtyBitmap(n, { kernelBufferPages: n });
  for (const first of [0, 1, 3, 63, 64, 65, 4096 + 7]) {
    const len = n - first - below(200);
    randomize(ref, bm);
    const src = new Ref(len);
    randomize(src);
    const kernel = src.kernel(0, len, true);
    const inPlace = first % 2 === 1;
    bm.mergeKernelBitmap(inPlace ? kbWith(bm, kernel, len) : kernel, first, len);
    ref.or(src, first);
    t.equal(firstDiff(bm, ref), -1, `merge at ${first} of ${len} pages (${inPlace ? 'in place' : 'staged'})`);
    t.equal(bm.count(), ref.count(0, n), 'count');
    t.equal(bm.countRuns(), ref.runs(0, n).length, 'countRuns');
    const first2 = below(1000);
    t.same(bm.toKernelBitmap(first2, n - first2 - 5), ref.kernel(first2, n - first2 - 5), 'toKernelBitmap');
  }
});

/** Puts `kernel` in the bitmap's kernel buffer and returns the buffer. */
function kbWith(bm: DirtyBitmap, kernel: Uint8Array, len: number): Uint8Array {
  const kb = bm.kernelBuffer(len);
  kb.set(kernel);
  return kb;
}

t.test('setRange, clearRange, set, test, testAndClear, markAll, clear', async (t) => {
  for (const n of SIZES) {
    const ref = new Ref(n);
    const bm = new DirtyBitmap(n);
    randomize(ref, bm);
    for (const [first, len] of ranges(n)) {
      const v = (rand() & 1) as 0 | 1;
      if (v === 1) bm.setRange(first, len);
      else bm.clearRange(first, len);
      ref.fill(first, len, v);
      const diff = firstDiff(bm, ref);
      if (diff !== -1) t.fail(`n=${n} ${v ? 'set' : 'clear'}Range(${first}, ${len}): first difference at ${diff}`);
    }
    for (let i = 0; i < 50; i++) {
      const p = below(n);
      if (bm.test(p) !== (ref.bits[p] === 1)) t.fail(`test(${p})`);
      if ((rand() & 1) === 1) {
        bm.set(p);
        ref.bits[p] = 1;
      } else {
        const was = ref.bits[p] === 1;
        if (bm.testAndClear(p) !== was) t.fail(`testAndClear(${p})`);
        ref.bits[p] = 0;
      }
    }
    t.equal(firstDiff(bm, ref), -1, `n=${n} after set/testAndClear`);
    bm.markAll();
    ref.fill(0, n, 1);
    t.equal(firstDiff(bm, ref), -1, `n=${n} markAll (bits past npages stay clear)`);
    t.equal(bm.count(), n);
    t.equal(bm.countRuns(), 1);
    bm.clear();
    t.equal(bm.count(), 0, `n=${n} clear`);
  }
});

t.test('takeRuns clears what it hands out, in batches, and nothing else', async (t) => {
  for (const n of [...SIZES, 20000]) {
    const ref = new Ref(n);
    const bm = new DirtyBitmap(n);
    for (const [first, len] of ranges(n).slice(0, 12)) {
      randomize(ref, bm);
      const expected = ref.runs(first, len);
      const got: DirtyRun[] = [];
      const pages = bm.takeRuns((s, l) => {
        // Cleared before the callback sees the run.
        if (bm.count(s, l) !== 0) t.fail(`run [${s}, +${l}) still dirty in its callback`);
        got.push([s, l]);
      }, first, len);
      t.same(got, expected, `n=${n} takeRuns(${first}, ${len})`);
      t.equal(pages, ref.count(first, len));
      ref.fill(first, len, 0);
      t.equal(firstDiff(bm, ref), -1, `n=${n} takeRuns(${first}, ${len}) cleared exactly the range`);
    }
  }
  // More runs than one batch (4096) holds: every other page dirty.
  const n = 3 * 4096 * 2 + 11;
  const bm = new DirtyBitmap(n);
  for (let p = 1; p < n; p += 2) bm.set(p);
  t.equal(bm.countRuns(), (n - 1) / 2);
  t.equal([...bm.runs()].length, (n - 1) / 2, 'generator across batches');
  let calls = 0;
  bm.forEachRun((s, l) => {
    if (s !== 2 * calls + 1 || l !== 1) t.fail(`run ${calls}`);
    calls++;
    // A nested iteration must not disturb the outer one.
    if (calls === 5000) t.equal(bm.forEachRun(() => undefined, 0, 100), 50);
  });
  t.equal(calls, (n - 1) / 2, 'forEachRun across batches');
  t.equal(bm.takeRuns(() => undefined), (n - 1) / 2);
  t.equal(bm.count(), 0);
});

t.test('takeRuns loses no dirty page when its callback throws', async (t) => {
  const n = 10000;
  const ref = new Ref(n);
  const bm = new DirtyBitmap(n);
  randomize(ref, bm);
  // A run of its own at 5000.
  bm.clearRange(4999, 5);
  bm.setRange(5000, 3);
  ref.fill(4999, 5, 0);
  ref.fill(5000, 3, 1);
  const runs = ref.runs(0, n);
  const stopAt = runs.findIndex(([s]) => s === 5000);
  let seen = 0;
  t.throws(() =>
    bm.takeRuns((s) => {
      if (s === 5000) throw new Error('send failed');
      seen++;
    }),
  );
  t.equal(seen, stopAt, 'the runs before the failure were handed out');
  for (const [s, l] of runs.slice(0, stopAt)) ref.fill(s, l, 0);
  t.equal(firstDiff(bm, ref), -1, 'the failed run and the ones after it are dirty again');
});

t.test('long runs at unaligned offsets', async (t) => {
  const n = 70000;
  const bm = new DirtyBitmap(n);
  for (const [s, l] of [[37, 5000], [5100, 64], [5229, 1], [6000, 63936]] as const) bm.setRange(s, l);
  const expected = [[37, 5000], [5100, 64], [5229, 1], [6000, 63936]];
  t.same([...bm.runs()], expected);
  t.same([...bm.runs(40, 6000)], [[40, 4997], [5100, 64], [5229, 1], [6000, 40]]);
  t.equal(bm.countRuns(), 4);
  bm.markAll();
  t.same([...bm.runs()], [[0, n]]);
  t.same([...bm.runs(65, n - 130)], [[65, n - 130]]);
});

t.test('toKernelBitmap and fromKernelBitmap round-trip at any offset', async (t) => {
  for (const n of SIZES) {
    const ref = new Ref(n);
    const bm = new DirtyBitmap(n);
    randomize(ref, bm);
    for (const [first, len] of ranges(n)) {
      const k = bm.toKernelBitmap(first, len);
      t.same(k, ref.kernel(first, len), `n=${n} toKernelBitmap(${first}, ${len})`);
      const back = DirtyBitmap.fromKernelBitmap(k, len);
      const sub = new Ref(len);
      sub.bits.set(ref.bits.subarray(first, first + len));
      if (firstDiff(back, sub) !== -1) t.fail(`n=${n} fromKernelBitmap(${first}, ${len})`);
    }
    const out = new Uint8Array(kernelBitmapBytes(n) + 8).fill(0xaa);
    t.equal(bm.toKernelBitmap(0, n, out), out, 'writes into out');
    t.same(out.subarray(0, kernelBitmapBytes(n)), ref.kernel(0, n));
    t.equal(out[out.length - 1], 0xaa, 'and no further');
  }
  t.same(DirtyBitmap.fromKernelBitmap(new Uint8Array([0xff, 0, 0, 0, 0, 0, 0, 0x80]), 3).bytes, new Uint8Array(8).fill(7, 0, 1),
    'bits past npages are dropped');
});

t.test('a bitmap in a caller memory, at an offset, survives the memory growing', async (t) => {
  const n = 1000;
  const WA = (globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => { buffer: ArrayBuffer; grow(pages: number): number } };
  }).WebAssembly;
  const memory = new WA.Memory({ initial: 2, maximum: 10 });
  const offset = 4096;
  t.ok(offset + DirtyBitmap.byteLength(n, 200) <= memory.buffer.byteLength);
  new Uint8Array(memory.buffer).fill(0xff);
  const bm = new DirtyBitmap(n, { memory, byteOffset: offset, kernelBufferPages: 200 });
  t.equal(bm.count(), n, 'keeps the contents');
  t.equal(bm.bytes[kernelBitmapBytes(n) - 1], 0xff >> (kernelBitmapBytes(n) * 8 - n), 'but clears bits past npages');
  t.equal(bm.bytes.byteOffset % 8, 0);
  bm.clear();
  const ref = new Ref(n);
  randomize(ref, bm);
  memory.grow(1);
  t.equal(firstDiff(bm, ref), -1, 'views follow the grown memory');
  bm.set(999);
  ref.bits[999] = 1;
  t.equal(bm.count(), ref.count(0, n));
  t.same([...bm.runs()], ref.runs(0, n));
  const kb = bm.kernelBuffer(200);
  t.equal(kb.buffer, memory.buffer, 'the kernel buffer is in the same memory');
  kb[0] = 0b101;
  bm.mergeKernelBitmap(kb, 10, 200);
  ref.bits[10] = 1;
  ref.bits[12] = 1;
  t.equal(firstDiff(bm, ref), -1, 'in-place merge');
  const other = new DirtyBitmap(64, { memory, byteOffset: offset + DirtyBitmap.byteLength(n, 200) + 8 });
  other.markAll();
  t.equal(firstDiff(bm, ref), -1, 'a second bitmap in the same memory leaves the first alone');
  t.equal(other.count(), 64);
});

t.test('page numbers past 2^32', async (t) => {
  const n = 2 ** 32 + 200;
  const bm = new DirtyBitmap(n);
  const top = 2 ** 32 + 3;
  bm.set(2 ** 31);
  bm.set(top);
  bm.setRange(2 ** 32 - 2, 4);
  t.ok(bm.test(2 ** 31) && bm.test(top) && bm.test(2 ** 32 + 1) && !bm.test(2 ** 32 + 2));
  t.equal(bm.count(), 6);
  t.equal(bm.countRuns(), 3);
  t.same([...bm.runs(2 ** 31 + 1)], [[2 ** 32 - 2, 4], [top, 1]]);
  const k = new Uint8Array([0b1011, 0, 0, 0, 0, 0, 0, 0]);
  bm.mergeKernelBitmap(k, 2 ** 32 + 100, 4);
  t.same([...bm.runs(2 ** 32 + 50)], [[2 ** 32 + 100, 2], [2 ** 32 + 103, 1]]);
  t.same(bm.toKernelBitmap(2 ** 32 + 100, 4), new Uint8Array([0b1011, 0, 0, 0, 0, 0, 0, 0]));
  t.equal(bm.takeRuns(() => undefined, 2 ** 32), 6, "2^32, 2^32+1, 2^32+3, and the three merged");
  t.equal(bm.count(), 3);
  bm.markAll();
  t.equal(bm.count(), n);
});

t.test('arguments outside the bitmap are refused', async (t) => {
  const bm = new DirtyBitmap(100, { kernelBufferPages: 64 });
  const refused = (f: () => unknown, what: string): void => {
    t.throws(f, VfioArgumentError, what);
  };
  refused(() => new DirtyBitmap(-1), 'negative npages');
  refused(() => new DirtyBitmap(1.5), 'fractional npages');
  refused(() => new DirtyBitmap(DirtyBitmap.MAX_PAGES + 64), 'more than a 4 GiB memory');
  refused(() => new DirtyBitmap(DirtyBitmap.MAX_PAGES, { kernelBufferPages: 64 }), 'kernel buffer past 4 GiB');
  refused(() => new DirtyBitmap(10, { byteOffset: 8 }), 'byteOffset without memory');
  refused(() => new DirtyBitmap(10, { memory: bm.memory, byteOffset: 4 }), 'misaligned byteOffset');
  refused(() => new DirtyBitmap(10, { memory: bm.memory, byteOffset: bm.memory.buffer.byteLength }), 'region past the memory');
  refused(() => bm.test(100), 'test past the end');
  refused(() => bm.set(-1), 'negative page');
  refused(() => bm.setRange(90, 11), 'range past the end');
  refused(() => bm.count(101), 'count from past the end');
  refused(() => bm.mergeKernelBitmap(new Uint8Array(8), 0, 65), 'bitmap too small');
  refused(() => bm.mergeKernelBitmap(new Uint8Array(16), 50, 51), 'merge past the end');
  refused(() => bm.mergeKernelBitmap(bm.bytes, 0, 64), 'source overlapping the bitmap');
  refused(() => bm.kernelBuffer(65), 'kernel buffer larger than reserved');
  refused(() => bm.toKernelBitmap(0, 100, new Uint8Array(8)), 'out too small');
  refused(() => [...bm.runs(0, 101)], 'runs past the end');
  const err = t.throws(() => bm.clearRange(0, 101));
  t.match(err, { code: 'ERR_VFIO_INVALID_ARGUMENT', op: 'DirtyBitmap.clearRange' });
  t.equal(DirtyBitmap.byteLength(64) % 8, 0);
  t.equal(new DirtyBitmap(0).count(), 0, 'an empty bitmap is fine');
});
