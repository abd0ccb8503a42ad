/**
 * Live migration with guest RAM, on the simulated kernel: 16 MiB of "guest
 * RAM" sits beside a DMA device that keeps writing into it on a timer while
 * the runner migrates both. RAM travels in the stream as QEMU's "ram"
 * section: every page once, then each round the pages the dirty tracker
 * reports, then, once the vCPUs and the device stopped, a final sync and the
 * last dirty pages. At the end the destination RAM must equal the source RAM
 * byte for byte, and the destination device must carry on from the source's
 * state.
 *
 *   npx tsx examples/migrate-ram.ts [device-logging|iommufd|type1|all-dirty]
 *
 * The tracker picks the device as in examples/dirty-heatmap.ts: a PCI device
 * with DMA logging (`device-logging`, the default), the same device bound
 * through its cdev to iommufd with HWPT dirty tracking (`iommufd`), an mdev
 * writing through `vfio_dma_rw` (`type1`), or nothing (`all-dirty`).
 */
import { PassThrough } from 'node:stream';
import { noConfigState } from '../lib/migration/config-state.js';
import { GuestRam } from '../lib/migration/guest-ram.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { RamLoader } from '../lib/migration/ram-load.js';
import { RamSaver } from '../lib/migration/ram-save.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { addDmaDevice, type SimDmaDevice } from '../lib/sim/dma-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import type { Mapping } from '../lib/sys/sys.js';
import { VfioContainer } from '../lib/vfio/container.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import { createDirtyTracker, type DirtyTrackerKind, type DirtyTrackerOptions } from '../lib/vfio/dirty-tracker.js';
import { Iommufd } from '../lib/vfio/iommufd.js';
import { IommufdDevice } from '../lib/vfio/iommufd-device.js';

const wanted = (process.argv[2] ?? 'device-logging') as DirtyTrackerKind;
const RAM_BYTES = 16 << 20;
const RAM_IOVA = 0x100000n;

const sim = new SimKernel({ iommufd: wanted === 'iommufd' });
const mode = wanted === 'type1' ? 'rw' : 'iommu';

/** One side's device, opened the way the tracker needs, with `ram` mapped for its DMA. */
function open(dma: SimDmaDevice, ram: Mapping): { device: VfioDevice; tracking: DirtyTrackerOptions; close: () => void } {
  if (wanted === 'iommufd') {
    const fd = Iommufd.open({ sys: sim });
    const idev = IommufdDevice.bind(fd, dma.name);
    const ioas = fd.allocIoas();
    const hwpt = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
    idev.attach(hwpt.id);
    ioas.map({ iova: RAM_IOVA, buffer: ram });
    const close = (): void => {
      idev.close();
      fd.close();
    };
    return { device: idev.device, tracking: { iommufd: { ioas, hwpts: [hwpt] } }, close };
  }
  const container = VfioContainer.open({ sys: sim });
  const device = container.openDevice(dma.name);
  container.mapDma({ iova: RAM_IOVA, buffer: ram });
  return { device, tracking: { container, devices: [device], disable: wanted === 'all-dirty' ? ['type1'] : [] }, close: () => container.close() };
}

const names = mode === 'iommu' ? ['0000:00:05.0', '0000:00:06.0'] : ['d3a0d3a0-0000-4000-8000-00000000d3a0', 'd3a0d3a0-0000-4000-8000-00000000d3a1'];
const srcDma = addDmaDevice(sim, { mode, name: names[0], logging: wanted === 'device-logging', seed: 11 });
const dstDma = addDmaDevice(sim, { mode, name: names[1], logging: false, seed: 99 });
const srcMemory = sim.allocPages(RAM_BYTES);
const dstMemory = sim.allocPages(RAM_BYTES);
// Something in RAM before the migration: the first quarter holds data, the rest is zero pages.
const data = srcMemory.view(0, RAM_BYTES / 4);
for (let i = 0; i < data.length; i++) data[i] = (i * 131) >>> 3;
const src = open(srcDma, srcMemory);
const dst = open(dstDma, dstMemory);

const guest = new GuestRam([{ name: 'pc.ram', memory: srcMemory, iova: RAM_IOVA }]);
using tracker = createDirtyTracker({ ...src.tracking, ram: guest.ranges, pageSize: BigInt(guest.pageSize) });
using saver = new RamSaver({ ram: guest, tracker });
const loader = new RamLoader(new GuestRam([{ name: 'pc.ram', memory: dstMemory, iova: RAM_IOVA }]));
using out = VfioMigration.open(src.device, { config: noConfigState });
using into = VfioMigration.open(dst.device, { idstr: out.idstr, config: noConfigState });

// The guest at work: the device writes 64-byte records all over RAM, 40 every millisecond...
srcDma.configure({ iova: RAM_IOVA, size: RAM_BYTES, writeBytes: 64 });
srcDma.run(1, 40);
await new Promise((r) => setTimeout(r, 50));

const forward = new PassThrough();
const back = new PassThrough();
// A tight downtime budget shows the rounds shrink as the guest settles. All-dirty sends all of RAM at every
// round, so only a budget that holds all of it converges: QEMU's default, 300 ms, for it.
const downtimeLimitMs = wanted === 'all-dirty' ? 300 : 20;
const migrateOut = new MigrationSource({ devices: [out], ram: saver, output: forward, returnPath: back, downtimeLimitMs, maxIterations: 100 });
const migrateIn = new MigrationDestination({ devices: [into], ram: loader, input: forward, returnPath: back });
console.log(`tracker: ${tracker.kind} (${tracker.reason})`);
// ...and in bursts: one after each round, halving as the guest settles, and one in the last stretch
// before the vCPUs stop, which only the final sync sees.
let burst = 16000;
migrateOut.on('iteration', () => srcDma.step((burst >>= 1)));
migrateOut.on('switchover', () => srcDma.step(100));
migrateOut.on('iteration', (i) =>
  console.log(`  round ${i.iteration}: ${i.ramPages} RAM pages sent; ${(i.pending / 1024).toFixed(0)} KiB were pending, budget ${(i.threshold / 1024).toFixed(0)} KiB`),
);
migrateOut.on('switchover', (c) => console.log(`  switchover: ${(c.pending / 1024).toFixed(0)} KiB pending fit the ${(c.threshold / 1024).toFixed(0)} KiB budget`));
const [sent, received] = await Promise.all([migrateOut.run(), migrateIn.run()]);
srcDma.halt();

const ram = sent.ram;
const equal = Buffer.compare(Buffer.from(srcMemory.view()), Buffer.from(dstMemory.view())) === 0;
console.log(`Migrated ${RAM_BYTES >> 20} MiB of guest RAM and ${srcDma.name} -> ${dstDma.name} while the device wrote (${srcDma.writes} DMA writes in all):`);
console.log(`  RAM: ${ram?.rounds} precopy round(s), ${ram?.syncs} tracker syncs; ${ram?.pages} pages + ${ram?.zeroPages} zero pages sent (${ram?.stopCopyPages} after the stop), ${ram?.bytes} bytes of ram sections`);
console.log(`  stream: ${sent.bytes} bytes; downtime ${sent.downtimeMs.toFixed(1)} ms; destination loaded ${received.ram?.pages} pages + ${received.ram?.zeroPages} zero pages`);
console.log(`  destination RAM ${equal ? 'equals' : 'DIFFERS from'} the source RAM byte for byte`);
const continues = dstDma.writes === srcDma.writes;
console.log(`  destination device ${continues ? 'carries on from' : 'DIFFERS from'} the source's state (${dstDma.writes} writes done)`);
src.close();
dst.close();
if (!equal || !continues) process.exitCode = 1;
