/**
 * QEMU's "ram" section (migration/ram.c): golden bytes of the writers and of
 * what `RamSaver` writes for a small two-block RAM, hand-derived from
 * `ram_save_setup`, `save_page_header`, `save_zero_page_to_file` and
 * `ram_save_iterate`; the parser (`ram_load_precopy`'s grammar) on a savevm
 * stream with RAM beside a VFIO device, split at every offset and byte by
 * byte, loading the destination RAM byte for byte; the parser's errors; the
 * geometry rules; and the saver's bookkeeping when a write fails.
 */
import t from 'tap';
import { StreamFormatError, VfioArgumentError, VfioClosedError } from '../lib/errors.js';
import { GuestRam } from '../lib/migration/guest-ram.js';
import {
  encodeRamEos,
  encodeRamMemSize,
  encodeRamPageHeader,
  RAM_SAVE_FLAG_COMPRESS_PAGE,
  RAM_SAVE_FLAG_CONTINUE,
  RAM_SAVE_FLAG_EOS,
  RAM_SAVE_FLAG_FULL,
  RAM_SAVE_FLAG_HOOK,
  RAM_SAVE_FLAG_MEM_SIZE,
  RAM_SAVE_FLAG_MULTIFD_FLUSH,
  RAM_SAVE_FLAG_PAGE,
  RAM_SAVE_FLAG_XBZRLE,
  RAM_SAVE_FLAG_ZERO,
  RAM_SECTION_IDSTR,
  RAM_SECTION_VERSION,
} from '../lib/migration/ram-format.js';
import { RamLoader } from '../lib/migration/ram-load.js';
import { RamSectionParser, type RamRecord } from '../lib/migration/ram-parser.js';
import { RamSaver } from '../lib/migration/ram-save.js';
import { SavevmParser, type SavevmRecord } from '../lib/migration/sections.js';
import type { ByteSink } from '../lib/migration/byte-io.js';
import { MemorySink } from './helpers/migration-sim.js';
import { CONFIG_SIZE, pattern } from './helpers/migration-streams.js';
import { ManualTracker, RAM_STREAM_DEVICE, blankRam, ramStream, smallRam } from './helpers/ram-streams.js';
import { thrown } from './helpers/expect.js';
import { bytesOf, hexOf, toHex } from './helpers/uapi-hex.js';

const PAGE = 4096;
const PC_RAM = hexOf('06', '70632e72616d'); // u8 6, "pc.ram"
const VGA_VRAM = hexOf('08', '7667612e7672616d'); // u8 8, "vga.vram"
const EOS = '0000000000000010';
const page = (seed: number): string => toHex(pattern(PAGE, seed));

t.test('the flags and the section name are QEMU\'s', async (t) => {
  t.same(
    [RAM_SAVE_FLAG_FULL, RAM_SAVE_FLAG_ZERO, RAM_SAVE_FLAG_MEM_SIZE, RAM_SAVE_FLAG_PAGE, RAM_SAVE_FLAG_EOS, RAM_SAVE_FLAG_CONTINUE, RAM_SAVE_FLAG_XBZRLE],
    [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40],
  );
  t.same([RAM_SAVE_FLAG_HOOK, RAM_SAVE_FLAG_COMPRESS_PAGE, RAM_SAVE_FLAG_MULTIFD_FLUSH], [0x80, 0x100, 0x200]);
  t.same([RAM_SECTION_IDSTR, RAM_SECTION_VERSION], ['ram', 4], 'register_savevm_live("ram", 0, 4, ...)');
});

t.test('writers: golden bytes', async (t) => {
  const { ram } = smallRam();
  t.equal(
    toHex(encodeRamMemSize(ram.blocks)),
    hexOf('0000000000004004', PC_RAM, '0000000000003000', VGA_VRAM, '0000000000001000'),
    'be64 (16 KiB | MEM_SIZE), then per block u8 len, idstr, be64 used_length',
  );
  const idstr = ram.blocks[0]?.idstrBytes;
  t.equal(toHex(encodeRamPageHeader('page', 0x2000, idstr)), hexOf('0000000000002008', PC_RAM), 'PAGE with the idstr');
  t.equal(toHex(encodeRamPageHeader('page', 0x2000, undefined)), '0000000000002028', 'PAGE | CONTINUE');
  t.equal(toHex(encodeRamPageHeader('zero', 0x1000, idstr)), hexOf('0000000000001002', PC_RAM, '00'), 'ZERO, idstr, fill byte 0');
  t.equal(toHex(encodeRamPageHeader('zero', 0x1000, undefined)), hexOf('0000000000001022', '00'), 'ZERO | CONTINUE, fill byte');
  t.equal(toHex(encodeRamEos()), EOS);
  t.throws(() => encodeRamPageHeader('page', 0x1001, undefined), VfioArgumentError, 'an offset into the flag bits');
  t.throws(() => encodeRamPageHeader('page', -4096, undefined), VfioArgumentError);
  t.throws(() => encodeRamPageHeader('page', 0, new Uint8Array(256)), VfioArgumentError, 'an idstr over 255 bytes');
  t.throws(() => encodeRamPageHeader('page', 0, new Uint8Array(0)), VfioArgumentError, 'an empty idstr');
});

t.test('what RamSaver writes, section by section, and the savevm framing around it', async (t) => {
  const s = await ramStream();
  const section = (i: number): string => {
    const span = s.sections[i];
    return span === undefined ? '' : toHex(s.bytes.subarray(span.start, span.end));
  };
  const ram = (type: string, content: string): string => hexOf(type, content, '7e 00000002');
  t.equal(
    section(0),
    ram(hexOf('01 00000002 03 72616d 00000000 00000004'), hexOf('0000000000004004', PC_RAM, '0000000000003000', VGA_VRAM, '0000000000001000', EOS)),
    'START "ram" instance 0 version 4: MEM_SIZE, the blocks, EOS',
  );
  t.equal(
    section(2),
    ram(
      '02 00000002',
      hexOf('0000000000000008', PC_RAM, page(1), '0000000000001022 00', '0000000000002028', page(2), '0000000000000008', VGA_VRAM, page(3), EOS),
    ),
    'the first PART: every page; the zero page and the next one with CONTINUE; a new block with its idstr',
  );
  t.equal(
    section(4),
    ram('02 00000002', hexOf('0000000000001008', PC_RAM, page(4), '0000000000000002', VGA_VRAM, '00', EOS)),
    'the second PART: the pages marked dirty, the now-empty one as a zero page',
  );
  t.equal(section(5), ram('03 00000002', hexOf('0000000000000028', page(5), EOS)), 'END: CONTINUE refers to the block of the last page of the PART before');
});

/** RAM records with the fragments of each page merged, comparable across splits. */
function normalize(records: readonly SavevmRecord<RamRecord>[]): string[] {
  const out: string[] = [];
  for (const r of records) {
    if (r.kind === 'vfio') {
      // Data fragments follow the input split; their data-begin and data-end do not.
      if (r.record.kind !== 'data') out.push(`vfio ${r.record.kind}`);
      continue;
    }
    if (r.kind !== 'content') {
      out.push(r.kind);
      continue;
    }
    const c = r.record;
    if (c.kind === 'page-data') {
      const last = out.length - 1;
      out[last] = `${out[last] ?? ''}${toHex(c.bytes)}`;
    } else if (c.kind === 'page') out.push(`@${c.offset} page ${c.block}:${c.at} `);
    else if (c.kind === 'zero') out.push(`@${c.offset} zero ${c.block}:${c.at}`);
    else if (c.kind === 'mem-size') out.push(`@${c.offset} mem-size ${c.total} [${c.blocks.join(',')}]`);
    else out.push(`@${c.offset} eos`);
  }
  return out;
}

function parserFor(loader: RamLoader): SavevmParser<RamRecord> {
  return new SavevmParser<RamRecord>({
    device: (h) => (h.idstr === RAM_STREAM_DEVICE ? { configStateSize: CONFIG_SIZE } : undefined),
    section: (h, offset) => loader.sectionParser(h, offset),
  });
}

/** Parses `chunks`, loading the RAM records into a blank RAM; returns the records and the RAM. */
function load(chunks: readonly Uint8Array[], pageSize = PAGE): { records: string[]; ram: GuestRam; loader: RamLoader } {
  const ram = blankRam(pageSize);
  const loader = new RamLoader(ram);
  const p = parserFor(loader);
  const records: SavevmRecord<RamRecord>[] = [];
  for (const c of chunks) {
    for (const r of p.push(c)) {
      if (r.kind === 'content') loader.loadRecord(r.record);
      records.push(r);
    }
  }
  p.end();
  return { records: normalize(records), ram, loader };
}

const contents = (ram: GuestRam): string[] => ram.blocks.map((b) => toHex(b.bytes(0, b.length)));

t.test('the stream loads the destination RAM byte for byte', async (t) => {
  const s = await ramStream();
  const whole = load([s.bytes]);
  t.same(contents(whole.ram), [toHex(s.pcRam), toHex(s.vram)], 'destination RAM equals the source RAM');
  t.same(whole.loader.stats, { pages: 5, zeroPages: 2, sizesMatched: true });
  const ramRecords = whole.records.filter((r) => r.startsWith('@')).map((r) => r.replace(/ [0-9a-f]{64,}$/, ''));
  t.same(ramRecords, [
    '@25 mem-size 16384 [0,1]',
    '@65 eos',
    '@126 page 0:0',
    '@4237 zero 0:4096',
    '@4246 page 0:8192',
    '@8350 page 1:0',
    '@12463 eos',
    '@12535 page 0:4096',
    '@16646 zero 1:0',
    '@16664 eos',
    '@16682 page 1:0',
    '@20786 eos',
  ], 'offsets: 25 = 8 + 17 (START "ram"); 65 = 25 + 40 (the block list); 126 = 65 + 8 (EOS) + 5 (footer) + 43 (START device) + 5 (PART)');
  const bytewise = load(Array.from(s.bytes, (_, i) => s.bytes.subarray(i, i + 1)));
  t.same(bytewise.records, whole.records, 'byte by byte, the same records');
  t.same(contents(bytewise.ram), contents(whole.ram), 'and the same RAM');
});

t.test('a small stream (1 KiB pages) split at every offset', async (t) => {
  const s = await ramStream(1024);
  const whole = load([s.bytes], 1024);
  t.same(contents(whole.ram), [toHex(s.pcRam), toHex(s.vram)]);
  let same = 0;
  for (let k = 0; k <= s.bytes.length; k++) {
    const split = load([s.bytes.subarray(0, k), s.bytes.subarray(k)], 1024);
    if (JSON.stringify(split.records) === JSON.stringify(whole.records) && JSON.stringify(contents(split.ram)) === JSON.stringify(contents(whole.ram))) same++;
    else t.fail(`a split at ${k} parses differently`);
  }
  t.equal(same, s.bytes.length + 1, `all ${s.bytes.length + 1} two-chunk splits give the same records and RAM`);
});

t.test('parser errors are StreamFormatErrors that say what is wrong', async (t) => {
  const { ram } = smallRam();
  const options = { pageSize: PAGE, blocks: ram.blocks.map((b) => ({ idstr: b.name, length: b.length })) };
  const err = (...hex: string[]): unknown => {
    const p = new RamSectionParser(options);
    p.begin(100);
    return thrown(() => {
      p.feed(bytesOf(...hex), 0, () => undefined);
      p.finish();
    });
  };
  const setup = hexOf('0000000000004004', PC_RAM, '0000000000003000', VGA_VRAM, '0000000000001000');
  const cases: Array<[string, unknown, object]> = [
    ['a total that is not the destination\'s', err('0000000000008004'), { offset: 100, message: /the stream has 32768 bytes of RAM, the destination 16384/ }],
    ['an unknown block', err('0000000000004004', '03 616263'), { offset: 108, message: /unknown RAM block "abc"/ }],
    ['an empty idstr', err('0000000000004004', '00'), { offset: 108, message: /unknown RAM block ""/ }],
    ['a block of another length', err('0000000000004004', PC_RAM, '0000000000002000'), { offset: 115, message: /"pc.ram" is 8192 bytes in the stream, 12288 on the destination/ }],
    ['a block listed twice', err('0000000000004004', PC_RAM, '0000000000003000', PC_RAM), { offset: 123, message: /"pc.ram" is listed twice/ }],
    ['CONTINUE before any block', err('0000000000000028'), { offset: 100, message: /CONTINUE before any page named its block/ }],
    ['an offset outside the block', err('0000000000003008', PC_RAM), { offset: 100, message: /page offset 0x3000 is outside RAM block "pc.ram" \(12288 bytes\)/ }],
    ['a huge offset', err('fffffffffffff008', PC_RAM), { message: /page offset 0xfffffffffffff000 is outside/ }],
    ['XBZRLE', err('0000000000000040'), { message: /RAM_SAVE_FLAG_XBZRLE \(the xbzrle capability\) is not supported/ }],
    ['a compressed page', err('0000000000000100'), { message: /COMPRESS_PAGE .* is not supported/ }],
    ['RDMA', err('0000000000000080'), { message: /RAM_SAVE_FLAG_HOOK \(RDMA\) is not supported/ }],
    ['MULTIFD_FLUSH | CONTINUE', err('0000000000000220'), { message: /CONTINUE on a record that is not a page/ }],
    ['MULTIFD_FLUSH with an address', err('0000000000001200'), { message: /RAM_SAVE_FLAG_MULTIFD_FLUSH carries 0x1000/ }],
    ['a zero page filled with 7', err('0000000000000002', PC_RAM, '07'), { offset: 115, message: /a zero page filled with 0x7: only 0 is valid/ }],
    ['an idstr that is not UTF-8', err('0000000000000008', '02 c328'), { offset: 108, message: /unknown RAM block: its idstr \(c328\) is not UTF-8/ }],
    ['an idstr with a byte order mark', err('0000000000000008', '09 efbbbf', PC_RAM.slice(2)), { offset: 108, message: /unknown RAM block "\ufeffpc.ram"/ }],
    ['the obsolete FULL', err('0000000000000001'), { message: /RAM_SAVE_FLAG_FULL/ }],
    ['PAGE | ZERO', err('000000000000000a'), { message: /unknown combination of RAM flags 0xa/ }],
    ['no flag', err('0000000000001000'), { message: /unknown combination of RAM flags 0x0/ }],
    ['EOS | CONTINUE', err('0000000000000030'), { message: /CONTINUE on a record that is not a page/ }],
    ['EOS with an address', err('0000000000001010'), { message: /EOS carries 0x1000/ }],
    ['truncated in the flags', err('00000000'), { offset: 104, message: /truncated where a RAM record \(or EOS\) was expected/ }],
    ['truncated in the list', err(setup.slice(0, 30)), { message: /truncated inside the MEM_SIZE block list|inside a RAM block idstr/ }],
    ['truncated in an idstr', err('0000000000000008 06 7063'), { message: /truncated inside a RAM block idstr/ }],
    ['truncated in a page', err('0000000000000008', PC_RAM, '0102'), { offset: 117, message: /truncated inside a page/ }],
    ['truncated before a fill byte', err('0000000000000002', PC_RAM), { message: /truncated inside a zero page/ }],
  ];
  for (const [label, e, want] of cases) t.match(e, { code: 'ERR_VFIO_STREAM_FORMAT', ...want }, label);
  t.ok(cases.every(([, e]) => e instanceof StreamFormatError), 'all StreamFormatErrors');

  const loader = new RamLoader(ram);
  const header = { type: 0x01, sectionId: 0, idstr: 'ram', instanceId: 0, versionId: 3 } as const;
  t.match(thrown(() => loader.sectionParser(header, 8)), { offset: 8, message: /"ram" instance 0 version 3: instance 0 version 4 expected/ });
  t.match(thrown(() => loader.sectionParser({ ...header, instanceId: 1, versionId: 4 }, 8)), { message: /instance 1/ });
  t.equal(loader.sectionParser({ ...header, idstr: 'dev/vfio' }, 8), undefined, 'other sections are not RAM');
  t.throws(() => loader.loadRecord({ kind: 'zero', offset: 0, block: 7, at: 0 }), VfioArgumentError, 'a record of another RAM');
});

/** Feeds `hex` as the content of one "ram" section after another to a fresh loader of `ram`; returns the error, if any. */
function loadSections(ram: GuestRam, ...sections: string[]): unknown {
  const loader = new RamLoader(ram);
  const p = loader.sectionParser({ type: 0x01, sectionId: 0, idstr: 'ram', instanceId: 0, versionId: 4 }, 0);
  if (p === undefined) throw new Error('no RAM parser');
  try {
    for (const hex of sections) {
      p.begin(0);
      const bytes = bytesOf(hex);
      if (p.feed(bytes, 0, (r) => loader.loadRecord(r)) !== bytes.length) throw new Error('the section ended early');
      p.finish();
    }
    return undefined;
  } catch (e) {
    return e;
  }
}

t.test('MULTIFD_FLUSH is skipped, as QEMU 8.1.0-8.1.2 send it without multifd', async (t) => {
  // ram_save_setup, find_dirty_block (after each pass over RAM) and ram_save_complete
  // before the fix d4f34485ca ("Non multifd migration don't care about multifd flushes").
  const FLUSH = '0000000000000200';
  const { ram: src } = smallRam();
  const ram = blankRam();
  const setup = hexOf('0000000000004004', PC_RAM, '0000000000003000', VGA_VRAM, '0000000000001000', FLUSH, EOS);
  const iterate = hexOf('0000000000000008', PC_RAM, page(1), '0000000000002028', page(2), '0000000000000008', VGA_VRAM, page(3), FLUSH, '0000000000001002', PC_RAM, '00', EOS);
  const complete = hexOf('0000000000001028', page(4), FLUSH, EOS);
  t.equal(loadSections(ram, setup, iterate, complete), undefined, 'loads');
  const want = contents(src);
  want[0] = `${want[0]?.slice(0, 2 * PAGE) ?? ''}${page(4)}${want[0]?.slice(4 * PAGE) ?? ''}`;
  t.same(contents(ram), want, 'CONTINUE after a flush still refers to the block named before it');
});

t.test('an idstr names a block only with its exact bytes', async (t) => {
  const mem = (): Uint8Array => new Uint8Array(PAGE);
  const ram = new GuestRam([{ name: '\ufffd', memory: mem(), iova: 0n }, { name: 'pc.ram', memory: mem(), iova: 0x10000n }]);
  const list = hexOf('0000000000002004', '03 efbfbd 0000000000001000', PC_RAM, '0000000000001000');
  t.equal(loadSections(ram, hexOf(list, '0000000000000008 03 efbfbd', page(1), EOS)), undefined, 'U+FFFD in UTF-8 names the block');
  t.match(loadSections(ram, hexOf(list, '0000000000000008 01 ff', page(1), EOS)), { message: /its idstr \(ff\) is not UTF-8/ }, 'a byte that is not UTF-8 does not');
  t.match(loadSections(ram, hexOf(list, '0000000000000008 09 efbbbf', PC_RAM.slice(2), page(1), EOS)), { message: /unknown RAM block "\ufeffpc.ram"/ }, 'nor does a byte order mark before a name');
});

t.test('geometry rules', async (t) => {
  const mem = new Uint8Array(8192);
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['page size not a power of two', () => new GuestRam([{ name: 'a', memory: mem, iova: 0n }], { pageSize: 3000 }), /page size 3000/],
    ['page size under 1 KiB', () => new GuestRam([{ name: 'a', memory: mem, iova: 0n }], { pageSize: 512 }), /page size 512/],
    ['no block', () => new GuestRam([]), /0 RAM blocks/],
    ['an empty name', () => new GuestRam([{ name: '', memory: mem, iova: 0n }]), /idstr "" is 0 bytes/],
    ['a name over 255 bytes', () => new GuestRam([{ name: 'é'.repeat(128), memory: mem, iova: 0n }]), /is 256 bytes/],
    ['two blocks of one name', () => new GuestRam([{ name: 'a', memory: mem, iova: 0n }, { name: 'a', memory: mem, iova: 0x10000n }]), /two RAM blocks are named "a"/],
    // Both would go out as the idstr ef bf bd (U+FFFD).
    ['a lone surrogate', () => new GuestRam([{ name: 'a\ud800', memory: mem, iova: 0n }, { name: 'a\udc00', memory: mem, iova: 0x10000n }]), /"a\\ud800" is not well-formed Unicode without NUL/],
    ['a NUL, which ends a C string', () => new GuestRam([{ name: 'pc.ram\0x', memory: mem, iova: 0n }]), /"pc.ram\\u0000x" is not well-formed/],
    ['a size that is not whole pages', () => new GuestRam([{ name: 'a', memory: new Uint8Array(5000), iova: 0n }]), /5000 bytes: a positive multiple of 4096/],
    ['overlapping IOVAs', () => new GuestRam([{ name: 'a', memory: mem, iova: 0n }, { name: 'b', memory: mem, iova: 0x1000n }]), /overlaps/],
    ['a misaligned IOVA', () => new GuestRam([{ name: 'a', memory: mem, iova: 0x800n }]), /aligned/],
  ];
  for (const [label, make, message] of cases) t.match(thrown(make), { code: 'ERR_VFIO_INVALID_ARGUMENT', message }, label);
  const { ram } = smallRam();
  t.same([ram.npages, ram.size, ram.blocks.map((b) => [b.firstPage, b.npages])], [4, 16384, [[0, 3], [3, 1]]]);
  t.same(ram.ranges, [
    { iova: 0n, size: 12288n, firstPage: 0 },
    { iova: 0x100000n, size: 4096n, firstPage: 3 },
  ]);
  t.equal(ram.blockOf(3).name, 'vga.vram');
  t.throws(() => ram.blockOf(4), VfioArgumentError);
  t.throws(() => new RamSectionParser({ pageSize: 4096, blocks: [] }), VfioArgumentError, 'the parser checks its options too');
});

t.test('RamSaver: setup, pending, cleanup, and no page lost when a write fails', async (t) => {
  const { ram } = smallRam();
  t.throws(() => new RamSaver({ ram, tracker: new ManualTracker(8192n) }), { message: /tracker's pages are 8192 bytes, the RAM's 4096/ });
  t.throws(() => new RamSaver({ ram, tracker: new ManualTracker(), batchPages: 0 }), VfioArgumentError);

  const tracker = new ManualTracker();
  const saver = new RamSaver({ ram, tracker, batchPages: 1 });
  await saver.saveSetup(new MemorySink());
  t.ok(tracker.tracking, 'setup starts the tracker');
  t.equal(saver.statePendingEstimate(), 4 * PAGE, 'every page is pending after setup');
  await saver.saveLiveIterate(new MemorySink());
  t.equal(saver.statePendingEstimate(), 0);
  tracker.mark(0, 2, 3);
  t.equal(saver.statePendingEstimate(), 0, 'the estimate does not sync');
  t.equal(saver.statePendingExact(), 3 * PAGE, 'the exact figure does');

  // The second page written fails: it and the one after it are dirty again.
  let writes = 0;
  const failing: ByteSink = {
    write: () => (++writes === 2 ? Promise.reject(new Error('link down')) : Promise.resolve()),
  };
  t.match(await saver.saveLiveIterate(failing).catch((e: unknown) => e), { message: 'link down' });
  t.same([...saver.bitmap.runs()], [[2, 2]], 'pages 2 and 3 are dirty again; page 0 went out');
  const sink = new MemorySink();
  t.equal(await saver.saveLiveIterate(sink), 2, 'the next round sends them');
  t.equal(toHex(sink.take().subarray(0, 15)), hexOf('0000000000002008', PC_RAM), 'naming their block again: the destination may have missed it');
  t.same(saver.stats, { rounds: 2, syncs: 4, pages: 6, zeroPages: 1, stopCopyPages: 0, bytes: saver.stats.bytes }, 'the failed round and its unsent page do not count');

  saver.saveCleanup();
  t.notOk(tracker.tracking, 'cleanup stops the tracker setup started');
  tracker.start();
  await saver.saveSetup(new MemorySink());
  saver.saveCleanup();
  t.ok(tracker.tracking, 'but not one that was running before');
  saver.close();
  saver.close();
  t.type(await saver.saveSetup(new MemorySink()).catch((e: unknown) => e), VfioClosedError, 'closed');
});

t.test('a RAM block given as a mapping is read a page view at a time', async (t) => {
  const views: Array<[number, number]> = [];
  const backing = new Uint8Array(2 * PAGE).fill(7);
  const mapping = {
    address: 0n,
    length: backing.length,
    unmapped: false,
    view: (offset = 0, length = backing.length - offset): Uint8Array => {
      views.push([offset, length]);
      return backing.subarray(offset, offset + length);
    },
    unmap: () => undefined,
  };
  const ram = new GuestRam([{ name: 'pc.ram', memory: mapping, iova: 0n }]);
  const saver = new RamSaver({ ram, tracker: new ManualTracker() });
  const sink = new MemorySink();
  await saver.saveSetup(sink);
  await saver.saveLiveIterate(sink);
  t.same(views, [
    [0, PAGE],
    [PAGE, PAGE],
  ]);
  t.equal(sink.take().length, 8 + 7 + 8 + 8 + (8 + 7 + PAGE) + (8 + PAGE) + 8, 'MEM_SIZE, EOS, two pages, EOS');
  saver.close();
});
