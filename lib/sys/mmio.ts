/**
 * Device memory whose accesses have side effects. On a real kernel an
 * mmapped BAR is device memory: every load and store reaches the device's
 * registers, which may answer a read with something other than what was
 * last written (a status register, a register that reads back the bitwise
 * NOT of its last write). Plain JavaScript memory cannot do that, so a
 * simulated kernel that maps register BARs hands out a {@link TrappedMapping}
 * instead: the same {@link Mapping}, plus a trap that performs each access
 * on the simulated device. `MappedArea` routes its accesses through the trap
 * when there is one; libc mappings never have one.
 */
import type { Mapping } from './sys.js';

/** A register-width access: 1, 2, 4 or 8 bytes, naturally aligned. */
export type MmioWidth = 1 | 2 | 4 | 8;

/** Performs accesses to a trapped mapping on the device behind it. */
export interface MmioTrap {
  /** Loads `width` bytes at `offset` (relative to the mapping), little-endian. */
  read(offset: number, width: MmioWidth): bigint;
  /** Stores the low `width` bytes of `value` at `offset`, little-endian. */
  write(offset: number, width: MmioWidth, value: bigint): void;
}

/** A mapping whose every access must go through {@link TrappedMapping.mmio}. */
export interface TrappedMapping extends Mapping {
  readonly mmio: MmioTrap;
}

/** The trap of `mapping`, or undefined for ordinary memory. */
export function mmioTrapOf(mapping: Mapping): MmioTrap | undefined {
  return 'mmio' in mapping ? (mapping as TrappedMapping).mmio : undefined;
}
