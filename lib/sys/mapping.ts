/**
 * Real memory mappings for {@link LibcSys}: `mmap(2)` plus zero-copy koffi
 * views, with an `unmap()` that cannot turn a stale view into a SIGSEGV.
 *
 * koffi views are external ArrayBuffers that cannot be detached, so after a
 * plain `munmap` a forgotten view would crash the process (or silently alias
 * whatever is mapped there next). `unmap()` therefore first replaces the range
 * with private anonymous zero pages (the "tombstone") and gives the address
 * range back to the kernel only once every view handed out has been
 * garbage-collected.
 */
import koffi from 'koffi';
import { MappingRevokedError } from '../errors.js';
import { check, lastError, MAP_FAILED, mmap, munmap } from './libc-bindings.js';
import { MAX_VIEW_BYTES, PROT_READ, PROT_WRITE, type Mapping } from './sys.js';

const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;

/** What a mapping shares with the finalizers of its views; holds no view, so views can be collected. */
interface AddressRange {
  readonly address: bigint;
  readonly length: number;
  /** Views made and not yet collected. */
  liveViews: number;
  /** Unmapped by the owner, but still tombstoned because views were alive. */
  tombstoned: boolean;
}

const viewCollected = new FinalizationRegistry<AddressRange>((range) => {
  range.liveViews -= 1;
  // munmap of a range we own cannot fail in practice, and there is no caller to report to at GC time.
  if (range.liveViews === 0 && range.tombstoned) munmap(range.address, range.length);
});

function mapOrThrow(addr: bigint | null, length: number, prot: number, flags: number, fd: number, offset: number | bigint): bigint {
  const p = mmap(addr, length, prot, flags, fd, offset);
  if (p === MAP_FAILED || p === null) throw lastError('mmap');
  return p;
}

/** A {@link Mapping} of real memory, made by `mmap(2)`. */
export class MmapMapping implements Mapping, Disposable {
  /** `mmap(MAP_SHARED)` of `length` bytes of `fd` at `offset` (a full 64-bit offset). */
  static map(fd: number, length: number, prot: number, offset: number | bigint): MmapMapping {
    return new MmapMapping(mapOrThrow(null, length, prot, MAP_SHARED, fd, offset), length);
  }

  /** Zeroed, page-aligned, private anonymous read-write memory (`length` need not be a page multiple). */
  static anonymous(length: number): MmapMapping {
    return new MmapMapping(mapOrThrow(null, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), length);
  }

  readonly #range: AddressRange;
  #unmapped = false;

  private constructor(address: bigint, length: number) {
    this.#range = { address, length, liveViews: 0, tombstoned: false };
  }

  get address(): bigint {
    return this.#range.address;
  }

  get length(): number {
    return this.#range.length;
  }

  get unmapped(): boolean {
    return this.#unmapped;
  }

  /**
   * A zero-copy view of `[offset, offset + length)`.
   * @throws RangeError when the range leaves the mapping or exceeds {@link MAX_VIEW_BYTES}
   *   (koffi aborts the process on bigger views, so this must be checked here).
   * @throws MappingRevokedError after {@link MmapMapping.unmap}.
   */
  view(offset = 0, length = this.length - offset): Uint8Array {
    if (this.#unmapped) throw new MappingRevokedError(`mapping at 0x${this.address.toString(16)}`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new RangeError(`view [${offset}, +${length}) is outside the ${this.length}-byte mapping`);
    }
    if (length > MAX_VIEW_BYTES) throw new RangeError(`view of ${length} bytes exceeds the ${MAX_VIEW_BYTES}-byte limit; take several views`);
    const buffer = koffi.view(this.address + BigInt(offset), length);
    this.#range.liveViews += 1;
    viewCollected.register(buffer, this.#range);
    return new Uint8Array(buffer);
  }

  /**
   * Releases the mapping; idempotent. With views still alive the range is
   * first replaced by anonymous zero pages, so they read zeros and writes to
   * them go nowhere; the address range is freed once they are collected.
   */
  unmap(): void {
    if (this.#unmapped) return;
    const range = this.#range;
    if (range.liveViews === 0) {
      check(munmap(range.address, range.length), 'munmap');
    } else {
      // Read-write on purpose: a read-only tombstone still kills the process on a stale write.
      mapOrThrow(range.address, range.length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      range.tombstoned = true;
    }
    this.#unmapped = true;
  }

  [Symbol.dispose](): void {
    this.unmap();
  }
}
