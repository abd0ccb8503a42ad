/**
 * The vendor side of a v1 migration region (reference §3) in the simulated
 * kernel: the trapped 32-byte header with its side effects, the
 * `device_state` transitions a vendor driver accepts, the save and resume
 * sessions, and a data section that the vendor fills at a `data_offset` and
 * with transaction sizes of its choosing, varying from one iteration to the next.
 *
 * Header fields answer only at their native width and offset (EINVAL
 * otherwise), writes of `device_state` must keep the vendor's reserved bits,
 * and the error state (SAVING|RESUMING) is left only through VFIO_DEVICE_RESET.
 */
import {
  V1_ERROR,
  V1_PRE_COPY,
  V1_RESUMING,
  V1_RUNNING,
  V1_STOP,
  V1_STOP_COPY,
  isV1StateError,
  isV1StateValid,
  v1Bits,
  v1ErrorState,
  v1WithBits,
  type V1StateBits,
} from '../migration/v1-state.js';
import type { ErrnoName } from '../sys/errno.js';
import { VFIO_DEVICE_STATE_MASK, VFIO_DEVICE_STATE_V1_SAVING } from '../vfio/uapi/constants.js';
import { dataView } from '../vfio/uapi/layout.js';
import { vfio_device_migration_info } from '../vfio/uapi/structs.js';
import { fail } from './errno.js';
import type { SimMmap } from './file.js';
import type { V1DeviceMemory } from './v1-device-memory.js';
import { V1_TXN_HEADER_SIZE } from './v1-device-stream.js';
import { V1ResumeSession } from './v1-resume-session.js';
import { V1SaveSession } from './v1-save-session.js';

const F = vfio_device_migration_info.fields;
const HEADER_SIZE = vfio_device_migration_info.size;
const PAGE_SIZE = 4096;

/** A failure injected into `device_state` writes. */
export interface V1StateWriteFault {
  /** Only writes of these bits fail (every write when omitted). */
  readonly to?: V1StateBits;
  readonly errno: ErrnoName;
  /** The device enters the error state (SAVING|RESUMING) as the write fails. */
  readonly enterError?: boolean;
}

/** Device-side faults for tests; each stays in force until the plan is replaced. */
export interface V1FaultPlan {
  readonly stateWrite?: V1StateWriteFault;
}

/** One transaction through the data section. */
export interface V1Transaction {
  readonly dataOffset: number;
  readonly dataSize: number;
}

/** How the vendor lays out its region and cuts its data. */
export interface V1RegionLayout {
  /** Region size in bytes. */
  readonly size: number;
  /** Where the data section starts; with `mmap` it is the one sparse area `[dataStart, size)`. */
  readonly dataStart: number;
  /** The data section is mmappable. */
  readonly mmap: boolean;
  /** Transaction sizes (header included), used in turn, one per iteration. */
  readonly transactionSizes: readonly number[];
  /** Data offsets, used in turn, one per iteration. */
  readonly dataOffsets: readonly number[];
  /** Bits 3-31 the vendor keeps in `device_state`; a write that changes them is refused. */
  readonly reservedBits: number;
}

/** The vendor driver's migration region. */
export class SimV1MigrationRegion {
  readonly #layout: V1RegionLayout;
  readonly #memory: V1DeviceMemory;
  readonly #faults: () => V1FaultPlan;
  readonly #veto: (cur: V1StateBits, next: V1StateBits) => void;
  /** The data section's backing store; what an mmap of it shows. */
  readonly #data: Uint8Array;
  #word: number;
  #save: V1SaveSession | null = null;
  #resume: V1ResumeSession | null = null;
  /** Iterations so far: picks the next data offset and transaction size. */
  #iteration = 0;
  #dataOffset = 0;
  #dataSize = 0;
  /** A saving transaction is in the data section and not yet consumed by a pending_bytes read. */
  #ready = false;
  /** The data_offset handed out for the resume transaction in progress. */
  #resumeOffset: number | undefined;
  #mappings = 0;
  readonly #saved: V1Transaction[] = [];
  readonly #loaded: V1Transaction[] = [];

  /**
   * @param veto runs before each transition between two valid states; the device refuses it by failing (`fail('EBUSY')`)
   * @throws RangeError for a layout the vendor could not honour
   */
  constructor(layout: V1RegionLayout, memory: V1DeviceMemory, faults: () => V1FaultPlan, veto: (cur: V1StateBits, next: V1StateBits) => void) {
    checkLayout(layout);
    this.#layout = layout;
    this.#memory = memory;
    this.#faults = faults;
    this.#veto = veto;
    this.#data = new Uint8Array(layout.size);
    this.#word = v1WithBits(layout.reservedBits, V1_RUNNING);
  }

  get layout(): V1RegionLayout {
    return this.#layout;
  }

  /** The raw `device_state` word. */
  get word(): number {
    return this.#word;
  }

  /** Transactions produced while saving, in order. */
  get saved(): readonly V1Transaction[] {
    return this.#saved;
  }

  /** Transactions accepted or refused while resuming, in order. */
  get loaded(): readonly V1Transaction[] {
    return this.#loaded;
  }

  /** Why the current or last resume was refused, if it was. */
  get resumeFailure(): string | undefined {
    return this.#resume?.failure;
  }

  /** Live mmaps of the data section. */
  get mappings(): number {
    return this.#mappings;
  }

  /** A read of `buf.length` bytes at `offset` within the region. */
  read(buf: Uint8Array, offset: number): number {
    if (offset < HEADER_SIZE) {
      const dv = dataView(buf);
      if (isField(offset, buf, F.device_state.offset, 4)) dv.setUint32(0, this.#word, true);
      else if (isField(offset, buf, F.reserved.offset, 4)) dv.setUint32(0, 0, true);
      else if (isField(offset, buf, F.pending_bytes.offset, 8)) dv.setBigUint64(0, BigInt(this.#pending()), true);
      else if (isField(offset, buf, F.data_offset.offset, 8)) dv.setBigUint64(0, BigInt(this.#prepare()), true);
      else if (isField(offset, buf, F.data_size.offset, 8)) dv.setBigUint64(0, BigInt(this.#dataSize), true);
      else fail('EINVAL');
      return buf.byteLength;
    }
    this.#checkData(offset, buf.byteLength);
    buf.set(this.#data.subarray(offset, offset + buf.byteLength));
    return buf.byteLength;
  }

  /** A write of `buf` at `offset` within the region. */
  write(buf: Uint8Array, offset: number): number {
    if (offset < HEADER_SIZE) {
      const dv = dataView(buf);
      if (isField(offset, buf, F.device_state.offset, 4)) this.#setState(dv.getUint32(0, true));
      else if (isField(offset, buf, F.reserved.offset, 4)) return buf.byteLength;
      else if (isField(offset, buf, F.data_size.offset, 8)) this.#load(dv.getBigUint64(0, true));
      else fail('EINVAL');
      return buf.byteLength;
    }
    this.#checkData(offset, buf.byteLength);
    this.#data.set(buf, offset);
    return buf.byteLength;
  }

  /** Maps `[offset, +length)` of the data section: the user then reads and writes the backing store directly. */
  mmap(offset: number, length: number): SimMmap {
    const { mmap, dataStart, size } = this.#layout;
    if (!mmap || offset < dataStart || offset + length > size) fail('EINVAL');
    this.#mappings++;
    let live = true;
    return {
      bytes: this.#data.subarray(offset, offset + length),
      unmap: () => {
        if (!live) return;
        live = false;
        this.#mappings--;
      },
    };
  }

  /** VFIO_DEVICE_RESET: back to RUNNING (reserved bits kept), sessions dropped. */
  reset(): void {
    this.#endSessions();
    this.#word = v1WithBits(this.#word, V1_RUNNING);
  }

  // ------------------------------------------------------------ internals

  get #stopCopy(): boolean {
    return v1Bits(this.#word) === V1_STOP_COPY;
  }

  /** pending_bytes: reading it consumes the transaction in the data section (§3.4 step 6). */
  #pending(): number {
    this.#ready = false;
    return this.#save === null ? 0 : this.#save.pending(this.#stopCopy);
  }

  /** data_offset: saving, it puts the next transaction in the data section; resuming, it picks where the next one goes. */
  #prepare(): number {
    if (this.#save !== null) {
      if (this.#ready) return this.#dataOffset;
      const { offset, size } = this.#pick();
      const txn = this.#save.next(size, this.#stopCopy);
      this.#dataOffset = offset;
      this.#dataSize = txn?.byteLength ?? 0;
      if (txn !== undefined) {
        this.#data.set(txn, offset);
        this.#saved.push({ dataOffset: offset, dataSize: txn.byteLength });
      }
      this.#ready = true;
      return offset;
    }
    if (this.#resume !== null) {
      if (this.#resumeOffset === undefined) {
        this.#resumeOffset = this.#pick().offset;
        this.#dataOffset = this.#resumeOffset;
      }
      return this.#resumeOffset;
    }
    fail('EINVAL');
  }

  /** A data_size write while resuming: the vendor consumes the transaction before the write returns. */
  #load(size: bigint): void {
    const offset = this.#resumeOffset;
    if (this.#resume === null || offset === undefined) fail('EINVAL');
    if (size > BigInt(this.#layout.size - offset)) fail('EINVAL');
    this.#resumeOffset = undefined;
    this.#dataSize = Number(size);
    this.#loaded.push({ dataOffset: offset, dataSize: this.#dataSize });
    if (this.#resume.accept(this.#data.slice(offset, offset + this.#dataSize)) !== undefined) fail('EINVAL');
  }

  #pick(): { offset: number; size: number } {
    const { dataOffsets, transactionSizes } = this.#layout;
    const i = this.#iteration++;
    return { offset: dataOffsets[i % dataOffsets.length] ?? this.#layout.dataStart, size: transactionSizes[i % transactionSizes.length] ?? 0 };
  }

  #setState(word: number): void {
    if (isV1StateError(this.#word)) fail('EINVAL');
    const next = v1Bits(word);
    if (((word & ~VFIO_DEVICE_STATE_MASK) >>> 0) !== this.#layout.reservedBits) fail('EINVAL');
    if (!isV1StateValid(next) || next === V1_ERROR) fail('EINVAL');
    const fault = this.#faults().stateWrite;
    if (fault !== undefined && (fault.to === undefined || fault.to === next)) {
      if (fault.enterError === true) this.#enterError();
      fail(fault.errno);
    }
    const cur = v1Bits(this.#word);
    if (next === cur) return;
    this.#veto(cur, next);
    this.#transition(cur, next);
    this.#word = v1WithBits(this.#word, next);
  }

  /** The arcs this vendor accepts between valid states (the four documented sequences and their cancellations). */
  #transition(cur: V1StateBits, next: V1StateBits): void {
    if (cur === V1_RESUMING) {
      if (next !== V1_RUNNING && next !== V1_STOP) fail('EINVAL');
      this.#finishResume();
      return;
    }
    if (next === V1_RESUMING) {
      if (cur !== V1_RUNNING && cur !== V1_STOP) fail('EINVAL');
      this.#resume = new V1ResumeSession(this.#memory);
      return;
    }
    // Saving may not go back to running-and-saving once the device has stopped.
    if (cur === V1_STOP_COPY && next === V1_PRE_COPY) fail('EINVAL');
    if ((next & VFIO_DEVICE_STATE_V1_SAVING) !== 0) this.#save ??= new V1SaveSession(this.#memory);
    else this.#endSessions();
  }

  /**
   * Leaving RESUMING: a device that loaded part of a stream has lost its
   * state, so it enters the error state; one that loaded nothing just leaves.
   */
  #finishResume(): void {
    const session = this.#resume;
    this.#endSessions();
    if (session !== null && session.transactions > 0 && !session.complete) {
      this.#enterError();
      fail('EINVAL');
    }
  }

  #enterError(): void {
    this.#endSessions();
    this.#word = v1ErrorState(this.#word);
  }

  #endSessions(): void {
    this.#save = null;
    this.#resume = null;
    this.#ready = false;
    this.#dataSize = 0;
    this.#resumeOffset = undefined;
  }

  /** Data-section accesses: inside `[dataStart, size)`, not straddling the header. */
  #checkData(offset: number, length: number): void {
    if (offset < this.#layout.dataStart || offset + length > this.#layout.size) fail('EINVAL');
  }
}

/** An access is one header field exactly: its offset and native width. */
function isField(offset: number, buf: Uint8Array, at: number, width: number): boolean {
  return offset === at && buf.byteLength === width;
}

function checkLayout(l: V1RegionLayout): void {
  const bad = (why: string): never => {
    throw new RangeError(`v1 migration region: ${why}`);
  };
  if (l.dataStart < HEADER_SIZE || l.dataStart >= l.size) bad(`the data section cannot start at ${l.dataStart}`);
  if (l.mmap && (l.dataStart % PAGE_SIZE !== 0 || l.size % PAGE_SIZE !== 0)) bad('an mmappable data section must be page-aligned');
  if ((l.reservedBits & VFIO_DEVICE_STATE_MASK) !== 0 || l.reservedBits !== l.reservedBits >>> 0) bad(`reserved bits 0x${l.reservedBits.toString(16)} overlap the state bits`);
  if (l.transactionSizes.length === 0 || l.dataOffsets.length === 0) bad('no transaction sizes or data offsets');
  for (const s of l.transactionSizes) if (!Number.isInteger(s) || s <= V1_TXN_HEADER_SIZE) bad(`a ${s}-byte transaction cannot carry data`);
  const largest = Math.max(...l.transactionSizes);
  for (const o of l.dataOffsets) {
    if (!Number.isInteger(o) || o < l.dataStart || o + largest > l.size) bad(`data offset ${o} cannot hold a ${largest}-byte transaction`);
    if (l.mmap && o % PAGE_SIZE !== 0) bad(`data offset ${o} is not page-aligned`);
  }
}
