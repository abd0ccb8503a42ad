/** Byte-array helpers shared by the codecs. */

/** Concatenates `parts` into one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * The little-endian value of the `width` bytes at `offset` (a register of 1
 * to 8 bytes); bytes outside `bytes` read as 0.
 */
export function readLe(bytes: Uint8Array, offset: number, width: number): bigint {
  let v = 0n;
  for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[offset + i] ?? 0);
  return v;
}

/** Stores the low `width` bytes of `value` at `offset`, little-endian; bytes outside `bytes` are dropped. */
export function writeLe(bytes: Uint8Array, offset: number, width: number, value: bigint): void {
  for (let i = 0; i < width; i++) {
    const at = offset + i;
    if (at >= 0 && at < bytes.byteLength) bytes[at] = Number((value >> BigInt(8 * i)) & 0xffn);
  }
}
