/**
 * The saving layout under the v1 driver: a v1 device whose BAR0 may be
 * mmapped except while SAVING migrates through the unchanged runner (data
 * section by mmap and by pread/pwrite), the guest's writes during pre-copy
 * are trapped and reach the destination as dirty pages, the mapping comes
 * back after a completed and after a cancelled migration, and the vendor
 * refuses SAVING (EBUSY) while a mapping is left, which only a raw write
 * that bypasses the library can cause.
 */
import { PassThrough } from 'node:stream';
import t from 'tap';
import { MappingRevokedError, MigrationV1TransitionError } from '../lib/errors.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { V1_PRE_COPY, V1_RUNNING, V1_STOP } from '../lib/migration/v1-state.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { VFIO_DEVICE_STATE_PRE_COPY, VFIO_DEVICE_STATE_RUNNING } from '../lib/vfio/uapi/constants.js';
import { PROT_READ } from '../lib/sys/sys.js';
import { errnoOf } from './helpers/sim-mtty.js';
import { runBoth } from './helpers/migration-sim.js';
import { rawV1, v1Pair } from './helpers/sim-v1.js';
import { thrown } from './helpers/expect.js';

const MEMORY = 64 * 1024;
const PAGE = 4096;
const idstr = '0000:00:05.0/vfio';

for (const dataPath of ['mmap', 'pread'] as const) {
  t.test(`a v1 device with a saving layout migrates live (${dataPath}); trapped writes arrive`, async (t) => {
    using p = v1Pair({ src: { savingLayout: true }, seed: 3 });
    const src = VfioMigration.open(p.srcDev, { idstr, v1: { dataPath } });
    const dst = VfioMigration.open(p.dstDev, { idstr, v1: { dataPath } });
    t.teardown(() => {
      src.close();
      dst.close();
    });
    const bar = p.srcDev.region(0);
    t.same(bar.savingLayout, [{ offset: MEMORY, size: PAGE }]);
    const [memory, doorbell] = bar.mmap();
    memory?.write32(0, 0xfeedface);
    t.same(p.src.readMemory(0, 4), Uint8Array.of(0xce, 0xfa, 0xed, 0xfe), 'the mapping is the memory itself');
    const wire = new PassThrough();
    const source = new MigrationSource({ devices: [src], output: wire, bandwidth: 1 << 20, downtimeLimitMs: 10, idleWaitMs: 1 });
    const written: { at: number; value: number }[] = [];
    source.on('iteration', (i) => {
      if (i.iteration > 3) return;
      t.equal(bar.areas.length, 1, 'saving: the memory is not mapped');
      t.equal(bar.areas[0], doorbell);
      for (let k = 0; k < 5; k++) {
        const at = (i.iteration * 5 + k) * 1024 + 4 * i.iteration;
        const value = (0xc0de0000 + i.iteration * 16 + k) >>> 0;
        bar.write32(at, value);
        written.push({ at, value });
      }
      t.ok(p.src.dirtyPages >= 5, 'the trapped writes dirtied pages');
    });
    const destination = new MigrationDestination({ devices: [dst], input: wire });
    const [out] = await Promise.all([source.run(), destination.run()]);
    t.ok(out.iterations >= 3);
    t.equal(p.dst.checksum(), p.src.checksum(), 'the device state checksum matches');
    for (const w of written) t.same(p.dst.readMemory(w.at, 4), p.src.readMemory(w.at, 4), `the write at ${w.at} arrived`);
    t.same(p.dst.readMemory(0, 4), Uint8Array.of(0xce, 0xfa, 0xed, 0xfe), 'the write through the mapping went with the first pass');
    t.equal(p.src.deviceState, V1_STOP);
    t.equal(bar.areas.length, 2, 'the memory is mapped again after SAVING was cleared');
    t.type(thrown(() => memory?.read32(0)), MappingRevokedError);
    t.equal(p.src.dataMappings, dataPath === 'mmap' ? 1 : 0, 'the data section mapping is a different region, untouched');
  });
}

t.test('a cancelled v1 migration restores the mapping; a raw SAVING write with a mapping left is refused', async (t) => {
  using p = v1Pair({ src: { savingLayout: true } });
  const src = VfioMigration.open(p.srcDev, { idstr });
  const dst = VfioMigration.open(p.dstDev, { idstr });
  t.teardown(() => {
    src.close();
    dst.close();
  });
  const bar = p.srcDev.region(0);
  bar.mmap();
  const raw = rawV1(p.kernel, p.srcDev.fd);
  t.equal(p.src.conflictingMappings, 1);
  t.equal(errnoOf(() => raw.setState(V1_PRE_COPY)), 'EBUSY', 'the vendor refuses SAVING while the memory is mapped');
  t.equal(raw.state(), V1_RUNNING);

  const ac = new AbortController();
  const { source } = await runBoth({ devices: [src], bandwidth: 1, signal: ac.signal }, { devices: [dst] }, (s) =>
    s.on('iteration', (i) => {
      bar.write32(i.iteration * PAGE, i.iteration);
      if (i.iteration === 2) ac.abort();
    }),
  );
  t.match(source, { ok: false, error: { code: 'ERR_VFIO_MIGRATION_ABORTED' } });
  t.equal(p.src.deviceState, V1_RUNNING);
  t.equal(bar.areas.length, 2, 'the memory is mapped again');
  t.equal(bar.read32(2 * PAGE), 2);

  // While SAVING the vendor refuses to map the memory, and the driver's own order never hits EBUSY.
  src.driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  t.equal(errnoOf(() => p.kernel.mmap(p.srcDev.fd, PAGE, PROT_READ, 0)), 'EINVAL');
  src.driver.setState(VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.areas.length, 2);

  // A stale mapping the library does not know about makes the driver's transition fail cleanly.
  const stale = p.kernel.mmap(p.srcDev.fd, PAGE, PROT_READ, PAGE);
  const e = thrown(() => src.driver.setState(VFIO_DEVICE_STATE_PRE_COPY));
  t.type(e, MigrationV1TransitionError);
  t.match(e, { recovery: 'none', cause: { code: 'EBUSY' } });
  t.equal(src.driver.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(bar.areas.length, 2, 'the normal layout is back after the refusal');
  stale.unmap();
});
