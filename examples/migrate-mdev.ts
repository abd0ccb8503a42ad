/**
 * `npm run demo`: live-migrates an mtty mdev between two containers over TCP
 * loopback (in-memory pipes where there is no loopback interface). A message written into the source UART lands in its receive FIFO;
 * the device goes PRE_COPY -> STOP_COPY on the source and RESUMING ->
 * RUNNING on the destination, and the message is read back there.
 *
 *   npx tsx examples/migrate-mdev.ts                             (simulated kernel)
 *   npx tsx examples/migrate-mdev.ts --kernel <src-uuid> <dst-uuid>   (real mtty mdevs)
 */
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { stateName } from '../lib/migration/fsm.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty } from '../lib/sim/mtty.js';
import { libcSys } from '../lib/sys/libc.js';
import type { Sys } from '../lib/sys/sys.js';
import { VfioContainer } from '../lib/vfio/container.js';

const UART_DATA = 0;
const UART_FCR = 2;
const UART_LSR = 5;
/** FIFOs on, both cleared: a real mdev keeps its UART state between users. */
const FCR_ENABLE_AND_CLEAR = 0xc7;
const LSR_DATA_READY = 0x01;
/** At most 15 bytes: with 16 queued, mtty's FIFO head wraps onto its tail and reads as empty. */
const MESSAGE = 'hello, target!';

/** The system and the two mdevs: real ones with --kernel, else two simulated mtty-2. */
function devices(argv: readonly string[]): { sys: Sys; src: string; dst: string; where: string } {
  const k = argv.indexOf('--kernel');
  if (k >= 0) {
    const [src, dst] = [argv[k + 1], argv[k + 2]];
    if (src === undefined || dst === undefined) throw new Error('usage: migrate-mdev.ts --kernel <src-uuid> <dst-uuid>');
    return { sys: libcSys(), src, dst, where: 'the kernel' };
  }
  const sim = new SimKernel();
  return { sys: sim, src: addMtty(sim, { type: 'mtty-2' }).name, dst: addMtty(sim, { type: 'mtty-2' }).name, where: 'the simulated kernel' };
}

/** The stream between source and destination, both directions. */
interface Link {
  readonly source: Duplex;
  readonly destination: Duplex;
  readonly kind: string;
  close(): void;
}

/**
 * TCP loopback; in-memory pipes where there is no loopback interface (the
 * test guest of ../shared/vm has none).
 */
async function link(): Promise<Link> {
  try {
    const tcp = await loopback();
    return { source: tcp.client, destination: tcp.server, kind: 'TCP loopback', close: tcp.close };
  } catch {
    const forward = new PassThrough();
    const back = new PassThrough();
    return { source: Duplex.from({ writable: forward, readable: back }), destination: Duplex.from({ writable: back, readable: forward }), kind: 'in-memory pipes (no TCP loopback here)', close: () => undefined };
  }
}

/** A connected TCP loopback pair: what the source writes, the destination reads, and back. */
async function loopback(): Promise<{ client: Socket; server: Socket; close: () => void }> {
  const listener = createServer();
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const address = listener.address();
  if (address === null || typeof address === 'string') throw new Error('no TCP port');
  const accepted = once(listener, 'connection');
  const client = connect(address.port, '127.0.0.1');
  let server: Socket;
  try {
    [[server]] = await Promise.all([accepted as Promise<[Socket]>, once(client, 'connect')]);
  } catch (e) {
    listener.close();
    throw e;
  }
  // Nagle's algorithm would hold the small section and return-path messages back for tens of ms: downtime.
  client.setNoDelay(true);
  server.setNoDelay(true);
  return {
    client,
    server,
    close: () => {
      client.destroy();
      server.destroy();
      listener.close();
    },
  };
}

const { sys, src, dst, where } = devices(process.argv.slice(2));
using source = VfioContainer.open({ sys });
using target = VfioContainer.open({ sys });
const srcDevice = source.openDevice(src);
const dstDevice = target.openDevice(dst);

// The UART is a loopback: what goes into TX waits in the receive FIFO.
const bar0 = srcDevice.region(0);
bar0.write8(UART_FCR, FCR_ENABLE_AND_CLEAR);
dstDevice.region(0).write8(UART_FCR, FCR_ENABLE_AND_CLEAR);
for (const c of new TextEncoder().encode(MESSAGE)) bar0.write8(UART_DATA, c);

using out = VfioMigration.open(srcDevice);
using into = VfioMigration.open(dstDevice, { idstr: out.idstr });
const net = await link();
const states: string[] = [];
const migrateOut = new MigrationSource({
  devices: [out],
  output: net.source,
  returnPath: net.source,
  switchoverAck: true,
  stopVcpus: () => void states.push('source vCPUs stopped'),
});
const migrateIn = new MigrationDestination({
  devices: [into],
  input: net.destination,
  returnPath: net.destination,
  switchoverAck: true,
  startVcpus: () => void states.push('destination vCPUs started'),
});
migrateOut.on('state', (_id, from, to) => states.push(`source ${stateName(from)} -> ${stateName(to)}`));
migrateIn.on('state', (_id, from, to) => states.push(`destination ${stateName(from)} -> ${stateName(to)}`));
migrateOut.on('switchover-ack', () => states.push('destination acked the switchover'));

const [sent, received] = await Promise.all([migrateOut.run(), migrateIn.run()]);
net.close();

const rx = dstDevice.region(0);
const back: number[] = [];
while ((rx.read8(UART_LSR) & LSR_DATA_READY) !== 0) back.push(rx.read8(UART_DATA));
const echoed = new TextDecoder().decode(Uint8Array.from(back));

console.log(`Migrated mtty ${src} -> ${dst} on ${where}, over ${net.kind}:`);
for (const s of states) console.log(`  ${s}`);
console.log(`Stream: ${sent.bytes} bytes, ${sent.iterations} precopy round(s); device data ${sent.precopyBytes} bytes in precopy + ${sent.stopCopyBytes} in stop-copy (${received.deviceBytes} loaded)`);
console.log(`Downtime: ${sent.downtimeMs.toFixed(1)} ms (budget 300 ms at ${(sent.bandwidth / 1e3).toFixed(1)} kB/s measured); total ${sent.totalMs.toFixed(1)} ms`);
console.log(`Destination RX FIFO: ${JSON.stringify(echoed)} ${echoed === MESSAGE ? '(intact)' : `(expected ${JSON.stringify(MESSAGE)})`}`);
if (echoed !== MESSAGE) process.exitCode = 1;
