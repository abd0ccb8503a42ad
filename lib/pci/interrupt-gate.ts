/**
 * The gate a VMM holds a device's interrupts behind until its interrupt
 * controller is restored (the 2020 ordering thread, reference §5.8: on ARM64
 * enabling MSIs before the vGIC/ITS is restored fails in the kernel; QEMU 6.0
 * fixed it by loading the VFIO config, which is what enables MSI/MSI-X, after
 * the interrupt controller). A `VfioPciDevice` opened with a closed gate wires
 * no interrupt at all (no `VFIO_DEVICE_SET_IRQS` with an eventfd, not even
 * INTx) until the gate opens; a config loaded meanwhile only records the
 * guest's MSI, MSI-X and INTx state. One gate usually serves every device of
 * a VM, since the VM has one interrupt controller.
 *
 * The gate only opens, once: there is no way back to "not restored".
 */
import { attempt, throwCollected } from '../attempt.js';

/** Called when the gate opens; a throw is collected and rethrown by {@link InterruptGate.open}. */
export type GateListener = () => void;

/** A one-way gate: closed until the VMM's interrupt controller is restored, then open for good. */
export class InterruptGate {
  #open = false;
  readonly #listeners = new Set<GateListener>();
  readonly #opened: Promise<void>;
  #resolve: () => void = () => undefined;

  /** @param open start open (for a VM whose interrupt controller is already running) */
  constructor(open = false) {
    this.#opened = new Promise<void>((resolve) => {
      this.#resolve = resolve;
    });
    if (open) this.open();
  }

  /** True once {@link open} was called. */
  get isOpen(): boolean {
    return this.#open;
  }

  /** Settles when the gate opens (never rejects). */
  get opened(): Promise<void> {
    return this.#opened;
  }

  /**
   * The interrupt controller is restored: every device behind the gate wires
   * its interrupts now, in the order the devices were opened. Idempotent.
   * Each device is attempted even when one fails.
   * @throws the one error a device's wiring raised, or an AggregateError of several
   */
  open(): void {
    if (this.#open) return;
    this.#open = true;
    this.#resolve();
    const listeners = [...this.#listeners];
    this.#listeners.clear();
    const errors: unknown[] = [];
    for (const listener of listeners) attempt(errors, listener);
    throwCollected(errors, 'wiring interrupts at the gate failed');
  }

  /**
   * Runs `listener` when the gate opens (not at all if it is open already).
   * @returns a function that cancels it
   */
  onOpen(listener: GateListener): () => void {
    if (this.#open) return () => undefined;
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
