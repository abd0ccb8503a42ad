/**
 * vfio-pci in the simulated kernel (drivers/vfio/pci/vfio_pci_core.c, Linux
 * 6.12) bound to an emulated PCI function: the device info, region info
 * (BARs, ROM, CONFIG, VGA and device-specific regions with their
 * capabilities), IRQ info and SET_IRQS, reset, read/write of every region
 * and mmap of BARs, and what the kernel does at open (clear bus mastering,
 * try a reset, save the config, virtualize it) and at close (tear the
 * interrupts down, restore the saved config).
 *
 * Variant drivers extend it: {@link SimVfioPciDevice.registerRegion} adds a
 * device-specific region (index 9 and up, with a TYPE capability),
 * {@link SimVfioPciDevice.mmapAreas} restricts what of a BAR may be mmapped
 * (a SPARSE_MMAP capability instead of MSIX_MAPPABLE), and
 * {@link SimVfioPciDevice.enableMigration} gives the device v2 migration of
 * a state image, as the in-tree variant drivers (mlx5, hisi, ...) add
 * `mig_ops` to vfio-pci-core.
 *
 * Not simulated (ENOTTY): VFIO_DEVICE_IOEVENTFD and the low-power device
 * features. Hot reset answers ENODEV, as for a function alone on a root bus
 * (the test guest's edu). Memory mapped while memory decode is off raises a
 * VfioSystemError (EFAULT) where a real process would get SIGBUS.
 */
import { VfioSystemError } from '../errors.js';
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_COMMAND_IO, PCI_COMMAND_MASTER, PCI_COMMAND_MEMORY, PCI_INTERRUPT_PIN, PCI_MSIX_FLAGS, PCI_MSI_FLAGS, PCI_MSI_FLAGS_QMASK } from '../pci/regs.js';
import type { MmioTrap } from '../sys/mmio.js';
import { Errno } from '../sys/errno.js';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_PCI_BAR5_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_REQ_IRQ_INDEX,
  VFIO_PCI_ROM_REGION_INDEX,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_CAP_TYPE,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../vfio/uapi/constants.js';
import { buildCapChain, type CapSpec, type SparseArea } from '../vfio/uapi/info.js';
import {
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_PCI_HOT_RESET,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
} from '../vfio/uapi/ioctls.js';
import { dataView, decode, encode } from '../vfio/uapi/layout.js';
import { encodeSparseAreas } from '../vfio/uapi/extensions.js';
import { vfio_device_info, vfio_irq_info, vfio_irq_set, vfio_region_info } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg, SimMmap } from './file.js';
import { readIrqSet } from './irq-set-validate.js';
import { DmaDeviceMigration, type DmaDeviceState } from './dma-device-migration.js';
import { INTEL_IOMMU_DOMAIN, type SimKernel } from './kernel.js';
import type { SimPciFunction, SimPciSavedState } from './pci-function.js';
import { SimPciMsiCore, type SimMsiDomain } from './pci-msi-core.js';
import { VfioPciConfig, romBarSize } from './vfio-pci-config.js';
import { VfioPciIrqs } from './vfio-pci-intrs.js';
import { barRw } from './vfio-pci-rdwr.js';
import { SimVfioDevice } from './vfio-device.js';

/** `VFIO_PCI_OFFSET_SHIFT`: region `i` lives at device-fd offset `i << 40`. */
const OFFSET_SHIFT = 40n;
const OFFSET_MASK = (1n << OFFSET_SHIFT) - 1n;
const PAGE_SIZE = 4096;

/** A device-specific region a variant driver registers (`vfio_pci_core_register_dev_region`). */
export interface SimDeviceRegion {
  /** The TYPE capability's type and subtype. */
  readonly type: number;
  readonly subtype: number;
  readonly size: number;
  /** `VFIO_REGION_INFO_FLAG_*`. */
  readonly flags: number;
  /** `ops->rw`: returns the bytes done. */
  rw(buf: Uint8Array, pos: number, write: boolean): number;
  /** `ops->mmap`, used when `flags` has MMAP. */
  mmap?(pos: number, length: number): SimMmap;
  /** `ops->add_capability`: capabilities after TYPE. */
  caps?(): CapSpec[];
}

/** How the host's interrupt domain behaves; x86 with interrupt remapping by default. */
export type SimVfioPciOptions = Partial<SimMsiDomain>;

/** The device state a migratable simulated function carries: one image, sent in stop-copy. */
export type SimPciStateImage = Omit<DmaDeviceState, 'name'>;

export class SimVfioPciDevice<F extends SimPciFunction = SimPciFunction> extends SimVfioDevice {
  /** The PCI address, `dev_name()` of the function. */
  override readonly name: string;
  /** The emulated function the driver is bound to. */
  readonly fn: F;
  /** Interrupt state; like `struct vfio_pci_core_device` it outlives opens (`msi_qmax` persists). */
  readonly irqs: VfioPciIrqs;
  readonly #core: SimPciMsiCore;
  readonly #regions: SimDeviceRegion[] = [];
  #config: VfioPciConfig | null = null;
  #saved: SimPciSavedState | null = null;
  #resetWorks = false;
  #barMmap: boolean[] = [];
  #stateMigration: DmaDeviceMigration | undefined;

  constructor(bdf: string, fn: F, options: SimVfioPciOptions = {}) {
    super();
    this.name = bdf;
    this.fn = fn;
    this.#core = new SimPciMsiCore(fn, { dynMsix: options.dynMsix ?? true, multiMsi: options.multiMsi ?? true });
    this.irqs = new VfioPciIrqs(fn, this.#core, (fd) => this.kernel.eventfdOf(fd), fn.expCap !== 0);
  }

  /** The virtualized config space while the device is open (for tests). */
  get vconfig(): Uint8Array | null {
    return this.#config?.vconfig ?? null;
  }

  /** `vfio_pci_core_request`: the host wants the device back; signals the REQ eventfd. */
  requestRelease(): void {
    this.irqs.signalReq();
  }

  /** `vfio_pci_core_aer_err_detected`: signals the ERR eventfd. */
  reportError(): void {
    this.irqs.signalErr();
  }

  /** `vfio_pci_core_register_dev_region`: the region gets index 9 + (regions registered before). */
  protected registerRegion(region: SimDeviceRegion): void {
    this.#regions.push(region);
  }

  /**
   * Gives the device v2 migration (STOP_COPY, P2P and PRE_COPY, the
   * simulated DMA device's driver) of `image`: nothing to send in precopy,
   * the image in stop-copy, loaded at RESUMING → STOP. A device reset and the
   * last close put the migration state back to RUNNING, as variant drivers'
   * `reset_done` and `close_device` do.
   */
  enableMigration(image: SimPciStateImage): void {
    this.#stateMigration = new DmaDeviceMigration({
      name: this.name,
      imageSize: image.imageSize,
      saveImage: () => image.saveImage(),
      loadImage: (bytes) => image.loadImage(bytes),
    });
    this.migration = this.#stateMigration;
  }

  /**
   * The parts of BAR `index` user space may mmap, for a variant driver that
   * restricts them (reported as a SPARSE_MMAP capability); undefined for
   * the vfio-pci core's behaviour: the whole BAR, with MSIX_MAPPABLE on the
   * BAR holding the MSI-X table.
   */
  protected mmapAreas(_index: number): readonly SparseArea[] | undefined {
    return undefined;
  }

  // ------------------------------------------------------------ vfio_device_ops

  /** `vfio_pci_core_enable` + `vfio_pci_core_finish_enable`. */
  override openDevice(): void {
    const fn = this.fn;
    let cmd = fn.configRead(PCI_COMMAND, 2) & ~PCI_COMMAND_MASTER;
    // pci_enable_device: decode for the resources the function has.
    for (const bar of fn.bars) if (bar !== undefined) cmd |= bar.kind === 'io' ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    fn.configWrite(PCI_COMMAND, 2, cmd);
    this.#resetWorks = this.#tryReset();
    this.#saved = fn.saveState();
    cmd = fn.configRead(PCI_COMMAND, 2);
    if ((cmd & PCI_COMMAND_INTX_DISABLE) !== 0) fn.configWrite(PCI_COMMAND, 2, cmd & ~PCI_COMMAND_INTX_DISABLE);
    this.#config = new VfioPciConfig(fn, {
      msiActive: () => this.irqs.irqType === VFIO_PCI_MSI_IRQ_INDEX,
      msiQmax: () => this.irqs.msiQmax,
      virtIntxDisable: (disabled) => this.irqs.virtIntxDisable(disabled),
      resetFunction: () => this.#tryReset(),
    });
    this.#barMmap = fn.bars.map((b) => b !== undefined && b.kind !== 'io' && b.size > 0 && (b.size >= PAGE_SIZE || b.address % BigInt(PAGE_SIZE) === 0n));
    fn.irqSink = { intx: () => this.irqs.intxInterrupt(), msi: (v) => this.irqs.msiInterrupt(v), msix: (v) => this.irqs.msiInterrupt(v) };
  }

  /** `vfio_pci_core_close_device` / `vfio_pci_core_disable`. */
  override closeDevice(): void {
    const fn = this.fn;
    this.#config?.setPowerState(0);
    fn.configWrite(PCI_COMMAND, 2, fn.configRead(PCI_COMMAND, 2) & ~PCI_COMMAND_MASTER);
    this.irqs.disableAll();
    this.#config = null;
    fn.configWrite(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
    if (this.#resetWorks) fn.reset();
    if (this.#saved !== null) fn.restoreState(this.#saved);
    this.#saved = null;
    fn.irqSink = null;
    this.#stateMigration?.reset();
  }

  /** `vfio_pci_core_ioctl`. */
  override ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_DEVICE_GET_INFO:
        return this.#getInfo(arg);
      case VFIO_DEVICE_GET_IRQ_INFO:
        return this.#getIrqInfo(arg);
      case VFIO_DEVICE_GET_REGION_INFO:
        return this.#getRegionInfo(arg);
      case VFIO_DEVICE_SET_IRQS: {
        const hdr = decode(vfio_irq_set, userBuf(arg, vfio_irq_set.size));
        return this.irqs.set(readIrqSet(arg, this.#irqCount(hdr.index), VFIO_PCI_NUM_IRQS));
      }
      case VFIO_DEVICE_RESET:
        if (!this.#resetWorks) fail('EINVAL');
        this.#config?.setPowerState(0);
        this.#tryReset();
        this.#stateMigration?.reset();
        return 0;
      case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO:
      case VFIO_DEVICE_PCI_HOT_RESET: {
        // Alone on a root bus: neither a slot nor a bus reset is possible.
        const hdr = userBuf(arg, 12);
        const dv = dataView(hdr);
        if (dv.getUint32(0, true) < 12 || (request === VFIO_DEVICE_PCI_HOT_RESET && dv.getUint32(4, true) !== 0)) fail('EINVAL');
        fail('ENODEV');
      }
      default:
        fail('ENOTTY');
    }
  }

  /** `vfio_pci_core_read`. */
  override read(buf: Uint8Array, offset: bigint): number {
    return buf.byteLength === 0 ? 0 : this.#rw(buf, offset, false);
  }

  /** `vfio_pci_core_write`. */
  override write(buf: Uint8Array, offset: bigint): number {
    return buf.byteLength === 0 ? 0 : this.#rw(buf, offset, true);
  }

  /** `vfio_pci_core_mmap`. */
  override mmap(offset: bigint, length: number, _prot: number): SimMmap {
    const index = Number(offset >> OFFSET_SHIFT);
    if (index >= VFIO_PCI_NUM_REGIONS + this.#regions.length) fail('EINVAL');
    const start = Number(offset & OFFSET_MASK);
    if (index >= VFIO_PCI_NUM_REGIONS) {
      const region = this.#regions[index - VFIO_PCI_NUM_REGIONS];
      if (region?.mmap !== undefined && (region.flags & VFIO_REGION_INFO_FLAG_MMAP) !== 0) return region.mmap(start, length);
      fail('EINVAL');
    }
    if (index >= VFIO_PCI_ROM_REGION_INDEX || this.#barMmap[index] !== true) fail('EINVAL');
    const bar = this.fn.bars[index];
    if (bar === undefined) fail('EINVAL');
    const len = Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    if (start + len > Math.ceil(bar.size / PAGE_SIZE) * PAGE_SIZE) fail('EINVAL');
    const areas = this.mmapAreas(index);
    if (areas !== undefined && !areas.some((a) => start >= a.offset && start + len <= a.offset + a.size)) fail('EINVAL');
    // Plain memory is shared as is, unless the MSI-X table or PBA lives in it and must stay trapped.
    const msix = this.fn.msix?.layout;
    const hasMsix = msix !== undefined && (msix.tableBar === index || msix.pbaBar === index);
    if (bar.ram !== null && !hasMsix && start + length <= bar.ram.byteLength) return { bytes: bar.ram.subarray(start, start + length), unmap: () => undefined };
    return { bytes: new Uint8Array(length), mmio: this.#trap(index, start), unmap: () => undefined };
  }

  // ------------------------------------------------------------ internals

  /** `pci_try_reset_function`: saves the config, resets the function (FLR), restores it. */
  #tryReset(): boolean {
    const fn = this.fn;
    if (!fn.flrCapable) return false;
    const saved = fn.saveState();
    fn.reset();
    fn.restoreState(saved);
    return true;
  }

  /** Accesses to a mapped BAR reach the function, while memory decode is on. */
  #trap(index: number, start: number): MmioTrap {
    const check = (): void => {
      if (this.#config !== null && !this.#config.memoryEnabled()) {
        throw new VfioSystemError(Errno.EFAULT, 'mmio', { op: `BAR${index} access with memory decode off (SIGBUS on a real kernel)`, device: this.name });
      }
    };
    return {
      read: (off, width) => {
        check();
        return this.fn.barRead(index, start + off, width);
      },
      write: (off, width, value) => {
        check();
        this.fn.barWrite(index, start + off, width, value);
      },
    };
  }

  /** `vfio_pci_rw`. */
  #rw(buf: Uint8Array, offset: bigint, write: boolean): number {
    const index = Number(offset >> OFFSET_SHIFT);
    const pos = offset & OFFSET_MASK;
    if (index >= VFIO_PCI_NUM_REGIONS + this.#regions.length) fail('EINVAL');
    const config = this.#config;
    if (config === null) fail('EIO');
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) return config.rw(buf, Number(pos), write);
    if (index === VFIO_PCI_ROM_REGION_INDEX && write) fail('EINVAL');
    if (index <= VFIO_PCI_ROM_REGION_INDEX) return barRw({ fn: this.fn, memoryEnabled: () => config.memoryEnabled() }, index, pos, buf, write);
    // The VGA region: no simulated function decodes legacy VGA.
    if (index === VFIO_PCI_VGA_REGION_INDEX) fail('EINVAL');
    const region = this.#regions[index - VFIO_PCI_NUM_REGIONS];
    if (region === undefined) fail('EINVAL');
    return region.rw(buf, Number(pos), write);
  }

  /** `vfio_pci_get_irq_count`. */
  #irqCount(index: number): number {
    const fn = this.fn;
    switch (index) {
      case VFIO_PCI_INTX_IRQ_INDEX:
        return (this.#config?.vconfig[PCI_INTERRUPT_PIN] ?? 0) !== 0 ? 1 : 0;
      case VFIO_PCI_MSI_IRQ_INDEX:
        return fn.msiCap === 0 ? 0 : 1 << ((fn.configRead(fn.msiCap + PCI_MSI_FLAGS, 2) & PCI_MSI_FLAGS_QMASK) >> 1);
      case VFIO_PCI_MSIX_IRQ_INDEX:
        return fn.msixCap === 0 ? 0 : (fn.configRead(fn.msixCap + PCI_MSIX_FLAGS, 2) & 0x7ff) + 1;
      case VFIO_PCI_ERR_IRQ_INDEX:
        return fn.expCap !== 0 ? 1 : 0;
      case VFIO_PCI_REQ_IRQ_INDEX:
        return 1;
      default:
        return 0;
    }
  }

  /** `vfio_pci_ioctl_get_info`. */
  #getInfo(arg: IoctlArg): number {
    const minsz = 16;
    const buf = userBuf(arg, minsz);
    const argsz = dataView(buf).getUint32(0, true);
    if (argsz < minsz) fail('EINVAL');
    const info = encode(vfio_device_info, {
      argsz,
      flags: VFIO_DEVICE_FLAGS_PCI | (this.#resetWorks ? VFIO_DEVICE_FLAGS_RESET : 0),
      num_regions: VFIO_PCI_NUM_REGIONS + this.#regions.length,
      num_irqs: VFIO_PCI_NUM_IRQS,
    });
    userBuf(arg, Math.min(argsz, vfio_device_info.size)).set(info.subarray(0, Math.min(argsz, vfio_device_info.size)));
    return 0;
  }

  /** `vfio_pci_ioctl_get_irq_info`. */
  #getIrqInfo(arg: IoctlArg): number {
    const buf = userBuf(arg, vfio_irq_info.size);
    const { argsz, index } = decode(vfio_irq_info, buf);
    if (argsz < vfio_irq_info.size || index >= VFIO_PCI_NUM_IRQS) fail('EINVAL');
    if (index === VFIO_PCI_ERR_IRQ_INDEX && this.fn.expCap === 0) fail('EINVAL');
    let flags = VFIO_IRQ_INFO_EVENTFD;
    if (index === VFIO_PCI_INTX_IRQ_INDEX) flags |= VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED;
    else if (index !== VFIO_PCI_MSIX_IRQ_INDEX || !this.#hasDynMsix()) flags |= VFIO_IRQ_INFO_NORESIZE;
    encode(vfio_irq_info, { argsz, flags, index, count: this.#irqCount(index) }, buf);
    return 0;
  }

  /** `vdev->has_dyn_msix`: MSI-X present and the domain allocates dynamically. */
  #hasDynMsix(): boolean {
    return this.fn.msixCap !== 0 && this.#core.domain.dynMsix;
  }

  /** `vfio_pci_ioctl_get_region_info`. */
  #getRegionInfo(arg: IoctlArg): number {
    const minsz = vfio_region_info.size;
    const buf = userBuf(arg, minsz);
    const { argsz, index } = decode(vfio_region_info, buf);
    if (argsz < minsz) fail('EINVAL');
    const offset = BigInt(index) << OFFSET_SHIFT;
    const caps: CapSpec[] = [];
    let size = 0;
    let flags = 0;
    const fn = this.fn;
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      size = fn.cfgSize;
      flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    } else if (index <= VFIO_PCI_BAR5_REGION_INDEX) {
      const bar = fn.bars[index];
      size = bar?.size ?? 0;
      if (size !== 0) {
        flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        if (this.#barMmap[index] === true) {
          flags |= VFIO_REGION_INFO_FLAG_MMAP;
          const areas = this.mmapAreas(index);
          if (areas !== undefined) caps.push(sparseCap(areas));
          else if (index === fn.msix?.layout.tableBar) caps.push({ id: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, version: 1, body: new Uint8Array(0) });
        }
      }
    } else if (index === VFIO_PCI_ROM_REGION_INDEX) {
      // Reports the BAR size, READ only when the ROM image is really there (pci_map_rom).
      if (fn.rom !== undefined && fn.rom[0] === 0x55 && fn.rom[1] === 0xaa) {
        size = romBarSize(fn.rom);
        flags = VFIO_REGION_INFO_FLAG_READ;
      }
    } else if (index === VFIO_PCI_VGA_REGION_INDEX) {
      fail('EINVAL');
    } else {
      const region = this.#regions[index - VFIO_PCI_NUM_REGIONS];
      if (region === undefined) fail('EINVAL');
      size = region.size;
      flags = region.flags;
      const body = new Uint8Array(8);
      dataView(body).setUint32(0, region.type, true);
      dataView(body).setUint32(4, region.subtype, true);
      caps.push({ id: VFIO_REGION_INFO_CAP_TYPE, version: 1, body }, ...(region.caps?.() ?? []));
    }
    let outArgsz = argsz;
    let capOffset = 0;
    if (caps.length > 0) {
      const chain = buildCapChain(caps, minsz);
      flags |= VFIO_REGION_INFO_FLAG_CAPS;
      if (argsz < minsz + chain.byteLength) outArgsz = minsz + chain.byteLength;
      else {
        userBuf(arg, minsz + chain.byteLength).set(chain, minsz);
        capOffset = minsz;
      }
    }
    encode(vfio_region_info, { argsz: outArgsz, flags, index, cap_offset: capOffset, size: BigInt(size), offset }, buf);
    return 0;
  }
}

/** The SPARSE_MMAP capability listing `areas`. */
function sparseCap(areas: readonly SparseArea[]): CapSpec {
  return { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body: encodeSparseAreas(areas) };
}

/**
 * Plugs `driver`'s function into `kernel` behind the emulated Intel IOMMU
 * (an IOMMU group of its own, sysfs entries, `vendor` and `device` files)
 * and routes the function's DMA through the IOMMU the group ends up in.
 */
export function addVfioPci<D extends SimVfioPciDevice>(kernel: SimKernel, driver: D): D {
  const fn = driver.fn;
  kernel.addPciDevice(driver, { bdf: driver.name, vendor: fn.configRead(0, 2), device: fn.configRead(2, 2), domain: INTEL_IOMMU_DOMAIN });
  fn.dma = kernel.dmaTranslate(driver);
  return driver;
}
