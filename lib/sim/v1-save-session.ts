/**
 * A saving session of the simulated v1 device, from RUNNING|SAVING or
 * SAVING until the device leaves the saving states: every page is sent
 * once, pages dirtied meanwhile are sent again, and stop-and-copy ends the
 * stream with the end marker.
 *
 * Pages are serialized (and their dirty bit cleared) only when a
 * transaction needs them, so a page written between two transactions goes
 * out with its latest content.
 */
import type { V1DeviceMemory } from './v1-device-memory.js';
import { V1_RECORD_HEADER_SIZE, V1_TXN_HEADER_SIZE, encodeEndRecord, encodePageRecord, encodeTransaction } from './v1-device-stream.js';

/** One saving session: dirty pages serialized on demand and cut into transactions. */
export class V1SaveSession {
  /** Serialized records not yet sent; the head may be partly sent already. */
  readonly #queue: Uint8Array[] = [];
  #queued = 0;
  #seq = 0;
  #endQueued = false;

  constructor(private readonly memory: V1DeviceMemory) {
    memory.markAllDirty();
  }

  /**
   * `pending_bytes`: stream bytes still to send (transaction headers aside),
   * counting the end marker only in stop-and-copy, where it is due.
   */
  pending(stopCopy: boolean): number {
    const pages = this.memory.dirtyPages * (V1_RECORD_HEADER_SIZE + this.memory.pageSize);
    const end = stopCopy && !this.#endQueued ? V1_RECORD_HEADER_SIZE : 0;
    return this.#queued + pages + end;
  }

  /**
   * Cuts the next transaction, at most `size` bytes with its header.
   * @returns undefined when nothing is pending
   */
  next(size: number, stopCopy: boolean): Uint8Array | undefined {
    const want = size - V1_TXN_HEADER_SIZE;
    while (this.#queued < want) {
      const page = this.memory.takeDirtyPage();
      if (page !== undefined) this.#enqueue(encodePageRecord(page.index, page.data));
      else if (stopCopy && !this.#endQueued) {
        this.#endQueued = true;
        this.#enqueue(encodeEndRecord(this.memory.pageCount));
      } else break;
    }
    if (this.#queued === 0) return undefined;
    return encodeTransaction(this.#seq++, this.#dequeue(Math.min(want, this.#queued)));
  }

  #enqueue(bytes: Uint8Array): void {
    this.#queue.push(bytes);
    this.#queued += bytes.byteLength;
  }

  #dequeue(length: number): Uint8Array {
    const out = new Uint8Array(length);
    let at = 0;
    while (at < length) {
      const head = this.#queue[0];
      if (head === undefined) break;
      const n = Math.min(head.byteLength, length - at);
      out.set(head.subarray(0, n), at);
      at += n;
      if (n === head.byteLength) this.#queue.shift();
      else this.#queue[0] = head.subarray(n);
    }
    this.#queued -= length;
    return out;
  }
}
