/** Shared assertions for tests. */
import type { Test } from 'tap';
import { VfioSystemError } from '../../lib/errors.js';

/** Expects `f` to throw a VfioSystemError with `code`. */
export function expectErrno(t: Test, f: () => unknown, code: string, what: string): void {
  try {
    f();
    t.fail(`${what}: expected ${code}, it succeeded`);
  } catch (e) {
    t.type(e, VfioSystemError, what);
    t.equal((e as VfioSystemError).code, code, what);
  }
}

/** The error `fn` throws (throws itself when `fn` returns). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an exception');
}
