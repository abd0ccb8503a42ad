/**
 * QEMU's savevm framing (migration/savevm.c) around VFIO device content: the
 * file header, section headers and footers, and EOF; writers and an
 * incremental parser that hands each section's content to a
 * {@link VfioSectionParser}, or to another {@link SectionContentParser} for
 * sections that are not a VFIO device's (QEMU's `"ram"`).
 *
 * Section content has no length prefix: it ends where the content parser
 * says the handler's `load_state` would return, and the footer must follow at once.
 */
import { StreamFormatError, VfioArgumentError } from '../errors.js';
import { FieldCollector, VfioSectionParser, type VfioParserOptions, type VfioRecord } from './stream.js';

/** "QEVM", the first four bytes of a savevm file. */
export const QEMU_VM_FILE_MAGIC = 0x5145564d;
/** The only savevm version QEMU still loads. */
export const QEMU_VM_FILE_VERSION = 3;
export const QEMU_VM_EOF = 0x00;
export const QEMU_VM_SECTION_START = 0x01;
export const QEMU_VM_SECTION_PART = 0x02;
export const QEMU_VM_SECTION_END = 0x03;
export const QEMU_VM_SECTION_FULL = 0x04;
export const QEMU_VM_SECTION_FOOTER = 0x7e;

const FILE_HEADER_SIZE = 8;
const FOOTER_SIZE = 5;
const MAX_IDSTR_BYTES = 255;
const MAX_U32 = 0xffffffff;
/** Section types QEMU knows but this parser does not read, for error messages. */
const OTHER_TYPES: ReadonlyMap<number, string> = new Map([
  [0x05, 'QEMU_VM_SUBSECTION'],
  [0x06, 'QEMU_VM_VMDESCRIPTION'],
  [0x07, 'QEMU_VM_CONFIGURATION'],
  [0x08, 'QEMU_VM_COMMAND'],
  [QEMU_VM_SECTION_FOOTER, 'QEMU_VM_SECTION_FOOTER'],
]);

/** The header of a START or FULL section, which names the device. */
export interface FullSectionHeader {
  readonly type: typeof QEMU_VM_SECTION_START | typeof QEMU_VM_SECTION_FULL;
  readonly sectionId: number;
  /** The SaveStateEntry id, e.g. `'0000:00:05.0/vfio'` (at most 255 UTF-8 bytes). */
  readonly idstr: string;
  readonly instanceId: number;
  readonly versionId: number;
}

/** The header of a PART or END section, which refers to an earlier START by id. */
export interface PartSectionHeader {
  readonly type: typeof QEMU_VM_SECTION_PART | typeof QEMU_VM_SECTION_END;
  readonly sectionId: number;
}

export type SectionHeader = FullSectionHeader | PartSectionHeader;

// ---------------------------------------------------------------------------
// Writers

/** `be32 QEMU_VM_FILE_MAGIC, be32 QEMU_VM_FILE_VERSION`. */
export function encodeFileHeader(): Uint8Array {
  const out = new Uint8Array(FILE_HEADER_SIZE);
  const view = new DataView(out.buffer);
  view.setUint32(0, QEMU_VM_FILE_MAGIC);
  view.setUint32(4, QEMU_VM_FILE_VERSION);
  return out;
}

/**
 * `u8 type, be32 section_id`, and for START/FULL `u8 len, idstr, be32 instance_id, be32 version_id`.
 * @throws VfioArgumentError for an id outside u32 or an idstr over 255 bytes
 */
export function encodeSectionHeader(header: SectionHeader): Uint8Array {
  checkU32('section id', header.sectionId);
  if (header.type === QEMU_VM_SECTION_START || header.type === QEMU_VM_SECTION_FULL) return encodeFullHeader(header);
  const out = new Uint8Array(5);
  out[0] = header.type;
  new DataView(out.buffer).setUint32(1, header.sectionId);
  return out;
}

function encodeFullHeader(header: FullSectionHeader): Uint8Array {
  checkU32('instance id', header.instanceId);
  checkU32('version id', header.versionId);
  const idstr = new TextEncoder().encode(header.idstr);
  if (idstr.length > MAX_IDSTR_BYTES) throw new VfioArgumentError('encodeSectionHeader', `idstr is ${idstr.length} bytes; at most ${MAX_IDSTR_BYTES}`);
  const out = new Uint8Array(6 + idstr.length + 8);
  const view = new DataView(out.buffer);
  out[0] = header.type;
  view.setUint32(1, header.sectionId);
  out[5] = idstr.length;
  out.set(idstr, 6);
  view.setUint32(6 + idstr.length, header.instanceId);
  view.setUint32(10 + idstr.length, header.versionId);
  return out;
}

/** `0x7e, be32 section_id`. */
export function encodeSectionFooter(sectionId: number): Uint8Array {
  checkU32('section id', sectionId);
  const out = new Uint8Array(FOOTER_SIZE);
  out[0] = QEMU_VM_SECTION_FOOTER;
  new DataView(out.buffer).setUint32(1, sectionId);
  return out;
}

/** The final `QEMU_VM_EOF` byte. */
export function encodeEof(): Uint8Array {
  return Uint8Array.of(QEMU_VM_EOF);
}

function checkU32(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) throw new VfioArgumentError('encodeSectionHeader', `${what} ${value} is not a u32`);
}

// ---------------------------------------------------------------------------
// Parser

/**
 * Reads one kind of section content, as one call of its handler's
 * `load_state` would ({@link VfioSectionParser} is VFIO's). One instance
 * serves every section of a section id, in stream order.
 */
export interface SectionContentParser<R> {
  /** Starts a section whose first content byte is at stream offset `offset`. */
  begin(offset: number): void;
  /**
   * Consumes bytes of `chunk` from `start` up to the section's last byte, passing records to `emit`.
   * @returns the count consumed: all of them unless the section ended
   * @throws StreamFormatError on malformed content
   */
  feed(chunk: Uint8Array, start: number, emit: (record: R) => void): number;
  /** True once the section's content is complete. */
  readonly ended: boolean;
  /**
   * Declares the end of input.
   * @throws StreamFormatError if the section is not complete
   */
  finish(): void;
}

/** What {@link SavevmParser} delivers, in stream order; `R` is what its non-VFIO sections' parsers deliver. */
export type SavevmRecord<R = never> =
  | { readonly kind: 'file-header'; readonly offset: number; readonly version: number }
  | {
      readonly kind: 'section-header';
      readonly offset: number;
      readonly header: SectionHeader;
      /** The START or FULL header that introduced this section id (the header itself for START/FULL). */
      readonly device: FullSectionHeader;
    }
  | { readonly kind: 'vfio'; readonly sectionId: number; readonly record: VfioRecord }
  | SavevmContentRecord<R>
  | { readonly kind: 'section-footer'; readonly offset: number; readonly sectionId: number }
  | { readonly kind: 'eof'; readonly offset: number };

/**
 * A record of a section read by a {@link SavevmParserOptions.section} parser.
 * It exists only when there can be one (`R` is not `never`), so code written
 * for VFIO-only streams still covers every kind.
 */
export type SavevmContentRecord<R> = [R] extends [never] ? never : { readonly kind: 'content'; readonly sectionId: number; readonly record: R };

/** Options of {@link SavevmParser}. */
export interface SavevmParserOptions<R = never> {
  /**
   * The VFIO parser options for the device a START or FULL section names
   * (its `configStateSize` in particular), or `undefined` to reject the section
   * as an unknown device. By default every section is a VFIO device with
   * default options.
   */
  device?: (header: FullSectionHeader) => VfioParserOptions | undefined;
  /**
   * The parser of a section that is not a VFIO device's (QEMU's `"ram"`),
   * asked first when a section id's first START or FULL header is complete
   * (`offset`: where that section starts); `undefined` leaves the section to
   * {@link device}. It may throw a StreamFormatError (a version it cannot
   * load). Its records come as `content` records.
   */
  section?: (header: FullSectionHeader, offset: number) => SectionContentParser<R> | undefined;
}

/** A section id's handler: the START or FULL header that introduced it, and its content parser. */
interface Handler<R> {
  readonly header: FullSectionHeader;
  readonly content: { readonly kind: 'vfio'; readonly parser: VfioSectionParser } | { readonly kind: 'content'; readonly parser: SectionContentParser<R> };
}

/** Phases that collect a fixed-size field into the parser's {@link FieldCollector}. */
type FieldPhase = 'file-header' | 'type' | 'section-id' | 'idstr-len' | 'idstr' | 'ids' | 'footer';

type State<R> =
  | { readonly phase: 'begin' | 'eof' | FieldPhase }
  /** The section's content, read by its handler's parser. */
  | { readonly phase: 'content'; readonly device: Handler<R> };

const TRUNCATED_WHERE: Readonly<Record<'begin' | FieldPhase, string>> = {
  begin: 'before the first byte',
  'file-header': 'inside the file header',
  type: 'where a section type or QEMU_VM_EOF was expected',
  'section-id': 'inside a section header',
  'idstr-len': 'inside a section header',
  idstr: 'inside a section header',
  ids: 'inside a section header',
  footer: 'inside a section footer',
};

/**
 * Parses a QEMU-shaped savevm stream of VFIO sections (and others, with
 * {@link SavevmParserOptions.section}): an optional file header,
 * START/PART/END/FULL sections each closed by its footer, then QEMU_VM_EOF.
 * Feed it with {@link push}, in chunks split anywhere, then call {@link end}.
 * Memory stays bounded: data payloads are passed on as views of the chunks.
 * After a {@link StreamFormatError} every call throws that error again.
 */
export class SavevmParser<R = never> {
  private readonly deviceOptions: (header: FullSectionHeader) => VfioParserOptions | undefined;
  private readonly sectionParser: (header: FullSectionHeader, offset: number) => SectionContentParser<R> | undefined;
  private readonly devices = new Map<number, Handler<R>>();
  private readonly field = new FieldCollector(MAX_IDSTR_BYTES);
  private readonly decoder = new TextDecoder();
  private state: State<R> = { phase: 'begin' };
  private position = 0;
  private fieldOffset = 0;
  private sectionOffset = 0;
  private sectionType = 0;
  private sectionId = 0;
  private idstr = '';
  private failure: unknown;

  constructor(options: SavevmParserOptions<R> = {}) {
    this.deviceOptions = options.device ?? (() => ({}));
    this.sectionParser = options.section ?? (() => undefined);
  }

  /** Stream offset of the next byte. */
  get offset(): number {
    return this.position;
  }

  /**
   * Parses `chunk`. The records' `data` views point into `chunk`.
   * @throws StreamFormatError on malformed input (VfioArgumentError if `options.device` returns bad limits)
   */
  push(chunk: Uint8Array): SavevmRecord<R>[] {
    this.rethrow();
    const out: SavevmRecord<R>[] = [];
    try {
      this.parse(chunk, out);
    } catch (err) {
      this.failure = err;
      throw err;
    }
    return out;
  }

  /**
   * Declares the end of input.
   * @throws StreamFormatError unless the stream ended right after QEMU_VM_EOF
   */
  end(): void {
    this.rethrow();
    const { state } = this;
    try {
      if (state.phase === 'eof') return;
      if (state.phase === 'content') {
        state.device.content.parser.finish(); // throws: it knows best what is missing
        throw new StreamFormatError(`savevm stream truncated inside section ${this.sectionId}`, this.position);
      }
      throw new StreamFormatError(`savevm stream truncated ${TRUNCATED_WHERE[state.phase]}`, this.position);
    } catch (err) {
      this.failure = err;
      throw err;
    }
  }

  private rethrow(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private parse(chunk: Uint8Array, out: SavevmRecord<R>[]): void {
    let pos = 0;
    while (pos < chunk.length) {
      const { state } = this;
      switch (state.phase) {
        case 'begin':
          // 'Q' cannot start a section (types are 0x00-0x08), so the header is optional yet unambiguous.
          if (chunk[pos] === QEMU_VM_FILE_MAGIC >>> 24) this.expect('file-header', FILE_HEADER_SIZE);
          else this.expect('type', 1);
          break;
        case 'content': {
          const { content } = state.device;
          const sectionId = this.sectionId;
          const n =
            content.kind === 'vfio'
              ? content.parser.feed(chunk, pos, (record) => {
                  out.push({ kind: 'vfio', sectionId, record });
                })
              : content.parser.feed(chunk, pos, (record) => {
                  out.push(contentRecord(sectionId, record));
                });
          pos += n;
          this.position += n;
          if (content.parser.ended) this.expect('footer', FOOTER_SIZE);
          break;
        }
        case 'eof':
          throw new StreamFormatError('bytes after QEMU_VM_EOF', this.position);
        default: {
          const n = this.field.fill(chunk, pos);
          pos += n;
          this.position += n;
          if (this.field.complete) this.onField(state.phase, out);
        }
      }
    }
  }

  private expect(phase: FieldPhase, size: number): void {
    this.state = { phase };
    this.field.expect(size);
    this.fieldOffset = this.position;
  }

  /** The field of `phase` is complete. */
  private onField(phase: FieldPhase, out: SavevmRecord<R>[]): void {
    const { field } = this;
    switch (phase) {
      case 'file-header': {
        const magic = field.u32(0);
        if (magic !== QEMU_VM_FILE_MAGIC) throw new StreamFormatError(`bad savevm file magic 0x${magic.toString(16)}`, this.fieldOffset);
        const version = field.u32(4);
        if (version !== QEMU_VM_FILE_VERSION) throw new StreamFormatError(`unsupported savevm file version ${version}`, this.fieldOffset + 4);
        out.push({ kind: 'file-header', offset: this.fieldOffset, version });
        this.expect('type', 1);
        return;
      }
      case 'type':
        this.onSectionType(field.u8(0), out);
        return;
      case 'section-id':
        this.sectionId = field.u32(0);
        if (this.sectionType === QEMU_VM_SECTION_START || this.sectionType === QEMU_VM_SECTION_FULL) {
          this.expect('idstr-len', 1);
        } else {
          this.openPart(out);
        }
        return;
      case 'idstr-len': {
        const length = field.u8(0);
        this.idstr = '';
        if (length === 0) this.expect('ids', 8);
        else this.expect('idstr', length);
        return;
      }
      case 'idstr':
        this.idstr = this.decoder.decode(field.bytes);
        this.expect('ids', 8);
        return;
      case 'ids':
        this.openFull(field.u32(0), field.u32(4), out);
        return;
      case 'footer':
        this.closeSection(field.u8(0), field.u32(1), out);
        return;
    }
  }

  private onSectionType(type: number, out: SavevmRecord<R>[]): void {
    this.sectionOffset = this.fieldOffset;
    this.sectionType = type;
    switch (type) {
      case QEMU_VM_EOF:
        out.push({ kind: 'eof', offset: this.fieldOffset });
        this.state = { phase: 'eof' };
        return;
      case QEMU_VM_SECTION_START:
      case QEMU_VM_SECTION_PART:
      case QEMU_VM_SECTION_END:
      case QEMU_VM_SECTION_FULL:
        this.expect('section-id', 4);
        return;
      default: {
        const name = OTHER_TYPES.get(type);
        const what = name === undefined ? `unknown section type 0x${type.toString(16)}` : `${name} is not supported here`;
        throw new StreamFormatError(what, this.fieldOffset);
      }
    }
  }

  /** A PART or END header is complete: its id must belong to a device already introduced. */
  private openPart(out: SavevmRecord<R>[]): void {
    const device = this.devices.get(this.sectionId);
    if (device === undefined) throw new StreamFormatError(`section ${this.sectionId} was never started (no START or FULL section with that id)`, this.fieldOffset);
    const type = this.sectionType === QEMU_VM_SECTION_PART ? QEMU_VM_SECTION_PART : QEMU_VM_SECTION_END;
    this.openContent({ type, sectionId: this.sectionId }, device, out);
  }

  /** A START or FULL header is complete: (re)bind its id to the device it names. */
  private openFull(instanceId: number, versionId: number, out: SavevmRecord<R>[]): void {
    const type = this.sectionType === QEMU_VM_SECTION_START ? QEMU_VM_SECTION_START : QEMU_VM_SECTION_FULL;
    const header: FullSectionHeader = { type, sectionId: this.sectionId, idstr: this.idstr, instanceId, versionId };
    const known = this.devices.get(header.sectionId);
    let device: Handler<R>;
    if (known === undefined) {
      device = { header, content: this.handlerOf(header) };
    } else if (known.header.idstr === header.idstr && known.header.instanceId === instanceId) {
      device = { header, content: known.content };
    } else {
      throw new StreamFormatError(
        // JSON quoting: idstrs come from the stream and may hold any byte.
        `section ${header.sectionId} names ${JSON.stringify(header.idstr)} instance ${instanceId}, but it belongs to ${JSON.stringify(known.header.idstr)} instance ${known.header.instanceId}`,
        this.sectionOffset,
      );
    }
    this.devices.set(header.sectionId, device);
    this.openContent(header, device, out);
  }

  /** The content parser for a new section id: another handler's, else a VFIO device's. */
  private handlerOf(header: FullSectionHeader): Handler<R>['content'] {
    const other = this.sectionParser(header, this.sectionOffset);
    if (other !== undefined) return { kind: 'content', parser: other };
    const options = this.deviceOptions(header);
    if (options === undefined) {
      throw new StreamFormatError(`unknown device ${JSON.stringify(header.idstr)} instance ${header.instanceId} version ${header.versionId} in section ${header.sectionId}`, this.sectionOffset);
    }
    return { kind: 'vfio', parser: new VfioSectionParser(options) };
  }

  private openContent(header: SectionHeader, device: Handler<R>, out: SavevmRecord<R>[]): void {
    out.push({ kind: 'section-header', offset: this.sectionOffset, header, device: device.header });
    device.content.parser.begin(this.position);
    this.state = { phase: 'content', device };
  }

  private closeSection(mark: number, sectionId: number, out: SavevmRecord<R>[]): void {
    if (mark !== QEMU_VM_SECTION_FOOTER) {
      throw new StreamFormatError(`section ${this.sectionId} is not followed by its footer (found 0x${mark.toString(16)})`, this.fieldOffset);
    }
    if (sectionId !== this.sectionId) {
      throw new StreamFormatError(`the footer of section ${this.sectionId} carries section id ${sectionId}`, this.fieldOffset + 1);
    }
    out.push({ kind: 'section-footer', offset: this.fieldOffset, sectionId });
    this.expect('type', 1);
  }
}

/** A `content` record: only ever made from a record a content parser produced, so `R` is not `never` here. */
function contentRecord<R>(sectionId: number, record: R): SavevmContentRecord<R> {
  return { kind: 'content', sectionId, record } as SavevmContentRecord<R>;
}
