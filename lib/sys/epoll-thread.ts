/**
 * The script of the epoll worker thread, run with `new Worker(source, { eval: true })`.
 *
 * It is plain JavaScript in a string rather than a module file because a
 * worker does not inherit the parent's TypeScript loader on Node 20 (tsx
 * registers its hooks on the main thread only), and an inline script runs the
 * same from sources, from `dist`, under tap and under c8.
 *
 * The thread only waits: it blocks in `epoll_wait` and posts the ids of ready
 * fds to the main thread, which does all `epoll_ctl` calls (epoll is safe to
 * modify from one thread while another waits). Every watched fd is armed with
 * EPOLLONESHOT, so an fd reported once is not reported again until the main
 * thread has run its callback and re-armed it. Readiness of the control
 * eventfd means "exit".
 *
 * It only uses dynamic `import()`, which works whether the eval'd script is
 * run as CommonJS or, under `--input-type=module`, as an ES module.
 *
 * workerData: `{ koffi, epfd, controlId, eventSize, dataOffset, maxEvents }`,
 * `koffi` being the file URL of koffi's entry point and `controlId` the
 * `epoll_data` of the control eventfd.
 */
export const EPOLL_THREAD_SOURCE = `'use strict';
(async function main() {
  const { workerData, parentPort } = await import('node:worker_threads');
  const { default: koffi } = await import(workerData.koffi);
  const EINTR = 4;
  const epollWait = koffi.load('libc.so.6').func('epoll_wait', 'int', ['int', 'void *', 'int', 'int']);
  const { epfd, controlId, eventSize, dataOffset, maxEvents } = workerData;
  const events = new Uint8Array(eventSize * maxEvents);
  const dv = new DataView(events.buffer);
  for (;;) {
    const n = epollWait(epfd, events, maxEvents, -1);
    if (n < 0) {
      const errno = koffi.errno();
      if (errno === EINTR) continue;
      parentPort.postMessage({ errno });
      return;
    }
    const ready = [];
    for (let i = 0; i < n; i++) {
      const id = dv.getUint32(i * eventSize + dataOffset, true);
      if (id === controlId) return;
      ready.push(id);
    }
    parentPort.postMessage(ready);
  }
})();
`;
