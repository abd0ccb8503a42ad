/**
 * Migration of the simulated mtty through MIG_DEVICE_STATE SET/GET and the
 * data fds, byte for byte against mtty.c's `struct mtty_data` image
 * (reference §8.4, §8.5), with its errnos and quirks, plus the simulator's
 * fault hooks.
 */
import { STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P } from '../lib/migration/state-names.js';
import t from 'tap';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty, type SimMtty } from '../lib/sim/mtty.js';
import {
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_STATE_ERROR,
} from '../lib/vfio/uapi/constants.js';
import { featureBuffer, featurePayload } from '../lib/vfio/uapi/feature.js';
import { VFIO_DEVICE_FEATURE, VFIO_DEVICE_RESET, VFIO_GROUP_GET_DEVICE_FD, VFIO_MIG_GET_PRECOPY_INFO } from '../lib/vfio/uapi/ioctls.js';
import { decode, encode, type Decoded } from '../lib/vfio/uapi/layout.js';
import { vfio_device_feature_mig_state, vfio_precopy_info } from '../lib/vfio/uapi/structs.js';
import { drain, errnoOf, getMigState, inb, openMtty, outb, setMigState, type OpenMtty } from './helpers/sim-mtty.js';

const SRC = '5a4c2c6e-0d77-4a43-9d4a-2f4c7e1a0001';
const DST = '5a4c2c6e-0d77-4a43-9d4a-2f4c7e1a0002';


// 16550 registers.
const TX = 0;
const IER = 1;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const SCR = 7;

const hex = (s: string): number[] => s.trim().split(/\s+/).map((b) => Number.parseInt(b, 16));

/** struct mtty_data's header: MTTY_MAGIC, major 1, minor 0, nr_ports, flags 0 (little-endian). */
const header = (nrPorts: number): number[] => hex(`4e 2c 3e 8c 89 09 9d 7e  01 00 00 00  00 00 00 00  0${nrPorts} 00 00 00  00 00 00 00`);

/** Port 0 after `program()`: struct serial_port, 36 bytes. */
const PORT0 = hex(`
  00 05 00 03 0b 00 00 5a
  68 69 21 00 00 00 00 00 00 00 00 00 00 00 00 00
  03 00 03
  00 00 00
  0c 00
  c7 10 01 00`);
/** Port 1 after `program()`: three bytes queued, FCR never written (trigger level 0). */
const PORT1 = hex(`
  00 00 00 00 00 00 00 00
  78 79 7a 00 00 00 00 00 00 00 00 00 00 00 00 00
  03 00 03
  00 00 00
  00 00
  00 10 00 00`);

interface Pair {
  kernel: SimKernel;
  src: SimMtty;
  dst: SimMtty;
  s: OpenMtty;
  d: OpenMtty;
}

/** Two mttys in one kernel, each in its own container. */
function pair(dstType: 'mtty-1' | 'mtty-2' = 'mtty-2', srcType: 'mtty-1' | 'mtty-2' = 'mtty-2'): Pair {
  const kernel = new SimKernel();
  const src = addMtty(kernel, { uuid: SRC, type: srcType });
  const dst = addMtty(kernel, { uuid: DST, type: dstType });
  return { kernel, src, dst, s: openMtty(kernel, src), d: openMtty(kernel, dst) };
}

/** Puts a known state into the source UARTs (PORT0, PORT1). */
function program(kernel: SimKernel, fd: number): void {
  outb(kernel, fd, 0, FCR, 0xc7);
  outb(kernel, fd, 0, LCR, 0x83);
  outb(kernel, fd, 0, TX, 0x0c); // DLL
  outb(kernel, fd, 0, IER, 0x00); // DLM
  outb(kernel, fd, 0, LCR, 0x03);
  outb(kernel, fd, 0, IER, 0x05);
  outb(kernel, fd, 0, MCR, 0x0b);
  outb(kernel, fd, 0, SCR, 0x5a);
  for (const c of new TextEncoder().encode('hi!')) outb(kernel, fd, 0, TX, c);
  for (const c of new TextEncoder().encode('xyz')) outb(kernel, fd, 1, TX, c);
}

function precopyInfo(kernel: SimKernel, dataFd: number, flags = 0): Decoded<typeof vfio_precopy_info> {
  const buf = encode(vfio_precopy_info, { argsz: vfio_precopy_info.size, flags, initial_bytes: 99n, dirty_bytes: 99n });
  kernel.ioctl(dataFd, VFIO_MIG_GET_PRECOPY_INFO, buf);
  return decode(vfio_precopy_info, buf);
}

function readN(kernel: SimKernel, fd: number, n: number): number[] {
  const buf = new Uint8Array(n);
  return [...buf.subarray(0, kernel.read(fd, buf))];
}

/** Runs the source's whole save (PRE_COPY, STOP_COPY, STOP) and returns the stream. */
function saveAll(kernel: SimKernel, fd: number): Uint8Array {
  const dataFd = setMigState(kernel, fd, PRE_COPY);
  const pre = drain(kernel, dataFd);
  setMigState(kernel, fd, STOP_COPY);
  const rest = drain(kernel, dataFd);
  setMigState(kernel, fd, STOP);
  kernel.close(dataFd);
  return Uint8Array.from([...pre, ...rest]);
}

t.test('a full migration, mtty-2 to mtty-2, through PRE_COPY', async (t) => {
  const { kernel, src, dst, s, d } = pair();
  program(kernel, s.fd);
  t.strictSame([...src.portsImage()], [...PORT0, ...PORT1], 'the source ports, as struct serial_port images');

  t.equal(getMigState(kernel, s.fd), RUNNING);
  const dataFd = setMigState(kernel, s.fd, PRE_COPY);
  t.ok(dataFd >= 0, 'RUNNING→PRE_COPY opens a data fd');
  t.equal(getMigState(kernel, s.fd), PRE_COPY);
  const info = precopyInfo(kernel, dataFd, 0xabcd);
  t.strictSame(info, { argsz: 24, flags: 0xabcd, initial_bytes: 24n, dirty_bytes: 0n }, 'initial 24; flags echoed untouched');
  t.strictSame(readN(kernel, dataFd, 4096), header(2), 'precopy carries exactly the 24-byte header');
  t.equal(kernel.read(dataFd, new Uint8Array(64)), 0, 'drained: 0, not ENOMSG');
  t.equal(precopyInfo(kernel, dataFd).initial_bytes, 0n);

  t.equal(setMigState(kernel, s.fd, STOP_COPY), -1, 'PRE_COPY→STOP_COPY keeps the same fd');
  t.equal(getMigState(kernel, s.fd), STOP_COPY);
  t.equal(errnoOf(() => precopyInfo(kernel, dataFd)), 'EINVAL', 'PRECOPY_INFO outside PRE_COPY');
  t.strictSame(readN(kernel, dataFd, 10), PORT0.slice(0, 10), 'reads return min(len, remaining)');
  t.strictSame([...drain(kernel, dataFd)], [...PORT0.slice(10), ...PORT1], 'then the rest of the 72 port bytes');
  t.equal(setMigState(kernel, s.fd, STOP), -1);
  t.equal(errnoOf(() => kernel.read(dataFd, new Uint8Array(8))), 'ENODEV', 'the session ended with STOP_COPY→STOP');
  kernel.close(dataFd);

  const resumeFd = setMigState(kernel, d.fd, RESUMING);
  t.ok(resumeFd >= 0, 'RUNNING→RESUMING opens a data fd');
  t.equal(getMigState(kernel, d.fd), RESUMING);
  const stream = Uint8Array.from([...header(2), ...PORT0, ...PORT1]);
  // Any segmentation: 10 + 20 crosses the header boundary inside the second write.
  t.equal(kernel.write(resumeFd, stream.subarray(0, 10)), 10);
  t.equal(kernel.write(resumeFd, stream.subarray(10, 30)), 20);
  t.equal(kernel.write(resumeFd, stream.subarray(30)), 66);
  kernel.close(resumeFd); // QEMU closes before RESUMING→STOP; the driver holds its own reference
  t.equal(setMigState(kernel, d.fd, RUNNING), -1);
  t.equal(getMigState(kernel, d.fd), RUNNING);
  t.strictSame([...dst.portsImage()], [...PORT0, ...PORT1], 'the destination holds the same struct images');

  // The destination saves the very same bytes again.
  t.strictSame([...saveAll(kernel, d.fd)], [...stream], 'a re-save of the destination is identical');
  setMigState(kernel, d.fd, RUNNING);
  // And the FIFOs and registers work: the bytes arrive.
  const rx = (bar: number): string => new TextDecoder().decode(Uint8Array.from([0, 1, 2].map(() => inb(kernel, d.fd, bar, TX))));
  t.equal(rx(0), 'hi!');
  t.equal(rx(1), 'xyz');
  t.equal(inb(kernel, d.fd, 0, SCR), 0x5a);
  t.match(dst.portState(0), { divisor: 0x0c, fcr: 0xc7, intrTriggerLevel: 1 }, 'divisor and FIFO setup migrated');
});

t.test('mtty-1: a 60-byte stream straight from STOP', async (t) => {
  const { kernel, s, d, dst } = pair('mtty-1', 'mtty-1');
  outb(kernel, s.fd, 0, TX, 0x42);
  setMigState(kernel, s.fd, STOP);
  const dataFd = setMigState(kernel, s.fd, STOP_COPY);
  t.ok(dataFd >= 0, 'STOP→STOP_COPY opens a data fd');
  const bytes = drain(kernel, dataFd, 7);
  t.equal(bytes.length, 60);
  t.strictSame([...bytes.subarray(0, 24)], header(1));
  const resumeFd = setMigState(kernel, d.fd, RESUMING);
  kernel.write(resumeFd, bytes);
  setMigState(kernel, d.fd, RUNNING);
  t.equal(dst.portState(0).count, 1);
  t.equal(inb(kernel, d.fd, 0, TX), 0x42);
});

t.test('struct padding travels: a resumed image is saved back byte for byte', async (t) => {
  const { kernel, d, dst } = pair();
  const stream = Uint8Array.from([...header(2), ...PORT0, ...PORT1]);
  // +29 and +35 of each struct serial_port are padding; mtty memcpy()s them in and out.
  stream[24 + 29] = 0xaa;
  stream[24 + 35] = 0xbb;
  stream[60 + 29] = 0xcc;
  stream[60 + 35] = 0xdd;
  const resumeFd = setMigState(kernel, d.fd, RESUMING);
  kernel.write(resumeFd, stream);
  setMigState(kernel, d.fd, STOP);
  t.strictSame([...dst.portsImage()], [...stream.subarray(24)]);
  const dataFd = setMigState(kernel, d.fd, STOP_COPY);
  t.strictSame([...drain(kernel, dataFd)], [...stream]);
});

t.test('resume errors: bad header, short data, too much data, file modes', async (t) => {
  const good = Uint8Array.from([...header(2), ...PORT0, ...PORT1]);
  const variants: [string, (b: Uint8Array) => void][] = [
    ['bad magic', (b) => (b[0] ^= 1)],
    ['flags set', (b) => (b[20] = 1)],
    ['major 2', (b) => (b[8] = 2)],
    ['minor 1', (b) => (b[12] = 1)],
    ['nr_ports 1', (b) => (b[16] = 1)],
  ];
  for (const [what, corrupt] of variants) {
    const { kernel, d } = pair();
    const resumeFd = setMigState(kernel, d.fd, RESUMING);
    const bad = good.slice();
    corrupt(bad);
    t.equal(kernel.write(resumeFd, bad.subarray(0, 23)), 23, `${what}: not checked before byte 24`);
    t.equal(errnoOf(() => kernel.write(resumeFd, bad.subarray(23, 30))), 'EFAULT', `${what}: the write completing the header fails`);
  }

  // The failed write still consumed its bytes; later writes are accepted and the load succeeds.
  const { kernel, d, dst } = pair();
  const resumeFd = setMigState(kernel, d.fd, RESUMING);
  const bad = good.slice();
  bad[7] = 0;
  t.equal(errnoOf(() => kernel.write(resumeFd, bad.subarray(0, 24))), 'EFAULT');
  t.equal(kernel.write(resumeFd, bad.subarray(24)), 72, 'mtty validates the header once');
  t.equal(setMigState(kernel, d.fd, STOP), -1, 'and RESUMING→STOP loads the ports anyway');
  t.strictSame([...dst.portsImage()], [...PORT0, ...PORT1]);

  const short = pair();
  const fd2 = setMigState(short.kernel, short.d.fd, RESUMING);
  short.kernel.write(fd2, good.subarray(0, 95));
  t.equal(errnoOf(() => setMigState(short.kernel, short.d.fd, STOP)), 'EINVAL', 'short data: RESUMING→STOP fails');
  t.equal(getMigState(short.kernel, short.d.fd), RESUMING, 'and the device stays in RESUMING');
  t.equal(errnoOf(() => setMigState(short.kernel, short.d.fd, RUNNING)), 'EINVAL', 'RESUMING→RUNNING stops at the same arc');
  t.equal(errnoOf(() => short.kernel.write(fd2, new Uint8Array(2))), 'ENOMEM', 'past mtty_data_size (96)');
  t.equal(short.kernel.write(fd2, good.subarray(95)), 1);
  t.equal(setMigState(short.kernel, short.d.fd, STOP), -1, 'complete now');
  t.equal(errnoOf(() => short.kernel.write(fd2, new Uint8Array(1))), 'ENODEV', 'the session is over');
  t.equal(errnoOf(() => short.kernel.write(fd2, new Uint8Array(97))), 'ENOMEM', 'the size check comes first');

  const one = pair('mtty-1');
  const fd1 = setMigState(one.kernel, one.d.fd, RESUMING);
  t.equal(errnoOf(() => one.kernel.write(fd1, good)), 'ENOMEM', 'a 96-byte stream into mtty-1 (60)');
  t.equal(errnoOf(() => one.kernel.write(fd1, good.subarray(0, 24))), 'EFAULT', 'nr_ports 2 into mtty-1');

  const modes = pair();
  const rfd = setMigState(modes.kernel, modes.d.fd, RESUMING);
  t.equal(errnoOf(() => modes.kernel.pwrite(rfd, good, 0)), 'ESPIPE', 'pwrite on a stream');
  t.equal(errnoOf(() => modes.kernel.read(rfd, new Uint8Array(8))), 'EBADF', 'read on the O_WRONLY resume file');
  t.equal(errnoOf(() => precopyInfo(modes.kernel, rfd)), 'ENOTTY', 'no ioctl on the resume file');
});

t.test('saving file: modes, PRECOPY_INFO checks, sessions ending', async (t) => {
  const { kernel, s } = pair();
  const fd = setMigState(kernel, s.fd, PRE_COPY);
  t.equal(errnoOf(() => kernel.pread(fd, new Uint8Array(8), 0)), 'ESPIPE');
  t.equal(errnoOf(() => kernel.write(fd, new Uint8Array(8))), 'EBADF', 'write on the O_RDONLY save file');
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_MIG_GET_PRECOPY_INFO + 1, new Uint8Array(24))), 'ENOTTY');
  const small = encode(vfio_precopy_info, { argsz: 23 });
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_MIG_GET_PRECOPY_INFO, small)), 'EINVAL', 'argsz < 24');
  t.equal(errnoOf(() => kernel.ioctl(fd, VFIO_MIG_GET_PRECOPY_INFO, new Uint8Array(16))), 'EFAULT');

  // PRE_COPY→RUNNING ends the session; a new one gets a new file.
  t.equal(setMigState(kernel, s.fd, RUNNING), -1);
  t.equal(errnoOf(() => kernel.read(fd, new Uint8Array(8))), 'ENODEV');
  const fd2 = setMigState(kernel, s.fd, PRE_COPY);
  t.not(fd2, fd);
  t.equal(errnoOf(() => precopyInfo(kernel, fd)), 'ENODEV', 'the old file in PRE_COPY');
  t.equal(precopyInfo(kernel, fd2).initial_bytes, 24n);

  // P2P flavours: PRE_COPY→PRE_COPY_P2P keeps the session, →RUNNING_P2P ends it.
  t.equal(setMigState(kernel, s.fd, PRE_COPY_P2P), -1);
  t.equal(precopyInfo(kernel, fd2).initial_bytes, 24n);
  t.equal(setMigState(kernel, s.fd, RUNNING_P2P), -1);
  t.equal(errnoOf(() => kernel.read(fd2, new Uint8Array(8))), 'ENODEV');
  const fd3 = setMigState(kernel, s.fd, PRE_COPY_P2P);
  t.ok(fd3 >= 0, 'RUNNING_P2P→PRE_COPY_P2P opens a session');

  // VFIO_DEVICE_RESET: RUNNING at once, files disabled, UART kept.
  outb(kernel, s.fd, 0, TX, 1);
  kernel.ioctl(s.fd, VFIO_DEVICE_RESET);
  t.equal(getMigState(kernel, s.fd), RUNNING);
  t.equal(errnoOf(() => kernel.read(fd3, new Uint8Array(8))), 'ENODEV');
  t.equal(inb(kernel, s.fd, 0, TX), 1, 'UART state survives the reset');
});

t.test('close_device ends sessions but keeps the migration state', async (t) => {
  const { kernel, s } = pair();
  setMigState(kernel, s.fd, STOP);
  const fd = setMigState(kernel, s.fd, STOP_COPY);
  t.equal(readN(kernel, fd, 8).length, 8);
  kernel.close(s.fd);
  t.equal(errnoOf(() => kernel.read(fd, new Uint8Array(8))), 'ENODEV');
  const again = kernel.ioctl(s.group, VFIO_GROUP_GET_DEVICE_FD, new TextEncoder().encode(`${SRC}\0`));
  t.equal(getMigState(kernel, again), STOP_COPY, 'mtty_close does not touch the state');
  t.equal(setMigState(kernel, again, STOP), -1);
});

t.test('MIG_DEVICE_STATE: refused targets and the data_fd on failure', async (t) => {
  const { kernel, s } = pair();
  const raw = (state: number): { errno: string; dataFd: number } => {
    const buf = featureBuffer(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, 8);
    encode(vfio_device_feature_mig_state, { device_state: state, data_fd: 77 }, featurePayload(buf));
    const errno = errnoOf(() => kernel.ioctl(s.fd, VFIO_DEVICE_FEATURE, buf));
    return { errno, dataFd: decode(vfio_device_feature_mig_state, featurePayload(buf)).data_fd };
  };
  t.strictSame(raw(RUNNING), { errno: 'ok', dataFd: -1 }, 'same state: nothing to do');
  t.strictSame(raw(8), { errno: 'EINVAL', dataFd: -1 }, 'no state 8');
  t.strictSame(raw(VFIO_DEVICE_STATE_ERROR), { errno: 'EINVAL', dataFd: -1 }, 'ERROR cannot be requested');
  setMigState(kernel, s.fd, STOP);
  setMigState(kernel, s.fd, STOP_COPY);
  t.strictSame(raw(PRE_COPY), { errno: 'EINVAL', dataFd: -1 }, 'STOP_COPY→PRE_COPY is blocked');
  t.equal(getMigState(kernel, s.fd), STOP_COPY);
  t.equal(setMigState(kernel, s.fd, RUNNING), -1, 'STOP_COPY→STOP→RUNNING_P2P→RUNNING');
  const fd = setMigState(kernel, s.fd, RESUMING);
  t.ok(fd >= 0);
  t.equal(setMigState(kernel, s.fd, RESUMING), -1, 'already RESUMING: no new fd');
});

t.test('fault hooks: failing arcs, ERROR, read errors, truncated streams', async (t) => {
  const { kernel, src, dst, s, d } = pair();
  src.faults = { arc: { from: RUNNING_P2P, to: STOP, errno: 'EIO' } };
  t.equal(errnoOf(() => setMigState(kernel, s.fd, STOP)), 'EIO');
  t.equal(getMigState(kernel, s.fd), RUNNING_P2P, 'stopped on the failing arc');
  src.faults = { arc: { from: RUNNING_P2P, to: STOP, errno: 'EIO', enterError: true } };
  t.equal(errnoOf(() => setMigState(kernel, s.fd, STOP)), 'EIO');
  t.equal(getMigState(kernel, s.fd), VFIO_DEVICE_STATE_ERROR);
  src.faults = {};
  t.equal(errnoOf(() => setMigState(kernel, s.fd, RUNNING)), 'EINVAL', 'nothing leaves ERROR but a reset');
  t.equal(setMigState(kernel, s.fd, VFIO_DEVICE_STATE_ERROR), -1, 'ERROR to ERROR is no move');
  kernel.ioctl(s.fd, VFIO_DEVICE_RESET);
  t.equal(getMigState(kernel, s.fd), RUNNING);

  const fd = setMigState(kernel, s.fd, PRE_COPY);
  src.faults = { saveReadErrno: 'EIO' };
  t.equal(errnoOf(() => kernel.read(fd, new Uint8Array(8))), 'EIO');
  src.faults = { saveTruncateAt: 10 };
  t.equal(precopyInfo(kernel, fd).initial_bytes, 10n);
  t.equal(drain(kernel, fd).length, 10);
  setMigState(kernel, s.fd, STOP_COPY);
  t.equal(drain(kernel, fd).length, 0, 'the stream ends at 10 bytes');
  src.faults = { saveTruncateAt: 50 };
  const tail = drain(kernel, fd);
  t.equal(tail.length, 40);
  src.faults = {};
  setMigState(kernel, s.fd, STOP);

  const resumeFd = setMigState(kernel, d.fd, RESUMING);
  const partial = Uint8Array.from([...header(2), ...tail.subarray(14)]);
  kernel.write(resumeFd, partial);
  t.equal(errnoOf(() => setMigState(kernel, d.fd, RUNNING)), 'EINVAL', 'a truncated stream fails RESUMING→STOP');
  t.equal(dst.portState(0).count, 0, 'nothing loaded');
});
