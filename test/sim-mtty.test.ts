/**
 * The simulated mtty (samples/vfio-mdev/mtty.c, 6.12.117) driven through the
 * raw `Sys` interface: sysfs, config space, region and IRQ info, UART
 * loopback, interrupts and errnos. Expected values come from mtty.c and the
 * reference §8, written out here rather than taken from the implementation.
 */
import t from 'tap';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty, MTTY_PARENT, SimMtty } from '../lib/sim/mtty.js';
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_IRQ_SET_ACTION_UNMASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_PCI_ERR_IRQ_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_PCI_REQ_IRQ_INDEX,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../lib/vfio/uapi/constants.js';
import { featureBuffer, featurePayload } from '../lib/vfio/uapi/feature.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_RESET,
  VFIO_DEVICE_SET_IRQS,
  VFIO_GROUP_GET_DEVICE_FD,
} from '../lib/vfio/uapi/ioctls.js';
import { irqSetBool, irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { dataView, decode, encode } from '../lib/vfio/uapi/layout.js';
import {
  vfio_device_feature_dma_logging_control,
  vfio_device_feature_dma_logging_range,
  vfio_device_feature_dma_logging_report,
  vfio_irq_set,
  vfio_region_info,
} from '../lib/vfio/uapi/structs.js';
import { errnoOf, getInfo, inb, irqInfo, openMtty, outb, regionInfo, regionOffset } from './helpers/sim-mtty.js';

const UUID_A = '83b8f4f2-509f-382f-3c1e-e6bfe0fa1001';
const UUID_B = '83b8f4f2-509f-382f-3c1e-e6bfe0fa1002';
const CONFIG = 7;

// 16550 registers and bits (include/uapi/linux/serial_reg.h).
const TX = 0;
const IER = 1;
const IIR = 2;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

function setup(type: 'mtty-1' | 'mtty-2' = 'mtty-2', uuid = UUID_A): { kernel: SimKernel; dev: SimMtty; fd: number; group: number } {
  const kernel = new SimKernel();
  const dev = addMtty(kernel, { uuid, type });
  const { fd, group } = openMtty(kernel, dev);
  return { kernel, dev, fd, group };
}

/** The eventfd counter, read and reset; 0 when nothing was signalled. */
function events(kernel: SimKernel, efd: number): bigint {
  const b = new Uint8Array(8);
  if (errnoOf(() => kernel.read(efd, b)) === 'EAGAIN') return 0n;
  return dataView(b).getBigUint64(0, true);
}

/** Bytes at `offset` of a 256-byte image, from "off: b b b ..." lines. */
function image(lines: readonly string[]): Uint8Array {
  const out = new Uint8Array(256);
  for (const line of lines) {
    const [off, bytes] = line.split(':');
    bytes
      .trim()
      .split(/\s+/)
      .forEach((b, i) => (out[Number.parseInt(off, 16) + i] = Number.parseInt(b, 16)));
  }
  return out;
}

// mtty_create_config_space, byte by byte.
const CONFIG_COMMON = [
  '00: 48 43 53 32 01 00 00 02 10 02 00 07',
  '10: 01 00 00 00',
  '2c: 48 43 53 32',
  '3d: 01',
  '40: 23 00 00 80 23 00 00 00 23 00 00 00 23',
  '60: 50 43 49 20 53 65 72 69 61 6c 2f 55 41 52 54', // "PCI Serial/UART"
];

t.test('sysfs: the module parent, both types, capacity and the device', async (t) => {
  const kernel = new SimKernel();
  const dev = addMtty(kernel, { uuid: UUID_A.toUpperCase() });
  t.equal(dev.name, UUID_A, 'named as %pUl prints it');
  const types = `${MTTY_PARENT}/mdev_supported_types`;
  t.strictSame(kernel.readdir(types).sort(), ['mtty-1', 'mtty-2']);
  t.equal(kernel.readFile(`${types}/mtty-1/name`), 'Single port serial\n');
  t.equal(kernel.readFile(`${types}/mtty-2/name`), 'Dual port serial\n');
  t.equal(kernel.readFile(`${types}/mtty-2/device_api`), 'vfio-pci\n');
  t.equal(kernel.readFile(`${types}/mtty-1/available_instances`), '22\n', '24 ports, 2 taken');
  t.equal(kernel.readFile(`${types}/mtty-2/available_instances`), '11\n');
  t.equal(kernel.realpath('/sys/class/mdev_bus/mtty'), MTTY_PARENT);
  t.equal(kernel.realpath('/sys/class/mtty/mtty'), MTTY_PARENT);
  t.equal(kernel.realpath(`/sys/bus/mdev/devices/${UUID_A}`), `${MTTY_PARENT}/${UUID_A}`);
  t.equal(kernel.readFile(`/sys/bus/mdev/devices/${UUID_A}/vendor/sample_mdev_dev`), `This is MDEV ${UUID_A}\n`);
  t.equal(kernel.realpath(`/sys/bus/mdev/devices/${UUID_A}/mdev_type`), `${types}/mtty-2`);
  t.match(kernel.readlink(`/sys/bus/mdev/devices/${UUID_A}/iommu_group`), /iommu_groups\/\d+$/);

  t.equal(errnoOf(() => addMtty(kernel, { uuid: UUID_A, type: 'mtty-1' })), 'EEXIST');
  t.throws(() => new SimMtty('not-a-uuid', 1), RangeError);
  // 22 ports left: eleven more mtty-2, then ENOSPC; mtty-1 still fits nowhere.
  for (let i = 0; i < 11; i++) addMtty(kernel);
  t.equal(kernel.readFile(`${types}/mtty-1/available_instances`), '0\n');
  t.equal(errnoOf(() => addMtty(kernel, { type: 'mtty-1' })), 'ENOSPC');
});

t.test('config space: the golden 255-byte image', async (t) => {
  for (const type of ['mtty-1', 'mtty-2'] as const) {
    const { kernel, fd } = setup(type);
    const got = new Uint8Array(0xff);
    t.equal(kernel.pread(fd, got, regionOffset(CONFIG)), 0xff);
    const want = image(type === 'mtty-2' ? [...CONFIG_COMMON, '14: 01 00 00 00'] : CONFIG_COMMON).subarray(0, 0xff);
    t.strictSame([...got], [...want], `${type} config bytes`);
    t.equal(dataView(got).getUint32(0, true), 0x32534348, 'vendor/device dword, little-endian');
    // Byte 0xff is inside the kmalloc-256 object: zero, and readable.
    const last = new Uint8Array(4);
    kernel.pread(fd, last, regionOffset(CONFIG, 0xfc));
    t.strictSame([...last], [0, 0, 0, 0]);
  }
});

t.test('config space: handle_pci_cfg_write', async (t) => {
  const { kernel, fd } = setup('mtty-2');
  const rd32 = (off: number): number => {
    const b = new Uint8Array(4);
    kernel.pread(fd, b, regionOffset(CONFIG, off));
    return dataView(b).getUint32(0, true);
  };
  const wr32 = (off: number | bigint, v: number): void => {
    const b = new Uint8Array(4);
    dataView(b).setUint32(0, v, true);
    kernel.pwrite(fd, b, typeof off === 'bigint' ? off : regionOffset(CONFIG, off));
  };
  wr32(0x10, 0xffffffff);
  t.equal(rd32(0x10), 0xfffffff9, 'BAR0 sizing: ~(8)+1 with the I/O bit kept');
  wr32(0x10, 0xc000);
  t.equal(rd32(0x10), 0xc001, 'an address keeps the low two bits');
  wr32(0x14, 0xffffffff);
  t.equal(rd32(0x14), 0xfffffff9, 'BAR1 sizes on mtty-2');
  wr32(0x18, 0x12345678);
  t.equal(rd32(0x18), 0, 'BAR2 reads back 0');
  wr32(0x2c, 0);
  t.equal(rd32(0x2c), 0x32534348, 'subsystem ids are read-only');
  wr32(0x04, 0x00000007);
  t.equal(rd32(0x04), 0x02000001, 'command/status are read-only');
  wr32(0x3c, 0xaaaaaa0b);
  t.equal(rd32(0x3c), 0x0000010b, 'interrupt line stored, pin hardwired');
  // handle_pci_cfg_write takes a u16 offset: 0x10010 aliases BAR0.
  wr32(regionOffset(CONFIG, 0x10010), 0xffffffff);
  t.equal(rd32(0x10), 0xfffffff9, 'offset 0x10010 writes BAR0');

  const one = setup('mtty-1');
  const b = new Uint8Array(4).fill(0xff);
  one.kernel.pwrite(one.fd, b, regionOffset(CONFIG, 0x14));
  one.kernel.pread(one.fd, b, regionOffset(CONFIG, 0x14));
  t.strictSame([...b], [0, 0, 0, 0], 'BAR1 of mtty-1 is forced to 0');
});

t.test('GET_INFO and the IRQ ioctls that depend on it', async (t) => {
  const { kernel, fd } = setup('mtty-2');
  // Before GET_INFO, dev_info.num_irqs is 0: every IRQ ioctl is EINVAL.
  t.equal(errnoOf(() => irqInfo(kernel, fd, VFIO_PCI_INTX_IRQ_INDEX)), 'EINVAL');
  const noIntx = irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [-1]);
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, noIntx)), 'EINVAL', 'SET_IRQS before GET_INFO');

  // minsz is offsetofend(num_irqs): a 16-byte argsz is enough, bytes 16..23 are untouched.
  const buf = new Uint8Array(24).fill(0xee);
  dataView(buf).setUint32(0, 16, true);
  kernel.ioctl(fd, VFIO_DEVICE_GET_INFO, buf);
  t.strictSame([...buf], [16, 0, 0, 0, VFIO_DEVICE_FLAGS_PCI, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, ...new Array<number>(8).fill(0xee)]);
  dataView(buf).setUint32(0, 15, true);
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_GET_INFO, buf)), 'EINVAL');
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_GET_INFO, new Uint8Array(15))), 'EFAULT');
  t.match(getInfo(kernel, fd), { flags: VFIO_DEVICE_FLAGS_PCI, num_regions: 9, num_irqs: 5 }, 'no RESET flag');
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, noIntx)), 'ok', 'the same SET_IRQS after GET_INFO');

  t.match(irqInfo(kernel, fd, VFIO_PCI_INTX_IRQ_INDEX), {
    flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED,
    count: 1,
  });
  t.match(irqInfo(kernel, fd, VFIO_PCI_MSI_IRQ_INDEX), { flags: VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, count: 1 });
  for (const index of [VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX, 5]) {
    t.equal(errnoOf(() => irqInfo(kernel, fd, index)), 'EINVAL', `GET_IRQ_INFO index ${index}`);
  }
  t.equal(errnoOf(() => kernel.ioctl(fd, 0x3b00 + 100 + 99)), 'ENOTTY', 'unknown ioctl');
});

t.test('GET_REGION_INFO', async (t) => {
  for (const type of ['mtty-1', 'mtty-2'] as const) {
    const { kernel, fd } = setup(type);
    const sizes = [8n, type === 'mtty-2' ? 8n : 0n, 0n, 0n, 0n, 0n, 0n, 0xffn, 0n];
    sizes.forEach((size, index) => {
      t.match(
        regionInfo(kernel, fd, index),
        { flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE, index, cap_offset: 0, size, offset: BigInt(index) << 40n },
        `${type} region ${index}`,
      );
    });
    t.equal(errnoOf(() => regionInfo(kernel, fd, 9)), 'EINVAL', 'index 9');
  }
  const { kernel, fd } = setup();
  // The user's cap_offset goes back as it came: mtty never clears it.
  const buf = encode(vfio_region_info, { argsz: 32, index: 0, cap_offset: 0x1234 });
  kernel.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, buf);
  t.equal(decode(vfio_region_info, buf).cap_offset, 0x1234);
  encode(vfio_region_info, { argsz: 31 }, buf);
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, buf)), 'EINVAL');
});

t.test('region access: splitting and the regions mdev_access refuses', async (t) => {
  const { kernel, fd } = setup();
  const b = new Uint8Array(4);
  t.equal(errnoOf(() => kernel.pread(fd, b, regionOffset(6))), 'EFAULT', 'ROM');
  t.equal(errnoOf(() => kernel.pread(fd, b, regionOffset(8))), 'EFAULT', 'VGA');
  t.equal(errnoOf(() => kernel.pwrite(fd, b, regionOffset(9))), 'EFAULT', 'index 9');
  // A 3-byte read at config offset 1 splits into 1 + 2 bytes: 0x43 0x53 0x32.
  const three = new Uint8Array(3);
  t.equal(kernel.pread(fd, three, regionOffset(CONFIG, 1)), 3);
  t.strictSame([...three], [0x43, 0x53, 0x32]);
  // A write that runs from the config region into VGA fails as a whole.
  t.equal(errnoOf(() => kernel.pwrite(fd, new Uint8Array(8), regionOffset(CONFIG + 1) - 4n)), 'EFAULT', 'config then VGA');
  // read(2) at the file position: offset 0 is BAR0's RX.
  outb(kernel, fd, 0, TX, 0x5a);
  const r = new Uint8Array(1);
  t.equal(kernel.read(fd, r), 1);
  t.equal(r[0], 0x5a);
});

t.test('UART loopback: "hello" through BAR0 TX and RX', async (t) => {
  const { kernel, fd, dev } = setup();
  t.equal(inb(kernel, fd, 0, LSR), 0x60, 'empty: TEMT|THRE');
  for (const c of new TextEncoder().encode('hello')) t.equal(kernel.pwrite(fd, Uint8Array.of(c), 0), 1);
  t.equal(inb(kernel, fd, 0, LSR), 0x01, 'data ready');
  t.match(dev.portState(0), { head: 5, tail: 0, count: 5 });
  const out: number[] = [];
  for (let i = 0; i < 5; i++) out.push(inb(kernel, fd, 0, TX));
  t.equal(new TextDecoder().decode(Uint8Array.from(out)), 'hello');
  t.equal(inb(kernel, fd, 0, LSR), 0x60);
  t.equal(inb(kernel, fd, 0, TX), 0, 'RX when empty: nothing written (0 in the simulator)');
  t.equal(inb(kernel, fd, 1, LSR), 0x60, 'BAR1 is a separate port');

  // A 4-byte access uses only its first byte.
  kernel.pwrite(fd, new TextEncoder().encode('abcd'), 0);
  t.equal(dev.portState(0).count, 1);
  const wide = new Uint8Array(4).fill(0xee);
  kernel.pread(fd, wide, 0);
  t.strictSame([...wide], [0x61, 0, 0, 0]);

  // Sixteen bytes fill the FIFO: head wraps onto tail and mtty then sees it empty.
  outb(kernel, fd, 0, FCR, 0x07);
  for (let i = 0; i < 16; i++) outb(kernel, fd, 0, TX, i);
  t.match(dev.portState(0), { count: 16, head: 0, tail: 0, overrun: false });
  t.equal(inb(kernel, fd, 0, LSR), 0x60, 'full FIFO reads as empty');
  outb(kernel, fd, 0, TX, 0x99);
  t.equal(inb(kernel, fd, 0, LSR), 0x62, 'the 17th byte overruns (OE)');
  outb(kernel, fd, 0, FCR, 0x06);
  t.match(dev.portState(0), { count: 0, head: 0, tail: 0, maxFifoSize: 1, intrTriggerLevel: 1, fcr: 6 });
  outb(kernel, fd, 0, TX, 1);
  outb(kernel, fd, 0, TX, 2);
  t.equal(dev.portState(0).count, 1, 'FIFO disabled: depth 1');
});

t.test('UART registers: DLAB divisor, IER/IIR/LCR/MCR/MSR/SCR', async (t) => {
  const { kernel, fd, dev } = setup();
  outb(kernel, fd, 0, LCR, 0x83);
  outb(kernel, fd, 0, TX, 0x0c);
  outb(kernel, fd, 0, IER, 0x01);
  t.equal(dev.portState(0).divisor, 0x010c);
  t.equal(inb(kernel, fd, 0, TX), 0x0c, 'DLL');
  t.equal(inb(kernel, fd, 0, IER), 0x01, 'DLM');
  t.equal(dev.portState(0).count, 0, 'divisor writes do not reach the FIFO');
  outb(kernel, fd, 0, TX, 0x30);
  t.equal(dev.portState(0).divisor, 0x013c, 'DLL is OR-ed in');
  outb(kernel, fd, 0, LCR, 0x03);
  t.equal(inb(kernel, fd, 0, LCR), 0x03);
  t.equal(dev.portState(0).divisor, 0x013c, 'clearing DLAB keeps the divisor');
  outb(kernel, fd, 0, LCR, 0x80);
  t.equal(dev.portState(0).divisor, 0, 'setting DLAB zeroes it');
  outb(kernel, fd, 0, LCR, 0x03);

  outb(kernel, fd, 0, IER, 0xff);
  t.equal(inb(kernel, fd, 0, IER), 0x0f, 'IER reads masked to 4 bits');
  t.equal(inb(kernel, fd, 0, IIR), 0xc0 | 0x04 | 0x02, 'trigger level 0 before any FCR: RDI and THRI');
  outb(kernel, fd, 0, IER, 0x00);
  t.equal(inb(kernel, fd, 0, IIR), 0xc1, 'no interrupt pending');
  outb(kernel, fd, 0, SCR, 0x5a);
  t.equal(inb(kernel, fd, 0, SCR), 0x5a);
  t.equal(inb(kernel, fd, 0, MSR), 0xb3, 'DCD|DSR|CTS|DDSR|DCTS');
  outb(kernel, fd, 0, MCR, 0x20);
  t.equal(inb(kernel, fd, 0, MCR), 0x20);
  t.equal(inb(kernel, fd, 0, MSR), 0xb3, 'AFE with room in the FIFO: CTS');
  outb(kernel, fd, 0, FCR, 0x00);
  outb(kernel, fd, 0, TX, 1);
  t.equal(inb(kernel, fd, 0, MSR), 0xa2, 'AFE with a full (depth 1) FIFO: no CTS');
  t.equal(inb(kernel, fd, 0, 8), 0, 'offset past the registers');
  outb(kernel, fd, 0, LSR, 0xff);
  outb(kernel, fd, 0, MSR, 0xff);
  t.strictSame(dev.portState(0).uartReg, [0, 0, 0, 3, 0x20, 0, 0, 0x5a], 'LSR and MSR writes are ignored');
});

t.test('interrupts: MSI at the FIFO trigger level', async (t) => {
  const { kernel, fd } = setup();
  getInfo(kernel, fd);
  const efd = kernel.eventfd(0);
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [efd]));
  // FIFO on, trigger bits "14": mtty decodes them and then forces the level to 1.
  outb(kernel, fd, 0, FCR, 0xc7);
  outb(kernel, fd, 0, IER, 0x01);
  t.equal(events(kernel, efd), 0n, 'enabling RDI alone does not signal');
  outb(kernel, fd, 0, TX, 0x41);
  t.equal(events(kernel, efd), 1n, 'first byte reaches level 1');
  t.equal(inb(kernel, fd, 0, IIR), 0xc4, 'IIR: RDI');
  outb(kernel, fd, 0, TX, 0x42);
  t.equal(events(kernel, efd), 0n, 'count 2 is past the level: no edge');
  // THRI: enabling it with an empty FIFO, and draining the FIFO, signal.
  outb(kernel, fd, 0, IER, 0x03);
  t.equal(events(kernel, efd), 0n, 'FIFO not empty');
  inb(kernel, fd, 0, TX);
  t.equal(events(kernel, efd), 0n);
  inb(kernel, fd, 0, TX);
  t.equal(events(kernel, efd), 1n, 'drained');
  // MCR with MSI enabled: OUT2 and RTS each signal (MSI is not auto-masked).
  outb(kernel, fd, 0, IER, 0x08);
  outb(kernel, fd, 0, MCR, 0x0a);
  t.equal(events(kernel, efd), 2n);
  // RLSI on overrun.
  outb(kernel, fd, 0, FCR, 0x00);
  outb(kernel, fd, 0, IER, 0x04);
  outb(kernel, fd, 0, TX, 1);
  outb(kernel, fd, 0, TX, 2);
  t.equal(events(kernel, efd), 1n, 'overrun');
  t.equal(inb(kernel, fd, 0, IIR), 0xc6);
  // User triggers, then disable.
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, 1));
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetBool(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [false]));
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetBool(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [true]));
  t.equal(events(kernel, efd), 2n);
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_MSI_IRQ_INDEX, 0, 1))), 'ENOTTY');
  t.equal(
    errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [efd]))),
    'EINVAL',
    'INTx while MSI is active',
  );
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, 0));
  outb(kernel, fd, 0, TX, 3);
  t.equal(events(kernel, efd), 0n, 'disabled');
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, 1))), 'EINVAL', 'trigger with no MSI');
});

t.test('interrupts: INTx auto-masks until UNMASK', async (t) => {
  const { kernel, fd, group } = setup();
  getInfo(kernel, fd);
  const efd = kernel.eventfd(0);
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_INTX_IRQ_INDEX, 0, 1))), 'EINVAL', 'unmask with no INTx');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [efd]));
  outb(kernel, fd, 0, IER, 0x02);
  t.equal(events(kernel, efd), 1n, 'THRI with an empty FIFO');
  outb(kernel, fd, 0, IER, 0x02);
  t.equal(events(kernel, efd), 0n, 'masked after the first signal');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetBool(VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_INTX_IRQ_INDEX, 0, [false]));
  outb(kernel, fd, 0, IER, 0x02);
  t.equal(events(kernel, efd), 0n, 'BOOL false does not unmask');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_INTX_IRQ_INDEX, 0, 1));
  outb(kernel, fd, 0, IER, 0x02);
  t.equal(events(kernel, efd), 1n, 'unmasked');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_INTX_IRQ_INDEX, 0, 1));
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetBool(VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_INTX_IRQ_INDEX, 0, [true]));
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, 1));
  t.equal(events(kernel, efd), 0n, 'masked by the user');
  t.equal(
    errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_INTX_IRQ_INDEX, 0, [efd]))),
    'ENOTTY',
    'no mask eventfd',
  );
  t.equal(
    errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [efd]))),
    'EINVAL',
    'MSI while INTx is active',
  );
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, 0));
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_UNMASK, VFIO_PCI_INTX_IRQ_INDEX, 0, 1))), 'EINVAL', 'count 0 disabled INTx');
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [efd]));
  // fd -1 de-assigns; then there is no INTx to trigger.
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [-1]));
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, 1))), 'EINVAL');
  // Close drops the eventfd: after reopening, nothing is signalled.
  kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_INTX_IRQ_INDEX, 0, [efd]));
  kernel.close(fd);
  const fd2 = kernel.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, new TextEncoder().encode(`${UUID_A}\0`));
  outb(kernel, fd2, 0, IER, 0x02);
  t.equal(events(kernel, efd), 0n, 'close_device disabled INTx');
  t.equal(errnoOf(() => irqInfo(kernel, fd2, 0)), 'ok', 'dev_info survives a close');
});

t.test('SET_IRQS: the core validation and mtty`s errnos', async (t) => {
  const { kernel, fd } = setup();
  getInfo(kernel, fd);
  const set = (buf: Uint8Array): string => errnoOf(() => kernel.ioctl(fd, VFIO_DEVICE_SET_IRQS, buf));
  const raw = (v: { argsz?: number; flags: number; index: number; start: number; count: number }, extra = 0): Uint8Array =>
    encode(vfio_irq_set, { argsz: 20 + extra, ...v }, new Uint8Array(20 + extra));
  const TRIG_NONE = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE;
  t.equal(set(raw({ flags: TRIG_NONE, index: 0, start: 0, count: 6 })), 'EINVAL', 'start + count past num_irqs (5)');
  t.equal(set(raw({ flags: TRIG_NONE, index: 0, start: 5, count: 0 })), 'EINVAL', 'start at num_irqs');
  t.equal(set(raw({ flags: TRIG_NONE, index: 0, start: 0, count: 2 })), 'EINVAL', 'within num_irqs but mtty wants count 1');
  t.equal(set(raw({ flags: TRIG_NONE, index: 5, start: 0, count: 1 })), 'EINVAL', 'index 5');
  t.equal(set(raw({ flags: TRIG_NONE | 0x40, index: 0, start: 0, count: 1 })), 'EINVAL', 'unknown flag');
  t.equal(set(raw({ flags: VFIO_IRQ_SET_ACTION_TRIGGER, index: 0, start: 0, count: 1 })), 'EINVAL', 'no data type');
  t.equal(set(raw({ flags: VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL, index: 0, start: 0, count: 1 })), 'EINVAL', 'two data types');
  t.equal(set(raw({ argsz: 19, flags: TRIG_NONE, index: 0, start: 0, count: 1 })), 'EINVAL', 'argsz < 20');
  t.equal(set(raw({ flags: VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, index: 0, start: 0, count: 1 }, 3)), 'EINVAL', 'argsz short of the data');
  const lying = raw({ flags: VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD, index: 0, start: 0, count: 1 });
  encode(vfio_irq_set, { argsz: 24 }, lying);
  t.equal(set(lying), 'EFAULT', 'argsz covers data the buffer lacks');
  t.equal(set(raw({ flags: VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE, index: 0, start: 0, count: 1 })), 'ok', 'two actions: no case, success');
  for (const index of [VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX]) {
    t.equal(set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, index, 0, [-1])), 'ENOTTY', `index ${index}`);
  }
  t.equal(set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [999])), 'EBADF', 'not an fd');
  t.equal(set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [fd])), 'EINVAL', 'not an eventfd');
  t.equal(set(irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [-1])), 'ok', 'fd -1 with nothing set');
});

t.test('RESET, migration features and the log_ops stubs', async (t) => {
  const { kernel, fd, dev } = setup();
  outb(kernel, fd, 0, TX, 0x77);
  t.equal(kernel.ioctl(fd, VFIO_DEVICE_RESET), 0);
  t.equal(dev.portState(0).count, 1, 'the UART is not reset');

  const feature = (flags: number, payload: Uint8Array): Uint8Array => {
    const buf = featureBuffer(flags, payload.length);
    featurePayload(buf).set(payload);
    kernel.ioctl(fd, VFIO_DEVICE_FEATURE, buf);
    return featurePayload(buf);
  };
  t.equal(dataView(feature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, new Uint8Array(8))).getBigUint64(0, true), 7n, 'STOP_COPY|P2P|PRE_COPY');
  t.equal(dataView(feature(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, new Uint8Array(8))).getBigUint64(0, true), 96n);
  const one = setup('mtty-1', UUID_B);
  const size1 = featureBuffer(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, 8);
  one.kernel.ioctl(one.fd, VFIO_DEVICE_FEATURE, size1);
  t.equal(dataView(featurePayload(size1)).getBigUint64(0, true), 60n);

  const ranges = encode(vfio_device_feature_dma_logging_range, { iova: 0n, length: 0x10000n });
  const ctl = feature(
    VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
    encode(vfio_device_feature_dma_logging_control, { page_size: 0x2000n, num_ranges: 1, ranges: kernel.addressOf(ranges) }),
  );
  t.equal(decode(vfio_device_feature_dma_logging_control, ctl).page_size, 0x2000n, 'page size left as asked');
  const bitmap = new Uint8Array(8);
  feature(
    VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
    encode(vfio_device_feature_dma_logging_report, { iova: 0n, length: 0x10000n, page_size: 0x1000n, bitmap: kernel.addressOf(bitmap) }),
  );
  t.strictSame([...bitmap], new Array<number>(8).fill(0), 'nothing dirty');
});
