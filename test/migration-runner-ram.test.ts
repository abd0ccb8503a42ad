/**
 * The runners with guest RAM, around the edges: RAM alone (no device), a
 * snapshot to a file-like stream, a destination that has no RAM for the
 * stream's "ram" section or RAM the stream never fills, and an abort. Each
 * time the source's tracker is off again afterwards, as QEMU's
 * `ram_save_cleanup` leaves it.
 */
import { PassThrough } from 'node:stream';
import t from 'tap';
import { MigrationAbortedError, MigrationError, StreamFormatError } from '../lib/errors.js';
import { RamLoader } from '../lib/migration/ram-load.js';
import { RamSaver } from '../lib/migration/ram-save.js';
import { MigrationDestination, MigrationSource, ramSectionId } from '../lib/migration/runner.js';
import { mttyPair, runBoth } from './helpers/migration-sim.js';
import { ManualTracker, blankRam, smallRam } from './helpers/ram-streams.js';
import { hexOf, toHex } from './helpers/uapi-hex.js';

const contents = (ram: ReturnType<typeof blankRam>): string[] => ram.blocks.map((b) => toHex(b.bytes(0, b.length)));

t.test('RAM alone migrates over a pipe with a return path', async (t) => {
  const { ram, pcRam, vram } = smallRam();
  const tracker = new ManualTracker();
  using saver = new RamSaver({ ram, tracker });
  const target = blankRam();
  const rounds: number[] = [];
  const r = await runBoth({ devices: [], ram: saver }, { devices: [], ram: new RamLoader(target) }, (source) => {
    source.on('iteration', (i) => {
      rounds.push(i.ramPages);
      // A device write the tracker saw, on the last page.
      vram[0] = 0x5a;
      if (rounds.length === 1) tracker.mark(3);
    });
  });
  t.ok(r.source.ok && r.destination.ok, 'both sides complete');
  if (!r.source.ok || !r.destination.ok) return;
  t.same(contents(target), [toHex(pcRam), toHex(vram)], 'the destination RAM is the source RAM');
  t.same(rounds, [4], 'one round with every page (the threshold was 0 until the bandwidth was measured)');
  t.same(r.source.result.ram, { rounds: 1, syncs: 3, pages: 4, zeroPages: 1, stopCopyPages: 1, bytes: r.source.result.ram?.bytes });
  t.same(r.destination.result.ram, { pages: 4, zeroPages: 1, sizesMatched: true });
  t.notOk(tracker.tracking, 'tracking is off again');
});

t.test('a snapshot: RAM and a device to a stream without a return path, then restored', async (t) => {
  const pair = mttyPair();
  t.teardown(() => pair.close());
  const { ram, pcRam, vram } = smallRam();
  using saver = new RamSaver({ ram, tracker: new ManualTracker() });
  const file = new PassThrough();
  const target = blankRam();
  const [saved, restored] = await Promise.all([
    new MigrationSource({ devices: [pair.src.migration], ram: saver, output: file }).run(),
    new MigrationDestination({ devices: [pair.dst.migration], ram: new RamLoader(target), input: file }).run(),
  ]);
  t.same([saved.ram?.pages, saved.ram?.zeroPages], [3, 1]);
  t.same([restored.ram?.pages, restored.ram?.zeroPages], [3, 1]);
  t.same(contents(target), [toHex(pcRam), toHex(vram)]);
  t.ok(restored.deviceBytes > 0, 'and the device state');
});

t.test('the "ram" section leads, with the id after the devices\' (never 0)', async (t) => {
  const { ram } = smallRam();
  using saver = new RamSaver({ ram, tracker: new ManualTracker() });
  const pair = mttyPair();
  t.teardown(() => pair.close());
  const file = new PassThrough();
  const chunks: Buffer[] = [];
  file.on('data', (c: Buffer) => chunks.push(c));
  await new MigrationSource({ devices: [pair.src.migration], ram: saver, output: file }).run();
  const stream = Buffer.concat(chunks);
  t.equal(ramSectionId(1), 2);
  t.equal(toHex(stream.subarray(0, 25)), hexOf('5145564d 00000003', '01 00000002 03 72616d 00000000 00000004'), 'QEVM, then START "ram" (section 2) instance 0 version 4');
});

t.test('a destination without RAM refuses the "ram" section; the source resumes with tracking off', async (t) => {
  const { ram } = smallRam();
  const tracker = new ManualTracker();
  using saver = new RamSaver({ ram, tracker });
  const r = await runBoth({ devices: [], ram: saver }, { devices: [] });
  t.match(r.destination, { ok: false, error: { code: 'ERR_VFIO_STREAM_FORMAT', message: /unknown device "ram" instance 0 version 4/ } });
  t.match(r.source, { ok: false, error: { reason: 'peer-failed' } });
  t.notOk(tracker.tracking);
});

t.test('a destination with RAM needs the stream to fill it', async (t) => {
  const r = await runBoth({ devices: [] }, { devices: [], ram: new RamLoader(blankRam()) });
  t.ok(!r.destination.ok && r.destination.error instanceof MigrationError, 'the load fails');
  t.match(r.destination, { ok: false, error: { reason: 'incomplete', message: /no complete guest RAM/ } });
  t.notOk(r.source.ok, 'and the source is told');
});

t.test('an abort stops the tracking setup started', async (t) => {
  const { ram } = smallRam();
  const tracker = new ManualTracker();
  using saver = new RamSaver({ ram, tracker });
  const abort = new AbortController();
  const r = await runBoth({ devices: [], ram: saver, signal: abort.signal, bandwidth: 1 }, { devices: [], ram: new RamLoader(blankRam()) }, (source) => {
    source.on('iteration', () => {
      tracker.mark(0);
      abort.abort(new Error('operator'));
    });
  });
  t.ok(!r.source.ok && r.source.error instanceof MigrationAbortedError, 'the source aborted');
  t.ok(!r.destination.ok && r.destination.error instanceof StreamFormatError, 'the destination saw a truncated stream');
  t.notOk(tracker.tracking, 'tracking is off');
});
