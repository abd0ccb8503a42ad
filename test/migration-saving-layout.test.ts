/**
 * The saving layout (vfio-ts's opt-in extension, the shape of Alex
 * Williamson's SPARSE_MMAP_SAVING) through the unchanged hooks and runner:
 * a device that must trap its BAR while saving migrates, its trapped writes
 * travel as dirty pages, the direct mappings come back after a completed
 * and after a cancelled migration, the device refuses a saving transition
 * while a stale mapping is left (driven raw, bypassing the library), and
 * the library's own order never triggers that refusal.
 */
import { PassThrough } from 'node:stream';
import t from 'tap';
import { MappingRevokedError, VfioSystemError } from '../lib/errors.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { MigrationFile } from '../lib/migration/v2-driver.js';
import {
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
} from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_FEATURE } from '../lib/vfio/uapi/ioctls.js';
import { dataView, decode, encode } from '../lib/vfio/uapi/layout.js';
import { vfio_device_feature_mig_state } from '../lib/vfio/uapi/structs.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import { PROT_READ, PROT_WRITE } from '../lib/sys/sys.js';
import { expectErrno, thrown } from './helpers/expect.js';
import { runBoth } from './helpers/migration-sim.js';
import { STATE_SIZE, trapBarPair } from './helpers/sim-trap-bar.js';

const PAGE = 4096;
const STATE_AREA = `0x0+0x${STATE_SIZE.toString(16)}`;

/** MIG_DEVICE_STATE SET straight through the device fd, bypassing the driver and its layout switch. */
function rawSet(device: VfioDevice, state: number): number {
  const p = encode(vfio_device_feature_mig_state, { device_state: state, data_fd: -1 });
  return decode(vfio_device_feature_mig_state, device.featureSet(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, p)).data_fd;
}

function u32At(bytes: Uint8Array): number {
  return dataView(bytes).getUint32(0, true);
}

t.test('a device with a saving layout migrates through the runner; trapped writes arrive as dirty pages', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  t.same(bar.savingLayout, [{ offset: STATE_SIZE, size: PAGE }], 'the saving layout keeps the doorbell page only');
  const [state, doorbell] = bar.mmap();
  if (state === undefined || doorbell === undefined) throw new Error('BAR0 has two areas');
  state.write32(0x10, 0x11111111);
  doorbell.write32(0, 0xd00d);
  t.equal(p.src.sim.trappedWrites, 0, 'before saving, guest writes go straight to the mapping');
  // The destination maps its BAR too: RESUMING is no saving state, so it keeps its normal layout.
  const dstBar = p.dst.device.region(0);
  const [dstState] = dstBar.mmap();

  p.kernel.startTrace();
  const wire = new PassThrough();
  const source = new MigrationSource({ devices: [p.src.migration], output: wire, bandwidth: 1 << 20, downtimeLimitMs: 10, idleWaitMs: 1 });
  const written: { at: number; value: number }[] = [];
  source.on('iteration', (i) => {
    if (i.iteration > 3) return;
    if (i.iteration === 1) {
      t.equal(bar.layoutMode, 'saving');
      t.type(thrown(() => state.read32(0)), MappingRevokedError, 'the stale view of the state area raises');
      t.equal(doorbell.read32(0), 0xd00d, 'the doorbell area was kept, same object');
      t.same(
        bar.areas.map((a) => a.offset),
        [STATE_SIZE],
      );
      t.equal(dstBar.areas.length, 2, 'the resuming destination keeps its mappings');
    }
    const before = p.src.sim.trappedWrites;
    for (let k = 0; k < 4; k++) {
      const at = ((i.iteration * 4 + k) % 16) * PAGE + 8 * i.iteration;
      const value = (0xa0000000 + i.iteration * 16 + k) >>> 0;
      bar.write32(at, value);
      written.push({ at, value });
    }
    t.equal(p.src.sim.trappedWrites, before + 4, 'each write went through pwrite');
    t.ok(p.src.migration.driver.precopyInfo().dirtyBytes >= 4 * (8 + PAGE), 'the device counts the pages as dirty');
  });
  const destination = new MigrationDestination({ devices: [p.dst.migration], input: wire });
  const [out, into] = await Promise.all([source.run(), destination.run()]);
  const trace = p.kernel.stopTrace();
  t.ok(out.iterations >= 3, `${out.iterations} precopy rounds`);
  t.ok(into.started);
  t.equal(p.dst.sim.checksum(), p.src.sim.checksum(), 'the destination state equals the source state');
  for (const w of written) t.equal(u32At(p.dst.sim.readState(w.at, 4)), w.value, `the trapped write at 0x${w.at.toString(16)} arrived`);
  t.equal(u32At(p.dst.sim.readState(0x10, 4)), 0x11111111, 'the direct write before saving arrived with the initial pass');
  t.equal(dstState?.read32(written[0]?.at ?? 0), written[0]?.value, "the destination's mapping shows the migrated state");

  // Completed: the source is in STOP, out of the saving states, with its direct mappings back.
  t.equal(p.src.migration.state, VFIO_DEVICE_STATE_STOP);
  t.equal(bar.layoutMode, 'normal');
  t.same(
    bar.areas.map((a) => [a.offset, a.size]),
    [
      [0, STATE_SIZE],
      [STATE_SIZE, PAGE],
    ],
  );
  t.not(bar.areas[0], state, 'the state area is a new mapping');
  t.equal(bar.areas[1], doorbell, 'the doorbell area never went away');
  t.type(thrown(() => state.write32(0, 1)), MappingRevokedError, 'the old view stays revoked');
  const trapped = p.src.sim.trappedWrites;
  bar.write32(0x20, 5);
  t.equal(p.src.sim.trappedWrites, trapped, 'writes go straight to the mapping again');

  t.same(
    p.src.sim.events,
    [
      `map ${STATE_AREA}`,
      `map 0x${STATE_SIZE.toString(16)}+0x1000`,
      `unmap ${STATE_AREA}`,
      'enter RUNNING>PRE_COPY: 0 conflicting',
      `map ${STATE_AREA}`,
    ],
    'the state area is unmapped before the saving transition and mapped again after STOP_COPY -> STOP',
  );
  t.notOk(
    trace.some((r) => r.result === 'EBUSY'),
    'no call of the migration was refused with EBUSY',
  );
  const sets = trace.filter((r) => r.op === 'VFIO_DEVICE_FEATURE' && r.label === p.src.sim.name);
  const lastSet = sets.at(-1)?.seq ?? 0;
  const remap = trace.filter((r) => r.syscall === 'mmap' && r.label === p.src.sim.name);
  t.equal(remap.length, 1, 'one mmap on the source during the migration');
  t.ok((remap[0]?.seq ?? 0) > lastSet, 'after the last SET (STOP_COPY -> STOP)');
});

t.test('the direct mappings come back after a cancelled migration', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  const [state] = bar.mmap();
  const ac = new AbortController();
  const { source, destination } = await runBoth(
    { devices: [p.src.migration], bandwidth: 1, signal: ac.signal },
    { devices: [p.dst.migration] },
    (s) => {
      s.on('iteration', (i) => {
        t.equal(bar.areas.length, 1, `round ${i.iteration}: only the doorbell is mapped`);
        bar.write32(i.iteration * PAGE, i.iteration);
        if (i.iteration === 2) ac.abort(new Error('operator cancelled'));
      });
    },
  );
  t.match(source, { ok: false, error: { code: 'ERR_VFIO_MIGRATION_ABORTED' } });
  t.match(destination, { ok: false });
  t.equal(p.src.migration.state, VFIO_DEVICE_STATE_RUNNING, 'the source runs');
  t.equal(bar.layoutMode, 'normal');
  t.equal(bar.areas.length, 2, 'both areas are mapped again');
  t.type(thrown(() => state?.read32(0)), MappingRevokedError);
  t.equal(bar.read32(2 * PAGE), 2, "the trapped writes are in the source's state");
  t.equal(p.src.sim.conflictingMappings, 1, 'the state area is mapped again (it would conflict with saving)');
  t.same(p.src.sim.events.slice(-3), [`unmap ${STATE_AREA}`, 'enter RUNNING>PRE_COPY: 0 conflicting', `map ${STATE_AREA}`]);

  // And the next migration switches again.
  const again = await runBoth({ devices: [p.src.migration], bandwidth: 1 << 30 }, { devices: [p.dst.migration] });
  t.ok(again.source.ok && again.destination.ok, 'a second migration completes');
  t.equal(p.dst.sim.checksum(), p.src.sim.checksum());
  t.equal(bar.areas.length, 2);
});

t.test('the device refuses a saving transition while a stale mapping is left (raw, bypassing the library)', async (t) => {
  using p = trapBarPair();
  const dev = p.src.device;
  const bar = dev.region(0);
  bar.mmap();
  t.equal(p.src.sim.conflictingMappings, 1);
  expectErrno(t, () => rawSet(dev, VFIO_DEVICE_STATE_PRE_COPY), 'EBUSY', 'RUNNING -> PRE_COPY with the state area mapped');
  expectErrno(t, () => rawSet(dev, VFIO_DEVICE_STATE_STOP_COPY), 'EBUSY', 'RUNNING -> STOP -> STOP_COPY stops at the saving arc');
  t.equal(p.src.migration.driver.queryState(), VFIO_DEVICE_STATE_STOP, 'the walk stopped before the refused arc');
  rawSet(dev, VFIO_DEVICE_STATE_RUNNING);
  t.same(p.src.sim.events.slice(-2), ['enter RUNNING>PRE_COPY: 1 conflicting', 'enter STOP>STOP_COPY: 1 conflicting']);

  // The library's primitive alone makes the same raw SET pass.
  bar.relayout('saving');
  t.equal(p.src.sim.conflictingMappings, 0);
  const fd = rawSet(dev, VFIO_DEVICE_STATE_PRE_COPY);
  t.ok(fd >= 0, 'PRE_COPY accepted, with a data fd');
  p.kernel.close(fd);
  // While saving, the device refuses to map the trapped area again.
  expectErrno(t, () => p.kernel.mmap(dev.fd, PAGE, PROT_READ | PROT_WRITE, 0), 'EINVAL', 'mmap of the state while saving');
  const doorbell = p.kernel.mmap(dev.fd, PAGE, PROT_READ | PROT_WRITE, STATE_SIZE);
  doorbell.unmap();
  rawSet(dev, VFIO_DEVICE_STATE_RUNNING);
  bar.relayout('normal');
  t.equal(bar.areas.length, 2);

  // Through the driver, the same device moves without any refusal, in both directions.
  const driver = p.src.migration.driver;
  t.type(driver, MigrationFile);
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  t.equal(bar.areas.length, 1);
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  driver.setState(VFIO_DEVICE_STATE_STOP);
  t.equal(bar.areas.length, 2);
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  t.equal(bar.areas.length, 1, 'STOP -> STOP_COPY (a device without pre-copy would start here) switches too');
  driver.reset();
  t.equal(bar.areas.length, 2, 'a reset brings the normal layout back');
});

t.test('failures around the switch', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  bar.mmap();
  const driver = p.src.migration.driver;

  // The SET into PRE_COPY fails: the device did not move, so the normal layout comes back at once.
  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_FEATURE, label: p.src.sim.name, nth: 1, errno: 'EIO' });
  t.match(thrown(() => driver.setState(VFIO_DEVICE_STATE_PRE_COPY)), { code: 'EIO' });
  p.kernel.faults.clear();
  t.equal(driver.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.layoutMode, 'normal');
  t.equal(bar.areas.length, 2);

  // The normal layout cannot be mapped again after leaving PRE_COPY: the state change stands, the error is reported,
  // the region keeps fewer mappings (accesses are trapped), and the next SET retries.
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  p.kernel.faults.inject({ syscall: 'mmap', label: p.src.sim.name, nth: 1, errno: 'ENOMEM' });
  const e = thrown(() => driver.setState(VFIO_DEVICE_STATE_RUNNING));
  t.type(e, VfioSystemError);
  t.match(e, { code: 'ENOMEM', op: 'mmap region 0' });
  p.kernel.faults.clear();
  t.equal(driver.state, VFIO_DEVICE_STATE_RUNNING, 'the device left PRE_COPY');
  t.equal(bar.areas.length, 1, 'the state area stays trapped');
  const trapped = p.src.sim.trappedWrites;
  bar.write32(0, 7);
  t.equal(p.src.sim.trappedWrites, trapped + 1);
  driver.setState(VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.areas.length, 2, 'a SET to the current state retried the restore');

  // The SET fails and the restore fails too: the SET's error is the one reported; the next SET retries the restore.
  p.kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_FEATURE, label: p.src.sim.name, nth: 1, errno: 'EIO' });
  p.kernel.faults.inject({ syscall: 'mmap', label: p.src.sim.name, nth: 1, errno: 'ENOMEM' });
  t.match(thrown(() => driver.setState(VFIO_DEVICE_STATE_PRE_COPY)), { code: 'EIO' });
  p.kernel.faults.clear();
  t.equal(driver.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.areas.length, 1);
  driver.setState(VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.areas.length, 2);

  // The switch into the saving layout itself fails: the device is not asked, and the normal layout comes back.
  // (It can only fail where the saving layout has an area the normal mapping lacks: a doorbell that failed to map.)
  p.src.sim.setBarLayout([{ offset: 0, size: STATE_SIZE }]);
  bar.refresh();
  p.src.sim.setBarLayout([
    { offset: 0, size: STATE_SIZE },
    { offset: STATE_SIZE, size: PAGE },
  ]);
  p.kernel.faults.inject({ syscall: 'mmap', label: p.src.sim.name, nth: 1, errno: 'ENOMEM' });
  t.match(thrown(() => bar.refresh()), { code: 'ENOMEM' });
  t.same(
    bar.areas.map((a) => a.offset),
    [0],
    'the doorbell is missing',
  );
  p.kernel.faults.inject({ syscall: 'mmap', label: p.src.sim.name, nth: 1, errno: 'ENOMEM' });
  t.match(thrown(() => driver.setState(VFIO_DEVICE_STATE_PRE_COPY)), { code: 'ENOMEM', op: 'mmap region 0' });
  p.kernel.faults.clear();
  t.equal(driver.queryState(), VFIO_DEVICE_STATE_RUNNING, 'no SET was made');
  t.equal(bar.layoutMode, 'normal');
  t.equal(bar.areas.length, 2, 'both areas mapped again');

  // A region its user closed is no longer switched (nothing can be mapped through it).
  p.src.device.region(7).close();
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  driver.setState(VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.areas.length, 2);

});

t.test('a driver opened on a device already saving: it narrows before the next saving state and restores on leaving', async (t) => {
  using p = trapBarPair();
  const dev = p.src.device;
  const bar = dev.region(0);
  bar.mmap();
  const first = p.src.migration.driver;
  first.setState(VFIO_DEVICE_STATE_PRE_COPY);
  t.equal(bar.layoutMode, 'saving');

  // A new driver (the first one's user closed it mid-migration and opened another): it switched nothing itself.
  const leaving = MigrationFile.open(dev);
  t.equal(leaving.state, VFIO_DEVICE_STATE_PRE_COPY);
  leaving.setState(VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.layoutMode, 'normal', 'leaving the saving states restores what the first driver narrowed');
  t.equal(bar.areas.length, 2);

  // Left in PRE_COPY with the region in its normal mode (a widening the device refused): STOP_COPY narrows it first.
  leaving.setState(VFIO_DEVICE_STATE_PRE_COPY);
  t.match(thrown(() => bar.relayout('normal')), { code: 'EINVAL' });
  t.equal(bar.layoutMode, 'normal');
  const entering = MigrationFile.open(dev);
  entering.setState(VFIO_DEVICE_STATE_STOP_COPY);
  t.equal(bar.layoutMode, 'saving', 'PRE_COPY -> STOP_COPY switched the region');
  entering.setState(VFIO_DEVICE_STATE_STOP);
  t.equal(bar.layoutMode, 'normal');
  t.equal(bar.areas.length, 2, 'and STOP_COPY -> STOP maps the state area again');
  entering.close();
  leaving.close();
});

t.test('the handshake: a device that needs the remap IRQ refuses saving until it is enabled', async (t) => {
  using p = trapBarPair({ requireRemapIrq: true });
  const dev = p.src.device;
  expectErrno(t, () => rawSet(dev, VFIO_DEVICE_STATE_PRE_COPY), 'EPERM', 'an old user that never enabled it fails cleanly');
  t.equal(p.src.migration.driver.queryState(), VFIO_DEVICE_STATE_RUNNING);
  t.notOk(p.src.sim.remapIrq?.enabled);
  const { source, destination } = await runBoth({ devices: [p.src.migration], bandwidth: 1 << 30 }, { devices: [p.dst.migration] });
  t.ok(source.ok && destination.ok, 'the library enables it before saving, and the migration completes');
  t.ok(p.src.sim.remapIrq?.enabled, 'and leaves it enabled');
  t.equal(p.dst.sim.checksum(), p.src.sim.checksum());
});
