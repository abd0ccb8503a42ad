/**
 * Builds the physical config space of an emulated PCI function the way
 * QEMU's PCI core builds a device's (hw/pci/pci.c, msi.c, msix.c, pcie.c):
 * the image, the mask of bits software may write (`wmask`) and the mask of
 * write-one-to-clear bits (`w1cmask`). QEMU's edu device, which the test
 * guest passes through, is exactly such a device, so a simulated edu built
 * here has the same read-only and writable bits as the real one.
 */
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_CACHE_LINE_SIZE,
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_CAP_LIST_NEXT,
  PCI_CAP_MSIX_SIZEOF,
  PCI_CFG_SPACE_SIZE,
  PCI_CLASS_PROG,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_SERR,
  PCI_DEVICE_ID,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVSTA,
  PCI_EXP_FLAGS,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  PCI_PM_PMC,
  PCI_PM_SIZEOF,
  PCI_REVISION_ID,
  PCI_ROM_ADDRESS,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_DETECTED_PARITY,
  PCI_STATUS_PARITY,
  PCI_STATUS_REC_MASTER_ABORT,
  PCI_STATUS_REC_TARGET_ABORT,
  PCI_STATUS_SIG_SYSTEM_ERROR,
  PCI_STATUS_SIG_TARGET_ABORT,
  PCI_STD_HEADER_SIZEOF,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
} from '../pci/regs.js';

/** `PCI_EXP_DEVCAP_FLR` (pci_regs.h): Function Level Reset supported. */
export const PCI_EXP_DEVCAP_FLR = 0x10000000;
/** `PCI_EXP_DEVCTL_BCR_FLR`: writing 1 starts a Function Level Reset. */
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;
/** `PCI_EXP_DEVCAP`, the Device Capabilities register of the Express capability. */
const PCI_EXP_DEVCAP = 0x04;
/** `PCI_CAP_EXP_ENDPOINT_SIZEOF_V2`: a v2 endpoint's Express capability. */
export const PCI_CAP_EXP_ENDPOINT_SIZEOF_V2 = 0x3c;

/** What the 64-byte type 0 header says about the function. */
export interface SimPciHeader {
  readonly vendor: number;
  readonly device: number;
  readonly revision: number;
  /** The 24-bit class code (base class, sub-class, programming interface). */
  readonly classCode: number;
  readonly subsystemVendor: number;
  readonly subsystemId: number;
  /** 0 for none, 1-4 for INTA-INTD. */
  readonly interruptPin: number;
  /** The interrupt line firmware assigned. */
  readonly interruptLine: number;
  /** The command register after the host enabled the function. */
  readonly command: number;
  /** 256 (conventional) or 4096 (PCI Express) bytes. */
  readonly size: 256 | 4096;
}

/** A BAR as the host assigned it. */
export interface SimBarLayout {
  readonly kind: 'mem32' | 'mem64' | 'io';
  /** A power of two. */
  readonly size: number;
  readonly prefetchable?: boolean;
  /** The host address the BAR decodes (aligned to its size). */
  readonly address: bigint;
}

/** The physical config space of a function: image plus QEMU's write masks. */
export interface SimConfigSpace {
  readonly image: Uint8Array;
  /** Bits software may write. */
  readonly wmask: Uint8Array;
  /** Write-one-to-clear bits. */
  readonly w1cmask: Uint8Array;
}

/** Builds a {@link SimConfigSpace} capability by capability. */
export class SimConfigBuilder {
  readonly #image: Uint8Array;
  readonly #wmask: Uint8Array;
  readonly #w1cmask: Uint8Array;
  readonly #used: Uint8Array;
  readonly #dv: DataView;
  readonly #wdv: DataView;
  #lastExt = 0;

  /** `do_pci_register_device` + `pci_init_wmask` / `pci_init_w1cmask`. */
  constructor(header: SimPciHeader) {
    this.#image = new Uint8Array(header.size);
    this.#wmask = new Uint8Array(header.size);
    this.#w1cmask = new Uint8Array(header.size);
    this.#used = new Uint8Array(header.size);
    this.#dv = new DataView(this.#image.buffer);
    this.#wdv = new DataView(this.#wmask.buffer);
    const dv = this.#dv;
    dv.setUint16(PCI_VENDOR_ID, header.vendor, true);
    dv.setUint16(PCI_DEVICE_ID, header.device, true);
    dv.setUint16(PCI_COMMAND, header.command, true);
    dv.setUint8(PCI_REVISION_ID, header.revision);
    dv.setUint8(PCI_CLASS_PROG, header.classCode & 0xff);
    dv.setUint16(PCI_CLASS_PROG + 1, header.classCode >> 8, true);
    dv.setUint16(PCI_SUBSYSTEM_VENDOR_ID, header.subsystemVendor, true);
    dv.setUint16(PCI_SUBSYSTEM_ID, header.subsystemId, true);
    dv.setUint8(PCI_INTERRUPT_LINE, header.interruptLine);
    dv.setUint8(PCI_INTERRUPT_PIN, header.interruptPin);
    this.#mask16(this.#wmask, PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE | PCI_COMMAND_SERR);
    this.#wmask[PCI_CACHE_LINE_SIZE] = 0xff;
    this.#wmask[PCI_INTERRUPT_LINE] = 0xff;
    this.#wmask.fill(0xff, PCI_STD_HEADER_SIZEOF);
    this.#mask16(
      this.#w1cmask,
      PCI_STATUS,
      PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_REC_TARGET_ABORT | PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY,
    );
    this.#used.fill(1, 0, PCI_STD_HEADER_SIZEOF);
  }

  /** `pci_register_bar` with the address the host assigned: the address bits above the size are writable. */
  bar(index: number, bar: SimBarLayout): this {
    const at = PCI_BASE_ADDRESS_0 + 4 * index;
    const flags = bar.kind === 'io' ? PCI_BASE_ADDRESS_SPACE_IO : (bar.kind === 'mem64' ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) | (bar.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
    const mask = BigInt.asUintN(64, ~(BigInt(bar.size) - 1n));
    this.#dv.setUint32(at, (Number(bar.address & 0xffff_ffffn) | flags) >>> 0, true);
    this.#wdv.setUint32(at, Number(mask & 0xffff_ffffn), true);
    if (bar.kind === 'mem64') {
      this.#dv.setUint32(at + 4, Number(bar.address >> 32n), true);
      this.#wdv.setUint32(at + 4, Number(mask >> 32n), true);
    }
    return this;
  }

  /** An expansion ROM BAR of `size` bytes at `address` (disabled). */
  rom(size: number, address: bigint): this {
    this.#dv.setUint32(PCI_ROM_ADDRESS, Number(address), true);
    this.#wdv.setUint32(PCI_ROM_ADDRESS, (~(size - 1) | 1) >>> 0, true);
    return this;
  }

  /**
   * `pci_add_capability`: `size` bytes at `offset`, linked at the head of the
   * list (QEMU prepends), read-only unless the caller opens bits with
   * {@link SimConfigBuilder.writable}.
   * @throws RangeError when the capability overlaps another or the header.
   */
  capability(id: number, offset: number, size: number): this {
    this.#claim(offset, size);
    this.#image[offset] = id;
    this.#image[offset + PCI_CAP_LIST_NEXT] = this.#image[PCI_CAPABILITY_LIST] ?? 0;
    this.#image[PCI_CAPABILITY_LIST] = offset;
    this.#dv.setUint16(PCI_STATUS, this.#dv.getUint16(PCI_STATUS, true) | PCI_STATUS_CAP_LIST, true);
    this.#wmask.fill(0, offset, offset + size);
    return this;
  }

  /** `msi_init`: `vectors` (a power of two up to 32), 64-bit addressing and per-vector masking as asked. */
  msi(offset: number, vectors: number, is64: boolean, maskbit: boolean): this {
    const size = 0x0a + (is64 ? 4 : 0) + (maskbit ? 0x0a : 0);
    this.capability(PCI_CAP_ID_MSI, offset, size);
    const log2 = Math.log2(vectors);
    if (!Number.isInteger(log2) || log2 > 5) throw new RangeError(`MSI: ${vectors} vectors is not a power of two up to 32`);
    const flags = (log2 << 1) | (is64 ? PCI_MSI_FLAGS_64BIT : 0) | (maskbit ? PCI_MSI_FLAGS_MASKBIT : 0);
    this.#dv.setUint16(offset + PCI_MSI_FLAGS, flags, true);
    this.writable(offset + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_QSIZE | PCI_MSI_FLAGS_ENABLE);
    this.writable(offset + PCI_MSI_ADDRESS_LO, 4, 0xfffffffc);
    if (is64) this.writable(offset + PCI_MSI_ADDRESS_HI, 4, 0xffffffff);
    this.writable(offset + (is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32), 2, 0xffff);
    if (maskbit) this.writable(offset + (is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32), 4, vectors === 32 ? 0xffffffff : (1 << vectors) - 1);
    return this;
  }

  /** `msix_init`: `entries` vectors, table and PBA in the given BARs at the given offsets. */
  msix(offset: number, entries: number, table: { bar: number; offset: number }, pba: { bar: number; offset: number }): this {
    this.capability(PCI_CAP_ID_MSIX, offset, PCI_CAP_MSIX_SIZEOF);
    this.#dv.setUint16(offset + PCI_MSIX_FLAGS, entries - 1, true);
    this.#dv.setUint32(offset + PCI_MSIX_TABLE, table.offset | table.bar, true);
    this.#dv.setUint32(offset + PCI_MSIX_PBA, pba.offset | pba.bar, true);
    this.writable(offset + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    return this;
  }

  /** `pci_pm_init`: version 3, D1 and D2 support as given; the power state is writable. */
  pm(offset: number, pmc: number): this {
    this.capability(PCI_CAP_ID_PM, offset, PCI_PM_SIZEOF);
    this.#dv.setUint16(offset + PCI_PM_PMC, pmc, true);
    this.writable(offset + PCI_PM_CTRL, 2, PCI_PM_CTRL_STATE_MASK);
    return this;
  }

  /** A v2 PCI Express endpoint capability (`pcie_endpoint_cap_init`), with FLR when asked. */
  express(offset: number, flr: boolean): this {
    this.capability(PCI_CAP_ID_EXP, offset, PCI_CAP_EXP_ENDPOINT_SIZEOF_V2);
    this.#dv.setUint16(offset + PCI_EXP_FLAGS, 0x0002, true);
    this.#dv.setUint32(offset + PCI_EXP_DEVCAP, flr ? PCI_EXP_DEVCAP_FLR : 0, true);
    this.writable(offset + PCI_EXP_DEVCTL, 2, 0xffff);
    this.#mask16(this.#w1cmask, offset + PCI_EXP_DEVSTA, 0x000f);
    return this;
  }

  /**
   * `pcie_add_capability`: an extended capability of `size` bytes whose body
   * (after the 4-byte header) is `body`, appended to the extended list.
   */
  extCapability(id: number, version: number, offset: number, size: number, body: Uint8Array = new Uint8Array(0)): this {
    if (this.#image.byteLength <= PCI_CFG_SPACE_SIZE) throw new RangeError('extended capabilities need a 4096-byte config space');
    this.#claim(offset, size);
    this.#dv.setUint32(offset, (id & 0xffff) | ((version & 0xf) << 16), true);
    this.#image.set(body.subarray(0, size - 4), offset + 4);
    if (this.#lastExt !== 0) {
      const prev = this.#dv.getUint32(this.#lastExt, true);
      this.#dv.setUint32(this.#lastExt, ((prev & 0x000fffff) | (offset << 20)) >>> 0, true);
    }
    this.#lastExt = offset;
    this.#wmask.fill(0, offset, offset + size);
    return this;
  }

  /** Opens `bits` of the `width`-byte register at `offset` for writing. */
  writable(offset: number, width: 1 | 2 | 4, bits: number): this {
    for (let i = 0; i < width; i++) this.#wmask[offset + i] = (bits >>> (8 * i)) & 0xff;
    return this;
  }

  /** Sets raw bytes (device-specific registers, vendor data). */
  set(offset: number, bytes: Uint8Array | readonly number[]): this {
    this.#image.set(bytes, offset);
    return this;
  }

  /** The finished config space (copies, so the builder may go on). */
  build(): SimConfigSpace {
    return { image: this.#image.slice(), wmask: this.#wmask.slice(), w1cmask: this.#w1cmask.slice() };
  }

  #claim(offset: number, size: number): void {
    if (offset < PCI_STD_HEADER_SIZEOF || offset % 4 !== 0 || offset + size > this.#image.byteLength) {
      throw new RangeError(`a capability at 0x${offset.toString(16)} (+${size}) does not fit`);
    }
    if (this.#used.subarray(offset, offset + size).some((b) => b !== 0)) throw new RangeError(`capability at 0x${offset.toString(16)} overlaps another`);
    this.#used.fill(1, offset, offset + size);
  }

  #mask16(mask: Uint8Array, offset: number, bits: number): void {
    mask[offset] = bits & 0xff;
    mask[offset + 1] = (bits >> 8) & 0xff;
  }
}
