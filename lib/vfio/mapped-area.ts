/**
 * An mmapped area of a region. Users never receive the raw memory view:
 * every access goes through this object, which checks bounds and whether
 * the area is still mapped, so an area that was unmapped or re-laid out
 * raises {@link MappingRevokedError} instead of touching released memory.
 *
 * Register-width accesses use `Atomics` on typed arrays: single loads and
 * stores of the requested width (a DataView or `Buffer.readUInt32LE` would
 * split them into byte accesses, which device registers do not tolerate).
 * A simulated kernel's register BARs come with an MMIO trap instead
 * (`lib/sys/mmio.ts`): then every access is performed on the simulated
 * device, at the same width, and bulk copies are split the way the kernel
 * splits a pread of a BAR (the widest naturally aligned access that fits).
 */
import { readLe, writeLe } from '../bytes.js';
import { MappingRevokedError, VfioArgumentError } from '../errors.js';
import { mmioTrapOf, type MmioTrap, type MmioWidth } from '../sys/mmio.js';
import { MAX_VIEW_BYTES, type Mapping } from '../sys/sys.js';

/** Views are made in chunks so no single view exceeds koffi's 4 GiB limit; aligned accesses never straddle one. */
const CHUNK = Math.min(MAX_VIEW_BYTES, 2 ** 30);

interface Chunk {
  readonly u8: Uint8Array;
  readonly u16: Uint16Array;
  readonly u32: Uint32Array;
  readonly u64: BigUint64Array;
}

export class MappedArea {
  readonly #chunks: Chunk[] = [];
  #mapping: Mapping | null;
  readonly #trap: MmioTrap | undefined;

  constructor(
    /** Offset of the area within its region. */
    readonly offset: number,
    /** Size of the area in bytes. */
    readonly size: number,
    mapping: Mapping,
    /** For error messages: `'<device> region <n> area @0x...'`. */
    readonly label: string,
  ) {
    this.#mapping = mapping;
    this.#trap = mmioTrapOf(mapping);
  }

  /** False once the area was unmapped. */
  get mapped(): boolean {
    return this.#mapping !== null;
  }

  /** The user address of the area (for peer-to-peer DMA mappings). */
  get address(): bigint {
    return this.#live().address;
  }

  /** True when `[offset, offset + length)` of the region lies inside this area. */
  covers(regionOffset: number, length: number): boolean {
    return regionOffset >= this.offset && regionOffset + length <= this.offset + this.size;
  }

  read8(off: number): number {
    if (this.#trap) return Number(this.#trapRead(this.#trap, off, 1));
    const [c, i] = this.#at(off, 1);
    return Atomics.load(c.u8, i);
  }
  read16(off: number): number {
    if (this.#trap) return Number(this.#trapRead(this.#trap, off, 2));
    const [c, i] = this.#at(off, 2);
    return Atomics.load(c.u16, i);
  }
  read32(off: number): number {
    if (this.#trap) return Number(this.#trapRead(this.#trap, off, 4));
    const [c, i] = this.#at(off, 4);
    return Atomics.load(c.u32, i);
  }
  read64(off: number): bigint {
    if (this.#trap) return this.#trapRead(this.#trap, off, 8);
    const [c, i] = this.#at(off, 8);
    return Atomics.load(c.u64, i);
  }
  write8(off: number, v: number): void {
    if (this.#trap) return this.#trapWrite(this.#trap, off, 1, BigInt(v & 0xff));
    const [c, i] = this.#at(off, 1);
    Atomics.store(c.u8, i, v);
  }
  write16(off: number, v: number): void {
    if (this.#trap) return this.#trapWrite(this.#trap, off, 2, BigInt(v & 0xffff));
    const [c, i] = this.#at(off, 2);
    Atomics.store(c.u16, i, v);
  }
  write32(off: number, v: number): void {
    if (this.#trap) return this.#trapWrite(this.#trap, off, 4, BigInt(v >>> 0));
    const [c, i] = this.#at(off, 4);
    Atomics.store(c.u32, i, v >>> 0);
  }
  write64(off: number, v: bigint): void {
    if (this.#trap) return this.#trapWrite(this.#trap, off, 8, BigInt.asUintN(64, v));
    const [c, i] = this.#at(off, 8);
    Atomics.store(c.u64, i, BigInt.asUintN(64, v));
  }

  /** Copies `length` bytes at `off` (relative to the area) into `dst` (a new buffer by default). */
  copyOut(off: number, length: number, dst: Uint8Array = new Uint8Array(length)): Uint8Array {
    this.#range(off, length);
    if (dst.byteLength < length) throw new RangeError(`destination holds ${dst.byteLength} bytes, need ${length}`);
    const trap = this.#trap;
    if (trap) {
      splitAccesses(off, length, (at, width, done) => writeLe(dst, done, width, trap.read(at, width)));
      return dst;
    }
    for (let done = 0; done < length; ) {
      const at = off + done;
      const c = this.#chunk(Math.floor(at / CHUNK));
      const from = at % CHUNK;
      const n = Math.min(length - done, c.u8.byteLength - from);
      dst.set(c.u8.subarray(from, from + n), done);
      done += n;
    }
    return dst;
  }

  /** Copies `src` to `off` (relative to the area). */
  copyIn(off: number, src: Uint8Array): void {
    this.#range(off, src.byteLength);
    const trap = this.#trap;
    if (trap) {
      splitAccesses(off, src.byteLength, (at, width, done) => trap.write(at, width, readLe(src, done, width)));
      return;
    }
    for (let done = 0; done < src.byteLength; ) {
      const at = off + done;
      const c = this.#chunk(Math.floor(at / CHUNK));
      const from = at % CHUNK;
      const n = Math.min(src.byteLength - done, c.u8.byteLength - from);
      c.u8.set(src.subarray(done, done + n), from);
      done += n;
    }
  }

  /** Unmaps the area; every later access raises {@link MappingRevokedError}. Idempotent. */
  unmap(): void {
    const m = this.#mapping;
    if (m === null) return;
    this.#mapping = null;
    this.#chunks.length = 0;
    m.unmap();
  }

  #live(): Mapping {
    if (this.#mapping === null) throw new MappingRevokedError(this.label);
    return this.#mapping;
  }

  #range(off: number, length: number): void {
    this.#live();
    if (!Number.isInteger(off) || !Number.isInteger(length) || off < 0 || length < 0 || off + length > this.size) {
      throw new VfioArgumentError(this.label, `access [${off}, +${length}) is outside the ${this.size}-byte area`);
    }
  }

  #trapRead(trap: MmioTrap, off: number, width: MmioWidth): bigint {
    this.#aligned(off, width);
    return trap.read(off, width);
  }

  #trapWrite(trap: MmioTrap, off: number, width: MmioWidth, v: bigint): void {
    this.#aligned(off, width);
    trap.write(off, width, v);
  }

  #aligned(off: number, width: number): void {
    this.#range(off, width);
    if (off % width !== 0) throw new VfioArgumentError(this.label, `${width}-byte access at ${off} is not naturally aligned`);
  }

  #at(off: number, width: number): [Chunk, number] {
    this.#aligned(off, width);
    return [this.#chunk(Math.floor(off / CHUNK)), (off % CHUNK) / width];
  }

  #chunk(n: number): Chunk {
    const have = this.#chunks[n];
    if (have) return have;
    const start = n * CHUNK;
    const u8 = this.#live().view(start, Math.min(CHUNK, this.size - start));
    const words = (w: number): number => Math.floor(u8.byteLength / w);
    const c: Chunk = {
      u8,
      u16: new Uint16Array(u8.buffer, u8.byteOffset, words(2)),
      u32: new Uint32Array(u8.buffer, u8.byteOffset, words(4)),
      u64: new BigUint64Array(u8.buffer, u8.byteOffset, words(8)),
    };
    this.#chunks[n] = c;
    return c;
  }
}

/**
 * Splits `[off, off + length)` into the widest naturally aligned accesses
 * that fit, as the kernel's `vfio_pci_core_do_io_rw` does for a BAR.
 * `each(at, width, done)` gets the access offset, its width and the bytes
 * already done.
 */
function splitAccesses(off: number, length: number, each: (at: number, width: MmioWidth, done: number) => void): void {
  for (let done = 0; done < length; ) {
    const at = off + done;
    const left = length - done;
    const width: MmioWidth = left >= 8 && at % 8 === 0 ? 8 : left >= 4 && at % 4 === 0 ? 4 : left >= 2 && at % 2 === 0 ? 2 : 1;
    each(at, width, done);
    done += width;
  }
}
