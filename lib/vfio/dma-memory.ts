/**
 * The memory a DMA mapping points at, resolved to a user address, whether it
 * is a buffer, a mapping or a raw address. Shared by the type1 container and
 * the iommufd IOAS, which both keep the memory alive while it is mapped
 * (the kernel pins it by address).
 */
import type { Mapping, Sys } from '../sys/sys.js';

/** What to map for DMA: a buffer or mapping the process owns, or a raw user address. */
export type DmaMemory = { buffer: ArrayBufferView | Mapping } | { vaddr: bigint; size: number };

/** A live DMA mapping. */
export interface DmaMapping {
  readonly iova: bigint;
  readonly size: number;
  readonly vaddr: bigint;
}

/** A mapping as recorded by its owner: with the object that keeps the memory alive. */
export interface DmaRecord extends DmaMapping {
  readonly keep: ArrayBufferView | Mapping | null;
}

/** Resolves `m` to its user address and size, and what to hold while it is mapped. */
export function resolveDmaMemory(sys: Pick<Sys, 'addressOf'>, m: DmaMemory): { vaddr: bigint; size: number; keep: ArrayBufferView | Mapping | null } {
  if ('vaddr' in m) return { vaddr: m.vaddr, size: m.size, keep: null };
  const b = m.buffer;
  if (ArrayBuffer.isView(b)) return { vaddr: sys.addressOf(b), size: b.byteLength, keep: b };
  return { vaddr: b.address, size: b.length, keep: b };
}

/** Removes from `mappings` every one that lies wholly inside `[iova, iova + size)`. */
export function forgetMappings(mappings: Map<bigint, DmaMapping>, iova: bigint, size: bigint): void {
  for (const [at, m] of mappings) if (at >= iova && at + BigInt(m.size) <= iova + size) mappings.delete(at);
}
