/**
 * A VFIO device fd: device info, regions, IRQs, reset and device features.
 * Opened through its group ({@link VfioGroup.openDevice},
 * {@link VfioContainer.openDevice}) or through its cdev bound to an iommufd
 * ({@link IommufdDevice.device}): past the open, the device fd answers the
 * same ioctls either way, so everything above (migration, PCI, DMA logging)
 * takes either.
 */
import { attempt, throwCollected } from '../attempt.js';
import { VfioArgumentError, VfioClosedError, VfioSystemError } from '../errors.js';
import type { Sys } from '../sys/sys.js';
import type { VfioGroup } from './group.js';
import { ioctl, type IoctlTarget } from './ioctl.js';
import type { IommufdDevice } from './iommufd-device.js';
import { Irq } from './irq.js';
import { Region, queryRegionInfo } from './region.js';
import { queryWithCaps } from './uapi/caps.js';
import {
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
} from './uapi/constants.js';
import { featureBuffer, featurePayload } from './uapi/feature.js';
import { decodeDeviceInfo, decodeIrqInfo, type DeviceInfo, type IrqInfo } from './uapi/info.js';
import { VFIO_DEVICE_FEATURE, VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_RESET } from './uapi/ioctls.js';
import { dataView, encode } from './uapi/layout.js';
import { vfio_device_info, vfio_irq_info } from './uapi/structs.js';

/**
 * One open VFIO device. `G` says what opened it: `VfioGroup` for a device
 * opened through its group, `null` for one opened through its cdev (which
 * belongs to an {@link IommufdDevice} binding). Code that takes any device
 * takes the default, `VfioDevice`.
 */
export class VfioDevice<G extends VfioGroup | null = VfioGroup | null> implements IoctlTarget, Disposable {
  readonly kind = 'device';
  /** Device info, read once at open (mdev drivers such as mtty need GET_INFO before any IRQ ioctl). */
  readonly info: DeviceInfo;
  readonly #regions = new Map<number, Region>();
  readonly #irqs = new Map<number, Irq>();
  #closed = false;
  #irqGuard: ((index: number) => void) | undefined;
  /** A closure, not the callback itself: a member that takes a `VfioDevice<G>` would make `G` invariant. */
  readonly #onClose: () => void;

  /**
   * Takes ownership of `fd` (closed again if GET_INFO fails).
   * @internal Use {@link VfioGroup.openDevice} or {@link IommufdDevice.device}.
   */
  constructor(
    readonly sys: Sys,
    /** The group the device was opened through; null when it was opened through its cdev. */
    readonly group: G,
    /** The device name: PCI address or mdev UUID. */
    readonly name: string,
    readonly fd: number,
    /** Told once the device is closed (its opener forgets it). */
    onClose: (d: VfioDevice<G>) => void,
  ) {
    this.#onClose = () => onClose(this);
    try {
      const buf = queryWithCaps(vfio_device_info.size, () => undefined, (b) => ioctl(this, VFIO_DEVICE_GET_INFO, b), vfio_device_info.name);
      this.info = decodeDeviceInfo(buf);
    } catch (e) {
      this.sys.close(fd);
      throw e;
    }
  }

  get label(): string {
    return this.name;
  }
  get closed(): boolean {
    return this.#closed;
  }
  /** A vfio-pci device (or an mdev with the vfio-pci API). */
  get isPci(): boolean {
    return (this.info.flags & VFIO_DEVICE_FLAGS_PCI) !== 0;
  }
  /** The device advertises VFIO_DEVICE_RESET (mtty does not, yet implements it). */
  get resetAdvertised(): boolean {
    return (this.info.flags & VFIO_DEVICE_FLAGS_RESET) !== 0;
  }

  /** The region at `index`, its info read on first use. */
  region(index: number): Region {
    this.#open();
    if (!Number.isInteger(index) || index < 0 || index >= this.info.numRegions) {
      throw new VfioArgumentError('region', `index ${index} is outside the ${this.info.numRegions} regions of ${this.name}`);
    }
    let r = this.#regions.get(index);
    if (r === undefined) {
      r = new Region(this, queryRegionInfo(this, index));
      this.#regions.set(index, r);
    }
    return r;
  }

  /**
   * The regions the device implements, in index order. An index the kernel
   * answers with EINVAL is left out: vfio-pci counts the VGA region in
   * `num_regions` but refuses its info on a device without VGA.
   */
  regions(): Region[] {
    const out: Region[] = [];
    for (let i = 0; i < this.info.numRegions; i++) {
      try {
        out.push(this.region(i));
      } catch (e) {
        if (!(e instanceof VfioSystemError && e.code === 'EINVAL')) throw e;
      }
    }
    return out;
  }

  /** `VFIO_DEVICE_GET_IRQ_INFO` for `index` (queried anew: counts can change). */
  irqInfo(index: number): IrqInfo {
    this.#open();
    const buf = encode(vfio_irq_info, { argsz: vfio_irq_info.size, index });
    ioctl(this, VFIO_DEVICE_GET_IRQ_INFO, buf);
    return decodeIrqInfo(buf);
  }

  /**
   * Installs the check every {@link Irq.assign} (and so {@link Irq.enable})
   * of this device runs before it wires eventfds; it throws to refuse. One
   * owner at a time: `VfioPciDevice` holds interrupts behind its
   * `InterruptGate` with it, so no path through the library wires one early.
   * `undefined` removes it.
   * @throws VfioArgumentError when another guard is installed
   */
  setIrqGuard(guard: ((index: number) => void) | undefined): void {
    if (guard !== undefined && this.#irqGuard !== undefined) {
      throw new VfioArgumentError('setIrqGuard', `${this.name} already has an IRQ guard`);
    }
    this.#irqGuard = guard;
  }

  /** The IRQ index `index`, its info read on first use. */
  irq(index: number): Irq {
    this.#open();
    let irq = this.#irqs.get(index);
    if (irq === undefined) {
      irq = new Irq(this, this.irqInfo(index), (i) => this.#irqGuard?.(i));
      this.#irqs.set(index, irq);
    }
    return irq;
  }

  /** `VFIO_DEVICE_RESET`. */
  reset(): void {
    this.#open();
    ioctl(this, VFIO_DEVICE_RESET);
  }

  /**
   * Probes a device feature: true when the kernel accepts `PROBE | ops`.
   * ENOTTY (no such feature) and EINVAL (op not supported) mean false.
   */
  featureProbe(feature: number, ops = 0): boolean {
    this.#open();
    try {
      ioctl(this, VFIO_DEVICE_FEATURE, featureBuffer(VFIO_DEVICE_FEATURE_PROBE | ops | feature, 0));
      return true;
    } catch (e) {
      if (e instanceof VfioSystemError && (e.code === 'ENOTTY' || e.code === 'EINVAL')) return false;
      throw e;
    }
  }

  /** `VFIO_DEVICE_FEATURE` GET of `feature`; returns its payload. */
  featureGet(feature: number, payloadSize: number): Uint8Array {
    this.#open();
    const buf = featureBuffer(VFIO_DEVICE_FEATURE_GET | feature, payloadSize);
    ioctl(this, VFIO_DEVICE_FEATURE, buf);
    return featurePayload(buf).subarray(0, payloadSize);
  }

  /** `VFIO_DEVICE_FEATURE` SET of `feature` with `payload`; returns the payload as the kernel left it. */
  featureSet(feature: number, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    this.#open();
    const buf = featureBuffer(VFIO_DEVICE_FEATURE_SET | feature, payload.byteLength);
    featurePayload(buf).set(payload);
    ioctl(this, VFIO_DEVICE_FEATURE, buf);
    return featurePayload(buf).subarray(0, payload.byteLength);
  }

  /** The device's `VFIO_MIGRATION_*` flags, or 0 when it cannot migrate (ENOTTY). */
  migrationFlags(): number {
    try {
      return Number(dataView(this.featureGet(VFIO_DEVICE_FEATURE_MIGRATION, 8)).getBigUint64(0, true));
    } catch (e) {
      if (e instanceof VfioSystemError && e.code === 'ENOTTY') return 0;
      throw e;
    }
  }

  /**
   * Releases the device: stops IRQ delivery, unmaps regions, closes the
   * device fd (the kernel then disables the device's IRQs), then the
   * eventfds. Idempotent; every step runs even if one fails.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const errors: unknown[] = [];
    for (const r of this.#regions.values()) attempt(errors, () => r.close());
    attempt(errors, () => this.sys.close(this.fd));
    for (const i of this.#irqs.values()) attempt(errors, () => i.close());
    this.#regions.clear();
    this.#irqs.clear();
    this.#onClose();
    throwCollected(errors, `closing ${this.name} failed`);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`device ${this.name}`);
  }
}
