/**
 * The destination side of guest RAM in a migration: QEMU's `ram_load` into a
 * {@link GuestRam}. The stream's `"ram"` sections are read by a
 * {@link RamSectionParser} that knows this RAM's blocks, and each page goes
 * straight into the block's memory as its bytes arrive.
 */
import { StreamFormatError, VfioArgumentError } from '../errors.js';
import type { GuestRam, GuestRamBlock } from './guest-ram.js';
import { RAM_SECTION_IDSTR, RAM_SECTION_VERSION } from './ram-format.js';
import { RamSectionParser, type RamRecord } from './ram-parser.js';
import type { FullSectionHeader } from './sections.js';

/** What a {@link RamLoader} loaded. */
export interface RamLoadStats {
  /** Whole pages written (RAM_SAVE_FLAG_PAGE). */
  readonly pages: number;
  /** Pages zeroed (RAM_SAVE_FLAG_ZERO). */
  readonly zeroPages: number;
  /** The block list arrived and matched this RAM. */
  readonly sizesMatched: boolean;
}

/** Loads `"ram"` sections into guest RAM. */
export class RamLoader {
  readonly ram: GuestRam;
  #pages = 0;
  #zeroPages = 0;
  #sizesMatched = false;

  constructor(ram: GuestRam) {
    this.ram = ram;
  }

  /** What was loaded so far. */
  get stats(): RamLoadStats {
    return { pages: this.#pages, zeroPages: this.#zeroPages, sizesMatched: this.#sizesMatched };
  }

  /**
   * The parser for a section named by `header` (as `SavevmParser`'s `section`
   * option): a {@link RamSectionParser} for `"ram"`, `undefined` for any
   * other name.
   * @throws StreamFormatError for a `"ram"` section of another instance or version than QEMU registers (0 and 4)
   */
  sectionParser(header: FullSectionHeader, offset: number): RamSectionParser | undefined {
    if (header.idstr !== RAM_SECTION_IDSTR) return undefined;
    if (header.instanceId !== 0 || header.versionId !== RAM_SECTION_VERSION) {
      throw new StreamFormatError(`"ram" instance ${header.instanceId} version ${header.versionId}: instance 0 version ${RAM_SECTION_VERSION} expected`, offset);
    }
    return new RamSectionParser({ pageSize: this.ram.pageSize, blocks: this.ram.blocks.map((b) => ({ idstr: b.name, length: b.length })) });
  }

  /** Applies one record of a parser from {@link sectionParser}: page bytes and zero pages go into RAM. */
  loadRecord(record: RamRecord): void {
    switch (record.kind) {
      case 'mem-size':
        this.#sizesMatched = true;
        return;
      case 'page':
        this.#pages++;
        return;
      case 'page-data':
        this.#block(record.block).bytes(record.at, record.bytes.byteLength).set(record.bytes);
        return;
      case 'zero':
        // ram_handle_zero: the destination page may hold older content.
        this.#block(record.block).bytes(record.at, this.ram.pageSize).fill(0);
        this.#zeroPages++;
        return;
      case 'eos':
        return;
    }
  }

  #block(index: number): GuestRamBlock {
    const b = this.ram.blocks[index];
    if (b === undefined) throw new VfioArgumentError('RamLoader.loadRecord', `RAM block ${index} does not exist: the record is not from this loader's parser`);
    return b;
  }
}
