/**
 * Picks the migration protocol a device offers, as QEMU did while both
 * existed: the v2 feature (VFIO_DEVICE_FEATURE_MIGRATION) first, the v1
 * migration region otherwise.
 */
import type { VfioDevice } from '../vfio/device.js';
import type { MigrationDriver } from './driver.js';
import { MigrationRegionDriver } from './v1-driver.js';
import type { MigrationRegionOptions } from './v1-region.js';
import { MigrationFile } from './v2-driver.js';

/**
 * The driver for `device`: {@link MigrationFile} (v2) when the device
 * reports migration flags, else {@link MigrationRegionDriver} (v1).
 * @throws MigrationError `unsupported` when it offers neither
 */
export function openMigrationDriver(device: VfioDevice, v1: MigrationRegionOptions = {}): MigrationDriver {
  return device.migrationFlags() !== 0 ? MigrationFile.open(device) : MigrationRegionDriver.open(device, v1);
}
