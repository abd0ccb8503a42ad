/**
 * The device config state a migration carries (QEMU's `DEV_CONFIG_STATE` in
 * the non-iterable `save_state`, reference §5.8), as a pluggable per-device
 * provider, and the providers vfio-ts ships:
 *
 * - {@link vfioPciConfigState}: QEMU's `vfio_pci_save_config` and
 *   `vfio_pci_load_config` for a {@link VfioPciDevice}, byte for byte: its
 *   emulated config image, irq_state, the MSI-X table and PBA; loading writes
 *   the command register and wires MSI/MSI-X behind the device's
 *   interrupt gate;
 * - {@link pciConfigState}: a minimal, QEMU-shaped `VFIOPCIDevice` vmstate for
 *   a PCI device driven without `VfioPciDevice` (mtty in the examples): the
 *   kernel's config image, no MSI-X, no interrupt wiring;
 * - {@link noConfigState}: nothing between the tags, as QEMU sends for a
 *   device without a `vfio_save_config` op.
 *
 * The destination loads the config as a step of its own, after every data byte
 * is in the device and before the VM starts (`VfioMigration.loadConfig`); in
 * the opt-in config-before-data mode it loads each config as it arrives, with
 * its interrupts held, and enables them at that step.
 */
import { ConfigSpaceError } from '../errors.js';
import type { LoadConfigOptions, VfioPciDevice } from '../pci/pci-device.js';
import { checkReadOnlyBits } from '../pci/readonly-mask.js';
import { PCI_COMMAND, PCI_STD_NUM_BARS } from '../pci/regs.js';
import {
  PCI_DEVICE_VMSTATE_VERSION,
  PCI_NUM_PINS,
  configStateLayoutOf,
  configStateSize,
  decodeConfigState,
  encodeConfigState,
  qemuConfigImageSize,
} from '../pci/vmstate.js';
import type { VfioDevice } from '../vfio/device.js';
import { VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX } from '../vfio/uapi/constants.js';

/** A device's config state for migration: what `vfio_save_config` writes and `vfio_load_config` reads. */
export interface ConfigStateProvider {
  /**
   * Its exact size on the wire. QEMU's vmstate has no length prefix, so the
   * destination's parser must know where it ends.
   */
  readonly size: number;
  /**
   * The bytes to send, exactly {@link size} of them: taken when the source
   * device is stopped (and, in the config-before-data mode, during precopy too).
   */
  save(): Uint8Array | Promise<Uint8Array>;
  /**
   * Applies received bytes to the destination device, still RESUMING: after
   * every data byte by default; in the config-before-data mode before the
   * data, with `{ interrupts: 'hold' }`.
   */
  load(bytes: Uint8Array, options?: LoadConfigOptions): void | Promise<void>;
  /** Ends the `'hold'` of the last load: the config-before-data mode's final step. */
  enableInterrupts?(): void;
  /** Throws when the device must not run yet (its interrupts are still held back); called before the VM starts. */
  checkStart?(): void;
}

/** An empty config state: `DEV_CONFIG_STATE, END_OF_STATE` with nothing between. */
export const noConfigState: ConfigStateProvider = {
  size: 0,
  save: () => new Uint8Array(0),
  load: () => undefined,
};

/**
 * QEMU's config state of a {@link VfioPciDevice}: its `saveConfig` and
 * `loadConfig` (see there), the hold of the config-before-data mode, and a
 * start check that refuses while the device's interrupt gate is closed.
 */
export function vfioPciConfigState(device: VfioPciDevice): ConfigStateProvider {
  return {
    size: device.configStateSize,
    save: () => device.saveConfig(),
    load: (bytes, options) => device.loadConfig(bytes, options),
    enableInterrupts: () => device.enableInterrupts(),
    checkStart: () => device.checkCanStart(),
  };
}

/**
 * A minimal `VFIOPCIDevice` config vmstate for PCI devices without MSI-X
 * that the VMM does not drive as a `VfioPciDevice` (mtty in the examples),
 * built on `lib/pci/vmstate.ts`:
 *
 * - save: the device's CONFIG region, zero-padded to the image size QEMU would
 *   use (`qemuConfigImageSize`: 4096 bytes for mtty's 255-byte region), INTx
 *   levels all 0, PCIDevice version 2. QEMU sends its emulated view of the
 *   config, which differs from the device's in the bits QEMU virtualises (BAR
 *   addresses, for one); those are guest-writable, so either loads on either
 *   side. {@link vfioPciConfigState} sends QEMU's view itself.
 * - load: QEMU's checks (`get_pci_config_device`: read-only bits must match the
 *   device's, BARs sized from their regions), then what `vfio_pci_load_config`
 *   writes to the device itself: the command register. MSI enabling needs
 *   eventfds the VMM owns, so it is left to the full PCI provider.
 *
 * @throws ConfigSpaceError when the device has MSI-X (its table lives in QEMU, not in config space)
 */
export function pciConfigState(device: VfioDevice): ConfigStateProvider {
  const config = device.region(VFIO_PCI_CONFIG_REGION_INDEX);
  const imageSize = qemuConfigImageSize(config.size);
  const image = (): Uint8Array => {
    const out = new Uint8Array(imageSize);
    out.set(config.readBytes(0, Math.min(config.size, imageSize)));
    return out;
  };
  const layout = configStateLayoutOf(image());
  if (layout.msixVectors !== 0) {
    throw new ConfigSpaceError('pciConfigState', `${device.name} has MSI-X (${layout.msixVectors} vectors): its table is not in config space; use the full PCI provider`);
  }
  const barSizes: bigint[] = [];
  for (let i = 0; i < PCI_STD_NUM_BARS; i++) barSizes.push(BigInt(device.region(VFIO_PCI_BAR0_REGION_INDEX + i).size));
  return {
    size: configStateSize(layout),
    save: () => encodeConfigState({ versionId: PCI_DEVICE_VMSTATE_VERSION, config: image(), irqState: new Array<number>(PCI_NUM_PINS).fill(0), msix: undefined }),
    load: (bytes) => {
      const { state } = decodeConfigState(bytes, layout);
      checkReadOnlyBits(state.config, image(), { barSizes, subsystemIds: false });
      config.write16(PCI_COMMAND, new DataView(state.config.buffer, state.config.byteOffset).getUint16(PCI_COMMAND, true));
    },
  };
}
