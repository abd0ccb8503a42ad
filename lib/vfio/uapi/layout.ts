/**
 * Struct layouts as data. Each kernel struct is described once, with the C
 * struct and field names, so that the codecs and the layout test (which
 * compiles a C program against `<linux/vfio.h>`) read the same table.
 */
import { UapiFormatError } from '../../errors.js';

/** Scalar field types of the uAPI (host-endian; vfio-ts supports little-endian hosts). */
export type FieldType = 'u8' | 'u16' | 'u32' | 's32' | 'u64';

/** One field: its byte offset and type. `bytes` marks a flexible array or nested blob. */
export interface Field<T extends FieldType | 'bytes' = FieldType | 'bytes'> {
  readonly offset: number;
  readonly type: T;
}

/** A struct: C name, `sizeof`, and fields keyed by their C member designator. */
export interface StructLayout<F extends Record<string, Field> = Record<string, Field>> {
  readonly name: string;
  readonly size: number;
  readonly fields: F;
}

export const u8 = (offset: number): Field<'u8'> => ({ offset, type: 'u8' });
export const u16 = (offset: number): Field<'u16'> => ({ offset, type: 'u16' });
export const u32 = (offset: number): Field<'u32'> => ({ offset, type: 'u32' });
export const s32 = (offset: number): Field<'s32'> => ({ offset, type: 's32' });
export const u64 = (offset: number): Field<'u64'> => ({ offset, type: 'u64' });
/** A flexible array member or an embedded blob: checked for its offset only. */
export const bytes = (offset: number): Field<'bytes'> => ({ offset, type: 'bytes' });

export function struct<F extends Record<string, Field>>(name: string, size: number, fields: F): StructLayout<F> {
  return Object.freeze({ name, size, fields: Object.freeze(fields) });
}

/** The scalar fields of a layout, as a plain object: u64 as bigint, the rest as number. */
export type Decoded<L extends StructLayout> = {
  -readonly [K in keyof L['fields'] as L['fields'][K]['type'] extends 'bytes' ? never : K]: L['fields'][K]['type'] extends 'u64'
    ? bigint
    : number;
};

/** A DataView over exactly the bytes of `buf`. */
export function dataView(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function readField(dv: DataView, at: number, type: FieldType): number | bigint {
  switch (type) {
    case 'u8':
      return dv.getUint8(at);
    case 'u16':
      return dv.getUint16(at, true);
    case 'u32':
      return dv.getUint32(at, true);
    case 's32':
      return dv.getInt32(at, true);
    case 'u64':
      return dv.getBigUint64(at, true);
  }
}

const isScalar = (f: Field): f is Field<FieldType> => f.type !== 'bytes';

const FIELD_BITS: Record<FieldType, bigint> = { u8: 8n, u16: 16n, u32: 32n, s32: 32n, u64: 64n };

/**
 * DataView setters wrap silently (2**32 + 20 would go out as argsz 20, 1.5 as
 * 1, NaN as 0), so a value is refused unless its two's-complement pattern
 * fits the field: [-2^(n-1), 2^n). Negative values stay allowed in unsigned
 * fields because the uAPI itself stores -1 in some (`VFIO_PCI_DEVID_NOT_OWNED`).
 */
function checkFieldValue(name: string, type: FieldType, value: number | bigint): void {
  const bits = FIELD_BITS[type];
  const fits =
    (typeof value === 'bigint' || Number.isInteger(value)) && BigInt(value) >= -(1n << (bits - 1n)) && BigInt(value) < 1n << bits;
  if (!fits) throw new RangeError(`${name}: ${String(value)} does not fit a ${type} field`);
}

function writeField(dv: DataView, at: number, type: FieldType, value: number | bigint): void {
  switch (type) {
    case 'u8':
      dv.setUint8(at, Number(value));
      return;
    case 'u16':
      dv.setUint16(at, Number(value), true);
      return;
    case 'u32':
      dv.setUint32(at, Number(value), true);
      return;
    case 's32':
      dv.setInt32(at, Number(value), true);
      return;
    case 'u64':
      dv.setBigUint64(at, BigInt(value), true);
      return;
  }
}

/**
 * Decodes the scalar fields of `layout` at `base` in `buf`.
 * @throws UapiFormatError when the buffer is too short for the struct.
 */
export function decode<L extends StructLayout>(layout: L, buf: Uint8Array, base = 0): Decoded<L> {
  if (base < 0 || base + layout.size > buf.byteLength) {
    throw new UapiFormatError(`needs ${layout.size} bytes at offset ${base}, buffer has ${buf.byteLength}`, layout.name, base);
  }
  const dv = dataView(buf);
  const out: Record<string, number | bigint> = {};
  for (const [name, f] of Object.entries(layout.fields)) {
    if (f.type !== 'bytes') out[name] = readField(dv, base + f.offset, f.type);
  }
  return out as Decoded<L>;
}

/**
 * Writes `values` into `buf` at `base` (fields not given are left as they
 * are) and returns `buf`. Without `buf`, a zeroed buffer of the struct's size
 * is made.
 * @throws RangeError when the buffer is too short or a value does not fit its field.
 */
export function encode<L extends StructLayout>(
  layout: L,
  values: Partial<Decoded<L>>,
  buf: Uint8Array = new Uint8Array(layout.size),
  base = 0,
): Uint8Array {
  if (base < 0 || base + layout.size > buf.byteLength) {
    throw new RangeError(`${layout.name}: needs ${layout.size} bytes at offset ${base}, buffer has ${buf.byteLength}`);
  }
  const vals = values as Record<string, number | bigint | undefined>;
  const writes: [Field<FieldType>, number | bigint][] = [];
  for (const [name, f] of Object.entries(layout.fields)) {
    const v = vals[name];
    if (v === undefined || !isScalar(f)) continue;
    checkFieldValue(`${layout.name}.${name}`, f.type, v);
    writes.push([f, v]);
  }
  // Checked in full before the first write, so a refused call leaves `buf` untouched.
  const dv = dataView(buf);
  for (const [f, v] of writes) writeField(dv, base + f.offset, f.type, v);
  return buf;
}
