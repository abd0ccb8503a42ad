/**
 * The host kernel's PCI/MSI core (drivers/pci/msi/, Linux 6.12) for one
 * emulated function, as far as vfio-pci relies on it: allocating MSI or
 * MSI-X vectors programs the function's capability and table
 * (`pci_alloc_irq_vectors`, `pci_msix_alloc_irq_at`), each vector stays
 * masked in the function until a handler is requested for it
 * (`request_irq` starts it up, `free_irq` shuts it down), and freeing puts
 * the function back to INTx (`pci_free_irq_vectors`, `pci_intx_for_msi`).
 */
import {
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_DATA,
  PCI_MSIX_ENTRY_LOWER_ADDR,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_UPPER_ADDR,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
} from '../pci/regs.js';
import { fail } from './errno.js';
import type { SimPciFunction } from './pci-function.js';

/** The x86 MSI address window (0xfee00000, destination APIC 0). */
const MSI_ADDRESS = 0xfee00000;
/** First host vector number written as message data (arbitrary; the host routes by it). */
const HOST_VECTOR_BASE = 0x40;

/** Options of the host's interrupt domain. */
export interface SimMsiDomain {
  /** The domain can allocate MSI-X vectors one at a time after enabling (`MSI_FLAG_PCI_MSIX_ALLOC_DYN`). */
  readonly dynMsix: boolean;
  /** The domain supports more than one MSI vector (`MSI_FLAG_MULTI_PCI_MSI`, x86 with interrupt remapping). */
  readonly multiMsi: boolean;
}

export class SimPciMsiCore {
  #kind: 'msi' | 'msix' | null = null;
  readonly #allocated = new Set<number>();

  constructor(
    private readonly fn: SimPciFunction,
    readonly domain: SimMsiDomain,
  ) {}

  /**
   * `pci_alloc_irq_vectors(pdev, 1, nvec, PCI_IRQ_MSI or PCI_IRQ_MSIX)`:
   * returns how many vectors were allocated, possibly fewer than `nvec`
   * (then nothing stays allocated, as vfio-pci frees them).
   * @throws KernelErrno ERANGE for no vector, EINVAL without the capability, ENOSPC when busy.
   */
  alloc(kind: 'msi' | 'msix', nvec: number): number {
    if (nvec < 1) fail('ERANGE');
    if (this.#kind !== null) fail('EINVAL');
    const fn = this.fn;
    if (kind === 'msi') {
      if (fn.msiCap === 0) fail('EINVAL');
      const flags = fn.configRead(fn.msiCap + PCI_MSI_FLAGS, 2);
      const capable = 1 << ((flags & PCI_MSI_FLAGS_QMASK) >> 1);
      const n = Math.min(nvec, capable, this.domain.multiMsi ? 32 : 1);
      if (n < nvec) return n;
      const is64 = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
      // msi_capability_init: everything masked, the message programmed, then enabled.
      if ((flags & PCI_MSI_FLAGS_MASKBIT) !== 0) fn.configWrite(fn.msiCap + (is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32), 4, 0xffffffff);
      fn.configWrite(fn.msiCap + PCI_MSI_ADDRESS_LO, 4, MSI_ADDRESS);
      if (is64) fn.configWrite(fn.msiCap + PCI_MSI_ADDRESS_HI, 4, 0);
      fn.configWrite(fn.msiCap + (is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32), 2, HOST_VECTOR_BASE);
      const qsize = Math.ceil(Math.log2(nvec));
      fn.configWrite(fn.msiCap + PCI_MSI_FLAGS, 2, (flags & ~PCI_MSI_FLAGS_QSIZE) | (qsize << 4) | PCI_MSI_FLAGS_ENABLE);
    } else {
      const msix = fn.msix;
      if (msix === undefined) fail('EINVAL');
      if (nvec > msix.layout.entries) return msix.layout.entries;
      this.#setMsixCtrl(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
      for (let v = 0; v < msix.layout.entries; v++) this.#setMsixMask(v, true);
      for (let v = 0; v < nvec; v++) this.#writeMsixMessage(v);
      this.#setMsixCtrl(PCI_MSIX_FLAGS_ENABLE);
    }
    this.#intx(false);
    this.#kind = kind;
    for (let v = 0; v < nvec; v++) this.#allocated.add(v);
    return nvec;
  }

  /** `pci_irq_vector`: whether `vector` has a host interrupt. */
  allocated(vector: number): boolean {
    return this.#allocated.has(vector);
  }

  /** `pci_msix_alloc_irq_at`: a vector of enabled MSI-X, added later (dynamic domains only). */
  allocAt(vector: number): void {
    const msix = this.fn.msix;
    if (this.#kind !== 'msix' || msix === undefined || !this.domain.dynMsix || vector >= msix.layout.entries) fail('EINVAL');
    this.#writeMsixMessage(vector);
    this.#allocated.add(vector);
  }

  /** `request_irq`: the vector starts up, unmasked in the function. */
  startup(vector: number): void {
    this.#mask(vector, false);
  }

  /** `free_irq`: the vector shuts down, masked in the function. */
  shutdown(vector: number): void {
    this.#mask(vector, true);
  }

  /** `pci_write_msi_msg` of the cached message, which vfio-pci does before reusing an MSI-X vector. */
  refresh(vector: number): void {
    if (this.#kind === 'msix') this.#writeMsixMessage(vector);
  }

  /** `pci_free_irq_vectors`: MSI unmasked and disabled, or MSI-X masked and disabled; INTx back on. */
  free(): void {
    const fn = this.fn;
    if (this.#kind === 'msi') {
      const flags = fn.configRead(fn.msiCap + PCI_MSI_FLAGS, 2);
      if ((flags & PCI_MSI_FLAGS_MASKBIT) !== 0) fn.configWrite(fn.msiCap + ((flags & PCI_MSI_FLAGS_64BIT) !== 0 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32), 4, 0);
      fn.configWrite(fn.msiCap + PCI_MSI_FLAGS, 2, flags & ~PCI_MSI_FLAGS_ENABLE);
    } else if (this.#kind === 'msix') {
      for (const v of this.#allocated) this.#setMsixMask(v, true);
      this.#setMsixCtrl(0);
    }
    if (this.#kind !== null) this.#intx(true);
    this.#kind = null;
    this.#allocated.clear();
  }

  #mask(vector: number, masked: boolean): void {
    const fn = this.fn;
    if (this.#kind === 'msix') {
      this.#setMsixMask(vector, masked);
      return;
    }
    const flags = fn.configRead(fn.msiCap + PCI_MSI_FLAGS, 2);
    if (this.#kind !== 'msi' || (flags & PCI_MSI_FLAGS_MASKBIT) === 0) return;
    const at = fn.msiCap + ((flags & PCI_MSI_FLAGS_64BIT) !== 0 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32);
    const bits = fn.configRead(at, 4);
    fn.configWrite(at, 4, (masked ? bits | (1 << vector) : bits & ~(1 << vector)) >>> 0);
  }

  #writeMsixMessage(vector: number): void {
    const at = this.#entry(vector);
    this.fn.barWrite(at.bar, at.offset + PCI_MSIX_ENTRY_LOWER_ADDR, 4, BigInt(MSI_ADDRESS));
    this.fn.barWrite(at.bar, at.offset + PCI_MSIX_ENTRY_UPPER_ADDR, 4, 0n);
    this.fn.barWrite(at.bar, at.offset + PCI_MSIX_ENTRY_DATA, 4, BigInt(HOST_VECTOR_BASE + vector));
  }

  #setMsixMask(vector: number, masked: boolean): void {
    const at = this.#entry(vector);
    const ctrl = this.fn.barRead(at.bar, at.offset + PCI_MSIX_ENTRY_VECTOR_CTRL, 4);
    const bit = BigInt(PCI_MSIX_ENTRY_CTRL_MASKBIT);
    this.fn.barWrite(at.bar, at.offset + PCI_MSIX_ENTRY_VECTOR_CTRL, 4, masked ? ctrl | bit : ctrl & ~bit);
  }

  #entry(vector: number): { bar: number; offset: number } {
    const layout = this.fn.msix?.layout;
    if (layout === undefined) fail('EINVAL');
    return { bar: layout.tableBar, offset: layout.tableOffset + vector * PCI_MSIX_ENTRY_SIZE };
  }

  #setMsixCtrl(bits: number): void {
    const at = this.fn.msixCap + PCI_MSIX_FLAGS;
    const flags = this.fn.configRead(at, 2);
    this.fn.configWrite(at, 2, (flags & ~(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL)) | bits);
  }

  /** `pci_intx_for_msi` / `pci_intx`: INTx enabled (DisINTx clear) or disabled. */
  #intx(enable: boolean): void {
    const cmd = this.fn.configRead(PCI_COMMAND, 2);
    this.fn.configWrite(PCI_COMMAND, 2, enable ? cmd & ~PCI_COMMAND_INTX_DISABLE : cmd | PCI_COMMAND_INTX_DISABLE);
  }
}
