/**
 * The v1 migration protocol (Linux 5.8 to 5.17, reference §3): the
 * device-specific region of type 3 / subtype 1 whose first 32 bytes are
 * `struct vfio_device_migration_info`, and the save and resume sequences
 * that move the device state through its data section.
 *
 * Header fields are accessed at their native width only (a u32 at 0, u64s at
 * 8, 16 and 24), because vendor drivers trap them and give reads side
 * effects. Every value a vendor driver reports is bounds-checked before it
 * is used as an offset. The data section goes through a mapping where the
 * region's sparse capability covers it, and through pread/pwrite elsewhere.
 */
import { MigrationV1StateError, MigrationV1TransitionError, UapiFormatError, VfioArgumentError, VfioClosedError, VfioSystemError } from '../errors.js';
import type { VfioDevice } from '../vfio/device.js';
import type { Region } from '../vfio/region.js';
import { VFIO_PCI_NUM_REGIONS, VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED, VFIO_REGION_TYPE_MIGRATION_DEPRECATED } from '../vfio/uapi/constants.js';
import { vfio_device_migration_info } from '../vfio/uapi/structs.js';
import { v1Bits, v1NeedsReset, v1StateName, v1TransitionRefusal, v1WithBits, type V1StateBits } from './v1-state.js';

const F = vfio_device_migration_info.fields;
const STRUCT = vfio_device_migration_info.name;
/** The header: the data section starts after it. */
export const V1_HEADER_SIZE = vfio_device_migration_info.size;

/**
 * How the data section is reached.
 * - `'auto'`: the sparse areas are mmapped at the first transfer and used
 *   wherever they cover a chunk; pread/pwrite elsewhere, and everywhere if the
 *   mmap fails (QEMU's fallback).
 * - `'mmap'`: every chunk must lie inside a mapped sparse area (for tests and
 *   for callers that must not trap).
 * - `'pread'`: never map; every chunk goes through pread/pwrite.
 */
export type V1DataPath = 'auto' | 'mmap' | 'pread';

/** Options of {@link MigrationRegion.find}. */
export interface MigrationRegionOptions {
  /** Default `'auto'`. */
  readonly dataPath?: V1DataPath;
}

/** The v1 migration region of a device, with the §3.4 save and §3.5 resume loops. */
export class MigrationRegion implements Disposable {
  readonly #device: VfioDevice;
  readonly #region: Region;
  readonly #path: V1DataPath;
  /** Whether the first transfer has set the mappings up (mapped or decided not to). */
  #prepared = false;
  #mappedHere = false;
  #closed = false;

  private constructor(device: VfioDevice, region: Region, path: V1DataPath) {
    this.#device = device;
    this.#region = region;
    this.#path = path;
  }

  /**
   * Discovery (§3.1): the region whose TYPE capability is 3 / 1, among the
   * device-specific regions (index 9 and up on a PCI device).
   * @returns undefined when the device has no v1 migration region
   * @throws UapiFormatError when the region cannot hold the header or is not readable and writable
   */
  static find(device: VfioDevice, options: MigrationRegionOptions = {}): MigrationRegion | undefined {
    const first = device.isPci ? VFIO_PCI_NUM_REGIONS : 0;
    const region = device
      .regions()
      .find(
        (r) =>
          r.index >= first &&
          r.info.type?.type === VFIO_REGION_TYPE_MIGRATION_DEPRECATED &&
          r.info.type.subtype === VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED,
      );
    if (region === undefined) return undefined;
    const where = `${device.label} region ${region.index}`;
    if (region.size < V1_HEADER_SIZE) throw new UapiFormatError(`the ${region.size}-byte migration region cannot hold the ${V1_HEADER_SIZE}-byte header`, where);
    if (!region.readable || !region.writable) throw new UapiFormatError('the migration region is not readable and writable', where);
    return new MigrationRegion(device, region, options.dataPath ?? 'auto');
  }

  /** The underlying region. */
  get region(): Region {
    return this.#region;
  }

  /** The data path asked for. */
  get dataPath(): V1DataPath {
    return this.#path;
  }

  // ------------------------------------------------------------ device_state

  /** The raw `device_state` word, reserved bits included. */
  readDeviceState(): number {
    this.#open();
    return this.#region.read32(F.device_state.offset);
  }

  /** The three state bits now. */
  state(): V1StateBits {
    return v1Bits(this.readDeviceState());
  }

  /**
   * Moves the device to `target` with a read-modify-write of `device_state`
   * that keeps bits 3-31. A target the uAPI forbids, or a device in the error
   * state, is refused before anything is written. If the write fails, the
   * state is re-read as §3.3 prescribes: in the error state the device is
   * reset; the error says where the device is in any case.
   * @throws MigrationV1StateError before writing
   * @throws MigrationV1TransitionError after a failed write
   */
  setState(target: V1StateBits): void {
    const raw = this.readDeviceState();
    const reason = v1TransitionRefusal(raw, target);
    if (reason !== undefined) {
      throw new MigrationV1StateError(
        `${this.#label}: cannot move from ${v1StateName(raw)} to ${v1StateName(target)} (${reason})`,
        raw,
        target,
        reason,
      );
    }
    try {
      this.#region.write32(F.device_state.offset, v1WithBits(raw, target));
    } catch (e) {
      if (!(e instanceof VfioSystemError || e instanceof UapiFormatError)) throw e;
      this.#recover(raw, target, e);
    }
  }

  /** `VFIO_DEVICE_RESET`: the only way out of the error state. */
  reset(): void {
    this.#open();
    this.#device.reset();
  }

  // ------------------------------------------------------------ save (§3.4)

  /**
   * Reads `pending_bytes`. Right after a chunk this marks it consumed; a
   * repeated read has no side effect.
   */
  pendingBytes(): bigint {
    this.#open();
    return this.#region.read64(F.pending_bytes.offset);
  }

  /**
   * One iteration of §3.4 in a saving state: pending_bytes (null when 0),
   * data_offset (the vendor driver prepares the chunk), data_size, the data,
   * then pending_bytes again so the chunk is consumed before it is returned.
   * A device may give an empty chunk while data is pending ("nothing now").
   * @throws UapiFormatError when the vendor's data_offset or data_size lies outside the region
   */
  readChunk(): Uint8Array | null {
    if (this.pendingBytes() === 0n) return null;
    const offset = this.#dataOffset();
    const size = this.#checkedSize(offset, this.#region.read64(F.data_size.offset));
    this.#prepare();
    this.#requirePath(offset, size);
    const data = this.#region.readBytes(offset, size);
    this.pendingBytes();
    return data;
  }

  /**
   * The chunks of one saving round, as the vendor driver cuts them, until
   * pending_bytes is 0 or the device gives an empty chunk. In pre-copy
   * (RUNNING|SAVING) the caller may stop early, at any pending_bytes; in
   * stop-and-copy (SAVING) it must drain, then check {@link pendingBytes}.
   */
  async *saveChunks(): AsyncGenerator<Uint8Array, void, undefined> {
    for (;;) {
      const chunk = this.readChunk();
      if (chunk === null || chunk.byteLength === 0) return;
      yield chunk;
    }
  }

  // ------------------------------------------------------------ resume (§3.5)

  /**
   * One iteration of §3.5 in RESUMING: data_offset, the chunk at that offset,
   * then data_size (the vendor driver consumes the chunk before the write
   * returns). The chunk must be one source transaction: it is never split,
   * because a vendor driver may reject a transaction of another size.
   * An empty chunk transfers nothing.
   * @throws VfioArgumentError when the chunk does not fit the data section at data_offset
   */
  writeChunk(chunk: Uint8Array): void {
    this.#open();
    if (chunk.byteLength === 0) return;
    const offset = this.#dataOffset();
    if (chunk.byteLength > this.#region.size - offset) {
      throw new VfioArgumentError(
        'resume chunk',
        `${this.#label}: a ${chunk.byteLength}-byte chunk does not fit at data_offset ${offset} of the ${this.#region.size}-byte region, and v1 forbids splitting a source transaction`,
      );
    }
    this.#prepare();
    this.#requirePath(offset, chunk.byteLength);
    this.#region.writeBytes(offset, chunk);
    this.#region.write64(F.data_size.offset, BigInt(chunk.byteLength));
  }

  // ------------------------------------------------------------ lifetime

  /** Unmaps the data section if this object mapped it; the device stays open. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#mappedHere) this.#region.unmap();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ------------------------------------------------------------ internals

  get #label(): string {
    return `${this.#device.label} migration region ${this.#region.index}`;
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(this.#label);
  }

  /** data_offset, checked: past the header and inside the region. */
  #dataOffset(): number {
    const off = this.#region.read64(F.data_offset.offset);
    if (off < BigInt(V1_HEADER_SIZE) || off > BigInt(this.#region.size)) {
      throw new UapiFormatError(`data_offset ${off} lies outside the data section [${V1_HEADER_SIZE}, ${this.#region.size})`, STRUCT, F.data_offset.offset);
    }
    return Number(off);
  }

  /** data_size, checked against what is left of the region after `offset`. */
  #checkedSize(offset: number, size: bigint): number {
    if (size > BigInt(this.#region.size - offset)) {
      throw new UapiFormatError(`data_size ${size} at data_offset ${offset} runs past the ${this.#region.size}-byte region`, STRUCT, F.data_size.offset);
    }
    return Number(size);
  }

  /**
   * Sets the data path up at the first transfer. The header must never be
   * reached through a mapping (its reads have side effects only the vendor
   * driver sees), so only sparse areas that stay clear of it are mapped.
   */
  #prepare(): void {
    if (this.#prepared) return;
    this.#prepared = true;
    const region = this.#region;
    if (this.#path === 'pread') {
      // The region belongs to the migration: a mapping left by someone else would silently take over.
      region.unmap();
      return;
    }
    const sparse = region.info.sparse;
    const usable = region.mmappable && sparse !== undefined && sparse.length > 0 && sparse.every((a) => a.offset >= V1_HEADER_SIZE);
    if (!usable) {
      if (this.#path === 'mmap') throw new VfioArgumentError('migration data mmap', `${this.#label} has no sparse mmap areas clear of the header`);
      return;
    }
    if (region.areas.length > 0) return;
    try {
      region.mmap();
      this.#mappedHere = true;
    } catch (e) {
      if (this.#path === 'mmap' || !(e instanceof VfioSystemError)) throw e;
    }
  }

  /** In `'mmap'` mode a chunk outside every mapped area is refused instead of silently trapped. */
  #requirePath(offset: number, length: number): void {
    if (this.#path !== 'mmap') return;
    if (!this.#region.areas.some((a) => a.covers(offset, length))) {
      throw new VfioArgumentError('migration data mmap', `${this.#label}: [${offset}, +${length}) is not inside a mapped sparse area`);
    }
  }

  /** §3.3: after a failed write, re-read; the error state needs a reset. Always throws. */
  #recover(from: number, to: V1StateBits, cause: unknown): never {
    const what = `${this.#label}: writing ${v1StateName(to)} over ${v1StateName(from)} failed`;
    let now: number;
    try {
      now = this.readDeviceState();
    } catch (e) {
      throw new MigrationV1TransitionError(`${what}, and device_state cannot be re-read`, from, to, undefined, 'unreadable', { cause, recoveryError: e });
    }
    if (!v1NeedsReset(now)) {
      throw new MigrationV1TransitionError(`${what}; the device is in ${v1StateName(now)}`, from, to, now, 'none', { cause });
    }
    const stuck = now;
    try {
      this.#device.reset();
    } catch (e) {
      throw new MigrationV1TransitionError(`${what}; the device is in ${v1StateName(now)} and its reset failed`, from, to, now, 'reset-failed', {
        cause,
        recoveryError: e,
      });
    }
    try {
      now = this.readDeviceState();
    } catch (e) {
      throw new MigrationV1TransitionError(`${what}; the device was reset, and device_state cannot be re-read`, from, to, undefined, 'unreadable', {
        cause,
        recoveryError: e,
      });
    }
    throw new MigrationV1TransitionError(`${what}; the device was in ${v1StateName(stuck)} and was reset, now ${v1StateName(now)}`, from, to, now, 'reset', {
      cause,
    });
  }
}
