/**
 * The device config state a migration carries after all device data (QEMU's
 * `DEV_CONFIG_STATE` in the non-iterable `save_state`, reference §5.8), as a
 * pluggable per-device provider, and the providers vfio-ts ships:
 *
 * - {@link noConfigState}: nothing between the tags, as QEMU sends for a
 *   device without a `vfio_save_config` op;
 * - {@link pciConfigState}: a minimal, QEMU-shaped `VFIOPCIDevice` vmstate for
 *   PCI mdevs like mtty (no MSI-X, no interrupt wiring). The full PCI provider,
 *   which restores MSI/MSI-X through `SET_IRQS`, belongs to the PCI layer.
 *
 * The destination loads the config as a step of its own, after every data byte
 * is in the device and before the VM starts (`VfioMigration.loadConfig`), so
 * an interrupt-controller gate can hold it back.
 */
import { ConfigSpaceError } from '../errors.js';
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
  /** The bytes to send, exactly {@link size} of them, taken when the source device is stopped. */
  save(): Uint8Array | Promise<Uint8Array>;
  /** Applies received bytes to the destination device (still RESUMING, every data byte already written). */
  load(bytes: Uint8Array): void | Promise<void>;
}

/** An empty config state: `DEV_CONFIG_STATE, END_OF_STATE` with nothing between. */
export const noConfigState: ConfigStateProvider = {
  size: 0,
  save: () => new Uint8Array(0),
  load: () => undefined,
};

/**
 * A minimal `VFIOPCIDevice` config vmstate for PCI devices without MSI-X
 * (mtty and the simulated devices), built on `lib/pci/vmstate.ts`:
 *
 * - save: the device's CONFIG region, zero-padded to the image size QEMU would
 *   use (`qemuConfigImageSize`: 4096 bytes for mtty's 255-byte region), INTx
 *   levels all 0, PCIDevice version 2. QEMU sends its emulated view of the
 *   config, which differs from the device's in the bits QEMU virtualises (BAR
 *   addresses, for one); those are guest-writable, so either loads on either side.
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
      checkReadOnlyBits(state.config, image(), { barSizes });
      config.write16(PCI_COMMAND, new DataView(state.config.buffer, state.config.byteOffset).getUint16(PCI_COMMAND, true));
    },
  };
}
