/**
 * The `copy_from_user`/`copy_to_user` dance of a driver's INFO ioctls: the
 * first `minsz` bytes of the user's struct into a kernel-side copy (EFAULT if
 * the buffer is shorter), the `argsz < minsz` check, and the copy back.
 */
import { dataView, type StructLayout } from '../vfio/uapi/layout.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg } from './file.js';

/**
 * The kernel's on-stack struct filled by `copy_from_user(&info, arg, minsz)`,
 * then the `argsz < minsz` check (every INFO struct starts with its u32 `argsz`).
 */
export function copyIn(arg: IoctlArg, layout: StructLayout, minsz: number): Uint8Array {
  const info = new Uint8Array(layout.size);
  info.set(userBuf(arg, minsz).subarray(0, minsz));
  if (dataView(info).getUint32(0, true) < minsz) fail('EINVAL');
  return info;
}

/** `copy_to_user(arg, &info, minsz)`. */
export function copyOut(arg: IoctlArg, info: Uint8Array, minsz: number): void {
  userBuf(arg, minsz).set(info.subarray(0, minsz));
}
