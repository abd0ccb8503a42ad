/**
 * The reference runner on the simulated kernel: mtty and the bulk device over
 * a pipe, TCP loopback and a file; QEMU's exact savevm bytes; exact state
 * paths; switchover-ack; convergence; abort; a failing destination; several
 * devices; bounded memory for a large device.
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import t from 'tap';
import { stateName } from '../lib/migration/fsm.js';
import type { VfioMigration } from '../lib/migration/hooks.js';
import { MigrationDestination, MigrationSource, type SourceResult } from '../lib/migration/runner.js';
import { encodeDevConfigState, encodeDataState, encodeEndOfState, encodeSetupState } from '../lib/migration/stream.js';
import { VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_STATE_STOP } from '../lib/vfio/uapi/constants.js';
import { concatBytes, StreamBuilder } from './helpers/migration-streams.js';
import { bulkPair, mttyPair, runBoth, type SimPair } from './helpers/migration-sim.js';

/** Every state change of `m`, as "FROM>TO". */
function statePath(m: VfioMigration): string[] {
  const out: string[] = [];
  m.on('state', (from, to) => out.push(`${stateName(from)}>${stateName(to)}`));
  return out;
}

/** Reads a whole stream into one buffer. */
async function collect(stream: Readable): Promise<Uint8Array> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return concatBytes(parts);
}

function uartWrite(p: SimPair<unknown>, text: string): void {
  for (const c of new TextEncoder().encode(text)) p.src.device.region(0).write8(0, c);
}

function uartRead(p: SimPair<unknown>, n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(p.dst.device.region(0).read8(0));
  return s;
}

/** The number of open migration data fds in the pair's kernel. */
function dataFds(p: SimPair<unknown>): number {
  let n = 0;
  for (let fd = 3; fd < 128; fd++) {
    try {
      if (p.kernel.fileOf(fd).ops.kind === 'migration') n++;
    } catch {
      // no file at this fd
    }
  }
  return n;
}

t.test('mtty over a pipe with switchover-ack: exact state paths, the message arrives', async (t) => {
  const p = mttyPair();
  t.teardown(() => p.close());
  uartWrite(p, 'migrate me');
  const srcPath = statePath(p.src.migration);
  const dstPath = statePath(p.dst.migration);
  const events: string[] = [];
  let vcpus = 'running';
  const { source, destination } = await runBoth(
    {
      devices: [p.src.migration],
      switchoverAck: true,
      bandwidth: 1e6,
      stopVcpus: () => {
        vcpus = 'stopped';
      },
    },
    {
      devices: [p.dst.migration],
      switchoverAck: true,
      startVcpus: () => {
        events.push(`dst vcpus start, device ${stateName(p.dst.migration.state)}`);
      },
    },
    (s, d) => {
      s.on('switchover-ack', () => events.push('src acked'));
      s.on('switchover', (c) => events.push(`switchover ${c.pending}/${c.threshold} exact=${c.exact}`));
      s.on('downtime', () => events.push('downtime'));
      d.on('switchover-ack', () => events.push('dst ack sent'));
      d.on('loaded', () => events.push('dst loaded'));
    },
  );
  t.ok(source.ok && destination.ok, 'both sides succeeded');
  t.same(srcPath, ['RUNNING>PRE_COPY', 'PRE_COPY>PRE_COPY_P2P', 'PRE_COPY_P2P>STOP_COPY', 'STOP_COPY>STOP']);
  t.same(dstPath, ['RUNNING>RESUMING', 'RESUMING>RUNNING_P2P', 'RUNNING_P2P>RUNNING']);
  t.equal(vcpus, 'stopped');
  t.same(events, ['dst ack sent', 'src acked', 'switchover 96/300000 exact=true', 'dst loaded', 'dst vcpus start, device RUNNING', 'downtime']);
  t.equal(uartRead(p, 10), 'migrate me', 'the RX FIFO came along');
  if (source.ok) {
    t.equal(source.result.precopyBytes, 24, 'precopy carried the header');
    t.equal(source.result.stopCopyBytes, 72, 'stop-copy the ports');
    t.equal(source.result.destinationStatus, 0);
    t.ok(source.result.iterations >= 1);
  }
  if (destination.ok) t.same(destination.result, { bytes: destination.result.bytes, deviceBytes: 96, switchoverAcked: true, started: true });
  t.equal(dataFds(p), 0, 'no data fd left open');
});

t.test("a snapshot's exact bytes: QEMU's savevm stream for mtty, restored into another mtty", async (t) => {
  const p = mttyPair();
  t.teardown(() => p.close());
  uartWrite(p, 'snap');
  const out = new PassThrough();
  const bytes = collect(out);
  const result = await new MigrationSource({ devices: [p.src.migration], output: out }).run();
  const stream = await bytes;
  t.equal(result.iterations, 1, 'bandwidth unknown: one precopy round, then it measures and switches');
  const id = p.src.migration.idstr;
  const config = (await p.src.migration.config.save()).slice();
  const header = Uint8Array.of(0x4e, 0x2c, 0x3e, 0x8c, 0x89, 0x09, 0x9d, 0x7e, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0);
  const expected = new StreamBuilder()
    .fileHeader()
    .full('start', 1, id, [encodeSetupState()])
    .part('part', 1, [encodeDataState(header), encodeEndOfState()])
    .part('end', 1, [encodeDataState(p.src.sim.portsImage()), encodeEndOfState()])
    .full('full', 1, id, [encodeDevConfigState(config)])
    .eof()
    .build();
  t.equal(Buffer.from(stream).toString('hex'), Buffer.from(expected.bytes).toString('hex'), 'START/PART/END/FULL, footers, EOF: byte for byte');
  t.equal(p.src.migration.state, VFIO_DEVICE_STATE_STOP, 'the source device stays STOP after a successful migration');

  const restored = await new MigrationDestination({ devices: [p.dst.migration], input: Readable.from([stream]) }).run();
  t.same(restored, { bytes: stream.length, deviceBytes: 96, switchoverAcked: false, started: true });
  t.equal(uartRead(p, 4), 'snap');
});

t.test('the bulk device over TCP loopback, with a workload and switchover-ack', async (t) => {
  const p = bulkPair({ stateSize: 8 << 20 });
  t.teardown(() => p.close());
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [serverSide] = await accepted;
  t.teardown(() => {
    client.destroy();
    serverSide.destroy();
    server.close();
  });
  const sim = p.src.sim;
  const source = new MigrationSource({ devices: [p.src.migration], output: client, returnPath: client, switchoverAck: true, bandwidth: 40e6, endOutput: false });
  const destination = new MigrationDestination({ devices: [p.dst.migration], input: serverSide, returnPath: serverSide, switchoverAck: true });
  const iterations: number[] = [];
  let lastBytes = 0;
  let monotonic = true;
  source.on('iteration', (i) => {
    iterations.push(i.pending);
    // The guest keeps writing: 64 KiB per round for the first 40 rounds.
    if (i.iteration <= 40) sim.tick(64 * 1024);
  });
  source.on('bytes', (n) => {
    monotonic &&= n >= lastBytes;
    lastBytes = n;
  });
  const [r, d] = await Promise.all([source.run(), destination.run()]);
  t.equal(p.dst.sim.checksum(), sim.checksum(), 'the destination state equals the source state');
  t.ok(r.iterations > 2, `${r.iterations} precopy rounds`);
  t.ok(r.precopyBytes > 8 << 20, 'precopy sent the state and the re-dirtied pages');
  t.ok(r.switchover.pending <= r.switchover.threshold);
  t.ok(monotonic && lastBytes === r.bytes, 'bytes events rise to the total');
  t.equal(d.deviceBytes, r.precopyBytes + r.stopCopyBytes);
  t.ok(d.switchoverAcked);
  t.equal(p.dst.migration.state, VFIO_DEVICE_STATE_RUNNING);
});

t.test('snapshot to a file and restore from it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-snap-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'bulk.savevm');
  const p = bulkPair({ stateSize: 2 << 20 });
  t.teardown(() => p.close());
  p.src.sim.tick(100_000);
  const want = p.src.sim.checksum();
  const out = createWriteStream(file);
  const saved = await new MigrationSource({ devices: [p.src.migration], output: out }).run();
  await once(out, 'close');
  t.equal(statSync(file).size, saved.bytes);
  await t.rejects(new MigrationSource({ devices: [p.src.migration], output: new PassThrough(), switchoverAck: true }).run(), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /return path/ });
  await new MigrationDestination({ devices: [p.dst.migration], input: createReadStream(file) }).run();
  t.equal(p.dst.sim.checksum(), want);
  await t.rejects(new MigrationDestination({ devices: [p.dst.migration], input: new PassThrough(), switchoverAck: true }).run(), { message: /return path/ });
});

t.test('abort: the source goes back to RUNNING with its state intact, the destination is reset', async (t) => {
  const p = bulkPair({ stateSize: 4 << 20 });
  t.teardown(() => p.close());
  const before = p.src.sim.checksum();
  const ac = new AbortController();
  const { source, destination } = await runBoth(
    { devices: [p.src.migration], bandwidth: 1, signal: ac.signal },
    { devices: [p.dst.migration] },
    (s) => {
      s.on('iteration', (i) => {
        if (i.iteration === 3) ac.abort(new Error('operator cancelled'));
      });
    },
  );
  t.match(source, { ok: false, error: { code: 'ERR_VFIO_MIGRATION_ABORTED', cause: { message: 'operator cancelled' } } });
  t.match(destination, { ok: false, error: { code: 'ERR_VFIO_STREAM_FORMAT' } }, 'the destination saw a truncated stream');
  t.equal(p.src.migration.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(p.src.sim.checksum(), before, 'source state intact');
  t.equal(p.dst.migration.state, VFIO_DEVICE_STATE_RUNNING, 'destination reset');
  t.equal(dataFds(p), 0);

  // Aborted once the vCPUs are stopped: they resume, after the devices run again.
  const q = mttyPair();
  t.teardown(() => q.close());
  const ac2 = new AbortController();
  const log: string[] = [];
  const r2 = await runBoth(
    {
      devices: [q.src.migration],
      bandwidth: 1e9,
      signal: ac2.signal,
      stopVcpus: () => {
        log.push('stop');
        ac2.abort();
      },
      resumeVcpus: () => {
        log.push(`resume (device ${stateName(q.src.migration.state)})`);
      },
    },
    { devices: [q.dst.migration] },
  );
  t.match(r2.source, { ok: false, error: { code: 'ERR_VFIO_MIGRATION_ABORTED' } });
  t.same(log, ['stop', 'resume (device RUNNING)']);

  const ac3 = new AbortController();
  ac3.abort();
  await t.rejects(new MigrationSource({ devices: [q.src.migration], output: new PassThrough(), signal: ac3.signal }).run(), { code: 'ERR_VFIO_MIGRATION_ABORTED' });
  const ac4 = new AbortController();
  const pending = new MigrationDestination({ devices: [q.dst.migration], input: new PassThrough(), signal: ac4.signal }).run();
  ac4.abort();
  await t.rejects(pending, { code: 'ERR_VFIO_MIGRATION_ABORTED' });
  t.equal(q.dst.migration.state, VFIO_DEVICE_STATE_RUNNING);
});

t.test('convergence: a workload faster than the budget, an unknown stop-copy size', async (t) => {
  const p = bulkPair({ stateSize: 1 << 20 });
  t.teardown(() => p.close());
  const r = await runBoth({ devices: [p.src.migration], bandwidth: 1000, maxIterations: 30 }, { devices: [p.dst.migration] }, (s) => {
    s.on('iteration', () => p.src.sim.tick(256 * 1024));
  });
  t.match(r.source, { ok: false, error: { code: 'ERR_VFIO_MIGRATION', reason: 'no-convergence' } });
  t.equal(p.src.migration.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(p.dst.migration.state, VFIO_DEVICE_STATE_RUNNING);

  const q = bulkPair({ stateSize: 64 * 1024 });
  t.teardown(() => q.close());
  q.src.sim.faults = { dataSizeErrno: 'EOPNOTSUPP' };
  const warnings: string[] = [];
  const r2 = await runBoth({ devices: [q.src.migration], bandwidth: 1e9, maxIterations: 5, idleWaitMs: 0 }, { devices: [q.dst.migration] }, (s) => {
    s.on('warning', (e, id) => warnings.push(`${e.code} ${id === q.src.migration.idstr}`));
  });
  t.match(r2.source, { ok: false, error: { reason: 'no-convergence' } }, 'a device that cannot estimate never fits the budget (100 GiB)');
  t.ok(warnings.length > 0 && warnings.every((w) => w === 'EOPNOTSUPP true'), 'each failed estimate was reported');
});

t.test('a failing destination makes the source resume', async (t) => {
  const p = bulkPair({ stateSize: 256 * 1024 });
  t.teardown(() => p.close());
  const before = p.src.sim.checksum();
  p.dst.sim.faults = { resumeWriteErrno: 'EIO' };
  const resumed: string[] = [];
  const r = await runBoth(
    { devices: [p.src.migration], bandwidth: 1, resumeVcpus: () => void resumed.push(stateName(p.src.migration.state)) },
    { devices: [p.dst.migration] },
  );
  t.match(r.destination, { ok: false, error: { code: 'EIO', op: 'write migration data' } });
  t.match(r.source, { ok: false, error: { code: 'ERR_VFIO_MIGRATION', reason: 'peer-failed' } });
  t.equal(p.src.migration.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(p.src.sim.checksum(), before);
  t.equal(p.dst.migration.state, VFIO_DEVICE_STATE_RUNNING);
  t.same(resumed, [], 'the failure came in precopy, before the vCPUs stopped: nothing to resume');

  // RESUMING -> STOP refuses an incomplete stream at VM start, after the source stopped: the source resumes.
  const q = bulkPair({ stateSize: 64 * 1024 });
  t.teardown(() => q.close());
  q.src.sim.faults = { saveTruncateAt: 40_000 };
  const r2 = await runBoth(
    { devices: [q.src.migration], bandwidth: 1e9, resumeVcpus: () => void resumed.push(stateName(q.src.migration.state)) },
    { devices: [q.dst.migration] },
  );
  t.match(r2.destination, { ok: false, error: { code: 'EINVAL' } });
  t.match(r2.source, { ok: false, error: { reason: 'peer-failed' } });
  t.same(resumed, ['RUNNING'], 'vCPUs resumed once the device runs again');
});

t.test('several devices: P2P quiesce of all before any stops; every device migrates', async (t) => {
  const m1 = mttyPair();
  const m2 = mttyPair();
  const b = bulkPair({ stateSize: 512 * 1024 });
  t.teardown(() => {
    m1.close();
    m2.close();
    b.close();
  });
  const pairs = [m1, b] as const;
  uartWrite(m1, 'one');
  b.src.sim.tick(50_000);
  const log: string[] = [];
  const { source, destination } = await runBoth(
    { devices: pairs.map((p) => p.src.migration), bandwidth: 1e9, switchoverAck: true },
    { devices: pairs.map((p) => p.dst.migration), switchoverAck: true },
    (s) => s.on('state', (id, from, to) => log.push(`${id === m1.src.migration.idstr ? 'm' : 'b'}:${stateName(from)}>${stateName(to)}`)),
  );
  t.ok(source.ok && destination.ok);
  const lastP2P = Math.max(log.indexOf('m:PRE_COPY>PRE_COPY_P2P'), log.indexOf('b:PRE_COPY>PRE_COPY_P2P'));
  const firstStop = Math.min(log.indexOf('m:PRE_COPY_P2P>STOP_COPY'), log.indexOf('b:PRE_COPY_P2P>STOP_COPY'));
  t.ok(lastP2P >= 0 && lastP2P < firstStop, 'both quiesced before either stopped');
  t.equal(uartRead(m1, 3), 'one');
  t.equal(b.dst.sim.checksum(), b.src.sim.checksum());

  // A destination that expects a device the stream lacks.
  const r = await runBoth({ devices: [m2.src.migration], bandwidth: 1e9 }, { devices: [m2.dst.migration, b.dst.migration] });
  t.match(r.destination, { ok: false, error: { code: 'ERR_VFIO_MIGRATION', reason: 'incomplete' } });
  t.match(r.source, { ok: false, error: { reason: 'peer-failed' } });
  // A stream with a device the destination does not know.
  const r2 = await runBoth({ devices: [m2.src.migration], bandwidth: 1e9 }, { devices: [b.dst.migration] });
  t.match(r2.destination, { ok: false, error: { code: 'ERR_VFIO_STREAM_FORMAT', message: /unknown device/ } });
  await t.rejects(new MigrationDestination({ devices: [m2.dst.migration, m2.dst.migration], input: new PassThrough() }).run(), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /share an idstr/ });
});

t.test('a device without PRE_COPY switches over at once; runners run once', async (t) => {
  const p = bulkPair({ stateSize: 128 * 1024, precopy: false });
  t.teardown(() => p.close());
  const path = statePath(p.src.migration);
  const { forward, back } = { forward: new PassThrough(), back: new PassThrough() };
  const s = new MigrationSource({ devices: [p.src.migration], output: forward, returnPath: back });
  const d = new MigrationDestination({ devices: [p.dst.migration], input: forward, returnPath: back });
  const [r] = await Promise.all([s.run(), d.run()]);
  t.equal(r.iterations, 0, 'nothing can lower the pending size: no rounds');
  t.same(path, ['RUNNING>RUNNING_P2P', 'RUNNING_P2P>STOP', 'STOP>STOP_COPY', 'STOP_COPY>STOP']);
  t.equal(p.dst.sim.checksum(), p.src.sim.checksum());
  await t.rejects(s.run(), { code: 'ERR_VFIO_INVALID_ARGUMENT' });
  await t.rejects(d.run(), { code: 'ERR_VFIO_INVALID_ARGUMENT' });
});

/** A pipe that records the most bytes it ever held between writer and reader. */
class MeasuredPipe extends PassThrough {
  maxHeld = 0;

  override _transform(chunk: Buffer, encoding: BufferEncoding, done: (error?: Error | null, data?: unknown) => void): void {
    super._transform(chunk, encoding, done);
    this.maxHeld = Math.max(this.maxHeld, this.readableLength + this.writableLength);
  }
}

t.test('bounded memory: a 256 MiB device through a pipe', async (t) => {
  const size = 256 << 20;
  const p = bulkPair({ stateSize: size });
  t.teardown(() => p.close());
  const forward = new MeasuredPipe();
  const back = new PassThrough();
  const source = new MigrationSource({ devices: [p.src.migration], output: forward, returnPath: back, bandwidth: 1e9 });
  const destination = new MigrationDestination({ devices: [p.dst.migration], input: forward, returnPath: back });
  const base = process.memoryUsage.rss();
  let peakRss = base;
  source.on('bytes', () => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  });
  const [r]: [SourceResult, unknown] = await Promise.all([source.run(), destination.run()]);
  t.equal(p.dst.sim.checksum(), p.src.sim.checksum());
  const growth = peakRss - base;
  t.comment(`state ${size >> 20} MiB, ${r.bytes} bytes moved; most bytes held by the pipe ${forward.maxHeld}; peak RSS growth ${(growth / 2 ** 20).toFixed(1)} MiB`);
  // One 1 MiB buffer waiting for the reader and one being written: the source waits for the reader.
  t.ok(forward.maxHeld <= (2 << 20) + 64, 'the pipe never holds more than two buffers');
  // The sink copies each 1 MiB buffer into a pipe; V8 collects such garbage every 64 MiB of external memory.
  t.ok(growth < size / 2, 'peak RSS growth stays far below the state size');
});
