/**
 * The remap IRQ of vfio-ts's opt-in extension (`uapi/extensions.ts`): a
 * device IRQ that asks the user to re-read the sparse mmap capabilities of
 * some regions and re-map them, the "re-evaluate sparse mmap" IRQ Alex
 * Williamson suggested in place of Yan Zhao's info-region eventfd (reference §7).
 *
 * The protocol, as this library drives it:
 * - **Discovery**: an IRQ index past the bus's standard ones (5 on PCI)
 *   whose extended GET_IRQ_INFO reply has the type capability
 *   REMAP / REMAP_SPARSE_MMAP.
 * - **Handshake**: enabling it (SET_IRQS ACTION_TRIGGER with an eventfd) is
 *   how the device learns the user understands it. A device that depends on
 *   it refuses the transition into a saving state while it is not enabled,
 *   so a user that does not know the extension fails its migration cleanly
 *   instead of leaving mappings the device wanted gone. The migration
 *   drivers enable it before any saving transition; enable it at device open
 *   to follow re-layouts at any time.
 * - **Signal**: the eventfd count is a bitmap of region indexes (bit i =
 *   region i, not a BAR number). The index is automasked: the device sends
 *   nothing more until the ack, and merges what changes meanwhile into the
 *   next signal, so the count is always one bitmap (eventfd counts add up:
 *   two bitmaps in flight would corrupt each other).
 * - **Ack**: SET_IRQS DATA_NONE | ACTION_UNMASK on the index, once every
 *   named region was re-read and re-mapped. Unlike the RFC's write to the
 *   same eventfd (one fd serving as eventfd and irqfd, where either side can
 *   consume the other's count, and the kernel needs a virqfd to notice), the
 *   ioctl is synchronous and unambiguous: when it returns the device knows
 *   the user's mappings follow the new layout, and it can answer an error.
 */
import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import { UapiFormatError, VfioError } from '../errors.js';
import type { VfioDevice } from './device.js';
import { ioctl } from './ioctl.js';
import type { Irq } from './irq.js';
import type { Region } from './region.js';
import { queryWithCaps } from './uapi/caps.js';
import { VFIO_PCI_NUM_IRQS } from './uapi/constants.js';
import { decodeIrqInfoExt, decodeRemapBitmap, isRemapIrq, vfio_ts_irq_info, type IrqInfoExt } from './uapi/extensions.js';
import { VFIO_DEVICE_GET_IRQ_INFO } from './uapi/ioctls.js';
import { dataView } from './uapi/layout.js';

/** Events of a {@link RemapIrq}. */
export type RemapIrqEvents = {
  /**
   * A signal was handled: the regions it named were re-read and re-mapped (one
   * that could not be re-read was unmapped whole and reported as a `warning`),
   * then the device was acked (a failed ack is a `warning` too). Not emitted
   * when the IRQ was closed while handling it: nothing is acked then.
   */
  remap: (regions: readonly number[]) => void;
  /**
   * Something went wrong while handling a signal: a region that could not be
   * re-read (it was unmapped, so every access goes through the kernel), a
   * bitmap naming regions the device does not have, a failed ack.
   */
  warning: (error: VfioError) => void;
  /** The IRQ was disabled or the device closed: no more signals. */
  close: () => void;
};

// typed-emitter ships CommonJS typings: under NodeNext its interface is the module's `default`.
const Emitter = EventEmitter as new () => TypedEmitter.default<RemapIrqEvents>;

/** The live remap IRQ of each device, so enabling twice gives the same object. */
const live = new WeakMap<VfioDevice, RemapIrq>();

/**
 * `VFIO_DEVICE_GET_IRQ_INFO` of `index` with the extended reply and its
 * capability chain (the argsz dance included).
 * @throws UapiFormatError for a malformed chain
 */
export function queryIrqInfoExt(device: VfioDevice, index: number): IrqInfoExt {
  const buf = queryWithCaps(
    vfio_ts_irq_info.size,
    (b) => dataView(b).setUint32(8, index, true),
    (b) => ioctl(device, VFIO_DEVICE_GET_IRQ_INFO, b),
    vfio_ts_irq_info.name,
  );
  return decodeIrqInfoExt(buf);
}

/** A device's remap IRQ, enabled, re-mapping regions as the device asks. */
export class RemapIrq extends Emitter implements Disposable {
  readonly #device: VfioDevice;
  readonly #irq: Irq;
  readonly #onSignal = (_vector: number, count: bigint): void => this.#handle(count);
  readonly #onClose = (): void => this.#ended();
  #closed = false;

  private constructor(device: VfioDevice, irq: Irq) {
    super();
    this.#device = device;
    this.#irq = irq;
  }

  /**
   * The index of `device`'s remap IRQ, or undefined when it has none. Only
   * the indexes past the standard ones are asked (none on a 6.12 vfio-pci
   * device, whose `num_irqs` is exactly the standard five).
   */
  static find(device: VfioDevice): number | undefined {
    const first = device.isPci ? VFIO_PCI_NUM_IRQS : 0;
    for (let index = first; index < device.info.numIrqs; index++) {
      if (isRemapIrq(queryIrqInfoExt(device, index))) return index;
    }
    return undefined;
  }

  /**
   * Enables `device`'s remap IRQ (the handshake) and starts following its
   * signals; returns the one already enabled if there is one, and undefined
   * when the device has no remap IRQ.
   * @throws VfioSystemError when the query or the SET_IRQS fails
   */
  static enable(device: VfioDevice): RemapIrq | undefined {
    const have = live.get(device);
    if (have !== undefined) return have;
    const index = RemapIrq.find(device);
    if (index === undefined) return undefined;
    const irq = device.irq(index);
    irq.enable(1);
    // Signals are delivered from the event loop, never during enable(): listening afterwards loses none.
    const remap = new RemapIrq(device, irq);
    irq.on('signal', remap.#onSignal);
    irq.on('close', remap.#onClose);
    live.set(device, remap);
    return remap;
  }

  /** The IRQ index. */
  get index(): number {
    return this.#irq.index;
  }

  /** False once disabled or closed. */
  get enabled(): boolean {
    return !this.#closed;
  }

  /**
   * Disables the IRQ (SET_IRQS DATA_NONE | ACTION_TRIGGER, count 0); a device
   * that needs it may then refuse saving transitions again. Idempotent, and
   * implied by closing the device.
   */
  close(): void {
    if (this.#closed) return;
    this.#irq.disable();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * One signal: re-read and re-map every region it names, then ack. A region
   * that cannot be re-read is unmapped whole, so the ack never claims a
   * mapping the device may have wanted gone.
   */
  #handle(count: bigint): void {
    const { regions, stray } = decodeRemapBitmap(count, this.#device.info.numRegions);
    if (stray !== 0n) {
      this.#warn(new UapiFormatError(`remap bitmap 0x${count.toString(16)} names regions the device does not have (0x${stray.toString(16)})`, 'remap irq count'));
    }
    for (const index of regions) {
      // A listener closed us (or the device): the rest is not re-mapped, so no ack may vouch for it.
      if (this.#closed) return;
      this.#remap(index);
    }
    if (this.#closed) return;
    try {
      this.#irq.unmask(0);
    } catch (e) {
      this.#warn(e);
    }
    this.emit('remap', regions);
  }

  #remap(index: number): void {
    let region: Region | undefined;
    try {
      region = this.#device.region(index);
      region.refresh();
    } catch (e) {
      // A munmap failing too must not escape into the event loop (no ack would follow): it is reported as well.
      let unmapError: unknown;
      try {
        region?.unmap();
      } catch (u) {
        unmapError = u;
      }
      this.#warn(e);
      if (unmapError !== undefined) this.#warn(unmapError);
    }
  }

  #warn(e: unknown): void {
    if (!(e instanceof VfioError)) throw e;
    this.emit('warning', e);
  }

  #ended(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#irq.off('signal', this.#onSignal);
    this.#irq.off('close', this.#onClose);
    live.delete(this.#device);
    this.emit('close');
    this.removeAllListeners();
  }
}
