/**
 * Base address registers: decoding the six BAR dwords of a type 0 header,
 * sizing a BAR from the value read back after writing all ones, and checking
 * that size against the size VFIO reports for the BAR's region.
 *
 * vfio-pci emulates BAR sizing (`vfio_bar_fixup` in
 * drivers/vfio/pci/vfio_pci_config.c): after all ones are written, a read
 * returns `~(len - 1)` with the BAR's flag bits ORed into the low dword and
 * the upper half of the mask in the next BAR for a 64-bit BAR. mtty does the
 * same with its own mask (`handle_pci_cfg_write`).
 */
import { ConfigSpaceError } from '../errors.js';
import { configRead32 } from './config-space.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_IO_MASK,
  PCI_BASE_ADDRESS_MEM_MASK,
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_1M,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_BASE_ADDRESS_MEM_TYPE_MASK,
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_STD_NUM_BARS,
} from './regs.js';

/** What a BAR decodes: I/O ports, 32-bit memory, memory below 1 MiB (obsolete) or 64-bit memory. */
export type BarKind = 'io' | 'mem32' | 'mem1m' | 'mem64';

/** A BAR that maps a resource (possibly of size 0: unimplemented BARs read as 0 and look like `mem32`). */
export interface Bar {
  readonly index: number;
  /** Config offset of the BAR register (of its low dword for a 64-bit BAR). */
  readonly offset: number;
  readonly kind: BarKind;
  readonly prefetchable: boolean;
  /** The programmed address, flag bits cleared; for `mem64` both dwords. */
  readonly address: bigint;
  /** The raw low dword. */
  readonly raw: number;
}

/** The register after a 64-bit BAR: it holds that BAR's upper 32 address bits. */
export interface BarUpperHalf {
  readonly index: number;
  readonly offset: number;
  readonly kind: 'upper';
  /** Index of the 64-bit BAR this dword belongs to. */
  readonly lowerIndex: number;
  readonly raw: number;
}

/** One of the six BAR registers, decoded. */
export type DecodedBar = Bar | BarUpperHalf;

const CTX = 'BAR';
const barOffset = (index: number): number => PCI_BASE_ADDRESS_0 + 4 * index;

/**
 * Decodes the six BAR registers of a type 0 header.
 * @throws ConfigSpaceError for a reserved memory type (`11b`) or a 64-bit BAR
 *   in the last slot, which has no register for its upper half.
 */
export function decodeBars(image: Uint8Array): DecodedBar[] {
  const out: DecodedBar[] = [];
  for (let index = 0; index < PCI_STD_NUM_BARS; index++) {
    const offset = barOffset(index);
    const raw = configRead32(image, offset);
    if ((raw & PCI_BASE_ADDRESS_SPACE_IO) !== 0) {
      out.push({ index, offset, kind: 'io', prefetchable: false, address: BigInt((raw & PCI_BASE_ADDRESS_IO_MASK) >>> 0), raw });
      continue;
    }
    const type = raw & PCI_BASE_ADDRESS_MEM_TYPE_MASK;
    const prefetchable = (raw & PCI_BASE_ADDRESS_MEM_PREFETCH) !== 0;
    const low = BigInt((raw & PCI_BASE_ADDRESS_MEM_MASK) >>> 0);
    if (type === PCI_BASE_ADDRESS_MEM_TYPE_64) {
      if (index === PCI_STD_NUM_BARS - 1) {
        throw new ConfigSpaceError(CTX, `BAR${index} is 64-bit but has no following register for its upper half`, offset);
      }
      const high = configRead32(image, offset + 4);
      out.push({ index, offset, kind: 'mem64', prefetchable, address: (BigInt(high) << 32n) | low, raw });
      out.push({ index: index + 1, offset: offset + 4, kind: 'upper', lowerIndex: index, raw: high });
      index++;
    } else if (type === PCI_BASE_ADDRESS_MEM_TYPE_1M) {
      out.push({ index, offset, kind: 'mem1m', prefetchable, address: low, raw });
    } else if (type === 0) {
      out.push({ index, offset, kind: 'mem32', prefetchable, address: low, raw });
    } else {
      throw new ConfigSpaceError(CTX, `BAR${index} has the reserved memory type 11b`, offset);
    }
  }
  return out;
}

/**
 * The size a BAR decodes, from the dword(s) read back after writing all ones
 * to it (and to its upper half for `mem64`): the lowest address bit that
 * reads back as 1, as Linux's `pci_size` takes it, so I/O BARs that decode
 * only 16 bits size correctly too. 0 means the BAR is not implemented.
 *
 * @param low the low dword read back
 * @param high the upper dword read back, for a `mem64` BAR (required then)
 * @throws ConfigSpaceError when `high` is missing for a 64-bit BAR.
 */
export function barSizeFromMask(bar: Bar, low: number, high?: number): bigint {
  let mask: bigint;
  if (bar.kind === 'io') {
    mask = BigInt((low & PCI_BASE_ADDRESS_IO_MASK) >>> 0);
  } else if (bar.kind === 'mem64') {
    if (high === undefined) throw new ConfigSpaceError(CTX, `BAR${bar.index} is 64-bit: its upper sizing dword is needed`, bar.offset + 4);
    mask = (BigInt(high >>> 0) << 32n) | BigInt((low & PCI_BASE_ADDRESS_MEM_MASK) >>> 0);
  } else {
    mask = BigInt((low & PCI_BASE_ADDRESS_MEM_MASK) >>> 0);
  }
  return mask & -mask;
}

/**
 * Checks a BAR's sized length against the size VFIO reports for its region
 * (vfio-pci reports `pci_resource_len`, the BAR size; 0 for an unimplemented
 * BAR).
 * @throws ConfigSpaceError naming the BAR register when the two differ.
 */
export function checkBarRegionSize(bar: Bar, size: bigint, regionSize: bigint): void {
  if (size !== regionSize) {
    throw new ConfigSpaceError(CTX, `BAR${bar.index} decodes ${size} bytes but its VFIO region is ${regionSize} bytes`, bar.offset);
  }
}
