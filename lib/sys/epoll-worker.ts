/**
 * The fallback fd watcher: one worker thread, blocked in `epoll_wait`, for
 * every watched fd of the process. Used when `koffi.node.poll` is missing or
 * `VFIO_TS_POLL=epoll`.
 *
 * The main thread owns the epoll set and makes every `epoll_ctl` call; the
 * worker only reports ready ids (see `epoll-thread.ts`). Each fd is armed with
 * EPOLLONESHOT and re-armed after its callback has run, so the caller sees
 * level-triggered semantics (an fd left readable is reported again) without
 * the worker flooding the main thread while a callback is pending.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { VfioClosedError, VfioSystemError } from '../errors.js';
import {
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_DATA_OFFSET,
  EPOLL_EVENT_SIZE,
  EPOLLIN,
  EPOLLONESHOT,
  epollControl,
  epollEvent,
} from './epoll.js';
import { EPOLL_THREAD_SOURCE } from './epoll-thread.js';
import { check, close, epollCreate1, epollCtl, eventfd, write } from './libc-bindings.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, type FdWatch } from './sys.js';

/** The data id of the control eventfd; watch ids start at 1. */
const CONTROL_ID = 0;
const MAX_EVENTS = 256;

/** Watch ids are u32 (they travel in the low half of `epoll_data`) and never the control id. */
function nextId(id: number): number {
  return id === 0xffff_ffff ? CONTROL_ID + 1 : id + 1;
}

/** A watch registered with an {@link EpollWatcher}. */
class EpollWatch implements FdWatch, Disposable {
  /** The EPOLL_CTL_MOD argument that re-arms this watch. */
  readonly rearmEvent: Uint8Array;

  constructor(
    private readonly watcher: EpollWatcher,
    readonly id: number,
    readonly fd: number,
    readonly onReadable: () => void,
  ) {
    this.rearmEvent = epollEvent(EPOLLIN | EPOLLONESHOT, id);
  }

  close(): void {
    this.watcher.release(this);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** One epoll set and the worker thread that waits on it. */
export class EpollWatcher {
  readonly #epfd: number;
  readonly #control: number;
  readonly #worker: Worker;
  readonly #watches = new Map<number, EpollWatch>();
  #nextId = CONTROL_ID + 1;
  #running = true;
  // A worker blocked in epoll_wait would hang Node's exit (it joins worker
  // threads, and a thread in a syscall never sees termination): wake it first.
  readonly #stopOnExit = (): void => this.stop();

  constructor() {
    this.#epfd = check(epollCreate1(EPOLL_CLOEXEC), 'epoll_create1');
    this.#control = check(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), 'eventfd');
    epollControl(this.#epfd, EPOLL_CTL_ADD, this.#control, epollEvent(EPOLLIN, CONTROL_ID));
    this.#worker = new Worker(EPOLL_THREAD_SOURCE, {
      eval: true,
      // The parent's loaders and flags (tsx, test hooks, --input-type) are of no use to this thread.
      execArgv: [],
      workerData: {
        koffi: pathToFileURL(createRequire(import.meta.url).resolve('koffi')).href,
        epfd: this.#epfd,
        controlId: CONTROL_ID,
        eventSize: EPOLL_EVENT_SIZE,
        dataOffset: EPOLL_DATA_OFFSET,
        maxEvents: MAX_EVENTS,
      },
    });
    this.#worker.on('message', (message: unknown) => this.#dispatch(message));
    this.#worker.on('exit', () => this.#closeFds());
    this.#worker.unref();
    process.once('exit', this.#stopOnExit);
  }

  /** False once the worker was told to stop or has died; a new watcher is needed then. */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Calls `onReadable` on the main thread whenever `fd` is readable,
   * level-triggered, until the returned watch is closed.
   * @throws VfioClosedError once stopped (get a fresh one from {@link epollWatcher}).
   * @throws VfioSystemError from `epoll_ctl` (`EBADF`, `EPERM` for regular files, `EEXIST` if already watched).
   */
  watch(fd: number, onReadable: () => void): FdWatch & Disposable {
    if (!this.#running) throw new VfioClosedError('epoll watcher');
    let id = this.#nextId;
    // After a wrap, skip ids still in use.
    while (this.#watches.has(id)) id = nextId(id);
    this.#nextId = nextId(id);
    const watch = new EpollWatch(this, id, fd, onReadable);
    epollControl(this.#epfd, EPOLL_CTL_ADD, fd, watch.rearmEvent);
    this.#watches.set(id, watch);
    if (this.#watches.size === 1) this.#worker.ref();
    return watch;
  }

  /** Removes a watch; idempotent. Called by {@link EpollWatch.close}. */
  release(watch: EpollWatch): void {
    if (this.#watches.get(watch.id) !== watch) return;
    this.#watches.delete(watch.id);
    // Fails only if the fd was already closed (the kernel then dropped it from the set itself).
    epollCtl(this.#epfd, EPOLL_CTL_DEL, watch.fd, null);
    // Idle: let the process exit even though the worker still waits.
    if (this.#watches.size === 0) this.#worker.unref();
  }

  /** Tells the worker to exit; the epoll set and control eventfd are closed once it has. Idempotent. */
  stop(): void {
    if (!this.#running) return;
    this.#running = false;
    write(this.#control, new BigUint64Array([1n]), 8);
  }

  #dispatch(message: unknown): void {
    if (!Array.isArray(message)) {
      this.#running = false;
      const { errno } = message as { errno: number };
      throw new VfioSystemError(errno, 'epoll_wait');
    }
    let failed = false;
    let failure: unknown;
    for (const id of message as number[]) {
      // Ids closed after the worker saw them ready are skipped.
      const watch = this.#watches.get(id);
      if (watch === undefined) continue;
      try {
        watch.onReadable();
      } catch (err) {
        // Keep going so every other fd in the batch is delivered and re-armed.
        if (!failed) failure = err;
        failed = true;
      }
      // Re-arm unless the callback closed the watch. A failure means the fd
      // was closed before its watch; like a uv_poll watch, it then goes quiet.
      if (this.#watches.get(id) === watch) epollCtl(this.#epfd, EPOLL_CTL_MOD, watch.fd, watch.rearmEvent);
    }
    if (failed) throw failure;
  }

  #closeFds(): void {
    this.#running = false;
    process.off('exit', this.#stopOnExit);
    close(this.#epfd);
    close(this.#control);
  }
}

let shared: EpollWatcher | undefined;

/** The process-wide epoll watcher, started on first use (and again if it was stopped). */
export function epollWatcher(): EpollWatcher {
  if (shared === undefined || !shared.running) shared = new EpollWatcher();
  return shared;
}
