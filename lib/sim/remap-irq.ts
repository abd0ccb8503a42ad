/**
 * The device side of vfio-ts's remap IRQ extension (see
 * `vfio/uapi/extensions.ts` and `vfio/remap-irq.ts`): one IRQ index with a
 * single vector whose extended GET_IRQ_INFO reply carries the type
 * capability REMAP / REMAP_SPARSE_MMAP, wired with SET_IRQS as any other.
 *
 * - ACTION_TRIGGER | DATA_EVENTFD, count 1: the user's eventfd (the
 *   handshake: from then on the user follows re-layouts); fd -1, or
 *   DATA_NONE with count 0, disables it.
 * - A signal adds the bitmap of the regions to re-read to the eventfd and
 *   masks the index (AUTOMASKED). Changes while masked are merged into a
 *   pending bitmap, sent at the next unmask, so the counter only ever holds
 *   one bitmap.
 * - ACTION_UNMASK | DATA_NONE, count 1: the ack. ACTION_MASK holds signals back.
 */
import {
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
} from '../vfio/uapi/constants.js';
import {
  VFIO_TS_IRQ_INFO_CAP_TYPE,
  VFIO_TS_IRQ_INFO_FLAG_CAPS,
  VFIO_TS_IRQ_SUBTYPE_REMAP_SPARSE_MMAP,
  VFIO_TS_IRQ_TYPE_REMAP,
  VFIO_TS_REMAP_MAX_REGION,
  vfio_ts_irq_info,
} from '../vfio/uapi/extensions.js';
import { buildCapChain } from '../vfio/uapi/info.js';
import { dataView, encode } from '../vfio/uapi/layout.js';
import { vfio_irq_info } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { SimEventFd } from './eventfd.js';
import type { IoctlArg } from './file.js';
import type { IrqSetRequest } from './irq-set-validate.js';

/** The flags the extended reply reports: one eventfd vector, automasked until the ack. */
const FLAGS = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED | VFIO_IRQ_INFO_NORESIZE | VFIO_TS_IRQ_INFO_FLAG_CAPS;

/** What the IRQ tells its device. */
export interface SimRemapIrqHooks {
  /** `eventfd_ctx_fdget`: EBADF for no file, EINVAL for one that is not an eventfd. */
  eventfdOf(fd: number): SimEventFd;
  /** The user acked the last signal: its mappings follow the layouts now. */
  acked(): void;
}

export class SimRemapIrq {
  #trigger: SimEventFd | null = null;
  #masked = false;
  #pending = 0n;
  /** Signals sent since the device was created. */
  signals = 0;
  /** Acks received since the device was created. */
  acks = 0;

  constructor(
    /** The IRQ index. */
    readonly index: number,
    private readonly hooks: SimRemapIrqHooks,
  ) {}

  /** The user enabled the IRQ: the handshake of the extension. */
  get enabled(): boolean {
    return this.#trigger !== null;
  }

  /** A signal is out and not acked yet, or the user masked the index. */
  get masked(): boolean {
    return this.#masked;
  }

  /** Regions changed while masked, to be sent at the next unmask. */
  get pending(): bigint {
    return this.#pending;
  }

  /**
   * GET_IRQ_INFO for this index: the 16-byte `vfio_irq_info` for a caller
   * that passes 16 bytes, the 24-byte extended struct with the chain when
   * argsz holds it, argsz raised when it does not.
   */
  info(arg: IoctlArg): number {
    const argsz = dataView(userBuf(arg, vfio_irq_info.size)).getUint32(0, true);
    if (argsz < vfio_irq_info.size) fail('EINVAL');
    const body = new Uint8Array(8);
    dataView(body).setUint32(0, VFIO_TS_IRQ_TYPE_REMAP, true);
    dataView(body).setUint32(4, VFIO_TS_IRQ_SUBTYPE_REMAP_SPARSE_MMAP, true);
    const chain = buildCapChain([{ id: VFIO_TS_IRQ_INFO_CAP_TYPE, version: 1, body }], vfio_ts_irq_info.size);
    const need = vfio_ts_irq_info.size + chain.byteLength;
    const reply = new Uint8Array(need);
    const fits = argsz >= need;
    encode(vfio_ts_irq_info, { argsz: fits ? argsz : need, flags: FLAGS, index: this.index, count: 1, cap_offset: fits ? vfio_ts_irq_info.size : 0 }, reply);
    reply.set(chain, vfio_ts_irq_info.size);
    // copy_to_user of what the caller's argsz covers: the whole reply, or the fixed part of it.
    const copy = fits ? need : Math.min(argsz, vfio_ts_irq_info.size);
    userBuf(arg, copy).set(reply.subarray(0, copy));
    return 0;
  }

  /** SET_IRQS on this index, after `vfio_set_irqs_validate_and_prepare` (count 0 or 1). */
  set({ hdr, data }: IrqSetRequest): number {
    const action = hdr.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    const type = hdr.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
    if (action === VFIO_IRQ_SET_ACTION_TRIGGER && type === VFIO_IRQ_SET_DATA_NONE && hdr.count === 0) {
      this.disable();
      return 0;
    }
    if (hdr.count !== 1) fail('EINVAL');
    if (action === VFIO_IRQ_SET_ACTION_TRIGGER && type === VFIO_IRQ_SET_DATA_EVENTFD) {
      const fd = dataView(data).getInt32(0, true);
      if (fd < 0) this.disable();
      else this.#enable(this.hooks.eventfdOf(fd));
      return 0;
    }
    if (type !== VFIO_IRQ_SET_DATA_NONE || this.#trigger === null) fail('EINVAL');
    if (action === VFIO_IRQ_SET_ACTION_MASK) this.#masked = true;
    else if (action === VFIO_IRQ_SET_ACTION_UNMASK) this.#ack();
    else fail('EINVAL');
    return 0;
  }

  /**
   * The device changed the sparse layout of the regions in `bitmap` (bit i =
   * region i): signal now, or after the outstanding ack. Nothing is sent
   * while the IRQ is disabled: a user that enables it later reads the
   * layouts then.
   */
  raise(bitmap: bigint): void {
    if (bitmap <= 0n || bitmap >= 1n << BigInt(VFIO_TS_REMAP_MAX_REGION + 1)) throw new RangeError(`remap bitmap 0x${bitmap.toString(16)} names no region 0-62`);
    if (this.#trigger === null) return;
    this.#pending |= bitmap;
    this.#fire();
  }

  /** Disabled: no eventfd, nothing pending (the device's close tears it down too). */
  disable(): void {
    this.#trigger = null;
    this.#masked = false;
    this.#pending = 0n;
  }

  #enable(trigger: SimEventFd): void {
    this.#trigger = trigger;
    this.#masked = false;
    this.#pending = 0n;
  }

  #ack(): void {
    this.#masked = false;
    this.acks++;
    this.hooks.acked();
    this.#fire();
  }

  #fire(): void {
    const trigger = this.#trigger;
    if (trigger === null || this.#masked || this.#pending === 0n) return;
    trigger.signal(this.#pending);
    this.#pending = 0n;
    this.#masked = true;
    this.signals++;
  }
}
