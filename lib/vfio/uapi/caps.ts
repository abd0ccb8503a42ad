/**
 * Capability chains of the INFO ioctls (device, region and IOMMU info), and
 * the "call, read back `argsz`, grow, call again" dance that fetches them.
 *
 * Chains come from the kernel, or from a vendor driver through it, and are
 * treated as untrusted: every offset is bounds- and alignment-checked and the
 * walk must move forward, so a loop or an out-of-range pointer becomes a
 * {@link UapiFormatError} instead of a hang or an out-of-bounds read.
 */
import { UapiFormatError } from '../../errors.js';
import { dataView } from './layout.js';

/** The kernel pads every capability to 8 bytes (`vfio_info_cap_add`). */
export const CAP_ALIGN = 8;
const CAP_HEADER_SIZE = 8;
/** Largest INFO buffer the library will allocate at a driver's request. */
export const MAX_INFO_ARGSZ = 1 << 20;
const MAX_QUERY_ATTEMPTS = 4;

/** One capability in a chain: its header and the bytes it may use, `[offset, end)`. */
export interface CapEntry {
  readonly id: number;
  readonly version: number;
  /** Offset of the capability header from the start of the INFO buffer. */
  readonly offset: number;
  /** Where the capability's bytes end: the next capability, or the end of the buffer. */
  readonly end: number;
}

/**
 * Walks the chain that starts at `first` in an INFO buffer whose fixed part is
 * `fixedSize` bytes. `next` offsets are absolute from the start of `buf`.
 * @throws UapiFormatError for a misaligned, out-of-range or backward offset.
 */
export function walkCapChain(buf: Uint8Array, first: number, fixedSize: number, struct: string): CapEntry[] {
  const out: CapEntry[] = [];
  if (first === 0) return out;
  const dv = dataView(buf);
  let offset = first;
  let floor = fixedSize;
  for (;;) {
    if (offset < floor) {
      const why = out.length === 0 ? `points into the fixed struct (size ${fixedSize})` : 'does not move forward (a loop or overlap)';
      throw new UapiFormatError(`capability offset ${offset} ${why}`, struct, offset);
    }
    if (offset % CAP_ALIGN !== 0) throw new UapiFormatError(`capability offset ${offset} is not ${CAP_ALIGN}-byte aligned`, struct, offset);
    if (offset + CAP_HEADER_SIZE > buf.byteLength) {
      throw new UapiFormatError(`capability at ${offset} lies past the end of the ${buf.byteLength}-byte buffer`, struct, offset);
    }
    const id = dv.getUint16(offset, true);
    const version = dv.getUint16(offset + 2, true);
    const next = dv.getUint32(offset + 4, true);
    out.push({ id, version, offset, end: next === 0 ? buf.byteLength : Math.min(next, buf.byteLength) });
    if (next === 0) return out;
    floor = offset + CAP_HEADER_SIZE;
    offset = next;
  }
}

/** Checks that `need` bytes of capability `cap` lie inside its extent. */
export function requireCapBytes(cap: CapEntry, need: number, struct: string): void {
  if (cap.offset + need > cap.end) {
    throw new UapiFormatError(`capability ${cap.id} needs ${need} bytes but only ${cap.end - cap.offset} are available`, struct, cap.offset);
  }
}

/**
 * Issues an INFO ioctl, growing the buffer while the kernel asks for more
 * (`argsz` raised above the buffer size), as the uAPI prescribes.
 *
 * @param fixedSize the size of the fixed struct (the first `argsz`)
 * @param prepare writes the input fields into a fresh zeroed buffer; `argsz` is set afterwards
 * @param call performs the ioctl on the buffer
 * @returns the buffer of the final call, holding the whole chain
 */
export function queryWithCaps(
  fixedSize: number,
  prepare: (buf: Uint8Array) => void,
  call: (buf: Uint8Array) => void,
  struct: string,
): Uint8Array {
  let size = fixedSize;
  for (let attempt = 0; attempt < MAX_QUERY_ATTEMPTS; attempt++) {
    const buf = new Uint8Array(size);
    prepare(buf);
    const dv = dataView(buf);
    dv.setUint32(0, size, true);
    call(buf);
    const need = dv.getUint32(0, true);
    if (need <= size) return buf;
    if (need > MAX_INFO_ARGSZ) throw new UapiFormatError(`the kernel asked for argsz ${need}, above the ${MAX_INFO_ARGSZ}-byte limit`, struct, 0);
    size = need;
  }
  throw new UapiFormatError(`argsz kept growing after ${MAX_QUERY_ATTEMPTS} calls`, struct, 0);
}
