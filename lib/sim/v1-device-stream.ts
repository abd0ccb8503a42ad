/**
 * The simulated v1 device's own migration data format (opaque to the
 * library, as every vendor's is): a stream of records (one device page, or
 * the end marker) cut into transactions of the vendor's chosen sizes.
 *
 * Every transaction carries its sequence number, its length and a CRC, so
 * the resuming device notices a transaction that was split, merged,
 * reordered or altered: that is how it enforces the v1 "same transaction
 * size" rule (reference §3.5).
 */
import { crc32 } from 'node:zlib';
import { dataView } from '../vfio/uapi/layout.js';

/** Transaction header: u32 magic, u32 sequence number, u32 total length, u32 CRC-32 of the payload. */
export const V1_TXN_HEADER_SIZE = 16;
/** `'V1TX'` read as a little-endian u32. */
const TXN_MAGIC = 0x58543156;

/** Record header: u32 kind, u32 argument (a page index, or the page count for the end marker). */
export const V1_RECORD_HEADER_SIZE = 8;
/** A page record: the header, then the page's bytes. */
export const V1_RECORD_PAGE = 1;
/** The end marker: the last record of a saving session, sent in stop-and-copy only. */
export const V1_RECORD_END = 2;

/** Frames `payload` as transaction `seq`. */
export function encodeTransaction(seq: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(V1_TXN_HEADER_SIZE + payload.byteLength);
  const dv = dataView(out);
  dv.setUint32(0, TXN_MAGIC, true);
  dv.setUint32(4, seq, true);
  dv.setUint32(8, out.byteLength, true);
  dv.setUint32(12, crc32(payload), true);
  out.set(payload, V1_TXN_HEADER_SIZE);
  return out;
}

/** A checked transaction: its payload, or why the resuming device refuses it. */
export type DecodedTransaction = { readonly ok: true; readonly payload: Uint8Array } | { readonly ok: false; readonly reason: string };

/** Checks `bytes` as the `expectedSeq`-th transaction of a stream. */
export function decodeTransaction(bytes: Uint8Array, expectedSeq: number): DecodedTransaction {
  if (bytes.byteLength < V1_TXN_HEADER_SIZE) return { ok: false, reason: `a ${bytes.byteLength}-byte transaction is shorter than its header` };
  const dv = dataView(bytes);
  if (dv.getUint32(0, true) !== TXN_MAGIC) return { ok: false, reason: 'no transaction header (a split or merged transaction)' };
  const seq = dv.getUint32(4, true);
  if (seq !== expectedSeq) return { ok: false, reason: `transaction ${seq} where ${expectedSeq} was expected` };
  const length = dv.getUint32(8, true);
  if (length !== bytes.byteLength) return { ok: false, reason: `transaction ${seq} is ${length} bytes on the source, ${bytes.byteLength} here` };
  const payload = bytes.subarray(V1_TXN_HEADER_SIZE);
  if (crc32(payload) !== dv.getUint32(12, true)) return { ok: false, reason: `transaction ${seq} fails its CRC` };
  return { ok: true, payload };
}

/** A page record. */
export function encodePageRecord(index: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(V1_RECORD_HEADER_SIZE + data.byteLength);
  const dv = dataView(out);
  dv.setUint32(0, V1_RECORD_PAGE, true);
  dv.setUint32(4, index, true);
  out.set(data, V1_RECORD_HEADER_SIZE);
  return out;
}

/** The end marker, carrying the page count so a device of another geometry refuses the stream. */
export function encodeEndRecord(pageCount: number): Uint8Array {
  const out = new Uint8Array(V1_RECORD_HEADER_SIZE);
  const dv = dataView(out);
  dv.setUint32(0, V1_RECORD_END, true);
  dv.setUint32(4, pageCount, true);
  return out;
}
