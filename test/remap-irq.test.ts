/**
 * The remap IRQ (vfio-ts's opt-in extension): discovery through the
 * extended GET_IRQ_INFO, the handshake, the round trip (a device re-lays a
 * region out, signals its bitmap of region indexes, the library re-reads
 * and re-maps, then acks with ACTION_UNMASK), with no migration running and
 * while saving, and what the library does with a bad signal.
 */
import { once } from 'node:events';
import t from 'tap';
import { MappingRevokedError, UapiFormatError, type VfioError } from '../lib/errors.js';
import { VFIO_DEVICE_STATE_PRE_COPY } from '../lib/vfio/uapi/constants.js';
import { TRAP_BAR_REMAP_IRQ_INDEX } from '../lib/sim/trap-bar-device.js';
import { RemapIrq, queryIrqInfoExt } from '../lib/vfio/remap-irq.js';
import { VFIO_DEVICE_GET_REGION_INFO, VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { isRemapIrq } from '../lib/vfio/uapi/extensions.js';
import { thrown } from './helpers/expect.js';
import { nextMunmapFails } from './helpers/failing-munmap.js';
import { MemorySink } from './helpers/migration-sim.js';
import { STATE_SIZE, trapBarPair } from './helpers/sim-trap-bar.js';

const PAGE = 4096;
const DOORBELL = { offset: STATE_SIZE, size: PAGE };

/** The next `remap` event's regions. */
async function nextRemap(remap: RemapIrq): Promise<readonly number[]> {
  const [regions] = (await once(remap, 'remap')) as [readonly number[]];
  return regions;
}

t.test('discovery: only indexes past the standard five are asked', async (t) => {
  using p = trapBarPair();
  t.equal(p.src.device.info.numIrqs, 6);
  p.kernel.startTrace();
  t.equal(RemapIrq.find(p.src.device), TRAP_BAR_REMAP_IRQ_INDEX);
  const calls = p.kernel.stopTrace();
  t.same(
    calls.map((c) => [c.op, c.arg?.byteLength]),
    [
      ['VFIO_DEVICE_GET_IRQ_INFO', 24],
      ['VFIO_DEVICE_GET_IRQ_INFO', 40],
    ],
    'index 5 only: the 24-byte struct, then again with the argsz the device asked for',
  );
  const info = queryIrqInfoExt(p.src.device, TRAP_BAR_REMAP_IRQ_INDEX);
  t.ok(isRemapIrq(info));
  t.equal(info.count, 1);
  // A 6.12 user asks with 16 bytes and sees an ordinary IRQ.
  t.same(p.src.device.irqInfo(TRAP_BAR_REMAP_IRQ_INDEX).count, 1);
  t.notOk(isRemapIrq(queryIrqInfoExt(p.src.device, 0)), 'a standard index has no capability');

  using q = trapBarPair({ remapIrq: false });
  q.kernel.startTrace();
  t.equal(RemapIrq.find(q.src.device), undefined);
  t.equal(RemapIrq.enable(q.src.device), undefined);
  t.same(q.kernel.stopTrace(), [], 'five IRQs: nothing to ask');
});

t.test('the round trip with no migration running', async (t) => {
  using p = trapBarPair();
  const sim = p.src.sim;
  const remap = RemapIrq.enable(p.src.device);
  if (remap === undefined) throw new Error('the device has a remap IRQ');
  t.equal(RemapIrq.enable(p.src.device), remap, 'enabling twice gives the same object');
  t.equal(remap.index, TRAP_BAR_REMAP_IRQ_INDEX);
  t.ok(sim.remapIrq?.enabled, 'the device saw the handshake');
  const bar = p.src.device.region(0);
  const [state, doorbell] = bar.mmap();
  sim.events.length = 0;

  // The device wants the second half of its state trapped from now on.
  const half = { offset: 0, size: STATE_SIZE / 2 };
  sim.setBarLayout([half, DOORBELL]);
  t.equal(sim.remapIrq?.masked, true, 'automasked until the ack');
  t.same(await nextRemap(remap), [0], 'region 0 was re-read (a region index, not a BAR number)');
  t.same(
    bar.areas.map((a) => [a.offset, a.size]),
    [
      [0, STATE_SIZE / 2],
      [STATE_SIZE, PAGE],
    ],
  );
  t.type(thrown(() => state?.read32(0)), MappingRevokedError, 'the old state area is revoked');
  t.equal(bar.areas[1], doorbell, 'the unchanged doorbell area is the same object');
  t.same(sim.events, [`layout: 0x0+0x${(STATE_SIZE / 2).toString(16)} 0x${STATE_SIZE.toString(16)}+0x1000`, `unmap 0x0+0x${STATE_SIZE.toString(16)}`, `map 0x0+0x${(STATE_SIZE / 2).toString(16)}`, 'ack: 0 mappings outside the layout']);
  t.equal(sim.remapIrq?.acks, 1);
  t.equal(sim.remapIrq?.masked, false, 'the ack unmasked it');
  const trapped = sim.trappedWrites;
  bar.write32(STATE_SIZE - 4, 1);
  bar.write32(0, 1);
  t.equal(sim.trappedWrites, trapped + 1, 'only the second half is trapped');

  // Two changes before the user runs: the second waits for the ack, so the counter never holds two bitmaps.
  sim.setBarLayout([DOORBELL]);
  sim.setBarLayout([{ offset: 0, size: STATE_SIZE }, DOORBELL]);
  t.equal(sim.remapIrq?.pending, 1n, 'the second change is pending');
  t.same(await nextRemap(remap), [0]);
  t.same(await nextRemap(remap), [0], 'sent at the ack');
  t.equal(sim.remapIrq?.signals, 3);
  t.same(sim.barLayout, [{ offset: 0, size: STATE_SIZE }, DOORBELL]);
  t.equal(bar.areas.length, 2);
  t.equal(bar.areas[0]?.size, STATE_SIZE, 'the last layout is in force');

  remap.close();
  remap.close();
  t.notOk(remap.enabled);
  t.notOk(sim.remapIrq?.enabled, 'closing disabled the IRQ in the device');
  sim.setBarLayout([DOORBELL]);
  t.equal(sim.remapIrq?.signals, 3, 'a disabled IRQ sends nothing');
  {
    using again = RemapIrq.enable(p.src.device);
    t.not(again, remap, 'a new one after close');
    t.ok(sim.remapIrq?.enabled);
  }
  t.notOk(sim.remapIrq?.enabled, 'disposed');
});

t.test('a signal while saving re-maps in the saving layout', async (t) => {
  using p = trapBarPair();
  const sim = p.src.sim;
  const m = p.src.migration;
  const bar = p.src.device.region(0);
  bar.mmap();
  await m.saveSetup(new MemorySink());
  t.equal(m.state, VFIO_DEVICE_STATE_PRE_COPY);
  const remap = RemapIrq.enable(p.src.device);
  if (remap === undefined) throw new Error('the saving transition enabled it');
  t.equal(bar.areas.length, 1, 'saving: the doorbell only');
  // The device drops the doorbell page from its normal layout, so its saving layout is empty now.
  sim.setBarLayout([{ offset: 0, size: STATE_SIZE }]);
  t.same(await nextRemap(remap), [0]);
  t.equal(bar.layoutMode, 'saving');
  t.same(bar.areas, [], 'nothing is mapped while saving');
  t.ok(bar.mapped, 'the region still follows its layouts');
  t.same(bar.savingLayout, []);
  m.abortSave();
  t.same(
    bar.areas.map((a) => [a.offset, a.size]),
    [[0, STATE_SIZE]],
    'back to the new normal layout',
  );
  t.equal(sim.conflictingMappings, 1);
});

t.test('while migrating, what a signal could not do reaches the hooks\' warning event', async (t) => {
  using p = trapBarPair();
  const sim = p.src.sim;
  const m = p.src.migration;
  const warnings: VfioError[] = [];
  m.on('warning', (e) => warnings.push(e));
  await m.saveSetup(new MemorySink());
  const remap = RemapIrq.enable(p.src.device);
  if (remap === undefined || sim.remapIrq === undefined) throw new Error('the saving transition enabled it');
  sim.remapIrq.raise((1n << 20n) | 1n);
  t.same(await nextRemap(remap), [0]);
  t.equal(warnings.length, 1);
  t.type(warnings[0], UapiFormatError);
  t.match(warnings[0]?.message, /names regions the device does not have/);
  m.abortSave();
  // A second saving session follows the same remap IRQ: one forwarder, not two.
  await m.saveSetup(new MemorySink());
  sim.remapIrq.raise(1n << 20n);
  await nextRemap(remap);
  t.equal(warnings.length, 2, 'each warning once');
  m.abortSave();
});

t.test('bad signals: stray bits, a region that cannot be re-read', async (t) => {
  using p = trapBarPair();
  const sim = p.src.sim;
  const remap = RemapIrq.enable(p.src.device);
  if (remap === undefined || sim.remapIrq === undefined) throw new Error('the device has a remap IRQ');
  const warnings: VfioError[] = [];
  remap.on('warning', (e) => warnings.push(e));
  const bar = p.src.device.region(0);
  bar.mmap();

  // Region 20 does not exist (9 regions): the bitmap names it anyway.
  sim.remapIrq.raise((1n << 20n) | 1n);
  t.same(await nextRemap(remap), [0]);
  t.equal(warnings.length, 1);
  t.type(warnings[0], UapiFormatError);
  t.match(warnings[0]?.message, /names regions the device does not have \(0x100000\)/);
  t.equal(sim.remapIrq.acks, 1, 'acked anyway');
  t.throws(() => sim.remapIrq?.raise(1n << 63n), RangeError, 'bit 63 is never sent');

  // The re-read fails: the region is unmapped whole, so the ack claims nothing it should not.
  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_GET_REGION_INFO, label: sim.name, nth: 1, errno: 'EIO' });
  sim.setBarLayout([DOORBELL]);
  t.same(await nextRemap(remap), [0]);
  t.match(warnings[1], { code: 'EIO', op: 'VFIO_DEVICE_GET_REGION_INFO' });
  t.notOk(bar.mapped);
  t.equal(sim.barMappings, 0);
  t.equal(sim.remapIrq.acks, 2);

  // A failed ack is reported too.
  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_SET_IRQS, label: sim.name, nth: 1, errno: 'EIO' });
  sim.setBarLayout([DOORBELL]);
  t.same(await nextRemap(remap), [0]);
  t.match(warnings[2], { code: 'EIO', op: 'VFIO_DEVICE_SET_IRQS' });
  t.equal(sim.remapIrq.acks, 2);
  t.ok(sim.remapIrq.masked, 'the device still waits for its ack');
});

t.test('a region that cannot be re-read and whose munmap fails too: both reported, then acked', async (t) => {
  using p = trapBarPair();
  const sim = p.src.sim;
  const remap = RemapIrq.enable(p.src.device);
  if (remap === undefined || sim.remapIrq === undefined) throw new Error('the device has a remap IRQ');
  const warnings: VfioError[] = [];
  remap.on('warning', (e) => warnings.push(e));
  // The first area mapped (the state area) keeps its mapping when unmapped, as after a failed munmap(2).
  nextMunmapFails(p.kernel);
  const bar = p.src.device.region(0);
  const [state, doorbell] = bar.mmap();

  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_GET_REGION_INFO, label: sim.name, nth: 1, errno: 'EIO' });
  sim.setBarLayout([DOORBELL]);
  t.same(await nextRemap(remap), [0], 'handled, not thrown into the event loop');
  t.match(warnings, [{ code: 'EIO', op: 'VFIO_DEVICE_GET_REGION_INFO' }, { code: 'EIO', syscall: 'munmap' }]);
  t.notOk(bar.mapped);
  t.type(thrown(() => state?.read32(0)), MappingRevokedError);
  t.type(thrown(() => doorbell?.read32(0)), MappingRevokedError, 'the other area was unmapped all the same');
  t.equal(sim.remapIrq.acks, 1);
});

t.test('closed while handling a signal: the rest is not re-mapped, and nothing is acked', async (t) => {
  using p = trapBarPair();
  const sim = p.src.sim;
  const remap = RemapIrq.enable(p.src.device);
  if (remap === undefined || sim.remapIrq === undefined) throw new Error('the device has a remap IRQ');
  const bar = p.src.device.region(0);
  bar.mmap();
  let remaps = 0;
  remap.on('remap', () => remaps++);
  // The stray bit's warning comes first; its listener closes the IRQ before region 0 is handled.
  remap.on('warning', () => remap.close());
  p.kernel.startTrace();
  sim.remapIrq.raise((1n << 20n) | 1n);
  await once(remap, 'close');
  const ops = p.kernel
    .stopTrace()
    .filter((c) => c.syscall === 'ioctl')
    .map((c) => c.op);
  t.same(ops, ['VFIO_DEVICE_SET_IRQS'], 'the disable only: no re-read, no ack');
  t.equal(sim.remapIrq.acks, 0);
  t.notOk(sim.remapIrq.enabled);
  t.equal(remaps, 0, 'no remap event for a signal left unhandled');
  t.equal(bar.areas.length, 2, 'the mappings were not touched');
});

t.test('closing the device ends the remap IRQ', async (t) => {
  using p = trapBarPair();
  const remap = RemapIrq.enable(p.src.device);
  let closed = 0;
  remap?.on('close', () => closed++);
  p.src.migration.close();
  p.src.device.close();
  t.equal(closed, 1);
  t.notOk(remap?.enabled);
  t.notOk(p.src.sim.remapIrq?.enabled, 'the last close disabled it in the device');
  remap?.close();
});
