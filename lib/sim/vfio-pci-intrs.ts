/**
 * vfio-pci's interrupt handling (drivers/vfio/pci/vfio_pci_intrs.c, Linux
 * 6.12) for one device: VFIO_DEVICE_SET_IRQS for INTx (eventfd trigger,
 * mask and unmask with NONE/BOOL, unmask through an eventfd, automasking),
 * MSI and MSI-X (enable by count, per-vector eventfd changes while enabled,
 * dynamic MSI-X allocation where the host allows it, disable with count 0),
 * and the ERR and REQ eventfds, with the kernel's checks in the kernel's
 * order. The host's PCI/MSI core (`pci-msi-core.ts`) programs the function.
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
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_REQ_IRQ_INDEX,
} from '../vfio/uapi/constants.js';
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_STATUS, PCI_STATUS_INTERRUPT } from '../pci/regs.js';
import { dataView } from '../vfio/uapi/layout.js';
import { fail } from './errno.js';
import type { SimEventFd } from './eventfd.js';
import type { IrqSetRequest } from './irq-set-validate.js';
import type { SimPciFunction } from './pci-function.js';
import type { SimPciMsiCore } from './pci-msi-core.js';
import { SimVirqfd } from './virqfd.js';

/** `vdev->irq_type` when no interrupt is set up (`VFIO_PCI_NUM_IRQS`). */
export const IRQ_NONE = VFIO_PCI_NUM_IRQS;

/** `struct vfio_pci_irq_ctx`. */
interface IrqCtx {
  trigger: SimEventFd | null;
  masked: boolean;
  unmask: SimVirqfd | null;
}

export class VfioPciIrqs {
  /** `vdev->irq_type`: INTx, MSI, MSI-X or {@link IRQ_NONE}. */
  irqType = IRQ_NONE;
  /** `vdev->msi_qmax`: log2 of the MSI vectors last enabled; kept for the device's lifetime, as in the kernel. */
  msiQmax = 0;
  /** `vdev->virq_disabled`: INTx disabled through the virtual command register. */
  virqDisabled = false;
  readonly #ctx = new Map<number, IrqCtx>();
  #err: SimEventFd | null = null;
  #req: SimEventFd | null = null;

  constructor(
    private readonly fn: SimPciFunction,
    private readonly core: SimPciMsiCore,
    /** `eventfd_ctx_fdget`: EBADF for no file, EINVAL for one that is not an eventfd. */
    private readonly eventfdOf: (fd: number) => SimEventFd,
    /** `pci_is_pcie`: the ERR index exists. */
    private readonly pcie: boolean,
  ) {}

  /**
   * `vfio_pci_set_irqs_ioctl`, after validation. Returns the ioctl's result:
   * 0, or the number of vectors the host could allocate when enabling MSI
   * or MSI-X got fewer than asked (the kernel returns that positive count).
   */
  set({ hdr, data }: IrqSetRequest): number {
    const action = hdr.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
    const { index, start, count, flags } = hdr;
    switch (index) {
      case VFIO_PCI_INTX_IRQ_INDEX:
        if (action === VFIO_IRQ_SET_ACTION_MASK || action === VFIO_IRQ_SET_ACTION_UNMASK) this.#setIntxMasking(action === VFIO_IRQ_SET_ACTION_MASK, start, count, flags, data);
        else if (action === VFIO_IRQ_SET_ACTION_TRIGGER) this.#setIntxTrigger(start, count, flags, data);
        else break;
        return 0;
      case VFIO_PCI_MSI_IRQ_INDEX:
      case VFIO_PCI_MSIX_IRQ_INDEX:
        // MSI/MSI-X masking is not exported ("XXX Need masking support exported").
        if (action === VFIO_IRQ_SET_ACTION_TRIGGER) return this.#setMsiTrigger(index, start, count, flags, data);
        break;
      case VFIO_PCI_ERR_IRQ_INDEX:
        if (action === VFIO_IRQ_SET_ACTION_TRIGGER && this.pcie) {
          if (start !== 0 || count > 1) fail('EINVAL');
          this.#err = this.#single(this.#err, count, flags, data);
          return 0;
        }
        break;
      case VFIO_PCI_REQ_IRQ_INDEX:
        if (action === VFIO_IRQ_SET_ACTION_TRIGGER) {
          if (start !== 0 || count > 1) fail('EINVAL');
          this.#req = this.#single(this.#req, count, flags, data);
          return 0;
        }
        break;
    }
    fail('ENOTTY');
  }

  /** `vfio_pci_core_disable`'s teardown: the active index disabled (count 0), then ERR and REQ dropped at close. */
  disableAll(): void {
    if (this.irqType === VFIO_PCI_INTX_IRQ_INDEX) this.#intxDisable();
    else if (this.irqType === VFIO_PCI_MSI_IRQ_INDEX || this.irqType === VFIO_PCI_MSIX_IRQ_INDEX) this.#msiDisable();
    this.virqDisabled = false;
    this.#err = null;
    this.#req = null;
  }

  /** AER reported an error (`vfio_pci_core_aer_err_detected`): signals the ERR eventfd. */
  signalErr(): void {
    this.#err?.signal();
  }

  /** The host asks the user to release the device (`vfio_pci_core_request`): signals the REQ eventfd. */
  signalReq(): void {
    this.#req?.signal();
  }

  // ------------------------------------------------------------ host interrupt handlers

  /** `vfio_intx_handler`, registered while INTx is the active index. */
  intxInterrupt(): void {
    if (this.irqType !== VFIO_PCI_INTX_IRQ_INDEX) return;
    const ctx = this.#ctx.get(0);
    if (ctx === undefined || ctx.masked || !this.#checkAndMaskIntx()) return;
    ctx.masked = true;
    this.#sendIntx();
  }

  /** `vfio_msihandler` for an MSI or MSI-X vector that has a handler. */
  msiInterrupt(vector: number): void {
    this.#ctx.get(vector)?.trigger?.signal();
  }

  /** The virtual DisINTx bit changed (`vfio_basic_config_write`). */
  virtIntxDisable(disabled: boolean): void {
    if (disabled && !this.virqDisabled) {
      this.virqDisabled = true;
      this.#intxMask();
    } else if (!disabled && this.virqDisabled) {
      this.virqDisabled = false;
      this.#intxUnmask();
    }
  }

  // ------------------------------------------------------------ INTx

  #isIntx(): boolean {
    return this.irqType === VFIO_PCI_INTX_IRQ_INDEX;
  }

  #isNone(): boolean {
    return this.irqType !== VFIO_PCI_INTX_IRQ_INDEX && this.irqType !== VFIO_PCI_MSI_IRQ_INDEX && this.irqType !== VFIO_PCI_MSIX_IRQ_INDEX;
  }

  /** `vfio_send_intx_eventfd`. */
  #sendIntx(): void {
    if (this.#isIntx() && !this.virqDisabled) this.#ctx.get(0)?.trigger?.signal();
  }

  /** `pci_intx`: DisINTx cleared (`enable`) or set. */
  #pciIntx(enable: boolean): void {
    const cmd = this.fn.configRead(PCI_COMMAND, 2);
    const next = enable ? cmd & ~PCI_COMMAND_INTX_DISABLE : cmd | PCI_COMMAND_INTX_DISABLE;
    if (next !== cmd) this.fn.configWrite(PCI_COMMAND, 2, next);
  }

  /** `pci_check_and_mask_intx`: masks only when the function asserts INTx. */
  #checkAndMaskIntx(): boolean {
    if ((this.fn.configRead(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT) === 0) return false;
    this.#pciIntx(false);
    return true;
  }

  /** `pci_check_and_unmask_intx`: unmasks only when nothing is pending. */
  #checkAndUnmaskIntx(): boolean {
    if ((this.fn.configRead(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT) !== 0) return false;
    this.#pciIntx(true);
    return true;
  }

  /** `__vfio_pci_intx_mask`. */
  #intxMask(): void {
    if (!this.#isIntx()) {
      this.#pciIntx(false);
      return;
    }
    const ctx = this.#ctx.get(0);
    if (ctx === undefined || ctx.masked) return;
    this.#pciIntx(false);
    ctx.masked = true;
  }

  /** `vfio_pci_intx_unmask_handler`: 1 when the line is still asserted and must be signalled again. */
  #intxUnmaskHandler(): number {
    if (!this.#isIntx()) {
      this.#pciIntx(true);
      return 0;
    }
    const ctx = this.#ctx.get(0);
    if (ctx === undefined || !ctx.masked || this.virqDisabled) return 0;
    const ret = this.#checkAndUnmaskIntx() ? 0 : 1;
    ctx.masked = ret > 0;
    return ret;
  }

  /** `__vfio_pci_intx_unmask`. */
  #intxUnmask(): void {
    if (this.#intxUnmaskHandler() > 0) this.#sendIntx();
  }

  /** `vfio_intx_enable`. */
  #intxEnable(trigger: SimEventFd | null): void {
    if (!this.#isNone()) fail('EINVAL');
    const ctx: IrqCtx = { trigger, masked: this.virqDisabled, unmask: null };
    this.#ctx.set(0, ctx);
    this.#pciIntx(!ctx.masked);
    this.irqType = VFIO_PCI_INTX_IRQ_INDEX;
    // request_irq on a level-triggered line that is already asserted runs the handler at once.
    if (this.fn.intxLine) this.intxInterrupt();
  }

  /** `vfio_intx_disable`. */
  #intxDisable(): void {
    const ctx = this.#ctx.get(0);
    ctx?.unmask?.disable();
    this.#ctx.delete(0);
    this.irqType = IRQ_NONE;
  }

  /** `vfio_pci_set_intx_mask` and `vfio_pci_set_intx_unmask`: NONE or a true BOOL acts; an eventfd only unmasks. */
  #setIntxMasking(mask: boolean, start: number, count: number, flags: number, data: Uint8Array): void {
    if (!this.#isIntx() || start !== 0 || count !== 1) fail('EINVAL');
    if ((flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0) {
      // The kernel's "XXX implement me": no mask eventfd.
      if (mask) fail('ENOTTY');
      this.#setUnmaskEventfd(dataView(data).getInt32(0, true));
    } else if ((flags & VFIO_IRQ_SET_DATA_NONE) !== 0 || data[0] !== 0) {
      if (mask) this.#intxMask();
      else this.#intxUnmask();
    }
  }

  /** The unmask eventfd of `vfio_pci_set_intx_unmask`: a virqfd that unmasks, or none with fd -1. */
  #setUnmaskEventfd(fd: number): void {
    const ctx = this.#ctx.get(0);
    if (ctx === undefined) fail('EINVAL');
    if (fd >= 0) {
      const efd = this.eventfdOf(fd);
      if (ctx.unmask !== null) fail('EBUSY');
      ctx.unmask = new SimVirqfd(efd, () => this.#intxUnmaskHandler(), () => this.#sendIntx());
      return;
    }
    ctx.unmask?.disable();
    ctx.unmask = null;
  }

  /** `vfio_pci_set_intx_trigger`. */
  #setIntxTrigger(start: number, count: number, flags: number, data: Uint8Array): void {
    if (this.#isIntx() && count === 0 && (flags & VFIO_IRQ_SET_DATA_NONE) !== 0) {
      this.#intxDisable();
      return;
    }
    if (!(this.#isIntx() || this.#isNone()) || start !== 0 || count !== 1) fail('EINVAL');
    if ((flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0) {
      const fd = dataView(data).getInt32(0, true);
      const trigger = fd >= 0 ? this.eventfdOf(fd) : null;
      const ctx = this.#ctx.get(0);
      if (this.#isIntx() && ctx !== undefined) ctx.trigger = trigger;
      else this.#intxEnable(trigger);
      return;
    }
    if (!this.#isIntx()) fail('EINVAL');
    if ((flags & VFIO_IRQ_SET_DATA_NONE) !== 0 || ((flags & VFIO_IRQ_SET_DATA_BOOL) !== 0 && data[0] !== 0)) this.#sendIntx();
  }

  // ------------------------------------------------------------ MSI / MSI-X

  /** `vfio_msi_enable`: allocates `nvec` vectors; a shortfall is returned as a positive count, as the kernel does. */
  #msiEnable(nvec: number, msix: boolean): number {
    if (!this.#isNone()) fail('EINVAL');
    const got = this.core.alloc(msix ? 'msix' : 'msi', nvec);
    if (got < nvec) return got;
    this.irqType = msix ? VFIO_PCI_MSIX_IRQ_INDEX : VFIO_PCI_MSI_IRQ_INDEX;
    // fls(nvec * 2 - 1) - 1: log2 of nvec rounded up.
    if (!msix) this.msiQmax = 31 - Math.clz32(nvec * 2 - 1);
    return 0;
  }

  /** `vfio_msi_set_vector_signal`. */
  #setVectorSignal(vector: number, fd: number, msix: boolean): void {
    const had = this.#ctx.get(vector);
    if (had !== undefined) {
      this.core.shutdown(vector);
      this.#ctx.delete(vector);
    }
    if (fd < 0) return;
    if (had === undefined && !this.core.allocated(vector)) {
      if (!msix || !this.core.domain.dynMsix) fail('EINVAL');
      this.core.allocAt(vector);
    }
    const trigger = this.eventfdOf(fd);
    this.core.refresh(vector);
    this.#ctx.set(vector, { trigger, masked: false, unmask: null });
    this.core.startup(vector);
  }

  /** `vfio_msi_set_block`: on failure, every vector of the block done so far is de-assigned. */
  #setBlock(start: number, count: number, fds: number[] | null, msix: boolean): void {
    let j = start;
    try {
      for (let i = 0; i < count; i++, j++) this.#setVectorSignal(j, fds?.[i] ?? -1, msix);
    } catch (e) {
      for (let i = start; i <= j; i++) this.#setVectorSignal(i, -1, msix);
      throw e;
    }
  }

  /** `vfio_msi_disable`. */
  #msiDisable(): void {
    const msix = this.irqType === VFIO_PCI_MSIX_IRQ_INDEX;
    for (const vector of [...this.#ctx.keys()]) this.#setVectorSignal(vector, -1, msix);
    this.core.free();
    this.irqType = IRQ_NONE;
  }

  /** `vfio_pci_set_msi_trigger`. */
  #setMsiTrigger(index: number, start: number, count: number, flags: number, data: Uint8Array): number {
    const msix = index === VFIO_PCI_MSIX_IRQ_INDEX;
    if (this.irqType === index && count === 0 && (flags & VFIO_IRQ_SET_DATA_NONE) !== 0) {
      this.#msiDisable();
      return 0;
    }
    if (!(this.irqType === index || this.#isNone())) fail('EINVAL');
    if ((flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0) {
      const dv = dataView(data);
      const fds = Array.from({ length: count }, (_, i) => dv.getInt32(4 * i, true));
      if (this.irqType === index) {
        this.#setBlock(start, count, fds, msix);
        return 0;
      }
      const short = this.#msiEnable(start + count, msix);
      if (short > 0) return short;
      try {
        this.#setBlock(start, count, fds, msix);
      } catch (e) {
        this.#msiDisable();
        throw e;
      }
      return 0;
    }
    if (this.irqType !== index) fail('EINVAL');
    for (let i = start; i < start + count; i++) {
      const ctx = this.#ctx.get(i);
      if (ctx === undefined) continue;
      if ((flags & VFIO_IRQ_SET_DATA_NONE) !== 0 || ((flags & VFIO_IRQ_SET_DATA_BOOL) !== 0 && data[i - start] !== 0)) ctx.trigger?.signal();
    }
    return 0;
  }

  // ------------------------------------------------------------ ERR / REQ

  /** `vfio_pci_set_ctx_trigger_single`: returns the new eventfd of the index. */
  #single(current: SimEventFd | null, count: number, flags: number, data: Uint8Array): SimEventFd | null {
    if ((flags & VFIO_IRQ_SET_DATA_NONE) !== 0) {
      if (current === null) fail('EINVAL');
      if (count !== 0) {
        current.signal();
        return current;
      }
      return null;
    }
    if ((flags & VFIO_IRQ_SET_DATA_BOOL) !== 0) {
      if (count === 0) fail('EINVAL');
      if (data[0] !== 0) current?.signal();
      return current;
    }
    if (count === 0) fail('EINVAL');
    const fd = dataView(data).getInt32(0, true);
    if (fd === -1) return null;
    if (fd >= 0) return this.eventfdOf(fd);
    fail('EINVAL');
  }
}
