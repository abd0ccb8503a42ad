/**
 * The v2 migration driver of the simulated DMA device: STOP_COPY, PRE_COPY
 * and P2P over `vfio_mig_get_next_state`, with a save file (nothing to send
 * during precopy, the engine's state image once STOP_COPY is reached) and a
 * resume file that must receive the whole image before RESUMING -> STOP.
 */
import { STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } from '../migration/state-names.js';
import { concatBytes } from '../bytes.js';
import type { MigrationState } from '../migration/fsm.js';
import {
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
} from '../vfio/uapi/constants.js';
import { VFIO_MIG_GET_PRECOPY_INFO } from '../vfio/uapi/ioctls.js';
import { decode, encode } from '../vfio/uapi/layout.js';
import { vfio_precopy_info } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import { SimFile, type FileOps, type IoctlArg } from './file.js';
import { nextArc } from './mig-next-arc.js';
import type { SimMigrationOps } from './vfio-device.js';


/** What the driver needs from the device: its state image. */
export interface DmaDeviceState {
  readonly name: string;
  /** Bytes of the state image. */
  readonly imageSize: number;
  saveImage(): Uint8Array;
  /** Loads an image; throws (EINVAL) when it is not one of ours. */
  loadImage(image: Uint8Array): void;
}

/** States in which the device's DMA engine may write to memory. */
export function dmaAllowed(state: number): boolean {
  return state === RUNNING || state === RUNNING_P2P || state === PRE_COPY || state === PRE_COPY_P2P;
}

/** The save side: precopy has nothing to send; STOP_COPY appends the image. */
class SaveFile implements FileOps {
  readonly kind = 'migration';
  readonly stream = true;
  readonly file = new SimFile(this);
  data: Uint8Array = new Uint8Array(0);
  pos = 0;
  disabled = false;

  constructor(private readonly driver: DmaDeviceMigration) {}

  get label(): string {
    return this.driver.name;
  }

  read(buf: Uint8Array): number {
    if (this.disabled) fail('ENODEV');
    const n = Math.min(buf.byteLength, this.data.byteLength - this.pos);
    buf.set(this.data.subarray(this.pos, this.pos + n));
    this.pos += n;
    // The uAPI's "no more data for now" in PRE_COPY.
    if (n === 0 && this.driver.state !== STOP_COPY) fail('ENOMSG');
    return n;
  }

  ioctl(request: number, arg: IoctlArg): number {
    if (request !== VFIO_MIG_GET_PRECOPY_INFO) fail('ENOTTY');
    const buf = userBuf(arg, vfio_precopy_info.size);
    if (decode(vfio_precopy_info, buf).argsz < vfio_precopy_info.size) fail('EINVAL');
    const s = this.driver.state;
    if (s !== PRE_COPY && s !== PRE_COPY_P2P) fail('EINVAL');
    if (this.disabled) fail('ENODEV');
    encode(vfio_precopy_info, { flags: 0, initial_bytes: BigInt(this.data.byteLength - this.pos), dirty_bytes: 0n }, buf);
    return 0;
  }
}

/** The resume side: collects the image. */
class ResumeFile implements FileOps {
  readonly kind = 'migration';
  readonly stream = true;
  readonly file = new SimFile(this);
  readonly data: Uint8Array;
  filled = 0;
  disabled = false;

  constructor(private readonly driver: DmaDeviceMigration) {
    this.data = new Uint8Array(driver.device.imageSize);
  }

  get label(): string {
    return this.driver.name;
  }

  write(buf: Uint8Array): number {
    if (this.disabled) fail('ENODEV');
    if (this.filled + buf.byteLength > this.data.byteLength) fail('ENOMEM');
    this.data.set(buf, this.filled);
    this.filled += buf.byteLength;
    return buf.byteLength;
  }
}

/** `vfio_migration_ops` of the simulated DMA device. */
export class DmaDeviceMigration implements SimMigrationOps {
  readonly flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
  #state: MigrationState = RUNNING;
  #saving: SaveFile | null = null;
  #resuming: ResumeFile | null = null;

  constructor(readonly device: DmaDeviceState) {}

  get name(): string {
    return this.device.name;
  }

  get state(): MigrationState {
    return this.#state;
  }

  getState(): number {
    return this.#state;
  }

  getDataSize(): bigint {
    return BigInt(this.device.imageSize);
  }

  setState(target: number): SimFile | null {
    let ret: SimFile | null = null;
    while (this.#state !== target) {
      const next = nextArc(this.#state, target, this.flags);
      ret = this.#step(next) ?? ret;
      this.#state = next;
    }
    return ret;
  }

  /** A device reset: RUNNING, sessions ended. */
  reset(): void {
    this.#state = RUNNING;
    this.#endSessions();
  }

  #step(next: MigrationState): SimFile | null {
    const cur = this.#state;
    if ((cur === RUNNING && next === PRE_COPY) || (cur === RUNNING_P2P && next === PRE_COPY_P2P) || (cur === STOP && next === STOP_COPY)) {
      const f = new SaveFile(this);
      if (next === STOP_COPY) f.data = this.device.saveImage();
      this.#saving = f;
      return f.file.get();
    }
    if (cur === PRE_COPY_P2P && next === STOP_COPY) {
      // The precopy session goes on: the image is appended, no new fd.
      if (this.#saving !== null) this.#saving.data = concatBytes([this.#saving.data, this.device.saveImage()]);
      return null;
    }
    if (cur === STOP && next === RESUMING) {
      const f = new ResumeFile(this);
      this.#resuming = f;
      return f.file.get();
    }
    if (cur === RESUMING && next === STOP) {
      const f = this.#resuming;
      if (f === null || f.filled < f.data.byteLength) fail('EINVAL');
      this.device.loadImage(f.data);
      this.#endSessions();
      return null;
    }
    if ((cur === PRE_COPY && next === RUNNING) || (cur === PRE_COPY_P2P && next === RUNNING_P2P) || (cur === STOP_COPY && next === STOP)) {
      this.#endSessions();
    }
    // The other arcs (to and from the P2P states, RUNNING <-> STOP) only start or stop DMA, which dmaAllowed() reads from the state.
    return null;
  }

  #endSessions(): void {
    for (const f of [this.#saving, this.#resuming]) {
      if (f === null) continue;
      f.disabled = true;
      f.file.put();
    }
    this.#saving = null;
    this.#resuming = null;
  }
}
