/** Golden bytes written as hex: one group per C field, spaces ignored. */

/** Bytes from hex groups, e.g. `bytesOf('20000000', '0f000000')`. */
export function bytesOf(...groups: string[]): Uint8Array {
  const hex = groups.join('').replace(/\s+/g, '');
  if (!/^([0-9a-f]{2})*$/.test(hex)) throw new Error(`bad golden hex: ${hex}`);
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** The hex string of `buf`, for comparison with {@link hexOf} of the golden groups. */
export function toHex(buf: Uint8Array): string {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('hex');
}

/** The golden groups as one hex string. */
export function hexOf(...groups: string[]): string {
  return toHex(bytesOf(...groups));
}
