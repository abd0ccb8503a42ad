/**
 * Walks the standard capability list (from `PCI_CAPABILITY_LIST`, 8-bit next
 * pointers) and the PCIe extended list (from 0x100, 32-bit headers).
 *
 * Images are untrusted (a device, a vendor driver or a migration stream wrote
 * them), so a pointer into the header, past the image or back to a capability
 * already visited is a {@link ConfigSpaceError} whose `offset` names the
 * register holding the bad pointer. Refusing revisits also bounds the walks:
 * a list can hold at most one capability per dword slot, the kernel's
 * `PCI_FIND_CAP_TTL` (48) for the standard list and (4096 - 256) / 4 for the
 * extended one.
 */
import { ConfigSpaceError } from '../errors.js';
import { configRead16, configRead32, configRead8 } from './config-space.js';
import {
  PCI_CAPABILITY_LIST,
  PCI_CAP_LIST_ID,
  PCI_CAP_LIST_NEXT,
  PCI_CFG_SPACE_EXP_SIZE,
  PCI_CFG_SPACE_SIZE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STD_HEADER_SIZEOF,
  pciExtCapId,
  pciExtCapNext,
  pciExtCapVer,
} from './regs.js';

/** Most capabilities a standard list can hold: the dword slots in 0x40-0xff. */
export const PCI_MAX_STD_CAPS = (PCI_CFG_SPACE_SIZE - PCI_STD_HEADER_SIZEOF) / 4;
/** Most capabilities an extended list can hold: the dword slots in 0x100-0xfff. */
export const PCI_MAX_EXT_CAPS = (PCI_CFG_SPACE_EXP_SIZE - PCI_CFG_SPACE_SIZE) / 4;

/** One entry of the standard capability list. */
export interface PciCapability {
  readonly id: number;
  /** Where the capability starts in config space. */
  readonly offset: number;
  /** The next pointer with its reserved low two bits cleared; 0 ends the list. */
  readonly next: number;
}

/** One entry of the extended capability list. */
export interface PciExtCapability {
  /** The 16-bit id. 0 marks a capability the kernel or QEMU hid while keeping the chain (see `vfio_add_ext_cap`). */
  readonly id: number;
  readonly version: number;
  readonly offset: number;
  /** The 12-bit next offset (low two bits cleared, as `PCI_EXT_CAP_NEXT`); 0 ends the list. */
  readonly next: number;
}

// Low two bits of a standard next pointer are reserved (PCI 3.0, 6.7); the kernel masks them too.
const STD_PTR_MASK = 0xfc;
const CTX_STD = 'capability list';
const CTX_EXT = 'extended capability list';

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * Lists the standard capabilities in list order. A list is present only when
 * `PCI_STATUS_CAP_LIST` is set, as the kernel and QEMU both require.
 * @throws ConfigSpaceError for a pointer below 0x40, a capability whose id and
 *   next bytes lie past the image, or a loop.
 */
export function listCapabilities(image: Uint8Array): PciCapability[] {
  const out: PciCapability[] = [];
  if ((configRead16(image, PCI_STATUS) & PCI_STATUS_CAP_LIST) === 0) return out;
  const seen = new Set<number>();
  let pointerAt = PCI_CAPABILITY_LIST;
  let pos = configRead8(image, pointerAt) & STD_PTR_MASK;
  while (pos !== 0) {
    if (pos < PCI_STD_HEADER_SIZEOF) {
      throw new ConfigSpaceError(CTX_STD, `pointer ${hex(pos)} points into the ${PCI_STD_HEADER_SIZEOF}-byte header`, pointerAt);
    }
    if (pos + PCI_CAP_LIST_NEXT + 1 > image.byteLength) {
      throw new ConfigSpaceError(CTX_STD, `pointer ${hex(pos)} points past the end of the ${image.byteLength}-byte image`, pointerAt);
    }
    if (seen.has(pos)) {
      throw new ConfigSpaceError(CTX_STD, `pointer ${hex(pos)} goes back to a capability already listed (a loop)`, pointerAt);
    }
    seen.add(pos);
    const next = configRead8(image, pos + PCI_CAP_LIST_NEXT) & STD_PTR_MASK;
    out.push({ id: configRead8(image, pos + PCI_CAP_LIST_ID), offset: pos, next });
    pointerAt = pos + PCI_CAP_LIST_NEXT;
    pos = next;
  }
  return out;
}

/**
 * Lists the extended capabilities in list order. An image of 256 bytes or
 * less has none; so does one whose first header at 0x100 reads as all zeros
 * (none, per the PCIe spec) or all ones (extended space not reachable, the
 * kernel's `pci_cfg_space_size_ext` test).
 * @throws ConfigSpaceError for a next offset below 0x100, a header past the
 *   image, or a loop; `offset` is the header holding the bad next offset.
 */
export function listExtCapabilities(image: Uint8Array): PciExtCapability[] {
  const out: PciExtCapability[] = [];
  if (image.byteLength < PCI_CFG_SPACE_SIZE + 4) return out;
  const first = configRead32(image, PCI_CFG_SPACE_SIZE);
  if (first === 0 || first === 0xffffffff) return out;
  const seen = new Set<number>();
  let pos = PCI_CFG_SPACE_SIZE;
  let header = first;
  for (;;) {
    seen.add(pos);
    const next = pciExtCapNext(header);
    out.push({ id: pciExtCapId(header), version: pciExtCapVer(header), offset: pos, next });
    if (next === 0) return out;
    if (next < PCI_CFG_SPACE_SIZE) {
      throw new ConfigSpaceError(CTX_EXT, `next offset ${hex(next)} points into the ${PCI_CFG_SPACE_SIZE}-byte conventional space`, pos);
    }
    if (next + 4 > image.byteLength) {
      throw new ConfigSpaceError(CTX_EXT, `next offset ${hex(next)} points past the end of the ${image.byteLength}-byte image`, pos);
    }
    if (seen.has(next)) {
      throw new ConfigSpaceError(CTX_EXT, `next offset ${hex(next)} goes back to a capability already listed (a loop)`, pos);
    }
    pos = next;
    header = configRead32(image, pos);
  }
}

/**
 * The first standard capability with `id`, or undefined.
 * @throws ConfigSpaceError when the list is malformed (see {@link listCapabilities}).
 */
export function findCapability(image: Uint8Array, id: number): PciCapability | undefined {
  return listCapabilities(image).find((c) => c.id === id);
}

/**
 * The first extended capability with `id`, or undefined.
 * @throws ConfigSpaceError when the list is malformed (see {@link listExtCapabilities}).
 */
export function findExtCapability(image: Uint8Array, id: number): PciExtCapability | undefined {
  return listExtCapabilities(image).find((c) => c.id === id);
}
