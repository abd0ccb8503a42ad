/**
 * Conversion of the errors thrown by `node:fs` into {@link VfioSystemError},
 * so every `Sys` method fails the same way whichever layer made the call.
 */
import { VfioSystemError } from '../errors.js';
import { Errno } from './errno.js';

/** The fields of Node's `SystemError` that this conversion reads. */
interface NodeSystemErrorFields {
  code?: unknown;
  errno?: unknown;
  syscall?: unknown;
}

/**
 * Runs a `node:fs` call and rethrows its system errors as `VfioSystemError`
 * (errno from the error's `code`, Node's `syscall`, and `path`). Other
 * exceptions pass through unchanged.
 */
export function withFsErrors<T>(syscall: string, path: string, call: () => T): T {
  try {
    return call();
  } catch (err) {
    const fields: NodeSystemErrorFields = typeof err === 'object' && err !== null ? err : {};
    const { code, errno } = fields;
    if (typeof code !== 'string' || typeof errno !== 'number') throw err;
    // Node's errno is libuv's negated value; prefer the Linux table by name so the number matches the sim.
    const number = (Errno as Readonly<Record<string, number | undefined>>)[code] ?? -errno;
    throw new VfioSystemError(number, typeof fields.syscall === 'string' ? fields.syscall : syscall, { path });
  }
}
