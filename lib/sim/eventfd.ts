/**
 * A simulated eventfd: a 64-bit counter that the simulated kernel signals
 * (an interrupt) and the user reads (8 bytes, resetting it), as eventfd(2).
 */
import { fail } from './errno.js';
import type { FileOps } from './file.js';

const MAX = 0xffff_ffff_ffff_fffen;

export class SimEventFd implements FileOps {
  readonly kind = 'eventfd';
  readonly label = 'eventfd';
  #count: bigint;
  readonly #listeners = new Set<() => void>();

  constructor(initval: number) {
    this.#count = BigInt(initval);
  }

  /** The current counter value (for tests). */
  get count(): bigint {
    return this.#count;
  }

  /** What the kernel's `eventfd_signal` does: add `n` and wake readers. */
  signal(n = 1n): void {
    this.#count = this.#count + n > MAX ? MAX : this.#count + n;
    this.#notify();
  }

  read(buf: Uint8Array): number {
    if (buf.byteLength < 8) fail('EINVAL');
    // The simulator never blocks: an empty counter reads as EAGAIN even without EFD_NONBLOCK.
    if (this.#count === 0n) fail('EAGAIN');
    new DataView(buf.buffer, buf.byteOffset, 8).setBigUint64(0, this.#count, true);
    this.#count = 0n;
    return 8;
  }

  write(buf: Uint8Array): number {
    if (buf.byteLength < 8) fail('EINVAL');
    const v = new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true);
    if (v === 0xffff_ffff_ffff_ffffn) fail('EINVAL');
    if (this.#count + v > MAX) fail('EAGAIN');
    this.#count += v;
    this.#notify();
    return 8;
  }

  readable(): boolean {
    return this.#count > 0n;
  }

  onChange(listener: () => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #notify(): void {
    for (const l of this.#listeners) l();
  }
}
