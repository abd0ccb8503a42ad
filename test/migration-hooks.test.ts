/**
 * The VfioMigration hooks on the simulated kernel, one at a time: the exact
 * bytes each save hook emits for mtty (QEMU's §5.3), the states they move the
 * device through, QEMU's buffer size and pending rules, recovery (recover
 * state, else reset), switchover-ack, the destination's order (all data, then
 * the config, the data fd closed before RESUMING -> STOP, RUNNING at VM
 * start), record framing for a v1-style driver, and the P2P group.
 */
import t from 'tap';
import { bytesSource } from '../lib/migration/byte-io.js';
import { noConfigState, pciConfigState } from '../lib/migration/config-state.js';
import type { MigrationDriver, PrecopyInfo } from '../lib/migration/driver.js';
import { stateName, type MigrationState } from '../lib/migration/fsm.js';
import { MigrationGroup } from '../lib/migration/group.js';
import { VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE, VFIO_MIG_STOP_COPY_SIZE, VfioMigration } from '../lib/migration/hooks.js';
import { encodeDataState, encodeEndOfState, encodeInitDataSent, encodeSetupState, encodeTag, VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY } from '../lib/migration/stream.js';
import { MigrationFile } from '../lib/migration/v2-driver.js';
import { SimKernel } from '../lib/sim/kernel.js';
import type { Sys } from '../lib/sys/sys.js';
import {
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
import { VFIO_DEVICE_FEATURE, VFIO_DEVICE_RESET } from '../lib/vfio/uapi/ioctls.js';
import { concatBytes } from './helpers/migration-streams.js';
import { bulkPair, MemorySink, mttyPair } from './helpers/migration-sim.js';
import { hexOf, toHex } from './helpers/uapi-hex.js';

const END = 'ffffffffef100001';
const CONFIG = 'ffffffffef100002';
const SETUP = 'ffffffffef100003';
const DATA = 'ffffffffef100004';
const INIT_DATA_SENT = 'ffffffffef100005';
/** struct mtty_data's header for two ports. */
const MTTY_HEADER = '4e2c3e8c89099d7e 01000000 00000000 02000000 00000000';

/** Records every state change of `m` as "FROM>TO". */
function states(m: VfioMigration): string[] {
  const out: string[] = [];
  m.on('state', (from, to) => out.push(`${stateName(from)}>${stateName(to)}`));
  return out;
}

t.test('source hooks on mtty: golden bytes and states (switchover-ack on)', async (t) => {
  const p = mttyPair();
  t.teardown(() => p.close());
  const { migration: m, sim, device } = p.src;
  for (const c of new TextEncoder().encode('hi')) device.region(0).write8(0, c);
  const seen = states(m);
  const sink = new MemorySink();

  await m.saveSetup(sink, { switchoverAck: true });
  t.equal(toHex(sink.take()), hexOf(SETUP, END), 'save_setup: SETUP_STATE, END_OF_STATE');
  t.equal(m.bufferSize, 96, 'buffer: min(1 MiB, stop-copy 96)');
  t.equal(m.state, VFIO_DEVICE_STATE_PRE_COPY);
  t.equal(m.statePendingEstimate(), 24, 'estimate: the cached precopy sizes');
  t.equal(m.statePendingExact(), 96 + 24, 'exact: stop-copy size plus precopy');
  t.ok(m.isActiveIterate());

  t.equal(await m.saveLiveIterate(sink), true, 'initial bytes drained: nothing more now');
  t.equal(toHex(sink.take()), hexOf(DATA, '0000000000000018', MTTY_HEADER, INIT_DATA_SENT), 'DATA(24), then INIT_DATA_SENT instead of END');
  t.equal(await m.saveLiveIterate(sink), true);
  t.equal(toHex(sink.take()), hexOf(END), 'a read of 0: no DATA, END_OF_STATE (INIT_DATA_SENT goes once)');
  t.equal(m.statePendingEstimate(), 0);

  m.prepareStop();
  m.vmStop();
  t.equal(m.state, VFIO_DEVICE_STATE_STOP_COPY);
  t.notOk(m.isActiveIterate());
  t.equal(m.statePendingEstimate(), 0, 'no estimate outside precopy');
  await m.saveLiveCompletePrecopy(sink);
  t.equal(toHex(sink.take()), hexOf(DATA, '0000000000000048', toHex(sim.portsImage()), END), 'DATA(72): both ports; END');

  await m.saveState(sink);
  const config = sink.take();
  t.equal(config.length, 8 + 4 + 4096 + 16 + 8, "CONFIG_STATE, a PCIe-sized image for mtty's 255-byte region, END");
  t.equal(toHex(config.subarray(0, 24)), hexOf(CONFIG, '00000002', '48435332 0100 0002 10 02 00 07'), 'version 2, then the config region');
  t.equal(toHex(config.subarray(config.length - 24)), hexOf('00000000'.repeat(4), END), 'irq_state all 0, END');
  t.equal(m.bytesSaved, 96);

  m.saveCleanup();
  t.equal(m.state, VFIO_DEVICE_STATE_STOP);
  t.equal(m.bufferSize, 0, 'buffer freed');
  t.same(seen, ['RUNNING>PRE_COPY', 'PRE_COPY>PRE_COPY_P2P', 'PRE_COPY_P2P>STOP_COPY', 'STOP_COPY>STOP']);
  m.abortSave();
  t.equal(m.state, VFIO_DEVICE_STATE_RUNNING, 'abortSave: RUNNING');
});

t.test('without switchover-ack, and from STOP: STOP -> STOP_COPY in complete', async (t) => {
  const p = mttyPair();
  t.teardown(() => p.close());
  const m = p.src.migration;
  const sink = new MemorySink();
  await m.saveSetup(sink);
  await m.saveLiveIterate(sink);
  t.equal(toHex(sink.take()).endsWith(END), true, 'END_OF_STATE, never INIT_DATA_SENT');
  m.abortSave();
  m.saveCleanup();
  m.driver.setState(VFIO_DEVICE_STATE_STOP);
  const seen = states(m);
  await m.saveSetup(sink);
  t.equal(m.state, VFIO_DEVICE_STATE_STOP, 'a STOP device stays STOP at setup');
  t.notOk(m.isActiveIterate());
  m.prepareStop();
  await m.saveLiveCompletePrecopy(sink);
  t.equal(toHex(sink.take()), hexOf(SETUP, END, DATA, '0000000000000060', MTTY_HEADER, toHex(p.src.sim.portsImage()), END), 'DATA(96) in one read');
  t.same(seen, ['STOP>STOP_COPY']);
  m.saveCleanup();
  m.driver.setState(VFIO_DEVICE_STATE_RESUMING);
  await t.rejects(m.saveSetup(sink), { code: 'ERR_VFIO_MIGRATION', reason: 'bad-state' }, 'saving from RESUMING is refused');
});

t.test('buffer size and pending: QEMU rules for unknown and nonsense estimates', async (t) => {
  const p = bulkPair({ stateSize: 64 * 4096 });
  t.teardown(() => p.close());
  const { migration: m, sim } = p.src;
  const warnings: string[] = [];
  m.on('warning', (e) => warnings.push(e.code));
  const sink = new MemorySink();
  await m.saveSetup(sink);
  t.equal(m.bufferSize, 32 + 64 * 4104 + 8, 'min(1 MiB, the 262,696-byte estimate)');
  m.saveCleanup();
  m.abortSave();

  sim.faults = { dataSize: 0n };
  await m.saveSetup(sink);
  t.equal(m.bufferSize, VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE, 'an estimate of 0 never makes a 0-byte buffer');
  m.saveCleanup();
  m.abortSave();

  sim.faults = { dataSizeErrno: 'EIO' };
  await m.saveSetup(sink);
  t.equal(m.bufferSize, VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE, 'a failed query: 1 MiB');
  t.same(warnings, ['EIO'], 'the errno is reported, not swallowed');
  t.equal(m.statePendingExact(), VFIO_MIG_STOP_COPY_SIZE + 32 + 64 * 4104, 'unknown stop-copy size counts as 100 GiB');
  sim.faults = { dataSize: 2n ** 64n - 1n };
  t.equal(m.statePendingExact(), VFIO_MIG_STOP_COPY_SIZE + 32 + 64 * 4104, 'so does a nonsense one');
  t.same(warnings, ['EIO', 'EIO', 'ERR_VFIO_UAPI_FORMAT']);
  sim.faults = { precopyInfoErrno: 'EIO' };
  t.equal(m.statePendingExact(), 32 + 64 * 4104 + 8, 'a failed PRECOPY_INFO counts as 0 (QEMU zeroes both)');
  sim.faults = {};
  t.equal(m.statePendingExact(), 2 * (32 + 64 * 4104) + 8);
  m.saveCleanup();
  m.abortSave();
});

t.test('recovery: a failed SET goes to the recover state, else the device is reset', async (t) => {
  const p = mttyPair();
  t.teardown(() => p.close());
  const { migration: m, sim } = p.src;
  const warnings: string[] = [];
  m.on('warning', (e) => warnings.push(e.code));
  const sink = new MemorySink();
  let seen = states(m);

  sim.faults = { arc: { from: VFIO_DEVICE_STATE_RUNNING, to: VFIO_DEVICE_STATE_PRE_COPY, errno: 'EIO' } };
  await t.rejects(m.saveSetup(sink), { code: 'EIO' });
  t.equal(m.state, VFIO_DEVICE_STATE_RUNNING, 'the recover state RUNNING');
  t.same(seen, []);
  m.saveCleanup();

  sim.faults = { arc: { from: VFIO_DEVICE_STATE_RUNNING, to: VFIO_DEVICE_STATE_PRE_COPY, errno: 'EIO', enterError: true } };
  await t.rejects(m.saveSetup(sink), { code: 'EIO' }, 'the first error is what the caller sees');
  t.same(seen, ['RUNNING>ERROR', 'ERROR>RUNNING'], 'ERROR, the recover SET refused, then a reset');
  t.same(warnings, ['ERR_VFIO_MIGRATION_STATE']);
  m.saveCleanup();

  // complete_precopy: STOP_COPY, recover STOP.
  sim.faults = {};
  await m.saveSetup(sink);
  seen = states(m);
  sim.faults = { arc: { from: VFIO_DEVICE_STATE_PRE_COPY_P2P, to: VFIO_DEVICE_STATE_STOP_COPY, errno: 'EIO' } };
  await t.rejects(m.saveLiveCompletePrecopy(sink), { code: 'EIO' });
  t.same(seen, ['PRE_COPY>PRE_COPY_P2P', 'PRE_COPY_P2P>STOP'], 'stuck at PRE_COPY_P2P, then recovered to STOP');
  m.saveCleanup();
  m.abortSave();

  // vm stop: set_state_or_reset.
  await m.saveSetup(sink);
  seen = states(m);
  m.prepareStop();
  t.throws(() => m.vmStop(), { code: 'EIO' });
  t.same(seen, ['PRE_COPY>PRE_COPY_P2P', 'PRE_COPY_P2P>RUNNING'], 'the recover state is ERROR: reset at once');
  m.saveCleanup();

  // A reset that fails too: the device is lost, and the error says so.
  sim.faults = { arc: { from: VFIO_DEVICE_STATE_RUNNING, to: VFIO_DEVICE_STATE_RUNNING_P2P, errno: 'EIO' } };
  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_RESET, nth: 1, errno: 'EIO' });
  t.throws(() => m.prepareStop(), { code: 'ERR_VFIO_MIGRATION', reason: 'reset-failed' });
  sim.faults = {};
});

t.test('destination hooks: a split stream, data before config, the order of the last steps', async (t) => {
  const p = mttyPair();
  t.teardown(() => p.close());
  const src = p.src.migration;
  for (const c of new TextEncoder().encode('hello')) p.src.device.region(0).write8(0, c);
  const sink = new MemorySink();
  const sections: Uint8Array[] = [];
  await src.saveSetup(sink, { switchoverAck: true });
  sections.push(sink.take());
  await src.saveLiveIterate(sink);
  sections.push(sink.take());
  src.prepareStop();
  src.vmStop();
  await src.saveLiveCompletePrecopy(sink);
  sections.push(sink.take());
  await src.saveState(sink);
  sections.push(sink.take());
  src.saveCleanup();
  const stream = concatBytes(sections);

  const dst = p.dst.migration;
  const splits = [...Array.from({ length: 120 }, (_, i) => i), ...Array.from({ length: Math.ceil(stream.length / 97) }, (_, i) => i * 97)];
  for (const at of splits) {
    let approved = 0;
    dst.loadSetup({ approveSwitchover: () => approved++ });
    const source = bytesSource([stream.subarray(0, at), stream.subarray(at)]);
    for (let i = 0; i < sections.length; i++) await dst.loadState(source);
    if (approved !== 1 || !dst.hasConfig || dst.bytesLoaded !== 96) {
      t.fail(`split at ${at}: approved ${approved}, config ${dst.hasConfig}, ${dst.bytesLoaded} bytes`);
      break;
    }
    t.equal(await source.read(), null, `split at ${at}: each loadState stopped at its section's end`);
    dst.abortLoad();
  }

  const seen = states(dst);
  dst.loadSetup({ approveSwitchover: () => undefined });
  const source = bytesSource([stream]);
  for (let i = 0; i < sections.length; i++) await dst.loadState(source);
  await dst.loadConfig();
  await dst.loadConfig();
  p.kernel.startTrace();
  dst.loadCleanup();
  dst.prepareStart();
  const trace = p.kernel.stopTrace();
  t.same(
    trace.map((r) => `${r.syscall}:${r.kind}`),
    ['close:migration', 'ioctl:device'],
    'the data fd closes before the one SET that walks RESUMING -> STOP -> RUNNING_P2P',
  );
  t.equal(dst.state, VFIO_DEVICE_STATE_RUNNING_P2P, 'not RUNNING before the VM starts');
  dst.vmStart();
  t.same(seen, ['RUNNING>RESUMING', 'RESUMING>RUNNING_P2P', 'RUNNING_P2P>RUNNING']);
  let rx = '';
  for (let i = 0; i < 5; i++) rx += String.fromCharCode(p.dst.device.region(0).read8(0));
  t.equal(rx, 'hello', 'the message is in the destination RX FIFO');
});

t.test('load_state rules: misplaced tags, data after config, a missing config', async (t) => {
  const p = mttyPair();
  t.teardown(() => p.close());
  const dst = p.dst.migration;
  dst.loadSetup();
  await t.rejects(dst.loadState(bytesSource([encodeInitDataSent()])), { code: 'ERR_VFIO_STREAM_FORMAT', message: /switchover-ack is off/ });
  await t.rejects(dst.loadState(bytesSource([encodeTag(VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY)])), { code: 'ERR_VFIO_STREAM_FORMAT', message: /multifd/ });
  await t.rejects(dst.loadConfig(), { code: 'ERR_VFIO_MIGRATION', reason: 'incomplete' });
  await t.rejects(dst.loadState(bytesSource([encodeSetupState().subarray(0, 12)])), { code: 'ERR_VFIO_STREAM_FORMAT', message: /truncated/ });
  const config = new Uint8Array(dst.config.size);
  await dst.loadState(bytesSource([encodeTag(0xffffffffef100002n), config, encodeEndOfState()]));
  t.ok(dst.hasConfig);
  await t.rejects(dst.loadState(bytesSource([encodeDataState(new Uint8Array(4)), encodeEndOfState()])), { code: 'ERR_VFIO_STREAM_FORMAT', message: /after the config/ });
  await t.rejects(dst.loadConfig(), { code: 'ERR_VFIO_CONFIG_SPACE' }, 'an all-zero image breaks the read-only bits');
  dst.abortLoad();
  t.equal(dst.state, VFIO_DEVICE_STATE_RUNNING, 'abortLoad resets');
  const bad = new VfioMigration(p.src.migration.driver, { config: { size: 3, save: () => new Uint8Array(2), load: () => undefined } });
  await t.rejects(bad.saveState(new MemorySink()), { code: 'ERR_VFIO_INVALID_ARGUMENT' }, 'a provider that breaks its own size');
  t.throws(() => new VfioMigration(p.src.migration.driver, { config: { size: -1, save: () => new Uint8Array(0), load: () => undefined } }), { code: 'ERR_VFIO_INVALID_ARGUMENT' });
  t.equal(new VfioMigration(p.src.migration.driver).config, noConfigState, 'no provider: an empty config state');
  t.equal(noConfigState.load(new Uint8Array(0)), undefined);
});

t.test('the config state: the command register travels, MSI-X devices are refused', async (t) => {
  const p = bulkPair({ stateSize: 4096 });
  t.teardown(() => p.close());
  const provider = pciConfigState(p.src.device);
  t.equal(provider.size, 4 + 256 + 16, 'a 256-byte region migrates a conventional 256-byte image');
  p.src.device.region(7).write16(4, 0x0006);
  const bytes = await provider.save();
  await pciConfigState(p.dst.device).load(bytes);
  t.equal(p.dst.device.region(7).read16(4), 0x0006, 'the destination got the command register');
  const otherVendor = Uint8Array.from(bytes);
  otherVendor[4] ^= 1;
  t.throws(() => pciConfigState(p.dst.device).load(otherVendor), { code: 'ERR_VFIO_CONFIG_SPACE' }, 'another vendor id is refused');
  const otherSubsystem = Uint8Array.from(bytes);
  otherSubsystem[4 + 0x2e] ^= 1;
  t.doesNotThrow(() => pciConfigState(p.dst.device).load(otherSubsystem), 'a different subsystem id loads, as in QEMU (pci_init_cmask leaves it out)');
});

/** A v1-style driver: whole records on resume, a bounded chunk. */
class RecordDriver implements MigrationDriver {
  readonly protocol = 'v1';
  readonly label = 'fake';
  readonly flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY;
  readonly resumeFraming = 'record';
  readonly maxChunkSize = 100;
  state: MigrationState = VFIO_DEVICE_STATE_RUNNING;
  readonly writes: number[] = [];
  constructor(readonly sys: Sys) {}
  queryState(): MigrationState {
    return this.state;
  }
  setState(target: MigrationState): void {
    this.state = target;
  }
  read(): Promise<number> {
    return Promise.resolve(0);
  }
  write(bytes: Uint8Array): Promise<void> {
    this.writes.push(bytes.byteLength);
    return Promise.resolve();
  }
  precopyInfo(): PrecopyInfo {
    return { initialBytes: 0, dirtyBytes: 0 };
  }
  stopCopySize(): number {
    return 10;
  }
  closeSession(): void {}
  reset(): void {
    this.state = VFIO_DEVICE_STATE_RUNNING;
  }
  close(): void {}
  [Symbol.dispose](): void {}
}

t.test('record framing: each DATA record reaches the driver whole, bounded by its chunk size', async (t) => {
  const driver = new RecordDriver(new SimKernel());
  const m = new VfioMigration(driver);
  t.same(m.parserOptions(), { configStateSize: 0, maxDataSize: 100 });
  m.loadSetup();
  t.equal(driver.state, VFIO_DEVICE_STATE_RESUMING);
  const stream = concatBytes([encodeDataState(new Uint8Array(30)), encodeDataState(new Uint8Array(0)), encodeDataState(new Uint8Array(100)), encodeEndOfState()]);
  const source = bytesSource(Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1)));
  await m.loadState(source);
  t.same(driver.writes, [30, 100], 'one write per record although the bytes came one by one (empty records skipped)');
  await t.rejects(m.loadState(bytesSource([encodeDataState(new Uint8Array(101))])), { code: 'ERR_VFIO_STREAM_FORMAT', message: /maxDataSize/ });
  const sink = new MemorySink();
  await t.rejects(m.saveSetup(sink), { code: 'ERR_VFIO_MIGRATION', reason: 'bad-state' }, 'no saving from RESUMING');
  driver.reset();
  await m.saveSetup(sink);
  t.equal(m.bufferSize, 100, 'the buffer holds the largest chunk even when the estimate is smaller');
  t.equal(driver.state, VFIO_DEVICE_STATE_PRE_COPY);
});

t.test('a group quiesces every device (P2P) before any stops, and refuses a device without P2P', async (t) => {
  const a = mttyPair();
  const b = mttyPair();
  t.teardown(() => {
    a.close();
    b.close();
  });
  // Two kernels: trace both, and interleave their records by a shared clock.
  const log: string[] = [];
  for (const [name, m] of [['a', a.src.migration], ['b', b.src.migration]] as const) {
    m.on('state', (from, to) => log.push(`${name}:${stateName(from)}>${stateName(to)}`));
  }
  const sink = new MemorySink();
  await a.src.migration.saveSetup(sink);
  await b.src.migration.saveSetup(sink);
  const group = new MigrationGroup([a.src.migration, b.src.migration]);
  t.equal(group.pendingEstimate(), 48);
  t.equal(group.pendingExact(), 2 * (96 + 24));
  t.equal(group.iterating().length, 2);
  group.stop();
  t.same(log, [
    'a:RUNNING>PRE_COPY',
    'b:RUNNING>PRE_COPY',
    'a:PRE_COPY>PRE_COPY_P2P',
    'b:PRE_COPY>PRE_COPY_P2P',
    'a:PRE_COPY_P2P>STOP_COPY',
    'b:PRE_COPY_P2P>STOP_COPY',
  ]);
  a.dst.migration.loadSetup();
  b.dst.migration.loadSetup();
  a.dst.migration.abortLoad();
  b.dst.migration.abortLoad();
  a.src.migration.saveCleanup();
  b.src.migration.saveCleanup();
  for (const m of [a.src.migration, b.src.migration]) {
    m.driver.reset();
    m.driver.setState(VFIO_DEVICE_STATE_STOP);
  }
  log.length = 0;
  new MigrationGroup([a.src.migration, b.src.migration]).start();
  t.same(log, ['a:STOP>RUNNING_P2P', 'b:STOP>RUNNING_P2P', 'a:RUNNING_P2P>RUNNING', 'b:RUNNING_P2P>RUNNING']);

  const plain = bulkPair({ stateSize: 4096, p2p: false });
  t.teardown(() => plain.close());
  t.throws(() => new MigrationGroup([a.src.migration, plain.src.migration]), { code: 'ERR_VFIO_MIGRATION', reason: 'blocked' });
  const alone = new MigrationGroup([plain.src.migration]);
  plain.src.migration.prepareStop();
  t.equal(plain.src.migration.state, VFIO_DEVICE_STATE_RUNNING, 'without P2P there is no quiesce');
  alone.stop();
  t.equal(plain.src.migration.state, VFIO_DEVICE_STATE_STOP, 'a lone device without P2P just stops');
});

t.test('VfioMigration.open and close', async (t) => {
  const p = mttyPair();
  t.equal(p.src.migration.idstr, `${p.src.device.name}/vfio`);
  t.equal(p.dst.migration.idstr, p.src.migration.idstr);
  t.ok(p.src.migration.driver instanceof MigrationFile);
  t.ok(p.src.migration.supportsPrecopy && p.src.migration.supportsP2P);
  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_FEATURE, nth: 1, errno: 'ENOTTY' });
  t.throws(() => VfioMigration.open(p.src.device), { code: 'ERR_VFIO_MIGRATION', reason: 'unsupported' });
  p.src.migration.close();
  p.src.migration.close();
  t.throws(() => p.src.migration.driver.queryState(), { code: 'ERR_VFIO_CLOSED' });
  p.close();
});
