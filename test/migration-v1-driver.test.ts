/**
 * The v1 driver behind the `MigrationDriver` interface: states in v2's
 * vocabulary mapped onto v1 bits, a migration driven only through the
 * interface (mmap and pread/pwrite paths), refusals before any system call,
 * the state after a failed change, and the estimates.
 */
import t from 'tap';
import { MigrationError, MigrationStateError, MigrationV1TransitionError, UapiFormatError, VfioArgumentError, VfioClosedError } from '../lib/errors.js';
import type { MigrationDriver } from '../lib/migration/driver.js';
import { MigrationRegionDriver } from '../lib/migration/v1-driver.js';
import { V1_PRE_COPY, V1_RESUMING, V1_STOP, V1_STOP_COPY } from '../lib/migration/v1-state.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty } from '../lib/sim/mtty.js';
import { VfioContainer } from '../lib/vfio/container.js';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_RUNNING_P2P,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
} from '../lib/vfio/uapi/constants.js';
import { dataView } from '../lib/vfio/uapi/layout.js';
import { thrown } from './helpers/expect.js';
import { MIG_BASE, SRC_BDF, guestWrites, v1Pair, type V1Pair } from './helpers/sim-v1.js';

/** Moves every chunk `src` has now to `dst`, one `write` per `read`; returns how many. */
async function pump(src: MigrationDriver, dst: MigrationDriver, buf: Uint8Array): Promise<number> {
  let n = 0;
  for (let len; (len = await src.read(buf)) > 0; n++) await dst.write(buf.slice(0, len));
  return n;
}

function drivers(p: V1Pair, dataPath: 'mmap' | 'pread'): [MigrationRegionDriver, MigrationRegionDriver] {
  return [MigrationRegionDriver.open(p.srcDev, { dataPath }), MigrationRegionDriver.open(p.dstDev, { dataPath })];
}

t.test('what the driver reports', async (t) => {
  using p = v1Pair();
  using d = MigrationRegionDriver.open(p.srcDev);
  t.equal(d.protocol, 'v1');
  t.equal(d.flags, VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY);
  t.equal(d.resumeFraming, 'record');
  t.equal(d.maxChunkSize, 4096 + 65536 - 32, 'the region past the header');
  t.equal(d.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(d.label, SRC_BDF);
  t.equal(d.sys, p.kernel);
  t.equal(d.region.dataPath, 'auto');
  const k = new SimKernel();
  const mtty = addMtty(k);
  using c = VfioContainer.open({ sys: k });
  const e = thrown(() => MigrationRegionDriver.open(c.openDevice(mtty.name)));
  t.type(e, MigrationError);
  t.match(e, { reason: 'unsupported', device: mtty.name });
});

t.test('a live migration through the driver interface, mmap and pread/pwrite', async (t) => {
  for (const dataPath of ['mmap', 'pread'] as const) {
    using p = v1Pair({ seed: 42 });
    const [src, dst] = drivers(p, dataPath);
    const buf = new Uint8Array(src.maxChunkSize);
    t.equal(src.stopCopySize(), 0, `${dataPath}: no estimate outside the saving states`);
    src.setState(VFIO_DEVICE_STATE_PRE_COPY);
    dst.setState(VFIO_DEVICE_STATE_RESUMING);
    t.equal(p.src.deviceState, V1_PRE_COPY);
    t.equal(p.dst.deviceState, V1_RESUMING);
    const initial = src.precopyInfo();
    t.same(initial, { initialBytes: 0, dirtyBytes: 64 * 1032 }, `${dataPath}: pending_bytes as dirty bytes`);
    t.equal(src.stopCopySize(), initial.dirtyBytes);
    let chunks = await pump(src, dst, buf);
    t.equal(src.precopyInfo().dirtyBytes, 0, `${dataPath}: pre-copy drained`);
    guestWrites(p.src, 5, 4);
    t.ok(src.precopyInfo().dirtyBytes > 0, `${dataPath}: guest writes show up as pending bytes`);
    chunks += await pump(src, dst, buf);
    guestWrites(p.src, 6, 4);
    src.setState(VFIO_DEVICE_STATE_STOP_COPY);
    t.equal(p.src.deviceState, V1_STOP_COPY);
    chunks += await pump(src, dst, buf);
    t.equal(src.stopCopySize(), 0, `${dataPath}: stop-and-copy drained`);
    src.setState(VFIO_DEVICE_STATE_STOP);
    t.equal(p.src.deviceState, V1_STOP);
    // QEMU's destination cleanup closes the session before RESUMING -> STOP: not an abort.
    dst.closeSession();
    dst.setState(VFIO_DEVICE_STATE_STOP);
    dst.setState(VFIO_DEVICE_STATE_RUNNING);
    t.equal(p.dst.checksum(), p.src.checksum(), `${dataPath}: checksums equal`);
    t.equal(chunks, p.src.savedTransactions.length, `${dataPath}: one read per transaction`);
    t.same(
      p.dst.loadedTransactions.map((x) => x.dataSize),
      p.src.savedTransactions.map((x) => x.dataSize),
      `${dataPath}: one write per transaction, of the same size`,
    );
    t.equal(p.src.dataMappings, dataPath === 'mmap' ? 1 : 0);
    src.close();
    dst.close();
    src.close();
    t.equal(p.src.dataMappings, 0, `${dataPath}: close releases the mapping`);
    t.throws(() => src.queryState(), VfioClosedError);
  }
});

t.test('refusals before any system call, and sessions that are not open', async (t) => {
  using p = v1Pair();
  using d = MigrationRegionDriver.open(p.srcDev);
  const trace = p.kernel.startTrace();
  for (const [target, reason] of [
    [VFIO_DEVICE_STATE_RUNNING_P2P, 'target-unsupported'],
    [VFIO_DEVICE_STATE_PRE_COPY_P2P, 'target-unsupported'],
    [VFIO_DEVICE_STATE_ERROR, 'target-is-error'],
  ] as const) {
    const e = thrown(() => d.setState(target));
    t.type(e, MigrationStateError);
    t.match(e, { reason, from: VFIO_DEVICE_STATE_RUNNING, to: target, flags: d.flags });
  }
  d.setState(VFIO_DEVICE_STATE_RUNNING);
  t.same(trace, [], 'no system call, and none for a no-op');
  p.kernel.stopTrace();
  const buf = new Uint8Array(d.maxChunkSize);
  await t.rejects(d.read(buf), { code: 'ERR_VFIO_MIGRATION', reason: 'no-session' });
  await t.rejects(d.write(new Uint8Array(4)), { code: 'ERR_VFIO_MIGRATION', reason: 'no-session' });
  t.throws(() => d.precopyInfo(), { code: 'ERR_VFIO_MIGRATION', reason: 'no-session' });
  d.setState(VFIO_DEVICE_STATE_STOP_COPY);
  t.throws(() => d.precopyInfo(), { reason: 'no-session', message: /no pre-copy session/ });
  await t.rejects(d.read(new Uint8Array(100)), VfioArgumentError, 'a buffer that cannot hold a transaction');
  t.ok((await d.read(buf)) > 0, 'the chunk was not consumed by the refused read');
  t.equal(p.src.savedTransactions.length, 1);
});

t.test('the state after a failed change', async (t) => {
  using p = v1Pair();
  using d = MigrationRegionDriver.open(p.srcDev);
  d.setState(VFIO_DEVICE_STATE_PRE_COPY);
  p.src.faults = { stateWrite: { errno: 'EBUSY' } };
  t.type(thrown(() => d.setState(VFIO_DEVICE_STATE_STOP_COPY)), MigrationV1TransitionError);
  t.equal(d.state, VFIO_DEVICE_STATE_PRE_COPY, 'still pre-copy');
  p.src.faults = { stateWrite: { errno: 'EIO', enterError: true } };
  t.match(thrown(() => d.setState(VFIO_DEVICE_STATE_STOP_COPY)), { recovery: 'reset' });
  t.equal(d.state, VFIO_DEVICE_STATE_RUNNING, 'reset out of the error state');
  p.src.faults = {};
  // Nothing can be read back: the driver takes the device for ERROR, which only a reset leaves.
  p.kernel.faults.inject({ syscall: 'pwrite', label: SRC_BDF, nth: 1, errno: 'EIO' });
  p.kernel.faults.inject({ syscall: 'pread', label: SRC_BDF, nth: 2, errno: 'EIO', times: 2 });
  t.match(thrown(() => d.setState(VFIO_DEVICE_STATE_PRE_COPY)), { recovery: 'unreadable' });
  t.equal(d.state, VFIO_DEVICE_STATE_ERROR);
  t.match(thrown(() => d.setState(VFIO_DEVICE_STATE_RUNNING)), { code: 'ERR_VFIO_MIGRATION_STATE', reason: 'current-is-error' });
  d.reset();
  t.equal(d.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(d.queryState(), VFIO_DEVICE_STATE_RUNNING);
});

t.test('nonsense from the vendor', async (t) => {
  using p = v1Pair();
  using d = MigrationRegionDriver.open(p.srcDev);
  const pread = p.kernel.pread.bind(p.kernel);
  let word = 5;
  let pending: bigint | undefined;
  p.kernel.pread = (fd, buf, offset) => {
    const n = pread(fd, buf, offset);
    if (BigInt(offset) === MIG_BASE) dataView(buf).setUint32(0, word, true);
    if (BigInt(offset) === MIG_BASE + 8n && pending !== undefined) dataView(buf).setBigUint64(0, pending, true);
    return n;
  };
  t.throws(() => d.queryState(), UapiFormatError, 'RUNNING|RESUMING is no state');
  word = 3;
  t.equal(d.queryState(), VFIO_DEVICE_STATE_PRE_COPY);
  pending = 1n << 60n;
  t.throws(() => d.precopyInfo(), { code: 'ERR_VFIO_UAPI_FORMAT', message: /pending_bytes 1152921504606846976/ });
});
