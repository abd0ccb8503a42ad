/**
 * An eventfd the library owns: created non-blocking, watched on the event
 * loop without a thread of its own, drained in the callback.
 */
import { VfioClosedError } from '../errors.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, type FdWatch, type Sys } from '../sys/sys.js';

export class EventFd implements Disposable {
  readonly fd: number;
  readonly #sys: Sys;
  readonly #buf = new Uint8Array(8);
  #watch: FdWatch | null = null;
  #closed = false;

  constructor(sys: Sys) {
    this.#sys = sys;
    this.fd = sys.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Reads and resets the counter; 0 when nothing was signalled. */
  drain(): bigint {
    if (this.#closed) throw new VfioClosedError('eventfd');
    try {
      this.#sys.read(this.fd, this.#buf);
    } catch (e) {
      if (e instanceof Error && 'code' in e && e.code === 'EAGAIN') return 0n;
      throw e;
    }
    return new DataView(this.#buf.buffer).getBigUint64(0, true);
  }

  /** Adds `n` to the counter (what the kernel does to signal). */
  signal(n = 1n): void {
    if (this.#closed) throw new VfioClosedError('eventfd');
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, n, true);
    this.#sys.write(this.fd, b);
  }

  /** Calls `onSignal(count)` on the event loop each time the eventfd is signalled. */
  watch(onSignal: (count: bigint) => void): void {
    if (this.#closed) throw new VfioClosedError('eventfd');
    this.#watch?.close();
    this.#watch = this.#sys.watch(this.fd, () => {
      const n = this.drain();
      if (n > 0n) onSignal(n);
    });
  }

  /** Stops watching, keeping the fd. */
  unwatch(): void {
    this.#watch?.close();
    this.#watch = null;
  }

  /** Stops watching and closes the fd; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.unwatch();
    this.#closed = true;
    this.#sys.close(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
