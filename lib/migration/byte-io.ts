/**
 * The byte sink the save hooks write to and the byte source the load hooks
 * read from. They know nothing of sockets or files: the runner adapts Node
 * streams to them (`node-streams.ts`), a VMM may adapt its own channel.
 */

/**
 * Where the save hooks put their framed bytes. Backpressure is the sink's:
 * callers await each write, so a slow consumer slows the producer and memory
 * stays bounded.
 */
export interface ByteSink {
  /**
   * Appends `chunks`, in order. The promise settles once every chunk has been
   * taken over (copied, or handed to the kernel): only then may the caller
   * reuse their memory. It rejects if the bytes cannot be delivered.
   */
  write(...chunks: Uint8Array[]): Promise<void>;
}

/**
 * Where the load hooks read from: chunks of any size, in order, and a way to
 * give back what belongs to the next reader (a hook stops at the end of its
 * section, which may lie inside a chunk).
 */
export interface ByteSource {
  /** The next chunk (never empty), or null at the end of input. The caller owns it until it calls `read` again. */
  read(): Promise<Uint8Array | null>;
  /** Puts `bytes` back in front: the next {@link read} returns them first. */
  unread(bytes: Uint8Array): void;
}

/** A {@link ByteSource} over any function that produces chunks, with pushback. */
export class ChunkSource implements ByteSource {
  readonly #next: () => Promise<Uint8Array | null>;
  readonly #back: Uint8Array[] = [];

  /** @param next produces the next chunk, or null at the end (empty chunks are skipped) */
  constructor(next: () => Promise<Uint8Array | null>) {
    this.#next = next;
  }

  async read(): Promise<Uint8Array | null> {
    const back = this.#back.pop();
    if (back !== undefined) return back;
    for (;;) {
      const chunk = await this.#next();
      if (chunk === null || chunk.byteLength > 0) return chunk;
    }
  }

  unread(bytes: Uint8Array): void {
    if (bytes.byteLength > 0) this.#back.push(bytes);
  }
}

/** A {@link ChunkSource} over chunks already in memory (tests, a snapshot read whole). */
export function bytesSource(chunks: Iterable<Uint8Array>): ChunkSource {
  const it = chunks[Symbol.iterator]();
  return new ChunkSource(() => {
    const r = it.next();
    return Promise.resolve(r.done === true ? null : r.value);
  });
}
