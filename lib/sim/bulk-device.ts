/**
 * A simulated migratable PCI-ish mdev with a large state (16 MiB ... 1 GiB or
 * more) that changes while it runs: for convergence, downtime and throughput
 * work, and fault sweeps. What it offers:
 *
 * - v2 migration with STOP_COPY, P2P and PRE_COPY (each optional), whose
 *   precopy `initial_bytes` drain as read and `dirty_bytes` rise with device
 *   writes and fall as read, ENOMSG at the temporary end of precopy data, and
 *   a MIG_DATA_SIZE estimate (see `bulk-stream.ts` for the stream);
 * - a workload the test or bench drives: {@link SimBulkDevice.tick} writes
 *   pages (only while the device runs);
 * - a 256-byte conventional PCI config space whose command register is
 *   writable, so a config state has something to carry;
 * - {@link SimBulkDevice.checksum}, to compare a source and a destination;
 * - faults: a failing arc (optionally into ERROR), nonsense sizes, a
 *   truncated or failing data fd (`BulkFaultPlan`).
 *
 * Like mtty's, its VFIO_DEVICE_RESET resets the migration state machine only:
 * the data survives, so a failed migration never loses the workload's state.
 */
import { createHash, randomUUID } from 'node:crypto';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET } from '../vfio/uapi/ioctls.js';
import { dataView, decode, encode } from '../vfio/uapi/layout.js';
import { vfio_device_info, vfio_irq_info, vfio_region_info } from '../vfio/uapi/structs.js';
import type { MigrationState } from '../migration/fsm.js';
import { BulkMigration, bulkRunning, type BulkFaultPlan } from './bulk-migration.js';
import { fail } from './errno.js';
import type { IoctlArg } from './file.js';
import type { SimKernel } from './kernel.js';
import { copyIn, copyOut } from './user-struct.js';
import { SimVfioDevice } from './vfio-device.js';

export type { BulkFaultPlan } from './bulk-migration.js';

/** Region index `i` lives at device-fd offset `i << 40`, as on vfio-pci. */
const OFFSET_SHIFT = 40n;
const CONFIG_SIZE = 256;
const PCI_COMMAND = 0x04;
/** IO, MEM, MASTER, SERR and INTX_DISABLE: what QEMU lets a guest write. */
const COMMAND_WRITABLE = 0x0547;

/** Options of {@link addBulkDevice}. */
export interface BulkDeviceOptions {
  /** The mdev UUID (random by default). */
  readonly uuid?: string;
  /** Bytes of device state, a multiple of `pageSize`. */
  readonly stateSize: number;
  /** Dirty-tracking granularity in bytes (a multiple of 8). Default 4096. */
  readonly pageSize?: number;
  /** Seeds the initial content and the workload. Default 1. */
  readonly seed?: number;
  /** Offer PRE_COPY. Default true. */
  readonly precopy?: boolean;
  /** Offer the P2P states. Default true. */
  readonly p2p?: boolean;
}

/** The parent device the bulk mdevs hang from. */
export const BULK_PARENT = '/sys/devices/virtual/vfio-sim-bulk/bulk';

/** The simulated bulk-state device. */
export class SimBulkDevice extends SimVfioDevice {
  override readonly name: string;
  override readonly migration: BulkMigration;
  /** Device-side faults for tests; none by default. */
  faults: BulkFaultPlan = {};
  readonly pageSize: number;
  readonly pageCount: number;
  readonly #bytes: Uint8Array;
  readonly #config = new Uint8Array(CONFIG_SIZE);
  #prng: number;
  #generation = 0;

  /** @throws RangeError for sizes that do not fit (see {@link BulkDeviceOptions}) */
  constructor(uuid: string, options: BulkDeviceOptions) {
    super();
    const pageSize = options.pageSize ?? 4096;
    if (!Number.isSafeInteger(pageSize) || pageSize <= 0 || pageSize % 8 !== 0) throw new RangeError(`page size ${pageSize} is not a positive multiple of 8`);
    const size = options.stateSize;
    if (!Number.isSafeInteger(size) || size <= 0 || size % pageSize !== 0) throw new RangeError(`state size ${size} is not a positive multiple of ${pageSize}`);
    this.name = uuid.toLowerCase();
    this.pageSize = pageSize;
    this.pageCount = size / pageSize;
    this.#bytes = new Uint8Array(size);
    const seed = options.seed ?? 1;
    this.#prng = (seed >>> 0) || 1;
    // Distinct, resident pages: every 32-bit word of page i holds a value derived from the seed and i.
    const words = new Uint32Array(this.#bytes.buffer);
    const perPage = pageSize / 4;
    for (let i = 0; i < this.pageCount; i++) words.fill((Math.imul(seed, 0x9e3779b1) + Math.imul(i, 0x85ebca6b)) >>> 0, i * perPage, (i + 1) * perPage);
    const flags = VFIO_MIGRATION_STOP_COPY | (options.p2p === false ? 0 : VFIO_MIGRATION_P2P) | (options.precopy === false ? 0 : VFIO_MIGRATION_PRE_COPY);
    this.migration = new BulkMigration(
      {
        name: this.name,
        bytes: this.#bytes,
        pageSize,
        pageCount: this.pageCount,
        faults: () => this.faults,
        checkArc: (from, to) => this.checkArc(from, to),
      },
      flags,
    );
    const dv = dataView(this.#config);
    dv.setUint16(0x00, 0x1b36, true); // Red Hat's QEMU vendor id,
    dv.setUint16(0x02, 0x10f0, true); // a device id nobody uses
    dv.setUint8(0x08, 0x01); // revision
    dv.setUint8(0x0b, 0xff); // class: unassigned
    dv.setUint16(0x2c, 0x1b36, true);
  }

  /** Bytes of device state. */
  get stateSize(): number {
    return this.#bytes.byteLength;
  }

  /** The state itself, for a variant that exposes it (a BAR over it). */
  protected get stateBytes(): Uint8Array {
    return this.#bytes;
  }

  /** A variant driver's veto of a migration arc (`fail(...)` refuses it); the bulk device takes every arc. */
  protected checkArc(_from: MigrationState, _to: MigrationState): void {}

  /**
   * The workload: writes `bytes` worth of pages (at least one), chosen by the
   * seeded generator, if the device is running. Pages already sent in a
   * precopy session are re-sent as dirty.
   * @returns the pages written (0 while the device is stopped)
   */
  tick(bytes: number): number {
    if (!bulkRunning(this.migration.state)) return 0;
    const pages = Math.max(1, Math.ceil(bytes / this.pageSize));
    for (let i = 0; i < pages; i++) this.touch(this.#next() % this.pageCount);
    return pages;
  }

  /**
   * The device writes 8 bytes somewhere in page `page`, if it is running.
   * @returns whether it wrote
   */
  touch(page: number): boolean {
    if (!bulkRunning(this.migration.state)) return false;
    if (!Number.isInteger(page) || page < 0 || page >= this.pageCount) throw new RangeError(`no page ${page}`);
    const at = page * this.pageSize + (this.#next() % (this.pageSize / 8)) * 8;
    const dv = dataView(this.#bytes);
    dv.setUint32(at, ++this.#generation, true);
    dv.setUint32(at + 4, this.#next(), true);
    this.migration.pageWritten(page);
    return true;
  }

  /** SHA-256 of the whole state, hex. */
  checksum(): string {
    return createHash('sha256').update(this.#bytes).digest('hex');
  }

  /** A copy of `length` bytes of state at `offset`. */
  readState(offset: number, length: number): Uint8Array {
    return this.#bytes.slice(offset, offset + length);
  }

  override ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_DEVICE_GET_INFO: {
        const info = copyIn(arg, vfio_device_info, 16);
        encode(vfio_device_info, { flags: VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, num_regions: VFIO_PCI_NUM_REGIONS, num_irqs: VFIO_PCI_NUM_IRQS }, info);
        copyOut(arg, info, 16);
        return 0;
      }
      case VFIO_DEVICE_GET_REGION_INFO: {
        const info = copyIn(arg, vfio_region_info, vfio_region_info.size);
        const { index } = decode(vfio_region_info, info);
        if (index >= VFIO_PCI_NUM_REGIONS) fail('EINVAL');
        const size = index === VFIO_PCI_CONFIG_REGION_INDEX ? CONFIG_SIZE : 0;
        encode(vfio_region_info, { flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE, size: BigInt(size), offset: BigInt(index) << OFFSET_SHIFT }, info);
        copyOut(arg, info, vfio_region_info.size);
        return 0;
      }
      case VFIO_DEVICE_GET_IRQ_INFO: {
        // No interrupts: every index has no vectors.
        const info = copyIn(arg, vfio_irq_info, vfio_irq_info.size);
        if (decode(vfio_irq_info, info).index >= VFIO_PCI_NUM_IRQS) fail('EINVAL');
        encode(vfio_irq_info, { flags: 0, count: 0 }, info);
        copyOut(arg, info, vfio_irq_info.size);
        return 0;
      }
      case VFIO_DEVICE_RESET:
        this.migration.reset();
        return 0;
      default:
        fail('ENOTTY');
    }
  }

  override read(buf: Uint8Array, offset: bigint): number {
    const at = this.#configOffset(offset, buf.length);
    buf.set(this.#config.subarray(at, at + buf.length));
    return buf.length;
  }

  /** Config writes: only the command register's writable bits stick. */
  override write(buf: Uint8Array, offset: bigint): number {
    const at = this.#configOffset(offset, buf.length);
    for (let i = 0; i < buf.length; i++) {
      const reg = at + i - PCI_COMMAND;
      if (reg === 0 || reg === 1) {
        const mask = (COMMAND_WRITABLE >> (8 * reg)) & 0xff;
        this.#config[at + i] = (this.#config[at + i] & ~mask) | (buf[i] & mask);
      }
    }
    return buf.length;
  }

  override closeDevice(): void {
    this.migration.disableFiles();
  }

  /** Only the config region exists; any other offset is EINVAL, as an access past a region is. */
  #configOffset(offset: bigint, length: number): number {
    if (offset >> OFFSET_SHIFT !== BigInt(VFIO_PCI_CONFIG_REGION_INDEX)) fail('EINVAL');
    const at = Number(offset & ((1n << OFFSET_SHIFT) - 1n));
    if (at + length > CONFIG_SIZE) fail('EINVAL');
    return at;
  }

  /** xorshift32. */
  #next(): number {
    let x = this.#prng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#prng = x >>> 0;
    return this.#prng;
  }
}

/**
 * Creates a bulk device and registers it as an mdev (an emulated-IOMMU group
 * of its own, type `bulk-1`), so `VfioContainer.openDevice(uuid)` opens it.
 */
export function addBulkDevice(kernel: SimKernel, options: BulkDeviceOptions): SimBulkDevice {
  const device = new SimBulkDevice(options.uuid ?? randomUUID(), options);
  kernel.addMdev(device, { parent: BULK_PARENT, type: 'bulk-1', typeName: 'Bulk state device' });
  return device;
}
