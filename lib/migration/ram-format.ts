/**
 * QEMU's `"ram"` savevm section (migration/ram.c, `savevm_ram_handlers`,
 * registered as `"ram"` instance 0 version 4), byte-exact: the flags, the
 * writers, and the geometry rules both sides check.
 *
 * Every record starts with a be64 whose bits below the page size are flags
 * and whose upper bits are a byte offset (or, for MEM_SIZE, the total RAM
 * size). QEMU's setup section is `be64 (total | MEM_SIZE)`, then per RAMBlock
 * `u8 len, idstr, be64 used_length`, then `be64 EOS`; every later section is
 * pages, each `be64 (offset | PAGE [| CONTINUE])`, the block's `u8 len,
 * idstr` unless CONTINUE (same block as the page before), the page; or a
 * zero page, `be64 (offset | ZERO [| CONTINUE])`, [idstr], one fill byte;
 * then `be64 EOS`. A `be64 MULTIFD_FLUSH` may stand between records.
 */
import { VfioArgumentError } from '../errors.js';

/** The section's idstr. */
export const RAM_SECTION_IDSTR = 'ram';
/** The only version `ram_load` takes. */
export const RAM_SECTION_VERSION = 4;

/** Obsolete since 2009; never sent. */
export const RAM_SAVE_FLAG_FULL = 0x01;
/** A zero page: one fill byte follows, 0 (QEMU 8.2 and later refuse any other; none sends one). */
export const RAM_SAVE_FLAG_ZERO = 0x02;
/** The RAMBlock list (setup): the upper bits are the total RAM size. */
export const RAM_SAVE_FLAG_MEM_SIZE = 0x04;
/** A whole page follows. */
export const RAM_SAVE_FLAG_PAGE = 0x08;
/** Ends a section's RAM content. */
export const RAM_SAVE_FLAG_EOS = 0x10;
/** The page is in the block of the page before it: no idstr follows. */
export const RAM_SAVE_FLAG_CONTINUE = 0x20;
/** An XBZRLE-encoded page (the `xbzrle` capability; not supported here). */
export const RAM_SAVE_FLAG_XBZRLE = 0x40;
/** RDMA's hook (not supported here). */
export const RAM_SAVE_FLAG_HOOK = 0x80;
/** A zlib-compressed page (the `compress` capability, removed in QEMU 9.1; not supported here). */
export const RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100;
/**
 * A multifd sync point, `be64 MULTIFD_FLUSH` alone. Without multifd QEMU's
 * loader takes it as a no-op, and QEMU 8.1.0 to 8.1.2 send it without
 * multifd too (at setup, after each pass over RAM and at the end, with 8.1
 * machine types), so the parser skips it.
 */
export const RAM_SAVE_FLAG_MULTIFD_FLUSH = 0x200;

/** The smallest page size: QEMU's flags go up to 0x200, so they need pages of at least 1 KiB. */
export const MIN_RAM_PAGE_SIZE = 1024;
/** The largest page size taken here (QEMU's TARGET_PAGE_SIZE is at most 64 KiB). */
export const MAX_RAM_PAGE_SIZE = 65536;
/** The most RAM blocks taken here (a VM has a handful: `pc.ram`, ROMs, video RAM...). */
export const MAX_RAM_BLOCKS = 4096;
/** RAMBlock idstrs are sent with a u8 length. */
export const MAX_RAM_IDSTR_BYTES = 255;

/** A RAM block as the stream names it: QEMU's `RAMBlock.idstr` and `used_length`. */
export interface RamBlockInfo {
  readonly idstr: string;
  /** Bytes, a multiple of the page size. */
  readonly length: number;
}

/** A block checked by {@link checkRamGeometry}, with its idstr encoded. */
export type CheckedRamBlock<B extends RamBlockInfo = RamBlockInfo> = B & {
  /** The idstr in UTF-8, 1 to 255 bytes. */
  readonly idstrBytes: Uint8Array;
};

/**
 * Checks a RAM geometry: the page size is a power of two in [1 KiB, 64 KiB];
 * there are 1 to {@link MAX_RAM_BLOCKS} blocks with distinct idstrs of 1 to
 * 255 UTF-8 bytes, each a positive multiple of the page size; the total is a
 * safe integer. An idstr must be well-formed Unicode without NUL: a lone
 * surrogate encodes as U+FFFD (two names would share one idstr on the wire,
 * and a block would not match its own), and QEMU's idstrs are C strings.
 * @returns the blocks, each with its encoded idstr
 * @throws VfioArgumentError naming the first broken rule
 */
export function checkRamGeometry<B extends RamBlockInfo>(op: string, pageSize: number, blocks: readonly B[]): CheckedRamBlock<B>[] {
  if (!Number.isInteger(pageSize) || pageSize < MIN_RAM_PAGE_SIZE || pageSize > MAX_RAM_PAGE_SIZE || (pageSize & (pageSize - 1)) !== 0) {
    throw new VfioArgumentError(op, `page size ${pageSize} is not a power of two in [${MIN_RAM_PAGE_SIZE}, ${MAX_RAM_PAGE_SIZE}]`);
  }
  if (blocks.length === 0 || blocks.length > MAX_RAM_BLOCKS) throw new VfioArgumentError(op, `${blocks.length} RAM blocks: 1 to ${MAX_RAM_BLOCKS} expected`);
  const names = new Set<string>();
  const encoder = new TextEncoder();
  const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
  let total = 0;
  return blocks.map((b) => {
    const idstrBytes = encoder.encode(b.idstr);
    if (b.idstr.includes('\0') || decoder.decode(idstrBytes) !== b.idstr) {
      throw new VfioArgumentError(op, `RAM block idstr ${JSON.stringify(b.idstr)} is not well-formed Unicode without NUL`);
    }
    if (idstrBytes.length === 0 || idstrBytes.length > MAX_RAM_IDSTR_BYTES) {
      throw new VfioArgumentError(op, `RAM block idstr ${JSON.stringify(b.idstr)} is ${idstrBytes.length} bytes: 1 to ${MAX_RAM_IDSTR_BYTES} expected`);
    }
    if (names.has(b.idstr)) throw new VfioArgumentError(op, `two RAM blocks are named ${JSON.stringify(b.idstr)}`);
    names.add(b.idstr);
    if (!Number.isSafeInteger(b.length) || b.length <= 0 || b.length % pageSize !== 0) {
      throw new VfioArgumentError(op, `RAM block ${JSON.stringify(b.idstr)} is ${b.length} bytes: a positive multiple of ${pageSize} expected`);
    }
    total += b.length;
    if (!Number.isSafeInteger(total)) throw new VfioArgumentError(op, 'the RAM blocks add up to more than 2^53 bytes');
    return { ...b, idstrBytes };
  });
}

// ---------------------------------------------------------------------------
// Writers

/** `be64 value`. */
function be64(value: bigint): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, value);
  return out;
}

/**
 * What `ram_save_setup` sends before its EOS: `be64 (total | MEM_SIZE)`,
 * then per block `u8 len, idstr, be64 used_length`.
 */
export function encodeRamMemSize(blocks: readonly Pick<CheckedRamBlock, 'idstrBytes' | 'length'>[]): Uint8Array {
  const total = blocks.reduce((n, b) => n + b.length, 0);
  const size = 8 + blocks.reduce((n, b) => n + 1 + b.idstrBytes.length + 8, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(total) | BigInt(RAM_SAVE_FLAG_MEM_SIZE));
  let at = 8;
  for (const b of blocks) {
    out[at] = b.idstrBytes.length;
    out.set(b.idstrBytes, at + 1);
    at += 1 + b.idstrBytes.length;
    view.setBigUint64(at, BigInt(b.length));
    at += 8;
  }
  return out;
}

/**
 * `save_page_header`: `be64 (offset | flag [| CONTINUE])`, then `u8 len,
 * idstr` when `idstr` is given (a page of another block than the last one
 * sent), CONTINUE otherwise; for a zero page the fill byte (0) follows, as
 * `save_zero_page_to_file` writes it.
 * @param offset the page's byte offset in its block, a multiple of the page size
 * @throws VfioArgumentError for an offset that is not a non-negative safe integer clear of the flag bits, or an idstr not of 1 to 255 bytes
 */
export function encodeRamPageHeader(kind: 'page' | 'zero', offset: number, idstr: Uint8Array | undefined): Uint8Array {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % MIN_RAM_PAGE_SIZE !== 0) {
    throw new VfioArgumentError('encodeRamPageHeader', `offset ${offset} is not a page offset`);
  }
  if (idstr !== undefined && (idstr.length === 0 || idstr.length > MAX_RAM_IDSTR_BYTES)) {
    throw new VfioArgumentError('encodeRamPageHeader', `an idstr of ${idstr.length} bytes: 1 to ${MAX_RAM_IDSTR_BYTES} expected`);
  }
  const flags = (kind === 'page' ? RAM_SAVE_FLAG_PAGE : RAM_SAVE_FLAG_ZERO) | (idstr === undefined ? RAM_SAVE_FLAG_CONTINUE : 0);
  const named = idstr === undefined ? 0 : 1 + idstr.length;
  const out = new Uint8Array(8 + named + (kind === 'zero' ? 1 : 0));
  new DataView(out.buffer).setBigUint64(0, BigInt(offset) | BigInt(flags));
  if (idstr !== undefined) {
    out[8] = idstr.length;
    out.set(idstr, 9);
  }
  // The zero page's fill byte is the array's last byte, already 0.
  return out;
}

/** `be64 RAM_SAVE_FLAG_EOS`: the end of a section's RAM content. */
export function encodeRamEos(): Uint8Array {
  return be64(BigInt(RAM_SAVE_FLAG_EOS));
}
