/**
 * QEMU's own view of a VFIO device's config space: `pdev->config`, the
 * image `vfio_pci_save_config` migrates, as hw/vfio/pci.c builds it at
 * realize and hw/pci/pci.c resets it, with QEMU's masks and the bits vfio
 * emulates (`vdev->emulated_config_bits`, whose guest reads come from this
 * image instead of the device). Pure: the caller reads the device.
 *
 * Realize (`vfio_pci_config_setup`, `vfio_bars_register`,
 * `vfio_add_capabilities`), from the kernel's image read into a zeroed
 * buffer of 256 or 4096 bytes (`qemuConfigImageSize`):
 * - header type: the multi-function bit cleared (a single-function slot);
 * - BARs and ROM cleared, then `pci_register_bar` writes each implemented
 *   BAR's type bits (I/O: bits 0-1, memory: bits 0-3); the ROM's type is 0;
 * - the standard capabilities are re-registered in the device's order, so
 *   the chain is the device's; `msi_init` keeps only the vector count, 64-bit
 *   and per-vector-mask bits of the MSI flags, `msix_init` only the table
 *   size of the MSI-X flags; a PCIe capability of version 0 is shown as 1;
 * - the extended chain is rebuilt from a head QEMU emulates, dropping ids 0
 *   (hidden by the kernel), SR-IOV and ARI: their bytes stay, unlinked;
 * then the system reset (`pci_do_device_reset`, `msi_reset`, `msix_reset`):
 * the writable and write-1-to-clear bits of command and status, the
 * interrupt line and cache line size cleared, MSI and MSI-X disabled with
 * their address, data, mask and pending bits 0.
 *
 * The device is assumed to sit on a PCIe root port (`-device
 * vfio-pci,bus=<root port>` on Q35), where `vfio_setup_pcie_cap` changes
 * nothing else; on the root complex or a conventional bus QEMU rewrites or
 * hides the PCIe capability, which is not modelled. Neither are vendor
 * quirks, virtual capabilities, resizable-BAR emulation or id overrides.
 */
import { decodeBars } from './bar.js';
import { listCapabilities, listExtCapabilities } from './capabilities.js';
import { parseMsi } from './msi.js';
import { buildConfigMasks, type ConfigMasks } from './readonly-mask.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_IO_MASK,
  PCI_BASE_ADDRESS_MEM_MASK,
  PCI_CACHE_LINE_SIZE,
  PCI_CAPABILITY_LIST,
  PCI_CAP_FLAGS,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_LIST_NEXT,
  PCI_CAP_MSIX_SIZEOF,
  PCI_CFG_SPACE_SIZE,
  PCI_COMMAND,
  PCI_EXP_FLAGS_VERS,
  PCI_EXT_CAP_ID_ARI,
  PCI_EXT_CAP_ID_SRIOV,
  PCI_HEADER_TYPE,
  PCI_HEADER_TYPE_MFD,
  PCI_INTERRUPT_LINE,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_ROM_ADDRESS,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STD_NUM_BARS,
} from './regs.js';
import { qemuConfigImageSize } from './vmstate.js';

/** What QEMU reads from the device at realize. */
export interface QemuConfigInput {
  /** The CONFIG region as the kernel shows it, whole (mtty's is 255 bytes). */
  readonly kernelImage: Uint8Array;
  /** The VFIO region sizes of BAR0-BAR5 (0 for an unimplemented BAR and for the upper half of a 64-bit one). */
  readonly barSizes: readonly bigint[];
  /** The ROM BAR size as `vfio_pci_size_rom` sizes it through config space (0: no ROM BAR). */
  readonly romSize: bigint;
}

/** QEMU's view of the device's config space. */
export interface QemuConfigSpace {
  /** `pdev->config` after realize and a system reset: 256 or 4096 bytes. */
  readonly image: Uint8Array;
  /** QEMU's per-byte masks: checked on load, guest-writable, write-1-to-clear. */
  readonly masks: ConfigMasks;
  /** `emulated_config_bits`: bits whose guest reads come from `image`, the rest from the device. */
  readonly emulatedBits: Uint8Array;
}

// pcie_add_capability and friends: what QEMU drops from the extended chain (vfio_add_ext_cap).
const DROPPED_EXT_CAPS: ReadonlySet<number> = new Set([0, PCI_EXT_CAP_ID_SRIOV, PCI_EXT_CAP_ID_ARI]);
/** `PCI_EXT_CAP(0xffff, 0, 0)`: the head QEMU seeds the rebuilt extended chain with. */
const EXT_CHAIN_SEED = 0x0000ffff;
/** `PCI_EXT_CAP_NEXT_MASK`: the next-offset bits of an extended capability header. */
const EXT_CAP_NEXT_MASK = 0xfff00000;

function get32(b: Uint8Array, at: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(at, true);
}
function set32(b: Uint8Array, at: number, v: number): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(at, v >>> 0, true);
}
function get16(b: Uint8Array, at: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint16(at, true);
}
function set16(b: Uint8Array, at: number, v: number): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint16(at, v & 0xffff, true);
}

/**
 * Builds QEMU's view of a VFIO device's config space from what the kernel
 * shows (see the module comment for what realize and reset do to it).
 * @throws ConfigSpaceError for a malformed capability list, MSI capability or BAR.
 * @throws VfioArgumentError when `barSizes` does not have 6 entries.
 */
export function qemuConfigSpace(input: QemuConfigInput): QemuConfigSpace {
  const size = qemuConfigImageSize(input.kernelImage.byteLength);
  // vfio_pci_config_space_read: MIN(pci_config_size, config_size) bytes into the zeroed pdev->config.
  const host = new Uint8Array(size);
  host.set(input.kernelImage.subarray(0, size));
  // The masks come from the device's own chain, before QEMU unlinks what it drops; exactly
  // QEMU's, so no subsystem-id check (pci_init_cmask has none): what QEMU loads, this loads.
  const masks = buildConfigMasks(host, { barSizes: input.barSizes, romSize: input.romSize, subsystemIds: false });
  const image = host.slice();
  const emu = new Uint8Array(size);

  // vfio_pci_config_setup: ROM, BARs and the multi-function bit are QEMU's.
  emu.fill(0xff, PCI_ROM_ADDRESS, PCI_ROM_ADDRESS + 4);
  emu.fill(0xff, PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_0 + 4 * PCI_STD_NUM_BARS);
  emu[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_MFD;
  image[PCI_HEADER_TYPE] &= ~PCI_HEADER_TYPE_MFD;
  image.fill(0, PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_0 + 4 * PCI_STD_NUM_BARS);
  image.fill(0, PCI_ROM_ADDRESS, PCI_ROM_ADDRESS + 4);
  // vfio_bars_register -> pci_register_bar: the register holds the BAR's type bits.
  for (const bar of decodeBars(host)) {
    if (bar.kind === 'upper' || input.barSizes[bar.index] === 0n) continue;
    set32(image, bar.offset, bar.raw & ~(bar.kind === 'io' ? PCI_BASE_ADDRESS_IO_MASK : PCI_BASE_ADDRESS_MEM_MASK));
  }

  const caps = listCapabilities(host);
  if (caps.length > 0) {
    // vfio_add_std_cap: QEMU rebuilds the list itself, with emulated pointers.
    emu[PCI_CAPABILITY_LIST] = 0xff;
    emu[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
    for (const cap of caps) {
      emu[cap.offset + PCI_CAP_LIST_NEXT] = 0xff;
      const flagsAt = cap.offset + PCI_CAP_FLAGS;
      if (cap.id === PCI_CAP_ID_MSI) {
        const msi = parseMsi(host, cap.offset);
        // msi_init writes the flags; msi_reset zeroes address, data, mask and pending (the reserved
        // word of a 64-bit masking capability is 0 on every device, and MsiState keeps it so).
        set16(image, cap.offset + PCI_MSI_FLAGS, get16(host, cap.offset + PCI_MSI_FLAGS) & (PCI_MSI_FLAGS_QMASK | PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT));
        image.fill(0, cap.offset + PCI_MSI_FLAGS + 2, cap.offset + msi.size);
        // "QEMU emulates all of MSI & MSIX" (vfio_realize).
        emu.fill(0xff, cap.offset, cap.offset + msi.size);
      } else if (cap.id === PCI_CAP_ID_MSIX) {
        // msix_init: the table size only; enable and function mask start (and reset) clear.
        set16(image, cap.offset + PCI_MSIX_FLAGS, get16(host, cap.offset + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_QSIZE);
        emu.fill(0xff, cap.offset, cap.offset + PCI_CAP_MSIX_SIZEOF);
      } else if (cap.id === PCI_CAP_ID_EXP && (get16(host, flagsAt) & PCI_EXP_FLAGS_VERS) === 0) {
        // vfio_setup_pcie_cap: version 0 (82599 VFs) is shown as version 1.
        set16(image, flagsAt, get16(host, flagsAt) | 1);
        set16(emu, flagsAt, get16(emu, flagsAt) | PCI_EXP_FLAGS_VERS);
      }
    }
    rebuildExtChain(host, image, emu);
  }

  // pci_do_device_reset: what the guest may write or clear starts at 0.
  for (const at of [PCI_COMMAND, PCI_COMMAND + 1, PCI_STATUS, PCI_STATUS + 1, PCI_INTERRUPT_LINE]) image[at] &= ~(masks.wmask[at] | masks.w1cmask[at]);
  image[PCI_CACHE_LINE_SIZE] = 0;
  return { image, masks, emulatedBits: emu };
}

/** `vfio_add_ext_cap`: the extended chain as QEMU exposes it, on an express bus. */
function rebuildExtChain(host: Uint8Array, image: Uint8Array, emu: Uint8Array): void {
  if (host.byteLength <= PCI_CFG_SPACE_SIZE || get32(host, PCI_CFG_SPACE_SIZE) === 0) return;
  const ext = listExtCapabilities(host);
  set32(image, PCI_CFG_SPACE_SIZE, EXT_CHAIN_SEED);
  set32(emu, PCI_CFG_SPACE_SIZE, 0xffffffff);
  let tail = PCI_CFG_SPACE_SIZE;
  for (const cap of ext) {
    set32(emu, cap.offset, get32(emu, cap.offset) | EXT_CAP_NEXT_MASK);
    if (DROPPED_EXT_CAPS.has(cap.id)) continue;
    // pcie_add_capability: linked after the last capability added, with no next of its own.
    if (cap.offset !== PCI_CFG_SPACE_SIZE) set32(image, tail, (get32(image, tail) & ~EXT_CAP_NEXT_MASK) | (cap.offset << 20));
    set32(image, cap.offset, (cap.version << 16) | cap.id);
    tail = cap.offset;
  }
  // "Cleanup chain head ID if necessary": a seed still in place becomes id 0, its next kept.
  if (get16(image, PCI_CFG_SPACE_SIZE) === 0xffff) set16(image, PCI_CFG_SPACE_SIZE, 0);
}
