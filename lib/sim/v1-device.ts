/**
 * A simulated PCI device with v1 migration (reference §3), as an
 * out-of-tree vendor driver of the 5.8-5.17 era offered it on top of
 * vfio-pci: BAR0 is the device's memory (trapped, so every write is seen and
 * dirties a page), config space is a plain type-0 header, and region 9 is
 * the migration region with its TYPE capability (3 / 1) and, by default, a
 * SPARSE_MMAP capability over a page-aligned data section.
 *
 * The device's state is its memory: {@link SimV1Device.checksum} is equal
 * on the source and the destination after a successful migration.
 *
 * With `savingLayout`, BAR0 is also mmappable, with vfio-ts's saving layout
 * (opt-in extension, `vfio/uapi/extensions.ts`): BAR0 is the memory
 * followed by a 4 KiB doorbell page that is not migrated, SPARSE_MMAP
 * offers both, and the saving layout keeps only the doorbell. A direct
 * mapping of the memory bypasses the dirty tracking, so the vendor refuses
 * to set SAVING (EBUSY) while one is left, and refuses such mmaps while saving.
 */
import type { V1StateBits } from '../migration/v1-state.js';
import { VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, encodeSparseAreas } from '../vfio/uapi/extensions.js';
import type { CapSpec, SparseArea } from '../vfio/uapi/info.js';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_PCI_VGA_REGION_INDEX,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_CAP_TYPE,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED,
  VFIO_REGION_TYPE_MIGRATION_DEPRECATED,
  VFIO_DEVICE_STATE_V1_SAVING,
} from '../vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET, VFIO_DEVICE_SET_IRQS } from '../vfio/uapi/ioctls.js';
import { dataView, decode, encode } from '../vfio/uapi/layout.js';
import { vfio_device_info, vfio_irq_info } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg, SimMmap } from './file.js';
import { INTEL_IOMMU_DOMAIN, type SimKernel } from './kernel.js';
import { SimMappingTracker } from './mapping-tracker.js';
import { answerRegionInfo, regionInfoRequest } from './region-info-reply.js';
import { V1DeviceMemory } from './v1-device-memory.js';
import { SimV1MigrationRegion, type V1FaultPlan, type V1Transaction } from './v1-migration-region.js';
import { SimVfioDevice } from './vfio-device.js';

export type { V1FaultPlan, V1StateWriteFault, V1Transaction } from './v1-migration-region.js';

/** `VFIO_PCI_OFFSET_SHIFT`: region `i` lives at device-fd offset `i << 40`. */
const OFFSET_SHIFT = 40n;
const OFFSET_MASK = (1n << OFFSET_SHIFT) - 1n;
/** The migration region: the first device-specific region. */
export const V1_MIGRATION_REGION_INDEX = VFIO_PCI_NUM_REGIONS;
const PAGE_SIZE = 4096;
const CONFIG_SIZE = 256;
/** Red Hat's QEMU vendor id and a device id no real device uses. */
const VENDOR_ID = 0x1b36;
const DEVICE_ID = 0x10f1;

/** Options of {@link addV1Device}. */
export interface SimV1DeviceOptions {
  /** The PCI address, `0000:00:05.0`. */
  readonly bdf: string;
  /** Device memory (BAR0) in bytes; default 64 KiB. */
  readonly memorySize?: number;
  /** Dirty-tracking page of the device memory; default 1 KiB. */
  readonly pageSize?: number;
  /** Offer the data section through SPARSE_MMAP (default true); without it the data section is trapped and data offsets need not be aligned. */
  readonly mmap?: boolean;
  /** Data section size; default 64 KiB. */
  readonly dataSectionSize?: number;
  /** Transaction sizes in bytes, used in turn; default a mix from 777 bytes to 16 KiB. */
  readonly transactionSizes?: readonly number[];
  /** Data offsets within the region, used in turn; default four spread over the data section. */
  readonly dataOffsets?: readonly number[];
  /** Bits 3-31 the vendor keeps in `device_state` (default 0); a write that changes them fails EINVAL. */
  readonly reservedBits?: number;
  /** Make BAR0 mmappable with a saving layout (see the module comment); default false. */
  readonly savingLayout?: boolean;
}

const DEFAULT_TRANSACTION_SIZES: readonly number[] = [5000, 12288, 777, 16384, 3000, 9001];

/** The simulated v1 device (`struct vfio_pci_core_device` plus the vendor's migration region). */
export class SimV1Device extends SimVfioDevice {
  override readonly name: string;
  /** Device-side faults for tests; `{}` (none) by default. */
  faults: V1FaultPlan = {};
  readonly #memory: V1DeviceMemory;
  readonly #region: SimV1MigrationRegion;
  readonly #config = configSpace();
  /** BAR0's doorbell page and live mappings, with a saving layout only. */
  readonly #bar0: { readonly doorbell: Uint8Array; readonly mappings: SimMappingTracker } | undefined;

  /** @throws RangeError for options the device cannot honour */
  constructor(options: SimV1DeviceOptions) {
    super();
    this.name = options.bdf;
    this.#memory = new V1DeviceMemory(options.memorySize ?? 64 * 1024, options.pageSize ?? 1024);
    const mmap = options.mmap ?? true;
    const dataStart = mmap ? PAGE_SIZE : 32;
    const sectionSize = options.dataSectionSize ?? 64 * 1024;
    const transactionSizes = options.transactionSizes ?? DEFAULT_TRANSACTION_SIZES;
    const room = sectionSize - Math.max(...transactionSizes);
    // Four offsets from the start to the last place that holds the largest transaction; page-aligned when mmapped.
    const dataOffsets =
      options.dataOffsets ?? [0, 1, 2, 3].map((i) => dataStart + (mmap ? Math.floor((room * i) / 3 / PAGE_SIZE) * PAGE_SIZE : Math.floor((room * i) / 3)));
    this.#region = new SimV1MigrationRegion(
      { size: dataStart + sectionSize, dataStart, mmap, transactionSizes, dataOffsets, reservedBits: options.reservedBits ?? 0 },
      this.#memory,
      () => this.faults,
      (cur, next) => this.#veto(cur, next),
    );
    if (options.savingLayout === true && this.#memory.size % PAGE_SIZE !== 0) throw new RangeError(`a mmappable BAR0 needs memory in whole ${PAGE_SIZE}-byte pages`);
    this.#bar0 = options.savingLayout === true ? { doorbell: new Uint8Array(PAGE_SIZE), mappings: new SimMappingTracker() } : undefined;
  }

  // ------------------------------------------------------------ test hooks

  /** SHA-256 of the device state (its memory). */
  checksum(): string {
    return this.#memory.checksum();
  }

  /** Device memory (BAR0) size in bytes. */
  get memorySize(): number {
    return this.#memory.size;
  }

  /** A guest write to device memory: dirties the pages it touches. */
  writeMemory(offset: number, data: Uint8Array): void {
    this.#memory.write(offset, data);
  }

  /** A copy of `length` bytes of device memory at `offset`. */
  readMemory(offset: number, length: number): Uint8Array {
    return this.#memory.read(offset, length);
  }

  /** Pages dirtied and not yet sent. */
  get dirtyPages(): number {
    return this.#memory.dirtyPages;
  }

  /** The raw `device_state` word. */
  get deviceState(): number {
    return this.#region.word;
  }

  /** Where the vendor put each saved transaction and how large it was. */
  get savedTransactions(): readonly V1Transaction[] {
    return this.#region.saved;
  }

  /** Each transaction written while resuming, accepted or not. */
  get loadedTransactions(): readonly V1Transaction[] {
    return this.#region.loaded;
  }

  /** Why the resume was refused, if it was. */
  get resumeFailure(): string | undefined {
    return this.#region.resumeFailure;
  }

  /** Live mmaps of the data section. */
  get dataMappings(): number {
    return this.#region.mappings;
  }

  /** Live mmaps of BAR0 outside its saving layout: setting SAVING now would fail EBUSY. */
  get conflictingMappings(): number {
    return this.#bar0?.mappings.outside(this.#savingAreas()) ?? 0;
  }

  // ------------------------------------------------------------ vfio_device_ops

  /** Last close: migration sessions end with the open file, as vendor drivers do; the memory stays. */
  override closeDevice(): void {
    this.#region.reset();
  }

  override ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_DEVICE_GET_INFO: {
        // vfio_pci_ioctl_get_info: minsz is offsetofend(num_irqs); no device capabilities.
        const user = userBuf(arg, 16);
        if (dataView(user).getUint32(0, true) < 16) fail('EINVAL');
        const info = encode(vfio_device_info, {
          argsz: dataView(user).getUint32(0, true),
          flags: VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
          num_regions: V1_MIGRATION_REGION_INDEX + 1,
          num_irqs: VFIO_PCI_NUM_IRQS,
        });
        user.set(info.subarray(0, 16));
        return 0;
      }
      case VFIO_DEVICE_GET_REGION_INFO:
        return this.#regionInfo(arg);
      case VFIO_DEVICE_GET_IRQ_INFO: {
        const user = userBuf(arg, vfio_irq_info.size);
        const { argsz, index } = decode(vfio_irq_info, user);
        if (argsz < vfio_irq_info.size || index >= VFIO_PCI_NUM_IRQS) fail('EINVAL');
        // No interrupt is wired: every index has count 0, with vfio-pci's flags.
        const flags = VFIO_IRQ_INFO_EVENTFD | (index === VFIO_PCI_INTX_IRQ_INDEX ? VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED : VFIO_IRQ_INFO_NORESIZE);
        encode(vfio_irq_info, { flags, count: 0 }, user);
        return 0;
      }
      case VFIO_DEVICE_SET_IRQS:
        // vfio_set_irqs_validate_and_prepare: with no vectors every range is out of bounds.
        return fail('EINVAL');
      case VFIO_DEVICE_RESET:
        this.#memory.reset();
        this.#region.reset();
        return 0;
      default:
        fail('ENOTTY');
    }
  }

  override read(buf: Uint8Array, offset: bigint): number {
    return this.#access(buf, offset, false);
  }

  override write(buf: Uint8Array, offset: bigint): number {
    return this.#access(buf, offset, true);
  }

  override mmap(offset: bigint, length: number): SimMmap {
    const index = Number(offset >> OFFSET_SHIFT);
    const start = Number(offset & OFFSET_MASK);
    if (index === VFIO_PCI_BAR0_REGION_INDEX) return this.#mmapBar0(start, length);
    if (index !== V1_MIGRATION_REGION_INDEX) fail('EINVAL');
    return this.#region.mmap(start, length);
  }

  // ------------------------------------------------------------ internals

  /** BAR0's size: the memory, and the doorbell page with a saving layout. */
  get #bar0Size(): number {
    return this.#memory.size + (this.#bar0 === undefined ? 0 : PAGE_SIZE);
  }

  /** BAR0's normal sparse layout: the memory and the doorbell page. */
  #normalAreas(): SparseArea[] {
    return [
      { offset: 0, size: this.#memory.size },
      { offset: this.#memory.size, size: PAGE_SIZE },
    ];
  }

  /** BAR0's saving layout: the doorbell page only. */
  #savingAreas(): SparseArea[] {
    return [{ offset: this.#memory.size, size: PAGE_SIZE }];
  }

  /** Setting SAVING with a direct mapping of the memory left would lose its writes: EBUSY. */
  #veto(cur: V1StateBits, next: V1StateBits): void {
    const saving = (bits: V1StateBits): boolean => (bits & VFIO_DEVICE_STATE_V1_SAVING) !== 0;
    if (!saving(cur) && saving(next) && this.conflictingMappings > 0) fail('EBUSY');
  }

  /** An mmap of BAR0, inside one area of the layout in force (the saving one while saving). */
  #mmapBar0(start: number, length: number): SimMmap {
    const bar0 = this.#bar0;
    if (bar0 === undefined) fail('EINVAL');
    const saving = (this.#region.word & VFIO_DEVICE_STATE_V1_SAVING) !== 0;
    const end = start + length;
    if (!(saving ? this.#savingAreas() : this.#normalAreas()).some((a) => start >= a.offset && end <= a.offset + a.size)) fail('EINVAL');
    const size = this.#memory.size;
    const bytes = end <= size ? this.#memory.view(start, length) : bar0.doorbell.subarray(start - size, end - size);
    return bar0.mappings.map(start, bytes);
  }

  #access(buf: Uint8Array, pos: bigint, isWrite: boolean): number {
    const index = Number(pos >> OFFSET_SHIFT);
    const offset = Number(pos & OFFSET_MASK);
    if (index === V1_MIGRATION_REGION_INDEX) return isWrite ? this.#region.write(buf, offset) : this.#region.read(buf, offset);
    const size = index === VFIO_PCI_BAR0_REGION_INDEX ? this.#bar0Size : index === VFIO_PCI_CONFIG_REGION_INDEX ? CONFIG_SIZE : 0;
    // vfio_pci_bar_rw / vfio_pci_config_rw: past the end is EINVAL, a straddling access is cut short.
    if (offset >= size) fail('EINVAL');
    const n = Math.min(buf.byteLength, size - offset);
    if (index === VFIO_PCI_BAR0_REGION_INDEX) {
      // The memory part is trapped (its writes dirty pages); the doorbell part is plain.
      const inMemory = Math.max(0, Math.min(n, this.#memory.size - offset));
      if (inMemory > 0 && isWrite) this.#memory.write(offset, buf.subarray(0, inMemory));
      else if (inMemory > 0) buf.set(this.#memory.read(offset, inMemory));
      const bell = this.#bar0?.doorbell;
      if (bell !== undefined && inMemory < n) {
        const at = offset + inMemory - this.#memory.size;
        if (isWrite) bell.set(buf.subarray(inMemory, n), at);
        else buf.set(bell.subarray(at, at + n - inMemory), inMemory);
      }
    } else if (isWrite) {
      writeConfig(this.#config, offset, buf.subarray(0, n));
    } else {
      buf.set(this.#config.subarray(offset, offset + n));
    }
    return n;
  }

  /** vfio_pci_ioctl_get_region_info, with the capability chain laid out as the kernel does. */
  #regionInfo(arg: IoctlArg): number {
    const { argsz, index } = regionInfoRequest(arg);
    return answerRegionInfo(arg, argsz, index, { ...this.#describe(index), offset: BigInt(index) << OFFSET_SHIFT });
  }

  #describe(index: number): { flags: number; size: number; caps: CapSpec[] } {
    const rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
    if (index === VFIO_PCI_BAR0_REGION_INDEX && this.#bar0 !== undefined) {
      return {
        flags: rw | VFIO_REGION_INFO_FLAG_MMAP,
        size: this.#bar0Size,
        caps: [
          { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body: encodeSparseAreas(this.#normalAreas()) },
          { id: VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, version: 1, body: encodeSparseAreas(this.#savingAreas()) },
        ],
      };
    }
    if (index === VFIO_PCI_BAR0_REGION_INDEX) return { flags: rw, size: this.#memory.size, caps: [] };
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) return { flags: rw, size: CONFIG_SIZE, caps: [] };
    // No VGA: vfio-pci refuses the VGA region's info.
    if (index === VFIO_PCI_VGA_REGION_INDEX) fail('EINVAL');
    if (index < VFIO_PCI_NUM_REGIONS) return { flags: 0, size: 0, caps: [] };
    if (index !== V1_MIGRATION_REGION_INDEX) fail('EINVAL');
    const { size, dataStart, mmap } = this.#region.layout;
    const typeBody = new Uint8Array(8);
    dataView(typeBody).setUint32(0, VFIO_REGION_TYPE_MIGRATION_DEPRECATED, true);
    dataView(typeBody).setUint32(4, VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED, true);
    const caps: CapSpec[] = [{ id: VFIO_REGION_INFO_CAP_TYPE, version: 1, body: typeBody }];
    if (!mmap) return { flags: rw, size, caps };
    caps.push({ id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body: encodeSparseAreas([{ offset: dataStart, size: size - dataStart }]) });
    return { flags: rw | VFIO_REGION_INFO_FLAG_MMAP, size, caps };
  }
}

/** A type-0 header: ids, a processing-accelerator class, no capabilities. */
function configSpace(): Uint8Array {
  const c = new Uint8Array(CONFIG_SIZE);
  const dv = dataView(c);
  dv.setUint16(0x00, VENDOR_ID, true);
  dv.setUint16(0x02, DEVICE_ID, true);
  c[0x0b] = 0x12;
  return c;
}

/** Only the command register and the interrupt line are writable; the rest of the header is read-only. */
function writeConfig(config: Uint8Array, offset: number, data: Uint8Array): void {
  data.forEach((b, i) => {
    const at = offset + i;
    if (at === 0x04 || at === 0x05 || at === 0x3c) config[at] = b;
  });
}

/** Creates a v1 device and registers it as a PCI device bound to vfio-pci, behind an Intel-like IOMMU. */
export function addV1Device(kernel: SimKernel, options: SimV1DeviceOptions): SimV1Device {
  const device = new SimV1Device(options);
  kernel.addPciDevice(device, { bdf: options.bdf, vendor: VENDOR_ID, device: DEVICE_ID, domain: INTEL_IOMMU_DOMAIN });
  return device;
}
