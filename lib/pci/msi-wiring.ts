/**
 * The host side of MSI and MSI-X: which vectors are wired to an eventfd
 * through VFIO_DEVICE_SET_IRQS, as QEMU's hw/vfio/pci.c does it.
 *
 * - MSI: every enabled vector is wired in one call (`vfio_msi_enable`); when
 *   vfio-pci answers that only N vectors were available, the enable is
 *   retried with N, as QEMU does.
 * - MSI-X: enabling wires the vectors the guest has unmasked, or none
 *   (vector 0 with fd -1) so the device is in MSI-X mode like the guest's
 *   view (`vfio_msix_enable`). After that, each vector the guest unmasks is
 *   wired on its own (`vfio_msix_vector_do_use`). A kernel that cannot grow
 *   MSI-X while enabled (NORESIZE) gets the whole index disabled and
 *   re-enabled with one more vector instead, the unused ones as -1; one
 *   that can (dynamic allocation) gets MSI-X enabled with no vector first,
 *   so the host allocates only the vectors in use.
 * - Masking a vector does not unwire it (QEMU keeps the eventfd; signals of
 *   a masked vector end up pending in the guest's view).
 * - A failed SET_IRQS leaves nothing claimed that the kernel does not have
 *   (the owner can then wire the index whole anew): one call changes nothing
 *   when it fails, and an enable that fails halfway is undone.
 */
import type { VfioDevice } from '../vfio/device.js';
import type { Irq } from '../vfio/irq.js';
import { VFIO_IRQ_INFO_NORESIZE, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX } from '../vfio/uapi/constants.js';

/** Which MSI flavour is wired. */
export type MsiKind = 'msi' | 'msix';

export class MsiWiring {
  #kind: MsiKind | null = null;
  /** QEMU's `nr_vectors`: one past the highest vector wired (or allocated, on NORESIZE kernels). */
  #nrVectors = 0;
  /** Vectors in use (QEMU's `msi_vectors[i].use`). */
  readonly #used = new Set<number>();
  #noresize: boolean | null = null;
  readonly #listening = new Set<number>();

  constructor(
    private readonly device: VfioDevice,
    /** Receives each host signal: the flavour and the vector. */
    private readonly onSignal: (kind: MsiKind, vector: number) => void,
  ) {}

  /** What is wired now, if anything. */
  get kind(): MsiKind | null {
    return this.#kind;
  }

  /** Vectors wired to an eventfd, in order. */
  get vectors(): number[] {
    return [...this.#used].sort((a, b) => a - b);
  }

  /** MSI-X cannot grow while enabled (the kernel's NORESIZE flag), read once. */
  get msixNoresize(): boolean {
    this.#noresize ??= (this.device.irqInfo(VFIO_PCI_MSIX_IRQ_INDEX).flags & VFIO_IRQ_INFO_NORESIZE) !== 0;
    return this.#noresize;
  }

  /**
   * `vfio_msi_enable`: wires MSI vectors 0 to `nvec - 1`. Returns how many
   * were wired: `nvec`, or fewer when the host had fewer, or 0 when it had
   * none.
   */
  enableMsi(nvec: number): number {
    const irq = this.#irq(VFIO_PCI_MSI_IRQ_INDEX);
    let n = nvec;
    for (;;) {
      const offered = irq.enable(n, 0);
      if (offered === 0) break;
      n = Math.min(offered, n - 1);
      if (n <= 0) return 0;
    }
    this.#kind = 'msi';
    this.#nrVectors = n;
    for (let v = 0; v < n; v++) this.#used.add(v);
    return n;
  }

  /**
   * `vfio_msix_enable`: MSI-X on, with `vectors` (those the guest has unmasked) wired.
   * @throws VfioSystemError when a SET_IRQS fails; MSI-X is then off (disabled again, best effort) and nothing is claimed
   */
  enableMsix(vectors: readonly number[]): void {
    const irq = this.#irq(VFIO_PCI_MSIX_IRQ_INDEX);
    const nrVectors = vectors.length === 0 ? 0 : Math.max(...vectors) + 1;
    const used = new Set(vectors);
    const enableEmpty = nrVectors === 0 || !this.msixNoresize;
    if (enableEmpty) irq.assign(0, [false]);
    if (nrVectors > 0) {
      try {
        this.#enableVectors(irq, nrVectors, used);
      } catch (e) {
        // MSI-X went on with no vector: take it off again so the index is as before the call.
        if (enableEmpty) disableQuietly(irq);
        throw e;
      }
    }
    this.#kind = 'msix';
    this.#nrVectors = nrVectors;
    for (const v of used) this.#used.add(v);
  }

  /**
   * `vfio_msix_vector_do_use`: wires MSI-X `vector` without disturbing the others where the kernel allows it.
   * @throws VfioSystemError when a SET_IRQS fails: `vector` stays unwired; on a NORESIZE kernel whose
   *   re-enable failed, MSI-X is off and forgotten ({@link kind} null)
   */
  useMsixVector(vector: number): void {
    if (this.#kind !== 'msix' || this.#used.has(vector)) return;
    const irq = this.#irq(VFIO_PCI_MSIX_IRQ_INDEX);
    if (this.#nrVectors >= vector + 1 || !this.msixNoresize) {
      irq.assign(vector, [true]);
    } else {
      irq.disable();
      try {
        this.#enableVectors(irq, vector + 1, new Set([...this.#used, vector]));
      } catch (e) {
        // The disable went through: nothing of MSI-X is left in the kernel.
        this.#kind = null;
        this.#nrVectors = 0;
        this.#used.clear();
        throw e;
      }
    }
    this.#used.add(vector);
    this.#nrVectors = Math.max(this.#nrVectors, vector + 1);
  }

  /** Disables the wired index (SET_IRQS with count 0) and drops its eventfds. */
  disable(): void {
    const kind = this.#kind;
    if (kind === null) return;
    this.#kind = null;
    this.#nrVectors = 0;
    this.#used.clear();
    this.#irq(kind === 'msi' ? VFIO_PCI_MSI_IRQ_INDEX : VFIO_PCI_MSIX_IRQ_INDEX).disable();
  }

  /** `vfio_enable_vectors`: one call for `[0, nrVectors)`, -1 for the vectors not in `used`. */
  #enableVectors(irq: Irq, nrVectors: number, used: ReadonlySet<number>): void {
    irq.assign(0, Array.from({ length: nrVectors }, (_, v) => used.has(v)));
  }

  #irq(index: number): Irq {
    const irq = this.device.irq(index);
    if (!this.#listening.has(index)) {
      this.#listening.add(index);
      irq.on('signal', (vector) => this.onSignal(index === VFIO_PCI_MSI_IRQ_INDEX ? 'msi' : 'msix', vector));
    }
    return irq;
  }
}

/** Disables `irq` after another SET_IRQS failed: that error is the one the caller gets. */
function disableQuietly(irq: Irq): void {
  try {
    irq.disable();
  } catch {
    // Reported through the first failure; the owner rewires the index whole.
  }
}
