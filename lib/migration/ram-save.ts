/**
 * The source side of guest RAM in a migration: QEMU's `savevm_ram_handlers`
 * (migration/ram.c) over a {@link GuestRam}, a {@link DirtyTracker} and a
 * {@link DirtyBitmap}, with the hook names {@link VfioMigration} uses.
 *
 * - `saveSetup` (`ram_save_setup`): tracking on (`log_global_start`), every
 *   page dirty (the bulk stage), the block list;
 * - `saveLiveIterate` (`ram_save_iterate`): a tracker sync, then every dirty
 *   page, zero pages as such;
 * - `statePendingEstimate`/`statePendingExact`: dirty pages × page size, the
 *   exact one after a sync;
 * - `saveLiveCompletePrecopy` (`ram_save_complete`): the final sync, once the
 *   vCPUs and the devices are stopped, and every page still dirty;
 * - `saveCleanup`: tracking off again, if setup turned it on.
 *
 * Pages are cleared in the bitmap before they are read (`takeRuns`), so a
 * write while a page is on its way marks it dirty again; a page whose write
 * to the stream failed is marked dirty again, so none is lost. Memory stays
 * bounded: the dirty runs are taken a window at a time and written a batch
 * at a time, each write awaited (the sink's backpressure), the pages
 * zero-copy from guest memory.
 */
import { VfioArgumentError, VfioClosedError } from '../errors.js';
import { DirtyBitmap } from '../vfio/dirty-bitmap.js';
import type { DirtyTracker } from '../vfio/dirty-tracker.js';
import type { ByteSink } from './byte-io.js';
import type { GuestRam, GuestRamBlock } from './guest-ram.js';
import { encodeRamEos, encodeRamMemSize, encodeRamPageHeader } from './ram-format.js';

/** Default {@link RamSaverOptions.batchPages}: 1 MiB of 4 KiB pages per write. */
export const DEFAULT_RAM_BATCH_PAGES = 256;
/** Pages whose dirty runs are taken at once: the run list stays small whatever the RAM size. */
const WINDOW_PAGES = 1 << 16;
/** The most pages the bitmap's kernel buffer holds (a 32 KiB bitmap): trackers merge without a copy up to this. */
const KERNEL_BUFFER_PAGES = 1 << 18;

/** Options of {@link RamSaver}. */
export interface RamSaverOptions {
  /** The RAM to migrate. */
  readonly ram: GuestRam;
  /**
   * Tracks the devices' writes to `ram`: made with `ram: ram.ranges` and
   * `pageSize: BigInt(ram.pageSize)`, so its bitmap pages are RAM pages.
   * Started by `saveSetup` unless it runs already, and then stopped by `saveCleanup`.
   */
  readonly tracker: DirtyTracker;
  /** Pages per write to the stream. Default {@link DEFAULT_RAM_BATCH_PAGES}. */
  readonly batchPages?: number;
}

/** What the RAM hooks did since `saveSetup`. */
export interface RamSaveStats {
  /** `saveLiveIterate` calls. */
  readonly rounds: number;
  /** Tracker syncs. */
  readonly syncs: number;
  /** Pages sent whole (RAM_SAVE_FLAG_PAGE). */
  readonly pages: number;
  /** Pages sent as zero pages (RAM_SAVE_FLAG_ZERO). */
  readonly zeroPages: number;
  /** Pages (of both kinds) sent by `saveLiveCompletePrecopy`, after the vCPUs stopped. */
  readonly stopCopyPages: number;
  /** Bytes of ram section content written. */
  readonly bytes: number;
}

type Counters = { -readonly [K in keyof RamSaveStats]: number };

const zeroCounters = (): Counters => ({ rounds: 0, syncs: 0, pages: 0, zeroPages: 0, stopCopyPages: 0, bytes: 0 });

/** Guest RAM's save hooks. Owns its bitmap; the tracker stays the caller's. */
export class RamSaver implements Disposable {
  readonly ram: GuestRam;
  readonly tracker: DirtyTracker;
  /** RAM pages still to send. */
  readonly bitmap: DirtyBitmap;
  readonly #batchPages: number;
  readonly #zeroPage: Buffer;
  #counts = zeroCounters();
  /** The tracker was started by saveSetup: saveCleanup stops it. */
  #startedTracker = false;
  /** QEMU's `last_sent_block`: the next page of this block goes with CONTINUE. */
  #lastSent: GuestRamBlock | undefined;
  #closed = false;

  /** @throws VfioArgumentError when the tracker's page size is not the RAM's, or for a bad batch size */
  constructor(options: RamSaverOptions) {
    const { ram, tracker } = options;
    if (tracker.pageSize !== BigInt(ram.pageSize)) {
      throw new VfioArgumentError('RamSaver', `the tracker's pages are ${tracker.pageSize} bytes, the RAM's ${ram.pageSize}`);
    }
    const batch = options.batchPages ?? DEFAULT_RAM_BATCH_PAGES;
    if (!Number.isSafeInteger(batch) || batch < 1) throw new VfioArgumentError('RamSaver', `batchPages ${batch} is not a positive integer`);
    this.ram = ram;
    this.tracker = tracker;
    this.#batchPages = batch;
    this.#zeroPage = Buffer.alloc(ram.pageSize);
    this.bitmap = new DirtyBitmap(ram.npages, { kernelBufferPages: Math.min(ram.npages, KERNEL_BUFFER_PAGES) });
  }

  /** What the hooks did since the last {@link saveSetup}. */
  get stats(): RamSaveStats {
    return { ...this.#counts };
  }

  /**
   * `ram_save_setup`: tracking on (before any page is read, so no write is
   * missed), every page dirty, then `MEM_SIZE` with the block list and EOS.
   */
  async saveSetup(sink: ByteSink): Promise<void> {
    if (this.#closed) throw new VfioClosedError('RAM saver');
    this.#counts = zeroCounters();
    this.#lastSent = undefined;
    if (!this.tracker.tracking) {
      this.tracker.start();
      this.#startedTracker = true;
    }
    this.bitmap.markAll();
    await this.#write(sink, [encodeRamMemSize(this.ram.blocks), encodeRamEos()]);
  }

  /** `ram_state_pending_estimate`: the dirty pages known now, in bytes (no sync). */
  statePendingEstimate(): number {
    return this.bitmap.count() * this.ram.pageSize;
  }

  /** `ram_state_pending_exact`: a tracker sync, then the dirty pages in bytes. */
  statePendingExact(): number {
    this.#sync();
    return this.statePendingEstimate();
  }

  /**
   * `ram_save_iterate`: a tracker sync, every dirty page, EOS.
   * @returns the pages sent
   */
  async saveLiveIterate(sink: ByteSink): Promise<number> {
    this.#sync();
    const pages = await this.#sendDirty(sink);
    await this.#write(sink, [encodeRamEos()]);
    this.#counts.rounds++;
    return pages;
  }

  /**
   * `ram_save_complete`: call it once the vCPUs are stopped and the devices
   * quiesced (STOP_COPY), so nothing writes RAM any more: the final sync,
   * every page still dirty, EOS.
   * @returns the pages sent
   */
  async saveLiveCompletePrecopy(sink: ByteSink): Promise<number> {
    this.#sync();
    const pages = await this.#sendDirty(sink);
    await this.#write(sink, [encodeRamEos()]);
    this.#counts.stopCopyPages += pages;
    return pages;
  }

  /** `ram_save_cleanup`: tracking off, if {@link saveSetup} turned it on. Idempotent. */
  saveCleanup(): void {
    if (!this.#startedTracker) return;
    this.#startedTracker = false;
    this.tracker.stop();
  }

  /** Cleans up; the saver cannot set up again. Idempotent. */
  close(): void {
    this.#closed = true;
    this.saveCleanup();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #sync(): void {
    this.tracker.sync(this.bitmap);
    this.#counts.syncs++;
  }

  /** Sends every dirty page, a window of the bitmap at a time; returns the count. */
  async #sendDirty(sink: ByteSink): Promise<number> {
    let sent = 0;
    for (let first = 0; first < this.ram.npages; first += WINDOW_PAGES) {
      const runs: number[] = [];
      this.bitmap.takeRuns(
        (start, n) => {
          runs.push(start, n);
        },
        first,
        Math.min(WINDOW_PAGES, this.ram.npages - first),
      );
      sent += await this.#sendRuns(sink, runs);
    }
    return sent;
  }

  /**
   * Sends the pages of `runs` (`[start, n, start, n, ...]`, taken from the
   * bitmap), a batch per write. If anything fails, every page not confirmed
   * written is dirty again.
   */
  async #sendRuns(sink: ByteSink, runs: readonly number[]): Promise<number> {
    const batch: Uint8Array[] = [];
    let inBatch = 0;
    let zeros = 0;
    /** Pages before this one are in the stream. */
    let unsentFrom = 0;
    let block: GuestRamBlock | undefined;
    const flush = async (next: number): Promise<void> => {
      await this.#write(sink, batch);
      this.#counts.pages += inBatch - zeros;
      this.#counts.zeroPages += zeros;
      batch.length = 0;
      inBatch = 0;
      zeros = 0;
      unsentFrom = next;
    };
    try {
      for (let r = 0; r < runs.length; r += 2) {
        const end = runs[r] + runs[r + 1];
        for (let page = runs[r]; page < end; page++) {
          if (block === undefined || page >= block.firstPage + block.npages) block = this.ram.blockOf(page);
          if (this.#encodePage(block, page, batch) === 'zero') zeros++;
          if (++inBatch === this.#batchPages) await flush(page + 1);
        }
      }
      if (inBatch > 0) await flush(this.ram.npages);
    } catch (e) {
      // The destination may have missed the block a CONTINUE would refer to.
      this.#lastSent = undefined;
      for (let r = 0; r < runs.length; r += 2) {
        const start = Math.max(runs[r], unsentFrom);
        const end = runs[r] + runs[r + 1];
        if (end > start) this.bitmap.setRange(start, end - start);
      }
      throw e;
    }
    let pages = 0;
    for (let r = 1; r < runs.length; r += 2) pages += runs[r];
    return pages;
  }

  /** `ram_save_page` / `save_zero_page`: the page's header and bytes onto `batch`; says which it was. */
  #encodePage(block: GuestRamBlock, page: number, batch: Uint8Array[]): 'page' | 'zero' {
    const pageSize = this.ram.pageSize;
    const offset = (page - block.firstPage) * pageSize;
    const data = block.bytes(offset, pageSize);
    const idstr = this.#lastSent === block ? undefined : block.idstrBytes;
    this.#lastSent = block;
    if (this.#zeroPage.equals(data)) {
      batch.push(encodeRamPageHeader('zero', offset, idstr));
      return 'zero';
    }
    batch.push(encodeRamPageHeader('page', offset, idstr), data);
    return 'page';
  }

  async #write(sink: ByteSink, chunks: readonly Uint8Array[]): Promise<void> {
    await sink.write(...chunks);
    this.#counts.bytes += chunks.reduce((n, c) => n + c.byteLength, 0);
  }
}
