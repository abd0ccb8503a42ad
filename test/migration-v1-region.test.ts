/**
 * `MigrationRegion` against the simulated v1 device: discovery, a full
 * save and resume through the mmap path and through the pread/pwrite path
 * with equal checksums, the "same transaction size" rule, the error state
 * and failed `device_state` writes by fault injection, the read-modify-write
 * of `device_state` against golden bytes, and untrusted vendor values.
 */
import t from 'tap';
import {
  MigrationV1StateError,
  MigrationV1TransitionError,
  UapiFormatError,
  VfioClosedError,
  VfioSystemError,
} from '../lib/errors.js';
import { MigrationRegion, type MigrationRegionOptions } from '../lib/migration/v1-region.js';
import { V1_ERROR, V1_PRE_COPY, V1_RESUMING, V1_RUNNING, V1_STOP, V1_STOP_COPY } from '../lib/migration/v1-state.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty } from '../lib/sim/mtty.js';
import type { SyscallRecord } from '../lib/sim/syscalls.js';
import { V1_MIGRATION_REGION_INDEX } from '../lib/sim/v1-device.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET } from '../lib/vfio/uapi/ioctls.js';
import { dataView } from '../lib/vfio/uapi/layout.js';
import { thrown } from './helpers/expect.js';
import { MIG_BASE, SRC_BDF, guestWrites, v1Pair, type V1Pair } from './helpers/sim-v1.js';

const hex = (s: string): Uint8Array => Uint8Array.from(s.trim().split(/\s+/), (b) => Number.parseInt(b, 16));

/** Pre-copy rounds with guest writes (the first round stopped early), then stop-and-copy; returns the chunks moved. */
async function migrate(p: V1Pair, src: MigrationRegion, dst: MigrationRegion): Promise<number> {
  let chunks = 0;
  src.setState(V1_PRE_COPY);
  dst.setState(V1_RESUMING);
  let n = 0;
  for await (const chunk of src.saveChunks()) {
    dst.writeChunk(chunk);
    chunks++;
    guestWrites(p.src, 100 + n, 2);
    if (++n === 3) break;
  }
  for (let round = 0; round < 3; round++) {
    for await (const chunk of src.saveChunks()) {
      dst.writeChunk(chunk);
      chunks++;
    }
    guestWrites(p.src, round, 5);
  }
  src.setState(V1_STOP_COPY);
  for await (const chunk of src.saveChunks()) {
    dst.writeChunk(chunk);
    chunks++;
  }
  if (src.pendingBytes() !== 0n) throw new Error('stop-and-copy did not drain');
  src.setState(V1_STOP);
  dst.setState(V1_RUNNING);
  return chunks;
}

/** The pread/pwrite calls on `fd` into the data section (past the header). */
function dataRw(trace: readonly SyscallRecord[], fd: number): SyscallRecord[] {
  return trace.filter((r) => (r.syscall === 'pread' || r.syscall === 'pwrite') && r.fd === fd && (r.offset ?? 0n) >= MIG_BASE + 32n);
}

/** The header accesses on `fd` as `offset:length`. */
function headerRw(trace: readonly SyscallRecord[], fd: number): Set<string> {
  const inHeader = (r: SyscallRecord): boolean => r.offset !== undefined && r.offset >= MIG_BASE && r.offset < MIG_BASE + 32n;
  return new Set(trace.filter((r) => r.fd === fd && inHeader(r)).map((r) => `${r.syscall}:${(r.offset ?? 0n) - MIG_BASE}:${r.length}`));
}

function regions(p: V1Pair, options: MigrationRegionOptions): [MigrationRegion, MigrationRegion] {
  const src = MigrationRegion.find(p.srcDev, options);
  const dst = MigrationRegion.find(p.dstDev, options);
  if (src === undefined || dst === undefined) throw new Error('no migration region');
  return [src, dst];
}

t.test('discovery: the type 3 / subtype 1 region among the device-specific ones', async (t) => {
  using p = v1Pair();
  const r = MigrationRegion.find(p.srcDev);
  t.equal(r?.region.index, V1_MIGRATION_REGION_INDEX);
  t.equal(r?.dataPath, 'auto');
  const k = new SimKernel();
  const mtty = addMtty(k);
  using c = VfioContainer.open({ sys: k });
  t.equal(MigrationRegion.find(c.openDevice(mtty.name)), undefined, 'mtty has no v1 region');
  // A vendor that reports a region too small for the header (no sparse area, which the decoder would refuse first).
  using q = v1Pair({ src: { mmap: false } });
  const ioctl = q.kernel.ioctl.bind(q.kernel);
  q.kernel.ioctl = (fd, request, arg) => {
    const r = ioctl(fd, request, arg);
    if (request === VFIO_DEVICE_GET_REGION_INFO && arg instanceof Uint8Array && dataView(arg).getUint32(8, true) === V1_MIGRATION_REGION_INDEX) {
      dataView(arg).setBigUint64(16, 16n, true);
    }
    return r;
  };
  t.throws(() => MigrationRegion.find(q.srcDev), { code: 'ERR_VFIO_UAPI_FORMAT', message: /cannot hold the 32-byte header/ });
});

t.test('save and resume through the mmap path: checksums equal, no data through pread/pwrite', async (t) => {
  using p = v1Pair();
  const [src, dst] = regions(p, { dataPath: 'mmap' });
  const trace = p.kernel.startTrace();
  const before = p.src.checksum();
  const chunks = await migrate(p, src, dst);
  p.kernel.stopTrace();
  t.not(p.src.checksum(), before, 'the guest changed the state during pre-copy');
  t.equal(p.dst.checksum(), p.src.checksum(), 'the destination has the source state');
  t.equal(chunks, p.src.savedTransactions.length, 'one chunk per source transaction');
  t.same(
    p.dst.loadedTransactions.map((x) => x.dataSize),
    p.src.savedTransactions.map((x) => x.dataSize),
    'the destination got the source transaction sizes',
  );
  t.same(dataRw(trace, p.srcDev.fd), [], 'no data pread on the source');
  t.same(dataRw(trace, p.dstDev.fd), [], 'no data pwrite on the destination');
  t.equal(trace.filter((r) => r.syscall === 'mmap').length, 2, 'one data section mapping per device');
  t.same(
    [...headerRw(trace, p.srcDev.fd)].sort(),
    ['pread:0:4', 'pread:16:8', 'pread:24:8', 'pread:8:8', 'pwrite:0:4'],
    'source header accesses at native width only',
  );
  t.same([...headerRw(trace, p.dstDev.fd)].sort(), ['pread:0:4', 'pread:16:8', 'pwrite:0:4', 'pwrite:24:8'], 'destination header accesses');
  t.equal(p.src.dataMappings, 1);
  src.close();
  dst.close();
  t.equal(p.src.dataMappings + p.dst.dataMappings, 0, 'close unmapped the data sections');
  t.doesNotThrow(() => src.close(), 'close is idempotent');
  t.throws(() => src.readChunk(), VfioClosedError);
  t.throws(() => dst.writeChunk(new Uint8Array(1)), VfioClosedError);
});

t.test('save and resume through pread/pwrite: forced, and on a device without sparse mmap', async (t) => {
  for (const [what, mmap, dataPath] of [
    ['forced pread on an mmappable device', true, 'pread'],
    ['auto on a trapped device', false, 'auto'],
  ] as const) {
    using p = v1Pair({ src: { mmap } });
    const [src, dst] = regions(p, { dataPath });
    const trace = p.kernel.startTrace();
    await migrate(p, src, dst);
    p.kernel.stopTrace();
    t.equal(p.dst.checksum(), p.src.checksum(), `${what}: checksums equal`);
    t.equal(trace.filter((r) => r.syscall === 'mmap').length, 0, `${what}: nothing mapped`);
    const reads = dataRw(trace, p.srcDev.fd);
    t.equal(reads.length, p.src.savedTransactions.length, `${what}: one pread per transaction`);
    t.same(
      reads.map((r) => [Number((r.offset ?? 0n) - MIG_BASE), r.length]),
      p.src.savedTransactions.map((x) => [x.dataOffset, x.dataSize]),
      `${what}: at the vendor's data_offset, data_size bytes`,
    );
    t.equal(dataRw(trace, p.dstDev.fd).length, p.dst.loadedTransactions.length, `${what}: one pwrite per transaction`);
  }
});

t.test('auto maps where it can; forced mmap refuses a trapped section; a failed mmap falls back', async (t) => {
  {
    using p = v1Pair();
    const [src, dst] = regions(p, {});
    await migrate(p, src, dst);
    t.equal(p.dst.checksum(), p.src.checksum());
    t.equal(p.src.dataMappings, 1, 'auto mapped the sparse area');
  }
  {
    using p = v1Pair({ src: { mmap: false } });
    const [src] = regions(p, { dataPath: 'mmap' });
    src.setState(V1_STOP_COPY);
    t.throws(() => src.readChunk(), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /no sparse mmap areas/ });
  }
  {
    using p = v1Pair();
    p.kernel.faults.inject({ syscall: 'mmap', nth: 1, errno: 'ENOMEM', times: 2 });
    const [src, dst] = regions(p, { dataPath: 'auto' });
    await migrate(p, src, dst);
    t.equal(p.dst.checksum(), p.src.checksum(), 'fell back to pread/pwrite');
    t.equal(p.src.dataMappings + p.dst.dataMappings, 0);
  }
  {
    using p = v1Pair();
    p.kernel.faults.inject({ syscall: 'mmap', nth: 1, errno: 'ENOMEM' });
    const [src] = regions(p, { dataPath: 'mmap' });
    src.setState(V1_STOP_COPY);
    t.throws(() => src.readChunk(), { code: 'ENOMEM', syscall: 'mmap' });
  }
  {
    // Forced pread drops a mapping someone else left on the migration region.
    using p = v1Pair();
    p.srcDev.region(V1_MIGRATION_REGION_INDEX).mmap();
    const [src] = regions(p, { dataPath: 'pread' });
    src.setState(V1_STOP_COPY);
    t.ok(src.readChunk());
    t.equal(p.src.dataMappings, 0);
    t.same(src.region.areas, []);
  }
});

t.test('the same transaction size: a split chunk is refused, a partial resume ends in the error state and a reset', async (t) => {
  using p = v1Pair();
  const [src, dst] = regions(p, { dataPath: 'mmap' });
  src.setState(V1_STOP_COPY);
  dst.setState(V1_RESUMING);
  const first = src.readChunk();
  const second = src.readChunk();
  if (first === null || second === null) throw new Error('no data');
  dst.writeChunk(first);
  t.equal(p.dst.resumeFailure, undefined, 'a whole chunk is accepted');
  // What QEMU's v1 loader could do: cut a DATA record at the data section's end.
  const e = thrown(() => dst.writeChunk(second.subarray(0, 600)));
  t.type(e, VfioSystemError);
  t.match(e, { code: 'EINVAL', syscall: 'pwrite', op: `write region ${V1_MIGRATION_REGION_INDEX}` });
  t.match(p.dst.resumeFailure, /bytes on the source, 600 here/);
  const leave = thrown(() => dst.setState(V1_RUNNING));
  t.type(leave, MigrationV1TransitionError);
  t.match(leave, { recovery: 'reset', from: V1_RESUMING, to: V1_RUNNING, state: V1_RUNNING, cause: { code: 'EINVAL' } });
  t.equal(p.dst.deviceState, V1_RUNNING, 'the device was reset out of the error state');
});

t.test('a chunk larger than the destination data section is refused before anything is written', async (t) => {
  using p = v1Pair({ dst: { dataSectionSize: 8192, transactionSizes: [4096] } });
  const [src, dst] = regions(p, { dataPath: 'pread' });
  src.setState(V1_STOP_COPY);
  dst.setState(V1_RESUMING);
  src.readChunk();
  const big = src.readChunk();
  if (big === null) throw new Error('no data');
  t.equal(big.byteLength, 12288);
  const trace = p.kernel.startTrace();
  t.throws(() => dst.writeChunk(big), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /forbids splitting a source transaction/ });
  t.same(
    trace.filter((r) => r.syscall === 'pwrite'),
    [],
    'no pwrite',
  );
  p.kernel.stopTrace();
  t.doesNotThrow(() => dst.writeChunk(new Uint8Array(0)), 'an empty chunk transfers nothing');
});

t.test('device_state read-modify-write keeps the reserved bits (golden bytes)', async (t) => {
  using p = v1Pair({ src: { reservedBits: 0x5a5a5a58 } });
  const [src] = regions(p, {});
  const writes: string[] = [];
  const pwrite = p.kernel.pwrite.bind(p.kernel);
  p.kernel.pwrite = (fd, buf, offset) => {
    writes.push(`${BigInt(offset) - MIG_BASE}: ${Buffer.from(buf).toString('hex')}`);
    return pwrite(fd, buf, offset);
  };
  src.setState(V1_PRE_COPY);
  src.setState(V1_STOP_COPY);
  src.setState(V1_STOP);
  src.setState(V1_RESUMING);
  src.setState(V1_RUNNING);
  t.same(writes, ['0: 5b5a5a5a', '0: 5a5a5a5a', '0: 585a5a5a', '0: 5c5a5a5a', '0: 595a5a5a']);
  src.setState(V1_PRE_COPY);
  // The header as native-width reads see it: device_state, reserved, pending_bytes, data_offset, data_size.
  const r = src.region;
  const header = new Uint8Array(32);
  const dv = dataView(header);
  dv.setUint32(0, r.read32(0), true);
  dv.setUint32(4, r.read32(4), true);
  dv.setBigUint64(8, r.read64(8), true);
  dv.setBigUint64(16, r.read64(16), true);
  dv.setBigUint64(24, r.read64(24), true);
  t.same(
    header,
    hex(`5b 5a 5a 5a 00 00 00 00  00 02 01 00 00 00 00 00  00 10 00 00 00 00 00 00  88 13 00 00 00 00 00 00`),
    'RUNNING|SAVING, 64 pending pages of 1032 bytes, the first transaction at 4096, 5000 bytes',
  );
});

t.test('refused targets: nothing is written', async (t) => {
  using p = v1Pair();
  const [src] = regions(p, {});
  const trace = p.kernel.startTrace();
  for (const [target, reason] of [
    [5, 'target-invalid'],
    [7, 'target-invalid'],
    [V1_ERROR, 'target-is-error'],
  ] as const) {
    const e = thrown(() => src.setState(target));
    t.type(e, MigrationV1StateError);
    t.match(e, { code: 'ERR_VFIO_MIGRATION_V1_STATE', reason, from: V1_RUNNING, to: target });
  }
  t.same(
    trace.filter((r) => r.syscall === 'pwrite'),
    [],
  );
  p.kernel.stopTrace();
});

t.test('fault injection: failed device_state writes, the error state, a failed reset, an unreadable state', async (t) => {
  using p = v1Pair();
  const [src] = regions(p, {});
  src.setState(V1_PRE_COPY);

  // The system call fails before the device sees it: the device stays in pre-copy.
  p.kernel.faults.inject({ syscall: 'pwrite', label: SRC_BDF, nth: 1, errno: 'EIO' });
  let e = thrown(() => src.setState(V1_STOP_COPY));
  t.type(e, MigrationV1TransitionError);
  t.match(e, { recovery: 'none', from: V1_PRE_COPY, to: V1_STOP_COPY, state: V1_PRE_COPY, cause: { code: 'EIO' } });
  t.match((e as Error).message, /the device is in RUNNING\|SAVING/);

  // The vendor fails the write without leaving its state.
  p.src.faults = { stateWrite: { to: V1_STOP_COPY, errno: 'EBUSY' } };
  t.match(thrown(() => src.setState(V1_STOP_COPY)), { recovery: 'none', state: V1_PRE_COPY, cause: { code: 'EBUSY' } });

  // The vendor fails it into the error state: the library resets the device.
  p.src.faults = { stateWrite: { to: V1_STOP_COPY, errno: 'EIO', enterError: true } };
  e = thrown(() => src.setState(V1_STOP_COPY));
  t.match(e, { recovery: 'reset', state: V1_RUNNING, cause: { code: 'EIO' } });
  t.match((e as Error).message, /was in SAVING\|RESUMING and was reset, now RUNNING/);
  t.equal(p.src.deviceState, V1_RUNNING);
  t.same(p.src.readMemory(0, 8), new Uint8Array(8), 'the reset device lost its state');

  // The reset fails too: the device stays in the error state, and the library refuses to write over it.
  p.src.faults = { stateWrite: { errno: 'EIO', enterError: true } };
  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_RESET, nth: 1, errno: 'ENOTTY' });
  e = thrown(() => src.setState(V1_PRE_COPY));
  t.match(e, { recovery: 'reset-failed', state: V1_ERROR, recoveryError: { code: 'ENOTTY' } });
  p.src.faults = {};
  const trace = p.kernel.startTrace();
  t.match(thrown(() => src.setState(V1_RUNNING)), { code: 'ERR_VFIO_MIGRATION_V1_STATE', reason: 'current-is-error', from: V1_ERROR });
  t.same(
    trace.filter((r) => r.syscall === 'pwrite'),
    [],
    'nothing written over the error state',
  );
  p.kernel.stopTrace();
  src.reset();
  t.equal(src.state(), V1_RUNNING, 'an explicit reset gets it out');

  // The write fails and so does the re-read.
  p.kernel.faults.inject({ syscall: 'pwrite', label: SRC_BDF, nth: 1, errno: 'EIO' });
  p.kernel.faults.inject({ syscall: 'pread', label: SRC_BDF, nth: 2, errno: 'EFAULT' });
  t.match(thrown(() => src.setState(V1_PRE_COPY)), { recovery: 'unreadable', state: undefined, recoveryError: { code: 'EFAULT' } });

  // The reset works but the state cannot be read afterwards.
  p.src.faults = { stateWrite: { errno: 'EIO', enterError: true } };
  p.kernel.faults.inject({ syscall: 'pread', label: SRC_BDF, nth: 3, errno: 'EFAULT' });
  t.match(thrown(() => src.setState(V1_PRE_COPY)), { recovery: 'unreadable', state: undefined, message: /was reset, and device_state cannot be re-read/ });
  p.src.faults = {};
  t.equal(src.state(), V1_RUNNING);
});

t.test('untrusted vendor values: data_offset and data_size outside the region', async (t) => {
  /** Makes header reads at `field` on `p`'s devices return `value`. */
  const lie = (p: V1Pair, field: number, value: bigint): void => {
    const pread = p.kernel.pread.bind(p.kernel);
    p.kernel.pread = (fd, buf, offset) => {
      const n = pread(fd, buf, offset);
      if (BigInt(offset) === MIG_BASE + BigInt(field)) dataView(buf).setBigUint64(0, value, true);
      return n;
    };
  };
  for (const [what, field, value, message] of [
    ['a data_offset past the region', 16, 1n << 40n, /data_offset 1099511627776 lies outside/],
    ['a data_offset inside the header', 16, 8n, /data_offset 8 lies outside/],
    ['a data_size past the region', 24, 65537n, /data_size 65537 at data_offset 4096 runs past/],
    ['a data_size of 2^64-1', 24, (1n << 64n) - 1n, /runs past/],
  ] as const) {
    using p = v1Pair();
    const [src, dst] = regions(p, { dataPath: 'pread' });
    src.setState(V1_STOP_COPY);
    dst.setState(V1_RESUMING);
    lie(p, field, value);
    const trace = p.kernel.startTrace();
    const e = thrown(() => src.readChunk());
    t.type(e, UapiFormatError, what);
    t.match(e, { code: 'ERR_VFIO_UAPI_FORMAT', struct: 'vfio_device_migration_info', offset: field, message }, what);
    t.same(dataRw(trace, p.srcDev.fd), [], `${what}: no data access`);
    if (field === 16) t.type(thrown(() => dst.writeChunk(new Uint8Array(10))), UapiFormatError, `${what}: refused when resuming too`);
    p.kernel.stopTrace();
  }
  {
    // Inside the region but outside the sparse area: forced mmap refuses to trap it.
    using p = v1Pair();
    const [src] = regions(p, { dataPath: 'mmap' });
    src.setState(V1_STOP_COPY);
    lie(p, 16, 64n);
    t.throws(() => src.readChunk(), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /\[64, \+5000\) is not inside a mapped sparse area/ });
  }
  {
    using p = v1Pair();
    const [src] = regions(p, {});
    src.setState(V1_STOP_COPY);
    lie(p, 24, 0n);
    const chunk = src.readChunk();
    t.equal(chunk?.byteLength, 0, 'an empty chunk while data is pending');
    const got: Uint8Array[] = [];
    for await (const c of src.saveChunks()) got.push(c);
    t.same(got, [], 'the chunk producer stops on it instead of spinning');
    t.ok(src.pendingBytes() > 0n, 'and the caller sees data is still pending');
  }
});

t.test('dispose', async (t) => {
  using p = v1Pair();
  {
    using src = MigrationRegion.find(p.srcDev, { dataPath: 'mmap' });
    src?.setState(V1_STOP_COPY);
    t.ok(src?.readChunk());
    t.equal(p.src.dataMappings, 1);
  }
  t.equal(p.src.dataMappings, 0, 'disposed');
});
