/**
 * The simulated kernel's system-call boundary: a `Sys` whose file
 * descriptors, eventfds, mappings and file system are simulated in-process.
 * VFIO itself (container, groups, devices) plugs in through {@link SimSyscalls.fs}
 * nodes and {@link SimSyscalls.installFile}.
 */
import { VfioSystemError } from '../errors.js';
import type { MmioTrap } from '../sys/mmio.js';
import type { FdWatch, Mapping, Sys } from '../sys/sys.js';
import { MAX_VIEW_BYTES } from '../sys/sys.js';
import { ioctlName, type FdKind } from '../vfio/uapi/ioctls.js';
import { KernelErrno, fail } from './errno.js';
import { SimEventFd } from './eventfd.js';
import { FaultInjector, type SimSyscall } from './faults.js';
import { SimFile, type FileOps } from './file.js';
import { SimMemory } from './memory.js';
import { SimFs } from './sysfs.js';

const PAGE_SIZE = 4096;
const FD_KINDS: ReadonlySet<string> = new Set(['container', 'group', 'device', 'migration', 'iommufd']);

/** One traced system call (see {@link SimSyscalls.startTrace}). */
export interface SyscallRecord {
  readonly seq: number;
  readonly syscall: SimSyscall;
  readonly fd?: number;
  /** The kind of file the call was made on (`'device'`, `'group'`, ...). */
  readonly kind?: string;
  /** The device, group or path of that file. */
  readonly label?: string;
  readonly request?: number;
  /** The ioctl's C name, when known. */
  readonly op?: string;
  /** A copy of an ioctl's argument buffer as passed in. */
  readonly arg?: Uint8Array;
  readonly offset?: bigint;
  readonly length?: number;
  readonly path?: string;
  /** The result, or the errno name of the failure. */
  result?: number | string;
}

type Call = Omit<SyscallRecord, 'seq' | 'result'>;

/** The system calls of the simulated kernel, behind the `Sys` interface. */
export class SimSyscalls implements Sys {
  readonly kind = 'sim';
  readonly pageSize = PAGE_SIZE;
  /** The virtual file system: sysfs entries and `/dev` nodes. */
  readonly fs = new SimFs();
  /** The simulated user address space (for pointers inside ioctl arguments). */
  readonly memory = new SimMemory();
  /** Armed faults: see {@link FaultInjector.inject}. */
  readonly faults = new FaultInjector();
  readonly #fds = new Map<number, SimFile>();
  #trace: SyscallRecord[] | null = null;
  #seq = 0;

  // ------------------------------------------------------------ simulator API

  /** Number of open file descriptors. */
  get openFds(): number {
    return this.#fds.size;
  }

  /** Starts recording every system call; returns the (live) record list. */
  startTrace(): SyscallRecord[] {
    this.#trace = [];
    return this.#trace;
  }

  /** Stops recording and returns what was recorded. */
  stopTrace(): SyscallRecord[] {
    const t = this.#trace ?? [];
    this.#trace = null;
    return t;
  }

  /** Installs `file` at the lowest free fd (like `get_unused_fd` + `fd_install`). */
  installFile(file: SimFile): number {
    let fd = 3;
    while (this.#fds.has(fd)) fd++;
    this.#fds.set(fd, file);
    return fd;
  }

  /** Installs a new file for `ops`. */
  installOps(ops: FileOps): number {
    return this.installFile(new SimFile(ops));
  }

  /** The open file behind `fd` (`fdget`), or EBADF. */
  fileOf(fd: number): SimFile {
    const f = this.#fds.get(fd);
    if (f === undefined) fail('EBADF');
    return f;
  }

  /** The eventfd behind `fd` (`eventfd_ctx_fdget`): EBADF for no file, EINVAL for another kind. */
  eventfdOf(fd: number): SimEventFd {
    const ops = this.fileOf(fd).ops;
    if (!(ops instanceof SimEventFd)) fail('EINVAL');
    return ops;
  }

  // ------------------------------------------------------------ Sys

  open(path: string, flags: number): number {
    return this.#call({ syscall: 'open', path }, () => this.fs.open(path, flags), { path });
  }

  close(fd: number): void {
    const release = (): void => {
      const f = this.#fds.get(fd);
      this.#fds.delete(fd);
      f?.put();
    };
    try {
      this.#onFile('close', fd, {}, () => {
        release();
        return 0;
      });
    } catch (e) {
      // Linux releases the fd even when close(2) fails (an injected fault here): the fd is gone either way.
      release();
      throw e;
    }
  }

  ioctl(fd: number, request: number, arg?: number | Uint8Array): number {
    return this.#onFile('ioctl', fd, { request, arg }, (f) => {
      if (f.ops.ioctl === undefined) fail('ENOTTY');
      return f.ops.ioctl(request, arg);
    });
  }

  read(fd: number, buf: Uint8Array): number {
    return this.#onFile('read', fd, { length: buf.byteLength }, (f) => this.#readAt(f, buf, null));
  }

  write(fd: number, buf: Uint8Array): number {
    return this.#onFile('write', fd, { length: buf.byteLength }, (f) => this.#writeAt(f, buf, null));
  }

  async readAsync(fd: number, buf: Uint8Array): Promise<number> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    return this.read(fd, buf);
  }

  async writeAsync(fd: number, buf: Uint8Array): Promise<number> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    return this.write(fd, buf);
  }

  pread(fd: number, buf: Uint8Array, offset: number | bigint): number {
    const off = BigInt(offset);
    return this.#onFile('pread', fd, { offset: off, length: buf.byteLength }, (f) => this.#readAt(f, buf, off));
  }

  pwrite(fd: number, buf: Uint8Array, offset: number | bigint): number {
    const off = BigInt(offset);
    return this.#onFile('pwrite', fd, { offset: off, length: buf.byteLength }, (f) => this.#writeAt(f, buf, off));
  }

  mmap(fd: number, length: number, prot: number, offset: number | bigint): Mapping {
    const off = BigInt(offset);
    const m = this.#onFile('mmap', fd, { offset: off, length }, (f) => {
      if (length <= 0 || off % BigInt(PAGE_SIZE) !== 0n) fail('EINVAL');
      if (f.ops.mmap === undefined) fail('ENODEV');
      return f.ops.mmap(off, length, prot);
    });
    return this.#mapping(m.bytes, () => m.unmap(), m.mmio);
  }

  allocPages(length: number): Mapping {
    if (!Number.isSafeInteger(length) || length <= 0) throw new VfioSystemError(22, 'mmap');
    const bytes = new Uint8Array(Math.ceil(length / PAGE_SIZE) * PAGE_SIZE);
    return this.#mapping(bytes.subarray(0, length), () => this.memory.unregister(bytes.buffer));
  }

  addressOf(view: ArrayBufferView): bigint {
    return this.memory.addressOf(view);
  }

  eventfd(initval: number): number {
    return this.#call({ syscall: 'eventfd' }, () => this.installOps(new SimEventFd(initval)), {});
  }

  watch(fd: number, onReadable: () => void): FdWatch {
    const file = this.#fds.get(fd);
    if (file === undefined) throw new VfioSystemError(9, 'epoll_ctl');
    const { readable, onChange } = file.ops;
    if (readable === undefined || onChange === undefined) throw new VfioSystemError(1, 'epoll_ctl');
    let closed = false;
    let scheduled = false;
    const fire = (): void => {
      scheduled = false;
      if (closed || file.released || !readable.call(file.ops)) return;
      onReadable();
      // Level-triggered, like epoll without EPOLLET: still readable means another call.
      if (!closed && readable.call(file.ops)) schedule();
    };
    const schedule = (): void => {
      if (scheduled || closed) return;
      scheduled = true;
      setImmediate(fire);
    };
    const off = onChange.call(file.ops, schedule);
    if (readable.call(file.ops)) schedule();
    return {
      close: () => {
        closed = true;
        off();
      },
    };
  }

  readlink(path: string): string {
    return this.#call({ syscall: 'open', path }, () => this.fs.readlink(path), { path }, 'readlink');
  }

  realpath(path: string): string {
    return this.#call({ syscall: 'open', path }, () => this.fs.realpath(path), { path }, 'realpath');
  }

  readdir(path: string): string[] {
    return this.#call({ syscall: 'open', path }, () => this.fs.readdir(path), { path }, 'scandir');
  }

  readFile(path: string): string {
    return this.#call({ syscall: 'open', path }, () => this.fs.readFile(path), { path }, 'open');
  }

  // ------------------------------------------------------------ internals

  #readAt(f: SimFile, buf: Uint8Array, off: bigint | null): number {
    if (f.ops.read === undefined) fail('EINVAL');
    if (off !== null && f.ops.stream) fail('ESPIPE');
    if (off !== null) return f.ops.read(buf, off);
    if (f.ops.stream) return f.ops.read(buf, null);
    const n = f.ops.read(buf, f.pos);
    f.pos += BigInt(n);
    return n;
  }

  #writeAt(f: SimFile, buf: Uint8Array, off: bigint | null): number {
    if (f.ops.write === undefined) fail('EINVAL');
    if (off !== null && f.ops.stream) fail('ESPIPE');
    if (off !== null) return f.ops.write(buf, off);
    if (f.ops.stream) return f.ops.write(buf, null);
    const n = f.ops.write(buf, f.pos);
    f.pos += BigInt(n);
    return n;
  }

  #mapping(bytes: Uint8Array, release: () => void, mmio?: MmioTrap): Mapping {
    const address = this.memory.addressOf(bytes);
    let unmapped = false;
    return {
      ...(mmio === undefined ? {} : { mmio }),
      address,
      length: bytes.byteLength,
      get unmapped() {
        return unmapped;
      },
      view(offset = 0, length = bytes.byteLength - offset) {
        if (unmapped) throw new VfioSystemError(14, 'mmap');
        if (offset < 0 || length < 0 || offset + length > bytes.byteLength || length > MAX_VIEW_BYTES) {
          throw new RangeError(`view [${offset}, +${length}) is outside the ${bytes.byteLength}-byte mapping`);
        }
        return bytes.subarray(offset, offset + length);
      },
      unmap() {
        if (unmapped) return;
        unmapped = true;
        release();
      },
    };
  }

  /** Runs a call on an fd's file: faults, tracing, errno conversion. */
  #onFile<T>(syscall: SimSyscall, fd: number, extra: { request?: number; arg?: number | Uint8Array; offset?: bigint; length?: number }, body: (f: SimFile) => T): T {
    const file = this.#fds.get(fd);
    const kind = file?.ops.kind;
    const call: Call = {
      syscall,
      fd,
      ...(kind === undefined ? {} : { kind, label: file?.ops.label }),
      ...(extra.request === undefined ? {} : { request: extra.request }),
      ...(extra.request !== undefined && kind !== undefined && FD_KINDS.has(kind)
        ? { op: ioctlName(kind as FdKind, extra.request) }
        : {}),
      ...(extra.arg instanceof Uint8Array && this.#trace ? { arg: extra.arg.slice() } : {}),
      ...(extra.offset === undefined ? {} : { offset: extra.offset }),
      ...(extra.length === undefined ? {} : { length: extra.length }),
    };
    return this.#call(call, () => {
      if (file === undefined) fail('EBADF');
      return body(file);
    }, {});
  }

  #call<T>(call: Call, body: () => T, context: { path?: string }, syscallName: string = call.syscall): T {
    const rec: SyscallRecord | undefined = this.#trace ? { seq: ++this.#seq, ...call } : undefined;
    if (rec) this.#trace?.push(rec);
    const injected = this.faults.check({
      syscall: call.syscall,
      ...(call.request === undefined ? {} : { request: call.request }),
      ...(call.kind === undefined ? {} : { fdKind: call.kind }),
      ...(call.label === undefined ? {} : { label: call.label }),
    });
    try {
      if (injected !== undefined) throw new KernelErrno(injected);
      const r = body();
      if (rec) rec.result = typeof r === 'number' ? r : 0;
      return r;
    } catch (e) {
      if (e instanceof KernelErrno) {
        const err = new VfioSystemError(e.errno, syscallName, context);
        if (rec) rec.result = err.code;
        throw err;
      }
      throw e;
    }
  }
}
