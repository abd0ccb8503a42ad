/**
 * Which config bits must match between an incoming config image and the
 * destination device. QEMU's `get_pci_config_device` (hw/pci/pci.c) refuses
 * the migrated image when, for any byte,
 * `(new ^ cur) & cmask & ~wmask & ~w1cmask` is non-zero: bits QEMU checks
 * (cmask) that the guest cannot write (wmask) or clear (w1cmask) must be
 * identical. This module rebuilds those three masks for a VFIO device from
 * the destination's own QEMU-shaped image, the way QEMU builds them:
 *
 * - `pci_init_cmask`, `pci_init_wmask`, `pci_init_w1cmask` (hw/pci/pci.c): ids,
 *   revision, class, header type, the capability pointer and the CAP_LIST
 *   status bit are checked; command bits, cache line, interrupt line and all
 *   of 0x40 and up are writable until a capability claims them.
 * - `pci_register_bar` (hw/pci/pci.c), for each BAR whose VFIO region is not
 *   empty (`vfio_bar_register`): the whole register is checked, address bits
 *   above the size are writable.
 * - `vfio_add_std_cap` (hw/vfio/pci.c): each standard capability is
 *   registered by `pci_add_capability`, which makes it read-only and checked;
 *   MSI through `msi_init` (hw/pci/msi.c: its own length, enable, multiple
 *   message enable, address, data and the mask bits of its vectors writable),
 *   MSI-X through `msix_init` (hw/pci/msix.c: 12 bytes, enable and function
 *   mask writable), PM through `pci_pm_init` (8 bytes, power state writable;
 *   QEMU 10.0+: 8.x and 9.x register PM like any other id, all read-only);
 *   any other id over `vfio_std_cap_max_size` (up to the next capability or
 *   0x100). With `skip-vsc-check` (default on since QEMU 9.1) only the 3-byte
 *   header of a vendor-specific capability is checked.
 * - `vfio_add_ext_cap`: each extended capability is registered by
 *   `pcie_add_capability` over `vfio_ext_cap_max_size`, except ids QEMU drops
 *   (0, SR-IOV, ARI), which stay unchecked.
 *
 * - `vfio_pci_size_rom` → `pci_register_bar(PCI_ROM_SLOT)`, when a ROM size
 *   is given: checked, the address bits above the size and the enable bit
 *   writable.
 *
 * Extended capability lengths are measured on the chain of the image the
 * masks are built from: build them from the device's own (kernel) image, as
 * QEMU does before it unlinks the capabilities it drops.
 * Not modelled: the words QEMU rewrites with `vfio_add_emulated_word/long`
 * in special cases (an endpoint turned into a root-complex integrated
 * endpoint, resizable BARs, PCIe version 0) and virtual capabilities QEMU
 * inserts. On purpose stricter than QEMU, unless turned off: subsystem ids.
 */
import { ConfigSpaceError, VfioArgumentError } from '../errors.js';
import { decodeBars } from './bar.js';
import { listCapabilities, listExtCapabilities } from './capabilities.js';
import { parseMsi } from './msi.js';
import {
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_CAP_ID_VNDR,
  PCI_CAP_MSIX_SIZEOF,
  PCI_CACHE_LINE_SIZE,
  PCI_CFG_SPACE_EXP_SIZE,
  PCI_CFG_SPACE_SIZE,
  PCI_CLASS_DEVICE,
  PCI_CLASS_PROG,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_SERR,
  PCI_DEVICE_ID,
  PCI_EXT_CAP_ID_ARI,
  PCI_EXT_CAP_ID_SRIOV,
  PCI_HEADER_TYPE,
  PCI_INTERRUPT_LINE,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_QSIZE,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  PCI_PM_SIZEOF,
  PCI_REVISION_ID,
  PCI_ROM_ADDRESS,
  PCI_ROM_ADDRESS_ENABLE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_DETECTED_PARITY,
  PCI_STATUS_PARITY,
  PCI_STATUS_REC_MASTER_ABORT,
  PCI_STATUS_REC_TARGET_ABORT,
  PCI_STATUS_SIG_SYSTEM_ERROR,
  PCI_STATUS_SIG_TARGET_ABORT,
  PCI_STD_HEADER_SIZEOF,
  PCI_STD_NUM_BARS,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
} from './regs.js';

/** How to build the masks. */
export interface ReadOnlyMaskOptions {
  /**
   * The sizes VFIO reports for the BAR0-BAR5 regions (0 for an unimplemented
   * BAR and for the upper half of a 64-bit BAR). With them, BARs are checked
   * as `pci_register_bar` sets them up; without them, BARs are not checked.
   */
  readonly barSizes?: readonly bigint[];
  /** The expansion ROM BAR's size as QEMU sizes it (0 or absent: no ROM BAR registered, the register stays unchecked). */
  readonly romSize?: bigint;
  /** Check the subsystem vendor and device ids too (QEMU does not). Default true. */
  readonly subsystemIds?: boolean;
  /** QEMU's `skip-vsc-check`: check only the 3-byte header of vendor-specific capabilities. Default true. */
  readonly skipVendorSpecificCheck?: boolean;
}

/** QEMU's per-byte masks for one device: checked, guest-writable, write-1-to-clear. */
export interface ConfigMasks {
  readonly cmask: Uint8Array;
  readonly wmask: Uint8Array;
  readonly w1cmask: Uint8Array;
}

/** The first byte whose read-only bits differ. */
export interface ReadOnlyMismatch {
  readonly offset: number;
  /** The byte in the incoming image. */
  readonly incoming: number;
  /** The byte in the destination's image. */
  readonly current: number;
  /** The differing read-only bits. */
  readonly bits: number;
}

// msix.c: MSIX_CONTROL_OFFSET is the high byte of the flags word.
const MSIX_CONTROL_OFFSET = 3;
// msi.c: PCI_MSI_ADDRESS_LO_MASK (~0x3) and PCI_MSI_VECTORS_MAX.
const MSI_ADDRESS_LO_MASK = 0xfffffffc;
const PCI_MSI_VECTORS_MAX = 32;
// Vendor-specific capabilities: id, next and length stay checked under skip-vsc-check.
const VNDR_HEADER_SIZE = 3;
const COMMAND_WMASK = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE | PCI_COMMAND_SERR;
const STATUS_W1CMASK =
  PCI_STATUS_PARITY |
  PCI_STATUS_SIG_TARGET_ABORT |
  PCI_STATUS_REC_TARGET_ABORT |
  PCI_STATUS_REC_MASTER_ABORT |
  PCI_STATUS_SIG_SYSTEM_ERROR |
  PCI_STATUS_DETECTED_PARITY;

/** Writes `value` little-endian over `bytes` bytes at `at`, clipped to the mask's length. */
function setLE(mask: Uint8Array, at: number, bytes: number, value: bigint): void {
  for (let i = 0; i < bytes && at + i < mask.byteLength; i++) mask[at + i] = Number((value >> BigInt(8 * i)) & 0xffn);
}

/** `memset` clipped to the mask's length (mtty's image is one byte short of 256). */
function fill(mask: Uint8Array, from: number, to: number, value: number): void {
  mask.fill(value, Math.min(from, mask.byteLength), Math.min(to, mask.byteLength));
}

/** The extent of each capability: up to the next higher capability start, or `end`. */
function maxSize(offsets: readonly number[], pos: number, end: number): number {
  return offsets.reduce((limit, o) => (o > pos && o < limit ? o : limit), end) - pos;
}

/**
 * Builds QEMU's cmask, wmask and w1cmask for a VFIO device from its own
 * config image (see the module comment for what is modelled).
 * @throws ConfigSpaceError for a malformed capability list, MSI capability or BAR.
 * @throws VfioArgumentError when `barSizes` does not have 6 entries.
 */
export function buildConfigMasks(current: Uint8Array, options: ReadOnlyMaskOptions = {}): ConfigMasks {
  const size = current.byteLength;
  const cmask = new Uint8Array(size);
  const wmask = new Uint8Array(size);
  const w1cmask = new Uint8Array(size);

  // pci_init_cmask
  fill(cmask, PCI_VENDOR_ID, PCI_DEVICE_ID + 2, 0xff);
  cmask[PCI_STATUS] = PCI_STATUS_CAP_LIST;
  fill(cmask, PCI_REVISION_ID, PCI_CLASS_DEVICE + 2, 0xff);
  cmask[PCI_CLASS_PROG] = 0xff;
  cmask[PCI_HEADER_TYPE] = 0xff;
  cmask[PCI_CAPABILITY_LIST] = 0xff;
  if (options.subsystemIds ?? true) fill(cmask, PCI_SUBSYSTEM_VENDOR_ID, PCI_SUBSYSTEM_VENDOR_ID + 4, 0xff);
  // pci_init_wmask
  wmask[PCI_CACHE_LINE_SIZE] = 0xff;
  wmask[PCI_INTERRUPT_LINE] = 0xff;
  setLE(wmask, PCI_COMMAND, 2, BigInt(COMMAND_WMASK));
  fill(wmask, PCI_STD_HEADER_SIZEOF, size, 0xff);
  // pci_init_w1cmask
  setLE(w1cmask, PCI_STATUS, 2, BigInt(STATUS_W1CMASK));

  if (options.barSizes !== undefined) {
    if (options.barSizes.length !== PCI_STD_NUM_BARS) {
      throw new VfioArgumentError('buildConfigMasks', `barSizes needs ${PCI_STD_NUM_BARS} entries, got ${options.barSizes.length}`);
    }
    for (const bar of decodeBars(current)) {
      const barSize = options.barSizes[bar.index];
      if (bar.kind === 'upper' || barSize === 0n) continue;
      const bytes = bar.kind === 'mem64' ? 8 : 4;
      setLE(wmask, bar.offset, bytes, ~(barSize - 1n));
      fill(cmask, bar.offset, bar.offset + bytes, 0xff);
    }
  }

  const romSize = options.romSize ?? 0n;
  if (romSize > 0n) {
    setLE(wmask, PCI_ROM_ADDRESS, 4, (~(romSize - 1n) | BigInt(PCI_ROM_ADDRESS_ENABLE)) & 0xffffffffn);
    fill(cmask, PCI_ROM_ADDRESS, PCI_ROM_ADDRESS + 4, 0xff);
  }

  // Order does not matter: QEMU refuses overlapping capabilities (pci_add_capability).
  const caps = listCapabilities(current);
  const capOffsets = caps.map((c) => c.offset);
  for (const cap of caps) {
    const pos = cap.offset;
    switch (cap.id) {
      case PCI_CAP_ID_MSI: {
        const msi = parseMsi(current, pos);
        fill(wmask, pos, pos + msi.size, 0);
        fill(cmask, pos, pos + msi.size, 0xff);
        setLE(wmask, pos + PCI_MSI_FLAGS, 2, BigInt(PCI_MSI_FLAGS_QSIZE | PCI_MSI_FLAGS_ENABLE));
        setLE(wmask, msi.addressOffset, 4, BigInt(MSI_ADDRESS_LO_MASK));
        if (msi.addressHighOffset !== undefined) setLE(wmask, msi.addressHighOffset, 4, 0xffffffffn);
        setLE(wmask, msi.dataOffset, 2, 0xffffn);
        if (msi.maskOffset !== undefined) setLE(wmask, msi.maskOffset, 4, BigInt(0xffffffff >>> (PCI_MSI_VECTORS_MAX - msi.vectorsCapable)));
        break;
      }
      case PCI_CAP_ID_MSIX:
        fill(wmask, pos, pos + PCI_CAP_MSIX_SIZEOF, 0);
        fill(cmask, pos, pos + PCI_CAP_MSIX_SIZEOF, 0xff);
        wmask[pos + MSIX_CONTROL_OFFSET] = (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8;
        break;
      case PCI_CAP_ID_PM:
        fill(wmask, pos, pos + PCI_PM_SIZEOF, 0);
        fill(cmask, pos, pos + PCI_PM_SIZEOF, 0xff);
        setLE(wmask, pos + PCI_PM_CTRL, 2, BigInt(PCI_PM_CTRL_STATE_MASK));
        break;
      default: {
        // vfio_std_cap_max_size: up to the next capability or 0x100.
        const capSize = maxSize(capOffsets, pos, PCI_CFG_SPACE_SIZE);
        fill(wmask, pos, pos + capSize, 0);
        fill(cmask, pos, pos + capSize, 0xff);
        if (cap.id === PCI_CAP_ID_VNDR && (options.skipVendorSpecificCheck ?? true)) fill(cmask, pos + VNDR_HEADER_SIZE, pos + capSize, 0);
      }
    }
  }

  const ext = listExtCapabilities(current);
  if (ext.length > 0) {
    // vfio_add_ext_cap emulates the chain head: its dword is never guest-writable.
    fill(wmask, PCI_CFG_SPACE_SIZE, PCI_CFG_SPACE_SIZE + 4, 0);
    const extOffsets = ext.map((c) => c.offset);
    for (const cap of ext) {
      if (cap.id === 0 || cap.id === PCI_EXT_CAP_ID_SRIOV || cap.id === PCI_EXT_CAP_ID_ARI) continue;
      // vfio_ext_cap_max_size: up to the next capability or 0x1000.
      const end = cap.offset + maxSize(extOffsets, cap.offset, PCI_CFG_SPACE_EXP_SIZE);
      fill(wmask, cap.offset, end, 0);
      fill(cmask, cap.offset, end, 0xff);
    }
  }
  return { cmask, wmask, w1cmask };
}

/**
 * The first byte where `image` and `current` differ in bits QEMU would
 * refuse, or undefined when the image is acceptable.
 * @param image the incoming (migrated) config image
 * @param current the destination device's config image; the masks come from it
 * @throws ConfigSpaceError when the two images differ in size, or `current` is malformed.
 */
export function findReadOnlyMismatch(image: Uint8Array, current: Uint8Array, options: ReadOnlyMaskOptions = {}): ReadOnlyMismatch | undefined {
  checkSameSize(image, current);
  return firstMismatch(image, current, buildConfigMasks(current, options));
}

/**
 * Throws unless `image` matches `current` in every read-only bit, as QEMU's
 * `get_pci_config_device` requires before it accepts a migrated config image.
 * @throws ConfigSpaceError whose `offset` is the first offending byte.
 */
export function checkReadOnlyBits(image: Uint8Array, current: Uint8Array, options: ReadOnlyMaskOptions = {}): void {
  throwMismatch(findReadOnlyMismatch(image, current, options));
}

/**
 * {@link checkReadOnlyBits} with masks built beforehand (`get_pci_config_device`
 * compares with QEMU's own `pdev->config`, under the masks QEMU built at
 * realize from the device's image).
 * @throws ConfigSpaceError for images of different sizes, or whose `offset` is the first offending byte.
 */
export function checkReadOnlyBitsWith(image: Uint8Array, current: Uint8Array, masks: ConfigMasks): void {
  checkSameSize(image, current);
  throwMismatch(firstMismatch(image, current, masks));
}

function checkSameSize(image: Uint8Array, current: Uint8Array): void {
  if (image.byteLength !== current.byteLength) {
    throw new ConfigSpaceError('config read-only bits', `the incoming image has ${image.byteLength} bytes, the device's ${current.byteLength}`);
  }
}

function firstMismatch(image: Uint8Array, current: Uint8Array, { cmask, wmask, w1cmask }: ConfigMasks): ReadOnlyMismatch | undefined {
  for (let i = 0; i < image.byteLength; i++) {
    const incoming = image[i];
    const cur = current[i];
    const bits = (incoming ^ cur) & cmask[i] & ~wmask[i] & ~w1cmask[i];
    if (bits !== 0) return { offset: i, incoming, current: cur, bits };
  }
  return undefined;
}

function throwMismatch(m: ReadOnlyMismatch | undefined): void {
  if (m === undefined) return;
  const hex = (n: number): string => `0x${n.toString(16).padStart(2, '0')}`;
  throw new ConfigSpaceError('config read-only bits', `read-only bits ${hex(m.bits)} differ: incoming ${hex(m.incoming)}, device ${hex(m.current)}`, m.offset);
}
