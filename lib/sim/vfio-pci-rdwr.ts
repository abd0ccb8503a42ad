/**
 * vfio-pci's read/write of BARs and the expansion ROM through the device fd
 * (`vfio_pci_bar_rw`, `vfio_pci_core_do_io_rw`, drivers/vfio/pci/vfio_pci_rdwr.c,
 * Linux 6.12): the access is cut at the end of the BAR, split into the
 * widest naturally aligned accesses (at most 4 bytes for the ROM), memory
 * BARs fail with EIO while memory decode is off, and an excluded range (the
 * MSI-X table, or the ROM past its image) reads as 0xff and drops writes.
 */
import { readLe, writeLe } from '../bytes.js';
import type { MmioWidth } from '../sys/mmio.js';
import { VFIO_PCI_ROM_REGION_INDEX } from '../vfio/uapi/constants.js';
import { fail } from './errno.js';
import type { SimPciFunction } from './pci-function.js';
import { romBarSize } from './vfio-pci-config.js';

/** What a BAR access needs from the driver. */
export interface BarRwContext {
  readonly fn: SimPciFunction;
  /** `__vfio_pci_memory_enabled`. */
  memoryEnabled(): boolean;
}

/**
 * `vfio_pci_bar_rw` for region `index` (BAR0-5 or the ROM) at `pos`.
 * Returns the bytes transferred (short at the end of the BAR).
 * @throws KernelErrno EINVAL outside the BAR or for an unimplemented one, EIO with memory decode off.
 */
export function barRw(ctx: BarRwContext, index: number, pos: bigint, buf: Uint8Array, write: boolean): number {
  const fn = ctx.fn;
  const rom = index === VFIO_PCI_ROM_REGION_INDEX;
  let end: number;
  if (rom) {
    if (fn.rom === undefined) fail('EINVAL');
    end = romBarSize(fn.rom);
  } else {
    const bar = fn.bars[index];
    if (bar === undefined) fail('EINVAL');
    end = bar.size;
  }
  if (pos >= BigInt(end)) fail('EINVAL');
  const off = Number(pos);
  const count = Math.min(buf.byteLength, end - off);
  let xStart = 0;
  let xEnd = 0;
  const msix = fn.msix?.layout;
  if (rom) {
    xStart = fn.rom?.byteLength ?? 0;
    xEnd = end;
  } else if (msix !== undefined && index === msix.tableBar) {
    xStart = msix.tableOffset;
    xEnd = msix.tableOffset + msix.entries * 16;
  }
  const testMem = rom || fn.bars[index]?.kind !== 'io';
  const access = (at: number, width: MmioWidth, chunk: Uint8Array): void => {
    if (testMem && !ctx.memoryEnabled()) fail('EIO');
    if (rom) {
      if (!write) chunk.set((fn.rom ?? new Uint8Array(0)).subarray(at, at + width));
    } else if (write) fn.barWrite(index, at, width, readLe(chunk, 0, width));
    else writeLe(chunk, 0, width, fn.barRead(index, at, width));
  };
  return doIoRw(access, buf.subarray(0, count), off, xStart, xEnd, write, rom ? 4 : 8);
}

/** `vfio_pci_core_do_io_rw`. */
function doIoRw(
  access: (at: number, width: MmioWidth, chunk: Uint8Array) => void,
  buf: Uint8Array,
  start: number,
  xStart: number,
  xEnd: number,
  write: boolean,
  maxWidth: 4 | 8,
): number {
  let done = 0;
  let off = start;
  while (done < buf.byteLength) {
    const count = buf.byteLength - done;
    const fillable = off < xStart ? Math.min(count, xStart - off) : off >= xEnd ? count : 0;
    let filled: number;
    if (fillable >= 8 && off % 8 === 0 && maxWidth >= 8) filled = 8;
    else if (fillable >= 4 && off % 4 === 0) filled = 4;
    else if (fillable >= 2 && off % 2 === 0) filled = 2;
    else if (fillable > 0) filled = 1;
    else filled = 0;
    if (filled > 0) access(off, filled as MmioWidth, buf.subarray(done, done + filled));
    else {
      filled = Math.min(count, xEnd - off);
      if (!write) buf.fill(0xff, done, done + filled);
    }
    done += filled;
    off += filled;
  }
  return done;
}
