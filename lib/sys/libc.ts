/**
 * {@link Sys} on the real kernel: libc through koffi. Argument blocks are
 * bytes the caller encoded; this layer only moves them across and turns -1
 * returns into {@link VfioSystemError}s, reading errno immediately after the
 * failing call.
 */
import { readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import koffi from 'koffi';
import { epollWatcher } from './epoll-worker.js';
import * as libc from './libc-bindings.js';
import { MmapMapping } from './mapping.js';
import { withFsErrors } from './node-fs-error.js';
import type { FdWatch, Sys } from './sys.js';
import { uvPollAvailable, uvPollWatch } from './uv-poll-watch.js';

const SC_PAGESIZE = 30;

/**
 * How {@link LibcSys.watch} waits for fds: `'poll'` is `koffi.node.poll` on
 * Node's own event loop; `'epoll'` is one worker thread shared by all fds.
 */
export type WatchBackend = 'poll' | 'epoll';

/** Options of {@link LibcSys}. */
export interface LibcSysOptions {
  /**
   * The fd watcher. Defaults to `'epoll'` when the environment has
   * `VFIO_TS_POLL=epoll` or koffi lacks `koffi.node.poll`, else `'poll'`.
   */
  watch?: WatchBackend;
}

function defaultBackend(): WatchBackend {
  return process.env.VFIO_TS_POLL === 'epoll' || !uvPollAvailable() ? 'epoll' : 'poll';
}

/** The real system calls, through libc. Prefer the shared instance from {@link libcSys}. */
export class LibcSys implements Sys {
  readonly kind = 'libc';
  readonly pageSize: number;
  /** The fd watcher {@link LibcSys.watch} uses. */
  readonly watchBackend: WatchBackend;

  constructor(options: LibcSysOptions = {}) {
    this.pageSize = libc.check(libc.sysconf(SC_PAGESIZE), 'sysconf');
    this.watchBackend = options.watch ?? defaultBackend();
  }

  /** `open(2)` with mode 0 (vfio-ts never creates files). */
  open(path: string, flags: number): number {
    return libc.check(libc.open(path, flags, 0), 'open', { path });
  }

  close(fd: number): void {
    libc.check(libc.close(fd), 'close');
  }

  ioctl(fd: number, request: number, arg: number | Uint8Array = 0): number {
    const result = typeof arg === 'number' ? libc.ioctlInt(fd, request, arg) : libc.ioctlPtr(fd, request, arg);
    return libc.check(result, 'ioctl');
  }

  /** `read(2)`; throws on -1 including `EAGAIN` (callers of nonblocking fds catch it by `code`). */
  read(fd: number, buf: Uint8Array): number {
    return libc.check(libc.read(fd, buf, buf.byteLength), 'read');
  }

  /** `write(2)`; throws on -1 including `EAGAIN`. */
  write(fd: number, buf: Uint8Array): number {
    return libc.check(libc.write(fd, buf, buf.byteLength), 'write');
  }

  /**
   * `read(2)` on the libuv threadpool. Each pending call holds a pool thread,
   * which is fine for the one outstanding read per migration data fd; never
   * use it to wait for events (see {@link LibcSys.watch}).
   */
  readAsync(fd: number, buf: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      libc.read.async(fd, buf, buf.byteLength, (err, result) => settle(err, result, 'read', resolve, reject));
    });
  }

  /** `write(2)` on the libuv threadpool; see {@link LibcSys.readAsync}. */
  writeAsync(fd: number, buf: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      libc.write.async(fd, buf, buf.byteLength, (err, result) => settle(err, result, 'write', resolve, reject));
    });
  }

  pread(fd: number, buf: Uint8Array, offset: number | bigint): number {
    return libc.check(libc.pread(fd, buf, buf.byteLength, offset), 'pread');
  }

  pwrite(fd: number, buf: Uint8Array, offset: number | bigint): number {
    return libc.check(libc.pwrite(fd, buf, buf.byteLength, offset), 'pwrite');
  }

  mmap(fd: number, length: number, prot: number, offset: number | bigint): MmapMapping {
    return MmapMapping.map(fd, length, prot, offset);
  }

  allocPages(length: number): MmapMapping {
    return MmapMapping.anonymous(length);
  }

  addressOf(view: ArrayBufferView): bigint {
    return koffi.address(view);
  }

  eventfd(initval: number, flags: number): number {
    return libc.check(libc.eventfd(initval, flags), 'eventfd');
  }

  /**
   * Level-triggered readiness callbacks on the main thread, through the
   * {@link LibcSys.watchBackend}. `onReadable` runs synchronously in the
   * poller's callback (koffi's poll callbacks do not run microtasks), so drain
   * the fd there rather than after an `await`.
   * @throws VfioSystemError `EBADF`, `EPERM` (fd not pollable) or `EEXIST` (already watched).
   */
  watch(fd: number, onReadable: () => void): FdWatch & Disposable {
    return this.watchBackend === 'poll' ? uvPollWatch(fd, onReadable) : epollWatcher().watch(fd, onReadable);
  }

  readlink(path: string): string {
    return withFsErrors('readlink', path, () => readlinkSync(path, 'utf8'));
  }

  realpath(path: string): string {
    return withFsErrors('realpath', path, () => realpathSync.native(path, 'utf8'));
  }

  readdir(path: string): string[] {
    return withFsErrors('scandir', path, () => readdirSync(path, 'utf8'));
  }

  readFile(path: string): string {
    return withFsErrors('read', path, () => readFileSync(path, 'utf8'));
  }
}

/** Completes a koffi `.async` call; errno is still the worker thread's inside the callback (koffi ≥ 3.2). */
function settle(err: unknown, result: number, syscall: string, resolve: (n: number) => void, reject: (e: unknown) => void): void {
  if (err !== null && err !== undefined) reject(err);
  else if (result < 0) reject(libc.lastError(syscall));
  else resolve(result);
}

let shared: LibcSys | undefined;

/** The process-wide {@link LibcSys}, created on first use. */
export function libcSys(): LibcSys {
  shared ??= new LibcSys();
  return shared;
}
