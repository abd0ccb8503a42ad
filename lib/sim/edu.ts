/**
 * QEMU's educational PCI device (hw/misc/edu.c) as an emulated function
 * behind the simulated vfio-pci, matching the test guest's edu byte for
 * byte: config header, one 64-bit MSI vector at 0x40, INTA, and a 1 MiB
 * BAR0 of registers that accepts only naturally aligned 4- and 8-byte
 * accesses (others read 0 and are dropped, as QEMU's memory core answers an
 * invalid access).
 *
 * Registers (BAR0):
 * - 0x00 identification, 0x010000ed; 0x04 liveness (reads the bitwise NOT of
 *   the last value written).
 * - 0x08 factorial: write n (ignored while computing), poll status 0x20 bit 0
 *   (computing), read n! (32-bit, wrapping). Status bit 7 (0x80) raises
 *   FACT_IRQ (0x1) when done. The result comes a turn of the event loop
 *   after the write (`factDelayMs`), like edu's thread.
 * - 0x24 interrupt status; 0x60 raises the written bits, 0x64 lowers them.
 *   Raising sends MSI vector 0 when MSI is enabled in the function, else
 *   asserts INTx until every bit is lowered.
 * - DMA (4- or 8-byte registers): 0x80 source, 0x88 destination, 0x90 count,
 *   0x98 command. Writing the command with bit 0 (run) starts a transfer
 *   that completes after `dmaDelayMs` (100 ms of virtual time on QEMU);
 *   bit 1 set copies edu's 4 KiB buffer (device address 0x40000) to the
 *   IOVA, clear copies the IOVA into the buffer; bit 2 raises DMA_IRQ
 *   (0x100) when done. The registers ignore writes while a transfer runs.
 *   IOVAs are masked to 28 bits (`dmaMask`). The transfer goes through the
 *   IOMMU the group is attached to (type1's `translate`), needs bus
 *   mastering (command bit 2), and faults are recorded in `dmaFaults`.
 *   The guest's QEMU (7.2) requires a transfer of at least one byte that
 *   ends strictly before the end of the buffer, and otherwise stops the
 *   whole VM (`hw_error`); the simulator records such a transfer in
 *   `guestErrors` and does not copy.
 *
 * The real edu cannot migrate. With `migration: true` (simulator only) its
 * driver offers v2 migration of a state image, so the config-state tests
 * have a migratable MSI device: "EDU1", the liveness, factorial, status and
 * interrupt status registers (u32), the DMA registers (u64) and the 4 KiB
 * buffer, little-endian. A transfer or computation in flight is not carried.
 */
import type { MmioWidth } from '../sys/mmio.js';
import { dataView } from '../vfio/uapi/layout.js';
import { fail } from './errno.js';
import type { SimKernel } from './kernel.js';
import { SimConfigBuilder } from './pci-config-builder.js';
import { SimPciFunction } from './pci-function.js';
import { addVfioPci, SimVfioPciDevice, type SimPciStateImage } from './vfio-pci.js';

/** BAR0's size. */
export const EDU_BAR0_SIZE = 1 << 20;
/** The DMA buffer's device address (`DMA_START`). */
export const EDU_DMA_START = 0x40000n;
/** The DMA buffer's size (`DMA_SIZE`). */
export const EDU_DMA_SIZE = 4096;
/** Interrupt status bits edu raises itself. */
export const EDU_FACT_IRQ = 0x1;
export const EDU_DMA_IRQ = 0x100;
/** Status register bits. */
export const EDU_STATUS_COMPUTING = 0x01;
export const EDU_STATUS_IRQFACT = 0x80;
/** DMA command bits. */
export const EDU_DMA_RUN = 0x1n;
export const EDU_DMA_TO_PCI = 0x2n;
export const EDU_DMA_IRQ_ENABLE = 0x4n;

const ALL_ONES = 0xffff_ffff_ffff_ffffn;
/** The DMA registers by offset (0x98, the command, is written on its own path). */
const DMA_REGS = new Map<number, 'src' | 'dst' | 'cnt' | 'cmd'>([
  [0x80, 'src'],
  [0x88, 'dst'],
  [0x90, 'cnt'],
  [0x98, 'cmd'],
]);
/** BAR0 where the guest's firmware put it. */
const BAR0 = { kind: 'mem32', size: EDU_BAR0_SIZE, address: 0xfea00000n } as const;
/** "EDU1" little-endian: the first word of the migration state image. */
const IMAGE_MAGIC = 0x31554445;
/** Magic, four u32 registers and four u64 DMA registers before the buffer. */
const IMAGE_HEADER = 4 + 4 * 4 + 4 * 8;
const DMA_FIELDS = ['src', 'dst', 'cnt', 'cmd'] as const;

/** Options of {@link addEdu}. */
export interface EduOptions {
  /** The PCI address (default `0000:00:06.0`, as on the test guest). */
  readonly bdf?: string;
  /** Milliseconds from a DMA command to its completion (default 100, QEMU's virtual-time delay). */
  readonly dmaDelayMs?: number;
  /** Milliseconds from a factorial write to its result (default 0: the next turn of the event loop). */
  readonly factDelayMs?: number;
  /** Simulator only: the driver offers v2 migration of edu's registers and buffer (default false). */
  readonly migration?: boolean;
}

/** The edu hardware. */
export class SimEdu extends SimPciFunction implements SimPciStateImage {
  readonly imageSize = IMAGE_HEADER + EDU_DMA_SIZE;
  /** DMA addresses are masked with this (`dma_mask`, 28 bits). */
  dmaMask = (1n << 28n) - 1n;
  /** The device's 4 KiB DMA buffer. */
  readonly dmaBuffer = new Uint8Array(EDU_DMA_SIZE);
  /** Transfers on which QEMU 7.2's edu calls `hw_error` (and the VM dies), oldest first. */
  readonly guestErrors: string[] = [];
  dmaDelayMs: number;
  factDelayMs: number;
  #addr4 = 0;
  #fact = 0;
  #status = 0;
  #irqStatus = 0;
  readonly #dma = { src: 0n, dst: 0n, cnt: 0n, cmd: 0n };
  #dmaTimer: NodeJS.Timeout | null = null;

  constructor(options: Pick<EduOptions, 'dmaDelayMs' | 'factDelayMs'> = {}) {
    const config = new SimConfigBuilder({
      vendor: 0x1234,
      device: 0x11e8,
      revision: 0x10,
      classCode: 0x00ff00,
      subsystemVendor: 0x1af4,
      subsystemId: 0x1100,
      interruptPin: 1,
      interruptLine: 0x0b,
      command: 0x0103,
      size: 256,
    })
      .bar(0, BAR0)
      .msi(0x40, 1, true, false)
      .build();
    super({ config, bars: [BAR0] });
    this.dmaDelayMs = options.dmaDelayMs ?? 100;
    this.factDelayMs = options.factDelayMs ?? 0;
  }

  /** The interrupt status register (0x24). */
  get irqStatus(): number {
    return this.#irqStatus;
  }

  /** A DMA is in flight. */
  get dmaRunning(): boolean {
    return (this.#dma.cmd & EDU_DMA_RUN) !== 0n;
  }

  /** The migration state image (see the module comment). */
  saveImage(): Uint8Array {
    const image = new Uint8Array(this.imageSize);
    const dv = dataView(image);
    [IMAGE_MAGIC, this.#addr4, this.#fact, this.#status, this.#irqStatus].forEach((v, i) => dv.setUint32(4 * i, v, true));
    DMA_FIELDS.forEach((f, i) => dv.setBigUint64(20 + 8 * i, this.#dma[f], true));
    image.set(this.dmaBuffer, IMAGE_HEADER);
    return image;
  }

  /** Takes a state image; EINVAL for one that is not edu's. */
  loadImage(image: Uint8Array): void {
    const dv = dataView(image);
    if (image.byteLength !== this.imageSize || dv.getUint32(0, true) !== IMAGE_MAGIC) fail('EINVAL');
    [this.#addr4, this.#fact, this.#status, this.#irqStatus] = [1, 2, 3, 4].map((i) => dv.getUint32(4 * i, true));
    DMA_FIELDS.forEach((f, i) => {
      this.#dma[f] = dv.getBigUint64(20 + 8 * i, true);
    });
    this.dmaBuffer.set(image.subarray(IMAGE_HEADER));
  }

  /** `edu_mmio_read`, behind QEMU's access-size and alignment check. */
  protected override mmioRead(_bar: number, addr: number, size: MmioWidth): bigint {
    if ((size !== 4 && size !== 8) || addr % size !== 0) return 0n;
    if (size !== 4 && addr < 0x80) return truncate(ALL_ONES, size);
    let val = ALL_ONES;
    switch (addr) {
      case 0x00:
        val = 0x010000edn;
        break;
      case 0x04:
        val = BigInt(this.#addr4);
        break;
      case 0x08:
        val = BigInt(this.#fact);
        break;
      case 0x20:
        val = BigInt(this.#status);
        break;
      case 0x24:
        val = BigInt(this.#irqStatus);
        break;
      default: {
        const reg = DMA_REGS.get(addr);
        if (reg !== undefined) val = this.#dma[reg];
      }
    }
    return truncate(val, size);
  }

  /** `edu_mmio_write`, behind QEMU's access-size and alignment check. */
  protected override mmioWrite(_bar: number, addr: number, size: MmioWidth, value: bigint): void {
    if ((size !== 4 && size !== 8) || addr % size !== 0) return;
    if (size !== 4 && addr < 0x80) return;
    const val32 = Number(value & 0xffff_ffffn);
    switch (addr) {
      case 0x04:
        this.#addr4 = ~val32 >>> 0;
        break;
      case 0x08:
        if ((this.#status & EDU_STATUS_COMPUTING) !== 0) break;
        this.#fact = val32;
        this.#status |= EDU_STATUS_COMPUTING;
        setTimeout(() => this.#computeFactorial(), this.factDelayMs);
        break;
      case 0x20:
        if ((val32 & EDU_STATUS_IRQFACT) !== 0) this.#status |= EDU_STATUS_IRQFACT;
        else this.#status &= ~EDU_STATUS_IRQFACT;
        break;
      case 0x60:
        this.#raise(val32);
        break;
      case 0x64:
        this.#lower(val32);
        break;
      case 0x98:
        if ((value & EDU_DMA_RUN) === 0n || this.dmaRunning) break;
        this.#dma.cmd = value;
        this.#dmaTimer = setTimeout(() => this.#dmaDone(), this.dmaDelayMs);
        break;
      default: {
        // dma_rw: the DMA registers ignore writes while a transfer runs.
        const reg = DMA_REGS.get(addr);
        if (reg !== undefined && !this.dmaRunning) this.#dma[reg] = value;
      }
    }
  }

  /** QEMU's edu registers no reset handler: its registers survive a reset; a pending DMA is dropped with the function. */
  protected override resetDevice(): void {
    if (this.#dmaTimer !== null) clearTimeout(this.#dmaTimer);
    this.#dmaTimer = null;
  }

  /** `edu_raise_irq`. */
  #raise(bits: number): void {
    this.#irqStatus = (this.#irqStatus | bits) >>> 0;
    if (this.#irqStatus === 0) return;
    if (this.msiEnabled) this.msiNotify(0);
    else this.setIrqLevel(true);
  }

  /** `edu_lower_irq`. */
  #lower(bits: number): void {
    this.#irqStatus = (this.#irqStatus & ~bits) >>> 0;
    if (this.#irqStatus === 0 && !this.msiEnabled) this.setIrqLevel(false);
  }

  /** `edu_fact_thread`: n! in 32-bit arithmetic, then FACT_IRQ if asked. */
  #computeFactorial(): void {
    let ret = 1;
    for (let n = this.#fact; n > 0; n--) ret = Math.imul(ret, n) >>> 0;
    this.#fact = ret;
    this.#status &= ~EDU_STATUS_COMPUTING;
    if ((this.#status & EDU_STATUS_IRQFACT) !== 0) this.#raise(EDU_FACT_IRQ);
  }

  /** `edu_dma_timer`. */
  #dmaDone(): void {
    this.#dmaTimer = null;
    const dma = this.#dma;
    if ((dma.cmd & EDU_DMA_RUN) === 0n) return;
    const toPci = (dma.cmd & EDU_DMA_TO_PCI) !== 0n;
    const local = toPci ? dma.src : dma.dst;
    const cnt = dma.cnt;
    const end = BigInt.asUintN(64, local + cnt);
    const bufEnd = EDU_DMA_START + BigInt(EDU_DMA_SIZE);
    // edu_check_range of QEMU 7.2: within(addr) && end > addr && within(end), `within` excluding the end.
    const within = (a: bigint): boolean => a >= EDU_DMA_START && a < bufEnd;
    if (!(within(local) && end > local && within(end))) {
      this.guestErrors.push(`EDU: DMA range 0x${local.toString(16)}-0x${(end - 1n).toString(16)} out of bounds (0x${EDU_DMA_START.toString(16)}-0x${(bufEnd - 1n).toString(16)})!`);
    } else {
      const at = Number(local - EDU_DMA_START);
      const n = Number(cnt);
      if (toPci) this.dmaWrite(dma.dst & this.dmaMask, this.dmaBuffer.subarray(at, at + n));
      else this.dmaBuffer.set(this.dmaRead(dma.src & this.dmaMask, n), at);
    }
    dma.cmd &= ~EDU_DMA_RUN;
    if ((dma.cmd & EDU_DMA_IRQ_ENABLE) !== 0n) this.#raise(EDU_DMA_IRQ);
  }
}

function truncate(v: bigint, size: MmioWidth): bigint {
  return BigInt.asUintN(8 * size, v);
}

/**
 * Plugs an edu into `kernel`, bound to vfio-pci behind the emulated Intel
 * IOMMU as on the test guest. The returned device's `fn` is the edu.
 */
export function addEdu(kernel: SimKernel, options: EduOptions = {}): SimVfioPciDevice<SimEdu> {
  const driver = new SimVfioPciDevice(options.bdf ?? '0000:00:06.0', new SimEdu(options));
  if (options.migration === true) driver.enableMigration(driver.fn);
  return addVfioPci(kernel, driver);
}
