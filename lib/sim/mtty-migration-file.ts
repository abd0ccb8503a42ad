/**
 * mtty's migration data files (`struct mtty_migration_file`): an anonymous
 * stream file over one `struct mtty_data` image, read by the source
 * (`mtty_save_fops`) or written by the destination (`mtty_resume_fops`).
 */
import type { ErrnoName } from '../sys/errno.js';
import { dataView } from '../vfio/uapi/layout.js';
import { fail } from './errno.js';
import { SimFile, type FileOps, type IoctlArg } from './file.js';
import { answerPrecopyInfo, precopyInfoArg } from './precopy-info.js';
import { SERIAL_PORT_SIZE } from './uart16550.js';

/** `MTTY_MAGIC`, the first u64 of the stream. */
const MTTY_MAGIC = 0x7e9d09898c3e2c4en;
const MTTY_MAJOR_VER = 1;
const MTTY_MINOR_VER = 0;
/** `offsetof(struct mtty_data, ports)`: magic, major_ver, minor_ver, nr_ports, flags. */
const MTTY_DATA_HEADER_SIZE = 24;
/** `sizeof(struct mtty_data)`: the header and two ports. */
const MTTY_DATA_SIZE_MAX = MTTY_DATA_HEADER_SIZE + 2 * SERIAL_PORT_SIZE;

/** `mtty_data_size`: 60 bytes for one port, 96 for two. */
export function mttyDataSize(nrPorts: number): number {
  return MTTY_DATA_HEADER_SIZE + nrPorts * SERIAL_PORT_SIZE;
}

/** Device-side faults of the saving file (see `MttyFaultPlan`). */
export interface MttySaveFaults {
  /** Every read fails with this errno. */
  readonly saveReadErrno?: ErrnoName;
  /** The stream ends after this many bytes: reads and PRECOPY_INFO see at most this much data. */
  readonly saveTruncateAt?: number;
}

/** What a migration file sees of its device (`migf->mdev_state`). */
export interface MttyMigrationFileOwner {
  /** The device name, the label of the file. */
  readonly name: string;
  readonly nrPorts: 1 | 2;
  /** `mdev_state->state`. */
  readonly state: number;
  readonly saveFaults: MttySaveFaults;
}

/** The state both directions share. */
abstract class MttyMigrationFile implements FileOps {
  readonly kind = 'migration';
  /** `stream_open`: no position for pread/pwrite (ESPIPE). */
  readonly stream = true;
  /** `migf->data`: the raw `struct mtty_data` image. */
  readonly data = new Uint8Array(MTTY_DATA_SIZE_MAX);
  filledSize = 0;
  /** `filp->f_pos`, which mtty moves itself (even when a write then fails). */
  pos = 0;
  disabled = false;
  /** `migf->filp`; the driver's reference is the one it is born with. */
  readonly file = new SimFile(this);

  constructor(protected readonly owner: MttyMigrationFileOwner) {}

  get label(): string {
    return this.owner.name;
  }

  /** `mtty_disable_file`. */
  disable(): void {
    this.disabled = true;
    this.filledSize = 0;
    this.pos = 0;
  }

  /** `mtty_release_migf`. */
  release(): void {
    this.disable();
  }
}

/** The saving file (O_RDONLY): the header at creation, the ports appended on entering STOP_COPY. */
export class MttySaveFile extends MttyMigrationFile {
  /** `mtty_save_device_data`'s initialisation: the header, with `flags` 0 from kzalloc. */
  constructor(owner: MttyMigrationFileOwner) {
    super(owner);
    const dv = dataView(this.data);
    dv.setBigUint64(0, MTTY_MAGIC, true);
    dv.setUint32(8, MTTY_MAJOR_VER, true);
    dv.setUint32(12, MTTY_MINOR_VER, true);
    dv.setUint32(16, owner.nrPorts, true);
    this.filledSize = MTTY_DATA_HEADER_SIZE;
  }

  /** `mtty_save_state`: appends each port's 36-byte image. */
  saveState(encodePort: (index: number, buf: Uint8Array, at: number) => void): void {
    for (let i = 0; i < this.owner.nrPorts; i++) {
      encodePort(i, this.data, MTTY_DATA_HEADER_SIZE + i * SERIAL_PORT_SIZE);
      this.filledSize += SERIAL_PORT_SIZE;
    }
  }

  /** `mtty_save_read`: no ENOMSG; 0 once drained, in PRE_COPY too. */
  read(buf: Uint8Array): number {
    const faults = this.owner.saveFaults;
    if (faults.saveReadErrno !== undefined) fail(faults.saveReadErrno);
    if (this.disabled) fail('ENODEV');
    const filled = this.#filled();
    if (this.pos > filled) fail('EINVAL');
    const len = Math.min(filled - this.pos, buf.length);
    buf.set(this.data.subarray(this.pos, this.pos + len));
    this.pos += len;
    return len;
  }

  /** O_RDONLY: vfs_write's FMODE_WRITE check. */
  write(): number {
    fail('EBADF');
  }

  /** `mtty_precopy_ioctl`: `argsz` and `flags` go back as they came. */
  ioctl(request: number, arg: IoctlArg): number {
    const buf = precopyInfoArg(request, arg, this.owner.state, this.disabled);
    const filled = this.#filled();
    if (this.pos > filled) fail('EINVAL');
    answerPrecopyInfo(buf, BigInt(filled - this.pos), 0n);
    return 0;
  }

  #filled(): number {
    const cut = this.owner.saveFaults.saveTruncateAt;
    return cut === undefined ? this.filledSize : Math.min(this.filledSize, cut);
  }
}

/** The resuming file (O_WRONLY). */
export class MttyResumeFile extends MttyMigrationFile {
  /**
   * `mtty_resume_write`. The header is checked only by the write that
   * completes its 24 bytes; that write fails EFAULT on a mismatch but keeps
   * its bytes and advances, so later writes are accepted.
   */
  write(buf: Uint8Array): number {
    const len = buf.length;
    if (this.pos + len > mttyDataSize(this.owner.nrPorts)) fail('ENOMEM');
    if (this.disabled) fail('ENODEV');
    this.data.set(buf, this.pos);
    this.pos += len;
    const completesHeader = this.filledSize < MTTY_DATA_HEADER_SIZE && this.filledSize + len >= MTTY_DATA_HEADER_SIZE;
    this.filledSize += len;
    if (completesHeader && !this.#headerValid()) fail('EFAULT');
    return len;
  }

  /** O_WRONLY: vfs_read's FMODE_READ check. */
  read(): number {
    fail('EBADF');
  }

  /**
   * `mtty_load_state`'s size check and port images: the ports to load, or
   * EINVAL when fewer than `mtty_data_size()` bytes arrived.
   */
  loadState(decodePort: (index: number, buf: Uint8Array, at: number) => void): void {
    if (this.filledSize < mttyDataSize(this.owner.nrPorts)) fail('EINVAL');
    for (let i = 0; i < this.owner.nrPorts; i++) decodePort(i, this.data, MTTY_DATA_HEADER_SIZE + i * SERIAL_PORT_SIZE);
  }

  #headerValid(): boolean {
    const dv = dataView(this.data);
    return (
      dv.getBigUint64(0, true) === MTTY_MAGIC &&
      dv.getUint32(20, true) === 0 &&
      dv.getUint32(8, true) === MTTY_MAJOR_VER &&
      dv.getUint32(12, true) === MTTY_MINOR_VER &&
      dv.getUint32(16, true) === this.owner.nrPorts
    );
  }
}
