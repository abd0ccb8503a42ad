/**
 * A block of registers a VMM emulates for the guest, the way QEMU's PCI
 * core keeps them (`pdev->config` with `wmask` and `w1cmask`): bytes, and per
 * byte the bits the guest may change and the bits it clears by writing 1.
 * Reads and writes are little-endian and may be 1 to 8 bytes; bytes outside
 * the block read as 0 and ignore writes.
 */
import { readLe, writeLe } from '../bytes.js';

/** Bytes with QEMU's per-byte write and write-1-to-clear masks (see the module comment). */
export class EmulatedRegisters {
  readonly #bytes: Uint8Array;
  readonly #wmask: Uint8Array;
  readonly #w1cmask: Uint8Array;

  /** `size` bytes of zeros; with `writable`, every bit is guest-writable (an MSI-X table). */
  constructor(size: number, writable = false) {
    this.#bytes = new Uint8Array(size);
    this.#wmask = new Uint8Array(size).fill(writable ? 0xff : 0);
    this.#w1cmask = new Uint8Array(size);
  }

  /** Registers holding a copy of `bytes`, with QEMU's write and write-1-to-clear masks (copied too). */
  static withMasks(bytes: Uint8Array, wmask: Uint8Array, w1cmask: Uint8Array): EmulatedRegisters {
    const r = new EmulatedRegisters(bytes.byteLength);
    r.#bytes.set(bytes);
    r.#wmask.set(wmask.subarray(0, bytes.byteLength));
    r.#w1cmask.set(w1cmask.subarray(0, bytes.byteLength));
    return r;
  }

  /** The block's length in bytes. */
  get size(): number {
    return this.#bytes.byteLength;
  }

  /** A copy of the bytes. */
  snapshot(): Uint8Array {
    return this.#bytes.slice();
  }

  /** Replaces every byte with `bytes` (a migrated image: QEMU copies it whole); extra bytes are ignored, missing ones keep their value. */
  restore(bytes: Uint8Array): void {
    this.#bytes.set(bytes.subarray(0, this.#bytes.byteLength));
  }

  /** Sets the `width`-byte register at `offset` (no mask: the VMM's own write). */
  set(offset: number, width: number, value: number | bigint): void {
    writeLe(this.#bytes, offset, width, BigInt(value));
  }

  /** Makes `bits` of the `width`-byte register at `offset` guest-writable. */
  writable(offset: number, width: number, bits: number | bigint): void {
    const v = BigInt(bits);
    for (let i = 0; i < width; i++) {
      const at = offset + i;
      if (at >= 0 && at < this.#wmask.byteLength) this.#wmask[at] = Number((v >> BigInt(8 * i)) & 0xffn);
    }
  }

  /** The little-endian value of the `width` bytes at `offset`. */
  get(offset: number, width: number): bigint {
    return readLe(this.#bytes, offset, width);
  }

  /** `get` as a number, for registers of up to 4 bytes. */
  getNumber(offset: number, width: 1 | 2 | 4): number {
    return Number(this.get(offset, width));
  }

  /** A guest write: only writable bits change, and write-1-to-clear bits written as 1 clear (`pci_default_write_config`). */
  write(offset: number, width: number, value: number | bigint): void {
    const v = BigInt(value);
    for (let i = 0; i < width; i++) {
      const at = offset + i;
      const w = this.#wmask[at] ?? 0;
      const c = this.#w1cmask[at] ?? 0;
      if (w === 0 && c === 0) continue;
      const byte = Number((v >> BigInt(8 * i)) & 0xffn);
      this.#bytes[at] = (((this.#bytes[at] ?? 0) & ~w) | (byte & w)) & ~(byte & c);
    }
  }
}

/** A capability the VMM emulates in config space: its registers and where they sit. */
export abstract class EmulatedCapability {
  constructor(
    /** Where the capability starts in config space. */
    readonly offset: number,
    protected readonly regs: EmulatedRegisters,
  ) {}

  /** Its length in bytes. */
  get size(): number {
    return this.regs.size;
  }

  /** Whether config byte `at` (absolute) belongs to the capability. */
  owns(at: number): boolean {
    return at >= this.offset && at < this.offset + this.size;
  }

  /** The guest's read of config byte `at` (absolute, inside the capability). */
  readByte(at: number): number {
    return this.regs.getNumber(at - this.offset, 1);
  }

  /** The capability's bytes. */
  snapshot(): Uint8Array {
    return this.regs.snapshot();
  }

  /** Takes the capability's bytes from a migrated config image (`size` bytes from the capability's offset). */
  restore(bytes: Uint8Array): void {
    this.regs.restore(bytes);
  }
}
