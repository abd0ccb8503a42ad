/**
 * `npm run bench`: every benchmark in turn. Each reports ratios against a
 * baseline measured in the same run (C compiled here, or a plain copy over
 * the same socket), prints a table and writes `bench/out/<name>.json`.
 *
 *   npx tsx bench/run.ts [name...]     (names: ioctl, bitmap, migration)
 */
import { run as bitmap } from './bitmap.js';
import { run as ioctl } from './ioctl.js';
import { run as migration } from './migration.js';

const benches: Record<string, () => unknown> = {
  ioctl: () => ioctl(),
  bitmap: () => bitmap(),
  migration: () => migration(),
};

const wanted = process.argv.slice(2);
for (const name of wanted.length > 0 ? wanted : Object.keys(benches)) {
  const bench = benches[name];
  if (bench === undefined) throw new Error(`unknown benchmark ${name}; known: ${Object.keys(benches).join(', ')}`);
  console.log(`\n== ${name}`);
  await bench();
}
