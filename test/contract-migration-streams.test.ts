/**
 * Saved migration streams cross between the simulator and the kernel: each
 * backend saves its mtty in a canonical state to a QEMU savevm stream, which
 * must equal the stream the *other* backend saved (committed under
 * test/fixtures/, device UUID aside), and the other backend's stream must
 * restore into this backend's mtty with the FIFOs intact and save back
 * byte for byte.
 *
 * Regenerate the fixture of a backend with `VFIO_WRITE_FIXTURES=1`:
 *   VFIO_WRITE_FIXTURES=1 npx tap test/contract-migration-streams.test.ts
 *   VFIO_WRITE_FIXTURES=1 ../shared/vm/run -- npm run test:kernel
 */
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { VfioMigration } from '../lib/migration/hooks.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { SavevmParser } from '../lib/migration/sections.js';
import { VfioContainer } from '../lib/vfio/container.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import { backend, onKernel } from './helpers/backend.js';
import { canonicalMtty, receiveMtty } from './helpers/mtty-uart.js';

const MESSAGES = ['from the sim?', 'or the kernel'] as const;
const fixture = (name: 'sim' | 'kernel'): string => fileURLToPath(new URL(`./fixtures/mtty-${name}.savevm`, import.meta.url));

/** Saves `device` to a savevm stream in memory (a snapshot: no return path). */
async function save(device: VfioDevice): Promise<Uint8Array> {
  using m = VfioMigration.open(device);
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  await new MigrationSource({ devices: [m], output: out }).run();
  return Buffer.concat(chunks);
}

/** The idstr of a stream's first section (its START section sits in the first 64 bytes). */
function idstrOf(stream: Uint8Array): string {
  const first = new SavevmParser().push(stream.subarray(0, 64)).find((r) => r.kind === 'section-header');
  if (first?.kind !== 'section-header') throw new Error('no section in the stream');
  return first.device.idstr;
}

/** `stream` with the device UUID of its idstr replaced (same length), so streams of different devices compare. */
function renamed(stream: Uint8Array, uuid: string): string {
  const from = idstrOf(stream).replace(/\/vfio$/, '');
  return Buffer.from(stream).toString('latin1').replaceAll(from, uuid);
}

t.test('a saved mtty stream crosses between the simulator and the kernel', async (t) => {
  const b = backend();
  const here = b.name;
  const there = here === 'sim' ? 'kernel' : 'sim';
  using c1 = VfioContainer.open({ sys: b.sys });
  using c2 = VfioContainer.open({ sys: b.sys });
  const src = c1.openDevice(b.mttys[0]);
  const dst = c2.openDevice(b.mttys[1]);

  canonicalMtty(src, MESSAGES);
  const mine = await save(src);
  t.equal(mine.length, 4441, 'file header 8, START 76, PART 58, END 106, FULL 4,192 (a 4,116-byte config state), EOF 1');
  if (process.env.VFIO_WRITE_FIXTURES === '1') {
    writeFileSync(fixture(here), mine);
    t.comment(`wrote ${fixture(here)}`);
  }
  src.reset();
  receiveMtty(src, 0);
  receiveMtty(src, 1);

  if (!existsSync(fixture(there))) {
    t.fail(`no ${there} fixture: generate it with VFIO_WRITE_FIXTURES=1 on the ${there} backend`);
    return;
  }
  const theirs = new Uint8Array(readFileSync(fixture(there)));
  t.equal(renamed(theirs, src.name), renamed(mine, src.name), `the ${there}'s stream equals this ${here}'s, byte for byte (UUID aside)`);

  using into = VfioMigration.open(dst, { idstr: idstrOf(theirs) });
  const loaded = await new MigrationDestination({ devices: [into], input: Readable.from([theirs]) }).run();
  t.equal(loaded.deviceBytes, 96);
  const again = await save(dst);
  t.equal(renamed(again, dst.name), renamed(theirs, dst.name), 'the restored device saves the same stream back');
  t.equal(receiveMtty(dst, 0), MESSAGES[0], `the ${there}'s port 0 FIFO, read on the ${here}`);
  t.equal(receiveMtty(dst, 1), MESSAGES[1], 'and port 1');
  dst.reset();
  t.ok(onKernel === (here === 'kernel'));
});
