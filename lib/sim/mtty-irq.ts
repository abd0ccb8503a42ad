/**
 * mtty's interrupt lines: one INTx and one MSI vector, each an eventfd the
 * device signals directly (`mtty_trigger_interrupt`), configured through
 * SET_IRQS (`mtty_set_irqs`). Only one of the two can be active.
 */
import {
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
} from '../vfio/uapi/constants.js';
import { dataView } from '../vfio/uapi/layout.js';
import { fail } from './errno.js';
import type { SimEventFd } from './eventfd.js';
import type { IrqSetRequest } from './irq-set-validate.js';

/** `mdev_state->intx_evtfd`, `msi_evtfd`, `irq_index` and `intx_mask`. */
export class MttyIrqs {
  #intx: SimEventFd | null = null;
  #msi: SimEventFd | null = null;
  /** `irq_index`: INTx, MSI, or -1 for none. */
  #index = -1;
  #intxMask = false;

  /** `eventfdOf` is `eventfd_ctx_fdget` (EBADF, or EINVAL for a non-eventfd). */
  constructor(private readonly eventfdOf: (fd: number) => SimEventFd) {}

  /** `mtty_trigger_interrupt`: INTx masks itself after each signal until UNMASK. */
  trigger(): void {
    if (this.#index === VFIO_PCI_MSI_IRQ_INDEX) {
      this.#msi?.signal();
    } else if (this.#index === VFIO_PCI_INTX_IRQ_INDEX) {
      if (this.#intx !== null && !this.#intxMask) {
        this.#intx.signal();
        this.#intxMask = true;
      }
    }
  }

  /** `mtty_disable_intx`: only resets the index if an INTx eventfd was set. */
  disableIntx(): void {
    if (this.#intx === null) return;
    this.#intx = null;
    this.#intxMask = false;
    this.#index = -1;
  }

  /** `mtty_disable_msi`. */
  disableMsi(): void {
    if (this.#msi === null) return;
    this.#msi = null;
    this.#index = -1;
  }

  /** `mtty_set_irqs`, after the core's validation. */
  set({ hdr, data }: IrqSetRequest): void {
    switch (hdr.index) {
      case VFIO_PCI_INTX_IRQ_INDEX:
        this.#setIntx(hdr.flags, hdr.start, hdr.count, data);
        return;
      case VFIO_PCI_MSI_IRQ_INDEX:
        this.#setMsi(hdr.flags, hdr.start, hdr.count, data);
        return;
      case VFIO_PCI_MSIX_IRQ_INDEX:
      case VFIO_PCI_ERR_IRQ_INDEX:
      case VFIO_PCI_REQ_IRQ_INDEX:
        fail('ENOTTY');
    }
  }

  #isIntx(): boolean {
    return this.#index === VFIO_PCI_INTX_IRQ_INDEX;
  }

  #isMsi(): boolean {
    return this.#index === VFIO_PCI_MSI_IRQ_INDEX;
  }

  #isNoIrq(): boolean {
    return !this.#isIntx() && !this.#isMsi();
  }

  #setIntx(flags: number, start: number, count: number, data: Uint8Array): void {
    switch (flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) {
      case VFIO_IRQ_SET_ACTION_MASK:
      case VFIO_IRQ_SET_ACTION_UNMASK: {
        if (!this.#isIntx() || start !== 0 || count !== 1) fail('EINVAL');
        const mask = (flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) === VFIO_IRQ_SET_ACTION_MASK;
        if ((flags & VFIO_IRQ_SET_DATA_NONE) !== 0) {
          this.#intxMask = mask;
        } else if ((flags & VFIO_IRQ_SET_DATA_BOOL) !== 0) {
          if (data[0] !== 0) this.#intxMask = mask;
        } else if ((flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0) {
          // No support for mask/unmask eventfds.
          fail('ENOTTY');
        }
        return;
      }
      case VFIO_IRQ_SET_ACTION_TRIGGER:
        if (this.#isIntx() && count === 0 && (flags & VFIO_IRQ_SET_DATA_NONE) !== 0) {
          this.disableIntx();
          return;
        }
        if (!(this.#isIntx() || this.#isNoIrq()) || start !== 0 || count !== 1) fail('EINVAL');
        if ((flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0) {
          this.disableIntx();
          const fd = dataView(data).getInt32(0, true);
          if (fd < 0) return;
          this.#intx = this.eventfdOf(fd);
          this.#index = VFIO_PCI_INTX_IRQ_INDEX;
          return;
        }
        this.#softTrigger(this.#isIntx(), flags, data);
        return;
      default:
        // More than one action bit: mtty's switch matches no case and succeeds.
        return;
    }
  }

  #setMsi(flags: number, start: number, count: number, data: Uint8Array): void {
    switch (flags & VFIO_IRQ_SET_ACTION_TYPE_MASK) {
      case VFIO_IRQ_SET_ACTION_MASK:
      case VFIO_IRQ_SET_ACTION_UNMASK:
        fail('ENOTTY');
      case VFIO_IRQ_SET_ACTION_TRIGGER:
        if (this.#isMsi() && count === 0 && (flags & VFIO_IRQ_SET_DATA_NONE) !== 0) {
          this.disableMsi();
          return;
        }
        if (!(this.#isMsi() || this.#isNoIrq()) || start !== 0 || count !== 1) fail('EINVAL');
        if ((flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0) {
          this.disableMsi();
          const fd = dataView(data).getInt32(0, true);
          if (fd < 0) return;
          this.#msi = this.eventfdOf(fd);
          this.#index = VFIO_PCI_MSI_IRQ_INDEX;
          return;
        }
        this.#softTrigger(this.#isMsi(), flags, data);
        return;
      default:
        return;
    }
  }

  /** A user-requested trigger (DATA_NONE, or DATA_BOOL true) of the active index. */
  #softTrigger(active: boolean, flags: number, data: Uint8Array): void {
    if (!active) fail('EINVAL');
    if ((flags & VFIO_IRQ_SET_DATA_NONE) !== 0 || ((flags & VFIO_IRQ_SET_DATA_BOOL) !== 0 && data[0] !== 0)) this.trigger();
  }
}
