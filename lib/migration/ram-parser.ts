/**
 * An incremental parser of QEMU's `"ram"` section content, with
 * `ram_load_precopy`'s grammar and stricter bounds: the destination's blocks
 * are known up front, so every idstr must name one, the MEM_SIZE list must
 * name each of them once with its exact length, and every page offset must
 * lie inside its block, every zero page's fill byte 0, every idstr exactly
 * one block's bytes. A MULTIFD_FLUSH is skipped as QEMU's loader does without
 * multifd. Page payloads are handed on as views of the input chunks (never
 * buffered), so memory stays bounded whatever the RAM size.
 */
import { StreamFormatError } from '../errors.js';
import {
  RAM_SAVE_FLAG_COMPRESS_PAGE,
  RAM_SAVE_FLAG_CONTINUE,
  RAM_SAVE_FLAG_EOS,
  RAM_SAVE_FLAG_FULL,
  RAM_SAVE_FLAG_HOOK,
  RAM_SAVE_FLAG_MEM_SIZE,
  RAM_SAVE_FLAG_MULTIFD_FLUSH,
  RAM_SAVE_FLAG_PAGE,
  RAM_SAVE_FLAG_XBZRLE,
  RAM_SAVE_FLAG_ZERO,
  checkRamGeometry,
  MAX_RAM_IDSTR_BYTES,
  type CheckedRamBlock,
  type RamBlockInfo,
} from './ram-format.js';
import type { SectionContentParser } from './sections.js';
import { FieldCollector } from './stream.js';

/** What the destination expects: its page size and its RAM blocks. */
export interface RamParserOptions {
  /** QEMU's TARGET_PAGE_SIZE: a power of two from 1 KiB to 64 KiB. */
  readonly pageSize: number;
  /** The destination's blocks; the stream's MEM_SIZE list must name each once, with this length. */
  readonly blocks: readonly RamBlockInfo[];
}

/** What {@link RamSectionParser} delivers, in stream order. `block` indexes the options' blocks. */
export type RamRecord =
  /** The MEM_SIZE list is complete and matches the destination: `blocks` in stream order. */
  | { readonly kind: 'mem-size'; readonly offset: number; readonly total: number; readonly blocks: readonly number[] }
  /** A PAGE header: `pageSize` bytes for offset `at` of `block` follow as `page-data`. */
  | { readonly kind: 'page'; readonly offset: number; readonly block: number; readonly at: number }
  /** A fragment of a page: a view of the pushed chunk, for bytes `[at, at + bytes.length)` of `block`. */
  | { readonly kind: 'page-data'; readonly offset: number; readonly block: number; readonly at: number; readonly bytes: Uint8Array }
  /** A ZERO page: the page at `at` of `block` is zero throughout. */
  | { readonly kind: 'zero'; readonly offset: number; readonly block: number; readonly at: number }
  /** RAM_SAVE_FLAG_EOS: the section's RAM content is over. */
  | { readonly kind: 'eos'; readonly offset: number };

/** A destination block and its index in the options. */
interface BlockRef {
  readonly index: number;
  readonly info: CheckedRamBlock;
}

/** The MEM_SIZE list being read. */
interface BlockList {
  readonly offset: number;
  /** Bytes the entries read so far still have to account for. */
  remaining: number;
  /** Block indexes in stream order. */
  readonly listed: Set<number>;
}

/** What an idstr just read is for: an entry of the MEM_SIZE list, or the block of a page. */
type IdUse = { readonly kind: 'list'; readonly list: BlockList } | PageHeader;

/** A PAGE or ZERO record's be64, before its block is known. */
interface PageHeader {
  readonly kind: 'page';
  readonly flags: typeof RAM_SAVE_FLAG_PAGE | typeof RAM_SAVE_FLAG_ZERO;
  readonly at: bigint;
  /** Stream offset of the record. */
  readonly offset: number;
}

type State =
  | { readonly phase: 'ended' }
  | { readonly phase: 'flags' }
  | { readonly phase: 'idlen' | 'idstr'; readonly use: IdUse }
  | { readonly phase: 'length'; readonly list: BlockList; readonly block: BlockRef }
  | { readonly phase: 'fill'; readonly block: number; readonly at: number; readonly offset: number }
  | { readonly phase: 'page'; readonly block: number; readonly at: number; remaining: number };

/** Flags `ram_load_precopy` knows but this parser refuses, for error messages. */
const UNSUPPORTED: ReadonlyMap<number, string> = new Map([
  [RAM_SAVE_FLAG_FULL, 'RAM_SAVE_FLAG_FULL (obsolete since 2009)'],
  [RAM_SAVE_FLAG_XBZRLE, 'RAM_SAVE_FLAG_XBZRLE (the xbzrle capability)'],
  [RAM_SAVE_FLAG_HOOK, 'RAM_SAVE_FLAG_HOOK (RDMA)'],
  [RAM_SAVE_FLAG_COMPRESS_PAGE, 'RAM_SAVE_FLAG_COMPRESS_PAGE (the compress capability)'],
]);

/** Records that are a be64 alone, for error messages. */
const STANDALONE: ReadonlyMap<number, string> = new Map([
  [RAM_SAVE_FLAG_MEM_SIZE, 'RAM_SAVE_FLAG_MEM_SIZE'],
  [RAM_SAVE_FLAG_EOS, 'RAM_SAVE_FLAG_EOS'],
  [RAM_SAVE_FLAG_MULTIFD_FLUSH, 'RAM_SAVE_FLAG_MULTIFD_FLUSH'],
]);

const TRUNCATED_WHERE: Readonly<Record<Exclude<State['phase'], 'ended'>, string>> = {
  flags: 'where a RAM record (or EOS) was expected',
  idlen: 'inside a RAM block idstr',
  idstr: 'inside a RAM block idstr',
  length: 'inside the MEM_SIZE block list',
  fill: 'inside a zero page',
  page: 'inside a page',
};

/**
 * Parses the content of `"ram"` sections, one after the other, as QEMU's
 * `ram_load` does: records until RAM_SAVE_FLAG_EOS. One parser serves every
 * section of a stream: CONTINUE refers to the block of the last page header
 * that named one, even in an earlier section, as QEMU's loader allows.
 *
 * After it throws, its state is undefined: discard it.
 */
export class RamSectionParser implements SectionContentParser<RamRecord> {
  readonly pageSize: number;
  readonly blocks: readonly CheckedRamBlock[];
  readonly #byName: ReadonlyMap<string, BlockRef>;
  readonly #total: number;
  readonly #mask: bigint;
  readonly #field = new FieldCollector(Math.max(8, MAX_RAM_IDSTR_BYTES));
  /** Fatal and BOM-keeping: the idstr's bytes map to one string, so only a block's exact bytes name it. */
  readonly #decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  #state: State = { phase: 'ended' };
  #position = 0;
  #fieldOffset = 0;
  /** QEMU's static `block` in `ram_block_from_stream`. */
  #lastBlock: BlockRef | undefined;

  /** @throws VfioArgumentError for a geometry {@link checkRamGeometry} refuses */
  constructor(options: RamParserOptions) {
    this.blocks = checkRamGeometry('RamSectionParser', options.pageSize, options.blocks);
    this.pageSize = options.pageSize;
    this.#byName = new Map(this.blocks.map((info, index) => [info.idstr, { index, info }]));
    this.#total = this.blocks.reduce((n, b) => n + b.length, 0);
    this.#mask = BigInt(options.pageSize - 1);
  }

  /** Starts a section whose first content byte is at stream offset `offset`. */
  begin(offset: number): void {
    this.#position = offset;
    this.#expect({ phase: 'flags' }, 8);
  }

  /** True once the section's RAM content is complete (and before the first {@link begin}). */
  get ended(): boolean {
    return this.#state.phase === 'ended';
  }

  /**
   * Consumes bytes of `chunk` from `start` up to the end of the section,
   * passing each record to `emit` as soon as it is known.
   * @returns the number of bytes consumed: all of them unless the section ended
   * @throws StreamFormatError for an unknown flag, an unknown block, an offset outside its block, a list that does not match the destination
   */
  feed(chunk: Uint8Array, start: number, emit: (record: RamRecord) => void): number {
    let pos = start;
    while (pos < chunk.length) {
      const state = this.#state;
      if (state.phase === 'ended') break;
      if (state.phase === 'page') {
        const n = Math.min(state.remaining, chunk.length - pos);
        const at = state.at + this.pageSize - state.remaining;
        emit({ kind: 'page-data', offset: this.#position, block: state.block, at, bytes: chunk.subarray(pos, pos + n) });
        state.remaining -= n;
        this.#position += n;
        pos += n;
        if (state.remaining === 0) this.#expect({ phase: 'flags' }, 8);
        continue;
      }
      const n = this.#field.fill(chunk, pos);
      pos += n;
      this.#position += n;
      if (this.#field.complete) this.#onField(state, emit);
    }
    return pos - start;
  }

  /**
   * Declares the end of input.
   * @throws StreamFormatError if the section is not complete
   */
  finish(): void {
    const { phase } = this.#state;
    if (phase === 'ended') return;
    throw new StreamFormatError(`ram section truncated ${TRUNCATED_WHERE[phase]}`, this.#position);
  }

  #expect(state: State, size: number): void {
    this.#state = state;
    this.#field.expect(size);
    this.#fieldOffset = this.#position;
  }

  /** The field of `state` is complete. */
  #onField(state: Exclude<State, { phase: 'ended' | 'page' }>, emit: (record: RamRecord) => void): void {
    const field = this.#field;
    switch (state.phase) {
      case 'flags':
        this.#onHeader(field.u64(0), emit);
        return;
      case 'idlen': {
        const length = field.u8(0);
        if (length === 0) this.#onIdstr(state.use, '', this.#fieldOffset, emit);
        else this.#expect({ phase: 'idstr', use: state.use }, length);
        return;
      }
      case 'idstr':
        this.#onIdstr(state.use, this.#decodeIdstr(field.bytes, this.#fieldOffset - 1), this.#fieldOffset - 1, emit);
        return;
      case 'length':
        this.#onBlockLength(state.list, state.block, field.u64(0), emit);
        return;
      case 'fill': {
        // ram_load_precopy (QEMU 8.2 and later): "Found a zero page with value %d".
        const fill = field.u8(0);
        if (fill !== 0) throw new StreamFormatError(`a zero page filled with 0x${fill.toString(16)}: only 0 is valid`, this.#fieldOffset);
        emit({ kind: 'zero', offset: state.offset, block: state.block, at: state.at });
        this.#expect({ phase: 'flags' }, 8);
        return;
      }
    }
  }

  /** A record's be64: flags below the page size, an offset (or the RAM size) above. */
  #onHeader(value: bigint, emit: (record: RamRecord) => void): void {
    const offset = this.#fieldOffset;
    const flags = Number(value & this.#mask);
    const addr = value & ~this.#mask;
    const kind = flags & ~RAM_SAVE_FLAG_CONTINUE;
    const continued = (flags & RAM_SAVE_FLAG_CONTINUE) !== 0;
    const standalone = STANDALONE.get(kind);
    if (standalone !== undefined) {
      if (continued) throw new StreamFormatError(`RAM_SAVE_FLAG_CONTINUE on a record that is not a page (flags 0x${flags.toString(16)})`, offset);
      // QEMU ignores the upper bits of EOS and MULTIFD_FLUSH and always sends them clear.
      if (kind !== RAM_SAVE_FLAG_MEM_SIZE && addr !== 0n) throw new StreamFormatError(`${standalone} carries 0x${addr.toString(16)} in its upper bits`, offset);
    }
    switch (kind) {
      case RAM_SAVE_FLAG_EOS:
        emit({ kind: 'eos', offset });
        this.#state = { phase: 'ended' };
        return;
      case RAM_SAVE_FLAG_MULTIFD_FLUSH:
        // multifd_recv_sync_main() returns at once without multifd: nothing to do.
        this.#expect({ phase: 'flags' }, 8);
        return;
      case RAM_SAVE_FLAG_MEM_SIZE:
        if (addr !== BigInt(this.#total)) {
          throw new StreamFormatError(`the stream has ${addr} bytes of RAM, the destination ${this.#total}`, offset);
        }
        this.#expect({ phase: 'idlen', use: { kind: 'list', list: { offset, remaining: this.#total, listed: new Set() } } }, 1);
        return;
      case RAM_SAVE_FLAG_PAGE:
      case RAM_SAVE_FLAG_ZERO: {
        const page: PageHeader = { kind: 'page', flags: kind, at: addr, offset };
        if (!continued) {
          this.#expect({ phase: 'idlen', use: page }, 1);
          return;
        }
        const block = this.#lastBlock;
        if (block === undefined) throw new StreamFormatError('RAM_SAVE_FLAG_CONTINUE before any page named its block', offset);
        this.#startPage(page, block, emit);
        return;
      }
      default: {
        const name = UNSUPPORTED.get(kind);
        throw new StreamFormatError(name === undefined ? `unknown combination of RAM flags 0x${flags.toString(16)}` : `${name} is not supported`, offset);
      }
    }
  }

  /**
   * An idstr's bytes as a string; bytes that are not UTF-8 name no block.
   * @throws StreamFormatError for bytes that are not UTF-8
   */
  #decodeIdstr(bytes: Uint8Array, offset: number): string {
    try {
      return this.#decoder.decode(bytes);
    } catch (e) {
      if (!(e instanceof TypeError)) throw e;
      throw new StreamFormatError(`unknown RAM block: its idstr (${Buffer.from(bytes).toString('hex')}) is not UTF-8`, offset);
    }
  }

  /** An idstr (`''` for a zero length, which no block has) whose length byte is at `offset` is complete. */
  #onIdstr(use: IdUse, idstr: string, offset: number, emit: (record: RamRecord) => void): void {
    const block = this.#byName.get(idstr);
    // JSON quoting: idstrs come from the stream and may hold any byte.
    if (block === undefined) throw new StreamFormatError(`unknown RAM block ${JSON.stringify(idstr)}`, offset);
    if (use.kind === 'page') {
      this.#lastBlock = block;
      this.#startPage(use, block, emit);
      return;
    }
    if (use.list.listed.has(block.index)) throw new StreamFormatError(`RAM block ${JSON.stringify(idstr)} is listed twice`, offset);
    this.#expect({ phase: 'length', list: use.list, block }, 8);
  }

  /** A MEM_SIZE entry's `used_length` is complete. */
  #onBlockLength(list: BlockList, block: BlockRef, length: bigint, emit: (record: RamRecord) => void): void {
    const { info } = block;
    if (length !== BigInt(info.length)) {
      throw new StreamFormatError(`RAM block ${JSON.stringify(info.idstr)} is ${length} bytes in the stream, ${info.length} on the destination`, this.#fieldOffset);
    }
    list.listed.add(block.index);
    list.remaining -= info.length;
    if (list.remaining > 0) {
      this.#expect({ phase: 'idlen', use: { kind: 'list', list } }, 1);
      return;
    }
    // Distinct blocks with their exact lengths adding up to the total: every block is listed.
    emit({ kind: 'mem-size', offset: list.offset, total: this.#total, blocks: [...list.listed] });
    this.#expect({ phase: 'flags' }, 8);
  }

  /** A page's block is known: its offset must lie inside it (`host_from_ram_block_offset`). */
  #startPage(page: PageHeader, block: BlockRef, emit: (record: RamRecord) => void): void {
    const { info, index } = block;
    if (page.at >= BigInt(info.length)) {
      throw new StreamFormatError(`page offset 0x${page.at.toString(16)} is outside RAM block ${JSON.stringify(info.idstr)} (${info.length} bytes)`, page.offset);
    }
    const at = Number(page.at);
    if (page.flags === RAM_SAVE_FLAG_ZERO) {
      this.#expect({ phase: 'fill', block: index, at, offset: page.offset }, 1);
      return;
    }
    emit({ kind: 'page', offset: page.offset, block: index, at });
    this.#state = { phase: 'page', block: index, at, remaining: this.pageSize };
  }
}
