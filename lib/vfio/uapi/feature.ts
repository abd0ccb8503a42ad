/**
 * `struct vfio_device_feature` arguments for VFIO_DEVICE_FEATURE: an 8-byte
 * header (`argsz`, `flags` = feature id | GET/SET/PROBE) and the payload.
 * Buffers are sized as QEMU sizes them: the payload rounded up to 8 bytes.
 */
import { dataView } from './layout.js';
import { vfio_device_feature } from './structs.js';

/** Offset of the payload in a feature buffer. */
export const FEATURE_PAYLOAD = vfio_device_feature.size;

/** A zeroed feature buffer with its header filled in and room for `payloadSize` bytes. */
export function featureBuffer(flags: number, payloadSize: number): Uint8Array {
  const argsz = FEATURE_PAYLOAD + Math.ceil(payloadSize / 8) * 8;
  const buf = new Uint8Array(argsz);
  const dv = dataView(buf);
  dv.setUint32(0, argsz, true);
  dv.setUint32(4, flags, true);
  return buf;
}

/** The payload part of a feature buffer, aliasing it. */
export function featurePayload(buf: Uint8Array): Uint8Array {
  return buf.subarray(FEATURE_PAYLOAD);
}
