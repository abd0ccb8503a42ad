/**
 * Fixtures for the migration framing tests: a builder of QEMU-shaped savevm
 * streams that remembers where each section lies, the typical single-device
 * stream of vfio-reference.md §5.3, record normalisation (so that the same
 * stream split differently compares equal) and a seeded PRNG.
 */
import { concatBytes } from '../../lib/bytes.js';
import {
  encodeEof,
  encodeFileHeader,
  encodeSectionFooter,
  encodeSectionHeader,
  QEMU_VM_SECTION_END,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_SECTION_PART,
  QEMU_VM_SECTION_START,
  type SavevmRecord,
} from '../../lib/migration/sections.js';
import { StreamFormatError } from '../../lib/errors.js';
import {
  encodeDevConfigState,
  encodeDataState,
  encodeEndOfState,
  encodeInitDataSent,
  encodeSetupState,
  VfioStreamParser,
  type VfioParserOptions,
  type VfioRecord,
} from '../../lib/migration/stream.js';

/** Bytes `[start, end)` of one section, header to footer inclusive. */
export interface SectionSpan {
  readonly start: number;
  readonly end: number;
}

/** A built stream, its sections' spans, and the bytes of its VFIO content alone (no savevm framing). */
export interface BuiltStream {
  readonly bytes: Uint8Array;
  readonly sections: readonly SectionSpan[];
  readonly vfioOnly: Uint8Array;
  /** Offsets in `vfioOnly` where one section's VFIO content ends and the next may begin. */
  readonly vfioBoundaries: readonly number[];
}


/** Appends savevm pieces and records where each section lies. */
export class StreamBuilder {
  private readonly parts: Uint8Array[] = [];
  private readonly vfio: Uint8Array[] = [];
  private readonly spans: SectionSpan[] = [];
  private readonly boundaries: number[] = [];
  private length = 0;
  private vfioLength = 0;

  fileHeader(): this {
    return this.put(encodeFileHeader());
  }

  /** A START (or FULL with `full`) section for device `idstr`, with the given VFIO content. */
  full(kind: 'start' | 'full', sectionId: number, idstr: string, content: readonly Uint8Array[]): this {
    const type = kind === 'start' ? QEMU_VM_SECTION_START : QEMU_VM_SECTION_FULL;
    return this.section(encodeSectionHeader({ type, sectionId, idstr, instanceId: 0, versionId: 1 }), sectionId, content);
  }

  /** A PART (or END with `end`) section with the given VFIO content. */
  part(kind: 'part' | 'end', sectionId: number, content: readonly Uint8Array[]): this {
    const type = kind === 'part' ? QEMU_VM_SECTION_PART : QEMU_VM_SECTION_END;
    return this.section(encodeSectionHeader({ type, sectionId }), sectionId, content);
  }

  eof(): this {
    return this.put(encodeEof());
  }

  build(): BuiltStream {
    return { bytes: concatBytes(this.parts), sections: [...this.spans], vfioOnly: concatBytes(this.vfio), vfioBoundaries: [...this.boundaries] };
  }

  private section(header: Uint8Array, sectionId: number, content: readonly Uint8Array[]): this {
    const start = this.length;
    this.put(header);
    for (const c of content) {
      this.put(c);
      this.vfio.push(c);
      this.vfioLength += c.byteLength;
    }
    this.boundaries.push(this.vfioLength);
    this.put(encodeSectionFooter(sectionId));
    this.spans.push({ start, end: this.length });
    return this;
  }

  private put(bytes: Uint8Array): this {
    this.parts.push(bytes);
    this.length += bytes.byteLength;
    return this;
  }
}

/** Deterministic bytes: `n` bytes counting from `seed`. */
export function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (seed + i * 7) & 0xff;
  return out;
}

/** The device id used by the fixtures, as QEMU names a PCI VFIO device. */
export const IDSTR = '0000:00:05.0/vfio';
/** Size of the fixture's config vmstate. */
export const CONFIG_SIZE = 64;

/**
 * The typical single-device stream of a PRE_COPY device with switchover-ack
 * (vfio-reference.md §5.3): START [SETUP, END]; PART [DATA, END]; PART [END];
 * PART [DATA, INIT_DATA_SENT]; END [DATA, DATA, END]; FULL [CONFIG, vmstate, END].
 */
export function typicalStream(options: { fileHeader?: boolean; sectionId?: number } = {}): BuiltStream {
  const id = options.sectionId ?? 2;
  const config = pattern(CONFIG_SIZE, 0xff);
  const b = new StreamBuilder();
  if (options.fileHeader ?? true) b.fileHeader();
  return b
    .full('start', id, IDSTR, [encodeSetupState()])
    .part('part', id, [encodeDataState(pattern(100, 1)), encodeEndOfState()])
    .part('part', id, [encodeEndOfState()])
    .part('part', id, [encodeDataState(pattern(37, 2)), encodeInitDataSent()])
    .part('end', id, [encodeDataState(pattern(300, 3)), encodeDataState(pattern(5, 4)), encodeEndOfState()])
    .full('full', id, IDSTR, [encodeDevConfigState(config)])
    .eof()
    .build();
}

/** A VFIO record with data fragments merged: comparable across different input splits. */
export type NormalRecord =
  | { readonly kind: 'data'; readonly offset: number; readonly hex: string }
  | { readonly kind: 'config' | 'config-early'; readonly offset: number; readonly hex: string }
  | { readonly kind: Exclude<VfioRecord['kind'], 'data' | 'config' | 'config-early'>; readonly offset: number; readonly size?: number };

/** Merges consecutive data fragments and turns bytes into hex. */
export function normalizeVfio(records: readonly VfioRecord[]): NormalRecord[] {
  const out: NormalRecord[] = [];
  for (const r of records) {
    if (r.kind === 'data') {
      const last = out.at(-1);
      const hex = Buffer.from(r.bytes).toString('hex');
      if (last?.kind === 'data') out[out.length - 1] = { kind: 'data', offset: last.offset, hex: last.hex + hex };
      else out.push({ kind: 'data', offset: r.offset, hex });
    } else if (r.kind === 'config' || r.kind === 'config-early') {
      out.push({ kind: r.kind, offset: r.offset, hex: Buffer.from(r.bytes).toString('hex') });
    } else if (r.kind === 'data-begin') {
      out.push({ kind: r.kind, offset: r.offset, size: r.size });
    } else {
      out.push({ kind: r.kind, offset: r.offset });
    }
  }
  return out;
}

/** Parses a VFIO-only stream pushed in the given chunks, then ends the input. */
export function parseVfio(chunks: readonly Uint8Array[], options: VfioParserOptions = { configStateSize: CONFIG_SIZE }): VfioRecord[] {
  const p = new VfioStreamParser(options);
  const out: VfioRecord[] = [];
  for (const c of chunks) out.push(...p.push(c));
  p.end();
  return out;
}

/** The StreamFormatError that parsing `bytes` (in one chunk) raises. */
export function vfioFormatError(bytes: Uint8Array, options?: VfioParserOptions): StreamFormatError {
  try {
    parseVfio([bytes], options);
  } catch (err) {
    if (err instanceof StreamFormatError) return err;
    throw err;
  }
  throw new Error('expected a StreamFormatError');
}

/**
 * Where splitting `bytes` changes what the parser reads: each two-way cut
 * whose records differ from parsing it whole, and -1 if pushing it byte by
 * byte does. Empty when the parser is split-proof on this input.
 */
export function disagreeingSplits(bytes: Uint8Array, options?: VfioParserOptions): number[] {
  const whole = JSON.stringify(normalizeVfio(parseVfio([bytes], options)));
  const bad: number[] = [];
  for (let k = 0; k <= bytes.length; k++) {
    if (JSON.stringify(normalizeVfio(parseVfio([bytes.subarray(0, k), bytes.subarray(k)], options))) !== whole) bad.push(k);
  }
  const bytewise = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
  if (JSON.stringify(normalizeVfio(parseVfio(bytewise, options))) !== whole) bad.push(-1);
  return bad;
}

/** A savevm record in comparable form (VFIO records normalised, with their section id). */
export type NormalSavevmRecord =
  | Exclude<SavevmRecord, { kind: 'vfio' }>
  | { readonly kind: 'vfio'; readonly sectionId: number; readonly record: NormalRecord };

/** Normalises savevm records: data fragments of one data record are merged. */
export function normalizeSavevm(records: readonly SavevmRecord[]): NormalSavevmRecord[] {
  const out: NormalSavevmRecord[] = [];
  let run: { sectionId: number; records: VfioRecord[] } | undefined;
  const flush = (): void => {
    if (run === undefined) return;
    const { sectionId } = run;
    for (const record of normalizeVfio(run.records)) out.push({ kind: 'vfio', sectionId, record });
    run = undefined;
  };
  for (const r of records) {
    if (r.kind === 'vfio') {
      if (run === undefined || run.sectionId !== r.sectionId) {
        flush();
        run = { sectionId: r.sectionId, records: [] };
      }
      run.records.push(r.record);
    } else {
      flush();
      out.push(r);
    }
  }
  flush();
  return out;
}

/** mulberry32: a small seeded PRNG, so fuzz failures reproduce from the seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export { concatBytes };
