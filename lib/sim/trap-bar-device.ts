/**
 * A simulated migratable device that must trap its BAR while saving: the
 * case of Yan Zhao's dynamic-trap-BAR and remap-BAR-IRQ RFCs (reference §7),
 * with both of vfio-ts's opt-in extensions (`vfio/uapi/extensions.ts`).
 *
 * It is the bulk device (v2 migration, the same stream, workload, faults and
 * checksum) with BAR0 over its state:
 * - BAR0 = the device state (`stateSize` bytes) followed by one 4 KiB
 *   doorbell page that is not migrated. SPARSE_MMAP lets the user map both;
 *   the saving layout keeps only the doorbell page. A direct mapping of the
 *   state is plain memory the device never sees, so while saving the
 *   device needs every write to it trapped: pwrite marks the pages dirty,
 *   and the saving session re-sends them (precopy `dirty_bytes` rises).
 * - It tracks its live BAR0 mappings and refuses every arc into a saving
 *   state with EBUSY while one lies outside the saving layout; while saving
 *   it refuses mmaps outside it (EINVAL).
 * - IRQ index 5 is the remap IRQ (unless `remapIrq: false`): the test moves
 *   BAR0's normal layout with {@link SimTrapBarDevice.setBarLayout}, which
 *   signals bit 0 (region 0). With `requireRemapIrq`, arcs into a saving
 *   state fail EPERM until the user enabled it: the handshake.
 *
 * {@link SimTrapBarDevice.events} records mappings, saving entries and acks in
 * order, for the tests that check the library's order.
 */
import { randomUUID } from 'node:crypto';
import { isSavingState, stateName, type MigrationState } from '../migration/fsm.js';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../vfio/uapi/constants.js';
import { VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, encodeSparseAreas } from '../vfio/uapi/extensions.js';
import type { SparseArea } from '../vfio/uapi/info.js';
import { VFIO_DEVICE_GET_INFO, VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_SET_IRQS } from '../vfio/uapi/ioctls.js';
import { decode, encode } from '../vfio/uapi/layout.js';
import { vfio_device_info, vfio_irq_info, vfio_irq_set } from '../vfio/uapi/structs.js';
import { SimBulkDevice, type BulkDeviceOptions } from './bulk-device.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg, SimMmap } from './file.js';
import { readIrqSet } from './irq-set-validate.js';
import type { SimKernel } from './kernel.js';
import { SimMappingTracker } from './mapping-tracker.js';
import { answerRegionInfo, regionInfoRequest } from './region-info-reply.js';
import { SimRemapIrq } from './remap-irq.js';
import { copyIn, copyOut } from './user-struct.js';

const OFFSET_SHIFT = 40n;
const OFFSET_MASK = (1n << OFFSET_SHIFT) - 1n;
const PAGE_SIZE = 4096;
/** The remap IRQ: the first index past vfio-pci's five. */
export const TRAP_BAR_REMAP_IRQ_INDEX = VFIO_PCI_NUM_IRQS;

/** Options of {@link addTrapBarDevice}. */
export interface TrapBarDeviceOptions extends BulkDeviceOptions {
  /** Offer the remap IRQ. Default true. */
  readonly remapIrq?: boolean;
  /** Refuse saving transitions (EPERM) until the remap IRQ is enabled. Default false. */
  readonly requireRemapIrq?: boolean;
}

/** The parent device the trap-BAR mdevs hang from. */
export const TRAP_BAR_PARENT = '/sys/devices/virtual/vfio-sim-trapbar/trapbar';

export class SimTrapBarDevice extends SimBulkDevice {
  /** The remap IRQ, when offered. */
  readonly remapIrq: SimRemapIrq | undefined;
  /** What happened to BAR0's mappings, saving entries and remap acks, in order. */
  readonly events: string[] = [];
  /** Writes to the device state that came through pwrite (trapped). */
  trappedWrites = 0;
  readonly #requireRemap: boolean;
  readonly #doorbell = new Uint8Array(PAGE_SIZE);
  readonly #mappings = new SimMappingTracker();
  readonly #saving: readonly SparseArea[];
  #normal: readonly SparseArea[];

  /** @throws RangeError for a state size that is not a positive multiple of 4 KiB */
  constructor(uuid: string, options: TrapBarDeviceOptions) {
    super(uuid, options);
    if (this.stateSize % PAGE_SIZE !== 0) throw new RangeError(`state size ${this.stateSize} is not a multiple of ${PAGE_SIZE}: BAR0 is mmapped in pages`);
    this.#normal = [
      { offset: 0, size: this.stateSize },
      { offset: this.stateSize, size: PAGE_SIZE },
    ];
    this.#saving = [{ offset: this.stateSize, size: PAGE_SIZE }];
    this.#requireRemap = options.requireRemapIrq ?? false;
    this.remapIrq =
      options.remapIrq === false
        ? undefined
        : new SimRemapIrq(TRAP_BAR_REMAP_IRQ_INDEX, {
            eventfdOf: (fd) => this.kernel.eventfdOf(fd),
            acked: () => this.events.push(`ack: ${this.#mappings.outside(this.#allowed())} mappings outside the layout`),
          });
  }

  /** BAR0's size: the state and the doorbell page. */
  get barSize(): number {
    return this.stateSize + PAGE_SIZE;
  }

  /** BAR0's live mappings. */
  get barMappings(): number {
    return this.#mappings.count;
  }

  /** Live BAR0 mappings outside the saving layout: a saving transition now would be refused. */
  get conflictingMappings(): number {
    return this.#mappings.outside(this.#savingLayout());
  }

  /** BAR0's normal sparse layout. */
  get barLayout(): readonly SparseArea[] {
    return this.#normal;
  }

  /** The doorbell page's bytes (not migrated). */
  get doorbell(): Uint8Array {
    return this.#doorbell;
  }

  /**
   * The device changes BAR0's normal layout (page-aligned areas, each within
   * the state or the doorbell page) and signals the remap IRQ for region 0.
   * @throws RangeError for an area the device could not map
   */
  setBarLayout(areas: readonly SparseArea[]): void {
    for (const a of areas) {
      const inState = a.offset + a.size <= this.stateSize;
      const inDoorbell = a.offset >= this.stateSize && a.offset + a.size <= this.barSize;
      if (a.offset % PAGE_SIZE !== 0 || a.size <= 0 || a.size % PAGE_SIZE !== 0 || !(inState || inDoorbell)) {
        throw new RangeError(`BAR0 area [0x${a.offset.toString(16)}, +0x${a.size.toString(16)}) is not a page range within the state or the doorbell`);
      }
    }
    this.#normal = areas.slice();
    this.events.push(`layout: ${areas.map((a) => `0x${a.offset.toString(16)}+0x${a.size.toString(16)}`).join(' ') || 'none'}`);
    this.remapIrq?.raise(1n << BigInt(VFIO_PCI_BAR0_REGION_INDEX));
  }

  override ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_DEVICE_GET_INFO: {
        const info = copyIn(arg, vfio_device_info, 16);
        const numIrqs = VFIO_PCI_NUM_IRQS + (this.remapIrq === undefined ? 0 : 1);
        encode(vfio_device_info, { flags: VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET, num_regions: VFIO_PCI_NUM_REGIONS, num_irqs: numIrqs }, info);
        copyOut(arg, info, 16);
        return 0;
      }
      case VFIO_DEVICE_GET_REGION_INFO: {
        const { argsz, index } = regionInfoRequest(arg);
        if (index !== VFIO_PCI_BAR0_REGION_INDEX) return super.ioctl(request, arg);
        return answerRegionInfo(arg, argsz, index, {
          flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP,
          size: this.barSize,
          offset: 0n,
          caps: [
            { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body: encodeSparseAreas(this.#normal) },
            { id: VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, version: 1, body: encodeSparseAreas(this.#savingLayout()) },
          ],
        });
      }
      case VFIO_DEVICE_GET_IRQ_INFO: {
        const remap = this.remapIrq;
        if (remap !== undefined && decode(vfio_irq_info, userBuf(arg, vfio_irq_info.size)).index === remap.index) return remap.info(arg);
        return super.ioctl(request, arg);
      }
      case VFIO_DEVICE_SET_IRQS: {
        const remap = this.remapIrq;
        const numIrqs = VFIO_PCI_NUM_IRQS + (remap === undefined ? 0 : 1);
        const { index } = decode(vfio_irq_set, userBuf(arg, vfio_irq_set.size));
        // The standard indexes have no vectors here: every range is out of bounds.
        const req = readIrqSet(arg, remap !== undefined && index === remap.index ? 1 : 0, numIrqs);
        return remap?.set(req) ?? fail('EINVAL');
      }
      default:
        return super.ioctl(request, arg);
    }
  }

  override read(buf: Uint8Array, offset: bigint): number {
    if (offset >> OFFSET_SHIFT !== BigInt(VFIO_PCI_BAR0_REGION_INDEX)) return super.read(buf, offset);
    return this.#barRw(buf, Number(offset & OFFSET_MASK), false);
  }

  override write(buf: Uint8Array, offset: bigint): number {
    if (offset >> OFFSET_SHIFT !== BigInt(VFIO_PCI_BAR0_REGION_INDEX)) return super.write(buf, offset);
    return this.#barRw(buf, Number(offset & OFFSET_MASK), true);
  }

  /** An mmap of BAR0 inside one area of the layout in force (the saving one while saving). */
  override mmap(offset: bigint, length: number): SimMmap {
    if (offset >> OFFSET_SHIFT !== BigInt(VFIO_PCI_BAR0_REGION_INDEX)) fail('EINVAL');
    const start = Number(offset & OFFSET_MASK);
    const end = start + length;
    if (!this.#allowed().some((a) => start >= a.offset && end <= a.offset + a.size)) fail('EINVAL');
    const bytes = end <= this.stateSize ? this.stateBytes.subarray(start, end) : start >= this.stateSize ? this.#doorbell.subarray(start - this.stateSize, end - this.stateSize) : fail('EINVAL');
    this.events.push(`map 0x${start.toString(16)}+0x${length.toString(16)}`);
    return this.#mappings.map(start, bytes, (at, size) => this.events.push(`unmap 0x${at.toString(16)}+0x${size.toString(16)}`));
  }

  override closeDevice(): void {
    super.closeDevice();
    this.remapIrq?.disable();
  }

  /** Entering a saving state: the handshake, then no mapping outside the saving layout. */
  protected override checkArc(from: MigrationState, to: MigrationState): void {
    if (isSavingState(from) || !isSavingState(to)) return;
    if (this.#requireRemap && this.remapIrq?.enabled !== true) {
      this.events.push(`refused ${stateName(from)}>${stateName(to)}: remap irq not enabled`);
      fail('EPERM');
    }
    const stale = this.conflictingMappings;
    this.events.push(`enter ${stateName(from)}>${stateName(to)}: ${stale} conflicting`);
    if (stale > 0) fail('EBUSY');
  }

  /** The saving layout as reported: the doorbell page, where the normal layout still has it. */
  #savingLayout(): readonly SparseArea[] {
    return this.#saving.filter((s) => this.#normal.some((n) => s.offset >= n.offset && s.offset + s.size <= n.offset + n.size));
  }

  /** The layout the device allows now. */
  #allowed(): readonly SparseArea[] {
    return isSavingState(this.migration.state) ? this.#savingLayout() : this.#normal;
  }

  /** `vfio_pci_bar_rw` over BAR0: cut at its end; state writes are seen, so their pages are dirty. */
  #barRw(buf: Uint8Array, at: number, isWrite: boolean): number {
    if (at >= this.barSize) fail('EINVAL');
    const n = Math.min(buf.byteLength, this.barSize - at);
    for (let done = 0; done < n; ) {
      const pos = at + done;
      const inState = pos < this.stateSize;
      const mem = inState ? this.stateBytes : this.#doorbell;
      const base = inState ? 0 : this.stateSize;
      const len = Math.min(n - done, (inState ? this.stateSize : this.barSize) - pos);
      if (!isWrite) buf.set(mem.subarray(pos - base, pos - base + len), done);
      else {
        mem.set(buf.subarray(done, done + len), pos - base);
        if (inState) this.#dirtied(pos, len);
      }
      done += len;
    }
    return n;
  }

  #dirtied(at: number, length: number): void {
    this.trappedWrites++;
    const last = Math.floor((at + length - 1) / this.pageSize);
    for (let p = Math.floor(at / this.pageSize); p <= last; p++) this.migration.pageWritten(p);
  }
}

/**
 * Creates a trap-BAR device and registers it as an mdev (a group of its own,
 * type `trapbar-1`), so `VfioContainer.openDevice(uuid)` opens it.
 */
export function addTrapBarDevice(kernel: SimKernel, options: TrapBarDeviceOptions): SimTrapBarDevice {
  const device = new SimTrapBarDevice(options.uuid ?? randomUUID(), options);
  kernel.addMdev(device, { parent: TRAP_BAR_PARENT, type: 'trapbar-1', typeName: 'Trapped BAR device' });
  return device;
}
