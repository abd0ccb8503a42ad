/**
 * A simulated DMA-capable device: a DMA engine that writes pseudo-random
 * bytes into a window of guest memory while the device is RUNNING or in
 * PRE_COPY (and their P2P forms), with device DMA logging and v2 migration.
 * The writes land in the very buffer mapped for DMA. How they reach it
 * decides what the IOMMU side can see, so the device comes in three modes:
 *
 * - `'iommu'`: a PCI device behind a hardware IOMMU (vfio-pci). Through type1
 *   the kernel never sees the writes, so type1 reports every mapped page
 *   dirty (an IOMMU-backed group that never pinned); through an iommufd HWPT
 *   with dirty tracking the IOMMU records them.
 * - `'pin'`: an mdev whose vendor driver pins the window (`vfio_pin_pages`)
 *   and writes to the pinned pages: type1 reports the pinned pages dirty at
 *   every query (the pinned-pages scope).
 * - `'rw'`: an mdev that writes through `vfio_dma_rw`: type1 records exactly
 *   the pages written.
 *
 * The write pattern is a hot spot that drifts through the window (three
 * writes in four) over a uniform background, from a seeded generator, so a
 * run is reproducible and a heat map shows structure.
 */
import { VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS } from '../vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET } from '../vfio/uapi/ioctls.js';
import { dataView, decode, encode } from '../vfio/uapi/layout.js';
import { vfio_irq_info, vfio_region_info } from '../vfio/uapi/structs.js';
import { DmaDeviceMigration, dmaAllowed, type DmaDeviceState } from './dma-device-migration.js';
import { KernelErrno, fail, userBuf } from './errno.js';
import type { IoctlArg } from './file.js';
import { INTEL_IOMMU_DOMAIN, type SimKernel } from './kernel.js';
import { SimVfioDevice, type SimIovaRange, type SimLogOps } from './vfio-device.js';

const PAGE = 4096;
const IMAGE_MAGIC = 0x444d4131; // 'DMA1'
const IMAGE_SIZE = 40;

/** How the device's writes reach memory (see the module comment). */
export type DmaMode = 'iommu' | 'pin' | 'rw';

/** Options of {@link addDmaDevice}. */
export interface DmaDeviceOptions {
  readonly mode: DmaMode;
  /** PCI address (`'iommu'`, default `0000:00:05.0`) or mdev UUID (`'pin'`, `'rw'`). */
  readonly name?: string;
  /** Offer device DMA logging (default true). */
  readonly logging?: boolean;
  /** The page size the device logs at, whatever START asked for (default: as asked). */
  readonly logPageSize?: bigint;
  /** The IOMMU can track dirty pages for iommufd (`'iommu'` mode; default true). */
  readonly iommuDirtyTracking?: boolean;
  /** Seed of the write pattern (default 1). */
  readonly seed?: number;
}

/** Where the engine writes. */
export interface DmaWindow {
  readonly iova: bigint;
  /** Bytes, a multiple of 4096. */
  readonly size: number;
  /** Bytes per write, at most 4096 (default 64); a write never crosses a page. */
  readonly writeBytes?: number;
}

/** One simulated DMA device. */
export class SimDmaDevice extends SimVfioDevice implements DmaDeviceState {
  override readonly name: string;
  readonly mode: DmaMode;
  override readonly migration: DmaDeviceMigration;
  override readonly log: SimLogOps | undefined;
  readonly imageSize = IMAGE_SIZE;
  /** Writes that faulted (IOVA not mapped, not writable). */
  faults = 0;
  #prng: number;
  #writes = 0;
  #window: DmaWindow | null = null;
  /** The type1 instance the window is pinned in (`'pin'` mode). */
  #pinnedIn: object | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  #logRanges: readonly SimIovaRange[] | null = null;
  #logPage = 0n;
  readonly #logged = new Set<bigint>();

  constructor(
    name: string,
    options: DmaDeviceOptions,
    /** The kernel the device is plugged into: its DMA goes through that kernel's IOMMUs. */
    private readonly host: SimKernel,
  ) {
    super();
    this.name = name;
    this.mode = options.mode;
    this.#prng = (options.seed ?? 1) >>> 0 || 1;
    this.migration = new DmaDeviceMigration(this);
    const forcedPage = options.logPageSize;
    this.log =
      options.logging === false
        ? undefined
        : {
            start: (ranges, pageSize) => {
              if (this.#logRanges !== null) fail('EBUSY');
              this.#logRanges = ranges;
              this.#logPage = forcedPage ?? pageSize;
              this.#logged.clear();
              return this.#logPage;
            },
            stop: () => {
              this.#logRanges = null;
              this.#logged.clear();
            },
            readAndClear: (iova, length, setDirty) => {
              for (const page of [...this.#logged]) {
                if (page + this.#logPage <= iova || page >= iova + length) continue;
                this.#logged.delete(page);
                setDirty(page, this.#logPage);
              }
            },
          };
  }

  /** Writes done so far (migrates with the device). */
  get writes(): number {
    return this.#writes;
  }

  /** The window the engine writes into, or null. */
  get window(): DmaWindow | null {
    return this.#window;
  }

  /** Points the engine at `window` (null: idle). */
  configure(window: DmaWindow | null): void {
    if (window !== null && (window.size <= 0 || window.size % PAGE !== 0 || window.iova % BigInt(PAGE) !== 0n)) {
      throw new RangeError(`DMA window [0x${window.iova.toString(16)}, +${window.size}) must be page-aligned and non-empty`);
    }
    this.#window = window;
    this.#pinnedIn = null;
  }

  /**
   * Performs up to `n` writes now, if the device is in a state that allows
   * DMA and has a window; returns how many were attempted.
   */
  step(n: number): number {
    const w = this.#window;
    if (w === null || !dmaAllowed(this.migration.state)) return 0;
    const bytes = Math.min(w.writeBytes ?? 64, PAGE);
    const pages = w.size / PAGE;
    const data = new Uint8Array(bytes);
    for (let i = 0; i < n; i++) {
      const hot = this.#next() % 4 !== 0;
      const span = Math.max(1, Math.floor(pages / 16));
      const center = Math.floor(this.#writes / 32) % pages;
      const page = hot ? (center + (this.#next() % span)) % pages : this.#next() % pages;
      const offset = Math.floor((this.#next() % (PAGE - bytes + 1)) / 8) * 8;
      for (let b = 0; b < bytes; b++) data[b] = this.#next() & 0xff;
      this.#write(w.iova + BigInt(page * PAGE + offset), data);
      this.#writes++;
    }
    return n;
  }

  /** Runs the engine on a timer: `perTick` writes every `intervalMs` (the timer does not keep Node alive). */
  run(intervalMs: number, perTick: number): void {
    this.halt();
    this.#timer = setInterval(() => this.step(perTick), intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer. */
  halt(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  // ------------------------------------------------------------ DmaDeviceState

  saveImage(): Uint8Array {
    const image = new Uint8Array(IMAGE_SIZE);
    const dv = dataView(image);
    dv.setUint32(0, IMAGE_MAGIC, true);
    dv.setUint32(4, this.#prng, true);
    dv.setUint32(8, this.#window?.writeBytes ?? 64, true);
    dv.setUint32(12, this.#window === null ? 0 : 1, true);
    dv.setBigUint64(16, BigInt(this.#writes), true);
    dv.setBigUint64(24, this.#window?.iova ?? 0n, true);
    dv.setBigUint64(32, BigInt(this.#window?.size ?? 0), true);
    return image;
  }

  loadImage(image: Uint8Array): void {
    const dv = dataView(image);
    if (image.byteLength !== IMAGE_SIZE || dv.getUint32(0, true) !== IMAGE_MAGIC) fail('EINVAL');
    this.#prng = dv.getUint32(4, true) || 1;
    this.#writes = Number(dv.getBigUint64(16, true));
    const has = dv.getUint32(12, true) === 1;
    this.configure(has ? { iova: dv.getBigUint64(24, true), size: Number(dv.getBigUint64(32, true)), writeBytes: dv.getUint32(8, true) } : null);
  }

  // ------------------------------------------------------------ vfio_device_ops

  override closeDevice(): void {
    this.halt();
    this.log?.stop();
    this.migration.reset();
  }

  /** A vfio-pci-like device with no BARs and no interrupts: only what the library reads at open. */
  override ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_DEVICE_GET_INFO: {
        // minsz is offsetofend(num_irqs): cap_offset and pad are left alone.
        const dv = dataView(userBuf(arg, 16));
        if (dv.getUint32(0, true) < 16) fail('EINVAL');
        dv.setUint32(4, VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, true);
        dv.setUint32(8, VFIO_PCI_NUM_REGIONS, true);
        dv.setUint32(12, VFIO_PCI_NUM_IRQS, true);
        return 0;
      }
      case VFIO_DEVICE_GET_REGION_INFO: {
        const buf = userBuf(arg, vfio_region_info.size);
        const r = decode(vfio_region_info, buf);
        if (r.argsz < vfio_region_info.size || r.index >= VFIO_PCI_NUM_REGIONS) fail('EINVAL');
        encode(vfio_region_info, { flags: 0, cap_offset: 0, size: 0n, offset: BigInt(r.index) << 40n }, buf);
        return 0;
      }
      case VFIO_DEVICE_GET_IRQ_INFO: {
        const buf = userBuf(arg, vfio_irq_info.size);
        const i = decode(vfio_irq_info, buf);
        if (i.argsz < vfio_irq_info.size || i.index >= VFIO_PCI_NUM_IRQS) fail('EINVAL');
        encode(vfio_irq_info, { flags: 0, count: 0 }, buf);
        return 0;
      }
      case VFIO_DEVICE_RESET:
        this.migration.reset();
        return 0;
      default:
        fail('ENOTTY');
    }
  }

  // ------------------------------------------------------------ internals

  /** xorshift32. */
  #next(): number {
    let x = this.#prng;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#prng = x;
    return x;
  }

  #write(iova: bigint, data: Uint8Array): void {
    const kernel = this.host;
    try {
      if (this.mode === 'rw') {
        const iommu = kernel.type1Of(this);
        if (iommu === null) fail('EFAULT');
        iommu.dmaRw(iova, data, true);
      } else {
        if (this.mode === 'pin') this.#pinWindow(kernel);
        kernel.dmaTranslate(this)(iova, data.byteLength, true).set(data);
      }
    } catch (e) {
      if (!(e instanceof KernelErrno)) throw e;
      this.faults++;
      return;
    }
    this.#logWrite(iova, BigInt(data.byteLength));
  }

  /** `vfio_pin_pages` of the whole window, once per container. */
  #pinWindow(kernel: SimKernel): void {
    const iommu = kernel.type1Of(this);
    const w = this.#window;
    if (iommu === null || w === null || this.#pinnedIn === iommu) return;
    iommu.pinPages(kernel.groupOf(this).id, w.iova, w.size / PAGE);
    this.#pinnedIn = iommu;
  }

  #logWrite(iova: bigint, length: bigint): void {
    const ranges = this.#logRanges;
    if (ranges === null) return;
    const pg = this.#logPage;
    for (let p = iova - (iova % pg); p < iova + length; p += pg) {
      if (ranges.some((r) => p >= r.start && p <= r.last)) this.#logged.add(p);
    }
  }
}

/**
 * Plugs a DMA device into `kernel`: a PCI device behind an IOMMU (`'iommu'`)
 * or an mdev (`'pin'`, `'rw'`).
 */
export function addDmaDevice(kernel: SimKernel, options: DmaDeviceOptions): SimDmaDevice {
  if (options.mode === 'iommu') {
    const bdf = options.name ?? '0000:00:05.0';
    const dev = new SimDmaDevice(bdf, options, kernel);
    kernel.addPciDevice(dev, { bdf, vendor: 0x1b36, device: 0x0005, domain: INTEL_IOMMU_DOMAIN, iommuDirtyTracking: options.iommuDirtyTracking ?? true });
    return dev;
  }
  const uuid = options.name ?? 'd3a0d3a0-0000-4000-8000-00000000d3a0';
  const dev = new SimDmaDevice(uuid, options, kernel);
  kernel.addMdev(dev, { parent: '/sys/devices/virtual/simdma/simdma', type: 'simdma-1', typeName: 'Simulated DMA engine' });
  return dev;
}
