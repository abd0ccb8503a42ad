/**
 * The simulated v1 device on its own, driven with raw system calls: region
 * info and capabilities, the header's native-width rule and side effects,
 * the vendor's transitions, pre-copy pending bytes that move with guest
 * writes, varying data offsets and transaction sizes, the resume checks of
 * the "same transaction size" rule, the error state and its reset, mmap of
 * the data section, and BAR0.
 */
import t from 'tap';
import { SimKernel } from '../lib/sim/kernel.js';
import { V1_MIGRATION_REGION_INDEX, addV1Device } from '../lib/sim/v1-device.js';
import { PROT_READ } from '../lib/sys/sys.js';
import { V1_ERROR, V1_PRE_COPY, V1_RESUMING, V1_RUNNING, V1_STOP, V1_STOP_COPY, type V1StateBits } from '../lib/migration/v1-state.js';
import { VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP } from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_RESET, VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { decode, encode } from '../lib/vfio/uapi/layout.js';
import { vfio_region_info } from '../lib/vfio/uapi/structs.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { errnoOf } from './helpers/sim-mtty.js';
import { DST_BDF, MIG_BASE, SRC_BDF, fillMemory, guestWrites, rawV1, v1Pair, type RawV1, type V1Pair } from './helpers/sim-v1.js';

const PAGES = 64;
/** A page record: 8-byte header and a 1 KiB page. */
const RECORD = 8 + 1024;

/** Drains the current saving round with raw accesses; returns the transactions read. */
function drain(raw: RawV1): Uint8Array[] {
  const out: Uint8Array[] = [];
  while (raw.pending() > 0n) {
    const off = raw.dataOffset();
    const size = raw.dataSize();
    if (size === 0) break;
    out.push(raw.read(off, size));
  }
  return out;
}

/** Writes one transaction to a resuming device as §3.5 says. */
function load(raw: RawV1, txn: Uint8Array, size = txn.byteLength): void {
  const off = raw.dataOffset();
  raw.write(off, txn);
  raw.setDataSize(size);
}

/** Saves the source's whole state in stop-and-copy and puts the destination in RESUMING. */
function saveAll(p: V1Pair): { txns: Uint8Array[]; dst: RawV1 } {
  const src = rawV1(p.kernel, p.srcDev.fd);
  const dst = rawV1(p.kernel, p.dstDev.fd);
  src.setState(V1_STOP_COPY);
  const txns = drain(src);
  dst.setState(V1_RESUMING);
  return { txns, dst };
}

t.test('region info: TYPE 3/1 and SPARSE_MMAP over the data section, the argsz dance, absent regions', async (t) => {
  using p = v1Pair({ dst: { mmap: false } });
  const r = p.srcDev.region(V1_MIGRATION_REGION_INDEX);
  t.same(r.info.type, { type: 3, subtype: 1 });
  t.same(r.info.sparse, [{ offset: 4096, size: 65536 }]);
  t.equal(r.size, 4096 + 65536);
  t.ok(r.readable && r.writable && r.mmappable);
  t.equal(r.info.offset, MIG_BASE);
  const trapped = p.dstDev.region(V1_MIGRATION_REGION_INDEX);
  t.same(trapped.info.type, { type: 3, subtype: 1 });
  t.equal(trapped.info.sparse, undefined, 'no sparse capability without mmap');
  t.notOk(trapped.mmappable);
  t.equal(trapped.size, 32 + 65536, 'the trapped data section starts right after the header');
  // A first call with the bare struct: the kernel asks for more and reports no chain yet.
  const buf = encode(vfio_region_info, { argsz: 32, index: V1_MIGRATION_REGION_INDEX });
  p.kernel.ioctl(p.srcDev.fd, VFIO_DEVICE_GET_REGION_INFO, buf);
  const info = decode(vfio_region_info, buf);
  t.equal(info.argsz, 32 + 16 + 32, 'type cap (16) and a one-area sparse cap (32)');
  t.equal(info.cap_offset, 0);
  t.equal(info.flags & (VFIO_REGION_INFO_FLAG_CAPS | VFIO_REGION_INFO_FLAG_MMAP), VFIO_REGION_INFO_FLAG_CAPS | VFIO_REGION_INFO_FLAG_MMAP);
  t.equal(errnoOf(() => p.kernel.ioctl(p.srcDev.fd, VFIO_DEVICE_GET_REGION_INFO, encode(vfio_region_info, { argsz: 32, index: 8 }))), 'EINVAL', 'no VGA');
  t.equal(errnoOf(() => p.kernel.ioctl(p.srcDev.fd, VFIO_DEVICE_GET_REGION_INFO, encode(vfio_region_info, { argsz: 32, index: 10 }))), 'EINVAL');
  t.equal(errnoOf(() => p.kernel.ioctl(p.srcDev.fd, VFIO_DEVICE_GET_REGION_INFO, encode(vfio_region_info, { argsz: 16, index: 0 }))), 'EINVAL');
  t.equal(p.srcDev.region(1).size, 0, 'BAR1 is absent');
  t.same(
    p.srcDev.regions().map((x) => x.index),
    [0, 1, 2, 3, 4, 5, 6, 7, 9],
  );
  t.equal(p.srcDev.region(7).read16(0), 0x1b36, 'config space: vendor id');
  p.srcDev.region(7).write8(0, 0xff);
  t.equal(p.srcDev.region(7).read8(0), 0x36, 'the ids are read-only');
  p.srcDev.region(7).write8(0x3c, 9);
  t.equal(p.srcDev.region(7).read8(0x3c), 9, 'the interrupt line is writable');
  t.equal(errnoOf(() => p.kernel.ioctl(p.srcDev.fd, VFIO_DEVICE_SET_IRQS, new Uint8Array(20))), 'EINVAL', 'no interrupts are wired');
  t.equal(p.srcDev.irqInfo(0).count, 0);
  t.ok(p.srcDev.resetAdvertised && p.srcDev.isPci);
});

t.test('the header answers only at native width and offset', async (t) => {
  using p = v1Pair({ src: { reservedBits: 0x5a5a5a58 } });
  const k = p.kernel;
  const raw = rawV1(k, p.srcDev.fd);
  t.equal(raw.state(), 0x5a5a5a59, 'RUNNING with the vendor reserved bits');
  for (const [off, len] of [
    [0, 32],
    [0, 8],
    [0, 2],
    [2, 2],
    [8, 4],
    [12, 4],
    [16, 4],
    [24, 4],
    [28, 4],
    [4, 8],
  ] as const) {
    t.equal(errnoOf(() => raw.read(off, len)), 'EINVAL', `read of ${len} at ${off}`);
  }
  t.same(raw.read(4, 4), new Uint8Array(4), 'reserved reads 0');
  raw.write(4, new Uint8Array([1, 2, 3, 4]));
  t.same(raw.read(4, 4), new Uint8Array(4), 'reserved writes are ignored');
  t.equal(errnoOf(() => raw.write(8, new Uint8Array(8))), 'EINVAL', 'pending_bytes is read-only');
  t.equal(errnoOf(() => raw.write(16, new Uint8Array(8))), 'EINVAL', 'data_offset is read-only');
  t.equal(errnoOf(() => raw.read(32, 8)), 'EINVAL', 'the gap between header and data section');
  t.equal(errnoOf(() => raw.read(4096 + 65536 - 4, 8)), 'EINVAL', 'past the region');
  t.equal(errnoOf(() => raw.setState(V1_PRE_COPY)), 'EINVAL', 'a write that clears the reserved bits');
  t.equal(raw.state(), 0x5a5a5a59);
  raw.setState(0x5a5a5a5b);
  t.equal(raw.state(), 0x5a5a5a5b, 'a write that keeps them');
  t.equal(errnoOf(() => raw.setState(0x5a5a5a5e)), 'EINVAL', 'the user cannot enter the error state');
  t.equal(errnoOf(() => raw.setState(0x5a5a5a5d)), 'EINVAL', 'RESUMING|RUNNING');
  t.equal(errnoOf(() => raw.setState(0x5a5a5a5f)), 'EINVAL', 'all three bits');
});

t.test('vendor transitions between the five valid states', async (t) => {
  // How to reach each state from RUNNING.
  const paths: Record<number, V1StateBits[]> = {
    [V1_RUNNING]: [],
    [V1_STOP]: [V1_STOP],
    [V1_PRE_COPY]: [V1_PRE_COPY],
    [V1_STOP_COPY]: [V1_STOP_COPY],
    [V1_RESUMING]: [V1_RESUMING],
  };
  const refused = new Set(['2>3', '4>2', '4>3', '2>4', '3>4']);
  const states = [V1_STOP, V1_RUNNING, V1_STOP_COPY, V1_PRE_COPY, V1_RESUMING];
  for (const from of states) {
    for (const to of states) {
      const k = new SimKernel();
      const dev = addV1Device(k, { bdf: SRC_BDF });
      using c = VfioContainer.open({ sys: k });
      const raw = rawV1(k, c.openDevice(SRC_BDF).fd);
      for (const s of paths[from] ?? []) raw.setState(s);
      const expect = refused.has(`${from}>${to}`) ? 'EINVAL' : 'ok';
      t.equal(errnoOf(() => raw.setState(to)), expect, `${from} -> ${to}`);
      t.equal(raw.state(), expect === 'ok' ? to : from, 'the state after');
      t.equal(dev.deviceState, raw.state());
    }
  }
});

t.test('pre-copy: pending bytes move with guest writes, stop-and-copy drains to 0 with the end marker', async (t) => {
  using p = v1Pair();
  const raw = rawV1(p.kernel, p.srcDev.fd);
  t.equal(raw.pending(), 0n, 'nothing pending while only RUNNING');
  t.equal(errnoOf(() => raw.dataOffset()), 'EINVAL', 'no data_offset outside a session');
  raw.setState(V1_PRE_COPY);
  t.equal(raw.pending(), BigInt(PAGES * RECORD), 'every page is pending at first');
  const first = raw.dataOffset();
  const size = raw.dataSize();
  t.equal(raw.dataOffset(), first, 'a repeated data_offset read gives the same transaction');
  t.equal(raw.dataSize(), size);
  t.equal(p.src.savedTransactions.length, 1, 'and cuts no new one');
  t.equal(raw.pending(), BigInt(PAGES * RECORD - (size - 16)), 'the pending read consumed it');
  drain(raw);
  t.equal(raw.pending(), 0n, 'pre-copy drained: no end marker yet');
  guestWrites(p.src, 7, 3);
  const dirty = p.src.dirtyPages;
  t.ok(dirty >= 3 && dirty <= 6, `guest writes dirtied ${dirty} pages`);
  t.equal(raw.pending(), BigInt(dirty * RECORD), 'pending rose while RUNNING|SAVING');
  raw.setState(V1_STOP_COPY);
  t.equal(raw.pending(), BigInt(dirty * RECORD + 8), 'stop-and-copy adds the end marker');
  drain(raw);
  t.equal(raw.pending(), 0n, 'drained');
  const saved = p.src.savedTransactions;
  t.ok(new Set(saved.map((s) => s.dataOffset)).size >= 3, 'data offsets vary');
  t.ok(new Set(saved.map((s) => s.dataSize)).size >= 3, 'transaction sizes vary');
  t.ok(saved.every((s) => s.dataOffset % 4096 === 0), 'mmappable offsets are page-aligned');
  raw.setState(V1_STOP);
  t.equal(raw.pending(), 0n, 'the session ended');
});

t.test('resume: the transactions of the source, and nothing else', async (t) => {
  const run = (edit: (txns: Uint8Array[], raw: RawV1) => void): { checksumOk: boolean; failure: string | undefined; errno: string } => {
    using p = v1Pair();
    const { txns, dst } = saveAll(p);
    const errno = errnoOf(() => edit(txns, dst));
    return { checksumOk: p.src.checksum() === p.dst.checksum(), failure: p.dst.resumeFailure, errno };
  };
  const whole = run((txns, dst) => {
    for (const x of txns) load(dst, x);
    dst.setState(V1_RUNNING);
  });
  t.same(whole, { checksumOk: true, failure: undefined, errno: 'ok' }, 'as the source cut them');
  const split = run((txns, dst) => {
    const [a] = txns;
    if (a === undefined) throw new Error('no data');
    load(dst, a.subarray(0, 1000));
  });
  t.equal(split.errno, 'EINVAL', 'a split transaction');
  t.match(split.failure, /is \d+ bytes on the source, 1000 here/);
  const merged = run((txns, dst) => {
    const [a, b] = txns;
    if (a === undefined || b === undefined) throw new Error('no data');
    const both = new Uint8Array(a.byteLength + b.byteLength);
    both.set(a);
    both.set(b, a.byteLength);
    load(dst, both);
  });
  t.equal(merged.errno, 'EINVAL', 'two merged transactions');
  t.match(merged.failure, /on the source/);
  const skipped = run((txns, dst) => load(dst, txns[1] ?? new Uint8Array(0)));
  t.match(skipped.failure, /transaction 1 where 0 was expected/);
  const corrupt = run((txns, dst) => {
    const a = txns[0]?.slice() ?? new Uint8Array(0);
    a[100] ^= 1;
    load(dst, a);
  });
  t.match(corrupt.failure, /CRC/);
  const noOffset = run((txns, dst) => dst.setDataSize(txns[0]?.byteLength ?? 0));
  t.equal(noOffset.errno, 'EINVAL', 'data_size before data_offset');
  const oversize = run((_txns, dst) => {
    dst.dataOffset();
    dst.setDataSize(1 << 20);
  });
  t.equal(oversize.errno, 'EINVAL', 'data_size past the region');
});

t.test('a device of another geometry refuses the stream', async (t) => {
  using p = v1Pair({ dst: { memorySize: 32 * 1024 } });
  const { txns, dst } = saveAll(p);
  t.equal(
    errnoOf(() => {
      for (const x of txns) load(dst, x);
    }),
    'EINVAL',
  );
  t.match(p.dst.resumeFailure, /page \d+ is past the 32 pages/);
});

t.test('a partial resume leaves the device in the error state; only VFIO_DEVICE_RESET clears it', async (t) => {
  using p = v1Pair();
  const { txns, dst } = saveAll(p);
  for (const x of txns.slice(0, 2)) load(dst, x);
  t.equal(errnoOf(() => dst.setState(V1_RUNNING)), 'EINVAL', 'leaving RESUMING with half a state');
  t.equal(dst.state() & 7, V1_ERROR, 'SAVING|RESUMING');
  for (const s of [V1_RUNNING, V1_STOP, V1_RESUMING, V1_STOP_COPY]) t.equal(errnoOf(() => dst.setState(s)), 'EINVAL', `no way out to ${s}`);
  t.equal(errnoOf(() => dst.dataOffset()), 'EINVAL', 'no data either');
  p.kernel.ioctl(p.dstDev.fd, VFIO_DEVICE_RESET);
  t.equal(dst.state(), V1_RUNNING, 'reset: RUNNING');
  t.same(p.dst.readMemory(0, 16), new Uint8Array(16), 'the reset device lost its memory');
  // Leaving RESUMING with nothing loaded is no error: the state was never touched.
  dst.setState(V1_RESUMING);
  dst.setState(V1_RUNNING);
  t.equal(dst.state(), V1_RUNNING);
});

t.test('fault plan: a failed device_state write, with or without the error state', async (t) => {
  using p = v1Pair();
  const raw = rawV1(p.kernel, p.srcDev.fd);
  const before = p.src.checksum();
  p.src.faults = { stateWrite: { to: V1_STOP_COPY, errno: 'EIO' } };
  raw.setState(V1_PRE_COPY);
  t.equal(errnoOf(() => raw.setState(V1_STOP_COPY)), 'EIO');
  t.equal(raw.state(), V1_PRE_COPY, 'the device stayed where it was');
  p.src.faults = { stateWrite: { errno: 'EAGAIN', enterError: true } };
  t.equal(errnoOf(() => raw.setState(V1_RUNNING)), 'EAGAIN');
  t.equal(raw.state(), V1_ERROR);
  t.equal(raw.pending(), 0n, 'the session is gone');
  p.src.faults = {};
  t.equal(errnoOf(() => raw.setState(V1_RUNNING)), 'EINVAL', 'the error state refuses every write');
  t.equal(p.src.checksum(), before, 'the state survives until the reset');
  p.srcDev.reset();
  t.equal(raw.state(), V1_RUNNING);
  t.not(p.src.checksum(), before, 'the reset cleared it');
});

t.test('mmap of the data section: the transactions appear in the mapping', async (t) => {
  using p = v1Pair({ dst: { mmap: false } });
  const k = p.kernel;
  const raw = rawV1(k, p.srcDev.fd);
  t.equal(errnoOf(() => k.mmap(p.srcDev.fd, 4096, PROT_READ, MIG_BASE)), 'EINVAL', 'the header page');
  t.equal(errnoOf(() => k.mmap(p.srcDev.fd, 4096, PROT_READ, 0n)), 'EINVAL', 'BAR0 is trapped');
  t.equal(errnoOf(() => k.mmap(p.srcDev.fd, 65536 + 4096, PROT_READ, MIG_BASE + 4096n)), 'EINVAL', 'past the region');
  t.equal(errnoOf(() => k.mmap(p.dstDev.fd, 4096, PROT_READ, MIG_BASE + 4096n)), 'EINVAL', 'a trapped data section');
  const m = k.mmap(p.srcDev.fd, 65536, PROT_READ, MIG_BASE + 4096n);
  t.equal(p.src.dataMappings, 1);
  raw.setState(V1_PRE_COPY);
  raw.pending();
  const off = raw.dataOffset();
  const size = raw.dataSize();
  t.same(m.view(off - 4096, size), raw.read(off, size), 'the same bytes through the mapping and pread');
  m.unmap();
  m.unmap();
  t.equal(p.src.dataMappings, 0, 'unmapped once');
});

t.test('trapped data sections use unaligned offsets', async (t) => {
  using p = v1Pair({ src: { mmap: false } });
  const raw = rawV1(p.kernel, p.srcDev.fd);
  raw.setState(V1_STOP_COPY);
  drain(raw);
  const offsets = new Set(p.src.savedTransactions.map((s) => s.dataOffset));
  t.ok(offsets.has(32), 'right after the header');
  t.ok([...offsets].some((o) => o % 4096 !== 0), 'not page-aligned');
});

t.test('BAR0 is the device memory; its writes dirty pages', async (t) => {
  using p = v1Pair();
  const bar = p.srcDev.region(0);
  t.equal(bar.size, 65536);
  t.same(bar.readBytes(100, 4), p.src.readMemory(100, 4));
  rawV1(p.kernel, p.srcDev.fd).setState(V1_PRE_COPY);
  const before = p.src.dirtyPages;
  bar.writeBytes(1020, new Uint8Array(8));
  t.equal(p.src.dirtyPages, before, 'already all dirty at the start of a session');
  drain(rawV1(p.kernel, p.srcDev.fd));
  bar.writeBytes(1020, new Uint8Array(8));
  t.equal(p.src.dirtyPages, 2, 'a write across a page boundary dirties both');
  const buf = new Uint8Array(8);
  t.equal(p.kernel.pread(p.srcDev.fd, buf, 65536 - 4), 4, 'a read across the end is cut short');
  t.equal(errnoOf(() => p.kernel.pread(p.srcDev.fd, buf, 65536)), 'EINVAL', 'past the end');
  t.equal(errnoOf(() => p.kernel.pread(p.srcDev.fd, buf, 3n << 40n)), 'EINVAL', 'an absent BAR');
});

t.test('the last close ends the session; the device keeps its memory', async (t) => {
  const k = new SimKernel();
  const dev = addV1Device(k, { bdf: SRC_BDF });
  addV1Device(k, { bdf: DST_BDF });
  fillMemory(dev, 9);
  const sum = dev.checksum();
  {
    using c = VfioContainer.open({ sys: k });
    rawV1(k, c.openDevice(SRC_BDF).fd).setState(V1_PRE_COPY);
    t.equal(dev.deviceState, V1_PRE_COPY);
  }
  t.equal(dev.deviceState, V1_RUNNING);
  t.equal(dev.checksum(), sum);
  t.equal(k.openFds, 0);
  t.throws(() => addV1Device(k, { bdf: '0000:00:07.0', transactionSizes: [16] }), RangeError, 'a transaction must carry data');
  t.throws(() => addV1Device(k, { bdf: '0000:00:07.0', dataOffsets: [4100] }), RangeError, 'mmappable offsets are page-aligned');
  t.throws(() => addV1Device(k, { bdf: '0000:00:07.0', reservedBits: 1 }), RangeError, 'reserved bits are bits 3-31');
  t.throws(() => addV1Device(k, { bdf: '0000:00:07.0', memorySize: 1000 }), RangeError, 'whole pages');
});
