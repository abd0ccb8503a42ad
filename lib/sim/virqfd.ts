/**
 * `struct virqfd` (drivers/vfio/virqfd.c, Linux 6.12): an eventfd the
 * kernel listens to on the user's behalf. Each signal of the eventfd is
 * consumed at once and runs `handler`; when the handler returns a positive
 * value, `thread` runs too. vfio-pci uses it for the INTx unmask (resample)
 * eventfd: writing it unmasks the line, and re-signals the trigger if the
 * line is still asserted.
 *
 * Unlike the kernel, the simulator does not drop the virqfd when the user
 * closes the eventfd (the kernel sees EPOLLHUP); it goes away with
 * SET_IRQS or when the IRQ is torn down.
 */
import type { SimEventFd } from './eventfd.js';

export class SimVirqfd {
  readonly #off: () => void;
  #active = true;

  /** `vfio_virqfd_enable`: a signal already pending runs the handler once (without being consumed). */
  constructor(
    private readonly eventfd: SimEventFd,
    private readonly handler: () => number,
    private readonly thread: () => void,
  ) {
    this.#off = eventfd.onChange(() => this.#wakeup());
    if (eventfd.readable()) this.#run();
  }

  /** `vfio_virqfd_disable`; idempotent. */
  disable(): void {
    if (!this.#active) return;
    this.#active = false;
    this.#off();
  }

  /** `virqfd_wakeup` on EPOLLIN: `eventfd_ctx_do_read`, then the handler. */
  #wakeup(): void {
    if (!this.#active || !this.eventfd.readable()) return;
    this.eventfd.read(new Uint8Array(8));
    this.#run();
  }

  #run(): void {
    if (this.handler() > 0) this.thread();
  }
}
