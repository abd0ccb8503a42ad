/**
 * The syscall boundary. Everything above `lib/sys` talks to the kernel only
 * through a {@link Sys}: the libc implementation (`LibcSys`, koffi) or the
 * simulated kernel (`SimKernel`). The interface is byte-level on purpose: the
 * simulator decodes exactly the buffers the real kernel would.
 *
 * Every method throws a `VfioSystemError` (with `errno`, `code` and `syscall`)
 * when the call fails; none returns a negative errno.
 */

/** `open(2)` flags used by the library (Linux values). */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

/** `mmap(2)` protections. */
export const PROT_READ = 1;
export const PROT_WRITE = 2;

/** `eventfd(2)` flags. */
export const EFD_NONBLOCK = 0o4000;
export const EFD_CLOEXEC = 0o2000000;

/** The largest single view koffi can make of native memory (a bigger one aborts the process). */
export const MAX_VIEW_BYTES = 2 ** 32;

/**
 * Memory mapped by {@link Sys.mmap} or {@link Sys.allocPages}.
 *
 * Views returned by {@link Mapping.view} alias the mapped memory without a
 * copy. After {@link Mapping.unmap} they must not be used: the libc
 * implementation replaces the range with anonymous zero pages first (so a stale
 * view reads zeros instead of crashing the process) and releases the address
 * range only once every view has been garbage-collected.
 */
export interface Mapping {
  /** The user virtual address of the first byte (what the kernel sees in MAP_DMA's `vaddr`). */
  readonly address: bigint;
  /** Length in bytes. */
  readonly length: number;
  /** True once {@link Mapping.unmap} has run. */
  readonly unmapped: boolean;
  /** A zero-copy view of `[offset, offset + length)`; at most {@link MAX_VIEW_BYTES} long. */
  view(offset?: number, length?: number): Uint8Array;
  /** Releases the mapping; idempotent. */
  unmap(): void;
}

/** A registration made by {@link Sys.watch}. */
export interface FdWatch {
  /** Stops watching; idempotent. Call it before closing the fd. */
  close(): void;
}

/** The system calls vfio-ts needs, at byte level. */
export interface Sys {
  /** `'libc'` or `'sim'`. */
  readonly kind: 'libc' | 'sim';
  /** The page size of this system. */
  readonly pageSize: number;

  open(path: string, flags: number): number;
  close(fd: number): void;
  /**
   * `ioctl(fd, request, arg)`. `arg` is passed by value when it is a number,
   * and as a pointer to the bytes (read and written in place) when it is a
   * `Uint8Array`. Returns the ioctl's non-negative result.
   */
  ioctl(fd: number, request: number, arg?: number | Uint8Array): number;
  /** `read(2)` into `buf`; returns the byte count (0 at end of file). */
  read(fd: number, buf: Uint8Array): number;
  /** `write(2)` of `buf`; returns the byte count. */
  write(fd: number, buf: Uint8Array): number;
  /** `read(2)` off the event loop, for fds whose reads may block (migration data). */
  readAsync(fd: number, buf: Uint8Array): Promise<number>;
  /** `write(2)` off the event loop, for fds whose writes may block (migration data). */
  writeAsync(fd: number, buf: Uint8Array): Promise<number>;
  /** `pread(2)` with a full 64-bit offset. */
  pread(fd: number, buf: Uint8Array, offset: number | bigint): number;
  /** `pwrite(2)` with a full 64-bit offset. */
  pwrite(fd: number, buf: Uint8Array, offset: number | bigint): number;
  /** `mmap(MAP_SHARED)` of `length` bytes of `fd` at `offset`. */
  mmap(fd: number, length: number, prot: number, offset: number | bigint): Mapping;
  /** Zeroed, page-aligned anonymous memory (I/O buffers, guest RAM for DMA). */
  allocPages(length: number): Mapping;
  /** The user virtual address of a view's first byte, for pointers inside ioctl arguments. */
  addressOf(view: ArrayBufferView): bigint;
  /** `eventfd(2)`. */
  eventfd(initval: number, flags: number): number;
  /**
   * Calls `onReadable` on the event loop whenever `fd` is readable
   * (level-triggered: drain the fd in the callback). Costs no thread per fd.
   */
  watch(fd: number, onReadable: () => void): FdWatch;

  /** `readlink(2)`: the target of a symbolic link, as stored. */
  readlink(path: string): string;
  /** `realpath(3)`: the canonical absolute path. */
  realpath(path: string): string;
  /** The entries of a directory, without `.` and `..`. */
  readdir(path: string): string[];
  /** A whole (small) text file, such as a sysfs attribute. */
  readFile(path: string): string;
}
