/**
 * QEMU's VFIO device framing (hw/vfio/migration.c, v2), byte-exact: the
 * big-endian u64 delimiters `0xffffffffef10000N`, writers for the records each
 * save hook emits, and an incremental parser with `vfio_load_state`'s rules.
 *
 * The parser never buffers a DATA payload: it hands it on as views of the
 * input chunks, so a device state of any size streams through in memory bounded
 * by the chunk size. Only the config state (small, sized by the destination) is
 * collected into one buffer, because QEMU's vmstate carries no length.
 *
 * vfio-ts's opt-in "config before data" mode (the 2020 ordering thread's
 * proposal, README "Config-state ordering and the opt-in mode") adds three
 * tags of its own, outside QEMU's numbering: a declaration that opens the
 * setup section, a config record that travels with the data and must not
 * enable interrupts, and the record of `save_state` that enables them. A
 * parser accepts them only with {@link VfioParserOptions.configBeforeData};
 * otherwise, like QEMU, it refuses the declaration as an unknown tag, first
 * thing in the stream, and its error names the mode.
 */
import { concatBytes } from '../bytes.js';
import { StreamFormatError, VfioArgumentError } from '../errors.js';

/** Ends a section's VFIO content (QEMU 5.2). */
export const VFIO_MIG_FLAG_END_OF_STATE = 0xffffffffef100001n;
/** Starts the config vmstate, sent in the non-iterable FULL section (QEMU 5.2). */
export const VFIO_MIG_FLAG_DEV_CONFIG_STATE = 0xffffffffef100002n;
/** The whole content of the START section, with END_OF_STATE (QEMU 5.2). */
export const VFIO_MIG_FLAG_DEV_SETUP_STATE = 0xffffffffef100003n;
/** Starts a data record: be64 size, then that many bytes read from the data fd (QEMU 5.2). */
export const VFIO_MIG_FLAG_DEV_DATA_STATE = 0xffffffffef100004n;
/** Ends a precopy section once the initial bytes are sent, for switchover-ack (QEMU 8.1). */
export const VFIO_MIG_FLAG_DEV_INIT_DATA_SENT = 0xffffffffef100005n;
/** Lets the destination load the config (multifd with load-config-after-iter, QEMU 10.x). */
export const VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY = 0xffffffffef100006n;

/**
 * vfio-ts, config-before-data mode: opens the START section, before
 * DEV_SETUP_STATE. The code 0xf001 is far above QEMU's (which count up from
 * 0x0001), so no QEMU tag will take it; QEMU refuses it as an unknown tag.
 */
export const VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA = 0xffffffffef10f001n;
/**
 * vfio-ts, config-before-data mode: the config vmstate follows (as after
 * DEV_CONFIG_STATE, no length); load it, do not enable interrupts. The
 * section goes on (DATA records, then END_OF_STATE).
 */
export const VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ = 0xffffffffef10f002n;
/** vfio-ts, config-before-data mode: the whole content of the FULL section, with END_OF_STATE: enable interrupts now. */
export const VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ = 0xffffffffef10f003n;

/** Bytes of a tag, and of a DATA size, on the wire. */
export const VFIO_TAG_SIZE = 8;
/** Bytes of a DATA record before its payload: the tag and the be64 size. */
export const VFIO_DATA_HEADER_SIZE = 2 * VFIO_TAG_SIZE;
/** Default {@link VfioParserOptions.maxDataSize}: 64 GiB per DATA record. */
export const DEFAULT_MAX_DATA_SIZE = 64 * 2 ** 30;
/** Default {@link VfioParserOptions.maxConfigSize}: 1 MiB (a PCIe config image with a full MSI-X table is about 37 KiB). */
export const DEFAULT_MAX_CONFIG_SIZE = 2 ** 20;

/** QEMU_VM_SUBSECTION: a vmstate subsection marker, which no VFIO tag starts with. */
const VMSTATE_SUBSECTION = 0x05;
const MAX_U64 = 0xffffffffffffffffn;

// ---------------------------------------------------------------------------
// Writers

/** One tag as 8 big-endian bytes. */
export function encodeTag(tag: bigint): Uint8Array {
  if (tag < 0n || tag > MAX_U64) throw new VfioArgumentError('encodeTag', `tag ${tag} is not a u64`);
  const out = new Uint8Array(VFIO_TAG_SIZE);
  new DataView(out.buffer).setBigUint64(0, tag);
  return out;
}

/** What `save_setup` emits: `DEV_SETUP_STATE, END_OF_STATE`. */
export function encodeSetupState(): Uint8Array {
  return concatBytes([encodeTag(VFIO_MIG_FLAG_DEV_SETUP_STATE), encodeTag(VFIO_MIG_FLAG_END_OF_STATE)]);
}

/**
 * The 16 bytes before a data payload: `DEV_DATA_STATE, be64 size`. Emit the
 * payload after it as a separate write, e.g. straight from the buffer it was read into.
 */
export function encodeDataHeader(size: number): Uint8Array {
  if (!Number.isSafeInteger(size) || size < 0) throw new VfioArgumentError('encodeDataHeader', `size ${size} is not a non-negative safe integer`);
  const out = new Uint8Array(VFIO_DATA_HEADER_SIZE);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, VFIO_MIG_FLAG_DEV_DATA_STATE);
  view.setBigUint64(VFIO_TAG_SIZE, BigInt(size));
  return out;
}

/** A whole data record, `DEV_DATA_STATE, be64 n, n bytes`, in one (copied) buffer. */
export function encodeDataState(payload: Uint8Array): Uint8Array {
  return concatBytes([encodeDataHeader(payload.byteLength), payload]);
}

/** The usual terminator of a section's VFIO content. */
export function encodeEndOfState(): Uint8Array {
  return encodeTag(VFIO_MIG_FLAG_END_OF_STATE);
}

/** The terminator of the precopy section that sent the last initial byte (switchover-ack). */
export function encodeInitDataSent(): Uint8Array {
  return encodeTag(VFIO_MIG_FLAG_DEV_INIT_DATA_SENT);
}

/** What `save_state` emits: `DEV_CONFIG_STATE, <vmstate bytes>, END_OF_STATE`. */
export function encodeDevConfigState(vmstate: Uint8Array): Uint8Array {
  return concatBytes([encodeTag(VFIO_MIG_FLAG_DEV_CONFIG_STATE), vmstate, encodeTag(VFIO_MIG_FLAG_END_OF_STATE)]);
}

/** What `save_setup` emits in the config-before-data mode: `CONFIG_BEFORE_DATA, DEV_SETUP_STATE, END_OF_STATE`. */
export function encodeConfigBeforeDataSetup(): Uint8Array {
  return concatBytes([encodeTag(VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA), encodeSetupState()]);
}

/** A config record of the config-before-data mode: `DEV_CONFIG_NO_IRQ, <vmstate bytes>`; the section goes on. */
export function encodeDevConfigNoIrq(vmstate: Uint8Array): Uint8Array {
  return concatBytes([encodeTag(VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ), vmstate]);
}

/** What `save_state` emits in the config-before-data mode: `DEV_ENABLE_IRQ, END_OF_STATE`. */
export function encodeEnableIrq(): Uint8Array {
  return concatBytes([encodeTag(VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ), encodeTag(VFIO_MIG_FLAG_END_OF_STATE)]);
}


// ---------------------------------------------------------------------------
// Records

/** The marker records a tag yields by itself. */
type TagMarker = 'setup' | 'end-of-state' | 'init-data-sent' | 'config-load-ready' | 'config-mode' | 'enable-interrupts';

/** Records that carry no bytes: the section-ending markers and the end of a data record. */
export interface VfioMarkerRecord {
  /**
   * `setup`: DEV_SETUP_STATE + END_OF_STATE; `end-of-state`: a bare END_OF_STATE;
   * `init-data-sent`, `config-load-ready`: those tags; `data-end`: the payload of
   * the current data record is complete. All but `data-end` end the section.
   * Config-before-data mode only: `config-mode`, the declaration (the section
   * goes on); `enable-interrupts`: DEV_ENABLE_IRQ + END_OF_STATE.
   */
  readonly kind: TagMarker | 'data-end';
  /** Stream offset of the tag (for `data-end`: of the first byte after the payload). */
  readonly offset: number;
}

/** A DEV_DATA_STATE header: `size` payload bytes follow as `data` records, then `data-end`. */
export interface VfioDataBeginRecord {
  readonly kind: 'data-begin';
  readonly offset: number;
  readonly size: number;
}

/**
 * A fragment of a data payload: a view of the pushed chunk (not a copy), valid
 * as long as the caller keeps that chunk's bytes unchanged.
 */
export interface VfioDataRecord {
  readonly kind: 'data';
  /** Stream offset of `bytes[0]`. */
  readonly offset: number;
  readonly bytes: Uint8Array;
}

/** DEV_CONFIG_STATE, the config vmstate (`bytes`, owned by the caller) and END_OF_STATE. Ends the section. */
export interface VfioConfigRecord {
  readonly kind: 'config';
  readonly offset: number;
  readonly bytes: Uint8Array;
}

/** Config-before-data mode: DEV_CONFIG_NO_IRQ and the config vmstate (`bytes`, owned by the caller). The section goes on. */
export interface VfioEarlyConfigRecord {
  readonly kind: 'config-early';
  readonly offset: number;
  readonly bytes: Uint8Array;
}

/** What the VFIO parser delivers, in stream order. */
export type VfioRecord = VfioMarkerRecord | VfioDataBeginRecord | VfioDataRecord | VfioConfigRecord | VfioEarlyConfigRecord;

/** Limits and the destination's expectations for {@link VfioSectionParser} and {@link VfioStreamParser}. */
export interface VfioParserOptions {
  /**
   * Bytes of config vmstate that follow DEV_CONFIG_STATE, as the destination
   * device will load them (QEMU's vmstate has no length prefix). Without it a
   * DEV_CONFIG_STATE is a format error.
   */
  configStateSize?: number;
  /** Largest DATA record accepted. Default {@link DEFAULT_MAX_DATA_SIZE}. */
  maxDataSize?: number;
  /** Largest `configStateSize` allowed. Default {@link DEFAULT_MAX_CONFIG_SIZE}. */
  maxConfigSize?: number;
  /**
   * Also accept vfio-ts's config-before-data records (the stream says in its
   * setup section whether it uses them). Default false: like QEMU, such a
   * stream is refused at its first tag.
   */
  configBeforeData?: boolean;
}

// ---------------------------------------------------------------------------
// The grammar: what follows each tag, as data, so a new tag is one entry.

/** What follows a tag, and what it does to the section, in `vfio_load_state`. */
type TagRule =
  /** be64 size and the payload; the loop goes on. */
  | { readonly name: string; readonly body: 'data'; readonly endsSection: false }
  /** The config vmstate, then END_OF_STATE; the section ends. */
  | { readonly name: string; readonly body: 'config'; readonly endsSection: true }
  /** The config vmstate, emitted as `config-early`; the loop goes on (config-before-data mode). */
  | { readonly name: string; readonly body: 'config-inline'; readonly endsSection: false }
  | {
      readonly name: string;
      readonly body: 'none';
      /** The record emitted once the item is complete. */
      readonly marker: TagMarker;
      /** QEMU then reads a be64 that must be END_OF_STATE. */
      readonly closedByEnd: boolean;
      /** QEMU's `vfio_load_state` returns: the section's VFIO content is over. */
      readonly endsSection: boolean;
    };

const QEMU_TAG_RULES: ReadonlyMap<bigint, TagRule> = new Map<bigint, TagRule>([
  [VFIO_MIG_FLAG_END_OF_STATE, { name: 'END_OF_STATE', body: 'none', marker: 'end-of-state', closedByEnd: false, endsSection: true }],
  [VFIO_MIG_FLAG_DEV_CONFIG_STATE, { name: 'DEV_CONFIG_STATE', body: 'config', endsSection: true }],
  [VFIO_MIG_FLAG_DEV_SETUP_STATE, { name: 'DEV_SETUP_STATE', body: 'none', marker: 'setup', closedByEnd: true, endsSection: true }],
  [VFIO_MIG_FLAG_DEV_DATA_STATE, { name: 'DEV_DATA_STATE', body: 'data', endsSection: false }],
  [VFIO_MIG_FLAG_DEV_INIT_DATA_SENT, { name: 'DEV_INIT_DATA_SENT', body: 'none', marker: 'init-data-sent', closedByEnd: false, endsSection: true }],
  [
    VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY,
    { name: 'DEV_CONFIG_LOAD_READY', body: 'none', marker: 'config-load-ready', closedByEnd: false, endsSection: true },
  ],
]);

/** vfio-ts's config-before-data records, added to QEMU's by {@link VfioParserOptions.configBeforeData}. */
const CONFIG_BEFORE_DATA_RULES: ReadonlyMap<bigint, TagRule> = new Map<bigint, TagRule>([
  [VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA, { name: 'CONFIG_BEFORE_DATA', body: 'none', marker: 'config-mode', closedByEnd: false, endsSection: false }],
  [VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ, { name: 'DEV_CONFIG_NO_IRQ', body: 'config-inline', endsSection: false }],
  [VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ, { name: 'DEV_ENABLE_IRQ', body: 'none', marker: 'enable-interrupts', closedByEnd: true, endsSection: true }],
]);
const WITH_CONFIG_BEFORE_DATA: ReadonlyMap<bigint, TagRule> = new Map([...QEMU_TAG_RULES, ...CONFIG_BEFORE_DATA_RULES]);

/** The name of a tag (`'DEV_DATA_STATE'`, vfio-ts's `'DEV_CONFIG_NO_IRQ'`), or its hex value if unknown. */
export function vfioTagName(tag: bigint): string {
  return WITH_CONFIG_BEFORE_DATA.get(tag)?.name ?? `0x${tag.toString(16)}`;
}

/** The error for a tag the reader's rules lack: vfio-ts's own tags say which mode they belong to. */
function unknownTag(tag: bigint, offset: number): StreamFormatError {
  const mode = CONFIG_BEFORE_DATA_RULES.get(tag);
  if (mode === undefined) return new StreamFormatError(`unknown VFIO tag ${vfioTagName(tag)}`, offset, tag);
  return new StreamFormatError(
    `VFIO tag ${mode.name} belongs to vfio-ts's opt-in config-before-data mode, which this reader does not accept (set configBeforeData to read it)`,
    offset,
    tag,
  );
}

// ---------------------------------------------------------------------------
// Parsers

/**
 * Collects a fixed-size field that may arrive split across chunks.
 * @internal shared by the framing parsers of lib/migration.
 */
export class FieldCollector {
  private readonly buf: Uint8Array;
  private readonly view: DataView;
  private need = 0;
  private have = 0;

  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
    this.view = new DataView(this.buf.buffer);
  }

  /** Starts collecting a field of `size` bytes (at most the capacity). */
  expect(size: number): void {
    this.need = size;
    this.have = 0;
  }

  /** Takes what it still needs from `chunk` at `pos`; returns the count taken. */
  fill(chunk: Uint8Array, pos: number): number {
    const n = Math.min(this.need - this.have, chunk.length - pos);
    this.buf.set(chunk.subarray(pos, pos + n), this.have);
    this.have += n;
    return n;
  }

  get complete(): boolean {
    return this.have === this.need;
  }

  /** Bytes collected so far. */
  get filled(): number {
    return this.have;
  }

  /** The field's bytes: a view of the collector's buffer. */
  get bytes(): Uint8Array {
    return this.buf.subarray(0, this.need);
  }

  u8(at: number): number {
    return this.view.getUint8(at);
  }

  u32(at: number): number {
    return this.view.getUint32(at);
  }

  u64(at: number): bigint {
    return this.view.getBigUint64(at);
  }
}

/** A tag and what follows it, while being parsed. */
interface Item {
  readonly tag: bigint;
  readonly rule: TagRule;
  /** Stream offset of the tag. */
  readonly offset: number;
}

type ParseState =
  | { readonly phase: 'tag' } // the head of QEMU's loop
  | { readonly phase: 'data-size'; readonly item: Item }
  | { readonly phase: 'data'; readonly item: Item; remaining: number }
  | { readonly phase: 'config'; readonly item: Item; readonly config: FieldCollector }
  /** END_OF_STATE must follow; `then` is the record the item yields once it does. */
  | { readonly phase: 'end'; readonly item: Item; readonly then: VfioRecord };

type State = ParseState | { readonly phase: 'ended' };

/**
 * Parses the VFIO content of **one** savevm section, as one call of QEMU's
 * `vfio_load_state` does: tags until END_OF_STATE; DEV_SETUP_STATE then
 * END_OF_STATE; DEV_CONFIG_STATE, vmstate, END_OF_STATE; DEV_INIT_DATA_SENT;
 * DEV_CONFIG_LOAD_READY. DATA records may come before any of these. Like
 * QEMU, it accepts any of them in any section; it stops at the section's last
 * byte so the caller can read what follows (the section footer).
 *
 * After it throws, its state is undefined: discard it or call {@link begin}.
 */
export class VfioSectionParser {
  private readonly rules: ReadonlyMap<bigint, TagRule>;
  private readonly configStateSize: number | undefined;
  private readonly maxDataSize: number;
  private readonly field = new FieldCollector(VFIO_TAG_SIZE);
  private state: State = { phase: 'ended' };
  private position = 0;
  /** Stream offset of the field being collected in `field`. */
  private fieldOffset = 0;

  /** @throws VfioArgumentError for a size that is not a non-negative safe integer, or `configStateSize` above `maxConfigSize` */
  constructor(options: VfioParserOptions = {}) {
    this.maxDataSize = checkSize('maxDataSize', options.maxDataSize ?? DEFAULT_MAX_DATA_SIZE);
    const maxConfigSize = checkSize('maxConfigSize', options.maxConfigSize ?? DEFAULT_MAX_CONFIG_SIZE);
    if (options.configStateSize !== undefined && checkSize('configStateSize', options.configStateSize) > maxConfigSize) {
      throw new VfioArgumentError('VfioSectionParser', `configStateSize ${options.configStateSize} exceeds maxConfigSize ${maxConfigSize}`);
    }
    this.configStateSize = options.configStateSize;
    this.rules = options.configBeforeData === true ? WITH_CONFIG_BEFORE_DATA : QEMU_TAG_RULES;
  }

  /** Starts a section whose first content byte is at stream offset `offset`. */
  begin(offset: number): void {
    this.position = offset;
    this.expectField({ phase: 'tag' });
  }

  /** True once the section's VFIO content is complete (and before the first {@link begin}). */
  get ended(): boolean {
    return this.state.phase === 'ended';
  }

  /**
   * Consumes bytes of `chunk` from `start` up to the end of the section,
   * passing each record to `emit` as soon as it is known.
   * @returns the number of bytes consumed: all of them unless the section ended
   * @throws StreamFormatError for an unknown or misplaced tag, or a size over a limit
   */
  feed(chunk: Uint8Array, start: number, emit: (record: VfioRecord) => void): number {
    let pos = start;
    while (pos < chunk.length) {
      const { state } = this;
      if (state.phase === 'ended') break;
      pos += this.step(state, chunk, pos, emit);
    }
    return pos - start;
  }

  /**
   * Declares the end of input.
   * @throws StreamFormatError if the section is not complete
   */
  finish(): void {
    const { state } = this;
    switch (state.phase) {
      case 'ended':
        return;
      case 'tag': {
        const where = this.field.filled > 0 ? 'inside a tag' : 'where a tag was expected (the section has not ended)';
        throw new StreamFormatError(`VFIO stream truncated ${where}`, this.position);
      }
      case 'data-size':
        throw new StreamFormatError('DEV_DATA_STATE truncated inside its size', this.position, state.item.tag);
      case 'data':
        throw new StreamFormatError(`DEV_DATA_STATE payload truncated, ${state.remaining} bytes missing`, this.position, state.item.tag);
      case 'config':
        throw new StreamFormatError(`${state.item.rule.name} truncated inside the ${state.config.bytes.length}-byte config state`, this.position, state.item.tag);
      case 'end':
        throw new StreamFormatError(`${state.item.rule.name} truncated before its END_OF_STATE`, this.position, state.item.tag);
    }
  }

  /** Consumes at least one byte of `chunk` at `pos`, which is in range; returns the count. */
  private step(state: ParseState, chunk: Uint8Array, pos: number, emit: (record: VfioRecord) => void): number {
    switch (state.phase) {
      case 'data': {
        const n = Math.min(state.remaining, chunk.length - pos);
        emit({ kind: 'data', offset: this.position, bytes: chunk.subarray(pos, pos + n) });
        state.remaining -= n;
        this.position += n;
        if (state.remaining === 0) this.finishItem(state.item, { kind: 'data-end', offset: this.position }, emit);
        return n;
      }
      case 'config': {
        const n = state.config.fill(chunk, pos);
        this.position += n;
        if (state.config.complete) this.configDone(state.item, state.config.bytes, emit);
        return n;
      }
      default: {
        if (state.phase === 'end' && state.item.rule.body === 'config' && this.field.filled === 0 && chunk[pos] === VMSTATE_SUBSECTION) {
          // Not END_OF_STATE (0xff...): the vmstate goes on with a subsection (e.g. VFIODisplay).
          throw new StreamFormatError(
            'a vmstate subsection follows the config state: subsections are not supported (or configStateSize is too small)',
            this.position,
            state.item.tag,
          );
        }
        const n = this.field.fill(chunk, pos);
        this.position += n;
        if (this.field.complete) this.onField(state, emit);
        return n;
      }
    }
  }

  /** A tag, a DATA size or a closing END_OF_STATE has been collected. */
  private onField(state: Extract<ParseState, { phase: 'tag' | 'data-size' | 'end' }>, emit: (record: VfioRecord) => void): void {
    const value = this.field.u64(0);
    switch (state.phase) {
      case 'tag': {
        const rule = this.rules.get(value);
        if (rule === undefined) throw unknownTag(value, this.fieldOffset);
        this.startBody({ tag: value, rule, offset: this.fieldOffset }, emit);
        return;
      }
      case 'data-size': {
        const { item } = state;
        if (value > BigInt(this.maxDataSize)) {
          throw new StreamFormatError(`DEV_DATA_STATE size ${value} exceeds maxDataSize ${this.maxDataSize}`, this.fieldOffset, item.tag);
        }
        const size = Number(value);
        emit({ kind: 'data-begin', offset: item.offset, size });
        if (size === 0) this.finishItem(item, { kind: 'data-end', offset: this.position }, emit);
        else this.state = { phase: 'data', item, remaining: size };
        return;
      }
      case 'end':
        if (value !== VFIO_MIG_FLAG_END_OF_STATE) {
          throw new StreamFormatError(`${state.item.rule.name} must be followed by END_OF_STATE, found ${vfioTagName(value)}`, this.fieldOffset, value);
        }
        this.finishItem(state.item, state.then, emit);
        return;
    }
  }

  private startBody(item: Item, emit: (record: VfioRecord) => void): void {
    const { rule } = item;
    switch (rule.body) {
      case 'data':
        this.expectField({ phase: 'data-size', item });
        return;
      case 'config':
      case 'config-inline': {
        const size = this.configStateSize;
        if (size === undefined) {
          throw new StreamFormatError(`${rule.name} found but the config state size is unknown (option configStateSize)`, item.offset, item.tag);
        }
        const config = new FieldCollector(size);
        config.expect(size);
        if (size === 0) this.configDone(item, config.bytes, emit);
        else this.state = { phase: 'config', item, config };
        return;
      }
      case 'none': {
        const record: VfioRecord = { kind: rule.marker, offset: item.offset };
        if (rule.closedByEnd) this.expectEnd(item, record);
        else this.finishItem(item, record, emit);
        return;
      }
    }
  }

  /** The config vmstate of `item` is complete: END_OF_STATE must follow, or (config-before-data) the loop goes on. */
  private configDone(item: Item, bytes: Uint8Array, emit: (record: VfioRecord) => void): void {
    if (item.rule.body === 'config-inline') this.finishItem(item, { kind: 'config-early', offset: item.offset, bytes }, emit);
    else this.expectEnd(item, { kind: 'config', offset: item.offset, bytes });
  }

  private expectEnd(item: Item, then: VfioRecord): void {
    this.expectField({ phase: 'end', item, then });
  }

  /** Enters a phase that collects an 8-byte field starting at the current position. */
  private expectField(state: Extract<ParseState, { phase: 'tag' | 'data-size' | 'end' }>): void {
    this.state = state;
    this.field.expect(VFIO_TAG_SIZE);
    this.fieldOffset = this.position;
  }

  private finishItem(item: Item, record: VfioRecord, emit: (record: VfioRecord) => void): void {
    emit(record);
    if (item.rule.endsSection) this.state = { phase: 'ended' };
    else this.expectField({ phase: 'tag' });
  }
}

/**
 * Parses a device's VFIO stream without savevm framing: the VFIO content of
 * its sections, back to back (as in tests, or a multifd config packet).
 * Feed it with {@link push}, in chunks split anywhere, then call {@link end}.
 * After a {@link StreamFormatError} every call throws that error again.
 */
export class VfioStreamParser {
  private readonly section: VfioSectionParser;
  private inSection = false;
  private position = 0;
  private failure: unknown;

  /** @throws VfioArgumentError as {@link VfioSectionParser} does */
  constructor(options: VfioParserOptions = {}) {
    this.section = new VfioSectionParser(options);
  }

  /** Stream offset of the next byte. */
  get offset(): number {
    return this.position;
  }

  /**
   * Parses `chunk`. The records' `data` views point into `chunk`.
   * @throws StreamFormatError on malformed input
   */
  push(chunk: Uint8Array): VfioRecord[] {
    this.rethrow();
    const out: VfioRecord[] = [];
    const emit = (record: VfioRecord): void => {
      out.push(record);
    };
    try {
      let pos = 0;
      while (pos < chunk.length) {
        if (!this.inSection) {
          this.section.begin(this.position);
          this.inSection = true;
        }
        const n = this.section.feed(chunk, pos, emit);
        pos += n;
        this.position += n;
        if (this.section.ended) this.inSection = false;
      }
    } catch (err) {
      this.failure = err;
      throw err;
    }
    return out;
  }

  /**
   * Declares the end of input.
   * @throws StreamFormatError if the input stops inside a section
   */
  end(): void {
    this.rethrow();
    if (!this.inSection) return;
    try {
      this.section.finish();
    } catch (err) {
      this.failure = err;
      throw err;
    }
  }

  private rethrow(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

function checkSize(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw new VfioArgumentError('VfioSectionParser', `${name} ${value} is not a non-negative safe integer`);
  return value;
}
