/**
 * The MSI-X capability, table and pending-bit array as the guest sees them,
 * kept apart from the host wiring. Pure logic with QEMU's semantics
 * (hw/pci/msix.c): `msix_init`'s capability (enable and function mask
 * writable) and all-masked table, table writes of 4 bytes (8-byte accesses
 * split in two, other sizes ignored), and the mask logic of
 * `msix_handle_mask_update` / `msix_write_config`: when a vector's
 * effective mask (function mask, or its own) clears, the VMM must "use" it
 * (wire it on the host) and deliver it if it is pending; a host signal for a
 * masked vector only sets its pending bit (`msix_notify`).
 */
import { EmulatedCapability, EmulatedRegisters } from './emulated-registers.js';
import type { MsiMessage } from './msi-state.js';
import type { MsixCapability } from './msi.js';
import {
  PCI_CAP_MSIX_SIZEOF,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_DATA,
  PCI_MSIX_ENTRY_LOWER_ADDR,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
} from './regs.js';

/** What a guest access changed. */
export interface MsixEffect {
  /** MSI-X enable went on, off, or did not change. */
  readonly enable: 'enabled' | 'disabled' | 'unchanged';
  /** Vectors whose effective mask cleared while enabled: wire them (`vector_use`). */
  readonly unmasked: readonly number[];
  /** Vectors whose effective mask was set while enabled (`vector_release`). */
  readonly masked: readonly number[];
  /** Pending vectors that became deliverable, with their messages. */
  readonly deliver: readonly { readonly vector: number; readonly message: MsiMessage }[];
}

export class MsixState extends EmulatedCapability {
  readonly entries: number;
  readonly tableBar: number;
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
  readonly #table: EmulatedRegisters;
  readonly #pba: EmulatedRegisters;

  /** `msix_init` over the device's capability (`next` as the kernel shows it). */
  constructor(cap: MsixCapability, next: number) {
    const c = new EmulatedRegisters(PCI_CAP_MSIX_SIZEOF);
    c.set(0, 1, 0x11);
    c.set(1, 1, next);
    c.set(PCI_MSIX_FLAGS, 2, cap.flags & PCI_MSIX_FLAGS_QSIZE);
    c.set(PCI_MSIX_TABLE, 4, cap.tableOffset | cap.tableBir);
    c.set(PCI_MSIX_PBA, 4, cap.pbaOffset | cap.pbaBir);
    c.writable(PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    super(cap.offset, c);
    this.entries = cap.tableSize;
    this.tableBar = cap.tableBir;
    this.tableOffset = cap.tableOffset;
    this.pbaBar = cap.pbaBir;
    this.pbaOffset = cap.pbaOffset;
    this.#table = new EmulatedRegisters(cap.tableBytes, true);
    for (let v = 0; v < this.entries; v++) this.#table.set(v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, 4, PCI_MSIX_ENTRY_CTRL_MASKBIT);
    this.#pba = new EmulatedRegisters(cap.pbaBytes);
  }

  get tableBytes(): number {
    return this.#table.size;
  }

  get pbaBytes(): number {
    return this.#pba.size;
  }

  get enabled(): boolean {
    return (this.#flags() & PCI_MSIX_FLAGS_ENABLE) !== 0;
  }

  /** `msix_function_masked`: disabled, or the function mask is set. */
  get functionMasked(): boolean {
    return !this.enabled || (this.#flags() & PCI_MSIX_FLAGS_MASKALL) !== 0;
  }

  /** `msix_is_masked`. */
  isMasked(vector: number): boolean {
    return this.functionMasked || this.#entryMasked(vector);
  }

  isPending(vector: number): boolean {
    return (this.#pba.getNumber(vector >> 3, 1) & (1 << (vector & 7))) !== 0;
  }

  /** The table's bytes, as the guest programmed them. */
  tableSnapshot(): Uint8Array {
    return this.#table.snapshot();
  }

  /** The PBA's bytes. */
  pbaSnapshot(): Uint8Array {
    return this.#pba.snapshot();
  }

  /**
   * Takes the table and PBA of a migrated config state (`msix_load`). QEMU
   * migrates `(entries + 7) / 8` PBA bytes; the rest of the registers reads 0.
   */
  restoreTable(table: Uint8Array, pba: Uint8Array): void {
    this.#table.restore(table);
    const bits = new Uint8Array(this.#pba.size);
    bits.set(pba.subarray(0, bits.byteLength));
    this.#pba.restore(bits);
  }

  /** `msix_write_config` for a guest write at config offset `at`. */
  writeConfig(at: number, width: number, value: number): MsixEffect {
    const wasEnabled = this.enabled;
    const before = this.#effectiveMasks();
    this.regs.write(at - this.offset, width, value);
    const enable = wasEnabled === this.enabled ? 'unchanged' : this.enabled ? 'enabled' : 'disabled';
    return { enable, ...this.#maskUpdates(before) };
  }

  /** A guest read of the table at `offset` (relative to the table); sizes other than 4 and 8 read 0. */
  readTable(offset: number, width: number): bigint {
    if ((width !== 4 && width !== 8) || offset % width !== 0) return 0n;
    return this.#table.get(offset, width);
  }

  /** A guest write to the table at `offset`, applied as 4-byte writes. */
  writeTable(offset: number, width: number, value: bigint): MsixEffect {
    const none: MsixEffect = { enable: 'unchanged', unmasked: [], masked: [], deliver: [] };
    if ((width !== 4 && width !== 8) || offset % width !== 0) return none;
    const before = this.#effectiveMasks();
    this.#table.write(offset, width, value);
    return { enable: 'unchanged', ...this.#maskUpdates(before) };
  }

  /** A guest read of the PBA at `offset` (relative to the PBA). Writes are ignored. */
  readPba(offset: number, width: number): bigint {
    if ((width !== 4 && width !== 8) || offset % width !== 0) return 0n;
    return this.#pba.get(offset, width);
  }

  /** `msix_notify` for a host signal of `vector`: the message, or null when masked (now pending) or disabled. */
  notify(vector: number): MsiMessage | null {
    if (!this.enabled || vector >= this.entries) return null;
    if (this.isMasked(vector)) {
      this.#setPending(vector, true);
      return null;
    }
    return this.message(vector);
  }

  /** `msix_get_message`. */
  message(vector: number): MsiMessage {
    const at = vector * PCI_MSIX_ENTRY_SIZE;
    return { address: this.#table.get(at + PCI_MSIX_ENTRY_LOWER_ADDR, 8), data: this.#table.getNumber(at + PCI_MSIX_ENTRY_DATA, 4) };
  }

  /** Vectors that are unmasked now (what `msix_set_vector_notifiers` uses when MSI-X gets enabled). */
  unmaskedVectors(): number[] {
    return Array.from({ length: this.entries }, (_, v) => v).filter((v) => !this.isMasked(v));
  }

  #maskUpdates(before: readonly boolean[]): Omit<MsixEffect, 'enable'> {
    const unmasked: number[] = [];
    const masked: number[] = [];
    const deliver: { vector: number; message: MsiMessage }[] = [];
    for (let v = 0; v < this.entries; v++) {
      const now = this.isMasked(v);
      if (now === before[v]) continue;
      if (now) masked.push(v);
      else {
        unmasked.push(v);
        if (this.isPending(v)) {
          this.#setPending(v, false);
          deliver.push({ vector: v, message: this.message(v) });
        }
      }
    }
    return { unmasked, masked, deliver };
  }

  #effectiveMasks(): boolean[] {
    return Array.from({ length: this.entries }, (_, v) => this.isMasked(v));
  }

  #entryMasked(vector: number): boolean {
    return (this.#table.getNumber(vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, 4) & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  #setPending(vector: number, on: boolean): void {
    const bits = this.#pba.getNumber(vector >> 3, 1);
    const bit = 1 << (vector & 7);
    this.#pba.set(vector >> 3, 1, on ? bits | bit : bits & ~bit);
  }

  #flags(): number {
    return this.regs.getNumber(PCI_MSIX_FLAGS, 2);
  }
}
