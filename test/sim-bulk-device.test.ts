/**
 * The simulated bulk device: its precopy estimates move the way a real
 * driver's do, its stream carries the state exactly, its resume validates,
 * and its faults fire. Driven through the v2 driver (MigrationFile).
 */
import t from 'tap';
import { MigrationFile } from '../lib/migration/v2-driver.js';
import { addBulkDevice, BULK_PARENT, SimBulkDevice } from '../lib/sim/bulk-device.js';
import { BULK_HEADER_SIZE, BULK_RECORD_HEADER_SIZE, bulkStreamSize } from '../lib/sim/bulk-stream.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { VfioContainer } from '../lib/vfio/container.js';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
} from '../lib/vfio/uapi/constants.js';
import { expectErrno } from './helpers/expect.js';

const PAGE = 4096;
const REC = BULK_RECORD_HEADER_SIZE + PAGE;

function open(options: { pages?: number; precopy?: boolean; p2p?: boolean } = {}): { kernel: SimKernel; sim: SimBulkDevice; driver: MigrationFile; other: SimBulkDevice; otherDriver: MigrationFile } {
  const kernel = new SimKernel();
  const stateSize = (options.pages ?? 8) * PAGE;
  const sim = addBulkDevice(kernel, { stateSize, seed: 3, ...options });
  const other = addBulkDevice(kernel, { stateSize, seed: 4, ...options });
  const driver = MigrationFile.open(VfioContainer.open({ sys: kernel }).openDevice(sim.name));
  const otherDriver = MigrationFile.open(VfioContainer.open({ sys: kernel }).openDevice(other.name));
  return { kernel, sim, driver, other, otherDriver };
}

async function drain(driver: MigrationFile, chunk = 10_000): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (;;) {
    const buf = new Uint8Array(chunk);
    const n = await driver.read(buf);
    if (n === 0) return out;
    out.push(buf.subarray(0, n));
  }
}

t.test('registration, flags, config space and the workload', async (t) => {
  const kernel = new SimKernel();
  const dev = addBulkDevice(kernel, { stateSize: 4 * PAGE, uuid: 'AAAAAAAA-0000-4000-8000-000000000001' });
  t.equal(dev.name, 'aaaaaaaa-0000-4000-8000-000000000001');
  t.equal(kernel.readlink(`/sys/bus/mdev/devices/${dev.name}`).includes('vfio-sim-bulk'), true);
  t.ok(kernel.readdir(`${BULK_PARENT}/mdev_supported_types`).includes('bulk-1'));
  using c = VfioContainer.open({ sys: kernel });
  const d = c.openDevice(dev.name);
  t.equal(d.migrationFlags(), VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY);
  const cfg = d.region(7);
  t.equal(cfg.size, 256);
  t.equal(cfg.read16(0), 0x1b36);
  cfg.write16(4, 0xffff);
  t.equal(cfg.read16(4), 0x0547, 'only the writable command bits stick');
  cfg.write32(0, 0);
  t.equal(cfg.read16(0), 0x1b36, 'ids are read-only');
  t.equal(d.region(0).size, 0);
  t.equal(d.irqInfo(0).count, 0);
  expectErrno(t, () => d.irqInfo(5), 'EINVAL', 'irq index 5');
  t.throws(() => d.region(0).read8(0), 'BAR0 does not exist');
  expectErrno(t, () => kernel.pread(d.fd, new Uint8Array(2), 255n + (7n << 40n)), 'EINVAL', 'past the config region');
  expectErrno(t, () => kernel.pread(d.fd, new Uint8Array(2), 0n), 'EINVAL', 'BAR0 offset');
  const before = dev.checksum();
  t.equal(dev.tick(1), 1, 'one page at least');
  t.equal(dev.tick(3 * PAGE), 3);
  t.not(dev.checksum(), before, 'the workload changes the state');
  t.throws(() => addBulkDevice(kernel, { stateSize: PAGE + 1 }), RangeError);
  t.throws(() => addBulkDevice(kernel, { stateSize: PAGE, pageSize: 12 }), RangeError);
  const plain = addBulkDevice(kernel, { stateSize: PAGE, precopy: false, p2p: false });
  t.equal(plain.migration.flags, VFIO_MIGRATION_STOP_COPY);
  t.equal(new SimBulkDevice('bbbbbbbb-0000-4000-8000-000000000001', { stateSize: PAGE }).readState(0, 4).length, 4);
});

t.test('precopy: initial drains as read, dirty rises with writes and falls as read, ENOMSG at the temporary end', async (t) => {
  const { sim, driver } = open({ pages: 4 });
  const full = bulkStreamSize(PAGE, 4);
  t.equal(full, BULK_HEADER_SIZE + 4 * REC + 8);
  t.equal(driver.stopCopySize(), full, 'MIG_DATA_SIZE outside a session: the whole stream');
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  t.same(driver.precopyInfo(), { initialBytes: BULK_HEADER_SIZE + 4 * REC, dirtyBytes: 0 });
  const buf = new Uint8Array(BULK_HEADER_SIZE + REC + 100);
  t.equal(await driver.read(buf), buf.length);
  t.same(driver.precopyInfo(), { initialBytes: 3 * REC - 100, dirtyBytes: 0 }, 'the header, one page and 100 bytes were read');
  // Page 0 is sent and page 1 half sent: writing them makes them dirty; page 3 is not sent yet: it will go with its new bytes.
  t.ok(sim.touch(0));
  sim.touch(1);
  sim.touch(3);
  sim.touch(0);
  t.same(driver.precopyInfo(), { initialBytes: 3 * REC - 100, dirtyBytes: 2 * REC }, 'pages 0 and 1 dirty, once each');
  t.throws(() => sim.touch(4), RangeError);
  const chunks = await drain(driver, 3000);
  t.equal(chunks.reduce((n, c) => n + c.length, 0), 5 * REC - 100, 'the rest of the initial pass, then the two dirty pages');
  t.same(driver.precopyInfo(), { initialBytes: 0, dirtyBytes: 0 }, 'everything read');
  t.equal(await driver.read(buf), 0, 'ENOMSG reads as 0 ("nothing more now")');
  sim.touch(2);
  t.same(driver.precopyInfo(), { initialBytes: 0, dirtyBytes: REC }, 'a new write: one dirty page');
  t.equal(await driver.read(new Uint8Array(10)), 10, 'a dirty page being read...');
  sim.touch(2);
  t.same(driver.precopyInfo(), { initialBytes: 0, dirtyBytes: 2 * REC - 10 }, '...and written again: queued again');
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  t.equal(sim.tick(PAGE), 0, 'a stopped device does not change');
  t.notOk(sim.touch(0));
  const estimate = driver.stopCopySize();
  t.equal(estimate, 2 * REC - 10 + 8, 'MIG_DATA_SIZE: the rest of the stream, end record included');
  t.equal((await drain(driver)).reduce((n, c) => n + c.length, 0), estimate, 'and that is what STOP_COPY delivers');
  t.equal(await driver.read(buf), 0, 'end of stream');
});

t.test('a full migration carries the state exactly, whatever the workload did', async (t) => {
  const { sim, driver, other, otherDriver } = open({ pages: 16 });
  t.not(sim.checksum(), other.checksum());
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  const stream: Uint8Array[] = [];
  for (let i = 0; i < 30; i++) {
    const buf = new Uint8Array(5000);
    const n = await driver.read(buf);
    stream.push(buf.subarray(0, n));
    sim.tick(2 * PAGE);
  }
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  stream.push(...(await drain(driver, 777)));
  driver.setState(VFIO_DEVICE_STATE_STOP);
  otherDriver.setState(VFIO_DEVICE_STATE_RESUMING);
  for (const c of stream) for (let at = 0; at < c.length; at += 333) await otherDriver.write(c.subarray(at, at + 333));
  otherDriver.closeSession();
  otherDriver.setState(VFIO_DEVICE_STATE_RUNNING);
  t.equal(other.checksum(), sim.checksum(), 'the destination state equals the source state');
});

t.test('STOP -> STOP_COPY without precopy; a device without PRE_COPY', async (t) => {
  const { sim, driver, other, otherDriver } = open({ pages: 3, precopy: false, p2p: false });
  driver.setState(VFIO_DEVICE_STATE_STOP);
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  const stream = await drain(driver);
  t.equal(stream.reduce((n, c) => n + c.length, 0), bulkStreamSize(PAGE, 3));
  otherDriver.setState(VFIO_DEVICE_STATE_RESUMING);
  for (const c of stream) await otherDriver.write(c);
  otherDriver.setState(VFIO_DEVICE_STATE_STOP);
  t.equal(other.checksum(), sim.checksum());
});

t.test('resume validation: bad header, bad index, trailing bytes, incomplete stream', async (t) => {
  const { kernel, driver, otherDriver } = open({ pages: 2 });
  driver.setState(VFIO_DEVICE_STATE_STOP);
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  const good = Buffer.concat(await drain(driver));
  const attempt = async (bytes: Uint8Array): Promise<string> => {
    otherDriver.reset();
    otherDriver.setState(VFIO_DEVICE_STATE_RESUMING);
    try {
      await otherDriver.write(bytes);
      otherDriver.setState(VFIO_DEVICE_STATE_STOP);
      return 'ok';
    } catch (e) {
      return (e as { code: string }).code;
    }
  };
  t.equal(await attempt(good), 'ok');
  const badMagic = Uint8Array.from(good);
  badMagic[0] ^= 1;
  t.equal(await attempt(badMagic), 'EINVAL', 'bad magic');
  const badIndex = Uint8Array.from(good);
  badIndex[BULK_HEADER_SIZE] = 9;
  t.equal(await attempt(badIndex), 'EINVAL', 'page index past the state');
  const badPad = Uint8Array.from(good);
  badPad[BULK_HEADER_SIZE + 4] = 1;
  t.equal(await attempt(badPad), 'EINVAL', 'non-zero record padding');
  t.equal(await attempt(Buffer.concat([good, Buffer.of(0)])), 'EINVAL', 'a byte after the end record');
  t.equal(await attempt(good.subarray(0, good.length - 8)), 'EINVAL', 'no end record: RESUMING -> STOP refuses');
  t.equal(await attempt(Buffer.concat([good.subarray(0, BULK_HEADER_SIZE), good.subarray(good.length - 8)])), 'EINVAL', 'pages missing');
  t.equal(otherDriver.queryState(), VFIO_DEVICE_STATE_RESUMING, 'a refused RESUMING -> STOP stays in RESUMING');
  expectErrno(t, () => kernel.read(kernel.installOps({ kind: 'x', label: 'x' }), new Uint8Array(1)), 'EINVAL', 'a file without read');
});

t.test('faults: arcs, nonsense sizes, read errors, truncation, resume errors', async (t) => {
  const { sim, driver, other, otherDriver } = open({ pages: 2 });
  sim.faults = { arc: { from: VFIO_DEVICE_STATE_RUNNING, to: VFIO_DEVICE_STATE_PRE_COPY, errno: 'EIO' } };
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_PRE_COPY), { code: 'EIO' });
  t.equal(driver.state, VFIO_DEVICE_STATE_RUNNING, 'the failed arc left it where it was');
  sim.faults = { arc: { from: VFIO_DEVICE_STATE_RUNNING, to: VFIO_DEVICE_STATE_PRE_COPY, errno: 'EIO', enterError: true } };
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_PRE_COPY), { code: 'EIO' });
  t.equal(driver.state, VFIO_DEVICE_STATE_ERROR, 'or in ERROR');
  sim.faults = {};
  driver.reset();
  t.equal(driver.queryState(), VFIO_DEVICE_STATE_RUNNING);

  sim.faults = { dataSize: 2n ** 64n - 1n };
  t.throws(() => driver.stopCopySize(), { code: 'ERR_VFIO_UAPI_FORMAT' }, 'a size beyond 2^53 is nonsense');
  sim.faults = { dataSizeErrno: 'EOPNOTSUPP' };
  t.throws(() => driver.stopCopySize(), { code: 'EOPNOTSUPP' });
  sim.faults = { dataSize: 0n };
  t.equal(driver.stopCopySize(), 0);
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  sim.faults = { precopyInfo: { initialBytes: 2n ** 60n } };
  t.throws(() => driver.precopyInfo(), { code: 'ERR_VFIO_UAPI_FORMAT' });
  sim.faults = { precopyInfo: { dirtyBytes: 5n } };
  t.same(driver.precopyInfo(), { initialBytes: BULK_HEADER_SIZE + 2 * REC, dirtyBytes: 5 });
  sim.faults = { precopyInfoErrno: 'EIO' };
  t.throws(() => driver.precopyInfo(), { code: 'EIO' });
  sim.faults = { saveReadErrno: 'EIO', saveReadErrnoAfter: 10 };
  t.equal(await driver.read(new Uint8Array(10)), 10, 'the first 10 bytes read');
  await t.rejects(driver.read(new Uint8Array(10)), { code: 'EIO', op: 'read migration data' }, 'then reads fail');
  sim.faults = { saveTruncateAt: 20 };
  t.equal(await driver.read(new Uint8Array(100)), 10, 'the stream stops at byte 20');
  t.equal(await driver.read(new Uint8Array(100)), 0);
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  t.equal(await driver.read(new Uint8Array(100)), 0, 'even in STOP_COPY: a truncated stream');
  driver.setState(VFIO_DEVICE_STATE_STOP);
  other.faults = { resumeWriteErrno: 'ENOSPC' };
  otherDriver.setState(VFIO_DEVICE_STATE_RESUMING);
  await t.rejects(otherDriver.write(new Uint8Array(4)), { code: 'ENOSPC', op: 'write migration data' });
});
