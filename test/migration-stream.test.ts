/**
 * QEMU's VFIO device framing (lib/migration/stream.ts): golden bytes of every
 * writer (hand-written from vfio-reference.md §5.2/§5.3), the push parser on
 * the typical device stream split at every offset, `vfio_load_state`'s rules
 * (§5.4), limits, truncation, and a 1 GiB record streamed in bounded memory.
 */
import t from 'tap';
import { StreamFormatError, VfioArgumentError } from '../lib/errors.js';
import {
  DEFAULT_MAX_DATA_SIZE,
  encodeDevConfigState,
  encodeDataHeader,
  encodeDataState,
  encodeEndOfState,
  encodeInitDataSent,
  encodeSetupState,
  encodeTag,
  VFIO_DATA_HEADER_SIZE,
  VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY,
  VFIO_MIG_FLAG_DEV_CONFIG_STATE,
  VFIO_MIG_FLAG_DEV_DATA_STATE,
  VFIO_MIG_FLAG_DEV_INIT_DATA_SENT,
  VFIO_MIG_FLAG_DEV_SETUP_STATE,
  VFIO_MIG_FLAG_END_OF_STATE,
  VfioSectionParser,
  VfioStreamParser,
  vfioTagName,
  type VfioParserOptions,
  type VfioRecord,
} from '../lib/migration/stream.js';
import {
  CONFIG_SIZE,
  concatBytes,
  disagreeingSplits,
  normalizeVfio,
  parseVfio as parse,
  pattern,
  typicalStream,
  vfioFormatError as formatError,
} from './helpers/migration-streams.js';
import { bytesOf, hexOf, toHex } from './helpers/uapi-hex.js';

const END = 'ffffffffef100001';
const CONFIG = 'ffffffffef100002';
const SETUP = 'ffffffffef100003';
const DATA = 'ffffffffef100004';
const INIT_DATA_SENT = 'ffffffffef100005';
const CONFIG_LOAD_READY = 'ffffffffef100006';

/** What `fn` throws (undefined if it returns). */
function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

t.test('tags are big-endian u64 0xffffffff:ef10:code', async (t) => {
  t.equal(VFIO_MIG_FLAG_END_OF_STATE, 0xffffffffef100001n);
  t.equal(VFIO_MIG_FLAG_DEV_CONFIG_STATE, 0xffffffffef100002n);
  t.equal(VFIO_MIG_FLAG_DEV_SETUP_STATE, 0xffffffffef100003n);
  t.equal(VFIO_MIG_FLAG_DEV_DATA_STATE, 0xffffffffef100004n);
  t.equal(VFIO_MIG_FLAG_DEV_INIT_DATA_SENT, 0xffffffffef100005n);
  t.equal(VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY, 0xffffffffef100006n);
  t.equal(toHex(encodeTag(VFIO_MIG_FLAG_END_OF_STATE)), hexOf('ff ff ff ff ef 10 00 01'));
  t.equal(toHex(encodeTag(VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY)), hexOf(CONFIG_LOAD_READY));
  t.equal(vfioTagName(VFIO_MIG_FLAG_DEV_INIT_DATA_SENT), 'DEV_INIT_DATA_SENT');
  t.equal(vfioTagName(0xffffffffef100007n), '0xffffffffef100007');
  t.throws(() => encodeTag(-1n), VfioArgumentError);
  t.throws(() => encodeTag(1n << 64n), VfioArgumentError);
});

t.test('writers: golden bytes of §5.3', async (t) => {
  t.equal(toHex(encodeSetupState()), hexOf('ff ff ff ff ef 10 00 03', 'ff ff ff ff ef 10 00 01'), 'save_setup');
  t.equal(toHex(encodeDataHeader(0x1234)), hexOf(DATA, '00 00 00 00 00 00 12 34'), 'DATA header');
  t.equal(toHex(encodeDataHeader(2 ** 40 + 5)), hexOf(DATA, '00 00 01 00 00 00 00 05'), 'DATA header, size above 2^32');
  t.equal(toHex(encodeDataHeader(0)), hexOf(DATA, '0000000000000000'));
  t.equal(encodeDataHeader(1).length, VFIO_DATA_HEADER_SIZE);
  t.equal(toHex(encodeDataState(bytesOf('aa bb cc'))), hexOf(DATA, '0000000000000003', 'aa bb cc'), 'DATA(3)');
  t.equal(toHex(encodeEndOfState()), hexOf(END));
  t.equal(toHex(encodeInitDataSent()), hexOf(INIT_DATA_SENT));
  t.equal(toHex(encodeDevConfigState(bytesOf('01 02 03 04'))), hexOf(CONFIG, '01 02 03 04', END), 'save_state');
  t.equal(toHex(encodeDevConfigState(new Uint8Array(0))), hexOf(CONFIG, END));
  for (const bad of [-1, 1.5, 2 ** 53, Number.NaN]) t.throws(() => encodeDataHeader(bad), VfioArgumentError, `size ${bad}`);
});

t.test('the typical device stream, record by record', async (t) => {
  const s = typicalStream();
  const records = normalizeVfio(parse([s.vfioOnly]));
  // Offsets: START content at 0 (16 bytes); PART 1 at 16 (DATA(100) = 116, END) ...
  t.same(records, [
    { kind: 'setup', offset: 0 },
    { kind: 'data-begin', offset: 16, size: 100 },
    { kind: 'data', offset: 32, hex: toHex(pattern(100, 1)) },
    { kind: 'data-end', offset: 132 },
    { kind: 'end-of-state', offset: 132 },
    { kind: 'end-of-state', offset: 140 },
    { kind: 'data-begin', offset: 148, size: 37 },
    { kind: 'data', offset: 164, hex: toHex(pattern(37, 2)) },
    { kind: 'data-end', offset: 201 },
    { kind: 'init-data-sent', offset: 201 },
    { kind: 'data-begin', offset: 209, size: 300 },
    { kind: 'data', offset: 225, hex: toHex(pattern(300, 3)) },
    { kind: 'data-end', offset: 525 },
    { kind: 'data-begin', offset: 525, size: 5 },
    { kind: 'data', offset: 541, hex: toHex(pattern(5, 4)) },
    { kind: 'data-end', offset: 546 },
    { kind: 'end-of-state', offset: 546 },
    { kind: 'config', offset: 554, hex: toHex(pattern(CONFIG_SIZE, 0xff)) },
  ]);
  t.equal(s.vfioOnly.length, 554 + 8 + CONFIG_SIZE + 8);
});

t.test('split at every offset, and byte by byte: identical records', async (t) => {
  const { vfioOnly: bytes } = typicalStream();
  const whole = normalizeVfio(parse([bytes]));
  t.same(disagreeingSplits(bytes, { configStateSize: CONFIG_SIZE }), [], `${bytes.length + 1} two-way splits and byte by byte`);
  // Three-way splits around every DATA header, where sizes and payloads meet.
  for (let a = 140; a < 240; a += 3) {
    for (let b = a; b < 240; b += 5) {
      const parts = [bytes.subarray(0, a), bytes.subarray(a, b), bytes.subarray(b)];
      if (JSON.stringify(normalizeVfio(parse(parts))) !== JSON.stringify(whole)) t.fail(`split at ${a}, ${b}`);
    }
  }
});

t.test('data payloads are views of the pushed chunk, not copies', async (t) => {
  const chunk = encodeDataState(pattern(64, 9));
  const p = new VfioStreamParser();
  const records = p.push(chunk);
  const data = records.find((r) => r.kind === 'data');
  t.ok(data?.kind === 'data' && data.bytes.buffer === chunk.buffer && data.bytes.byteOffset === VFIO_DATA_HEADER_SIZE);
  t.equal(p.offset, chunk.length);
});

t.test('a 1 GiB DATA record streams through in bounded memory', async (t) => {
  const GiB = 2 ** 30;
  const chunk = pattern(1 << 20, 5); // one reused 1 MiB buffer, as a reader with a fixed buffer would
  const p = new VfioStreamParser();
  t.same(p.push(encodeDataHeader(GiB)), [{ kind: 'data-begin', offset: 0, size: GiB }]);
  const before = process.memoryUsage();
  const started = performance.now();
  let total = 0;
  let fragments = 0;
  const markers: string[] = [];
  for (let i = 0; i < GiB / chunk.length; i++) {
    for (const r of p.push(chunk)) {
      if (r.kind !== 'data') {
        markers.push(r.kind);
        continue;
      }
      if (r.bytes.buffer !== chunk.buffer) t.fail('a fragment was copied');
      total += r.bytes.length;
      fragments++;
    }
  }
  markers.push(...p.push(encodeEndOfState()).map((r) => r.kind));
  p.end();
  const grown = process.memoryUsage().arrayBuffers - before.arrayBuffers;
  t.equal(total, GiB);
  t.equal(fragments, 1024);
  t.same(markers, ['data-end', 'end-of-state']);
  t.ok(grown < 64 * 2 ** 20, `ArrayBuffer memory grew by ${(grown / 2 ** 20).toFixed(1)} MiB (< 64 MiB)`);
  t.comment(`1 GiB in ${(performance.now() - started).toFixed(0)} ms`);
});

t.test("vfio_load_state's rules (§5.4)", async (t) => {
  const tag = (hex: string): Uint8Array => bytesOf(hex);
  const kinds = (bytes: Uint8Array, options?: VfioParserOptions): string[] => parse([bytes], options).map((r) => r.kind);

  t.same(kinds(tag(END)), ['end-of-state'], 'a bare END_OF_STATE is a whole section (an empty PART)');
  t.same(kinds(concatBytes([encodeDataState(pattern(3, 1)), tag(INIT_DATA_SENT)])), ['data-begin', 'data', 'data-end', 'init-data-sent']);
  t.same(kinds(tag(CONFIG_LOAD_READY)), ['config-load-ready'], 'CONFIG_LOAD_READY ends a section');
  t.same(kinds(concatBytes([encodeDataHeader(0), tag(END)])), ['data-begin', 'data-end', 'end-of-state'], 'DATA(0) is legal');
  t.same(kinds(encodeDevConfigState(new Uint8Array(0)), { configStateSize: 0 }), ['config'], 'a 0-byte config');
  // QEMU's loop accepts any item after DATA records; so does the parser.
  t.same(kinds(concatBytes([encodeDataState(pattern(2, 1)), encodeSetupState()])), ['data-begin', 'data', 'data-end', 'setup']);
  t.same(kinds(concatBytes([encodeDataState(pattern(2, 1)), encodeDevConfigState(pattern(CONFIG_SIZE, 1))])), [
    'data-begin',
    'data',
    'data-end',
    'config',
  ]);

  const unknown = formatError(concatBytes([encodeSetupState(), tag('ffffffffef100007')]));
  t.match(unknown, { code: 'ERR_VFIO_STREAM_FORMAT', offset: 16, tag: 0xffffffffef100007n });
  t.match(unknown.message, /unknown VFIO tag 0xffffffffef100007 \(at byte 16, tag 0xffffffffef100007\)/);
  t.match(formatError(tag('0000000000000000')), { offset: 0, tag: 0n }, 'zero is no tag');

  t.match(formatError(tag(SETUP + DATA)), { offset: 8, tag: VFIO_MIG_FLAG_DEV_DATA_STATE, message: /DEV_SETUP_STATE must be followed by END_OF_STATE/ });
  t.match(formatError(tag(SETUP + SETUP)), { offset: 8, message: /must be followed by END_OF_STATE, found DEV_SETUP_STATE/ });
  const config = pattern(CONFIG_SIZE, 1);
  t.match(formatError(concatBytes([tag(CONFIG), config, tag(DATA)])), {
    offset: 8 + CONFIG_SIZE,
    message: /DEV_CONFIG_STATE must be followed by END_OF_STATE/,
  });
  t.match(formatError(concatBytes([tag(CONFIG), config, bytesOf('05 11'), config])), {
    offset: 8 + CONFIG_SIZE,
    tag: VFIO_MIG_FLAG_DEV_CONFIG_STATE,
    message: /vmstate subsection follows the config state/,
  });
  // The subsection check fires on the first byte, before the rest of the 8 bytes arrive.
  const p = new VfioStreamParser({ configStateSize: CONFIG_SIZE });
  p.push(concatBytes([tag(CONFIG), config]));
  t.throws(() => p.push(bytesOf('05')), StreamFormatError);
  t.match(formatError(concatBytes([tag(CONFIG), config, tag(END)]), {}), {
    offset: 0,
    message: /config state size is unknown/,
  });
});

t.test('size limits', async (t) => {
  const header = (size: bigint): Uint8Array => bytesOf(DATA, size.toString(16).padStart(16, '0'));
  t.match(formatError(header(2n ** 64n - 1n)), { offset: 8, tag: VFIO_MIG_FLAG_DEV_DATA_STATE, message: /exceeds maxDataSize/ });
  t.match(formatError(header(BigInt(DEFAULT_MAX_DATA_SIZE) + 1n)), { offset: 8 });
  t.match(formatError(concatBytes([encodeSetupState(), header(1001n)]), { maxDataSize: 1000 }), { offset: 24 });
  const atLimit = parse([encodeDataState(pattern(1000, 0)), encodeEndOfState()], { maxDataSize: 1000 });
  t.equal(atLimit.length, 4, 'a record of exactly maxDataSize is accepted');
  // A size under the limit is not buffered: the parser waits for the bytes, and truncation is reported at end().
  const q = new VfioStreamParser();
  t.same(q.push(header(BigInt(DEFAULT_MAX_DATA_SIZE))), [{ kind: 'data-begin', offset: 0, size: DEFAULT_MAX_DATA_SIZE }]);
  t.throws(() => q.end(), { code: 'ERR_VFIO_STREAM_FORMAT', offset: 16, message: /payload truncated, 68719476736 bytes missing/ });

  t.throws(() => new VfioStreamParser({ configStateSize: 2 ** 20 + 1 }), VfioArgumentError, 'config above the default maxConfigSize');
  t.throws(() => new VfioStreamParser({ configStateSize: 100, maxConfigSize: 99 }), VfioArgumentError);
  t.doesNotThrow(() => new VfioStreamParser({ configStateSize: 100, maxConfigSize: 100 }));
  t.throws(() => new VfioStreamParser({ maxDataSize: -1 }), VfioArgumentError);
  t.throws(() => new VfioStreamParser({ maxDataSize: 2 ** 53 }), VfioArgumentError);
});

t.test('truncation: end() fails everywhere except between sections', async (t) => {
  const s = typicalStream();
  const boundaries = new Set([0, ...s.vfioBoundaries]);
  let failures = 0;
  for (let k = 0; k <= s.vfioOnly.length; k++) {
    const p = new VfioStreamParser({ configStateSize: CONFIG_SIZE });
    p.push(s.vfioOnly.subarray(0, k));
    let err: unknown;
    try {
      p.end();
    } catch (e) {
      err = e;
    }
    if (boundaries.has(k)) {
      if (err !== undefined) t.fail(`a cut at section boundary ${k} is a complete stream`);
    } else if (err instanceof StreamFormatError && err.offset === k) {
      failures++;
    } else {
      t.fail(`cut at ${k}: ${String(err)}`);
    }
  }
  t.equal(failures, s.vfioOnly.length + 1 - boundaries.size, 'every other cut is a StreamFormatError at the cut');
  const inTag = new VfioStreamParser();
  inTag.push(bytesOf('ffffffff'));
  t.throws(() => inTag.end(), { offset: 4, message: /truncated inside a tag/ });
  const inConfig = new VfioStreamParser({ configStateSize: 10 });
  inConfig.push(bytesOf(CONFIG, '0102'));
  t.throws(() => inConfig.end(), { offset: 10, tag: VFIO_MIG_FLAG_DEV_CONFIG_STATE, message: /inside the 10-byte config state/ });
  const beforeEnd = new VfioStreamParser();
  beforeEnd.push(bytesOf(SETUP, 'ffff'));
  t.throws(() => beforeEnd.end(), { offset: 10, tag: VFIO_MIG_FLAG_DEV_SETUP_STATE, message: /before its END_OF_STATE/ });
  const inSize = new VfioStreamParser();
  inSize.push(bytesOf(DATA, '00'));
  t.throws(() => inSize.end(), { offset: 9, message: /DEV_DATA_STATE truncated inside its size/ });
});

t.test('after an error the parser keeps failing with the same error', async (t) => {
  const p = new VfioStreamParser();
  const first = caught(() => p.push(bytesOf('00'.repeat(8))));
  t.ok(first instanceof StreamFormatError);
  t.equal(caught(() => p.push(encodeEndOfState())), first, 'push() throws the same error');
  t.equal(caught(() => p.end()), first, 'end() throws the same error');
  const q = new VfioStreamParser();
  q.push(bytesOf('ff'));
  const atEnd = caught(() => q.end());
  t.ok(atEnd instanceof StreamFormatError);
  t.equal(caught(() => q.end()), atEnd, 'end() failures stick too');
});

t.test('VfioSectionParser stops at the end of its section', async (t) => {
  const p = new VfioSectionParser();
  t.ok(p.ended, 'idle before begin()');
  const bytes = concatBytes([encodeDataState(pattern(4, 0)), encodeEndOfState(), bytesOf('7e 00000002')]);
  p.begin(1000);
  const records: VfioRecord[] = [];
  const used = p.feed(bytes, 0, (r) => records.push(r));
  t.equal(used, bytes.length - 5, 'the footer is left for the caller');
  t.ok(p.ended);
  t.same(
    records.map((r) => [r.kind, r.offset]),
    [
      ['data-begin', 1000],
      ['data', 1016],
      ['data-end', 1020],
      ['end-of-state', 1020],
    ],
    'offsets count from begin()',
  );
  t.equal(p.feed(bytes, used, () => t.fail('no records after the end')), 0);
  t.doesNotThrow(() => p.finish());
  p.begin(0);
  t.throws(() => p.finish(), StreamFormatError, 'a begun, empty section is incomplete');
});
