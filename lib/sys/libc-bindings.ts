/**
 * The raw libc functions, bound once through koffi, and the errno capture
 * that turns a -1 return into a {@link VfioSystemError}. Everything here is
 * internal to `lib/sys`; the typed wrappers live in `LibcSys`, `MmapMapping`
 * and the fd watchers.
 */
import koffi from 'koffi';
import { VfioSystemError, type SyscallContext } from '../errors.js';

/** A bound libc function, with koffi's threadpool variant. */
export interface LibcFunction<A extends unknown[], R> {
  (...args: A): R;
  /** Runs the call on the libuv threadpool; the callback gets koffi's error or the return value. */
  async(...args: [...A, (err: unknown, result: R) => void]): void;
}

/** A pointer argument: memory passed zero-copy, a raw address, or NULL. */
export type Pointer = ArrayBufferView | bigint | null;

const libc = koffi.load('libc.so.6');

function bind<A extends unknown[], R>(name: string, result: string, args: string[]): LibcFunction<A, R> {
  return libc.func(name, result, args) as LibcFunction<A, R>;
}

// Fixed-arity prototypes throughout: ioctl and open are variadic in C, but on
// the Linux x86_64 and aarch64 ABIs integer and pointer varargs travel exactly
// like named arguments, and koffi's fixed-arity path is faster and has `.async`.
export const open = bind<[path: string, flags: number, mode: number], number>('open', 'int', ['const char *', 'int', 'unsigned int']);
export const close = bind<[fd: number], number>('close', 'int', ['int']);
export const ioctlPtr = bind<[fd: number, request: number, arg: Pointer], number>('ioctl', 'int', ['int', 'unsigned long', 'void *']);
export const ioctlInt = bind<[fd: number, request: number, arg: number], number>('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']);
export const read = bind<[fd: number, buf: Pointer, count: number], number>('read', 'intptr_t', ['int', 'void *', 'size_t']);
export const write = bind<[fd: number, buf: Pointer, count: number], number>('write', 'intptr_t', ['int', 'void *', 'size_t']);
export const pread = bind<[fd: number, buf: Pointer, count: number, offset: number | bigint], number>('pread', 'intptr_t', ['int', 'void *', 'size_t', 'int64_t']);
export const pwrite = bind<[fd: number, buf: Pointer, count: number, offset: number | bigint], number>('pwrite', 'intptr_t', ['int', 'void *', 'size_t', 'int64_t']);
export const mmap = bind<[addr: Pointer, length: number, prot: number, flags: number, fd: number, offset: number | bigint], bigint | null>(
  'mmap',
  'void *',
  ['void *', 'size_t', 'int', 'int', 'int', 'int64_t'],
);
export const munmap = bind<[addr: bigint, length: number], number>('munmap', 'int', ['void *', 'size_t']);
export const eventfd = bind<[initval: number, flags: number], number>('eventfd', 'int', ['unsigned int', 'int']);
export const sysconf = bind<[name: number], number>('sysconf', 'long', ['int']);
export const epollCreate1 = bind<[flags: number], number>('epoll_create1', 'int', ['int']);
export const epollCtl = bind<[epfd: number, op: number, fd: number, event: Pointer], number>('epoll_ctl', 'int', ['int', 'int', 'int', 'void *']);

/** `mmap`'s failure value, `(void *)-1`, as koffi returns pointers (unsigned BigInt). */
export const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/**
 * The error for the call that just returned -1. Must run before any other
 * native call on this thread, which could overwrite errno.
 */
export function lastError(syscall: string, context?: SyscallContext): VfioSystemError {
  return new VfioSystemError(koffi.errno(), syscall, context);
}

/** Returns `result`, or throws the errno error when it is negative. */
export function check(result: number, syscall: string, context?: SyscallContext): number {
  if (result < 0) throw lastError(syscall, context);
  return result;
}
