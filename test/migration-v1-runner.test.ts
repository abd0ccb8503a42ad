/**
 * The v1 driver under the unchanged hooks and runner: a live migration of a
 * simulated v1 device between two containers over a stream, with guest
 * writes during pre-copy, through the mmap path and through pread/pwrite.
 */
import { PassThrough } from 'node:stream';
import t from 'tap';
import { VfioMigration } from '../lib/migration/hooks.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { MigrationRegionDriver } from '../lib/migration/v1-driver.js';
import { MigrationFile } from '../lib/migration/v2-driver.js';
import { V1_RUNNING, V1_STOP } from '../lib/migration/v1-state.js';
import { guestWrites, v1Pair } from './helpers/sim-v1.js';

for (const dataPath of ['mmap', 'pread'] as const) {
  t.test(`a live v1 migration through the runner (${dataPath})`, async (t) => {
    using p = v1Pair({ seed: 7 });
    const idstr = '0000:00:05.0/vfio';
    const src = VfioMigration.open(p.srcDev, { idstr, v1: { dataPath } });
    const dst = VfioMigration.open(p.dstDev, { idstr, v1: { dataPath } });
    // The device offers no v2 feature, so its v1 region picked the driver.
    t.type(src.driver, MigrationRegionDriver);
    t.notOk(src.driver instanceof MigrationFile);
    const initial = p.src.checksum();
    const wire = new PassThrough();
    let vcpusStopped = false;
    const source = new MigrationSource({
      devices: [src],
      output: wire,
      bandwidth: 1 << 20,
      downtimeLimitMs: 10,
      idleWaitMs: 1,
      stopVcpus: () => {
        vcpusStopped = true;
      },
    });
    let rounds = 0;
    // The guest keeps writing during the first rounds, then calms down so the migration converges.
    source.on('iteration', () => {
      if (++rounds <= 3) guestWrites(p.src, rounds, 20);
    });
    const destination = new MigrationDestination({ devices: [dst], input: wire });
    const [out, into] = await Promise.all([source.run(), destination.run()]);
    t.ok(vcpusStopped);
    t.ok(out.iterations >= 2, `${out.iterations} precopy rounds`);
    t.not(p.src.checksum(), initial, 'the guest wrote during pre-copy');
    t.ok(out.precopyBytes > 0 && out.stopCopyBytes > 0, 'data moved in both phases');
    t.ok(into.started);
    t.equal(p.dst.checksum(), p.src.checksum(), 'the device state checksum matches');
    t.equal(p.src.deviceState, V1_STOP, 'the source stopped');
    t.equal(p.dst.deviceState, V1_RUNNING, 'the destination runs');
    t.same(
      p.dst.loadedTransactions.map((x) => x.dataSize),
      p.src.savedTransactions.map((x) => x.dataSize),
      'every transaction arrived whole',
    );
    t.equal(p.src.dataMappings, dataPath === 'mmap' ? 1 : 0);
    src.close();
    dst.close();
    t.equal(p.src.dataMappings + p.dst.dataMappings, 0);
  });
}
