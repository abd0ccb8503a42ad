/**
 * QEMU's savevm framing around VFIO content (lib/migration/sections.ts):
 * golden bytes of the writers (vfio-reference.md §5.1), the typical
 * single-device stream of §5.3 end to end, split at every offset and byte by
 * byte, several devices, and the framing errors QEMU's loader reports.
 */
import t from 'tap';
import { StreamFormatError, VfioArgumentError } from '../lib/errors.js';
import {
  encodeEof,
  encodeFileHeader,
  encodeSectionFooter,
  encodeSectionHeader,
  QEMU_VM_FILE_MAGIC,
  QEMU_VM_FILE_VERSION,
  QEMU_VM_SECTION_END,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_SECTION_PART,
  QEMU_VM_SECTION_START,
  SavevmParser,
  type FullSectionHeader,
  type SavevmParserOptions,
  type SavevmRecord,
} from '../lib/migration/sections.js';
import { encodeDevConfigState, encodeDataState, encodeEndOfState, encodeSetupState, VFIO_MIG_FLAG_DEV_DATA_STATE } from '../lib/migration/stream.js';
import { CONFIG_SIZE, IDSTR, concatBytes, normalizeSavevm, pattern, StreamBuilder, typicalStream } from './helpers/migration-streams.js';
import { bytesOf, hexOf, toHex } from './helpers/uapi-hex.js';

const OPTIONS: SavevmParserOptions = { device: () => ({ configStateSize: CONFIG_SIZE }) };

function parse(chunks: readonly Uint8Array[], options: SavevmParserOptions = OPTIONS): SavevmRecord[] {
  const p = new SavevmParser(options);
  const out: SavevmRecord[] = [];
  for (const c of chunks) out.push(...p.push(c));
  p.end();
  return out;
}

function formatError(bytes: Uint8Array, options: SavevmParserOptions = OPTIONS): StreamFormatError {
  try {
    parse([bytes], options);
  } catch (err) {
    if (err instanceof StreamFormatError) return err;
    throw err;
  }
  throw new Error('expected a StreamFormatError');
}

/** A compact, human-checkable rendering of the records. */
function render(records: readonly SavevmRecord[]): string[] {
  return normalizeSavevm(records).map((r) => {
    switch (r.kind) {
      case 'file-header':
        return `@${r.offset} header v${r.version}`;
      case 'section-header': {
        const h = r.header;
        const named = h.type === QEMU_VM_SECTION_START || h.type === QEMU_VM_SECTION_FULL ? ` ${h.idstr} i${h.instanceId} v${h.versionId}` : '';
        return `@${r.offset} section ${h.type} id ${h.sectionId}${named} (device ${r.device.idstr})`;
      }
      case 'vfio': {
        const v = r.record;
        const extra = 'size' in v && v.size !== undefined ? ` ${v.size}` : 'hex' in v ? ` ${v.hex.length / 2}B` : '';
        return `  @${v.offset} ${r.sectionId}: ${v.kind}${extra}`;
      }
      case 'section-footer':
        return `@${r.offset} footer ${r.sectionId}`;
      case 'eof':
        return `@${r.offset} eof`;
    }
  });
}

const START_HEADER: FullSectionHeader = { type: QEMU_VM_SECTION_START, sectionId: 2, idstr: IDSTR, instanceId: 0, versionId: 1 };


/** What `fn` throws (undefined if it returns). */
function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

t.test('writers: golden bytes of §5.1', async (t) => {
  t.equal(QEMU_VM_FILE_MAGIC, 0x5145564d);
  t.equal(QEMU_VM_FILE_VERSION, 3);
  t.equal(toHex(encodeFileHeader()), hexOf('51 45 56 4d', '00 00 00 03'), 'QEVM, version 3');
  const idstr = toHex(new TextEncoder().encode(IDSTR)); // "0000:00:05.0/vfio", 17 bytes
  t.equal(idstr, '303030303a30303a30352e302f7666696f');
  t.equal(toHex(encodeSectionHeader(START_HEADER)), hexOf('01', '00000002', '11', idstr, '00000000', '00000001'), 'START');
  t.equal(
    toHex(encodeSectionHeader({ ...START_HEADER, type: QEMU_VM_SECTION_FULL, sectionId: 0x01020304, instanceId: 7, versionId: 0xfffffffe })),
    hexOf('04', '01020304', '11', idstr, '00000007', 'fffffffe'),
    'FULL',
  );
  t.equal(toHex(encodeSectionHeader({ type: QEMU_VM_SECTION_PART, sectionId: 2 })), hexOf('02 00000002'), 'PART');
  t.equal(toHex(encodeSectionHeader({ type: QEMU_VM_SECTION_END, sectionId: 0xffffffff })), hexOf('03 ffffffff'), 'END');
  t.equal(toHex(encodeSectionHeader({ ...START_HEADER, idstr: '' })), hexOf('01 00000002 00 00000000 00000001'), 'empty idstr');
  t.equal(toHex(encodeSectionFooter(2)), hexOf('7e 00000002'), 'footer');
  t.equal(toHex(encodeEof()), '00');

  t.throws(() => encodeSectionHeader({ ...START_HEADER, idstr: 'x'.repeat(256) }), VfioArgumentError, 'idstr over 255 bytes');
  t.doesNotThrow(() => encodeSectionHeader({ ...START_HEADER, idstr: 'x'.repeat(255) }));
  t.throws(() => encodeSectionHeader({ ...START_HEADER, idstr: 'é'.repeat(128) }), VfioArgumentError, 'the limit is in UTF-8 bytes');
  t.throws(() => encodeSectionHeader({ type: QEMU_VM_SECTION_PART, sectionId: -1 }), VfioArgumentError);
  t.throws(() => encodeSectionHeader({ type: QEMU_VM_SECTION_PART, sectionId: 2 ** 32 }), VfioArgumentError);
  t.throws(() => encodeSectionHeader({ ...START_HEADER, instanceId: 1.5 }), VfioArgumentError);
  t.throws(() => encodeSectionFooter(2 ** 32), VfioArgumentError);
});

t.test('the typical single-device stream of §5.3, end to end', async (t) => {
  const s = typicalStream();
  const hdr = 1 + 4 + 1 + IDSTR.length + 8; // 31: START/FULL header with this idstr
  t.equal(hdr, 31);
  t.same(render(parse([s.bytes])), [
    '@0 header v3',
    `@8 section 1 id 2 ${IDSTR} i0 v1 (device ${IDSTR})`,
    '  @39 2: setup',
    '@55 footer 2',
    `@60 section 2 id 2 (device ${IDSTR})`,
    '  @65 2: data-begin 100',
    '  @81 2: data 100B',
    '  @181 2: data-end',
    '  @181 2: end-of-state',
    '@189 footer 2',
    `@194 section 2 id 2 (device ${IDSTR})`,
    '  @199 2: end-of-state',
    '@207 footer 2',
    `@212 section 2 id 2 (device ${IDSTR})`,
    '  @217 2: data-begin 37',
    '  @233 2: data 37B',
    '  @270 2: data-end',
    '  @270 2: init-data-sent',
    '@278 footer 2',
    `@283 section 3 id 2 (device ${IDSTR})`,
    '  @288 2: data-begin 300',
    '  @304 2: data 300B',
    '  @604 2: data-end',
    '  @604 2: data-begin 5',
    '  @620 2: data 5B',
    '  @625 2: data-end',
    '  @625 2: end-of-state',
    '@633 footer 2',
    `@638 section 4 id 2 ${IDSTR} i0 v1 (device ${IDSTR})`,
    `  @669 2: config ${CONFIG_SIZE}B`,
    `@${669 + 8 + CONFIG_SIZE + 8} footer 2`,
    `@${669 + 16 + CONFIG_SIZE + 5} eof`,
  ]);
  t.equal(s.bytes.length, 669 + 16 + CONFIG_SIZE + 5 + 1);
  const records = normalizeSavevm(parse([s.bytes]));
  const config = records.find((r) => r.kind === 'vfio' && r.record.kind === 'config');
  t.same(config?.kind === 'vfio' && 'hex' in config.record ? config.record.hex : undefined, toHex(pattern(CONFIG_SIZE, 0xff)), 'config bytes intact');
  const data = records.filter((r) => r.kind === 'vfio' && r.record.kind === 'data');
  t.same(
    data.map((r) => (r.kind === 'vfio' && 'hex' in r.record ? r.record.hex : '')),
    [pattern(100, 1), pattern(37, 2), pattern(300, 3), pattern(5, 4)].map(toHex),
    'payloads intact',
  );
});

t.test('split at every offset, and byte by byte: identical records', async (t) => {
  const { bytes } = typicalStream();
  const whole = JSON.stringify(normalizeSavevm(parse([bytes])));
  let checked = 0;
  for (let k = 0; k <= bytes.length; k++) {
    const split = JSON.stringify(normalizeSavevm(parse([bytes.subarray(0, k), bytes.subarray(k)])));
    if (split !== whole) t.fail(`split at ${k} differs`);
    checked++;
  }
  t.equal(checked, bytes.length + 1, `${checked} two-way splits`);
  const bytewise = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  t.equal(JSON.stringify(normalizeSavevm(parse(bytewise))), whole, 'byte by byte');
  t.equal(JSON.stringify(normalizeSavevm(parse([new Uint8Array(0), bytes, new Uint8Array(0)]))), whole, 'empty chunks are harmless');
});

t.test('without the file header, and with several devices', async (t) => {
  const s = typicalStream({ fileHeader: false, sectionId: 9 });
  const records = parse([s.bytes]);
  t.equal(records[0]?.kind, 'section-header', 'the header is optional');
  t.equal(records.at(-1)?.kind, 'eof');

  // Two devices with different config sizes, interleaved as QEMU orders them.
  const b = new StreamBuilder()
    .fileHeader()
    .full('start', 2, 'dev-a/vfio', [encodeSetupState()])
    .full('start', 3, 'dev-b/vfio', [encodeSetupState()])
    .part('end', 2, [encodeDataState(pattern(10, 1)), encodeEndOfState()])
    .part('end', 3, [encodeDataState(pattern(20, 2)), encodeEndOfState()])
    .full('full', 2, 'dev-a/vfio', [encodeDevConfigState(pattern(4, 3))])
    .full('full', 3, 'dev-b/vfio', [encodeDevConfigState(pattern(6, 4))])
    .eof()
    .build();
  const sizes: Record<string, number> = { 'dev-a/vfio': 4, 'dev-b/vfio': 6 };
  const seen: string[] = [];
  const out = parse([b.bytes], {
    device: (h) => {
      seen.push(`${h.idstr}#${h.sectionId}`);
      return { configStateSize: sizes[h.idstr] ?? 0 };
    },
  });
  t.same(seen, ['dev-a/vfio#2', 'dev-b/vfio#3'], 'options are asked once per device; FULL reuses the START binding');
  const configs = out.flatMap((r) => (r.kind === 'vfio' && r.record.kind === 'config' ? [[r.sectionId, toHex(r.record.bytes)]] : []));
  t.same(configs, [
    [2, toHex(pattern(4, 3))],
    [3, toHex(pattern(6, 4))],
  ]);
  const parts = out.flatMap((r) => (r.kind === 'section-header' && r.header.type === QEMU_VM_SECTION_END ? [r.device.idstr] : []));
  t.same(parts, ['dev-a/vfio', 'dev-b/vfio'], 'END sections know their device');

  const noConfig = new StreamBuilder().full('start', 1, 'any', [encodeSetupState()]).eof().build();
  t.same(
    parse([noConfig.bytes], {}).map((r) => r.kind),
    ['section-header', 'vfio', 'section-footer', 'eof'],
    'by default every section is a VFIO device with default options',
  );
  t.match(formatError(typicalStream().bytes, {}), { message: /config state size is unknown/ }, '(which cannot read a config state)');
});

t.test('framing errors', async (t) => {
  const s = typicalStream();
  const withByte = (at: number, value: number): Uint8Array => {
    const copy = s.bytes.slice();
    copy[at] = value;
    return copy;
  };
  const cases: Array<[string, Uint8Array, object, SavevmParserOptions?]> = [
    ['bad magic', withByte(3, 0x4e), { offset: 0, message: /bad savevm file magic 0x5145564e/ }],
    ['version 2', withByte(7, 2), { offset: 4, message: /unsupported savevm file version 2/ }],
    ['unknown section type', withByte(8, 0x09), { offset: 8, message: /unknown section type 0x9/ }],
    ['a command section', withByte(8, 0x08), { offset: 8, message: /QEMU_VM_COMMAND is not supported/ }],
    ['a stray footer', bytesOf('7e 00000002'), { offset: 0, message: /QEMU_VM_SECTION_FOOTER is not supported/ }],
    ['a PART before any START', bytesOf('02 00000002'), { offset: 1, message: /section 2 was never started/ }],
    ['missing footer', withByte(55, 0x02), { offset: 55, message: /section 2 is not followed by its footer \(found 0x2\)/ }],
    ['footer with another id', withByte(59, 0x03), { offset: 56, message: /footer of section 2 carries section id 3/ }],
    ['bytes after EOF', concatBytes([s.bytes, bytesOf('00')]), { offset: s.bytes.length, message: /bytes after QEMU_VM_EOF/ }],
    ['an unknown device', s.bytes, { offset: 8, message: /unknown device "0000:00:05.0\/vfio" instance 0 version 1 in section 2/ }, { device: () => undefined }],
    ['an unknown VFIO tag inside a section, at its absolute offset', withByte(46, 0x09), { offset: 39, tag: 0xffffffffef100009n }],
    [
      'a DATA size over the limit inside a section',
      s.bytes,
      { offset: 73, tag: VFIO_MIG_FLAG_DEV_DATA_STATE, message: /size 100 exceeds maxDataSize 99/ },
      { device: () => ({ configStateSize: CONFIG_SIZE, maxDataSize: 99 }) },
    ],
  ];
  for (const [label, bytes, want, options] of cases) t.match(formatError(bytes, options), { code: 'ERR_VFIO_STREAM_FORMAT', ...want }, label);

  const reused = new StreamBuilder()
    .full('start', 2, 'dev-a/vfio', [encodeSetupState()])
    .full('start', 2, 'dev-b/vfio', [encodeSetupState()])
    .eof()
    .build();
  t.match(formatError(reused.bytes), { offset: reused.sections[1]?.start, message: /section 2 names "dev-b\/vfio" instance 0, but it belongs to "dev-a\/vfio" instance 0/ });
  t.match(formatError(new Uint8Array(0)), { offset: 0, message: /truncated before the first byte/ });
});

t.test('truncation at every offset is a StreamFormatError at the cut', async (t) => {
  const { bytes } = typicalStream();
  let ok = 0;
  for (let k = 0; k < bytes.length; k++) {
    const p = new SavevmParser(OPTIONS);
    p.push(bytes.subarray(0, k));
    try {
      p.end();
      t.fail(`a cut at ${k} was accepted`);
    } catch (err) {
      if (err instanceof StreamFormatError && err.offset === k) ok++;
      else t.fail(`cut at ${k}: ${String(err)}`);
    }
  }
  t.equal(ok, bytes.length);
  const wheres = (k: number): string => {
    const p = new SavevmParser(OPTIONS);
    p.push(bytes.subarray(0, k));
    const err = caught(() => p.end());
    return err instanceof Error ? err.message : 'accepted';
  };
  t.match(wheres(4), /inside the file header/);
  t.match(wheres(8), /where a section type or QEMU_VM_EOF was expected/);
  t.match(wheres(20), /inside a section header/);
  t.match(wheres(39), /VFIO stream truncated where a tag was expected/);
  t.match(wheres(100), /DEV_DATA_STATE payload truncated/);
  t.match(wheres(57), /inside a section footer/);
  t.equal(wheres(bytes.length), 'accepted');
});

t.test('after an error the parser keeps failing with the same error', async (t) => {
  const p = new SavevmParser();
  const first = caught(() => p.push(bytesOf('09')));
  t.ok(first instanceof StreamFormatError);
  t.equal(caught(() => p.push(encodeEof())), first, 'push() throws the same error');
  t.equal(caught(() => p.end()), first, 'end() throws the same error');
  t.equal(p.offset, 1);
});
