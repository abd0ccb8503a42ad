/**
 * The config state QEMU migrates for a VFIO PCI device: the bytes
 * `vfio_pci_save_config` (hw/vfio/pci.c) writes with
 * `vmstate_save_state(f, &vmstate_vfio_pci_config, vdev, ...)`, and that
 * `vfio_pci_load_config` reads back. Layout, all big-endian where multi-byte:
 *
 * ```
 * VMStateDescription "VFIOPCIDevice" (version 1): no version on the wire (only
 * the enclosing section header, which VFIO's framing does not have, carries one)
 *   VMSTATE_PCI_DEVICE(pdev) -> nested "PCIDevice" (hw/pci/pci.c vmstate_pci_device),
 *   VMS_STRUCT, so again no version of its own on the wire:
 *     be32  version_id            VMSTATE_INT32_POSITIVE_LE: put_int32 = qemu_put_sbe32;
 *                                 always 2 (do_pci_register_device); "LE" means
 *                                 "less or equal" (get_int32_le accepts 0..2), not little-endian
 *     u8[256 | 4096] config       put_pci_config_device: qemu_put_buffer of pdev->config,
 *                                 256 bytes unless pci_is_express(pdev)
 *     be32[4] irq_state           put_pci_irq_state: qemu_put_be32 per pin, INTA..INTD, 0 or 1
 *     (PCIDevice subsections: none exist)
 *   VMSTATE_MSIX_TEST(pdev, vfio_msix_present) -> nested "msix" (hw/pci/msix.c), only
 *   when the device has MSI-X:
 *     u8[n * 16] table            msix_save: qemu_put_buffer(msix_table), the guest's
 *                                 little-endian entries as the MMIO handlers stored them
 *     u8[(n + 7) / 8] pba         msix_save: qemu_put_buffer(msix_pba), bit v%8 of byte v/8
 *   subsection "VFIOPCIDevice/VFIODisplay" (QEMU 8.2+), only when ramfb migration is on:
 *     0x05, u8 name length, name, be32 version, fields   (vmstate_subsection_save)
 * ```
 *
 * There is no length prefix: the reader must know the layout from its own
 * device, which is what {@link configStateSize} is for. vfio-ts does not
 * produce or accept the display subsection.
 *
 * Loading is pure here; applying it is the device layer's job, in
 * `vfio_pci_load_config`'s order: check read-only bits and take the image
 * (`get_pci_config_device`), the MSI-X table and PBA, then write the command
 * register, then remap sub-page BARs that moved, then enable MSI if its
 * capability says enabled, else MSI-X if enabled (`VFIO_DEVICE_SET_IRQS`),
 * all while the device is still RESUMING.
 */
import { ConfigSpaceError, VfioArgumentError } from '../errors.js';
import { findMsix, type MsixCapability } from './msi.js';
import { PCI_CFG_SPACE_EXP_SIZE, PCI_CFG_SPACE_SIZE, PCI_MSIX_ENTRY_SIZE, PCI_MSIX_FLAGS } from './regs.js';

/** `QEMU_VM_SUBSECTION`: the byte that opens a vmstate subsection. */
export const QEMU_VM_SUBSECTION = 0x05;
/** The `version_id` QEMU writes for a PCI device ("Current pci device vmstate version", `do_pci_register_device`). */
export const PCI_DEVICE_VMSTATE_VERSION = 2;
/** `PCI_NUM_PINS`: irq_state has one level per INTx pin. */
export const PCI_NUM_PINS = 4;
/** Most MSI-X table entries a device can have (`PCI_MSIX_FLAGS_QSIZE` + 1). */
export const MSIX_MAX_ENTRIES = 2048;

const CTX = 'VFIOPCIDevice vmstate';
const ENCODE = 'encodeConfigState';

/** What the reader must know about the device to parse its config state. */
export interface ConfigStateLayout {
  /** `pci_is_express(pdev)` in QEMU: a 4096-byte config image, else 256 (see {@link qemuConfigImageSize}). */
  readonly express: boolean;
  /** MSI-X table entries, or 0 when the device has no MSI-X (then no table and no PBA are sent). */
  readonly msixVectors: number;
}

/** The MSI-X table and pending-bit array, as `msix_save` writes them. */
export interface MsixVmstate {
  /** 16 bytes per entry, little-endian PCI layout. */
  readonly table: Uint8Array;
  /** `(entries + 7) / 8` bytes. */
  readonly pba: Uint8Array;
}

/** The decoded config state of a VFIO PCI device. */
export interface VfioPciConfigState {
  /** The PCIDevice vmstate version (2 from any current QEMU). */
  readonly versionId: number;
  /** QEMU's view of config space: 256 or 4096 bytes. */
  readonly config: Uint8Array;
  /** INTA..INTD levels, each 0 or 1. */
  readonly irqState: readonly number[];
  /** Present exactly when the config image has an MSI-X capability. */
  readonly msix: MsixVmstate | undefined;
}

/**
 * The config image size QEMU migrates for a VFIO device whose VFIO CONFIG
 * region is `configRegionSize` bytes. vfio-pci is both a PCIe and a
 * conventional device type; `vfio_instance_init` sets `QEMU_PCI_CAP_EXPRESS`
 * and `vfio_pci_populate_device` clears it only when the region is exactly
 * `PCI_CONFIG_SPACE_SIZE`. So any other size, mtty's 255 bytes included,
 * migrates 4096 bytes (QEMU reads the region into a zeroed buffer).
 */
export function qemuConfigImageSize(configRegionSize: number | bigint): number {
  return BigInt(configRegionSize) === BigInt(PCI_CFG_SPACE_SIZE) ? PCI_CFG_SPACE_SIZE : PCI_CFG_SPACE_EXP_SIZE;
}

const msixBytes = (entries: number): number => entries * PCI_MSIX_ENTRY_SIZE + ((entries + 7) >> 3);

function checkLayout(layout: ConfigStateLayout, op: string): void {
  const n = layout.msixVectors;
  if (!Number.isInteger(n) || n < 0 || n > MSIX_MAX_ENTRIES) {
    throw new VfioArgumentError(op, `msixVectors must be an integer from 0 to ${MSIX_MAX_ENTRIES}, got ${n}`);
  }
}

/**
 * The exact byte length of the config state for a device of this layout:
 * 4 (version_id) + 256 or 4096 (config) + 16 (irq_state), plus
 * `n * 16 + (n + 7) / 8` with `n` MSI-X entries.
 * @throws VfioArgumentError for an MSI-X entry count outside 0..2048.
 */
export function configStateSize(layout: ConfigStateLayout): number {
  checkLayout(layout, 'configStateSize');
  const config = layout.express ? PCI_CFG_SPACE_EXP_SIZE : PCI_CFG_SPACE_SIZE;
  return 4 + config + 4 * PCI_NUM_PINS + (layout.msixVectors === 0 ? 0 : msixBytes(layout.msixVectors));
}

/**
 * The layout implied by a QEMU-shaped config image (256 or 4096 bytes): its
 * size, and the table size of its MSI-X capability. QEMU's `msix_present`
 * holds exactly when `msix_init` added that capability, with its table size.
 * @throws ConfigSpaceError for an image of another size or a malformed capability list.
 */
export function configStateLayoutOf(config: Uint8Array): ConfigStateLayout {
  if (config.byteLength !== PCI_CFG_SPACE_SIZE && config.byteLength !== PCI_CFG_SPACE_EXP_SIZE) {
    throw new ConfigSpaceError(CTX, `a config image is ${PCI_CFG_SPACE_SIZE} or ${PCI_CFG_SPACE_EXP_SIZE} bytes, not ${config.byteLength}`);
  }
  return { express: config.byteLength === PCI_CFG_SPACE_EXP_SIZE, msixVectors: findMsix(config)?.tableSize ?? 0 };
}

/**
 * Encodes the config state exactly as `vfio_pci_save_config` writes it.
 * @throws VfioArgumentError when the state could not have come from QEMU: a
 *   config image of another size, a version outside 0..2, an irq level other
 *   than 0 or 1, or MSI-X data that does not match the image's MSI-X capability.
 * @throws ConfigSpaceError when the image's capability list is malformed.
 */
export function encodeConfigState(state: VfioPciConfigState): Uint8Array {
  if (state.config.byteLength !== PCI_CFG_SPACE_SIZE && state.config.byteLength !== PCI_CFG_SPACE_EXP_SIZE) {
    throw new VfioArgumentError(ENCODE, `config must be ${PCI_CFG_SPACE_SIZE} or ${PCI_CFG_SPACE_EXP_SIZE} bytes, not ${state.config.byteLength}`);
  }
  if (!Number.isInteger(state.versionId) || state.versionId < 0 || state.versionId > PCI_DEVICE_VMSTATE_VERSION) {
    throw new VfioArgumentError(ENCODE, `versionId must be 0..${PCI_DEVICE_VMSTATE_VERSION}, got ${state.versionId}`);
  }
  if (state.irqState.length !== PCI_NUM_PINS || state.irqState.some((v) => v !== 0 && v !== 1)) {
    throw new VfioArgumentError(ENCODE, `irqState must be ${PCI_NUM_PINS} levels of 0 or 1, got [${state.irqState.join(', ')}]`);
  }
  const layout = configStateLayoutOf(state.config);
  const n = layout.msixVectors;
  if ((n === 0) !== (state.msix === undefined)) {
    throw new VfioArgumentError(ENCODE, n === 0 ? 'msix is given but the config image has no MSI-X capability' : `the config image has MSI-X (${n} entries) but msix is missing`);
  }
  if (state.msix !== undefined && (state.msix.table.byteLength !== n * PCI_MSIX_ENTRY_SIZE || state.msix.pba.byteLength !== (n + 7) >> 3)) {
    throw new VfioArgumentError(
      ENCODE,
      `${n} MSI-X entries need a ${n * PCI_MSIX_ENTRY_SIZE}-byte table and a ${(n + 7) >> 3}-byte PBA, got ${state.msix.table.byteLength} and ${state.msix.pba.byteLength}`,
    );
  }
  const out = new Uint8Array(configStateSize(layout));
  const dv = new DataView(out.buffer);
  dv.setInt32(0, state.versionId, false);
  out.set(state.config, 4);
  let at = 4 + state.config.byteLength;
  for (const level of state.irqState) {
    dv.setUint32(at, level, false);
    at += 4;
  }
  if (state.msix !== undefined) {
    out.set(state.msix.table, at);
    out.set(state.msix.pba, at + state.msix.table.byteLength);
  }
  return out;
}

/**
 * The name of the subsection of `parent` that starts at `at`, if one does.
 * Mirrors the peek in `vmstate_subsection_load` (migration/vmstate.c): a
 * subsection is 0x05, a length of at least `strlen(parent) + 1`, and a name
 * starting with the parent's name; anything else is not one, and belongs to
 * whatever follows.
 */
function subsectionAt(buf: Uint8Array, at: number, parent: string): string | undefined {
  if (buf[at] !== QEMU_VM_SUBSECTION) return undefined;
  const len = buf[at + 1];
  if (len === undefined || len < parent.length + 1 || at + 2 + len > buf.byteLength) return undefined;
  const name = String.fromCharCode(...buf.subarray(at + 2, at + 2 + len));
  return name.startsWith(parent) ? name : undefined;
}

function refuseSubsection(buf: Uint8Array, at: number, parents: readonly string[]): void {
  for (const parent of parents) {
    const name = subsectionAt(buf, at, parent);
    if (name !== undefined) throw new ConfigSpaceError(CTX, `subsection "${name}" of ${parent} is not supported`, at);
  }
}

/** The image's MSI-X capability; a malformed capability list is reported at its offset in the encoded state. */
function msixInImage(config: Uint8Array): MsixCapability | undefined {
  try {
    return findMsix(config);
  } catch (err) {
    if (err instanceof ConfigSpaceError && err.offset !== undefined) {
      throw new ConfigSpaceError(CTX, `config image ${err.context}: ${err.detail} (image offset 0x${err.offset.toString(16)})`, 4 + err.offset);
    }
    throw err;
  }
}

/** A decoded config state and how many bytes of the input it took. */
export interface DecodedConfigState {
  readonly state: VfioPciConfigState;
  /** Always `configStateSize(layout)`; what follows belongs to the caller (in QEMU's VFIO stream, the END_OF_STATE tag). */
  readonly byteLength: number;
}

/**
 * Decodes a config state from the start of `buf`, which may hold more after
 * it. Applies the checks QEMU's loaders apply to the stream itself; the
 * read-only-bits check against the destination device is
 * `checkReadOnlyBits` in `readonly-mask.ts`.
 *
 * @param layout the destination device's layout (the stream does not say)
 * @throws ConfigSpaceError, with `offset` in `buf`: truncated input (offset of
 *   the field cut short), a version_id outside 0..2 (`get_int32_le`), an irq
 *   level other than 0 or 1 (`get_pci_irq_state`), a config image whose
 *   capability list is malformed or whose MSI-X capability disagrees with
 *   `layout`, or a subsection (of PCIDevice, msix or
 *   VFIOPCIDevice, e.g. the ramfb display state).
 */
export function decodeConfigState(buf: Uint8Array, layout: ConfigStateLayout): DecodedConfigState {
  checkLayout(layout, 'decodeConfigState');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const need = (at: number, size: number, what: string): void => {
    if (at + size > buf.byteLength) {
      throw new ConfigSpaceError(CTX, `truncated: ${what} needs ${size} bytes, ${Math.max(0, buf.byteLength - at)} remain`, at);
    }
  };

  need(0, 4, 'version_id');
  const versionId = dv.getInt32(0, false);
  if (versionId < 0 || versionId > PCI_DEVICE_VMSTATE_VERSION) {
    throw new ConfigSpaceError(CTX, `PCIDevice version_id ${versionId} is not 0..${PCI_DEVICE_VMSTATE_VERSION}`, 0);
  }

  const configSize = layout.express ? PCI_CFG_SPACE_EXP_SIZE : PCI_CFG_SPACE_SIZE;
  need(4, configSize, 'the config image');
  const config = buf.slice(4, 4 + configSize);
  const msix = msixInImage(config);
  const imageVectors = msix?.tableSize ?? 0;
  if (imageVectors !== layout.msixVectors) {
    throw new ConfigSpaceError(
      CTX,
      `the config image has ${imageVectors === 0 ? 'no MSI-X' : `MSI-X with ${imageVectors} entries`} but the layout says ${layout.msixVectors}`,
      msix === undefined ? undefined : 4 + msix.offset + PCI_MSIX_FLAGS,
    );
  }

  let at = 4 + configSize;
  need(at, 4 * PCI_NUM_PINS, 'irq_state');
  const irqState: number[] = [];
  for (let pin = 0; pin < PCI_NUM_PINS; pin++, at += 4) {
    const level = dv.getUint32(at, false);
    if (level !== 0 && level !== 1) throw new ConfigSpaceError(CTX, `irq_state[${pin}] is ${level}, not 0 or 1`, at);
    irqState.push(level);
  }
  refuseSubsection(buf, at, ['PCIDevice']);

  let msixState: MsixVmstate | undefined;
  if (layout.msixVectors !== 0) {
    const tableBytes = layout.msixVectors * PCI_MSIX_ENTRY_SIZE;
    const pbaBytes = (layout.msixVectors + 7) >> 3;
    need(at, tableBytes, 'the MSI-X table');
    need(at + tableBytes, pbaBytes, 'the MSI-X PBA');
    msixState = { table: buf.slice(at, at + tableBytes), pba: buf.slice(at + tableBytes, at + tableBytes + pbaBytes) };
    at += tableBytes + pbaBytes;
    refuseSubsection(buf, at, ['msix']);
  }
  refuseSubsection(buf, at, ['VFIOPCIDevice']);

  return { state: { versionId, config, irqState, msix: msixState }, byteLength: at };
}
