/**
 * MSI and MSI-X capabilities: register decoding, the vector counts vfio-pci
 * reports in `VFIO_DEVICE_GET_IRQ_INFO`, and MSI-X table entries.
 */
import { ConfigSpaceError } from '../errors.js';
import { configRead16, configRead32 } from './config-space.js';
import {
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_MSIX_SIZEOF,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_DATA,
  PCI_MSIX_ENTRY_LOWER_ADDR,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_UPPER_ADDR,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSIX_PBA,
  PCI_MSIX_PBA_BIR,
  PCI_MSIX_PBA_OFFSET,
  PCI_MSIX_TABLE,
  PCI_MSIX_TABLE_BIR,
  PCI_MSIX_TABLE_OFFSET,
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
  PCI_MSI_PENDING_32,
  PCI_MSI_PENDING_64,
  PCI_STD_NUM_BARS,
} from './regs.js';
import { findCapability } from './capabilities.js';

/** MSI allows at most 32 vectors: a log2 count above 5 is reserved. */
const MSI_MAX_LOG2 = 5;

/**
 * The MSI vector count vfio-pci reports for the MSI IRQ index
 * (`vfio_pci_get_irq_count`): `1 << ((flags & QMASK) >> 1)`, the
 * multiple-message-capable count, whatever the guest enabled.
 */
export function msiVectorCount(flags: number): number {
  return 1 << ((flags & PCI_MSI_FLAGS_QMASK) >> 1);
}

/** The MSI-X vector count vfio-pci reports for the MSI-X IRQ index: table size field + 1. */
export function msixVectorCount(flags: number): number {
  return (flags & PCI_MSIX_FLAGS_QSIZE) + 1;
}

/**
 * The MSI capability's length from its flags: 0x0a, 0x0e, 0x14 or 0x18 bytes
 * for 32/64-bit addressing without/with per-vector masking (QEMU's
 * `msi_cap_sizeof` in hw/pci/msi.c: the length `msi_init` registers).
 */
export function msiCapabilitySize(flags: number): number {
  const is64 = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
  if ((flags & PCI_MSI_FLAGS_MASKBIT) !== 0) return is64 ? PCI_MSI_PENDING_64 + 4 : PCI_MSI_PENDING_32 + 4;
  return is64 ? PCI_MSI_DATA_64 + 2 : PCI_MSI_DATA_32 + 2;
}

/** The MSI capability, decoded. Register offsets are absolute config-space offsets. */
export interface MsiCapability {
  /** Where the capability starts. */
  readonly offset: number;
  /** The raw Message Control register. */
  readonly flags: number;
  readonly enabled: boolean;
  /** Multiple Message Capable, as a vector count (what vfio-pci reports). */
  readonly vectorsCapable: number;
  /** Multiple Message Enable, as a vector count. */
  readonly vectorsEnabled: number;
  readonly is64Bit: boolean;
  readonly perVectorMasking: boolean;
  /** Capability length (see {@link msiCapabilitySize}). */
  readonly size: number;
  readonly addressOffset: number;
  /** Absent for 32-bit MSI. */
  readonly addressHighOffset: number | undefined;
  readonly dataOffset: number;
  /** Absent without per-vector masking. */
  readonly maskOffset: number | undefined;
  readonly pendingOffset: number | undefined;
  /** The programmed message address (both halves for 64-bit MSI). */
  readonly address: bigint;
  readonly data: number;
  /** Mask bits, 0 without per-vector masking. */
  readonly mask: number;
  /** Pending bits, 0 without per-vector masking. */
  readonly pending: number;
}

/**
 * Decodes the MSI capability at `offset`.
 * @throws ConfigSpaceError when the capability runs past the image or a
 *   vector count field holds a reserved value (above 32 vectors).
 */
export function parseMsi(image: Uint8Array, offset: number): MsiCapability {
  const flags = configRead16(image, offset + PCI_MSI_FLAGS);
  const size = msiCapabilitySize(flags);
  if (offset + size > image.byteLength) {
    throw new ConfigSpaceError('MSI capability', `${size} bytes from ${offset} run past the ${image.byteLength}-byte image`, offset);
  }
  const capableLog2 = (flags & PCI_MSI_FLAGS_QMASK) >> 1;
  const enabledLog2 = (flags & PCI_MSI_FLAGS_QSIZE) >> 4;
  if (capableLog2 > MSI_MAX_LOG2 || enabledLog2 > MSI_MAX_LOG2) {
    throw new ConfigSpaceError('MSI capability', `message control 0x${flags.toString(16)} asks for more than 32 vectors`, offset + PCI_MSI_FLAGS);
  }
  const is64Bit = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
  const perVectorMasking = (flags & PCI_MSI_FLAGS_MASKBIT) !== 0;
  const addressOffset = offset + PCI_MSI_ADDRESS_LO;
  const addressHighOffset = is64Bit ? offset + PCI_MSI_ADDRESS_HI : undefined;
  const dataOffset = offset + (is64Bit ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32);
  const maskOffset = perVectorMasking ? offset + (is64Bit ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32) : undefined;
  const pendingOffset = perVectorMasking ? offset + (is64Bit ? PCI_MSI_PENDING_64 : PCI_MSI_PENDING_32) : undefined;
  const high = addressHighOffset === undefined ? 0n : BigInt(configRead32(image, addressHighOffset));
  return {
    offset,
    flags,
    enabled: (flags & PCI_MSI_FLAGS_ENABLE) !== 0,
    vectorsCapable: 1 << capableLog2,
    vectorsEnabled: 1 << enabledLog2,
    is64Bit,
    perVectorMasking,
    size,
    addressOffset,
    addressHighOffset,
    dataOffset,
    maskOffset,
    pendingOffset,
    address: (high << 32n) | BigInt(configRead32(image, addressOffset)),
    data: configRead16(image, dataOffset),
    mask: maskOffset === undefined ? 0 : configRead32(image, maskOffset),
    pending: pendingOffset === undefined ? 0 : configRead32(image, pendingOffset),
  };
}

/** The MSI-X capability, decoded. */
export interface MsixCapability {
  readonly offset: number;
  /** The raw Message Control register. */
  readonly flags: number;
  /** Number of table entries (what vfio-pci reports). */
  readonly tableSize: number;
  readonly functionMask: boolean;
  readonly enabled: boolean;
  readonly tableBir: number;
  /** Offset of the table inside its BAR. */
  readonly tableOffset: number;
  readonly pbaBir: number;
  readonly pbaOffset: number;
  /** Bytes of the table: 16 per entry. */
  readonly tableBytes: number;
  /** Bytes of the pending-bit array in the BAR: whole QWORDs, one bit per entry. */
  readonly pbaBytes: number;
}

/**
 * Decodes the MSI-X capability at `offset`.
 * @throws ConfigSpaceError when the 12-byte capability runs past the image
 *   or a BIR names a reserved BAR (6 or 7).
 */
export function parseMsix(image: Uint8Array, offset: number): MsixCapability {
  if (offset + PCI_CAP_MSIX_SIZEOF > image.byteLength) {
    throw new ConfigSpaceError('MSI-X capability', `${PCI_CAP_MSIX_SIZEOF} bytes from ${offset} run past the ${image.byteLength}-byte image`, offset);
  }
  const flags = configRead16(image, offset + PCI_MSIX_FLAGS);
  const table = configRead32(image, offset + PCI_MSIX_TABLE);
  const pba = configRead32(image, offset + PCI_MSIX_PBA);
  const tableBir = table & PCI_MSIX_TABLE_BIR;
  const pbaBir = pba & PCI_MSIX_PBA_BIR;
  if (tableBir >= PCI_STD_NUM_BARS) throw new ConfigSpaceError('MSI-X capability', `table BIR ${tableBir} is reserved`, offset + PCI_MSIX_TABLE);
  if (pbaBir >= PCI_STD_NUM_BARS) throw new ConfigSpaceError('MSI-X capability', `PBA BIR ${pbaBir} is reserved`, offset + PCI_MSIX_PBA);
  const tableSize = msixVectorCount(flags);
  return {
    offset,
    flags,
    tableSize,
    functionMask: (flags & PCI_MSIX_FLAGS_MASKALL) !== 0,
    enabled: (flags & PCI_MSIX_FLAGS_ENABLE) !== 0,
    tableBir,
    tableOffset: (table & PCI_MSIX_TABLE_OFFSET) >>> 0,
    pbaBir,
    pbaOffset: (pba & PCI_MSIX_PBA_OFFSET) >>> 0,
    tableBytes: tableSize * PCI_MSIX_ENTRY_SIZE,
    pbaBytes: Math.ceil(tableSize / 64) * 8,
  };
}

/**
 * Finds and decodes the MSI capability, or undefined when there is none.
 * @throws ConfigSpaceError for a malformed capability list or capability.
 */
export function findMsi(image: Uint8Array): MsiCapability | undefined {
  const cap = findCapability(image, PCI_CAP_ID_MSI);
  return cap === undefined ? undefined : parseMsi(image, cap.offset);
}

/**
 * Finds and decodes the MSI-X capability, or undefined when there is none.
 * @throws ConfigSpaceError for a malformed capability list or capability.
 */
export function findMsix(image: Uint8Array): MsixCapability | undefined {
  const cap = findCapability(image, PCI_CAP_ID_MSIX);
  return cap === undefined ? undefined : parseMsix(image, cap.offset);
}

/** One MSI-X table entry (16 bytes, little-endian, PCI 3.0 6.8.2.6). */
export interface MsixTableEntry {
  readonly address: bigint;
  readonly data: number;
  readonly vectorControl: number;
  /** The entry's own mask bit (the function mask is in the capability). */
  readonly masked: boolean;
}

/**
 * Decodes entry `vector` of an MSI-X table image.
 * @throws ConfigSpaceError when the entry lies outside `table`.
 */
export function decodeMsixEntry(table: Uint8Array, vector: number): MsixTableEntry {
  const at = vector * PCI_MSIX_ENTRY_SIZE;
  if (!Number.isInteger(vector) || vector < 0 || at + PCI_MSIX_ENTRY_SIZE > table.byteLength) {
    throw new ConfigSpaceError('MSI-X table', `entry ${vector} lies outside the ${table.byteLength}-byte table`, at);
  }
  const dv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const vectorControl = dv.getUint32(at + PCI_MSIX_ENTRY_VECTOR_CTRL, true);
  return {
    address: (BigInt(dv.getUint32(at + PCI_MSIX_ENTRY_UPPER_ADDR, true)) << 32n) | BigInt(dv.getUint32(at + PCI_MSIX_ENTRY_LOWER_ADDR, true)),
    data: dv.getUint32(at + PCI_MSIX_ENTRY_DATA, true),
    vectorControl,
    masked: (vectorControl & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0,
  };
}

/** Whether `vector`'s bit is set in a pending-bit array (bit `v % 8` of byte `v / 8`, as QEMU's `msix_is_pending`). */
export function msixPending(pba: Uint8Array, vector: number): boolean {
  return ((pba[vector >> 3] ?? 0) & (1 << (vector & 7))) !== 0;
}
