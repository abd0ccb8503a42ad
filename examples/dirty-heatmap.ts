/**
 * Dirty tracking without a migration: watch a simulated device's DMA writes
 * into 4 MiB of "guest RAM" for a few seconds and draw them as a heat map,
 * one column per page and one row per sample (time goes down).
 *
 *   npx tsx examples/dirty-heatmap.ts [out.png] [seconds] [tracker]
 *
 * `tracker` picks the device and so the rung of the ladder: `device-logging`
 * (default: a PCI device with DMA logging), `iommufd` (the same device bound
 * through iommufd, HWPT dirty tracking), `type1` (an mdev writing through
 * `vfio_dma_rw`) or `all-dirty`.
 */
import { writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import { addDmaDevice } from '../lib/sim/dma-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { DirtyBitmap } from '../lib/vfio/dirty-bitmap.js';
import { createDirtyTracker, type DirtyTrackerKind, type DirtyTrackerOptions } from '../lib/vfio/dirty-tracker.js';
import { Iommufd } from '../lib/vfio/iommufd.js';
import { IommufdDevice } from '../lib/vfio/iommufd-device.js';

const out = process.argv[2] ?? 'dirty-heatmap.png';
const seconds = Number(process.argv[3] ?? 3);
const wanted = (process.argv[4] ?? 'device-logging') as DirtyTrackerKind;
const PAGE = 4096;
const RAM_PAGES = 1024;
const RAM_IOVA = 0x100000n;
const SAMPLE_MS = 50;
/** Pixel rows per sample, so a few seconds make a picture taller than a line. */
const ROW_PX = 6;

const sim = new SimKernel({ iommufd: wanted === 'iommufd' });
const dma = addDmaDevice(sim, { mode: wanted === 'type1' ? 'rw' : 'iommu', logging: wanted === 'device-logging' });
const ram = sim.allocPages(RAM_PAGES * PAGE);
const cleanup: (() => void)[] = [];
let options: DirtyTrackerOptions;
if (wanted === 'iommufd') {
  const fd = Iommufd.open({ sys: sim });
  const idev = IommufdDevice.bind(fd, dma.name);
  const ioas = fd.allocIoas();
  const hwpt = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
  idev.attach(hwpt.id);
  ioas.map({ iova: RAM_IOVA, buffer: ram });
  options = { iommufd: { ioas, hwpts: [hwpt] } };
  cleanup.push(() => idev.close(), () => fd.close());
} else {
  const container = VfioContainer.open({ sys: sim });
  const device = container.openDevice(dma.name);
  container.mapDma({ iova: RAM_IOVA, buffer: ram });
  options = { container, devices: [device], disable: wanted === 'all-dirty' ? ['type1'] : [] };
  cleanup.push(() => container.close());
}

// The guest RAM is pages [firstPage, firstPage + RAM_PAGES) of an identity bitmap.
const firstPage = Number(RAM_IOVA) / PAGE;
const bitmap = new DirtyBitmap(firstPage + RAM_PAGES, { kernelBufferPages: RAM_PAGES });
using tracker = createDirtyTracker(options);
console.log(`tracker: ${tracker.kind} (${tracker.reason})`);
tracker.start();
dma.configure({ iova: RAM_IOVA, size: RAM_PAGES * PAGE, writeBytes: 64 });
dma.run(2, 25);

const rows: Uint8Array[] = [];
const samples = Math.max(1, Math.round((seconds * 1000) / SAMPLE_MS));
for (let i = 0; i < samples; i++) {
  await new Promise((r) => setTimeout(r, SAMPLE_MS));
  tracker.sync(bitmap);
  const row = new Uint8Array(RAM_PAGES);
  bitmap.takeRuns((page, n) => row.fill(1, page - firstPage, page - firstPage + n), firstPage, RAM_PAGES);
  rows.push(row);
}
dma.halt();
tracker.stop();
for (const f of cleanup) f();

// Each pixel: clean pages dark blue, dirty ones in a heat colour by how long the page has stayed hot.
const png = new PNG({ width: RAM_PAGES, height: rows.length * ROW_PX });
const heat = new Uint16Array(RAM_PAGES);
rows.forEach((row, y) => {
  for (let x = 0; x < RAM_PAGES; x++) {
    heat[x] = row[x] === 1 ? Math.min((heat[x] ?? 0) + 1, 8) : 0;
    const h = (heat[x] ?? 0) / 8;
    const rgb = row[x] === 1 ? [128 + Math.round(127 * h), Math.round(200 * h), Math.round(64 * (1 - h))] : [8, 12, 40];
    for (let dy = 0; dy < ROW_PX; dy++) png.data.set([...rgb, 255], ((y * ROW_PX + dy) * RAM_PAGES + x) * 4);
  }
});
writeFileSync(out, PNG.sync.write(png));
const dirty = rows.map((r) => r.reduce((a, b) => a + b, 0));
console.log(`${dma.writes} DMA writes, ${rows.length} samples of ${SAMPLE_MS} ms, dirty pages per sample: min ${Math.min(...dirty)}, max ${Math.max(...dirty)}`);
console.log(`wrote ${out} (${RAM_PAGES} pages across, ${rows.length} samples down)`);
