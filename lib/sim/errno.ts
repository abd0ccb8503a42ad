/**
 * How the simulated kernel fails a call: code deep inside it throws a
 * {@link KernelErrno} (like returning `-EINVAL`), and the `Sys` boundary turns
 * it into the `VfioSystemError` a real system call would produce.
 */
import { Errno, type ErrnoName } from '../sys/errno.js';

/** A negative return from simulated kernel code. */
export class KernelErrno extends Error {
  constructor(readonly errno: number) {
    super(`kernel errno ${errno}`);
  }
}

/** Fails the current simulated system call with `name` (`fail('EINVAL')`). */
export function fail(name: ErrnoName): never {
  throw new KernelErrno(Errno[name]);
}

/**
 * The user buffer an ioctl points at, as `copy_from_user` would see it: a
 * number or a buffer shorter than `minsz` faults.
 */
export function userBuf(arg: number | Uint8Array | undefined, minsz: number): Uint8Array {
  if (!(arg instanceof Uint8Array) || arg.byteLength < minsz) fail('EFAULT');
  return arg;
}
