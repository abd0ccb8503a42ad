/**
 * Contract tests with QEMU's edu device on vfio-pci, behind an IOMMU: its DMA
 * engine, programmed through BAR0, copies guest memory mapped with
 * `mapDma` into its 4 KiB buffer and back out to another mapping, byte for
 * byte; and type1 then reports every mapped page dirty, as the kernel does
 * for an IOMMU-backed group that never pinned a page. The dirty tracker
 * therefore picks type1 (edu has no DMA logging), and a sync marks all RAM.
 *
 * On the kernel the device is `$EDU_BDF`; on the simulator, the backend's
 * simulated edu (lib/sim/edu.ts).
 */
import t from 'tap';
import { VfioContainer } from '../lib/vfio/container.js';
import { DirtyBitmap } from '../lib/vfio/dirty-bitmap.js';
import { createDirtyTracker } from '../lib/vfio/dirty-tracker.js';
import type { Region } from '../lib/vfio/region.js';
import { VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX } from '../lib/vfio/uapi/constants.js';
import { backend } from './helpers/backend.js';

const PAGE = 4096;
/** IOVAs below 256 MiB: edu masks DMA addresses to 28 bits. */
const SRC_IOVA = 0x1000000n;
const DST_IOVA = 0x2000000n;
const PAGES = 4;
/** edu's DMA buffer, in its own address space. */
const EDU_BUFFER = 0x40000n;
/**
 * Bytes per transfer. QEMU 7.2's edu (the guest's) refuses a transfer that
 * reaches the end of its 4 KiB buffer (`within(end, start, end2)` is strict)
 * with hw_error, which kills the whole VM: stay below it.
 */
const XFER = 2048;
const EDU_ID = 0x00;
const EDU_DMA_SRC = 0x80;
const EDU_DMA_DST = 0x88;
const EDU_DMA_COUNT = 0x90;
const EDU_DMA_CMD = 0x98;
const DMA_RUN = 1n;
const DMA_FROM_EDU = 2n;
const PCI_COMMAND = 0x04;
const PCI_COMMAND_MASTER = 0x4;

/** Runs one DMA transfer and waits (up to 10 s) for edu to clear the run bit. */
async function dma(bar: Region, src: bigint, dst: bigint, count: number, cmd: bigint): Promise<boolean> {
  bar.write64(EDU_DMA_SRC, src);
  bar.write64(EDU_DMA_DST, dst);
  bar.write64(EDU_DMA_COUNT, BigInt(count));
  bar.write64(EDU_DMA_CMD, cmd);
  const deadline = Date.now() + 10_000;
  while ((bar.read64(EDU_DMA_CMD) & DMA_RUN) !== 0n) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

const b = backend();
const bdf = b.edu === '' ? undefined : b.edu;

t.test('edu: DMA through the IOMMU, then type1 reports every mapped page dirty', { skip: bdf === undefined ? 'no edu device ($EDU_BDF is unset)' : false }, async (t) => {
  if (bdf === undefined) return;
  using c = VfioContainer.open({ sys: b.sys });
  const dev = c.openDevice(bdf);
  const bar = dev.region(VFIO_PCI_BAR0_REGION_INDEX);
  t.equal(bar.read32(EDU_ID), 0x010000ed, 'edu identification');
  const cfg = dev.region(VFIO_PCI_CONFIG_REGION_INDEX);
  cfg.write16(PCI_COMMAND, cfg.read16(PCI_COMMAND) | PCI_COMMAND_MASTER);

  const src = c.sys.allocPages(PAGES * PAGE);
  const dst = c.sys.allocPages(PAGES * PAGE);
  const pattern = src.view();
  for (let i = 0; i < pattern.byteLength; i++) pattern[i] = (i * 7 + 13) & 0xff;
  c.mapDma({ iova: SRC_IOVA, buffer: src });
  c.mapDma({ iova: DST_IOVA, buffer: dst });

  t.ok(await dma(bar, SRC_IOVA + 0x100n, EDU_BUFFER, XFER, DMA_RUN), 'RAM -> edu buffer completes');
  t.ok(await dma(bar, EDU_BUFFER, DST_IOVA + BigInt(PAGE), XFER, DMA_RUN | DMA_FROM_EDU), 'edu buffer -> RAM completes');
  t.same(dst.view(PAGE, XFER), src.view(0x100, XFER), 'the bytes edu wrote equal the bytes it read');
  t.ok(dst.view(0, PAGE).every((x) => x === 0) && dst.view(PAGE + XFER, PAGE - XFER).every((x) => x === 0), 'nothing written outside the target');

  const params = c.startDirtyTracking();
  t.equal(params.pgsize, 4096n);
  for (const iova of [SRC_IOVA, DST_IOVA]) {
    const bm = c.getDirtyBitmap(iova, BigInt(PAGES * PAGE));
    t.same([...bm], [(1 << PAGES) - 1, 0, 0, 0, 0, 0, 0, 0], `every page of 0x${iova.toString(16)} is dirty, and only those`);
  }
  const again = c.getDirtyBitmap(SRC_IOVA, BigInt(PAGES * PAGE));
  t.equal(again[0], (1 << PAGES) - 1, 'and again at the next query: an IOMMU-backed group that never pinned');

  using tracker = createDirtyTracker({ container: c, devices: [dev] });
  t.equal(tracker.kind, 'type1', tracker.reason);
  tracker.start();
  const bitmap = new DirtyBitmap(Number(DST_IOVA) / PAGE + PAGES, { kernelBufferPages: 64 });
  tracker.sync(bitmap);
  t.equal(bitmap.count(), 2 * PAGES, 'the tracker marks every mapped page');
  tracker.stop();
  t.notOk(c.dirtyTracking);
});
