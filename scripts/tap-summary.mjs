#!/usr/bin/env node
// Sums the "# { total: N, pass: N, fail: N, skip: N }" lines tap prints at the
// end of each run and prints the one-line summary CI reads. A run whose exit
// status was non-zero counts as one failure even when tap reported none
// (a type error, a coverage threshold, a crashed guest).
// usage: tap-summary.mjs LOG... STATUS...   (as many statuses as logs)
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const logs = args.slice(0, args.length / 2);
const statuses = args.slice(args.length / 2).map(Number);
let pass = 0;
let fail = 0;
let skip = 0;
logs.forEach((file, i) => {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => /^# \{ total: \d+/.test(l));
  const last = lines.at(-1) ?? '';
  const n = (k) => Number(new RegExp(`${k}: (\\d+)`).exec(last)?.[1] ?? 0);
  pass += n('pass');
  skip += n('skip') + n('todo');
  const f = n('fail');
  fail += f === 0 && statuses[i] !== 0 ? 1 : f;
});
console.log(`${pass} passed, ${fail} failed${skip ? `, ${skip} skipped` : ''}`);
process.exit(fail === 0 ? 0 : 1);
