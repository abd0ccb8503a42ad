/**
 * vfio-ts's opt-in config-before-data records in lib/migration/stream.ts:
 * golden bytes of the three tags and their writers (as the README documents
 * them), the parser's rules with `configBeforeData`, and the refusal a
 * default (QEMU-compatible) reader gives such a stream: at its first byte,
 * naming the mode.
 */
import t from 'tap';
import { StreamFormatError } from '../lib/errors.js';
import { SavevmParser } from '../lib/migration/sections.js';
import {
  encodeConfigBeforeDataSetup,
  encodeDataState,
  encodeDevConfigNoIrq,
  encodeEnableIrq,
  encodeEndOfState,
  VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA,
  VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ,
  VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ,
  vfioTagName,
  type VfioParserOptions,
  type VfioRecord,
} from '../lib/migration/stream.js';
import { configFirstStream } from './helpers/config-first-streams.js';
import { CONFIG_SIZE, concatBytes, disagreeingSplits, normalizeVfio, parseVfio, pattern, vfioFormatError } from './helpers/migration-streams.js';
import { bytesOf, hexOf, toHex } from './helpers/uapi-hex.js';

const MODE = 'ffffffffef10f001';
const NO_IRQ = 'ffffffffef10f002';
const ENABLE_IRQ = 'ffffffffef10f003';
const END = 'ffffffffef100001';
const SETUP = 'ffffffffef100003';
const CONFIG = 'ffffffffef100002';
const WITH_MODE: VfioParserOptions = { configStateSize: CONFIG_SIZE, configBeforeData: true };

const parse = (bytes: Uint8Array, options: VfioParserOptions = WITH_MODE): VfioRecord[] => parseVfio([bytes], options);
const formatError = (bytes: Uint8Array, options: VfioParserOptions = WITH_MODE): StreamFormatError => vfioFormatError(bytes, options);

t.test('the tags: 0xffffffff:ef10:f00N, big-endian, outside QEMU\'s codes', async (t) => {
  t.equal(VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA, 0xffffffffef10f001n);
  t.equal(VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ, 0xffffffffef10f002n);
  t.equal(VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ, 0xffffffffef10f003n);
  t.equal(vfioTagName(VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA), 'CONFIG_BEFORE_DATA');
  t.equal(vfioTagName(VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ), 'DEV_CONFIG_NO_IRQ');
  t.equal(vfioTagName(VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ), 'DEV_ENABLE_IRQ');
  t.equal(toHex(encodeConfigBeforeDataSetup()), hexOf('ff ff ff ff ef 10 f0 01', SETUP, END), 'save_setup: the declaration, then QEMU\'s setup record');
  t.equal(toHex(encodeDevConfigNoIrq(bytesOf('01 02 03'))), hexOf(NO_IRQ, '01 02 03'), 'a config record: tag and vmstate, no END_OF_STATE');
  t.equal(toHex(encodeEnableIrq()), hexOf(ENABLE_IRQ, END), 'save_state: the enable record only');
});

t.test('the typical stream in the mode, record by record', async (t) => {
  const s = configFirstStream();
  const records = normalizeVfio(parse(s.vfioOnly));
  t.same(records, [
    { kind: 'config-mode', offset: 0 },
    { kind: 'setup', offset: 8 },
    { kind: 'config-early', offset: 24, hex: toHex(pattern(CONFIG_SIZE, 0x10)) },
    { kind: 'data-begin', offset: 96, size: 100 },
    { kind: 'data', offset: 112, hex: toHex(pattern(100, 1)) },
    { kind: 'data-end', offset: 212 },
    { kind: 'end-of-state', offset: 212 },
    { kind: 'end-of-state', offset: 220 },
    { kind: 'data-begin', offset: 228, size: 37 },
    { kind: 'data', offset: 244, hex: toHex(pattern(37, 2)) },
    { kind: 'data-end', offset: 281 },
    { kind: 'init-data-sent', offset: 281 },
    { kind: 'config-early', offset: 289, hex: toHex(pattern(CONFIG_SIZE, 0x20)) },
    { kind: 'data-begin', offset: 361, size: 300 },
    { kind: 'data', offset: 377, hex: toHex(pattern(300, 3)) },
    { kind: 'data-end', offset: 677 },
    { kind: 'data-begin', offset: 677, size: 5 },
    { kind: 'data', offset: 693, hex: toHex(pattern(5, 4)) },
    { kind: 'data-end', offset: 698 },
    { kind: 'end-of-state', offset: 698 },
    { kind: 'enable-interrupts', offset: 706 },
  ]);
  t.same(disagreeingSplits(s.vfioOnly, WITH_MODE), [], 'split at every offset, and byte by byte: the same records');
});

t.test('a default reader refuses the mode at its first tag, naming it', async (t) => {
  const { vfioOnly, bytes } = configFirstStream();
  const e = formatError(vfioOnly, { configStateSize: CONFIG_SIZE });
  t.equal(
    e.message,
    "VFIO tag CONFIG_BEFORE_DATA belongs to vfio-ts's opt-in config-before-data mode, which this reader does not accept (set configBeforeData to read it) (at byte 0, tag 0xffffffffef10f001)",
  );
  t.match(e, { code: 'ERR_VFIO_STREAM_FORMAT', offset: 0, tag: VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA });
  const savevm = new SavevmParser({ device: () => ({ configStateSize: CONFIG_SIZE }) });
  t.throws(() => savevm.push(bytes), { code: 'ERR_VFIO_STREAM_FORMAT', offset: 8 + 1 + 4 + 1 + 17 + 8, message: /config-before-data mode/ }, 'in a savevm stream: right after the START header');
  t.match(formatError(encodeDevConfigNoIrq(pattern(CONFIG_SIZE, 1)), { configStateSize: CONFIG_SIZE }), { offset: 0, message: /DEV_CONFIG_NO_IRQ belongs to/ });
  t.match(formatError(encodeEnableIrq(), { configStateSize: CONFIG_SIZE }), { offset: 0, message: /DEV_ENABLE_IRQ belongs to/ });
  t.match(formatError(bytesOf('ffffffffef10f004')), { message: /^unknown VFIO tag 0xffffffffef10f004/ }, 'no fourth tag');
});

t.test('rules of the records', async (t) => {
  const kinds = (bytes: Uint8Array, options: VfioParserOptions = WITH_MODE): string[] => parse(bytes, options).map((r) => r.kind);
  t.same(kinds(concatBytes([encodeDevConfigNoIrq(pattern(CONFIG_SIZE, 1)), encodeEndOfState()])), ['config-early', 'end-of-state'], 'the section goes on after a config record');
  t.same(kinds(concatBytes([encodeDevConfigNoIrq(new Uint8Array(0)), encodeEndOfState()]), { configStateSize: 0, configBeforeData: true }), ['config-early', 'end-of-state']);
  t.same(kinds(bytesOf(MODE, END)), ['config-mode', 'end-of-state']);
  t.match(formatError(bytesOf(ENABLE_IRQ, SETUP)), { offset: 8, message: /DEV_ENABLE_IRQ must be followed by END_OF_STATE, found DEV_SETUP_STATE/ });
  t.match(formatError(bytesOf(NO_IRQ, '0102')), { offset: 10, message: /DEV_CONFIG_NO_IRQ truncated inside the 64-byte config state/ });
  t.match(formatError(bytesOf(NO_IRQ), { configBeforeData: true }), { offset: 0, message: /DEV_CONFIG_NO_IRQ found but the config state size is unknown/ });
  t.same(kinds(concatBytes([bytesOf(CONFIG), pattern(CONFIG_SIZE, 1), bytesOf(END)])), ['config'], "QEMU's records stay readable");
  t.same(kinds(concatBytes([encodeDataState(pattern(3, 1)), encodeEnableIrq()])), ['data-begin', 'data', 'data-end', 'enable-interrupts'], 'placement is the hooks\' business');
});
