/**
 * The IOVA ranges a VMM hands to device DMA logging START, reduced the way
 * QEMU reduces its memory map (`vfio_dirty_tracking_update_range` and
 * `vfio_device_feature_dma_logging_start_create`, hw/vfio/listener.c):
 * at most three ranges, one spanning everything that ends at or below
 * 4 GiB, one spanning the rest, and a separate one for the 64-bit PCI hole
 * (BARs of VFIO PCI devices mapped for peer-to-peer at or above 4 GiB), so
 * that big holes such as AMD's 1 TiB hole or a relocated PCI hole do not
 * stretch one range over the whole address space. Pure functions.
 */
import type { IovaSpan } from './type1-dirty.js';

/** One mapped section: an IOVA span, and whether it is a VFIO PCI device's BAR. */
export interface LoggingSection {
  readonly iova: bigint;
  readonly size: bigint | number;
  /** The section belongs to a VFIO PCI device (a BAR mapped for P2P). */
  readonly vfioPci?: boolean;
}

const U32_MAX = 0xffff_ffffn;
const U64_MAX = (1n << 64n) - 1n;

interface MinMax {
  min: bigint;
  max: bigint;
}

/**
 * QEMU's three-range reduction of `sections` (empty sections are skipped).
 * The result is in QEMU's order (32-bit, 64-bit, PCI 64-bit hole) and holds
 * only the ranges something fell into; it is empty when nothing is mapped.
 */
export function reduceLoggingRanges(sections: Iterable<LoggingSection>): IovaSpan[] {
  const r32: MinMax = { min: U32_MAX, max: 0n };
  const r64: MinMax = { min: U64_MAX, max: 0n };
  const pci64: MinMax = { min: U64_MAX, max: 0n };
  for (const s of sections) {
    const size = BigInt(s.size);
    if (size === 0n) continue;
    const iova = s.iova;
    // QEMU's `end` is inclusive.
    const last = iova + size - 1n;
    const into = s.vfioPci === true && iova >= U32_MAX ? pci64 : last <= U32_MAX ? r32 : r64;
    if (into.min > iova) into.min = iova;
    if (into.max < last) into.max = last;
  }
  // QEMU tests `max != 0` for presence.
  return [r32, r64, pci64].filter((r) => r.max !== 0n).map((r) => ({ iova: r.min, size: r.max - r.min + 1n }));
}
