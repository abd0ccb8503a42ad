/**
 * Node streams as the hooks' sink and source: writes that resolve once the
 * bytes are taken over (copied for in-memory pipes), backpressure, pushback,
 * the end of a stream, and failures as typed `transport` errors.
 */
import { Writable, PassThrough } from 'node:stream';
import t from 'tap';
import { bytesSource, ChunkSource } from '../lib/migration/byte-io.js';
import { ReadableSource, writableSink } from '../lib/migration/node-streams.js';

t.test('writableSink: in order, copied for an in-memory pipe, resolved once taken', async (t) => {
  const pipe = new PassThrough();
  const sink = writableSink(pipe);
  const buf = Uint8Array.of(1, 2, 3);
  await sink.write(buf, Uint8Array.of(), Uint8Array.of(4));
  buf[0] = 9; // the caller reuses its buffer at once
  await sink.write();
  pipe.end();
  const got: number[] = [];
  for await (const c of pipe) got.push(...(c as Buffer));
  t.same(got, [1, 2, 3, 4], 'a PassThrough got copies, in call order');

  let callbacks = 0;
  const slow = new Writable({
    highWaterMark: 1,
    write(_chunk, _enc, done) {
      callbacks++;
      setTimeout(done, 5);
    },
  });
  const started = performance.now();
  await writableSink(slow, { copy: false }).write(new Uint8Array(10), new Uint8Array(10));
  t.equal(callbacks, 2);
  t.ok(performance.now() - started >= 8, 'the promise waited for both write callbacks (backpressure)');
});

t.test('writableSink: a closed or failing stream is a transport error', async (t) => {
  const closed = new PassThrough();
  closed.end();
  await t.rejects(writableSink(closed).write(Uint8Array.of(1)), { code: 'ERR_VFIO_MIGRATION', reason: 'transport', message: /closed/ });
  const failing = new Writable({
    write(_chunk, _enc, done) {
      done(new Error('EPIPE'));
    },
  });
  failing.on('error', () => undefined);
  await t.rejects(writableSink(failing).write(Uint8Array.of(1), Uint8Array.of(2)), { reason: 'transport', message: /EPIPE/ });
});

t.test('ReadableSource: chunks, pushback, the end, a premature close, an error', async (t) => {
  const pipe = new PassThrough();
  const source = new ReadableSource(pipe);
  pipe.write(Uint8Array.of(1, 2));
  const first = await source.read();
  t.same([...(first ?? [])], [1, 2]);
  source.unread(Uint8Array.of(2));
  source.unread(new Uint8Array(0));
  t.same([...((await source.read()) ?? [])], [2], 'what was given back comes first');
  const later = source.read();
  setTimeout(() => pipe.end(Uint8Array.of(3)), 5);
  t.same([...((await later) ?? [])], [3], 'a read waits for data');
  t.equal(await source.read(), null, 'then the end');
  source[Symbol.dispose]();

  const cut = new PassThrough();
  const s2 = new ReadableSource(cut);
  setTimeout(() => cut.destroy(), 5);
  t.equal(await s2.read(), null, 'a close without an end reads as the end');

  const broken = new PassThrough();
  const s3 = new ReadableSource(broken);
  setTimeout(() => broken.destroy(new Error('ECONNRESET')), 5);
  await t.rejects(s3.read(), { code: 'ERR_VFIO_MIGRATION', reason: 'transport', message: /ECONNRESET/ });
  await t.rejects(s3.read(), { code: 'ERR_VFIO_MIGRATION', reason: 'transport' }, 'and again');

  const idle = new PassThrough();
  const s4 = new ReadableSource(idle);
  const waiting = s4.read();
  s4[Symbol.dispose]();
  t.equal(await waiting, null, 'disposing ends a pending read');
  t.equal(idle.listenerCount('readable'), 0, 'and detaches its listeners');
});

t.test('ChunkSource skips empty chunks; bytesSource', async (t) => {
  const s = bytesSource([new Uint8Array(0), Uint8Array.of(5), new Uint8Array(0)]);
  t.same([...((await s.read()) ?? [])], [5]);
  t.equal(await s.read(), null);
  let calls = 0;
  const c = new ChunkSource(() => Promise.resolve(calls++ < 2 ? new Uint8Array(0) : null));
  t.equal(await c.read(), null);
  t.equal(calls, 3);
});
