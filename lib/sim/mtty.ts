/**
 * The kernel's `samples/vfio-mdev/mtty.c` (Linux 6.12.117) in the simulated
 * kernel: a mediated PCI device with one or two loopback 16550 UARTs behind
 * I/O BARs, INTx and MSI, and v2 migration with PRE_COPY and P2P. Every
 * ioctl, region access and migration arc answers as the kernel module does,
 * quirks included (reference §8, §9).
 */
import { randomUUID } from 'node:crypto';
import { VfioSystemError } from '../errors.js';
import { Errno } from '../sys/errno.js';
import {
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_PCI_BAR0_REGION_INDEX,
  VFIO_PCI_BAR1_REGION_INDEX,
  VFIO_PCI_BAR5_REGION_INDEX,
  VFIO_PCI_CONFIG_REGION_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_NUM_IRQS,
  VFIO_PCI_NUM_REGIONS,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../vfio/uapi/constants.js';
import {
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
} from '../vfio/uapi/ioctls.js';
import { decode, encode } from '../vfio/uapi/layout.js';
import { vfio_device_info, vfio_irq_info, vfio_region_info } from '../vfio/uapi/structs.js';
import { fail } from './errno.js';
import type { IoctlArg } from './file.js';
import type { SimKernel } from './kernel.js';
import { MTTY_CONFIG_SPACE_SIZE, MTTY_IO_BAR_SIZE, MttyConfigSpace } from './mtty-config.js';
import { MttyIrqs } from './mtty-irq.js';
import { MttyMigration, type MttyFaultPlan } from './mtty-migration.js';
import { readIrqSet } from './irq-set-validate.js';
import { MAX_FIFO_SIZE, SERIAL_PORT_SIZE, SerialPort, type SerialPortState } from './uart16550.js';
import type { SimLogOps } from './vfio-device.js';
import { SimVfioDevice } from './vfio-device.js';
import { copyIn, copyOut } from './user-struct.js';

export type { MttyArcFault, MttyFaultPlan } from './mtty-migration.js';
export type { SerialPortState } from './uart16550.js';

/** `MTTY_VFIO_PCI_OFFSET_SHIFT`: region index `i` lives at device-fd offset `i << 40`. */
const MTTY_VFIO_PCI_OFFSET_SHIFT = 40n;
const OFFSET_MASK = (1n << MTTY_VFIO_PCI_OFFSET_SHIFT) - 1n;

/** `mtty_log_ops`: stubs, since mtty does no DMA. Start keeps the page size, report sets no bit. */
const MTTY_LOG_OPS: SimLogOps = {
  start: (_ranges, pageSize) => pageSize,
  stop: () => undefined,
  readAndClear: () => undefined,
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** One mtty mdev (`struct mdev_state`). */
export class SimMtty extends SimVfioDevice {
  /** The UUID, lower case as the kernel's `%pUl` names the device. */
  override readonly name: string;
  /** `nr_ports`: 1 for mtty-1, 2 for mtty-2. */
  readonly nrPorts: 1 | 2;
  /** Device-side faults for tests; `{}` (none) by default. */
  faults: MttyFaultPlan = {};
  override readonly migration: MttyMigration;
  override readonly log = MTTY_LOG_OPS;
  /** `s[2]`: both exist even on mtty-1, whose BAR1 accesses still reach `s[1]`. */
  readonly #ports: readonly [SerialPort, SerialPort] = [new SerialPort(MAX_FIFO_SIZE), new SerialPort(MAX_FIFO_SIZE)];
  readonly #config: MttyConfigSpace;
  readonly #irqs = new MttyIrqs((fd) => this.kernel.eventfdOf(fd));
  readonly #trigger = (): void => this.#irqs.trigger();
  /** `dev_info.num_irqs`: 0 until GET_INFO has run, which makes every IRQ ioctl fail EINVAL. */
  #numIrqs = 0;

  /** @throws RangeError if `uuid` is not a UUID. */
  constructor(uuid: string, ports: 1 | 2) {
    super();
    if (!UUID.test(uuid)) throw new RangeError(`mtty: ${JSON.stringify(uuid)} is not a UUID`);
    this.name = uuid.toLowerCase();
    this.nrPorts = ports;
    this.#config = new MttyConfigSpace(ports);
    this.migration = new MttyMigration({
      name: this.name,
      nrPorts: ports,
      faults: () => this.faults,
      encodePort: (i, buf, at) => this.#port(i).encode(buf, at),
      decodePort: (i, buf, at) => this.#port(i).decode(buf, at),
    });
  }

  // ------------------------------------------------------------ test hooks

  /** A frozen copy of port `index` (0 or 1; port 1 exists on mtty-1 too, but is never migrated). */
  portState(index: number): SerialPortState {
    return this.#port(index).snapshot();
  }

  /** The ports as STOP_COPY would stream them: `nrPorts` `struct serial_port` images (36 bytes each). */
  portsImage(): Uint8Array {
    const out = new Uint8Array(this.nrPorts * SERIAL_PORT_SIZE);
    for (let i = 0; i < this.nrPorts; i++) this.#port(i).encode(out, i * SERIAL_PORT_SIZE);
    return out;
  }

  // ------------------------------------------------------------ vfio_device_ops

  /** `mtty_close`: ends migration sessions and drops both interrupt eventfds; state and UARTs stay. */
  override closeDevice(): void {
    this.migration.disableFiles();
    this.#irqs.disableIntx();
    this.#irqs.disableMsi();
  }

  /** `mtty_ioctl`. */
  override ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_DEVICE_GET_INFO: {
        // minsz is offsetofend(num_irqs), 16: cap_offset and pad are neither read nor written.
        const info = copyIn(arg, vfio_device_info, 16);
        encode(vfio_device_info, { flags: VFIO_DEVICE_FLAGS_PCI, num_regions: VFIO_PCI_NUM_REGIONS, num_irqs: VFIO_PCI_NUM_IRQS }, info);
        this.#numIrqs = VFIO_PCI_NUM_IRQS;
        copyOut(arg, info, 16);
        return 0;
      }
      case VFIO_DEVICE_GET_REGION_INFO: {
        const info = copyIn(arg, vfio_region_info, vfio_region_info.size);
        encode(vfio_region_info, this.#regionInfo(decode(vfio_region_info, info).index), info);
        copyOut(arg, info, vfio_region_info.size);
        return 0;
      }
      case VFIO_DEVICE_GET_IRQ_INFO: {
        const info = copyIn(arg, vfio_irq_info, vfio_irq_info.size);
        const { index } = decode(vfio_irq_info, info);
        if (index >= this.#numIrqs) fail('EINVAL');
        encode(vfio_irq_info, irqInfo(index), info);
        copyOut(arg, info, vfio_irq_info.size);
        return 0;
      }
      case VFIO_DEVICE_SET_IRQS:
        this.#irqs.set(readIrqSet(arg, this.#numIrqs, VFIO_PCI_NUM_IRQS));
        return 0;
      case VFIO_DEVICE_RESET:
        this.migration.reset();
        return 0;
      default:
        fail('ENOTTY');
    }
  }

  /** `mtty_read`: naturally aligned 4-, 2- and 1-byte accesses; any failure is EFAULT. */
  override read(buf: Uint8Array, offset: bigint): number {
    return this.#split(buf, offset, (chunk, pos) => {
      // The kernel's u8/u16/u32 bounce variable: bytes mtty leaves unset are stack garbage there, 0 here.
      const val = new Uint8Array(chunk.length);
      this.#access(val, pos, false);
      chunk.set(val);
    });
  }

  /** `mtty_write`. */
  override write(buf: Uint8Array, offset: bigint): number {
    return this.#split(buf, offset, (chunk, pos) => this.#access(chunk.slice(), pos, true));
  }

  // ------------------------------------------------------------ internals

  #port(index: number): SerialPort {
    if (index !== 0 && index !== 1) throw new RangeError(`mtty: no port ${index}`);
    return this.#ports[index];
  }

  /** The loop of mtty_read/mtty_write; on failure the bytes done so far are lost (EFAULT). */
  #split(buf: Uint8Array, offset: bigint, access: (chunk: Uint8Array, pos: bigint) => void): number {
    let done = 0;
    let pos = offset;
    while (done < buf.length) {
      const left = buf.length - done;
      const size = left >= 4 && pos % 4n === 0n ? 4 : left >= 2 && pos % 2n === 0n ? 2 : 1;
      access(buf.subarray(done, done + size), pos);
      done += size;
      pos += BigInt(size);
    }
    return done;
  }

  /** `mdev_access`: config space and BAR0-5; any other region fails (EFAULT to the user). */
  #access(buf: Uint8Array, pos: bigint, isWrite: boolean): void {
    const index = Number(pos >> MTTY_VFIO_PCI_OFFSET_SHIFT);
    const offset = pos & OFFSET_MASK;
    // handle_pci_cfg_write, handle_bar_write and handle_bar_read take a u16 offset.
    const offset16 = Number(offset & 0xffffn);
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) {
      if (isWrite) this.#config.write(offset16, buf);
      else this.#config.read(offset, buf);
      return;
    }
    if (index < VFIO_PCI_BAR0_REGION_INDEX || index > VFIO_PCI_BAR5_REGION_INDEX) fail('EFAULT');
    // mtty indexes s[index] unchecked: BAR2-5 land past s[1] and corrupt mdev_state.
    // The simulator lets those accesses succeed with no effect (reads give 0).
    if (index > VFIO_PCI_BAR1_REGION_INDEX) return;
    const port = this.#port(index);
    // Only the first byte of a wider access is used, and only it is produced.
    if (isWrite) port.write(offset16, buf[0], this.#trigger);
    else buf[0] = port.read(offset16, this.#trigger);
  }

  /** `mtty_get_region_info`. */
  #regionInfo(index: number): { flags: number; size: bigint; offset: bigint } {
    if (index >= VFIO_PCI_NUM_REGIONS) fail('EINVAL');
    let size = 0;
    if (index === VFIO_PCI_CONFIG_REGION_INDEX) size = MTTY_CONFIG_SPACE_SIZE;
    else if (index === VFIO_PCI_BAR0_REGION_INDEX) size = MTTY_IO_BAR_SIZE;
    else if (index === VFIO_PCI_BAR1_REGION_INDEX && this.nrPorts === 2) size = MTTY_IO_BAR_SIZE;
    return {
      flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE,
      size: BigInt(size),
      offset: BigInt(index) << MTTY_VFIO_PCI_OFFSET_SHIFT,
    };
  }
}

/** `mtty_get_irq_info`: only INTx and MSI exist. */
function irqInfo(index: number): { flags: number; count: number } {
  if (index === VFIO_PCI_INTX_IRQ_INDEX) return { flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, count: 1 };
  if (index === VFIO_PCI_MSI_IRQ_INDEX) return { flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 1 };
  fail('EINVAL');
}

// ------------------------------------------------------------ registration

/** The mdev types mtty registers (`mtty_types[]`), named `<driver>-<sysfs_name>`. */
const MTTY_TYPES = {
  'mtty-1': { nrPorts: 1, name: 'Single port serial' },
  'mtty-2': { nrPorts: 2, name: 'Dual port serial' },
} as const;

/** An mdev type of mtty. */
export type MttyType = keyof typeof MTTY_TYPES;

/** The parent device `mtty_dev_init` registers. */
export const MTTY_PARENT = '/sys/devices/virtual/mtty/mtty';
/** `MAX_MTTYS`: ports shared by all instances. */
const MAX_MTTYS = 24;

/** The module's globals per simulated kernel (`mdev_avail_ports`). */
const loaded = new WeakMap<SimKernel, { availPorts: number }>();

/** `mtty_dev_init`: the parent, its two types and the class links, once per kernel. */
function loadModule(kernel: SimKernel): { availPorts: number } {
  const existing = loaded.get(kernel);
  if (existing !== undefined) return existing;
  const module = { availPorts: MAX_MTTYS };
  loaded.set(kernel, module);
  for (const [type, t] of Object.entries(MTTY_TYPES)) {
    const dir = `${MTTY_PARENT}/mdev_supported_types/${type}`;
    kernel.fs.mkdir(`${dir}/devices`);
    kernel.fs.file(`${dir}/name`, `${t.name}\n`);
    kernel.fs.file(`${dir}/device_api`, 'vfio-pci\n');
    // mtty_get_available.
    kernel.fs.file(`${dir}/available_instances`, () => `${Math.floor(module.availPorts / t.nrPorts)}\n`);
  }
  kernel.fs.symlink('/sys/class/mtty/mtty', '../../devices/virtual/mtty/mtty');
  kernel.fs.symlink('/sys/class/mdev_bus/mtty', '../../devices/virtual/mtty/mtty');
  return module;
}

/**
 * Creates an mtty mdev as `echo <uuid> > .../mdev_supported_types/<type>/create`
 * would, loading the module's sysfs (parent, both types with
 * `available_instances`, `/sys/class/mdev_bus/mtty`) on first use.
 * @param opts.uuid the device name (a random UUID by default).
 * @param opts.type `mtty-2` (two ports, the default) or `mtty-1`.
 * @throws RangeError for a malformed UUID; VfioSystemError (as the `create`
 *   write fails) EEXIST for a UUID already on the mdev bus, ENOSPC when fewer
 *   than the type's ports are left of the 24.
 */
export function addMtty(kernel: SimKernel, opts: { uuid?: string; type?: MttyType } = {}): SimMtty {
  const type = opts.type ?? 'mtty-2';
  const t = MTTY_TYPES[type];
  const device = new SimMtty(opts.uuid ?? randomUUID(), t.nrPorts);
  const module = loadModule(kernel);
  const create = `${MTTY_PARENT}/mdev_supported_types/${type}/create`;
  if (kernel.fs.readdir('/sys/bus/mdev/devices').includes(device.name)) throw new VfioSystemError(Errno.EEXIST, 'write', { path: create });
  // mtty_init_dev takes the ports.
  if (module.availPorts < t.nrPorts) throw new VfioSystemError(Errno.ENOSPC, 'write', { path: create });
  module.availPorts -= t.nrPorts;
  kernel.addMdev(device, { parent: MTTY_PARENT, type, typeName: t.name });
  kernel.fs.file(`${MTTY_PARENT}/${device.name}/vendor/sample_mdev_dev`, `This is MDEV ${device.name}\n`);
  return device;
}
