/**
 * Device discovery, as QEMU does it: from a sysfs path, a PCI address or an
 * mdev UUID to the device's canonical sysfs directory, its name (what
 * VFIO_GROUP_GET_DEVICE_FD wants) and its IOMMU group number.
 */
import { posix } from 'node:path';
import { DeviceNotFoundError, VfioSystemError } from '../errors.js';
import type { Sys } from '../sys/sys.js';

/** Where a device is. */
export interface DeviceLocation {
  /** The canonical sysfs directory (`realpath`). */
  readonly sysfsPath: string;
  /** The device name: the last component of {@link sysfsPath} (BDF or UUID). */
  readonly name: string;
  /** The IOMMU group number (`/dev/vfio/<groupId>`). */
  readonly groupId: number;
}

const PCI_ADDRESS = /^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/i;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The sysfs path a device spec stands for: a path is kept, `00:03.0` becomes `/sys/bus/pci/devices/0000:00:03.0`. */
export function sysfsPathOf(spec: string): string {
  if (spec.startsWith('/')) return spec;
  const pci = PCI_ADDRESS.exec(spec);
  if (pci) {
    const [, domain = '0000', bus = '', slot = '', fn = ''] = pci;
    return `/sys/bus/pci/devices/${`${domain}:${bus}:${slot}.${fn}`.toLowerCase()}`;
  }
  if (UUID.test(spec)) return `/sys/bus/mdev/devices/${spec.toLowerCase()}`;
  throw new DeviceNotFoundError(spec, 'not a sysfs path, PCI address (0000:00:03.0) or mdev UUID');
}

/**
 * Resolves `spec` (a sysfs path, a PCI address or an mdev UUID) to the
 * device's sysfs directory, name and IOMMU group.
 * @throws DeviceNotFoundError when the device or its group does not exist
 */
export function locateDevice(sys: Sys, spec: string): DeviceLocation {
  const path = sysfsPathOf(spec);
  let sysfsPath: string;
  try {
    sysfsPath = sys.realpath(path);
  } catch (e) {
    throw new DeviceNotFoundError(spec, `${path} does not exist`, { cause: e });
  }
  let link: string;
  try {
    link = sys.readlink(`${sysfsPath}/iommu_group`);
  } catch (e) {
    if (e instanceof VfioSystemError && e.code !== 'ENOENT') throw e;
    throw new DeviceNotFoundError(spec, 'has no IOMMU group (is the IOMMU enabled and the device bound to a VFIO driver?)', { cause: e });
  }
  const groupId = Number(posix.basename(link));
  if (!Number.isInteger(groupId) || groupId < 0) throw new DeviceNotFoundError(spec, `iommu_group link ${link} does not name a group number`);
  return { sysfsPath, name: posix.basename(sysfsPath), groupId };
}
