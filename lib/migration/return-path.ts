/**
 * QEMU's migration return path (destination → source), reduced to the two
 * messages a VFIO migration needs, framed as QEMU frames them
 * (migration/migration.c: `be16 type, be16 len, data`):
 *
 * - `MIG_RP_MSG_SWITCHOVER_ACK` (7, no data): every device that needed to
 *   preload its initial precopy data has done so; the source may stop the VM.
 * - `MIG_RP_MSG_SHUT` (1, be32 status): the destination is done, 0 on success.
 *   The source waits for it before it calls the migration complete, so a
 *   destination that fails to load or start the devices makes the source
 *   resume its VM instead of leaving two halves stopped.
 *
 * Without a return path (a file: snapshot and restore) switchover-ack is off
 * and the source cannot know how the load went.
 */
import { StreamFormatError, VfioArgumentError } from '../errors.js';
import { FieldCollector } from './stream.js';

/** `MIG_RP_MSG_SHUT`. */
export const MIG_RP_MSG_SHUT = 1;
/** `MIG_RP_MSG_SWITCHOVER_ACK`. */
export const MIG_RP_MSG_SWITCHOVER_ACK = 7;

const HEADER_SIZE = 4;
const SHUT_SIZE = 4;

/** A return-path message. */
export type ReturnPathMessage = { readonly type: 'shut'; readonly status: number } | { readonly type: 'switchover-ack' };

/** The bytes of one message. */
export function encodeReturnPathMessage(message: ReturnPathMessage): Uint8Array {
  if (message.type === 'switchover-ack') return header(MIG_RP_MSG_SWITCHOVER_ACK, 0);
  if (!Number.isInteger(message.status) || message.status < 0 || message.status > 0xffffffff) {
    throw new VfioArgumentError('encodeReturnPathMessage', `status ${message.status} is not a u32`);
  }
  const out = new Uint8Array(HEADER_SIZE + SHUT_SIZE);
  out.set(header(MIG_RP_MSG_SHUT, SHUT_SIZE));
  new DataView(out.buffer).setUint32(HEADER_SIZE, message.status);
  return out;
}

function header(type: number, length: number): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, type);
  dv.setUint16(2, length);
  return out;
}

/**
 * Parses return-path messages from chunks split anywhere. Message types other
 * than SHUT and SWITCHOVER_ACK, and a length that does not fit the type, are
 * format errors; after one, every call throws it again.
 */
export class ReturnPathParser {
  readonly #field = new FieldCollector(HEADER_SIZE);
  #type: number | undefined;
  #position = 0;
  #fieldOffset = 0;
  #failure: unknown;

  constructor() {
    this.#field.expect(HEADER_SIZE);
  }

  /**
   * Parses `chunk`.
   * @throws StreamFormatError for an unknown type or a wrong length
   */
  push(chunk: Uint8Array): ReturnPathMessage[] {
    if (this.#failure !== undefined) throw this.#failure;
    const out: ReturnPathMessage[] = [];
    try {
      let pos = 0;
      while (pos < chunk.length) {
        const n = this.#field.fill(chunk, pos);
        pos += n;
        this.#position += n;
        if (this.#field.complete) this.#onField(out);
      }
    } catch (e) {
      this.#failure = e;
      throw e;
    }
    return out;
  }

  /**
   * Declares the end of input.
   * @throws StreamFormatError when it stops inside a message
   */
  end(): void {
    if (this.#failure !== undefined) throw this.#failure;
    if (this.#type !== undefined || this.#field.filled > 0) {
      this.#failure = new StreamFormatError('return path truncated inside a message', this.#position);
      throw this.#failure;
    }
  }

  #onField(out: ReturnPathMessage[]): void {
    const type = this.#type;
    if (type === undefined) {
      const t = this.#field.u32(0) >>> 16;
      const length = this.#field.u32(0) & 0xffff;
      const want = t === MIG_RP_MSG_SHUT ? SHUT_SIZE : t === MIG_RP_MSG_SWITCHOVER_ACK ? 0 : undefined;
      if (want === undefined) throw new StreamFormatError(`return-path message type ${t} is not supported`, this.#fieldOffset);
      if (length !== want) throw new StreamFormatError(`return-path message type ${t} carries ${length} bytes, not ${want}`, this.#fieldOffset + 2);
      if (length === 0) {
        out.push({ type: 'switchover-ack' });
        this.#expect(undefined, HEADER_SIZE);
      } else {
        this.#expect(t, length);
      }
      return;
    }
    out.push({ type: 'shut', status: this.#field.u32(0) });
    this.#expect(undefined, HEADER_SIZE);
  }

  #expect(type: number | undefined, size: number): void {
    this.#type = type;
    this.#field.expect(size);
    this.#fieldOffset = this.#position;
  }
}
