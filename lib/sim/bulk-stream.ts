/**
 * The data files of the simulated bulk device: a saving file that streams
 * the device's pages the way a real driver's precopy does, and a resuming
 * file that takes them back.
 *
 * Stream format (little-endian, like a driver's native structs):
 * ```
 * header  u64 magic "VFIOBULK", u32 version 1, u32 page size, u32 page count,
 *         u32 flags 0, u64 reserved 0                                  (32 bytes)
 * page    u32 index, u32 0, then the page's bytes                      (8 + page size)
 * end     u32 0xffffffff, u32 0                                        (8 bytes, STOP_COPY only)
 * ```
 * The saving session sends the header and every page once in index order
 * (the *initial* bytes), then pages written since they were sent (the
 * *dirty* bytes, each page once however often it was written), and in
 * STOP_COPY the end record. Its `initial_bytes` drains as it is read;
 * `dirty_bytes` rises with device writes and falls as they are read; at the
 * temporary end of precopy data a read fails with ENOMSG, as the uAPI asks
 * (mtty returns 0 instead).
 */
import type { ErrnoName } from '../sys/errno.js';
import { dataView } from '../vfio/uapi/layout.js';
import { fail } from './errno.js';
import { SimFile, type FileOps, type IoctlArg } from './file.js';
import { answerPrecopyInfo, precopyInfoArg } from './precopy-info.js';

/** "VFIOBULK" as a little-endian u64. */
export const BULK_MAGIC = 0x4b4c55424f494656n;
/** The stream version this device writes and accepts. */
export const BULK_VERSION = 1;
/** Bytes of the stream header. */
export const BULK_HEADER_SIZE = 32;
/** Bytes before each page's data, and of the end record. */
export const BULK_RECORD_HEADER_SIZE = 8;
const END_INDEX = 0xffffffff;

/** Device-side faults of the data files (see `BulkFaultPlan`). */
export interface BulkStreamFaults {
  /** Reads of the saving file fail with this errno... */
  readonly saveReadErrno?: ErrnoName;
  /** ...once this many bytes have been read (default 0: every read). */
  readonly saveReadErrnoAfter?: number;
  /** The saving stream ends after this many bytes (a driver that loses data). */
  readonly saveTruncateAt?: number;
  /** PRECOPY_INFO reports these instead of the truth (nonsense sizes). */
  readonly precopyInfo?: { readonly initialBytes?: bigint; readonly dirtyBytes?: bigint };
  /** PRECOPY_INFO fails with this errno. */
  readonly precopyInfoErrno?: ErrnoName;
  /** Writes to the resuming file fail with this errno. */
  readonly resumeWriteErrno?: ErrnoName;
}

/** What the data files see of their device. */
export interface BulkStreamOwner {
  readonly name: string;
  /** The device's state, written in place by a resume. */
  readonly bytes: Uint8Array;
  readonly pageSize: number;
  readonly pageCount: number;
  /** The migration state now. */
  readonly state: number;
  readonly faults: BulkStreamFaults;
}

/** The whole stream of a device: header, every page, end. */
export function bulkStreamSize(pageSize: number, pageCount: number): number {
  return BULK_HEADER_SIZE + pageCount * (BULK_RECORD_HEADER_SIZE + pageSize) + BULK_RECORD_HEADER_SIZE;
}

function encodeHeader(pageSize: number, pageCount: number): Uint8Array {
  const out = new Uint8Array(BULK_HEADER_SIZE);
  const dv = dataView(out);
  dv.setBigUint64(0, BULK_MAGIC, true);
  dv.setUint32(8, BULK_VERSION, true);
  dv.setUint32(12, pageSize, true);
  dv.setUint32(16, pageCount, true);
  return out;
}

/** A record being read: which one, and how far. */
interface Record {
  readonly kind: 'header' | 'initial' | 'dirty' | 'end';
  readonly page: number;
  readonly size: number;
  pos: number;
}

/** Shared by both directions. */
abstract class BulkFile implements FileOps {
  readonly kind = 'migration';
  readonly stream = true;
  disabled = false;
  /** The driver's reference is the one the file is born with. */
  readonly file = new SimFile(this);

  constructor(protected readonly owner: BulkStreamOwner) {}

  get label(): string {
    return this.owner.name;
  }

  disable(): void {
    this.disabled = true;
  }

  release(): void {
    this.disable();
  }
}

/** The saving file (read-only). */
export class BulkSaveFile extends BulkFile {
  readonly #header: Uint8Array;
  readonly #recordHeader = new Uint8Array(BULK_RECORD_HEADER_SIZE);
  readonly #recordSize: number;
  /** Set once the header record has started. */
  #headerStarted = false;
  /** The next page of the initial pass. */
  #cursor = 0;
  /** Pages written since they were sent, in the order they were first written; `#queued` marks them. */
  #dirty: number[] = [];
  #dirtyHead = 0;
  readonly #queued: Uint8Array;
  #record: Record | undefined;
  #stopped = false;
  #endQueued = false;
  #read = 0;

  constructor(owner: BulkStreamOwner) {
    super(owner);
    this.#header = encodeHeader(owner.pageSize, owner.pageCount);
    this.#recordSize = BULK_RECORD_HEADER_SIZE + owner.pageSize;
    this.#queued = new Uint8Array(owner.pageCount);
  }

  /** The device stopped (STOP_COPY): no more writes, and the stream ends with the end record. */
  stop(): void {
    this.#stopped = true;
  }

  /** The device wrote page `page`: send it again if it was sent (or is being sent) already. */
  pageWritten(page: number): void {
    if (page >= this.#cursor || this.#queued[page] === 1) return;
    this.#queued[page] = 1;
    this.#dirty.push(page);
  }

  /** Bytes of the initial pass not read yet (header and pages). */
  get initialBytes(): number {
    const r = this.#record;
    const header = this.#headerStarted ? 0 : BULK_HEADER_SIZE;
    const inFlight = r !== undefined && (r.kind === 'header' || r.kind === 'initial') ? r.size - r.pos : 0;
    return header + (this.owner.pageCount - this.#cursor) * this.#recordSize + inFlight;
  }

  /** Bytes of re-sent pages not read yet. */
  get dirtyBytes(): number {
    const r = this.#record;
    return (this.#dirty.length - this.#dirtyHead) * this.#recordSize + (r?.kind === 'dirty' ? r.size - r.pos : 0);
  }

  /** What is left to read if the device stopped now (the end record included). */
  get remaining(): number {
    const r = this.#record;
    const end = this.#endQueued ? (r?.kind === 'end' ? r.size - r.pos : 0) : BULK_RECORD_HEADER_SIZE;
    return this.initialBytes + this.dirtyBytes + end;
  }

  /** Fills `buf` from the records in order; ENOMSG at the temporary end of precopy data, 0 at the end in STOP_COPY. */
  read(buf: Uint8Array): number {
    const faults = this.owner.faults;
    if (faults.saveReadErrno !== undefined && this.#read >= (faults.saveReadErrnoAfter ?? 0)) fail(faults.saveReadErrno);
    if (this.disabled) fail('ENODEV');
    const limit = Math.min(buf.length, faults.saveTruncateAt === undefined ? Infinity : Math.max(0, faults.saveTruncateAt - this.#read));
    let out = 0;
    while (out < limit) {
      const r = (this.#record ??= this.#next());
      if (r === undefined) break;
      const n = Math.min(r.size - r.pos, limit - out);
      this.#copy(r, buf.subarray(out, out + n));
      r.pos += n;
      out += n;
      if (r.pos === r.size) this.#record = undefined;
    }
    this.#read += out;
    if (out === 0 && !this.#stopped && limit > 0) fail('ENOMSG');
    return out;
  }

  write(): number {
    fail('EBADF');
  }

  /** `VFIO_MIG_GET_PRECOPY_INFO`, only in a precopy state; `flags` is left as it came. */
  ioctl(request: number, arg: IoctlArg): number {
    const buf = precopyInfoArg(request, arg, this.owner.state, this.disabled);
    const faults = this.owner.faults;
    if (faults.precopyInfoErrno !== undefined) fail(faults.precopyInfoErrno);
    answerPrecopyInfo(buf, faults.precopyInfo?.initialBytes ?? BigInt(this.initialBytes), faults.precopyInfo?.dirtyBytes ?? BigInt(this.dirtyBytes));
    return 0;
  }

  #next(): Record | undefined {
    if (!this.#headerStarted) {
      this.#headerStarted = true;
      return { kind: 'header', page: 0, size: BULK_HEADER_SIZE, pos: 0 };
    }
    if (this.#cursor < this.owner.pageCount) return { kind: 'initial', page: this.#cursor++, size: this.#recordSize, pos: 0 };
    if (this.#dirtyHead < this.#dirty.length) {
      const page = this.#dirty[this.#dirtyHead++] ?? 0;
      this.#queued[page] = 0;
      if (this.#dirtyHead === this.#dirty.length) {
        this.#dirty = [];
        this.#dirtyHead = 0;
      }
      return { kind: 'dirty', page, size: this.#recordSize, pos: 0 };
    }
    if (this.#stopped && !this.#endQueued) {
      this.#endQueued = true;
      return { kind: 'end', page: END_INDEX, size: BULK_RECORD_HEADER_SIZE, pos: 0 };
    }
    return undefined;
  }

  /** Copies `out.length` bytes of `r` from its position. */
  #copy(r: Record, out: Uint8Array): void {
    if (r.kind === 'header') {
      out.set(this.#header.subarray(r.pos, r.pos + out.length));
      return;
    }
    let at = 0;
    if (r.pos < BULK_RECORD_HEADER_SIZE) {
      const dv = dataView(this.#recordHeader);
      dv.setUint32(0, r.page, true);
      dv.setUint32(4, 0, true);
      at = Math.min(out.length, BULK_RECORD_HEADER_SIZE - r.pos);
      out.set(this.#recordHeader.subarray(r.pos, r.pos + at));
    }
    if (at < out.length) {
      const from = r.page * this.owner.pageSize + r.pos + at - BULK_RECORD_HEADER_SIZE;
      out.set(this.owner.bytes.subarray(from, from + out.length - at), at);
    }
  }
}

/** The resuming file (write-only): pages land in the device's state as they arrive. */
export class BulkResumeFile extends BulkFile {
  readonly #field = new Uint8Array(BULK_HEADER_SIZE);
  #fieldFill = 0;
  #headerSeen = false;
  #endSeen = false;
  /** The page whose bytes are arriving, and how many arrived. */
  #page: { index: number; filled: number } | undefined;
  readonly #received: Uint8Array;
  #receivedCount = 0;

  constructor(owner: BulkStreamOwner) {
    super(owner);
    this.#received = new Uint8Array(owner.pageCount);
  }

  read(): number {
    fail('EBADF');
  }

  /** Parses as bytes come, split anywhere; a bad header, page index or trailing byte is EINVAL. */
  write(buf: Uint8Array): number {
    const faults = this.owner.faults;
    if (faults.resumeWriteErrno !== undefined) fail(faults.resumeWriteErrno);
    if (this.disabled) fail('ENODEV');
    let pos = 0;
    while (pos < buf.length) {
      if (this.#endSeen) fail('EINVAL');
      const page = this.#page;
      if (page !== undefined) {
        const { pageSize } = this.owner;
        const n = Math.min(pageSize - page.filled, buf.length - pos);
        this.owner.bytes.set(buf.subarray(pos, pos + n), page.index * pageSize + page.filled);
        page.filled += n;
        pos += n;
        if (page.filled === pageSize) this.#pageDone(page.index);
        continue;
      }
      const need = (this.#headerSeen ? BULK_RECORD_HEADER_SIZE : BULK_HEADER_SIZE) - this.#fieldFill;
      const n = Math.min(need, buf.length - pos);
      this.#field.set(buf.subarray(pos, pos + n), this.#fieldFill);
      this.#fieldFill += n;
      pos += n;
      if (n === need) this.#fieldDone();
    }
    return buf.length;
  }

  /** RESUMING → STOP: a complete stream (header, every page, end) or EINVAL. */
  validate(): void {
    if (!this.#headerSeen || !this.#endSeen || this.#receivedCount !== this.owner.pageCount) fail('EINVAL');
  }

  #fieldDone(): void {
    this.#fieldFill = 0;
    const dv = dataView(this.#field);
    if (!this.#headerSeen) {
      const { pageSize, pageCount } = this.owner;
      const ok =
        dv.getBigUint64(0, true) === BULK_MAGIC &&
        dv.getUint32(8, true) === BULK_VERSION &&
        dv.getUint32(12, true) === pageSize &&
        dv.getUint32(16, true) === pageCount &&
        dv.getUint32(20, true) === 0;
      if (!ok) fail('EINVAL');
      this.#headerSeen = true;
      return;
    }
    const index = dv.getUint32(0, true);
    if (dv.getUint32(4, true) !== 0) fail('EINVAL');
    if (index === END_INDEX) this.#endSeen = true;
    else if (index >= this.owner.pageCount) fail('EINVAL');
    else this.#page = { index, filled: 0 };
  }

  #pageDone(index: number): void {
    this.#page = undefined;
    if (this.#received[index] === 0) {
      this.#received[index] = 1;
      this.#receivedCount++;
    }
  }
}
