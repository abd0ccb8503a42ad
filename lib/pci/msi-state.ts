/**
 * The MSI capability as the guest sees it: what the guest programmed
 * (enable, multiple message enable, address, data, mask bits) and the
 * pending bits of masked vectors that fired, kept apart from the host
 * wiring. Pure logic with QEMU's semantics (hw/pci/msi.c): `msi_init`'s
 * fresh capability and write masks, `msi_write_config` (the vector count
 * clamped, pending vectors delivered when unmasked) and `msi_notify` (a
 * masked vector only sets its pending bit; data carries the vector number
 * in its low bits when several are enabled).
 */
import { ConfigSpaceError } from '../errors.js';
import { EmulatedCapability, EmulatedRegisters } from './emulated-registers.js';
import { msiCapabilitySize } from './msi.js';
import {
  PCI_CAP_LIST_NEXT,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_MSI_PENDING_32,
  PCI_MSI_PENDING_64,
} from './regs.js';

/** An MSI or MSI-X message. */
export interface MsiMessage {
  readonly address: bigint;
  readonly data: number;
}

/** How a guest write changed the capability. */
export interface MsiWriteEffect {
  /** Enable went from off to on, on to off, or did not change. */
  readonly enable: 'enabled' | 'disabled' | 'unchanged';
  /** Pending vectors the write unmasked: deliver their messages now. */
  readonly deliver: readonly number[];
}

export class MsiState extends EmulatedCapability {
  readonly is64Bit: boolean;
  readonly perVectorMasking: boolean;
  /** Vectors the guest may enable (what the device's flags said at open). */
  readonly vectorsCapable: number;

  /**
   * `msi_init` over the device's capability: `flags` and `next` are what
   * the kernel shows at `offset`; everything the guest programs starts at 0.
   * @throws ConfigSpaceError for a reserved vector count.
   */
  constructor(offset: number, flags: number, next: number) {
    super(offset, msiRegisters(offset, flags, next));
    this.is64Bit = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
    this.perVectorMasking = (flags & PCI_MSI_FLAGS_MASKBIT) !== 0;
    this.vectorsCapable = 1 << ((flags & PCI_MSI_FLAGS_QMASK) >> 1);
  }

  /** MSI is enabled. */
  get enabled(): boolean {
    return (this.#flags() & PCI_MSI_FLAGS_ENABLE) !== 0;
  }

  /** Vectors enabled (multiple message enable). */
  get vectorsEnabled(): number {
    return 1 << ((this.#flags() & PCI_MSI_FLAGS_QSIZE) >> 4);
  }

  get address(): bigint {
    const lo = this.regs.get(PCI_MSI_ADDRESS_LO, 4);
    return this.is64Bit ? (this.regs.get(PCI_MSI_ADDRESS_HI, 4) << 32n) | lo : lo;
  }

  get data(): number {
    return this.regs.getNumber(this.#dataAt(), 2);
  }

  /** Mask bits (0 without per-vector masking). */
  get mask(): number {
    return this.perVectorMasking ? this.regs.getNumber(this.#maskAt(), 4) : 0;
  }

  /** Pending bits (0 without per-vector masking). */
  get pending(): number {
    return this.perVectorMasking ? this.regs.getNumber(this.#pendingAt(), 4) : 0;
  }

  /** `msi_write_config` for a guest write of `width` bytes at config offset `at`. */
  write(at: number, width: number, value: number): MsiWriteEffect {
    const was = this.enabled;
    this.regs.write(at - this.offset, width, value);
    const now = this.enabled;
    const enable = was === now ? 'unchanged' : now ? 'enabled' : 'disabled';
    if (!now) return { enable, deliver: [] };
    const log2 = (this.#flags() & PCI_MSI_FLAGS_QSIZE) >> 4;
    const max = Math.log2(this.vectorsCapable);
    if (log2 > max) this.regs.set(PCI_MSI_FLAGS, 2, (this.#flags() & ~PCI_MSI_FLAGS_QSIZE) | (max << 4));
    const deliver: number[] = [];
    if (this.perVectorMasking) {
      for (let v = 0; v < this.vectorsEnabled; v++) {
        const bit = 1 << v;
        if ((this.mask & bit) !== 0 || (this.pending & bit) === 0) continue;
        this.#setPending(v, false);
        deliver.push(v);
      }
    }
    return { enable, deliver };
  }

  /** `msi_notify` for a host signal of `vector`: the message to deliver, or null when the vector is masked (now pending). */
  notify(vector: number): MsiMessage | null {
    if (!this.enabled || vector >= this.vectorsEnabled) return null;
    if ((this.mask & (1 << vector)) !== 0) {
      this.#setPending(vector, true);
      return null;
    }
    return this.message(vector);
  }

  /** `msi_get_message`: the vector number sits in the low data bits the guest enabled. */
  message(vector: number): MsiMessage {
    const n = this.vectorsEnabled;
    const data = n > 1 ? (this.data & ~(n - 1)) | vector : this.data;
    return { address: this.address, data };
  }

  #setPending(vector: number, on: boolean): void {
    const at = this.#pendingAt();
    const bits = this.regs.getNumber(at, 4);
    this.regs.set(at, 4, (on ? bits | (1 << vector) : bits & ~(1 << vector)) >>> 0);
  }

  #flags(): number {
    return this.regs.getNumber(PCI_MSI_FLAGS, 2);
  }

  #dataAt(): number {
    return this.is64Bit ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32;
  }

  #maskAt(): number {
    return this.is64Bit ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32;
  }

  #pendingAt(): number {
    return this.is64Bit ? PCI_MSI_PENDING_64 : PCI_MSI_PENDING_32;
  }
}

/** `msi_init`: the capability's registers and QEMU's write masks for them. */
function msiRegisters(offset: number, flags: number, next: number): EmulatedRegisters {
  const log2 = (flags & PCI_MSI_FLAGS_QMASK) >> 1;
  if (log2 > 5) throw new ConfigSpaceError('MSI capability', `message control 0x${flags.toString(16)} asks for more than 32 vectors`, offset + PCI_MSI_FLAGS);
  const is64 = (flags & PCI_MSI_FLAGS_64BIT) !== 0;
  const vectors = 1 << log2;
  const r = new EmulatedRegisters(msiCapabilitySize(flags));
  r.set(0, 1, 0x05);
  r.set(PCI_CAP_LIST_NEXT, 1, next);
  r.set(PCI_MSI_FLAGS, 2, flags & (PCI_MSI_FLAGS_QMASK | PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT));
  r.writable(PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_QSIZE | PCI_MSI_FLAGS_ENABLE);
  r.writable(PCI_MSI_ADDRESS_LO, 4, 0xfffffffc);
  if (is64) r.writable(PCI_MSI_ADDRESS_HI, 4, 0xffffffff);
  r.writable(is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32, 2, 0xffff);
  if ((flags & PCI_MSI_FLAGS_MASKBIT) !== 0) r.writable(is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32, 4, vectors === 32 ? 0xffffffff : (1 << vectors) - 1);
  return r;
}
