/**
 * Snapshot and restore: saves an mtty mdev to a file (a QEMU savevm stream,
 * no return path) and restores the file into another mdev.
 *
 *   npx tsx examples/snapshot.ts [--file <path>]                                 (simulated kernel)
 *   npx tsx examples/snapshot.ts --kernel <src-uuid> <dst-uuid> [--file <path>]  (real mtty mdevs)
 */
import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VfioMigration } from '../lib/migration/hooks.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty } from '../lib/sim/mtty.js';
import { libcSys } from '../lib/sys/libc.js';
import type { Sys } from '../lib/sys/sys.js';
import { VfioContainer } from '../lib/vfio/container.js';

const UART_DATA = 0;
const UART_FCR = 2;
const UART_SCRATCH = 7;
/** FIFOs on, both cleared: a real mdev keeps its UART state between users. */
const FCR_ENABLE_AND_CLEAR = 0xc7;
const UART_LSR = 5;
const LSR_DATA_READY = 0x01;

const argv = process.argv.slice(2);
const f = argv.indexOf('--file');
const file = f >= 0 ? (argv[f + 1] ?? '') : join(mkdtempSync(join(tmpdir(), 'vfio-snapshot-')), 'mtty.savevm');
const k = argv.indexOf('--kernel');
let sys: Sys;
let src: string;
let dst: string;
if (k >= 0) {
  sys = libcSys();
  [src, dst] = [argv[k + 1] ?? '', argv[k + 2] ?? ''];
} else {
  const sim = new SimKernel();
  sys = sim;
  [src, dst] = [addMtty(sim).name, addMtty(sim).name];
}

using containerA = VfioContainer.open({ sys });
using containerB = VfioContainer.open({ sys });
const a = containerA.openDevice(src);
const b = containerB.openDevice(dst);
a.region(0).write8(UART_FCR, FCR_ENABLE_AND_CLEAR);
for (const c of new TextEncoder().encode('saved')) a.region(0).write8(UART_DATA, c);
a.region(0).write8(UART_SCRATCH, 0x42);

// Save: the device is stopped for the whole copy (no guest runs here), so one precopy round at most.
using saving = VfioMigration.open(a);
const out = createWriteStream(file);
const saved = await new MigrationSource({ devices: [saving], output: out }).run();
await once(out, 'close');
console.log(`Saved ${src} to ${file}: ${statSync(file).size} bytes (${saved.precopyBytes + saved.stopCopyBytes} bytes of device state)`);

// Restore into the other device: its section answers to the saved device's name.
using restoring = VfioMigration.open(b, { idstr: saving.idstr });
const loaded = await new MigrationDestination({ devices: [restoring], input: createReadStream(file) }).run();
const bar0 = b.region(0);
const back: number[] = [];
while ((bar0.read8(UART_LSR) & LSR_DATA_READY) !== 0) back.push(bar0.read8(UART_DATA));
const text = new TextDecoder().decode(Uint8Array.from(back));
console.log(`Restored ${dst} from it: ${loaded.deviceBytes} bytes loaded; RX FIFO ${JSON.stringify(text)}, scratch 0x${bar0.read8(UART_SCRATCH).toString(16)}`);
if (text !== 'saved') process.exitCode = 1;
