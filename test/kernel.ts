/**
 * `npm run test:kernel`: the contract suites on the real kernel, in one
 * process (the test guest runs code 50-100x slower than the host, so a
 * process per file would cost minutes). Run it inside `../shared/vm/run`.
 * The fresh-mdev quirk test must come first: it needs an mdev nobody used.
 */
if (process.env.VFIO_BACKEND !== 'kernel') throw new Error('test/kernel.ts runs with VFIO_BACKEND=kernel inside ../shared/vm/run');

await import('./contract-mtty-fresh.test.js');
await import('./contract-mtty.test.js');
