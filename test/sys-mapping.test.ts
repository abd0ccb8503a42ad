/**
 * LibcSys memory: mmap of files at 64-bit offsets, view limits, allocPages,
 * and the tombstone that keeps stale views from crashing the process.
 */
import { thrown } from './helpers/expect.js';
import { ftruncateSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import koffi from 'koffi';
import t from 'tap';
import { MappingRevokedError, VfioSystemError } from '../lib/errors.js';
import { LibcSys } from '../lib/sys/libc.js';
import { MAX_VIEW_BYTES, O_CLOEXEC, O_RDWR, PROT_READ, PROT_WRITE } from '../lib/sys/sys.js';

const O_CREAT = 0o100;
const GiB = 2 ** 30;

const sys = new LibcSys();

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** True when some mapping of this process covers `address`. */
function isMapped(address: bigint): boolean {
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .some((line) => {
      const range = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
      return range !== null && BigInt(`0x${range[1]}`) <= address && address < BigInt(`0x${range[2]}`);
    });
}

/** A sparse tmpfs file of `size` bytes, opened read-write. */
function sparseFile(t: { teardown(fn: () => void): void }, size: number): number {
  const dir = mkdtempSync('/dev/shm/vfio-ts-mmap-');
  const fd = sys.open(join(dir, 'region'), O_RDWR | O_CREAT | O_CLOEXEC);
  t.teardown(() => {
    sys.close(fd);
    rmSync(dir, { recursive: true });
  });
  ftruncateSync(fd, size);
  return fd;
}


t.test('mmap of a file above 4 GiB: view writes are visible to pread and back', async (t) => {
  const fd = sparseFile(t, 6 * GiB);
  for (const offset of [4 * GiB + 8192, BigInt(5 * GiB)]) {
    const mapping = sys.mmap(fd, 2 * sys.pageSize, PROT_READ | PROT_WRITE, offset);
    t.teardown(() => mapping.unmap());
    t.equal(mapping.length, 2 * sys.pageSize);
    const view = mapping.view(sys.pageSize - 2, 4);
    view.set([1, 2, 3, 4]);
    const back = new Uint8Array(4);
    sys.pread(fd, back, BigInt(offset) + BigInt(sys.pageSize - 2));
    t.same([...back], [1, 2, 3, 4], `write through the view at ${offset} reaches the file`);
    sys.pwrite(fd, new Uint8Array([9, 8]), BigInt(offset) + 10n);
    t.same([...mapping.view(10, 2)], [9, 8], 'pwrite shows in the view');
  }
  t.match(thrown(() => sys.mmap(1_000_000, 4096, PROT_READ, 0)), { code: 'EBADF', syscall: 'mmap' });
  t.type(thrown(() => sys.mmap(fd, 4096, PROT_READ, 1)), VfioSystemError, 'unaligned offset');
});

t.test('views are bounded by the mapping and by the 4 GiB koffi limit', async (t) => {
  // MAP_SHARED of a sparse tmpfs file: 5 GiB of address space, no memory.
  const fd = sparseFile(t, 5 * GiB);
  const mapping = sys.mmap(fd, 5 * GiB, PROT_READ | PROT_WRITE, 0);
  t.teardown(() => mapping.unmap());
  // Each of these would abort the process inside koffi if it reached koffi.view.
  t.throws(() => mapping.view(), RangeError, 'the default whole-mapping view is over the limit');
  t.throws(() => mapping.view(0, MAX_VIEW_BYTES + 4096), RangeError);
  const high = mapping.view(4 * GiB, GiB);
  high[GiB - 1] = 42;
  const back = new Uint8Array(1);
  sys.pread(fd, back, 5 * GiB - 1);
  t.equal(back[0], 42, 'a view past 4 GiB into the mapping');
  t.equal(mapping.view(GiB, MAX_VIEW_BYTES).byteLength, MAX_VIEW_BYTES, 'exactly 4 GiB is allowed');
  t.throws(() => mapping.view(5 * GiB, 1), RangeError, 'past the end');
  t.throws(() => mapping.view(-1, 1), RangeError, 'negative offset');
  t.throws(() => mapping.view(0.5, 1), RangeError, 'fractional offset');
  t.equal(mapping.view(5 * GiB, 0).byteLength, 0, 'an empty view at the end');
});

t.test('allocPages: zeroed, page-aligned, addressOf agrees with koffi', async (t) => {
  const mapping = sys.allocPages(3 * sys.pageSize + 100);
  t.teardown(() => mapping.unmap());
  t.equal(mapping.address % BigInt(sys.pageSize), 0n);
  const view = mapping.view();
  t.equal(view.byteLength, 3 * sys.pageSize + 100);
  t.ok(view.every((b) => b === 0), 'zeroed');
  t.equal(sys.addressOf(view), mapping.address);
  t.equal(sys.addressOf(view) % 4096n, 0n);
  t.equal(sys.addressOf(view), koffi.address(view));
  const inner = view.subarray(100, 200);
  t.equal(sys.addressOf(inner), mapping.address + 100n, 'a subarray points at its own first byte');
  t.equal(sys.addressOf(inner), koffi.address(inner));
  const heap = new Uint8Array(64);
  t.equal(sys.addressOf(heap), koffi.address(heap), 'ordinary typed arrays too');
});

t.test('unmap with a live view leaves a tombstone: stale reads see 0, the process survives', async (t) => {
  const fd = sparseFile(t, 2 * sys.pageSize);
  const mapping = sys.mmap(fd, 2 * sys.pageSize, PROT_READ | PROT_WRITE, 0);
  const stale = mapping.view();
  stale[5] = 77;
  mapping.unmap();
  t.equal(mapping.unmapped, true);
  t.equal(stale[5], 0, 'the stale view reads the zero page');
  stale[6] = 99; // must not fault
  t.equal(stale[6], 99, 'stale writes land in private memory');
  const file = new Uint8Array(2);
  sys.pread(fd, file, 5);
  t.same([...file], [77, 0], 'and never reach the file');
  t.ok(isMapped(mapping.address), 'the range stays reserved while the view lives');
  t.type(thrown(() => mapping.view()), MappingRevokedError);
  t.doesNotThrow(() => mapping.unmap(), 'unmap is idempotent');
  mapping[Symbol.dispose]();
});

t.test('the tombstone is released once the views are collected', async (t) => {
  const mapping = sys.allocPages(4 * sys.pageSize);
  // Two views on separate ArrayBuffers: the range must outlive both.
  let first: Uint8Array | undefined = mapping.view();
  let second: Uint8Array | undefined = mapping.view(sys.pageSize, 8);
  first[0] = 1;
  second[0] = 2;
  mapping.unmap();
  t.equal(first[0], 0);
  first = undefined;
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((resolve) => setImmediate(resolve));
  }
  t.ok(isMapped(mapping.address), 'still reserved while one view is alive');
  t.equal(second[0], 0);
  second = undefined;
  let released = false;
  for (let i = 0; i < 50 && !released; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
    released = !isMapped(mapping.address);
  }
  t.ok(released, 'munmap once no view is left');
});

t.test('unmap without views releases the range at once', async (t) => {
  const never = sys.allocPages(sys.pageSize);
  t.ok(isMapped(never.address));
  never.unmap();
  t.notOk(isMapped(never.address), 'no view was ever made');
  t.equal(never.unmapped, true);

  const collected = sys.allocPages(sys.pageSize);
  collected.view()[0] = 1;
  for (let i = 0; i < 5; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  // The view's finalizer has run, so there is nothing to tombstone for.
  collected.unmap();
  const released = !isMapped(collected.address);
  t.ok(released, 'all views were already collected');
});
