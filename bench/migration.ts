/**
 * Live migration throughput, memory and downtime: 1 GiB of simulated device
 * state (the bulk device) goes source -> TCP loopback -> destination through
 * the runner. Reported, never asserted:
 *
 * 1. An idle device, against a plain copy of the same bytes over the same
 *    socket in the same run (1 MiB writes, the receiver copying each chunk into
 *    a 1 GiB buffer, as the destination device does): the throughput of each,
 *    migration ÷ plain copy, and the peak RSS growth during the migration (the
 *    device states are resident before it starts, so this is what the
 *    migration itself holds).
 * 2. The same device migrated again while its guest keeps dirtying pages after
 *    every precopy round: the measured downtime against the stop-copy bytes ÷
 *    the bandwidth the runner measured in precopy.
 *
 *   npx tsx bench/migration.ts [--size MiB] [--dirty KiB-per-round]
 */
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VfioMigration } from '../lib/migration/hooks.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { addBulkDevice, type SimBulkDevice } from '../lib/sim/bulk-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { VfioContainer } from '../lib/vfio/container.js';

export interface MigrationBenchOptions {
  /** Bytes of device state (default 1 GiB). */
  stateSize?: number;
  /** Bytes the guest dirties after each precopy round of the second migration (default 256 KiB). */
  dirtyPerRound?: number;
  log?: (line: string) => void;
}

export interface MigrationBenchResult {
  stateSize: number;
  node: string;
  /** The plain copy: bytes per second. */
  copyThroughput: number;
  /** The idle migration: device state bytes per second, setup to destination running. */
  migrationThroughput: number;
  /** migrationThroughput ÷ copyThroughput. */
  ratio: number;
  /** The idle migration. */
  idle: MigrationFigures;
  /** The migration with a guest dirtying pages. */
  busy: MigrationFigures & { dirtyPerRound: number };
}

/** What one migration did. */
export interface MigrationFigures {
  streamBytes: number;
  iterations: number;
  precopyBytes: number;
  stopCopyBytes: number;
  /** Peak RSS growth during the migration, bytes. */
  peakRssGrowth: number;
  downtimeMs: number;
  /** stopCopyBytes ÷ the bandwidth measured in precopy, ms. */
  expectedDowntimeMs: number;
  /** The bandwidth the runner measured in precopy, bytes per second. */
  bandwidth: number;
  seconds: number;
  checksumsMatch: boolean;
}

const CHUNK = 1 << 20;

async function socketPair(): Promise<{ a: Socket; b: Socket; close: () => void }> {
  const listener = createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const address = listener.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP port');
  const accepted = once(listener, 'connection') as Promise<[Socket]>;
  const a = connect(address.port, '127.0.0.1');
  const [[b]] = await Promise.all([accepted, once(a, 'connect')]);
  a.setNoDelay(true);
  b.setNoDelay(true);
  return {
    a,
    b,
    close: () => {
      a.destroy();
      b.destroy();
      listener.close();
    },
  };
}

/** The baseline: `source` sent in 1 MiB writes, copied into `target` as it arrives; returns the seconds taken. */
async function plainCopy(a: Socket, b: Socket, source: Uint8Array, target: Uint8Array): Promise<number> {
  const start = performance.now();
  let received = 0;
  const done = new Promise<void>((resolve) => {
    const onData = (chunk: Buffer): void => {
      target.set(chunk, received);
      received += chunk.length;
      if (received === source.length) {
        b.off('data', onData);
        b.pause();
        resolve();
      }
    };
    b.on('data', onData);
  });
  for (let at = 0; at < source.length; at += CHUNK) {
    if (!a.write(source.subarray(at, at + CHUNK))) await once(a, 'drain');
  }
  await done;
  return (performance.now() - start) / 1000;
}

/** One migration of `out` into `into` over the socket pair, `dirty` bytes written by the guest after each round. */
async function migrate(
  net: { a: Socket; b: Socket },
  out: VfioMigration,
  into: VfioMigration,
  devices: { src: SimBulkDevice; dst: SimBulkDevice },
  dirty: number,
): Promise<MigrationFigures> {
  const source = new MigrationSource({ devices: [out], output: net.a, returnPath: net.a, switchoverAck: true, endOutput: false });
  const destination = new MigrationDestination({ devices: [into], input: net.b, returnPath: net.b, switchoverAck: true });
  if (dirty > 0) source.on('iteration', () => devices.src.tick(dirty));
  const baseRss = process.memoryUsage.rss();
  let peakRss = baseRss;
  const sample = (): void => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  };
  const sampler = setInterval(sample, 5);
  source.on('bytes', sample);
  const start = performance.now();
  try {
    const [r] = await Promise.all([source.run(), destination.run()]);
    return {
      streamBytes: r.bytes,
      iterations: r.iterations,
      precopyBytes: r.precopyBytes,
      stopCopyBytes: r.stopCopyBytes,
      peakRssGrowth: peakRss - baseRss,
      downtimeMs: r.downtimeMs,
      expectedDowntimeMs: (r.stopCopyBytes / r.bandwidth) * 1000,
      bandwidth: r.bandwidth,
      seconds: (performance.now() - start) / 1000,
      checksumsMatch: devices.src.checksum() === devices.dst.checksum(),
    };
  } finally {
    clearInterval(sampler);
  }
}

const mib = (n: number): string => (n / 2 ** 20).toFixed(1);

function report(log: (line: string) => void, f: MigrationFigures, size: number): void {
  log(`    ${f.iterations} precopy rounds, ${mib(f.precopyBytes)} MiB in precopy, ${mib(f.stopCopyBytes)} MiB in stop-copy, stream ${mib(f.streamBytes)} MiB, ${f.seconds.toFixed(2)} s`);
  log(`    peak RSS growth during the migration: ${mib(f.peakRssGrowth)} MiB (device state ${mib(size)} MiB)`);
  log(`    downtime ${f.downtimeMs.toFixed(1)} ms; stop-copy bytes / measured bandwidth (${(f.bandwidth / 1e6).toFixed(0)} MB/s) = ${f.expectedDowntimeMs.toFixed(1)} ms; budget 300 ms`);
  log(`    destination state ${f.checksumsMatch ? 'matches' : 'DIFFERS FROM'} the source`);
}

/** Runs the benchmark, prints its figures, writes bench/out/migration.json, and returns them. */
export async function run(options: MigrationBenchOptions = {}): Promise<MigrationBenchResult> {
  const size = options.stateSize ?? 2 ** 30;
  const dirty = options.dirtyPerRound ?? 256 * 1024;
  const log = options.log ?? ((line: string) => console.log(line));
  const kernel = new SimKernel();
  const src = addBulkDevice(kernel, { stateSize: size, seed: 1 });
  const dst = addBulkDevice(kernel, { stateSize: size, seed: 2 });
  using c1 = VfioContainer.open({ sys: kernel });
  using c2 = VfioContainer.open({ sys: kernel });
  using out = VfioMigration.open(c1.openDevice(src.name));
  using into = VfioMigration.open(c2.openDevice(dst.name), { idstr: out.idstr });
  const net = await socketPair();
  try {
    log(`migration bench: ${mib(size)} MiB of device state over TCP loopback, node ${process.version}`);
    // The same bytes the device holds, copied by the plain path into a buffer of the same size.
    const plainSource = src.readState(0, size);
    const plainTarget = new Uint8Array(size).fill(1);
    const copyThroughput = size / (await plainCopy(net.a, net.b, plainSource, plainTarget));
    log(`  plain copy over the socket: ${(copyThroughput / 1e6).toFixed(0)} MB/s`);

    const idle = await migrate(net, out, into, { src, dst }, 0);
    const migrationThroughput = size / idle.seconds;
    log(`  idle device: ${(migrationThroughput / 1e6).toFixed(0)} MB/s of device state = ${(migrationThroughput / copyThroughput).toFixed(2)} x the plain copy`);
    report(log, idle, size);

    // Again, from the same (still resident) state, with the guest running: the source device runs again.
    out.driver.reset();
    const busy = await migrate(net, out, into, { src, dst }, dirty);
    log(`  busy device (the guest dirties ${dirty / 1024} KiB after every round):`);
    report(log, busy, size);

    const result: MigrationBenchResult = {
      stateSize: size,
      node: process.version,
      copyThroughput,
      migrationThroughput,
      ratio: migrationThroughput / copyThroughput,
      idle,
      busy: { ...busy, dirtyPerRound: dirty },
    };
    const outDir = fileURLToPath(new URL('./out/', import.meta.url));
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'migration.json'), `${JSON.stringify(result, null, 2)}\n`);
    return result;
  } finally {
    net.close();
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const opt = (name: string): number | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : undefined;
  };
  const mib = opt('--size');
  const kib = opt('--dirty');
  await run({ ...(mib === undefined ? {} : { stateSize: mib * 2 ** 20 }), ...(kib === undefined ? {} : { dirtyPerRound: kib * 1024 }) });
}
