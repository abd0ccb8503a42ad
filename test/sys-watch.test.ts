/**
 * LibcSys.watch on both backends (koffi.node.poll and the epoll worker):
 * level-triggered delivery, thousands of fds without a thread per fd,
 * close(), refusal of bad fds (which must throw, not abort), and process exit.
 */
import { thrown } from './helpers/expect.js';
import { spawnSync } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { VfioSystemError } from '../lib/errors.js';
import { LibcSys, type WatchBackend } from '../lib/sys/libc.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, type FdWatch } from '../lib/sys/sys.js';

const ONE = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const MANY = 2048;

function threadCount(): number {
  return Number(/^Threads:\s+(\d+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves once `done()` holds, polling the event loop; rejects after `ms`. */
async function until(done: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}


t.test('the backend follows VFIO_TS_POLL', async (t) => {
  const saved = process.env.VFIO_TS_POLL;
  t.teardown(() => {
    if (saved === undefined) delete process.env.VFIO_TS_POLL;
    else process.env.VFIO_TS_POLL = saved;
  });
  delete process.env.VFIO_TS_POLL;
  t.equal(new LibcSys().watchBackend, 'poll', 'koffi.node.poll by default');
  process.env.VFIO_TS_POLL = 'epoll';
  t.equal(new LibcSys().watchBackend, 'epoll');
  t.equal(new LibcSys({ watch: 'poll' }).watchBackend, 'poll', 'an explicit option wins');
});

for (const backend of ['poll', 'epoll'] as const satisfies readonly WatchBackend[]) {
  t.test(`watch with the ${backend} backend`, async (t) => {
    const sys = new LibcSys({ watch: backend });
    const eventfd = (): number => {
      const fd = sys.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      t.teardown(() => sys.close(fd));
      return fd;
    };
    const drain = (fd: number): void => {
      sys.read(fd, new Uint8Array(8));
    };

    t.test('level-triggered: an fd left readable is reported again', async (t) => {
      const fd = eventfd();
      let calls = 0;
      const watch = sys.watch(fd, () => {
        calls += 1;
        // Leave the counter set on the first three calls; drain from the fourth on.
        if (calls >= 4) drain(fd);
      });
      t.teardown(() => watch.close());
      await sleep(20);
      t.equal(calls, 0, 'nothing before a signal');
      sys.write(fd, ONE);
      await until(() => calls >= 4, 'four callbacks');
      await sleep(50);
      t.equal(calls, 4, 'quiet once drained');
      sys.write(fd, ONE);
      await until(() => calls >= 5, 'the next signal');
      t.equal(calls, 5);
    });

    t.test('onReadable runs synchronously, so it can read the counter itself', async (t) => {
      const fd = eventfd();
      const counts: bigint[] = [];
      const watch = sys.watch(fd, () => {
        const buf = new Uint8Array(8);
        sys.read(fd, buf);
        counts.push(new DataView(buf.buffer).getBigUint64(0, true));
      });
      t.teardown(() => watch.close());
      sys.write(fd, ONE);
      sys.write(fd, ONE);
      await until(() => counts.length > 0, 'a callback');
      t.same(counts, [2n]);
    });

    t.test(`${MANY} eventfds at once, without a thread per fd`, async (t) => {
      const before = threadCount();
      const fds = Array.from({ length: MANY }, eventfd);
      const calls = new Array<number>(MANY).fill(0);
      const watches = fds.map((fd, i) =>
        sys.watch(fd, () => {
          calls[i] += 1;
          drain(fd);
        }),
      );
      t.teardown(() => watches.forEach((w) => w.close()));
      for (const fd of fds) sys.write(fd, ONE);
      await until(() => calls.every((n) => n >= 1), 'every fd');
      // One worker thread for the epoll backend, none for poll.
      t.ok(threadCount() - before <= 2, `threads went from ${before} to ${threadCount()}`);

      // Signal every other fd: exactly those are reported, once each.
      calls.fill(0);
      fds.forEach((fd, i) => i % 2 === 0 && sys.write(fd, ONE));
      await until(() => calls.every((n, i) => i % 2 === 1 || n >= 1), 'the even fds');
      await sleep(50);
      t.ok(
        calls.every((n, i) => n === (i % 2 === 0 ? 1 : 0)),
        'one callback per signalled fd',
      );
    });

    t.test('close() stops delivery and is idempotent', async (t) => {
      const fd = eventfd();
      let calls = 0;
      const watch = sys.watch(fd, () => {
        calls += 1;
        drain(fd);
      });
      sys.write(fd, ONE);
      await until(() => calls === 1, 'the first signal');
      watch.close();
      watch.close();
      sys.write(fd, ONE);
      await sleep(50);
      t.equal(calls, 0 + 1, 'no callback after close');

      // The fd can be watched again afterwards.
      const again = sys.watch(fd, () => {
        calls += 1;
        drain(fd);
      });
      await until(() => calls === 2, 'the pending signal, on the new watch');
      again[Symbol.dispose]();
    });

    t.test('a watch nobody references keeps working until closed', async (t) => {
      const fd = eventfd();
      let calls = 0;
      const ref = new WeakRef(
        sys.watch(fd, () => {
          calls += 1;
          drain(fd);
        }),
      );
      for (let i = 0; i < 3; i++) {
        gc();
        await sleep(10);
      }
      sys.write(fd, ONE);
      await until(() => calls === 1, 'a signal after GC');
      const watch = ref.deref();
      t.ok(watch !== undefined, 'the watch was not collected');
      watch?.close();
    });

    t.test('a callback may close its own watch while the fd stays readable', async (t) => {
      const fd = eventfd();
      let calls = 0;
      const watch: FdWatch = sys.watch(fd, () => {
        calls += 1;
        watch.close();
      });
      sys.write(fd, ONE);
      await until(() => calls === 1, 'the callback');
      await sleep(50);
      t.equal(calls, 1, 'not called again although never drained');
    });

    t.test('unwatchable fds throw instead of aborting the process', async (t) => {
      t.match(thrown(() => sys.watch(1_000_000, () => undefined)), { code: 'EBADF', syscall: 'epoll_ctl' });
      const file = openSync(fileURLToPath(import.meta.url), 'r');
      t.teardown(() => closeSync(file));
      const err = thrown(() => sys.watch(file, () => undefined));
      t.type(err, VfioSystemError);
      t.match(err, { code: 'EPERM' }, 'regular files cannot be polled');
      const fd = eventfd();
      const watch = sys.watch(fd, () => undefined);
      t.teardown(() => watch.close());
      t.match(thrown(() => sys.watch(fd, () => undefined)), { code: 'EEXIST' }, 'one watch per fd');
    });
  });
}

const libcUrl = new URL('../lib/sys/libc.js', import.meta.url).href;

/** Runs an ES module snippet (with `sys`, a LibcSys on `backend`) in a child node; the child must exit by itself. */
function runChild(backend: WatchBackend, body: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const script = `
    import { LibcSys } from ${JSON.stringify(libcUrl)};
    const sys = new LibcSys({ watch: ${JSON.stringify(backend)} });
    const signal = (fd) => sys.write(fd, new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]));
    const drain = (fd) => sys.read(fd, new Uint8Array(8));
    ${body}
  `;
  return spawnSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
}

t.test('a process with an idle or open epoll watch still exits', async (t) => {
  for (const [name, tail] of [
    ['all watches closed', 'w.close(); sys.close(fd);'],
    ['a watch left open, process.exit()', 'process.exit(0);'],
  ] as const) {
    const child = runChild(
      'epoll',
      `const fd = sys.eventfd(0, ${EFD_NONBLOCK | EFD_CLOEXEC});
       const w = sys.watch(fd, () => { drain(fd); console.log('signalled'); ${tail} });
       signal(fd);`,
    );
    t.equal(child.signal, null, `${name}: exited by itself (${child.stderr})`);
    t.equal(child.status, 0, name);
    t.equal(child.stdout, 'signalled\n', name);
  }
});

for (const backend of ['poll', 'epoll'] as const satisfies readonly WatchBackend[]) {
  t.test(`${backend}: a throwing callback is an uncaught exception and breaks nothing else`, async (t) => {
    const child = runChild(
      backend,
      `process.on('uncaughtException', (err) => console.log('uncaught', err.message));
       const a = sys.eventfd(0, ${EFD_NONBLOCK | EFD_CLOEXEC});
       const b = sys.eventfd(0, ${EFD_NONBLOCK | EFD_CLOEXEC});
       let calls = 0;
       const wa = sys.watch(a, () => { drain(a); throw new Error('from a'); });
       const wb = sys.watch(b, () => {
         drain(b);
         calls += 1;
         // A second round once the first was delivered, then stop.
         if (calls === 1) setTimeout(() => { signal(a); signal(b); }, 20);
         else setTimeout(() => { console.log('b', calls); wa.close(); wb.close(); }, 20);
       });
       signal(a);
       signal(b);`,
    );
    t.equal(child.signal, null, `exited by itself (${child.stderr})`);
    t.equal(child.status, 0);
    t.equal(child.stdout, 'uncaught from a\nuncaught from a\nb 2\n', 'each exception reported once, b still served');
  });
}
