/**
 * The one place the object layer calls `ioctl`: failures come back as a
 * `VfioSystemError` naming the ioctl (per fd kind, since numbers are reused)
 * and the device, group or container it was issued on.
 */
import { VfioSystemError } from '../errors.js';
import type { Sys } from '../sys/sys.js';
import { ioctlName, type FdKind } from './uapi/ioctls.js';

/** An fd the library owns, with what it needs to name failures. */
export interface IoctlTarget {
  readonly sys: Sys;
  readonly fd: number;
  readonly kind: FdKind;
  /** The device name, group path or container path for error messages. */
  readonly label: string;
}

/** `ioctl(target.fd, request, arg)`, annotating a failure with the ioctl's name and the target. */
export function ioctl(target: IoctlTarget, request: number, arg?: number | Uint8Array): number {
  try {
    return target.sys.ioctl(target.fd, request, arg);
  } catch (e) {
    if (e instanceof VfioSystemError) e.annotate({ op: ioctlName(target.kind, request), device: target.label });
    throw e;
  }
}

/** Runs a non-ioctl system call, annotating a failure with `op` and the target. */
export function syscall<T>(target: Pick<IoctlTarget, 'label'>, op: string, body: () => T): T {
  try {
    return body();
  } catch (e) {
    if (e instanceof VfioSystemError) e.annotate({ op, device: target.label });
    throw e;
  }
}
