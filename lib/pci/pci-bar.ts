/**
 * A device's BARs as a VMM uses them: type (I/O, 32- or 64-bit memory,
 * prefetchable) from the BAR register, size from the VFIO region (as QEMU's
 * `vfio_bar_prepare` takes it) cross-checked by sizing the register (write
 * all ones, read the mask back, restore), and mmap of the parts the kernel
 * allows: the sparse areas of a SPARSE_MMAP capability, or the whole BAR.
 * A BAR holding the MSI-X table or PBA is mapped whole only when the
 * kernel says MSIX_MAPPABLE; otherwise those pages must not be in any area.
 */
import { ConfigSpaceError } from '../errors.js';
import type { VfioDevice } from '../vfio/device.js';
import type { MappedArea } from '../vfio/mapped-area.js';
import type { Region } from '../vfio/region.js';
import type { SparseArea } from '../vfio/uapi/info.js';
import { barSizeFromMask, checkBarRegionSize, decodeBars, type Bar, type BarKind } from './bar.js';
import type { PciConfig } from './config-access.js';
import type { MsixCapability } from './msi.js';
import { PCI_ROM_ADDRESS, PCI_ROM_ADDRESS_MASK } from './regs.js';

/** A byte range inside a BAR. */
export interface BarRange {
  readonly offset: number;
  readonly size: number;
}

/** One implemented BAR. */
export class PciBar {
  readonly index: number;
  readonly kind: BarKind;
  readonly prefetchable: boolean;
  /** Size in bytes, from the region (and equal to what sizing the register gives). */
  readonly size: number;
  readonly region: Region;
  /** The MSI-X table and PBA ranges inside this BAR (the VMM emulates them), possibly none. */
  readonly msixRanges: readonly BarRange[];

  constructor(bar: Bar, region: Region, msixRanges: readonly BarRange[]) {
    this.index = bar.index;
    this.kind = bar.kind;
    this.prefetchable = bar.prefetchable;
    this.size = region.size;
    this.region = region;
    this.msixRanges = msixRanges;
  }

  /** A 64-bit memory BAR (its upper half is the next BAR register). */
  get is64(): boolean {
    return this.kind === 'mem64';
  }

  /** An I/O port BAR. */
  get isIo(): boolean {
    return this.kind === 'io';
  }

  /**
   * The parts of the BAR that may be mmapped: the kernel's sparse areas, or
   * the whole BAR when it is mmappable.
   * @throws ConfigSpaceError when an area would map the MSI-X table or PBA
   *   without MSIX_MAPPABLE (no 6.12 kernel does that: it either says
   *   MSIX_MAPPABLE or leaves those pages out with sparse areas).
   */
  mmapLayout(): readonly SparseArea[] {
    const layout = this.region.mmapLayout();
    if (!this.region.info.msixMappable) {
      for (const a of layout) {
        const hit = this.msixRanges.find((r) => r.offset < a.offset + a.size && r.offset + r.size > a.offset);
        if (hit !== undefined) {
          throw new ConfigSpaceError(`BAR${this.index}`, `mmap area [0x${a.offset.toString(16)}, +0x${a.size.toString(16)}) covers MSI-X structures at 0x${hit.offset.toString(16)} without MSIX_MAPPABLE`);
        }
      }
    }
    return layout;
  }

  /** Maps the BAR's mmappable parts (see {@link PciBar.mmapLayout}); accesses to the rest go through the kernel. */
  map(): readonly MappedArea[] {
    this.mmapLayout();
    return this.region.mmap();
  }

  /** Unmaps the BAR; its areas are revoked. */
  unmap(): void {
    this.region.unmap();
  }
}

/**
 * The implemented BARs of `device`, QEMU's way: each BAR whose region is not
 * empty (which skips the upper halves of 64-bit BARs), its type from the
 * BAR register, its size from the region. With `crossCheck`, each BAR is
 * also sized through the config region and must match its region.
 * @throws ConfigSpaceError for a malformed BAR register or a size mismatch.
 */
export function discoverBars(device: VfioDevice, config: PciConfig, msix: MsixCapability | undefined, crossCheck: boolean): PciBar[] {
  const out: PciBar[] = [];
  for (const decoded of decodeBars(config.region.readBytes(0, 0x28))) {
    if (decoded.kind === 'upper') continue;
    const region = device.region(decoded.index);
    if (region.size === 0) continue;
    if (crossCheck) checkBarRegionSize(decoded, sizeBar(config, decoded), BigInt(region.size));
    const ranges: BarRange[] = [];
    if (msix !== undefined && msix.tableBir === decoded.index) ranges.push({ offset: msix.tableOffset, size: msix.tableBytes });
    if (msix !== undefined && msix.pbaBir === decoded.index) ranges.push({ offset: msix.pbaOffset, size: msix.pbaBytes });
    out.push(new PciBar(decoded, region, ranges));
  }
  return out;
}

/**
 * The expansion ROM BAR's size as `vfio_pci_size_rom` takes it: the address
 * mask written to the register, read back, the register restored. 0 when the
 * device has no ROM BAR (or its config space ends before the register).
 */
export function sizeRomBar(config: PciConfig): bigint {
  if (config.size < PCI_ROM_ADDRESS + 4) return 0n;
  const orig = config.read32(PCI_ROM_ADDRESS);
  try {
    config.write32(PCI_ROM_ADDRESS, PCI_ROM_ADDRESS_MASK);
    const mask = config.read32(PCI_ROM_ADDRESS) & PCI_ROM_ADDRESS_MASK;
    return BigInt((~mask + 1) >>> 0);
  } finally {
    config.write32(PCI_ROM_ADDRESS, orig);
  }
}

/** Sizes a BAR as firmware does: all ones in (both halves of) the register, the mask read back, the value restored. */
function sizeBar(config: PciConfig, bar: Bar): bigint {
  const lowOrig = config.read32(bar.offset);
  const highOrig = bar.kind === 'mem64' ? config.read32(bar.offset + 4) : 0;
  try {
    config.write32(bar.offset, 0xffffffff);
    if (bar.kind === 'mem64') config.write32(bar.offset + 4, 0xffffffff);
    const low = config.read32(bar.offset);
    return bar.kind === 'mem64' ? barSizeFromMask(bar, low, config.read32(bar.offset + 4)) : barSizeFromMask(bar, low);
  } finally {
    config.write32(bar.offset, lowOrig);
    if (bar.kind === 'mem64') config.write32(bar.offset + 4, highOrig);
  }
}
