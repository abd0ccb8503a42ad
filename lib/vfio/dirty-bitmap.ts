/**
 * The VMM's dirty bitmap: one bit per guest page, into which the kernel's
 * dirty bitmaps (VFIO_IOMMU_DIRTY_PAGES, device DMA logging, iommufd HWPT) are
 * merged, and from which the migration loop takes the runs of dirty pages to copy.
 *
 * The bits live in a WebAssembly memory and the bulk operations (merge, count,
 * run search) are a small hand-written SIMD module (dirty-bitmap.wat): on a
 * 32 MiB bitmap (a 1 TiB guest) they run at C speed, where plain JS on a
 * Uint32Array took 2-4x C (see bench/bitmap.ts). The format is the kernel's:
 * u64 words, host-endian (vfio-ts supports little-endian hosts), bit i = page i.
 * Page numbers are plain numbers; nothing here uses BigInt.
 */
import { VfioArgumentError } from '../errors.js';
import { WASM_BASE64 } from './dirty-bitmap-wasm.js';

/** A run of dirty pages: its first page and its length in pages. */
export type DirtyRun = [startPage: number, npages: number];

/** Receives one run of dirty pages. */
export type DirtyRunCallback = (startPage: number, npages: number) => void;

/**
 * A `WebAssembly.Memory`, by the parts used here (the project's TypeScript
 * libs carry no WebAssembly types; a real `WebAssembly.Memory` fits).
 */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
}

/** The WebAssembly JS API, as far as it is used here. */
interface WasmApi {
  Memory: new (descriptor: { initial: number }) => WasmMemory;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: { env: { memory: WasmMemory } }) => { exports: object };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** Where a {@link DirtyBitmap} keeps its bits. */
export interface DirtyBitmapOptions {
  /**
   * A memory the caller allocated (for example `shared: true`, to hand the
   * bitmap to a worker). The bitmap uses {@link DirtyBitmap.byteLength} bytes
   * of it from `byteOffset`, and keeps what is there: a new region must be zero
   * (a new `WebAssembly.Memory` is). Without it the bitmap allocates its own.
   */
  memory?: WasmMemory;
  /** Byte offset of the bitmap's region in `memory`, a multiple of 8 (default 0). */
  byteOffset?: number;
  /**
   * Reserve room for a kernel bitmap of up to this many pages next to the
   * VMM bitmap (see {@link DirtyBitmap.kernelBuffer}): the kernel then writes
   * where the merge reads, and the merge copies nothing. Default 0.
   */
  kernelBufferPages?: number;
}

/** Bytes of a kernel-format bitmap of `npages` pages: whole u64 words, as the kernel requires. */
export function kernelBitmapBytes(npages: number): number {
  return Math.ceil(npages / 64) * 8;
}

/** The exports of dirty-bitmap.wat. Bit positions are f64, addresses are byte offsets. */
interface Kernels {
  count(base: number, from: number, to: number): number;
  count_runs(base: number, from: number, to: number): number;
  fill(base: number, from: number, to: number, value: number): void;
  merge(base: number, at: number, src: number, nbits: number): void;
  extract(out: number, base: number, from: number, nbits: number): void;
  find_runs(base: number, from: number, to: number, out: number, max: number): number;
}

const WASM_PAGE = 65536;
const MAX_MEMORY = 65536 * WASM_PAGE;
/** Staging area at the start of the region: foreign kernel bitmaps are copied through it, runs come back in it. */
const SCRATCH_BYTES = 65536;
const CHUNK_BITS = SCRATCH_BYTES * 8;
const RUN_BATCH = SCRATCH_BYTES / 16;
/** A zero word after the bitmap (read by `extract`), rounded up for 16-byte vectors. */
const PAD_BYTES = 16;

let wasmModule: object | undefined;
const kernelsByMemory = new WeakMap<WasmMemory, Kernels>();

function kernelsFor(memory: WasmMemory): Kernels {
  let k = kernelsByMemory.get(memory);
  if (k === undefined) {
    wasmModule ??= new wasm.Module(Buffer.from(WASM_BASE64, 'base64'));
    const exports = new wasm.Instance(wasmModule, { env: { memory } }).exports;
    // The module is ours and fixed, so its export signatures are known.
    k = exports as unknown as Kernels;
    kernelsByMemory.set(memory, k);
  }
  return k;
}

const isCount = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;

function layout(npages: number, kernelBufferPages: number): { kernelOffset: number; byteLength: number } {
  const end = SCRATCH_BYTES + kernelBitmapBytes(npages) + PAD_BYTES;
  if (kernelBufferPages === 0) return { kernelOffset: end, byteLength: end };
  // Page-aligned (if the region is), as the kernel's copy prefers.
  const kernelOffset = Math.ceil(end / 4096) * 4096;
  return { kernelOffset, byteLength: kernelOffset + kernelBitmapBytes(kernelBufferPages) };
}

/**
 * A dirty-page bitmap for a whole guest. Pages are numbered from 0; all
 * ranges are `(firstPage, npages)` and must lie inside the bitmap, otherwise
 * the method throws a {@link VfioArgumentError}.
 *
 * @example
 * ```ts
 * const dirty = new DirtyBitmap(ramBytes / 4096, { kernelBufferPages: maxQueryPages });
 * const buf = dirty.kernelBuffer(pages);   // zeroed, as the kernel requires
 * // ... VFIO_IOMMU_DIRTY_PAGES GET_BITMAP (or a DMA logging report) fills buf ...
 * dirty.mergeKernelBitmap(buf, firstPage, pages);
 * dirty.takeRuns((page, n) => sendPages(page, n));
 * ```
 */
export class DirtyBitmap {
  /** The largest bitmap: its region must fit in a 4 GiB wasm memory (2^35 pages less the scratch; 128 TiB of 4 KiB pages). */
  static readonly MAX_PAGES = (MAX_MEMORY - SCRATCH_BYTES - PAD_BYTES) * 8;

  /** Number of pages. */
  readonly npages: number;
  /** The memory holding the bits (and the kernel buffer, if reserved). */
  readonly memory: WasmMemory;
  /** Pages the kernel buffer can hold (0: none reserved). */
  readonly kernelBufferPages: number;

  private readonly k: Kernels;
  /** Byte offsets in `memory`: scratch area, bitmap words, kernel buffer. */
  private readonly scratch: number;
  private readonly base: number;
  private readonly kernelOffset: number;
  private u8: Uint8Array;
  private runBatch: Float64Array;
  /** Reused run buffer; taken while an iteration runs, so nested iterations get their own. */
  private spareRuns: Float64Array | undefined = new Float64Array(RUN_BATCH * 2);

  /**
   * Bytes of memory a bitmap of `npages` pages takes (with a kernel buffer of
   * `kernelBufferPages`): what to reserve when passing {@link DirtyBitmapOptions.memory}.
   */
  static byteLength(npages: number, kernelBufferPages = 0): number {
    return layout(npages, kernelBufferPages).byteLength;
  }

  /** A new bitmap of `npages` pages holding the bits of a kernel bitmap (bit 0 = page 0). */
  static fromKernelBitmap(bitmap: Uint8Array, npages: number, options?: DirtyBitmapOptions): DirtyBitmap {
    const bm = new DirtyBitmap(npages, options);
    bm.mergeKernelBitmap(bitmap, 0, npages);
    return bm;
  }

  /** A bitmap of `npages` pages, all clean (or, over a caller's memory, as found there). */
  constructor(npages: number, options: DirtyBitmapOptions = {}) {
    const op = 'DirtyBitmap';
    if (!isCount(npages) || npages > DirtyBitmap.MAX_PAGES) {
      throw new VfioArgumentError(op, `npages must be an integer in [0, ${DirtyBitmap.MAX_PAGES}], got ${npages}`);
    }
    const kernelBufferPages = options.kernelBufferPages ?? 0;
    if (!isCount(kernelBufferPages)) {
      throw new VfioArgumentError(op, `kernelBufferPages must be a non-negative integer, got ${kernelBufferPages}`);
    }
    const { kernelOffset, byteLength } = layout(npages, kernelBufferPages);
    if (byteLength > MAX_MEMORY) {
      throw new VfioArgumentError(op, `${byteLength} bytes needed, more than a 4 GiB wasm memory`);
    }
    const offset = options.byteOffset ?? 0;
    if (options.memory === undefined) {
      if (offset !== 0) throw new VfioArgumentError(op, 'byteOffset needs a memory');
      this.memory = new wasm.Memory({ initial: Math.ceil(byteLength / WASM_PAGE) });
    } else {
      this.memory = options.memory;
      if (!isCount(offset) || offset % 8 !== 0 || offset + byteLength > this.memory.buffer.byteLength) {
        throw new VfioArgumentError(
          op,
          `the region [${offset}, ${offset + byteLength}) must be 8-byte aligned and inside the memory (${this.memory.buffer.byteLength} bytes)`,
        );
      }
    }
    this.npages = npages;
    this.kernelBufferPages = kernelBufferPages;
    this.k = kernelsFor(this.memory);
    this.scratch = offset;
    this.base = offset + SCRATCH_BYTES;
    this.kernelOffset = offset + kernelOffset;
    this.u8 = new Uint8Array(this.memory.buffer);
    this.runBatch = new Float64Array(this.memory.buffer, this.scratch, RUN_BATCH * 2);
    if (options.memory !== undefined) {
      // The kernels rely on zero bits past npages and a zero word after the bitmap.
      this.k.fill(this.base, npages, kernelBitmapBytes(npages) * 8, 0);
      this.u8.fill(0, this.base + kernelBitmapBytes(npages), this.base + kernelBitmapBytes(npages) + PAD_BYTES);
    }
  }

  /** The bitmap's bytes, in kernel format (page 0 = bit 0 of byte 0): a live view. */
  get bytes(): Uint8Array {
    return this.view().subarray(this.base, this.base + kernelBitmapBytes(this.npages));
  }

  /** Whether `page` is dirty. */
  test(page: number): boolean {
    this.checkPage('test', page);
    return (this.view()[this.base + Math.floor(page / 8)] & (1 << (page & 7))) !== 0;
  }

  /** Marks `page` dirty. */
  set(page: number): void {
    this.checkPage('set', page);
    const u8 = this.view();
    const at = this.base + Math.floor(page / 8);
    u8[at] |= 1 << (page & 7);
  }

  /** Clears `page` and returns whether it was dirty. */
  testAndClear(page: number): boolean {
    this.checkPage('testAndClear', page);
    const u8 = this.view();
    const at = this.base + Math.floor(page / 8);
    const byte = u8[at];
    const bit = 1 << (page & 7);
    u8[at] = byte & ~bit;
    return (byte & bit) !== 0;
  }

  /** Marks pages `[firstPage, firstPage + npages)` dirty. */
  setRange(firstPage: number, npages: number): void {
    this.checkRange('setRange', firstPage, npages);
    this.k.fill(this.base, firstPage, firstPage + npages, 1);
  }

  /** Clears pages `[firstPage, firstPage + npages)`. */
  clearRange(firstPage: number, npages: number): void {
    this.checkRange('clearRange', firstPage, npages);
    this.k.fill(this.base, firstPage, firstPage + npages, 0);
  }

  /** Clears every page. */
  clear(): void {
    this.k.fill(this.base, 0, this.npages, 0);
  }

  /** Marks every page dirty: the fallback when a device cannot report what it wrote. */
  markAll(): void {
    this.k.fill(this.base, 0, this.npages, 1);
  }

  /** Number of dirty pages in the range (default: all). */
  count(firstPage = 0, npages = this.npages - firstPage): number {
    this.checkRange('count', firstPage, npages);
    return this.k.count(this.base, firstPage, firstPage + npages);
  }

  /** Number of maximal runs of dirty pages in the range (a run cut by the range counts once). */
  countRuns(firstPage = 0, npages = this.npages - firstPage): number {
    this.checkRange('countRuns', firstPage, npages);
    return this.k.count_runs(this.base, firstPage, firstPage + npages);
  }

  /**
   * The runs of dirty pages in the range, in order, as `[startPage, npages]`.
   * Runs are found in batches: changes made while iterating are seen only
   * beyond the current batch.
   */
  *runs(firstPage = 0, npages = this.npages - firstPage): Generator<DirtyRun, void, undefined> {
    this.checkRange('runs', firstPage, npages);
    const batch = new Float64Array(RUN_BATCH * 2);
    const end = firstPage + npages;
    let pos = firstPage;
    for (;;) {
      const got = this.findRuns(pos, end, batch);
      for (let i = 0; i < 2 * got; i += 2) yield [batch[i], batch[i + 1]];
      if (got < RUN_BATCH) return;
      pos = batch[2 * got - 2] + batch[2 * got - 1];
    }
  }

  /**
   * Calls `cb(startPage, npages)` for each run of dirty pages in the range, in
   * order; the fast form of {@link runs}. Returns the number of runs.
   */
  forEachRun(cb: DirtyRunCallback, firstPage = 0, npages = this.npages - firstPage): number {
    this.checkRange('forEachRun', firstPage, npages);
    return this.eachRun(cb, firstPage, firstPage + npages, false);
  }

  /**
   * Test-and-clear for the copy loop: clears each run of dirty pages in the
   * range and then calls `cb(startPage, npages)` for it. Clearing comes first,
   * so a page dirtied again while the callback copies it is caught by the
   * next merge. If `cb` throws, the run it was given and the runs not yet
   * handed out are marked dirty again, so no dirty page is lost. Returns the
   * number of pages taken.
   */
  takeRuns(cb: DirtyRunCallback, firstPage = 0, npages = this.npages - firstPage): number {
    this.checkRange('takeRuns', firstPage, npages);
    let pages = 0;
    this.eachRun((start, n) => {
      pages += n;
      cb(start, n);
    }, firstPage, firstPage + npages, true);
    return pages;
  }

  /**
   * ORs a kernel dirty bitmap into this one: bit i of `bitmap` (u64 words,
   * host-endian) is page `firstPage + i`, for i < `npages`; bits past `npages`
   * in its last word are ignored. `firstPage` need not be word-aligned.
   * `bitmap` needs {@link kernelBitmapBytes}(npages) bytes. A `bitmap` in this
   * bitmap's memory (see {@link kernelBuffer}) is read in place; any other is
   * copied through a 64 KiB staging area.
   */
  mergeKernelBitmap(bitmap: Uint8Array, firstPage: number, npages: number): void {
    const op = 'mergeKernelBitmap';
    this.checkRange(op, firstPage, npages);
    const bytes = kernelBitmapBytes(npages);
    if (bitmap.byteLength < bytes) {
      throw new VfioArgumentError(
        `DirtyBitmap.${op}`,
        `a bitmap of ${npages} pages needs ${bytes} bytes, got ${bitmap.byteLength}`,
      );
    }
    const u8 = this.view();
    if (bitmap.buffer === u8.buffer) {
      const start = bitmap.byteOffset;
      if (start < this.base + kernelBitmapBytes(this.npages) + PAD_BYTES && start + bytes > this.base) {
        throw new VfioArgumentError(`DirtyBitmap.${op}`, 'the source overlaps the bitmap itself');
      }
      this.k.merge(this.base, firstPage, start, npages);
      return;
    }
    // Chunks are independent: each one ORs its last word's high bits into the next page word.
    for (let done = 0; done < npages; done += CHUNK_BITS) {
      const bits = Math.min(CHUNK_BITS, npages - done);
      u8.set(bitmap.subarray(done / 8, done / 8 + kernelBitmapBytes(bits)), this.scratch);
      this.k.merge(this.base, firstPage + done, this.scratch, bits);
    }
  }

  /**
   * A zeroed buffer for the kernel to write a bitmap of `npages` pages into,
   * inside this bitmap's memory, so that {@link mergeKernelBitmap} reads it in
   * place. It is the same bytes each call (zeroed again): use it before asking
   * for it again. Needs `kernelBufferPages` >= `npages` at construction.
   */
  kernelBuffer(npages = this.kernelBufferPages): Uint8Array {
    if (!isCount(npages) || npages > this.kernelBufferPages) {
      throw new VfioArgumentError(
        'DirtyBitmap.kernelBuffer',
        `room for ${this.kernelBufferPages} pages was reserved (kernelBufferPages), ${npages} asked`,
      );
    }
    const end = this.kernelOffset + kernelBitmapBytes(npages);
    const u8 = this.view();
    u8.fill(0, this.kernelOffset, end);
    return u8.subarray(this.kernelOffset, end);
  }

  /**
   * The range as a kernel-format bitmap (bit 0 = `firstPage`, whole u64 words,
   * bits past `npages` zero), written over the first
   * {@link kernelBitmapBytes}(npages) bytes of `out` or of a new array.
   */
  toKernelBitmap(firstPage = 0, npages = this.npages - firstPage, out?: Uint8Array): Uint8Array {
    const op = 'toKernelBitmap';
    this.checkRange(op, firstPage, npages);
    const bytes = kernelBitmapBytes(npages);
    const dst = out ?? new Uint8Array(bytes);
    if (dst.byteLength < bytes) {
      throw new VfioArgumentError(`DirtyBitmap.${op}`, `${npages} pages need ${bytes} bytes, out has ${dst.byteLength}`);
    }
    for (let done = 0; done < npages; done += CHUNK_BITS) {
      const bits = Math.min(CHUNK_BITS, npages - done);
      this.k.extract(this.scratch, this.base, firstPage + done, bits);
      dst.set(this.view().subarray(this.scratch, this.scratch + kernelBitmapBytes(bits)), done / 8);
    }
    return dst;
  }

  /** Views of the memory, made again if a caller's memory grew (which detaches them). */
  private view(): Uint8Array {
    if (this.u8.buffer !== this.memory.buffer) {
      this.u8 = new Uint8Array(this.memory.buffer);
      this.runBatch = new Float64Array(this.memory.buffer, this.scratch, RUN_BATCH * 2);
    }
    return this.u8;
  }

  /** Finds up to RUN_BATCH runs in [from, to) and copies them to `out`; returns how many. */
  private findRuns(from: number, to: number, out: Float64Array): number {
    this.view();
    const got = this.k.find_runs(this.base, from, to, this.scratch, RUN_BATCH);
    out.set(this.runBatch.subarray(0, 2 * got));
    return got;
  }

  private eachRun(cb: DirtyRunCallback, from: number, to: number, take: boolean): number {
    const batch = this.spareRuns ?? new Float64Array(RUN_BATCH * 2);
    this.spareRuns = undefined;
    let runs = 0;
    let pos = from;
    try {
      for (;;) {
        const got = this.findRuns(pos, to, batch);
        if (got === 0) return runs;
        const next = batch[2 * got - 2] + batch[2 * got - 1];
        // The batch's runs are the only set bits in [pos, next).
        if (take) this.k.fill(this.base, pos, next, 0);
        let i = 0;
        try {
          for (; i < 2 * got; i += 2) cb(batch[i], batch[i + 1]);
        } catch (err) {
          for (; take && i < 2 * got; i += 2) this.k.fill(this.base, batch[i], batch[i] + batch[i + 1], 1);
          throw err;
        }
        runs += got;
        if (got < RUN_BATCH) return runs;
        pos = next;
      }
    } finally {
      this.spareRuns = batch;
    }
  }

  private checkPage(op: string, page: number): void {
    if (!isCount(page) || page >= this.npages) {
      throw new VfioArgumentError(`DirtyBitmap.${op}`, `page ${page} is outside the bitmap of ${this.npages} pages`);
    }
  }

  private checkRange(op: string, firstPage: number, npages: number): void {
    if (!isCount(firstPage) || !isCount(npages) || firstPage + npages > this.npages) {
      throw new VfioArgumentError(
        `DirtyBitmap.${op}`,
        `pages [${firstPage}, ${firstPage}+${npages}) are outside the bitmap of ${this.npages} pages`,
      );
    }
  }
}
