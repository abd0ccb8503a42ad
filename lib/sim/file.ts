/**
 * Simulated open files: the `struct file` + `file_operations` of the
 * simulated kernel. A file is reference-counted like the kernel's: the fd
 * table holds one reference, and kernel objects may hold more (a device fd
 * pins its group's file, a driver pins its migration file), so `release`
 * runs only when the last one goes.
 */
import type { MmioTrap } from '../sys/mmio.js';
import { fail } from './errno.js';

/** What an ioctl receives: nothing, an integer by value, or the user buffer. */
export type IoctlArg = number | Uint8Array | undefined;

/** Simulated `file_operations`; a missing operation fails the call as the kernel would. */
export interface FileOps {
  /** For error messages and traces: `'container'`, `'group'`, `'device'`, `'migration'`, `'eventfd'`, ... */
  readonly kind: string;
  /** The device, group or path this file belongs to. */
  readonly label: string;
  ioctl?(request: number, arg: IoctlArg): number;
  /** `read` at the file position; `stream` files (no position) get `null`. */
  read?(buf: Uint8Array, pos: bigint | null): number;
  write?(buf: Uint8Array, pos: bigint | null): number;
  /** Anonymous stream files (migration data) have no position: pread/pwrite give ESPIPE. */
  readonly stream?: boolean;
  /** Maps `length` bytes at `offset`; returns the backing bytes and an unmap hook. */
  mmap?(offset: bigint, length: number, prot: number): SimMmap;
  /** For `watch`: is the file readable now? */
  readable?(): boolean;
  /** For `watch`: call `listener` whenever readability may have changed. */
  onChange?(listener: () => void): () => void;
  /** Called once, when the last reference is dropped. */
  release?(): void;
}

/** A simulated mapping: the bytes the user sees and what to do at munmap. */
export interface SimMmap {
  readonly bytes: Uint8Array;
  /**
   * Device registers: when present, every access to the mapping is performed
   * by this trap (as a load or store on a real BAR reaches the device), and
   * `bytes` only gives the mapping its size and address.
   */
  readonly mmio?: MmioTrap;
  unmap(): void;
}

/** A reference-counted open file. */
export class SimFile {
  #refs = 1;
  /** The file position of read(2)/write(2). */
  pos = 0n;

  constructor(readonly ops: FileOps) {}

  get released(): boolean {
    return this.#refs === 0;
  }

  /** Takes another reference (`get_file`). */
  get(): this {
    if (this.#refs === 0) fail('EBADF');
    this.#refs++;
    return this;
  }

  /** Drops a reference (`fput`); the last one releases the file. */
  put(): void {
    if (this.#refs === 0) return;
    this.#refs--;
    if (this.#refs === 0) this.ops.release?.();
  }
}
