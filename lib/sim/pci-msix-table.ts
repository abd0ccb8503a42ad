/**
 * The MSI-X table and pending-bit array of an emulated PCI function, as a
 * device implements them in a BAR (PCI 3.0 §6.8.2): 16-byte entries whose
 * vector control starts masked, and one pending bit per vector that the
 * device sets when a masked vector fires and clears when it delivers the
 * message after the vector is unmasked. QEMU's hw/pci/msix.c behaves the
 * same way for the devices it emulates.
 */
import { readLe, writeLe } from '../bytes.js';
import type { MmioWidth } from '../sys/mmio.js';
import { PCI_MSIX_ENTRY_CTRL_MASKBIT, PCI_MSIX_ENTRY_SIZE, PCI_MSIX_ENTRY_VECTOR_CTRL } from '../pci/regs.js';

/** Where the table and the PBA live. */
export interface SimMsixLayout {
  readonly entries: number;
  readonly tableBar: number;
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
}

/** The table and PBA storage plus the per-vector mask and pending logic. */
export class SimMsixTable {
  readonly layout: SimMsixLayout;
  readonly #table: Uint8Array;
  readonly #tdv: DataView;
  readonly #pba: Uint8Array;

  constructor(layout: SimMsixLayout) {
    this.layout = layout;
    this.#table = new Uint8Array(layout.entries * PCI_MSIX_ENTRY_SIZE);
    this.#tdv = new DataView(this.#table.buffer);
    // Whole QWORDs, as the PBA occupies them in the BAR.
    this.#pba = new Uint8Array(Math.ceil(layout.entries / 64) * 8);
    this.reset();
  }

  /** Bytes of the table in its BAR. */
  get tableSize(): number {
    return this.#table.byteLength;
  }

  /** Bytes of the PBA in its BAR. */
  get pbaSize(): number {
    return this.#pba.byteLength;
  }

  /** Power-on state: every vector masked, nothing pending, no message. */
  reset(): void {
    this.#table.fill(0);
    for (let v = 0; v < this.layout.entries; v++) this.#tdv.setUint32(v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT, true);
    this.#pba.fill(0);
  }

  /** Whether `[offset, offset + width)` of BAR `bar` touches the table. */
  inTable(bar: number, offset: number, width: number): boolean {
    return bar === this.layout.tableBar && offset < this.layout.tableOffset + this.tableSize && offset + width > this.layout.tableOffset;
  }

  /** Whether `[offset, offset + width)` of BAR `bar` touches the PBA. */
  inPba(bar: number, offset: number, width: number): boolean {
    return bar === this.layout.pbaBar && offset < this.layout.pbaOffset + this.pbaSize && offset + width > this.layout.pbaOffset;
  }

  /** A read of the table at `offset` (relative to the table); bytes past it read as 0. */
  readTable(offset: number, width: MmioWidth): bigint {
    return readLe(this.#table, offset, width);
  }

  /**
   * A write to the table at `offset` (relative to the table). Returns the
   * vectors whose mask bit went from set to clear, which the function then
   * delivers if they are pending.
   */
  writeTable(offset: number, width: MmioWidth, value: bigint): number[] {
    const before = this.#maskBits();
    writeLe(this.#table, offset, width, value);
    const after = this.#maskBits();
    return before.flatMap((m, v) => (m && !after[v] ? [v] : []));
  }

  /** A read of the PBA at `offset` (relative to the PBA). Writes to the PBA are ignored, as the spec allows. */
  readPba(offset: number, width: MmioWidth): bigint {
    return readLe(this.#pba, offset, width);
  }

  masked(vector: number): boolean {
    return (this.#tdv.getUint32(vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, true) & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  pending(vector: number): boolean {
    return ((this.#pba[vector >> 3] ?? 0) & (1 << (vector & 7))) !== 0;
  }

  setPending(vector: number, on: boolean): void {
    const i = vector >> 3;
    const bit = 1 << (vector & 7);
    this.#pba[i] = on ? (this.#pba[i] ?? 0) | bit : (this.#pba[i] ?? 0) & ~bit;
  }

  /** The message address and data programmed in `vector`'s entry. */
  message(vector: number): { address: bigint; data: number } {
    const at = vector * PCI_MSIX_ENTRY_SIZE;
    return { address: this.#tdv.getBigUint64(at, true), data: this.#tdv.getUint32(at + 8, true) };
  }

  /** A copy of the table (for `pci_save_state`). */
  saveTable(): Uint8Array {
    return this.#table.slice();
  }

  /** Puts a saved table back (for `pci_restore_state`). */
  restoreTable(saved: Uint8Array): void {
    this.#table.set(saved.subarray(0, this.#table.byteLength));
  }

  #maskBits(): boolean[] {
    const out: boolean[] = [];
    for (let v = 0; v < this.layout.entries; v++) out.push(this.masked(v));
    return out;
  }
}
