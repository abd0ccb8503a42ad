/**
 * Node streams as the {@link ByteSink} and {@link ByteSource} of the
 * migration hooks: a pipe, a TCP socket or a file.
 */
import { WriteStream } from 'node:fs';
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { MigrationError } from '../errors.js';
import { ChunkSource, type ByteSink } from './byte-io.js';

/** Options of {@link writableSink}. */
export interface WritableSinkOptions {
  /**
   * Copy each chunk before writing it. A socket or a file stream has taken the
   * bytes over when its write callback runs, but an in-memory stream (a
   * PassThrough) may still hold a view of them, and the hooks reuse their
   * buffers. Default: false for `net.Socket` and `fs.WriteStream`, else true.
   */
  copy?: boolean;
}

/**
 * A sink that writes to `stream`, resolving each write once its callback ran
 * (the stream's own backpressure: a full socket delays the callback).
 * Failures reject with a `MigrationError` (`transport`) caused by the stream's error.
 */
export function writableSink(stream: Writable, options: WritableSinkOptions = {}): ByteSink {
  const copy = options.copy ?? !(stream instanceof Socket || stream instanceof WriteStream);
  return {
    write(...chunks: Uint8Array[]): Promise<void> {
      const parts = chunks.filter((c) => c.byteLength > 0);
      return new Promise<void>((resolve, reject) => {
        if (parts.length === 0) {
          resolve();
          return;
        }
        if (stream.destroyed || stream.writableEnded) {
          reject(new MigrationError('the output stream is closed', 'transport', undefined, { cause: stream.errored ?? undefined }));
          return;
        }
        let left = parts.length;
        let failed = false;
        const done = (err?: Error | null): void => {
          if (failed) return;
          if (err !== null && err !== undefined) {
            failed = true;
            reject(transportError('writing', err));
          } else if (--left === 0) {
            resolve();
          }
        };
        // Corked writes go out as one writev(2): a record header and its payload in one call.
        if (parts.length > 1) stream.cork();
        for (const p of parts) stream.write(copy ? Buffer.from(p) : p, done);
        if (parts.length > 1) stream.uncork();
      });
    },
  };
}

/**
 * A source that reads a Node stream in paused mode, so it pulls only what the
 * hooks consume (the stream's buffer is its high-water mark). The end of the
 * stream, or its close without an end, reads as null; a stream error rejects
 * with a `MigrationError` (`transport`). Dispose of it to detach its listeners.
 */
export class ReadableSource extends ChunkSource implements Disposable {
  readonly #stream: Readable;
  #ended = false;
  #disposed = false;
  #failure: unknown;
  #wake: (() => void) | undefined;
  readonly #poke = (): void => {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  };
  readonly #onEnd = (): void => {
    this.#ended = true;
    this.#poke();
  };
  readonly #onError = (err: Error): void => {
    this.#failure ??= transportError('reading', err);
    this.#poke();
  };

  constructor(stream: Readable) {
    super(() => this.#next());
    this.#stream = stream;
    stream.on('readable', this.#poke);
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onEnd);
    stream.on('error', this.#onError);
  }

  [Symbol.dispose](): void {
    this.#disposed = true;
    const s = this.#stream;
    s.off('readable', this.#poke);
    s.off('end', this.#onEnd);
    s.off('close', this.#onEnd);
    s.off('error', this.#onError);
    this.#poke();
  }

  async #next(): Promise<Uint8Array | null> {
    const s = this.#stream;
    for (;;) {
      if (this.#disposed) return null;
      if (this.#failure === undefined && s.errored !== null) this.#failure = transportError('reading', s.errored);
      if (this.#failure !== undefined) throw this.#failure;
      const chunk: unknown = s.read();
      if (chunk instanceof Uint8Array) return chunk;
      if (this.#ended || s.readableEnded || s.destroyed) return null;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
  }
}

function transportError(what: 'reading' | 'writing', err: Error): MigrationError {
  return new MigrationError(`${what} the migration stream failed: ${err.message}`, 'transport', undefined, { cause: err });
}
