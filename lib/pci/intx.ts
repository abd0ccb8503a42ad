/**
 * The host side of INTx, as QEMU's hw/vfio/pci.c drives it: one eventfd
 * wired to the INTx trigger. vfio-pci masks the line each time it signals
 * (AUTOMASKED), so the VMM asserts its guest line on a signal and, when the
 * guest has serviced it (end of interrupt), deasserts it and unmasks
 * (`vfio_intx_eoi`). The unmask is an ioctl, or with `resample` a write to
 * an unmask eventfd the kernel listens to (as KVM's resampling irqfd does),
 * which also re-signals at once if the device still asserts the line.
 */
import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import { VfioArgumentError, VfioClosedError } from '../errors.js';
import type { VfioDevice } from '../vfio/device.js';
import { EventFd } from '../vfio/eventfd.js';
import { ioctl } from '../vfio/ioctl.js';
import type { Irq } from '../vfio/irq.js';
import { VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_INTX_IRQ_INDEX } from '../vfio/uapi/constants.js';
import { VFIO_DEVICE_SET_IRQS } from '../vfio/uapi/ioctls.js';
import { irqSetEventfd } from '../vfio/uapi/irq-set.js';

/** Events of an {@link IntxLine}: the guest's INTx level. */
export type IntxEvents = {
  /** The device interrupted: assert the guest's line. */
  assert: () => void;
  /** The interrupt was serviced (or INTx went away): deassert it. */
  deassert: () => void;
};

// typed-emitter ships CommonJS typings: under NodeNext its interface is the module's `default`.
const Emitter = EventEmitter as new () => TypedEmitter.default<IntxEvents>;

/** Options of {@link IntxLine}. */
export interface IntxOptions {
  /** Unmask through an eventfd registered with ACTION_UNMASK instead of an ioctl (default false). */
  readonly resample?: boolean;
}

export class IntxLine extends Emitter implements Disposable {
  readonly #device: VfioDevice;
  readonly #resampleWanted: boolean;
  #resample: EventFd | null = null;
  #irq: Irq | null = null;
  #pending = false;
  #closed = false;

  constructor(device: VfioDevice, options: IntxOptions = {}) {
    super();
    this.#device = device;
    this.#resampleWanted = options.resample === true;
  }

  /** The trigger is wired. */
  get enabled(): boolean {
    return this.#irq !== null;
  }

  /** The guest line is asserted and waits for {@link IntxLine.eoi}. */
  get pending(): boolean {
    return this.#pending;
  }

  /**
   * `vfio_intx_enable`: wires the trigger eventfd (and the unmask eventfd with `resample`).
   * @throws InterruptGateClosedError from the device's IRQ guard (a `VfioPciDevice` whose interrupts are held); nothing is wired then
   */
  enable(): void {
    this.#open();
    if (this.#irq !== null) return;
    const irq = this.#device.irq(VFIO_PCI_INTX_IRQ_INDEX);
    irq.enable(1, 0);
    this.#irq = irq;
    irq.on('signal', this.#onSignal);
    if (this.#resampleWanted) {
      const fd = new EventFd(this.#device.sys);
      try {
        ioctl(this.#device, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_INTX_IRQ_INDEX, 0, [fd.fd]));
      } catch (e) {
        fd.close();
        this.disable();
        throw e;
      }
      this.#resample = fd;
    }
  }

  /**
   * `vfio_intx_eoi`: the guest serviced the interrupt. Deasserts the line and
   * unmasks it in the kernel; if the device still asserts INTx, the kernel
   * signals again at once. Does nothing when no interrupt is pending.
   */
  eoi(): void {
    this.#open();
    if (!this.#pending) return;
    this.#pending = false;
    this.emit('deassert');
    if (this.#resample !== null) this.#resample.signal();
    else this.unmask();
  }

  /** Masks the line in the kernel (ACTION_MASK). */
  mask(): void {
    this.#live().mask(0);
  }

  /** Unmasks the line in the kernel (ACTION_UNMASK). */
  unmask(): void {
    this.#live().unmask(0);
  }

  /** `vfio_intx_disable`: unwires INTx (SET_IRQS with count 0) and deasserts a pending interrupt. */
  disable(): void {
    this.#open();
    const irq = this.#irq;
    if (irq === null) return;
    this.#irq = null;
    irq.off('signal', this.#onSignal);
    irq.disable();
    this.#resample?.close();
    this.#resample = null;
    this.#deassert();
  }

  /** Stops listening and closes the unmask eventfd, without an ioctl (closing the device disables INTx). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#irq?.off('signal', this.#onSignal);
    this.#irq = null;
    this.#resample?.close();
    this.#resample = null;
    this.#deassert();
    this.removeAllListeners();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  readonly #onSignal = (): void => {
    this.#pending = true;
    this.emit('assert');
  };

  #deassert(): void {
    if (!this.#pending) return;
    this.#pending = false;
    this.emit('deassert');
  }

  #live(): Irq {
    this.#open();
    if (this.#irq === null) throw new VfioArgumentError('INTx', `INTx of ${this.#device.name} is not enabled`);
    return this.#irq;
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`${this.#device.name} INTx`);
  }
}
