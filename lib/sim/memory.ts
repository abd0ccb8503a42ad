/**
 * The simulated process address space. The real kernel sees user pointers
 * (MAP_DMA's `vaddr`, a dirty bitmap's `data`); the simulated kernel gives
 * every ArrayBuffer it is shown a fake, page-aligned base address and
 * resolves pointers back to the same bytes, so a simulated device's DMA lands
 * in the very buffer the user mapped.
 */
import { fail } from './errno.js';

const PAGE = 4096n;
/** Where fake addresses start: high in the user half, like mmap's area. */
const BASE = 0x7f00_0000_0000n;

interface Area {
  readonly base: bigint;
  readonly size: bigint;
  readonly ref: WeakRef<ArrayBufferLike>;
}

export class SimMemory {
  #next = BASE;
  readonly #areas: Area[] = [];
  readonly #bases = new WeakMap<ArrayBufferLike, bigint>();

  /** The address of a view's first byte, registering its buffer on first use. */
  addressOf(view: ArrayBufferView): bigint {
    return this.register(view.buffer) + BigInt(view.byteOffset);
  }

  /** Gives `buffer` an address range (once) and returns its base. */
  register(buffer: ArrayBufferLike): bigint {
    const known = this.#bases.get(buffer);
    if (known !== undefined) return known;
    const base = this.#next;
    const size = BigInt(buffer.byteLength);
    // A guard page between areas keeps an overrun from resolving into a neighbour.
    this.#next += ((size + PAGE - 1n) / PAGE + 1n) * PAGE;
    this.#areas.push({ base, size, ref: new WeakRef(buffer) });
    this.#bases.set(buffer, base);
    return base;
  }

  /** Forgets `buffer`: later accesses through its addresses fault (like munmap). */
  unregister(buffer: ArrayBufferLike): void {
    const base = this.#bases.get(buffer);
    if (base === undefined) return;
    this.#bases.delete(buffer);
    const i = this.#areas.findIndex((a) => a.base === base);
    if (i >= 0) this.#areas.splice(i, 1);
  }

  /**
   * The `length` bytes at user address `addr`, aliasing the registered
   * buffer. Fails with EFAULT unless they lie inside one live buffer.
   */
  resolve(addr: bigint, length: number): Uint8Array {
    const area = this.#find(addr);
    const buffer = area?.ref.deref();
    if (area === undefined || buffer === undefined) fail('EFAULT');
    const off = addr - area.base;
    if (length < 0 || off + BigInt(length) > area.size) fail('EFAULT');
    return new Uint8Array(buffer, Number(off), length);
  }

  /** True when `[addr, addr + length)` is mapped user memory (access_ok plus presence). */
  isMapped(addr: bigint, length: number): boolean {
    const area = this.#find(addr);
    return area !== undefined && area.ref.deref() !== undefined && addr - area.base + BigInt(length) <= area.size;
  }

  #find(addr: bigint): Area | undefined {
    // Areas are allocated in increasing address order, so the list stays sorted.
    let lo = 0;
    let hi = this.#areas.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const a = this.#areas[mid];
      if (a === undefined) break;
      if (addr < a.base) hi = mid - 1;
      else if (addr >= a.base + a.size) lo = mid + 1;
      else return a;
    }
    return undefined;
  }
}
