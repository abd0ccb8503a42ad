/**
 * A VM's guest RAM as migration sees it: QEMU's RAMBlocks (a name, the
 * memory, its size) laid end to end as RAM pages `[0, npages)`, which are
 * also the pages of the dirty bitmap, and where each block sits in the
 * devices' IO address space, so a dirty tracker reports IOVAs as those same
 * pages (the `ram` ranges of `createDirtyTracker`). No I/O.
 */
import { VfioArgumentError } from '../errors.js';
import type { Mapping } from '../sys/sys.js';
import { RamLayout, type RamRange } from '../vfio/ram-layout.js';
import { checkRamGeometry } from './ram-format.js';

/** One block of guest RAM. */
export interface GuestRamBlockOptions {
  /** QEMU's RAMBlock idstr, e.g. `'pc.ram'`: 1 to 255 UTF-8 bytes, distinct. */
  readonly name: string;
  /** The block's memory (a mapping made with `allocPages`, or any array): a multiple of the page size. */
  readonly memory: Mapping | Uint8Array;
  /** Where the devices see the block: the IOVA it is mapped for DMA at, page-aligned, blocks not overlapping. */
  readonly iova: bigint;
}

/** Options of {@link GuestRam}. */
export interface GuestRamOptions {
  /** QEMU's TARGET_PAGE_SIZE, and the dirty bitmap's page size: a power of two from 1 KiB to 64 KiB. Default 4096. */
  readonly pageSize?: number;
}

/** A block of a {@link GuestRam}, with its place among the RAM pages. */
export interface GuestRamBlock {
  /** Its index in {@link GuestRam.blocks}. */
  readonly index: number;
  readonly name: string;
  /** The name in UTF-8, as the stream carries it. */
  readonly idstrBytes: Uint8Array;
  /** Bytes. */
  readonly length: number;
  readonly iova: bigint;
  /** Its first RAM page. */
  readonly firstPage: number;
  readonly npages: number;
  /** A zero-copy view of bytes `[offset, offset + length)`. */
  bytes(offset: number, length: number): Uint8Array;
}

/** Guest RAM: blocks laid end to end as RAM pages. */
export class GuestRam {
  readonly pageSize: number;
  readonly blocks: readonly GuestRamBlock[];
  /** RAM pages: the dirty bitmap's size. */
  readonly npages: number;
  /** Bytes of RAM. */
  readonly size: number;
  /**
   * Where each block sits for dirty tracking: give it as `ram` (and
   * {@link pageSize} as `pageSize`) to `createDirtyTracker`, so the
   * tracker's bitmap page `i` is RAM page `i`.
   */
  readonly ranges: readonly RamRange[];

  /**
   * @throws VfioArgumentError for a page size or blocks `checkRamGeometry` refuses, or IOVAs misaligned or overlapping
   */
  constructor(blocks: readonly GuestRamBlockOptions[], options: GuestRamOptions = {}) {
    const pageSize = options.pageSize ?? 4096;
    const sized = blocks.map((b) => ({ ...b, idstr: b.name, length: b.memory instanceof Uint8Array ? b.memory.byteLength : b.memory.length }));
    let firstPage = 0;
    this.blocks = checkRamGeometry('GuestRam', pageSize, sized).map((b, index): GuestRamBlock => {
      const { memory, length } = b;
      const block = {
        index,
        name: b.name,
        idstrBytes: b.idstrBytes,
        length,
        iova: b.iova,
        firstPage,
        npages: length / pageSize,
        bytes: memory instanceof Uint8Array ? (offset: number, n: number) => memory.subarray(offset, offset + n) : (offset: number, n: number) => memory.view(offset, n),
      };
      firstPage += block.npages;
      return block;
    });
    this.pageSize = pageSize;
    this.npages = firstPage;
    this.size = firstPage * pageSize;
    // RamLayout holds the IOVA rules: aligned, not overlapping.
    this.ranges = new RamLayout(BigInt(pageSize), this.blocks.map((b) => ({ iova: b.iova, size: BigInt(b.length), firstPage: b.firstPage }))).ranges([]);
  }

  /**
   * The block holding RAM page `page`.
   * @throws VfioArgumentError for a page outside the RAM
   */
  blockOf(page: number): GuestRamBlock {
    let lo = 0;
    let hi = this.blocks.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const b = this.blocks[mid];
      if (page < b.firstPage) hi = mid - 1;
      else if (page >= b.firstPage + b.npages) lo = mid + 1;
      else return b;
    }
    throw new VfioArgumentError('GuestRam.blockOf', `page ${page} is outside the ${this.npages} RAM pages`);
  }
}
