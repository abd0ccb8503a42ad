/**
 * A PCI Express test function for the PCI layer's tests, with everything
 * edu lacks: PM, MSI with several vectors and per-vector masking, MSI-X
 * (table and PBA in a BAR), PCI Express with FLR, a vendor-specific
 * capability, extended capabilities (AER, DSN, L1SS, ARI, LTR), a 64-bit
 * prefetchable RAM BAR that its driver exposes through sparse mmap areas,
 * an expansion ROM and a device-specific region. Its driver is a variant of
 * vfio-pci ({@link SimTestDevDriver}); with `msixMappable: false` it behaves
 * like vfio-pci before Linux 4.16, keeping the MSI-X table's pages out of
 * the BAR's mmap (a SPARSE_MMAP capability instead of MSIX_MAPPABLE).
 *
 * Layout:
 * - capabilities, in chain order: PM 0x40 (PME support in all states, which
 *   vfio-pci hides), MSI 0x50 (64-bit, per-vector masking), MSI-X 0x70,
 *   Express 0x80 (v2 endpoint, FLR), vendor-specific 0xc0 (16 bytes, a
 *   writable register at 0xc8);
 *   extended: AER 0x100 (its uncorrectable mask writable in the device), DSN
 *   0x148, L1SS 0x154 (vfio-pci unlinks it), ARI 0x160, LTR 0x170.
 * - BAR0: 4 KiB of registers: 0x00 id (0x7e57de71), 0x04 scratch, 0x08
 *   write n to fire MSI-X vector n, 0x0c write n to fire MSI vector n, 0x10
 *   INTx level (write 1 or 0). Any width.
 * - BAR2: 16 KiB of memory holding the MSI-X table at 0 and the PBA at 0x3000.
 * - BAR4 (and BAR5, its upper half): 64 KiB of prefetchable 64-bit memory;
 *   mmappable at [0, 0x4000) and [0x8000, 0x10000) only.
 * - ROM: 1 KiB image (a 2 KiB BAR).
 * - Region 9: a 4 KiB read-only device-specific region, type
 *   `VFIO_REGION_TYPE_PCI_VENDOR_TYPE | 0x1b36`, subtype 1.
 * - With `migration: true`, v2 migration (STOP_COPY, P2P, PRE_COPY) of a
 *   small state image sent in stop-copy: "TDV1", the scratch register, the
 *   INTx level and BAR4's 64 KiB, little-endian.
 */
import { readLe } from '../bytes.js';
import { PCI_CAP_ID_VNDR, PCI_EXT_CAP_ID_ARI, PCI_EXT_CAP_ID_DSN, PCI_EXT_CAP_ID_ERR, PCI_EXT_CAP_ID_L1SS, PCI_EXT_CAP_ID_LTR } from '../pci/regs.js';
import type { MmioWidth } from '../sys/mmio.js';
import { VFIO_REGION_INFO_FLAG_READ } from '../vfio/uapi/constants.js';
import type { SparseArea } from '../vfio/uapi/info.js';
import { dataView } from '../vfio/uapi/layout.js';
import { fail } from './errno.js';
import type { SimKernel } from './kernel.js';
import { SimConfigBuilder } from './pci-config-builder.js';
import { SimPciFunction } from './pci-function.js';
import { addVfioPci, SimVfioPciDevice, type SimPciStateImage, type SimVfioPciOptions } from './vfio-pci.js';

/** The test function's identification register (BAR0 + 0). */
export const TESTDEV_ID = 0x7e57de71;
export const TESTDEV_VENDOR = 0x1b36;
export const TESTDEV_DEVICE = 0x0101;
/** BAR0 registers. */
export const TESTDEV_REG_SCRATCH = 0x04;
export const TESTDEV_REG_FIRE_MSIX = 0x08;
export const TESTDEV_REG_FIRE_MSI = 0x0c;
export const TESTDEV_REG_INTX = 0x10;
/** Where the MSI-X structures live in BAR2. */
export const TESTDEV_MSIX_BAR = 2;
export const TESTDEV_PBA_OFFSET = 0x3000;
/** BAR4's mmappable areas. */
export const TESTDEV_BAR4_AREAS: readonly SparseArea[] = [
  { offset: 0, size: 0x4000 },
  { offset: 0x8000, size: 0x8000 },
];
/** `VFIO_REGION_TYPE_PCI_VENDOR_TYPE | vendor`: the device-specific region's type. */
export const TESTDEV_REGION_TYPE = (0x80000000 | TESTDEV_VENDOR) >>> 0;
export const TESTDEV_REGION_SUBTYPE = 1;

const PAGE = 4096;
const BAR0 = { kind: 'mem32', size: 0x1000, address: 0xfd000000n } as const;
const BAR2 = { kind: 'mem32', size: 0x4000, address: 0xfd004000n, ram: true } as const;
const BAR4 = { kind: 'mem64', size: 0x10000, prefetchable: true, address: 0x8_0000_0000n, ram: true } as const;
/** "TDV1" little-endian: the first word of the migration state image. */
const IMAGE_MAGIC = 0x31564454;
/** Magic, scratch and INTx level before BAR4's bytes. */
const IMAGE_HEADER = 12;

/** Options of the test function. */
export interface TestDevOptions extends SimVfioPciOptions {
  /** The PCI address (default `0000:00:07.0`). */
  readonly bdf?: string;
  /** MSI vectors the function is capable of (a power of two up to 32; default 4). */
  readonly msiVectors?: number;
  /** MSI-X table entries (default 16, at most 256 here). */
  readonly msixEntries?: number;
  /** The driver reports MSIX_MAPPABLE (default true, as vfio-pci since 4.16). */
  readonly msixMappable?: boolean;
  /** The driver offers v2 migration of the function's state (default false). */
  readonly migration?: boolean;
}

/** The test function's hardware. */
export class SimTestDev extends SimPciFunction implements SimPciStateImage {
  readonly imageSize = IMAGE_HEADER + BAR4.size;
  #scratch = 0;
  #intx = false;

  constructor(options: TestDevOptions = {}) {
    const entries = options.msixEntries ?? 16;
    if (!Number.isInteger(entries) || entries < 1 || entries > 256) throw new RangeError(`msixEntries ${entries} is not 1-256`);
    const rom = new Uint8Array(1024);
    rom.set([0x55, 0xaa, 0x02]);
    const config = new SimConfigBuilder({
      vendor: TESTDEV_VENDOR,
      device: TESTDEV_DEVICE,
      revision: 0x01,
      classCode: 0xff0000,
      subsystemVendor: 0x1af4,
      subsystemId: 0x1100,
      interruptPin: 1,
      interruptLine: 0x0a,
      command: 0x0006,
      size: 4096,
    })
      .bar(0, BAR0)
      .bar(2, BAR2)
      .bar(4, BAR4)
      .rom(2048, 0xfd010000n)
      // QEMU links new capabilities at the head: added last, listed first.
      .capability(PCI_CAP_ID_VNDR, 0xc0, 16)
      .set(0xc2, [16, 0xde, 0xad, 0xbe, 0xef])
      .writable(0xc8, 4, 0xffffffff)
      .express(0x80, true)
      .msix(0x70, entries, { bar: TESTDEV_MSIX_BAR, offset: 0 }, { bar: TESTDEV_MSIX_BAR, offset: TESTDEV_PBA_OFFSET })
      .msi(0x50, options.msiVectors ?? 4, true, true)
      .pm(0x40, 0xfe03)
      .extCapability(PCI_EXT_CAP_ID_ERR, 2, 0x100, 0x48)
      .writable(0x108, 4, 0xffffffff)
      .extCapability(PCI_EXT_CAP_ID_DSN, 1, 0x148, 12, new Uint8Array([0x78, 0x56, 0x34, 0x12, 0x00, 0xef, 0xcd, 0xab]))
      .extCapability(PCI_EXT_CAP_ID_L1SS, 1, 0x154, 12)
      .extCapability(PCI_EXT_CAP_ID_ARI, 1, 0x160, 8)
      .extCapability(PCI_EXT_CAP_ID_LTR, 1, 0x170, 8)
      .build();
    super({ config, bars: [BAR0, undefined, BAR2, undefined, BAR4, undefined], rom });
  }

  /** The device fires MSI-X vector `vector` (pending if masked). */
  fireMsix(vector: number): void {
    this.msixNotify(vector);
  }

  /** The device fires MSI vector `vector` (pending if masked). */
  fireMsi(vector: number): void {
    this.msiNotify(vector);
  }

  /** The migration state image: magic, scratch register, INTx level, BAR4. */
  saveImage(): Uint8Array {
    const image = new Uint8Array(this.imageSize);
    const dv = dataView(image);
    dv.setUint32(0, IMAGE_MAGIC, true);
    dv.setUint32(4, this.#scratch, true);
    dv.setUint32(8, this.#intx ? 1 : 0, true);
    image.set(this.#bar4(), IMAGE_HEADER);
    return image;
  }

  /** Takes a state image; EINVAL for one that is not the test function's. */
  loadImage(image: Uint8Array): void {
    const dv = dataView(image);
    if (image.byteLength !== this.imageSize || dv.getUint32(0, true) !== IMAGE_MAGIC || dv.getUint32(8, true) > 1) fail('EINVAL');
    this.#scratch = dv.getUint32(4, true);
    this.#bar4().set(image.subarray(IMAGE_HEADER));
    this.setIntx(dv.getUint32(8, true) === 1);
  }

  /** The device drives its INTx pin. */
  setIntx(level: boolean): void {
    this.#intx = level;
    this.setIrqLevel(level);
  }

  protected override mmioRead(_bar: number, offset: number, width: MmioWidth): bigint {
    const regs = new Uint8Array(0x14);
    const dv = new DataView(regs.buffer);
    dv.setUint32(0x00, TESTDEV_ID, true);
    dv.setUint32(TESTDEV_REG_SCRATCH, this.#scratch, true);
    dv.setUint32(TESTDEV_REG_INTX, this.#intx ? 1 : 0, true);
    return readLe(regs, offset, width);
  }

  protected override mmioWrite(_bar: number, offset: number, _width: MmioWidth, value: bigint): void {
    const v = Number(value & 0xffff_ffffn);
    if (offset === TESTDEV_REG_SCRATCH) this.#scratch = v;
    else if (offset === TESTDEV_REG_FIRE_MSIX) this.msixNotify(v);
    else if (offset === TESTDEV_REG_FIRE_MSI) this.msiNotify(v);
    else if (offset === TESTDEV_REG_INTX) this.setIntx(v !== 0);
  }

  /** FLR clears the registers. */
  protected override resetDevice(): void {
    this.#scratch = 0;
    this.#intx = false;
  }

  #bar4(): Uint8Array {
    const ram = this.bars[4]?.ram;
    if (ram === null || ram === undefined) throw new Error('the test function has lost its BAR4 memory');
    return ram;
  }
}

/** The test function's variant driver: sparse BAR4, optionally an unmappable MSI-X table, and region 9. */
export class SimTestDevDriver extends SimVfioPciDevice<SimTestDev> {
  readonly #msixMappable: boolean;
  /** Region 9's contents. */
  readonly regionData = new Uint8Array(PAGE).map((_, i) => i & 0xff);

  constructor(bdf: string, fn: SimTestDev, options: TestDevOptions = {}) {
    super(bdf, fn, options);
    this.#msixMappable = options.msixMappable ?? true;
    if (options.migration === true) this.enableMigration(fn);
    this.registerRegion({
      type: TESTDEV_REGION_TYPE,
      subtype: TESTDEV_REGION_SUBTYPE,
      size: PAGE,
      flags: VFIO_REGION_INFO_FLAG_READ,
      rw: (buf, pos, write) => {
        // Like vfio_pci_igd_rw: read-only, cut at the end.
        if (write || pos >= PAGE) fail('EINVAL');
        const n = Math.min(buf.byteLength, PAGE - pos);
        buf.set(this.regionData.subarray(pos, pos + n));
        return n;
      },
    });
  }

  protected override mmapAreas(index: number): readonly SparseArea[] | undefined {
    if (index === 4) return TESTDEV_BAR4_AREAS;
    const msix = this.fn.msix?.layout;
    if (index !== TESTDEV_MSIX_BAR || this.#msixMappable || msix === undefined) return undefined;
    // vfio-pci before 4.16 (msix_sparse_mmap_cap): the table's pages are left out.
    const start = Math.floor(msix.tableOffset / PAGE) * PAGE;
    const end = Math.ceil((msix.tableOffset + msix.entries * 16) / PAGE) * PAGE;
    const size = BAR2.size;
    return [
      { offset: 0, size: start },
      { offset: end, size: size - end },
    ].filter((a) => a.size > 0);
  }
}

/** Plugs a test function into `kernel` behind the emulated Intel IOMMU. */
export function addTestDev(kernel: SimKernel, options: TestDevOptions = {}): SimTestDevDriver {
  return addVfioPci(kernel, new SimTestDevDriver(options.bdf ?? '0000:00:07.0', new SimTestDev(options), options));
}
