/**
 * The simulated `/dev/vfio/vfio` container (`drivers/vfio/container.c`):
 * API version, extension checks, SET_IOMMU (only the type1 driver is
 * "loaded", as on Debian's 6.12), and pass-through of the IOMMU ioctls.
 */
import { VFIO_API_VERSION } from '../vfio/uapi/constants.js';
import { VFIO_CHECK_EXTENSION, VFIO_GET_API_VERSION, VFIO_SET_IOMMU } from '../vfio/uapi/ioctls.js';
import { KernelErrno, fail } from './errno.js';
import type { FileOps, IoctlArg } from './file.js';
import type { SimMemory } from './memory.js';
import { SimType1, type SimType1Group } from './type1.js';

export class SimContainer implements FileOps {
  readonly kind = 'container';
  readonly label = '/dev/vfio/vfio';
  /** The IOMMU driver instance after SET_IOMMU. */
  iommu: SimType1 | null = null;
  readonly groups: SimType1Group[] = [];

  constructor(private readonly memory: SimMemory) {}

  ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_GET_API_VERSION:
        return VFIO_API_VERSION;
      case VFIO_CHECK_EXTENSION:
        // A pointer where the kernel expects a value is just an unknown extension id.
        return SimType1.checkExtension(this.iommu, typeof arg === 'number' ? arg : -1);
      case VFIO_SET_IOMMU:
        return this.#setIommu(typeof arg === 'number' ? arg : -1);
      default:
        if (this.iommu === null) fail('EINVAL');
        return this.iommu.ioctl(request, arg);
    }
  }

  /** `vfio_container_attach_group` (the group side checks were done by the caller). */
  attachGroup(group: SimType1Group): void {
    this.iommu?.attachGroup(group);
    this.groups.push(group);
  }

  /** `vfio_group_detach_container`: the last group deprivileges the container. */
  detachGroup(group: SimType1Group): void {
    this.iommu?.detachGroup(group.id);
    const i = this.groups.indexOf(group);
    if (i >= 0) this.groups.splice(i, 1);
    if (this.groups.length === 0) this.iommu = null;
  }

  /** `vfio_ioctl_set_iommu`, with type1 as the only registered driver. */
  #setIommu(type: number): number {
    if (this.groups.length === 0 || this.iommu !== null) fail('EINVAL');
    if (SimType1.checkExtension(null, type) <= 0) fail('ENODEV');
    // vfio_iommu_type1_open rejects extension ids that are not IOMMU types (e.g. VFIO_UNMAP_ALL).
    const iommu = new SimType1(type, this.memory);
    try {
      for (const g of this.groups) iommu.attachGroup(g);
    } catch (e) {
      if (e instanceof KernelErrno) fail('EINVAL');
      throw e;
    }
    this.iommu = iommu;
    return 0;
  }
}
