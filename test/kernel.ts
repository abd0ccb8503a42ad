/**
 * `npm run test:kernel`: the contract suites on the real kernel, in one
 * process (the test guest runs code 50-100x slower than the host, so a
 * process per file would cost minutes). Run it inside `../shared/vm/run`.
 * The fresh-mdev quirk test must come first: it needs an mdev nobody used.
 */
import t from 'tap';

if (process.env.VFIO_BACKEND !== 'kernel') throw new Error('test/kernel.ts runs with VFIO_BACKEND=kernel inside ../shared/vm/run');
// tap's default 30 s is for one file; every suite runs in this one process, in a slow guest.
t.setTimeout(15 * 60_000);

await import('./contract-mtty-fresh.test.js');
await import('./contract-mtty.test.js');
await import('./contract-dirty-mtty.test.js');
await import('./contract-dirty-edu.test.js');
await import('./contract-edu.test.js');
await import('./contract-migration.test.js');
await import('./contract-migration-streams.test.js');
