/**
 * A block of registers a VMM emulates for the guest, the way QEMU's PCI
 * core keeps them (`pdev->config` with `wmask`): bytes, and per byte the
 * bits the guest may change. Reads and writes are little-endian and may be
 * 1 to 8 bytes; bytes outside the block read as 0 and ignore writes.
 */
import { readLe, writeLe } from '../bytes.js';
export class EmulatedRegisters {
  readonly #bytes: Uint8Array;
  readonly #wmask: Uint8Array;

  /** `size` bytes of zeros; with `writable`, every bit is guest-writable (an MSI-X table). */
  constructor(size: number, writable = false) {
    this.#bytes = new Uint8Array(size);
    this.#wmask = new Uint8Array(size).fill(writable ? 0xff : 0);
  }

  get size(): number {
    return this.#bytes.byteLength;
  }

  /** A copy of the bytes. */
  snapshot(): Uint8Array {
    return this.#bytes.slice();
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

  /** A guest write: only writable bits change (`pci_default_write_config`). */
  write(offset: number, width: number, value: number | bigint): void {
    const v = BigInt(value);
    for (let i = 0; i < width; i++) {
      const at = offset + i;
      const w = this.#wmask[at] ?? 0;
      const cur = this.#bytes[at] ?? 0;
      if (w !== 0) this.#bytes[at] = (cur & ~w) | (Number((v >> BigInt(8 * i)) & 0xffn) & w);
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
}
