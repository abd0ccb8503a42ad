/**
 * A resuming session of the simulated v1 device: it checks every
 * transaction against the source's framing (sequence, length, CRC), so a
 * transaction that the user split or merged is refused, then parses the
 * record stream (records straddle transactions) into device memory.
 */
import { concatBytes } from '../bytes.js';
import { dataView } from '../vfio/uapi/layout.js';
import type { V1DeviceMemory } from './v1-device-memory.js';
import { V1_RECORD_END, V1_RECORD_HEADER_SIZE, V1_RECORD_PAGE, decodeTransaction } from './v1-device-stream.js';

/** One resuming session: transaction checks, then records into device memory. */
export class V1ResumeSession {
  #seq = 0;
  /** Bytes of an incomplete record carried over to the next transaction. */
  #partial = new Uint8Array(0);
  #ended = false;
  /** Why the session failed; it accepts nothing afterwards. */
  #failure: string | undefined;

  constructor(private readonly memory: V1DeviceMemory) {}

  /** Transactions accepted. */
  get transactions(): number {
    return this.#seq;
  }

  /** Why the session was refused, if it was. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** The end marker arrived and nothing is left over: the device state is whole. */
  get complete(): boolean {
    return this.#ended && this.#failure === undefined;
  }

  /**
   * Takes one transaction (the bytes the user wrote, `data_size` long).
   * @returns why it is refused, or undefined when it was loaded
   */
  accept(bytes: Uint8Array): string | undefined {
    if (this.#failure !== undefined) return this.#failure;
    const txn = decodeTransaction(bytes, this.#seq);
    if (!txn.ok) return this.#fail(txn.reason);
    this.#seq++;
    const reason = this.#parse(concatBytes([this.#partial, txn.payload]));
    return reason === undefined ? undefined : this.#fail(reason);
  }

  #fail(reason: string): string {
    this.#failure = reason;
    return reason;
  }

  /** Loads every whole record of `data` and keeps the rest for the next transaction. */
  #parse(data: Uint8Array): string | undefined {
    const dv = dataView(data);
    const pageSize = this.memory.pageSize;
    let at = 0;
    while (data.byteLength - at >= V1_RECORD_HEADER_SIZE) {
      if (this.#ended) return 'data after the end marker';
      const kind = dv.getUint32(at, true);
      const arg = dv.getUint32(at + 4, true);
      if (kind === V1_RECORD_END) {
        if (arg !== this.memory.pageCount) return `the source has ${arg} pages, this device ${this.memory.pageCount}`;
        this.#ended = true;
        at += V1_RECORD_HEADER_SIZE;
        continue;
      }
      if (kind !== V1_RECORD_PAGE) return `unknown record kind ${kind}`;
      if (arg >= this.memory.pageCount) return `page ${arg} is past the ${this.memory.pageCount} pages of the device`;
      const end = at + V1_RECORD_HEADER_SIZE + pageSize;
      if (end > data.byteLength) break;
      this.memory.loadPage(arg, data.subarray(at + V1_RECORD_HEADER_SIZE, end));
      at = end;
    }
    if (this.#ended && at < data.byteLength) return 'data after the end marker';
    this.#partial = data.slice(at);
    return undefined;
  }
}
