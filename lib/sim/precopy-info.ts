/**
 * `VFIO_MIG_GET_PRECOPY_INFO` as the drivers answer it on a saving file
 * (mtty's `mtty_precopy_ioctl`, like mlx5's and hisi_acc's): the checks they
 * make, then the sizes written over the user's struct with `argsz` and
 * `flags` left as they came.
 */
import { VFIO_DEVICE_STATE_PRE_COPY, VFIO_DEVICE_STATE_PRE_COPY_P2P } from '../vfio/uapi/constants.js';
import { VFIO_MIG_GET_PRECOPY_INFO } from '../vfio/uapi/ioctls.js';
import { decode, encode } from '../vfio/uapi/layout.js';
import { vfio_precopy_info } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg } from './file.js';

/**
 * The user's `struct vfio_precopy_info`, once the request is known (ENOTTY),
 * `argsz` covers the struct and the device is in a precopy state (EINVAL),
 * and the file is still live (ENODEV).
 */
export function precopyInfoArg(request: number, arg: IoctlArg, state: number, disabled: boolean): Uint8Array {
  if (request !== VFIO_MIG_GET_PRECOPY_INFO) fail('ENOTTY');
  const buf = userBuf(arg, vfio_precopy_info.size);
  if (decode(vfio_precopy_info, buf).argsz < vfio_precopy_info.size) fail('EINVAL');
  if (state !== VFIO_DEVICE_STATE_PRE_COPY && state !== VFIO_DEVICE_STATE_PRE_COPY_P2P) fail('EINVAL');
  if (disabled) fail('ENODEV');
  return buf;
}

/** Writes the two sizes; `argsz` and `flags` keep what the user passed. */
export function answerPrecopyInfo(buf: Uint8Array, initialBytes: bigint, dirtyBytes: bigint): void {
  encode(vfio_precopy_info, { initial_bytes: initialBytes, dirty_bytes: dirtyBytes }, buf);
}
