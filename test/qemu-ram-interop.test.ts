/**
 * The "ram" section against a real QEMU (Debian's 7.2), both ways:
 *
 * - QEMU to us: `test/fixtures/qemu-7.2-ram.savevm` is what QEMU wrote for a
 *   16 MiB `-M none` guest whose RAM two generic loaders filled
 *   (`scripts/qemu-ram-fixture.sh`). Its RAM section loads into a `GuestRam`
 *   with the same bytes. The stream's other parts are QEMU's own and are
 *   taken apart here: the configuration section and the JSON description
 *   after EOF, which the library does not read, and the `timer` and
 *   `globalstate` sections, skipped by the sizes that description gives.
 * - Us to QEMU: the runner's stream of such a RAM loads into QEMU with
 *   `-incoming`, and `pmemsave` gives back the same 16 MiB. Needs
 *   `qemu-system-x86_64`; skipped without it unless `VFIO_TS_REQUIRE_QEMU`
 *   is set (CI sets it).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import t, { type Test } from 'tap';
import { GuestRam } from '../lib/migration/guest-ram.js';
import type { RamRecord } from '../lib/migration/ram-parser.js';
import { RamLoader } from '../lib/migration/ram-load.js';
import { RamSaver } from '../lib/migration/ram-save.js';
import { MigrationSource } from '../lib/migration/runner.js';
import { SavevmParser, type FullSectionHeader, type SectionContentParser } from '../lib/migration/sections.js';
import { ManualTracker } from './helpers/ram-streams.js';

const RAM_BYTES = 16 << 20;
const PAGE = 4096;

/** The guest RAM the fixture's loaders made (see scripts/qemu-ram-fixture.sh). */
function fixtureRam(): Uint8Array {
  const ram = new Uint8Array(RAM_BYTES);
  for (let i = 0; i < 20000; i++) ram[0x3000 + i] = (i * 7 + (i >> 8)) & 0xff;
  ram.fill(0xab, 0x800000, 0x800000 + PAGE);
  return ram;
}

/** Consumes a section QEMU wrote without a length prefix, of a size known beforehand. */
class SkipSection implements SectionContentParser<RamRecord> {
  #left = 0;
  constructor(readonly size: number) {}
  begin(): void {
    this.#left = this.size;
  }
  feed(chunk: Uint8Array, start: number): number {
    const n = Math.min(this.#left, chunk.byteLength - start);
    this.#left -= n;
    return n;
  }
  get ended(): boolean {
    return this.#left === 0;
  }
  finish(): void {
    if (this.#left !== 0) throw new Error(`${this.#left} bytes of a skipped section missing`);
  }
}

interface QemuStream {
  /** The stream without the configuration section and the description: file header, sections, EOF. */
  readonly savevm: Uint8Array;
  /** The content size of each non-RAM section, from QEMU's JSON description of its devices. */
  readonly sizes: ReadonlyMap<string, number>;
}

/** Takes the fixture apart, checking the bytes it drops. */
function splitQemuStream(t: Test, bytes: Uint8Array): QemuStream {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  t.equal(Buffer.from(bytes.subarray(0, 8)).toString('hex'), '5145564d00000003', 'QEVM, version 3');
  // QEMU_VM_CONFIGURATION: the "configuration" vmstate, a be32 length and the machine name.
  t.equal(bytes[8], 0x07, 'then the configuration section');
  const nameLength = dv.getUint32(9);
  t.equal(Buffer.from(bytes.subarray(13, 13 + nameLength)).toString(), 'none');
  // After EOF: QEMU_VM_VMDESCRIPTION, a be32 length and JSON to the end.
  let desc = -1;
  for (let i = bytes.byteLength - 5; i > 0; i--) {
    if (bytes[i] === 0x06 && bytes[i - 1] === 0x00 && dv.getUint32(i + 1) === bytes.byteLength - i - 5) {
      desc = i;
      break;
    }
  }
  t.ok(desc > 0, 'EOF, then the JSON description');
  const json = JSON.parse(Buffer.from(bytes.subarray(desc + 5)).toString()) as { devices: { name: string; fields: { size: number }[] }[] };
  const sizes = new Map(json.devices.map((d) => [d.name, d.fields.reduce((n, f) => n + f.size, 0)]));
  return { savevm: Buffer.concat([bytes.subarray(0, 8), bytes.subarray(13 + nameLength, desc)]), sizes };
}

t.test('a stream QEMU 7.2 wrote loads into GuestRam with the same bytes, split anywhere', async (t) => {
  const { savevm, sizes } = splitQemuStream(t, readFileSync(new URL('./fixtures/qemu-7.2-ram.savevm', import.meta.url)));
  t.same([...sizes.keys()], ['timer', 'globalstate'], 'the devices of a -M none guest');
  const expected = fixtureRam();
  for (const chunk of [savevm.byteLength, 4099, 1]) {
    const memory = new Uint8Array(RAM_BYTES);
    const loader = new RamLoader(new GuestRam([{ name: 'ram', memory, iova: 0n }]));
    const seen: string[] = [];
    const skip = (h: FullSectionHeader): SectionContentParser<RamRecord> | undefined => {
      const size = sizes.get(h.idstr);
      return size === undefined ? undefined : new SkipSection(size);
    };
    const parser = new SavevmParser<RamRecord>({ device: () => undefined, section: (h, offset) => loader.sectionParser(h, offset) ?? skip(h) });
    const onRecord = (r: ReturnType<typeof parser.push>[number]): void => {
      if (r.kind === 'content') loader.loadRecord(r.record);
      if (r.kind === 'section-header') seen.push(`${r.header.type}:${r.device.idstr}`);
    };
    for (let at = 0; at < savevm.byteLength; at += chunk) parser.push(savevm.subarray(at, at + chunk)).forEach(onRecord);
    parser.end();
    t.same(seen, ['1:ram', '2:ram', '3:ram', '4:timer', '4:globalstate'], `chunks of ${chunk}: START, PART and END of ram, then the devices`);
    t.same(loader.stats, { pages: 6, zeroPages: 4090, sizesMatched: true }, 'QEMU sent 6 pages and 4090 zero pages');
    t.ok(Buffer.from(memory).equals(Buffer.from(expected)), 'the loaded RAM is the guest RAM QEMU had');
  }
});

const haveQemu = spawnSync('qemu-system-x86_64', ['--version']).status === 0;

t.test('the runner\'s stream loads into QEMU 7.2 (-incoming), RAM byte for byte', { skip: haveQemu || process.env.VFIO_TS_REQUIRE_QEMU !== undefined ? false : 'qemu-system-x86_64 is missing' }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qemu-ram-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const memory = fixtureRam();
  const ram = new GuestRam([{ name: 'ram', memory, iova: 0n }]);
  const tracker = new ManualTracker();
  using saver = new RamSaver({ ram, tracker });
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const source = new MigrationSource({ devices: [], ram: saver, output: out });
  source.on('iteration', () => {
    // A write during precopy, seen by the tracker: the END section sends it again.
    memory.fill(0xcd, 0x900000, 0x900010);
    tracker.mark(0x900);
  });
  await source.run();
  const stream = join(dir, 'ours.savevm');
  writeFileSync(stream, Buffer.concat(chunks));

  const dump = join(dir, 'loaded.bin');
  const { code, log } = await loadIntoQemu(stream, dump);
  t.equal(code, 0, `QEMU exits cleanly\n${log}`);
  t.notMatch(log, /load of migration failed/);
  t.ok(readFileSync(dump).equals(Buffer.from(memory)), 'QEMU\'s RAM after the load is the source RAM');
});

/**
 * Starts QEMU on `-incoming` from `stream` (no configuration section
 * expected), waits until the load is done (the VM leaves `inmigrate`), dumps
 * the RAM with `pmemsave` and quits.
 */
function loadIntoQemu(stream: string, dump: string): Promise<{ code: number | null; log: string }> {
  const qemu = spawn(
    'qemu-system-x86_64',
    ['-M', 'none', '-m', '16M', '-nodefaults', '-display', 'none', '-S', '-monitor', 'stdio', '-global', 'migration.send-configuration=off', '-incoming', `exec:cat ${stream}`],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let log = '';
  let done = false;
  const poll = setInterval(() => qemu.stdin.write('info status\n'), 100);
  const limit = setTimeout(() => qemu.kill(), 20_000);
  const onOutput = (c: Buffer): void => {
    log += c.toString();
    if (!done && /VM status: paused\r?\n/.test(log)) {
      done = true;
      clearInterval(poll);
      qemu.stdin.write(`pmemsave 0 ${RAM_BYTES} "${dump}"\nquit\n`);
    }
  };
  qemu.stdout.on('data', onOutput);
  qemu.stderr.on('data', onOutput);
  return new Promise((resolve) => {
    qemu.on('close', (code) => {
      clearInterval(poll);
      clearTimeout(limit);
      resolve({ code, log: log.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '') });
    });
  });
}
