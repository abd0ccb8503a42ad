/**
 * The internal state of the simulated v1 device: a block of device memory
 * with a dirty bit per device page, which is what its pre-copy phase sends
 * and re-sends. Writes while the device runs dirty pages, so the pending
 * bytes of a saving session move under the migration's feet.
 */
import { createHash } from 'node:crypto';

/** Device memory with per-page dirty bits and a checksum. */
export class V1DeviceMemory {
  readonly #bytes: Uint8Array;
  readonly #dirty: Uint8Array;
  #dirtyCount = 0;
  /** Where the next dirty-page search starts, so pages leave in ascending order round after round. */
  #cursor = 0;

  /** @throws RangeError unless `size` is a positive multiple of `pageSize` */
  constructor(
    size: number,
    /** Dirty-tracking granularity in bytes. */
    readonly pageSize: number,
  ) {
    if (!Number.isSafeInteger(size) || !Number.isSafeInteger(pageSize) || pageSize <= 0 || size <= 0 || size % pageSize !== 0) {
      throw new RangeError(`v1 device memory: ${size} bytes is not a positive multiple of the ${pageSize}-byte page`);
    }
    this.#bytes = new Uint8Array(size);
    this.#dirty = new Uint8Array(size / pageSize);
  }

  get size(): number {
    return this.#bytes.byteLength;
  }

  get pageCount(): number {
    return this.#dirty.length;
  }

  /** Pages written since they were last taken by {@link takeDirtyPage}. */
  get dirtyPages(): number {
    return this.#dirtyCount;
  }

  /** A copy of `length` bytes at `offset`. */
  read(offset: number, length: number): Uint8Array {
    this.#check(offset, length);
    return this.#bytes.slice(offset, offset + length);
  }

  /**
   * The live bytes at `[offset, +length)`, for a mapping: writes through it
   * reach the memory without dirtying anything, as a direct mmap of a BAR
   * bypasses the vendor driver.
   */
  view(offset: number, length: number): Uint8Array {
    this.#check(offset, length);
    return this.#bytes.subarray(offset, offset + length);
  }

  /** Writes `data` at `offset` and dirties the pages it touches. */
  write(offset: number, data: Uint8Array): void {
    this.#check(offset, data.byteLength);
    this.#bytes.set(data, offset);
    if (data.byteLength === 0) return;
    const last = Math.floor((offset + data.byteLength - 1) / this.pageSize);
    for (let p = Math.floor(offset / this.pageSize); p <= last; p++) this.#mark(p);
  }

  /** Loads page `index` from a migration stream: the new content, not a guest write, so nothing is dirtied. */
  loadPage(index: number, data: Uint8Array): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.pageCount || data.byteLength !== this.pageSize) {
      throw new RangeError(`v1 device memory: no page ${index} of ${data.byteLength} bytes`);
    }
    this.#bytes.set(data, index * this.pageSize);
  }

  /** Dirties every page: a saving session starts by sending everything. */
  markAllDirty(): void {
    this.#dirty.fill(1);
    this.#dirtyCount = this.pageCount;
    this.#cursor = 0;
  }

  /** Clears one dirty page and returns its index and a snapshot of it, or undefined when none is dirty. */
  takeDirtyPage(): { readonly index: number; readonly data: Uint8Array } | undefined {
    if (this.#dirtyCount === 0) return undefined;
    for (let n = 0; n < this.pageCount; n++) {
      const p = (this.#cursor + n) % this.pageCount;
      if (this.#dirty[p] === 0) continue;
      this.#dirty[p] = 0;
      this.#dirtyCount--;
      this.#cursor = (p + 1) % this.pageCount;
      return { index: p, data: this.#bytes.slice(p * this.pageSize, (p + 1) * this.pageSize) };
    }
    return undefined;
  }

  /** Zeroes the memory and forgets dirty pages (a device reset). */
  reset(): void {
    this.#bytes.fill(0);
    this.#dirty.fill(0);
    this.#dirtyCount = 0;
    this.#cursor = 0;
  }

  /** SHA-256 of the memory, hex: equal on both sides after a successful migration. */
  checksum(): string {
    return createHash('sha256').update(this.#bytes).digest('hex');
  }

  #mark(page: number): void {
    if (this.#dirty[page] === 1) return;
    this.#dirty[page] = 1;
    this.#dirtyCount++;
  }

  #check(offset: number, length: number): void {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`v1 device memory: [${offset}, +${length}) is outside ${this.size} bytes`);
    }
  }
}
