/**
 * An emulated PCI function: the hardware a simulated host driver (vfio-pci)
 * binds to. It owns what a real function owns and nothing the host kernel
 * does: its physical config space (with the write masks of
 * `pci-config-builder.ts`), its BARs, its MSI-X table, its INTx pin, its
 * MSI/MSI-X messages and its DMA. Device models (edu, the test device)
 * extend it with their registers; the Linux side (what `pci_alloc_irq_vectors`
 * programs, vfio-pci's virtualization) lives in the driver files.
 *
 * Behaviour follows QEMU's PCI core (hw/pci/pci.c, msi.c, msix.c), since the
 * real edu is a QEMU device:
 * - INTx is a level; the line seen by the host is the level gated by
 *   DisINTx, and `PCI_STATUS_INTERRUPT` reports the level.
 * - MSI and MSI-X messages and DMA are memory writes by the function: with
 *   bus mastering off they go nowhere (DMA reads return zeros).
 * - A masked MSI/MSI-X vector that fires sets its pending bit, and the
 *   message goes out when the vector is unmasked.
 */
import { readLe, writeLe } from '../bytes.js';
import { findCapability } from '../pci/capabilities.js';
import {
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  PCI_STATUS,
  PCI_STATUS_INTERRUPT,
} from '../pci/regs.js';
import type { MmioWidth } from '../sys/mmio.js';
import { KernelErrno } from './errno.js';
import type { SimDmaTranslate } from './kernel.js';
import { PCI_EXP_DEVCAP_FLR, type SimBarLayout, type SimConfigSpace } from './pci-config-builder.js';
import { SimMsixTable } from './pci-msix-table.js';

/** DMA is translated page by page, so a transfer may span IOMMU mappings. */
const DMA_PAGE = 4096n;
/** `PCI_EXP_DEVCAP`: where the Express capability keeps the FLR capability bit. */
const PCI_EXP_DEVCAP = 0x04;

/** The host driver's interrupt handlers for the function's pins. */
export interface SimPciIrqSink {
  /** The INTx line went high (the level is asserted and DisINTx is clear). */
  intx(): void;
  /** An MSI message for `vector` reached the host. */
  msi(vector: number): void;
  /** An MSI-X message for `vector` reached the host. */
  msix(vector: number): void;
}

/** A BAR of the function, as the host's resource for it. */
export interface SimBar extends SimBarLayout {
  readonly index: number;
  /** Plain memory backing a RAM BAR (accesses have no side effects), else null. */
  readonly ram: Uint8Array | null;
}

/** A BAR to create: its layout, and whether it is plain memory rather than registers. */
export interface SimBarSpec extends SimBarLayout {
  /** Plain memory: reads return what was written, an mmap sees the memory itself. */
  readonly ram?: boolean;
}

/** How a function is built. */
export interface SimPciFunctionOptions {
  readonly config: SimConfigSpace;
  /** BAR0 to BAR5; leave the upper half of a 64-bit BAR (and unused BARs) undefined. */
  readonly bars: readonly (SimBarSpec | undefined)[];
  /** An expansion ROM image (starting with 55 aa); its BAR must be in the config. */
  readonly rom?: Uint8Array;
}

/** A DMA the function could not do, for tests: the IOMMU refused it, or bus mastering was off. */
export interface SimDmaFault {
  readonly address: bigint;
  readonly length: number;
  readonly write: boolean;
  readonly reason: 'iommu-fault' | 'bus-master-off';
}

/** What `pci_save_state` keeps and `pci_restore_state` puts back. */
export interface SimPciSavedState {
  readonly config: Uint8Array;
  readonly msixTable: Uint8Array | undefined;
}

export abstract class SimPciFunction {
  /** 256 (conventional) or 4096 (PCI Express) bytes. */
  readonly cfgSize: number;
  readonly bars: readonly (SimBar | undefined)[];
  /** The MSI-X table and PBA, when the function has MSI-X. */
  readonly msix: SimMsixTable | undefined;
  readonly rom: Uint8Array | undefined;
  /** Config offsets of the capabilities the PCI core cares about, 0 when absent. */
  readonly msiCap: number;
  readonly msixCap: number;
  readonly pmCap: number;
  readonly expCap: number;
  /** The host driver's handlers; null while no driver listens. */
  irqSink: SimPciIrqSink | null = null;
  /** Where DMA goes (the IOMMU); null before the function is plugged into a kernel. */
  dma: SimDmaTranslate | null = null;
  /** DMA that failed, oldest first. */
  readonly dmaFaults: SimDmaFault[] = [];
  readonly #powerOn: SimConfigSpace;
  readonly #config: Uint8Array;
  readonly #dv: DataView;
  #level = false;
  #line = false;

  constructor(options: SimPciFunctionOptions) {
    this.#powerOn = options.config;
    this.#config = options.config.image.slice();
    this.#dv = new DataView(this.#config.buffer);
    this.cfgSize = this.#config.byteLength;
    this.bars = Array.from({ length: 6 }, (_, index) => {
      const b = options.bars[index];
      return b === undefined ? undefined : { ...b, index, ram: b.ram === true ? new Uint8Array(b.size) : null };
    });
    this.rom = options.rom;
    const image = options.config.image;
    this.msiCap = findCapability(image, PCI_CAP_ID_MSI)?.offset ?? 0;
    this.msixCap = findCapability(image, PCI_CAP_ID_MSIX)?.offset ?? 0;
    this.pmCap = findCapability(image, PCI_CAP_ID_PM)?.offset ?? 0;
    this.expCap = findCapability(image, PCI_CAP_ID_EXP)?.offset ?? 0;
    if (this.msixCap !== 0) {
      const table = this.#dv.getUint32(this.msixCap + PCI_MSIX_TABLE, true);
      const pba = this.#dv.getUint32(this.msixCap + PCI_MSIX_PBA, true);
      this.msix = new SimMsixTable({
        entries: (this.#dv.getUint16(this.msixCap + PCI_MSIX_FLAGS, true) & 0x7ff) + 1,
        tableBar: table & 7,
        tableOffset: (table & ~7) >>> 0,
        pbaBar: pba & 7,
        pbaOffset: (pba & ~7) >>> 0,
      });
    } else this.msix = undefined;
  }

  // ------------------------------------------------------------ config space

  /** A config read as `pci_read_config_*` does it (1, 2 or 4 bytes). */
  configRead(offset: number, width: 1 | 2 | 4): number {
    return Number(readLe(this.#config, offset, width));
  }

  /**
   * A config write as `pci_write_config_*` does it: only writable bits
   * change, write-one-to-clear bits clear, and the function reacts (INTx
   * gating, MSI/MSI-X unmasking, power state).
   */
  configWrite(offset: number, width: 1 | 2 | 4, value: number): void {
    const mask = this.#powerOn;
    for (let i = 0; i < width; i++) {
      const at = offset + i;
      if (at >= this.cfgSize) break;
      const v = (value >>> (8 * i)) & 0xff;
      const w = mask.wmask[at] ?? 0;
      const cur = this.#config[at] ?? 0;
      this.#config[at] = ((cur & ~w) | (v & w)) & ~(v & (mask.w1cmask[at] ?? 0));
    }
    if (overlaps(offset, width, PCI_COMMAND, 2)) this.#updateLine();
    if (this.msiCap !== 0 && overlaps(offset, width, this.msiCap, 0x18)) this.#deliverPendingMsi();
    if (this.msixCap !== 0 && overlaps(offset, width, this.msixCap + PCI_MSIX_FLAGS, 2)) this.#deliverPendingMsix(this.#allVectors());
  }

  /** The command register. */
  get command(): number {
    return this.#dv.getUint16(PCI_COMMAND, true);
  }

  /** Bus mastering (DMA and MSI/MSI-X messages) is on. */
  get busMaster(): boolean {
    return (this.command & PCI_COMMAND_MASTER) !== 0;
  }

  /** D0 to D3hot (0-3) from the PM capability; 0 without one. */
  get powerState(): number {
    return this.pmCap === 0 ? 0 : this.#dv.getUint16(this.pmCap + PCI_PM_CTRL, true) & PCI_PM_CTRL_STATE_MASK;
  }

  /** The function can do a Function Level Reset (its Express capability says so). */
  get flrCapable(): boolean {
    return this.expCap !== 0 && (this.#dv.getUint32(this.expCap + PCI_EXP_DEVCAP, true) & PCI_EXP_DEVCAP_FLR) !== 0;
  }

  /** The INTx line as the host sees it: the level, unless DisINTx gates it. */
  get intxLine(): boolean {
    return this.#line;
  }

  /** MSI is enabled in the function's capability. */
  get msiEnabled(): boolean {
    return this.msiCap !== 0 && (this.#msiFlags() & PCI_MSI_FLAGS_ENABLE) !== 0;
  }

  /** MSI-X is enabled in the function's capability. */
  get msixEnabled(): boolean {
    return this.msixCap !== 0 && (this.#msixFlags() & PCI_MSIX_FLAGS_ENABLE) !== 0;
  }

  // ------------------------------------------------------------ BARs

  /** An access to BAR `index` at `offset`: the MSI-X structures, plain memory, or the device's registers. */
  barRead(index: number, offset: number, width: MmioWidth): bigint {
    const msix = this.msix;
    if (msix?.inTable(index, offset, width)) return msix.readTable(offset - msix.layout.tableOffset, width);
    if (msix?.inPba(index, offset, width)) return msix.readPba(offset - msix.layout.pbaOffset, width);
    const ram = this.bars[index]?.ram;
    if (ram) return readLe(ram, offset, width);
    return this.mmioRead(index, offset, width);
  }

  barWrite(index: number, offset: number, width: MmioWidth, value: bigint): void {
    const msix = this.msix;
    if (msix?.inTable(index, offset, width)) {
      this.#deliverPendingMsix(msix.writeTable(offset - msix.layout.tableOffset, width, value));
      return;
    }
    if (msix?.inPba(index, offset, width)) return;
    const ram = this.bars[index]?.ram;
    if (ram) writeLe(ram, offset, width, value);
    else this.mmioWrite(index, offset, width, value);
  }

  /** A read of the device's own registers in BAR `bar`. */
  protected abstract mmioRead(bar: number, offset: number, width: MmioWidth): bigint;
  /** A write to the device's own registers in BAR `bar`. */
  protected abstract mmioWrite(bar: number, offset: number, width: MmioWidth, value: bigint): void;

  // ------------------------------------------------------------ reset

  /**
   * A function reset (FLR, or power-on): config space back to its power-on
   * image, MSI-X vectors masked with nothing pending, INTx low, and the
   * device's own state reset. Linux saves the config around it
   * ({@link SimPciFunction.saveState}).
   */
  reset(): void {
    this.#config.set(this.#powerOn.image);
    this.msix?.reset();
    this.#level = false;
    this.#line = false;
    this.resetDevice();
  }

  /** Resets the device's own state (registers, engines, timers). */
  protected abstract resetDevice(): void;

  /** `pci_save_state`: config space and the MSI-X table. */
  saveState(): SimPciSavedState {
    return { config: this.#config.slice(), msixTable: this.msix?.saveTable() };
  }

  /** `pci_restore_state`. */
  restoreState(saved: SimPciSavedState): void {
    this.#config.set(saved.config);
    if (saved.msixTable !== undefined) this.msix?.restoreTable(saved.msixTable);
    this.#setStatusInterrupt();
    this.#updateLine();
  }

  // ------------------------------------------------------------ the device's side

  /** Drives the INTx pin (`pci_set_irq`). */
  protected setIrqLevel(level: boolean): void {
    this.#level = level;
    this.#setStatusInterrupt();
    this.#updateLine();
  }

  /** Sends MSI `vector` (`msi_notify`): pending if masked, dropped without bus mastering. */
  protected msiNotify(vector: number): void {
    if (!this.msiEnabled || vector >= 1 << ((this.#msiFlags() & PCI_MSI_FLAGS_QSIZE) >> 4)) return;
    const mask = this.#msiMaskOffset();
    if (mask !== 0 && (this.#dv.getUint32(mask, true) & (1 << vector)) !== 0) {
      this.#dv.setUint32(mask + 4, (this.#dv.getUint32(mask + 4, true) | (1 << vector)) >>> 0, true);
      return;
    }
    if (this.busMaster) this.irqSink?.msi(vector);
  }

  /** Sends MSI-X `vector` (`msix_notify`): pending if masked (entry or function), dropped without bus mastering. */
  protected msixNotify(vector: number): void {
    const msix = this.msix;
    if (msix === undefined || !this.msixEnabled || vector >= msix.layout.entries) return;
    if ((this.#msixFlags() & PCI_MSIX_FLAGS_MASKALL) !== 0 || msix.masked(vector)) {
      msix.setPending(vector, true);
      return;
    }
    if (this.busMaster) this.irqSink?.msix(vector);
  }

  /** Reads guest memory at bus address `address` (through the IOMMU, page by page); zeros where the DMA cannot happen. */
  protected dmaRead(address: bigint, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.#dmaPages(address, length, false, (mem, done) => out.set(mem, done));
    return out;
  }

  /** Writes guest memory at bus address `address`, page by page; dropped where the DMA cannot happen. */
  protected dmaWrite(address: bigint, data: Uint8Array): void {
    this.#dmaPages(address, data.byteLength, true, (mem, done) => mem.set(data.subarray(done, done + mem.byteLength)));
  }

  // ------------------------------------------------------------ internals

  /** Runs `each` on the memory behind every 4 KiB piece of a DMA, recording the pieces that fault. */
  #dmaPages(address: bigint, length: number, write: boolean, each: (mem: Uint8Array, done: number) => void): void {
    if (!this.busMaster) {
      this.dmaFaults.push({ address, length, write, reason: 'bus-master-off' });
      return;
    }
    for (let done = 0; done < length; ) {
      const at = address + BigInt(done);
      const n = Math.min(length - done, Number(DMA_PAGE - (at % DMA_PAGE)));
      const mem = this.#translate(at, n, write);
      if (mem === null) this.dmaFaults.push({ address: at, length: n, write, reason: 'iommu-fault' });
      else each(mem, done);
      done += n;
    }
  }

  #translate(address: bigint, length: number, write: boolean): Uint8Array | null {
    const translate = this.dma;
    if (translate === null) return null;
    try {
      return translate(address, length, write);
    } catch (e) {
      if (e instanceof KernelErrno) return null;
      throw e;
    }
  }

  #setStatusInterrupt(): void {
    const status = this.#dv.getUint16(PCI_STATUS, true);
    this.#dv.setUint16(PCI_STATUS, this.#level ? status | PCI_STATUS_INTERRUPT : status & ~PCI_STATUS_INTERRUPT, true);
  }

  #updateLine(): void {
    const line = this.#level && (this.command & PCI_COMMAND_INTX_DISABLE) === 0;
    const rose = line && !this.#line;
    this.#line = line;
    if (rose) this.irqSink?.intx();
  }

  #msiFlags(): number {
    return this.#dv.getUint16(this.msiCap + PCI_MSI_FLAGS, true);
  }

  #msixFlags(): number {
    return this.#dv.getUint16(this.msixCap + PCI_MSIX_FLAGS, true);
  }

  /** The MSI mask register's offset (the pending register follows it), 0 without per-vector masking. */
  #msiMaskOffset(): number {
    const flags = this.#msiFlags();
    if ((flags & PCI_MSI_FLAGS_MASKBIT) === 0) return 0;
    // The pending register (PCI_MSI_PENDING_32/64) is the dword after the mask.
    return this.msiCap + ((flags & PCI_MSI_FLAGS_64BIT) !== 0 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32);
  }

  #deliverPendingMsi(): void {
    const mask = this.#msiMaskOffset();
    if (mask === 0 || !this.msiEnabled) return;
    const pending = this.#dv.getUint32(mask + 4, true);
    const deliver = pending & ~this.#dv.getUint32(mask, true);
    if (deliver === 0) return;
    this.#dv.setUint32(mask + 4, (pending & ~deliver) >>> 0, true);
    for (let v = 0; v < 32; v++) if ((deliver & (1 << v)) !== 0) this.msiNotify(v);
  }

  #deliverPendingMsix(vectors: readonly number[]): void {
    const msix = this.msix;
    if (msix === undefined || !this.msixEnabled || (this.#msixFlags() & PCI_MSIX_FLAGS_MASKALL) !== 0) return;
    for (const v of vectors) {
      if (!msix.pending(v) || msix.masked(v)) continue;
      msix.setPending(v, false);
      this.msixNotify(v);
    }
  }

  #allVectors(): number[] {
    return Array.from({ length: this.msix?.layout.entries ?? 0 }, (_, v) => v);
  }
}

function overlaps(offset: number, width: number, start: number, size: number): boolean {
  return offset < start + size && offset + width > start;
}
