/**
 * LibcSys against the real kernel: errno mapping, ioctl argument passing,
 * read/write (sync and threadpool), 64-bit pread/pwrite offsets, eventfd
 * counters and the file-system helpers.
 */
import { thrown } from './helpers/expect.js';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { VfioSystemError } from '../lib/errors.js';
import { LibcSys, libcSys } from '../lib/sys/libc.js';
import { EFD_CLOEXEC, EFD_NONBLOCK, O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY } from '../lib/sys/sys.js';

const TCGETS = 0x5401;
const FIONREAD = 0x541b;
const FIOCLEX = 0x5451;
const FIONCLEX = 0x5450;
const O_CREAT = 0o100;

const sys = new LibcSys();


function u64le(value: bigint): Uint8Array {
  const buf = new Uint8Array(8);
  new DataView(buf.buffer).setBigUint64(0, value, true);
  return buf;
}

function readU64le(buf: Uint8Array): bigint {
  return new DataView(buf.buffer, buf.byteOffset, 8).getBigUint64(0, true);
}

/** What the helpers below need from a tap test. */
interface TestScope {
  teardown(fn: () => void): void;
  testdir(): string;
}

/**
 * A FIFO (a pipe with a name: Node cannot make anonymous pipes). The read
 * end is opened O_RDWR, which Linux allows without waiting for a writer.
 */
function fifo(t: TestScope, { blocking = false } = {}): { r: number; w: number } {
  const path = join(t.testdir(), 'fifo');
  execFileSync('mkfifo', [path]);
  const r = sys.open(path, O_RDWR | O_CLOEXEC | (blocking ? 0 : O_NONBLOCK));
  const w = sys.open(path, O_WRONLY | O_CLOEXEC);
  t.teardown(() => {
    sys.close(r);
    sys.close(w);
  });
  return { r, w };
}

t.test('libcSys() is one lazily created LibcSys', async (t) => {
  t.equal(libcSys(), libcSys());
  t.equal(libcSys().kind, 'libc');
});

t.test('pageSize comes from sysconf and matches getconf', async (t) => {
  t.equal(sys.pageSize, Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim()));
});

t.test('errno becomes VfioSystemError', async (t) => {
  t.test('ioctl TCGETS on /dev/null is ENOTTY', async (t) => {
    const fd = sys.open('/dev/null', O_RDWR | O_CLOEXEC);
    t.teardown(() => sys.close(fd));
    const err = thrown(() => sys.ioctl(fd, TCGETS, new Uint8Array(64)));
    t.type(err, VfioSystemError);
    t.match(err, { errno: 25, code: 'ENOTTY', syscall: 'ioctl' });
  });

  t.test('open of a missing path is ENOENT with the path', async (t) => {
    const path = join(t.testdir(), 'missing');
    const err = thrown(() => sys.open(path, O_RDONLY));
    t.type(err, VfioSystemError);
    t.match(err, { errno: 2, code: 'ENOENT', syscall: 'open', path });
    t.match((err as Error).message, 'no such file or directory');
  });

  t.test('close of a bad fd is EBADF', async (t) => {
    t.match(thrown(() => sys.close(1_000_000)), { errno: 9, code: 'EBADF', syscall: 'close' });
  });

  t.test('every failing call reads its own errno', async (t) => {
    // Alternate two errnos quickly: a stale errno would show up as the other one.
    const devnull = sys.open('/dev/null', O_RDWR | O_CLOEXEC);
    t.teardown(() => sys.close(devnull));
    const seen: number[] = [];
    for (let i = 0; i < 1000; i++) {
      seen.push((thrown(() => sys.ioctl(devnull, TCGETS, new Uint8Array(64))) as VfioSystemError).errno);
      seen.push((thrown(() => sys.read(1_000_000, new Uint8Array(1))) as VfioSystemError).errno);
    }
    t.same(new Set(seen.filter((_, i) => i % 2 === 0)), new Set([25]));
    t.same(new Set(seen.filter((_, i) => i % 2 === 1)), new Set([9]));
  });
});

t.test('ioctl', async (t) => {
  t.test('a Uint8Array argument is written in place (FIONREAD)', async (t) => {
    const { r, w } = fifo(t);
    t.equal(sys.write(w, new TextEncoder().encode('hello')), 5);
    const arg = new Uint8Array(4);
    t.equal(sys.ioctl(r, FIONREAD, arg), 0);
    t.equal(new DataView(arg.buffer).getInt32(0, true), 5);
    // A subarray is passed at its own offset, not at the start of its buffer.
    const big = new Uint8Array(16).fill(0xee);
    sys.ioctl(r, FIONREAD, big.subarray(8, 12));
    t.same([...big], [...new Array(8).fill(0xee), 5, 0, 0, 0, 0xee, 0xee, 0xee, 0xee]);
  });

  t.test('a number argument is passed by value, all 64 bits of it', async (t) => {
    const { r, w } = fifo(t);
    sys.write(w, new Uint8Array(3));
    // FIONREAD's argument is a pointer: pass the address as a plain number.
    // mmapped memory sits high (the malloc heap can be below 4 GiB).
    const page = sys.allocPages(sys.pageSize);
    t.teardown(() => page.unmap());
    const arg = page.view(0, 4);
    const address = sys.addressOf(arg);
    t.ok(address > 0xffff_ffffn, 'the address does not fit in 32 bits');
    t.equal(sys.ioctl(r, FIONREAD, Number(address)), 0);
    t.equal(new DataView(arg.buffer, arg.byteOffset).getInt32(0, true), 3);
  });

  t.test('no argument (FIOCLEX / FIONCLEX)', async (t) => {
    const fd = sys.open('/dev/null', O_RDONLY);
    t.teardown(() => sys.close(fd));
    const flags = (): number => Number.parseInt(/flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1] ?? '', 8);
    t.equal(flags() & O_CLOEXEC, 0);
    t.equal(sys.ioctl(fd, FIOCLEX), 0);
    t.equal(flags() & O_CLOEXEC, O_CLOEXEC);
    sys.ioctl(fd, FIONCLEX);
    t.equal(flags() & O_CLOEXEC, 0);
  });
});

t.test('read and write on a pipe', async (t) => {
  const { r, w } = fifo(t);
  t.equal(sys.write(w, new Uint8Array([1, 2, 3, 4, 5])), 5);
  const buf = new Uint8Array(8);
  t.equal(sys.read(r, buf.subarray(1)), 5);
  t.same([...buf], [0, 1, 2, 3, 4, 5, 0, 0]);
  t.match(thrown(() => sys.read(r, buf)), { code: 'EAGAIN', errno: 11, syscall: 'read' }, 'EAGAIN throws');
  t.match(thrown(() => sys.write(1_000_000, buf)), { code: 'EBADF', syscall: 'write' });
});

t.test('readAsync and writeAsync run on the threadpool', async (t) => {
  const { r, w } = fifo(t, { blocking: true });
  const buf = new Uint8Array(16);
  // The read blocks in a pool thread until the write below: the event loop keeps running meanwhile.
  const pending = sys.readAsync(r, buf);
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.equal(await sys.writeAsync(w, new TextEncoder().encode('migration')), 9);
  t.equal(await pending, 9);
  t.equal(new TextDecoder().decode(buf.subarray(0, 9)), 'migration');

  const rejected = await sys.readAsync(1_000_000, buf).catch((err: unknown) => err);
  t.type(rejected, VfioSystemError);
  t.match(rejected, { code: 'EBADF', errno: 9, syscall: 'read' }, 'errno survives the threadpool hop');
  t.match(await sys.writeAsync(1_000_000, buf).catch((err: unknown) => err), { code: 'EBADF', syscall: 'write' });
});

t.test('pread and pwrite take full 64-bit offsets', async (t) => {
  // A sparse tmpfs file: only the touched pages use memory.
  const dir = mkdtempSync('/dev/shm/vfio-ts-test-');
  t.teardown(() => rmSync(dir, { recursive: true }));
  const fd = sys.open(join(dir, 'sparse'), O_RDWR | O_CREAT | O_CLOEXEC);
  t.teardown(() => sys.close(fd));
  const offsets: ReadonlyArray<readonly [string, number | bigint]> = [
    ['2^32 + 5 (number)', 2 ** 32 + 5],
    ['2^32 + 77 (bigint)', 2n ** 32n + 77n],
    ['region 5 << 40 + 17 (number)', 5 * 2 ** 40 + 17],
    ['region 7 << 40 + 4093 (bigint, crosses a page)', (7n << 40n) + 4093n],
  ];
  for (const [name, offset] of offsets) {
    const data = new TextEncoder().encode(`at ${name}`);
    t.equal(sys.pwrite(fd, data, offset), data.length, `pwrite ${name}`);
    // Read back through Node (a different code path) and through pread.
    const viaNode = Buffer.alloc(data.length);
    readSync(fd, viaNode, 0, data.length, BigInt(offset));
    t.equal(viaNode.toString(), `at ${name}`, `node sees ${name}`);
    const back = new Uint8Array(data.length);
    t.equal(sys.pread(fd, back, offset), data.length);
    t.equal(new TextDecoder().decode(back), `at ${name}`, `pread ${name}`);
  }
  t.equal(sys.pread(fd, new Uint8Array(4), 2n ** 50n), 0, 'past the end is EOF');
  t.match(thrown(() => sys.pread(fd, new Uint8Array(1), -1)), { code: 'EINVAL', syscall: 'pread' });
});

t.test('eventfd counter semantics', async (t) => {
  const fd = sys.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  t.teardown(() => sys.close(fd));
  t.equal(sys.write(fd, u64le(1n)), 8);
  t.equal(sys.write(fd, u64le(3n)), 8);
  const buf = new Uint8Array(8);
  t.equal(sys.read(fd, buf), 8);
  t.equal(readU64le(buf), 4n, 'writes add up');
  t.match(thrown(() => sys.read(fd, buf)), { code: 'EAGAIN' }, 'reading resets the counter');
  t.match(thrown(() => sys.read(fd, new Uint8Array(4))), { code: 'EINVAL' }, 'reads are 8 bytes');

  const seeded = sys.eventfd(7, EFD_NONBLOCK | EFD_CLOEXEC);
  t.teardown(() => sys.close(seeded));
  sys.read(seeded, buf);
  t.equal(readU64le(buf), 7n, 'initval');
  t.match(thrown(() => sys.eventfd(0, -1)), { code: 'EINVAL', syscall: 'eventfd' });
});

t.test('readlink, realpath, readdir and readFile', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'vfio-ts-fs-'));
  t.teardown(() => rmSync(root, { recursive: true }));
  mkdirSync(join(root, 'devices'));
  writeFileSync(join(root, 'devices', 'vendor'), '0x8086\n');
  writeFileSync(join(root, 'devices', 'device'), '0x1234\n');
  symlinkSync('../devices', join(root, 'devices', 'self'));
  symlinkSync('devices/vendor', join(root, 'link'));

  t.equal(sys.readlink(join(root, 'link')), 'devices/vendor', 'readlink returns the target as stored');
  t.equal(sys.realpath(join(root, 'devices', 'self', 'self', 'vendor')), join(sys.realpath(root), 'devices', 'vendor'));
  t.same(sys.readdir(join(root, 'devices')).sort(), ['device', 'self', 'vendor']);
  t.equal(sys.readFile(join(root, 'link')), '0x8086\n');

  const cases: ReadonlyArray<readonly [string, () => unknown, object]> = [
    ['readlink of a missing path', () => sys.readlink(join(root, 'nope')), { errno: 2, code: 'ENOENT', syscall: 'readlink', path: join(root, 'nope') }],
    ['readlink of a regular file', () => sys.readlink(join(root, 'devices', 'vendor')), { errno: 22, code: 'EINVAL', syscall: 'readlink' }],
    ['realpath through a file', () => sys.realpath(join(root, 'link', 'x')), { errno: 20, code: 'ENOTDIR', syscall: 'realpath' }],
    ['readdir of a file', () => sys.readdir(join(root, 'link')), { errno: 20, code: 'ENOTDIR', path: join(root, 'link') }],
    ['readFile of a directory', () => sys.readFile(root), { errno: 21, code: 'EISDIR', path: root }],
    ['readFile of a missing path', () => sys.readFile(join(root, 'nope')), { errno: 2, code: 'ENOENT', syscall: 'open' }],
  ];
  for (const [name, call, expected] of cases) {
    const err = thrown(call);
    t.type(err, VfioSystemError, name);
    t.match(err, expected, name);
  }
});
