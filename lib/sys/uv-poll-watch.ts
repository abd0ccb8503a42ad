/**
 * The default fd watcher: `koffi.node.poll`, a `uv_poll_t` on Node's own
 * epoll. It costs no thread, and it is level-triggered like the
 * {@link Sys.watch} contract.
 *
 * Two koffi facts shape this file: the callback is invoked without a
 * microtask checkpoint, so `onReadable` is called synchronously rather than
 * through a promise; and any `uv_poll_init` failure (bad fd, regular file, fd
 * already polled) aborts the process instead of throwing, so every fd is
 * first checked the way libuv would check it.
 */
import koffi from 'koffi';
import type { node as KoffiNode } from 'koffi';
import { VfioSystemError } from '../errors.js';
import { EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLIN, epollControl, epollEvent } from './epoll.js';
import { Errno } from './errno.js';
import { check, epollCreate1 } from './libc-bindings.js';
import type { FdWatch } from './sys.js';

/** The runtime callback signature; koffi 3.3.4's `.d.ts` declares `(events) => void`. */
type PollCallback = (status: number, events: { readable: boolean }) => void;
type PollFunction = (fd: number, options: { readable: boolean }, callback: PollCallback) => KoffiNode.PollHandle;

const poll = (koffi.node as unknown as { poll?: PollFunction }).poll;

/** True when this koffi build has `koffi.node.poll` (undocumented API, so it may go away). */
export function uvPollAvailable(): boolean {
  return typeof poll === 'function';
}

/**
 * Every open watch, by fd. A second `uv_poll_init` on one of these fds would
 * abort; and koffi holds its PollHandle only weakly (a collected handle stops
 * polling without a word), so this map keeps each watch alive until close(),
 * as an active Node handle is.
 */
const openWatches = new Map<number, UvPollWatch>();
let probeEpfd = -1;

/** Fails like libuv would (EBADF, EPERM for regular files), but with an exception instead of an abort. */
function probe(fd: number): void {
  if (openWatches.has(fd)) throw new VfioSystemError(Errno.EEXIST, 'epoll_ctl');
  if (probeEpfd < 0) probeEpfd = check(epollCreate1(EPOLL_CLOEXEC), 'epoll_create1');
  epollControl(probeEpfd, EPOLL_CTL_ADD, fd, epollEvent(EPOLLIN, 0));
  epollControl(probeEpfd, EPOLL_CTL_DEL, fd, null);
}

/** A watch through `koffi.node.poll`. */
class UvPollWatch implements FdWatch, Disposable {
  #handle: KoffiNode.PollHandle | undefined;

  constructor(
    private readonly fd: number,
    onReadable: () => void,
    pollFd: PollFunction,
  ) {
    probe(fd);
    // A negative status (the fd went bad) is reported as readable too: the
    // owner's read then fails with the real errno instead of the watch going quiet.
    this.#handle = pollFd(fd, { readable: true }, () => {
      try {
        onReadable();
      } catch (err) {
        // An exception escaping into koffi's uv callback stays pending in
        // N-API and wedges later calls (measured: the handle could no longer
        // be closed and the process never exited). Report it as Node reports
        // a throwing event listener: an uncaught exception, from a clean stack.
        setImmediate(() => {
          throw err;
        });
      }
    });
    openWatches.set(fd, this);
  }

  close(): void {
    if (this.#handle === undefined) return;
    this.#handle.close();
    this.#handle = undefined;
    openWatches.delete(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Calls `onReadable` on the event loop whenever `fd` is readable, until the
 * returned watch is closed. Only fds not already polled by another libuv
 * handle may be watched (libuv allows one poll handle per fd).
 * @throws Error when `koffi.node.poll` is missing (check {@link uvPollAvailable}).
 * @throws VfioSystemError `EBADF`, `EPERM` (not pollable) or `EEXIST` (already watched).
 */
export function uvPollWatch(fd: number, onReadable: () => void): FdWatch & Disposable {
  if (poll === undefined) throw new Error('koffi.node.poll is not available in this koffi build');
  return new UvPollWatch(fd, onReadable, poll);
}
