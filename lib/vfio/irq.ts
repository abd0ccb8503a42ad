/**
 * One IRQ index of a device (INTx, MSI, MSI-X, ...): one eventfd per
 * vector wired with VFIO_DEVICE_SET_IRQS, trigger/mask/unmask, disable, and
 * signals delivered as typed `'signal'` events or through an async iterator.
 */
import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import { VfioArgumentError, VfioClosedError } from '../errors.js';
import { EventFd } from './eventfd.js';
import { ioctl, type IoctlTarget } from './ioctl.js';
import {
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
} from './uapi/constants.js';
import type { IrqInfo } from './uapi/info.js';
import { VFIO_DEVICE_SET_IRQS } from './uapi/ioctls.js';
import { irqSetEventfd, irqSetNone } from './uapi/irq-set.js';

/** One delivery: the vector and how many times it fired since the last delivery. */
export interface IrqSignal {
  readonly vector: number;
  readonly count: bigint;
}

/** Events of an {@link Irq}. */
export type IrqEvents = {
  /** A vector fired `count` times (the eventfd counter, drained). */
  signal: (vector: number, count: bigint) => void;
  /** The IRQ was disabled or closed: no more signals until it is enabled again. */
  close: () => void;
};

// typed-emitter ships CommonJS typings: under NodeNext its interface is the module's `default`.
const Emitter = EventEmitter as new () => TypedEmitter.default<IrqEvents>;

export class Irq extends Emitter implements Disposable {
  #info: IrqInfo;
  #fds: (EventFd | null)[] = [];
  #closed = false;

  readonly #guard: (index: number) => void;

  /**
   * @param guard runs before each wiring of eventfds and throws to refuse it
   *   (the device's {@link VfioDevice.setIrqGuard})
   */
  constructor(
    private readonly device: IoctlTarget,
    info: IrqInfo,
    guard: (index: number) => void = () => undefined,
  ) {
    super();
    this.#info = info;
    this.#guard = guard;
  }

  get info(): IrqInfo {
    return this.#info;
  }
  get index(): number {
    return this.#info.index;
  }
  /** Number of vectors the index has. */
  get count(): number {
    return this.#info.count;
  }
  get supportsEventfd(): boolean {
    return (this.#info.flags & VFIO_IRQ_INFO_EVENTFD) !== 0;
  }
  get maskable(): boolean {
    return (this.#info.flags & VFIO_IRQ_INFO_MASKABLE) !== 0;
  }
  /** The kernel masks the line after each signal (INTx): unmask to get the next one. */
  get automasked(): boolean {
    return (this.#info.flags & VFIO_IRQ_INFO_AUTOMASKED) !== 0;
  }
  /** The vector count cannot change while enabled (disable first). */
  get noresize(): boolean {
    return (this.#info.flags & VFIO_IRQ_INFO_NORESIZE) !== 0;
  }
  /** Vectors currently wired to eventfds. */
  get enabledVectors(): number[] {
    return this.#fds.flatMap((f, i) => (f ? [i] : []));
  }

  /**
   * Wires vectors `[start, start + count)` to new eventfds (ACTION_TRIGGER
   * with DATA_EVENTFD) and starts delivering their signals. Returns 0, or
   * the positive count of vectors vfio-pci could get when the host had
   * fewer MSI/MSI-X vectors than asked (then nothing was wired).
   */
  enable(count = this.count, start = 0): number {
    return this.assign(start, new Array<boolean>(count).fill(true));
  }

  /**
   * One ACTION_TRIGGER | DATA_EVENTFD call for vectors `[start, start +
   * use.length)`: vector `start + i` gets a new eventfd when `use[i]`, and
   * fd -1 otherwise, which de-assigns it (vfio-pci keeps MSI/MSI-X enabled
   * and the vector allocated). An empty-handed call such as `assign(0,
   * [false])` is how QEMU enables MSI-X with no vector in use. Vectors
   * outside the range keep their wiring. Returns the ioctl's result: 0, or
   * the positive vector count vfio-pci answers when enabling MSI/MSI-X got
   * fewer host vectors than asked, in which case nothing is wired.
   * @throws what the device's IRQ guard throws (InterruptGateClosedError behind a closed gate), before any system call
   */
  assign(start: number, use: readonly boolean[]): number {
    this.#open();
    this.#range(start, use.length);
    this.#guard(this.index);
    const fds: (EventFd | null)[] = [];
    let result: number;
    try {
      for (const u of use) fds.push(u ? new EventFd(this.device.sys) : null);
      result = ioctl(this.device, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, this.index, start, fds.map((f) => f?.fd ?? -1)));
    } catch (e) {
      for (const f of fds) f?.close();
      throw e;
    }
    if (result > 0) {
      for (const f of fds) f?.close();
      return result;
    }
    fds.forEach((f, i) => {
      const vector = start + i;
      this.#fds[vector]?.close();
      this.#fds[vector] = f;
      f?.watch((n) => this.emit('signal', vector, n));
    });
    return 0;
  }

  /** Disables the whole index (DATA_NONE | ACTION_TRIGGER, count 0) and releases its eventfds. */
  disable(): void {
    this.#open();
    ioctl(this.device, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, this.index, 0, 0));
    this.#release();
    this.emit('close');
  }

  /** Asks the kernel to signal `vector` (a loopback test of the wiring). */
  trigger(vector = 0): void {
    this.#open();
    this.#range(vector, 1);
    ioctl(this.device, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, this.index, vector, 1));
  }

  /** Masks `vector` (INTx: the line). */
  mask(vector = 0): void {
    this.#open();
    this.#range(vector, 1);
    ioctl(this.device, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_MASK, this.index, vector, 1));
  }

  /** Unmasks `vector` (INTx: re-arms an automasked line). */
  unmask(vector = 0): void {
    this.#open();
    this.#range(vector, 1);
    ioctl(this.device, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_UNMASK, this.index, vector, 1));
  }

  /**
   * Signals as an async iterator. Signals of one vector that arrive while the
   * consumer is busy are merged (their counts add up), so a slow consumer
   * holds at most one pending entry per vector. Ends when the IRQ is disabled
   * or closed, or when the loop exits.
   */
  signals(): AsyncIterableIterator<IrqSignal> {
    const pending = new Map<number, bigint>();
    let wake: ((r: IteratorResult<IrqSignal>) => void) | null = null;
    let done = this.#closed;
    const onSignal = (vector: number, count: bigint): void => {
      if (wake) {
        const w = wake;
        wake = null;
        w({ value: { vector, count }, done: false });
      } else pending.set(vector, (pending.get(vector) ?? 0n) + count);
    };
    const finish = (): void => {
      done = true;
      this.off('signal', onSignal);
      this.off('close', finish);
      wake?.({ value: undefined, done: true });
      wake = null;
    };
    this.on('signal', onSignal);
    this.on('close', finish);
    const it: AsyncIterableIterator<IrqSignal> = {
      next: () => {
        const first = pending.entries().next();
        if (!first.done) {
          const [vector, count] = first.value;
          pending.delete(vector);
          return Promise.resolve({ value: { vector, count }, done: false });
        }
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (wake = resolve));
      },
      return: () => {
        finish();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /**
   * Stops delivery and closes the eventfds, without an ioctl (closing the
   * device makes the kernel disable its IRQs). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#release();
    this.emit('close');
    this.removeAllListeners();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #release(): void {
    const fds = this.#fds;
    this.#fds = [];
    for (const f of fds) f?.close();
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`${this.device.label} irq ${this.index}`);
  }

  #range(start: number, count: number): void {
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0) {
      throw new VfioArgumentError(`irq ${this.index}`, `bad vector range [${start}, +${count})`);
    }
  }
}
