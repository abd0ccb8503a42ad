/**
 * ioctl request numbers. VFIO and iommufd define every request with
 * `_IO(';', nr)`: no direction or size bits, so the value is `0x3B00 + nr`.
 * Numbers are reused across fd kinds (0x3B70 is IOMMU_GET_INFO on a container
 * but GET_PCI_HOT_RESET_INFO on a device), so names are looked up per kind.
 */
import { VFIO_BASE, VFIO_TYPE } from './constants.js';

/** `_IO(type, nr)` as the kernel computes it. */
export const _IO = (type: number, nr: number): number => ((type << 8) | nr) >>> 0;
const vfio = (n: number): number => _IO(VFIO_TYPE, VFIO_BASE + n);

// container fd (/dev/vfio/vfio)
export const VFIO_GET_API_VERSION = vfio(0);
export const VFIO_CHECK_EXTENSION = vfio(1);
export const VFIO_SET_IOMMU = vfio(2);
// group fd
export const VFIO_GROUP_GET_STATUS = vfio(3);
export const VFIO_GROUP_SET_CONTAINER = vfio(4);
export const VFIO_GROUP_UNSET_CONTAINER = vfio(5);
export const VFIO_GROUP_GET_DEVICE_FD = vfio(6);
// device fd
export const VFIO_DEVICE_GET_INFO = vfio(7);
export const VFIO_DEVICE_GET_REGION_INFO = vfio(8);
export const VFIO_DEVICE_GET_IRQ_INFO = vfio(9);
export const VFIO_DEVICE_SET_IRQS = vfio(10);
export const VFIO_DEVICE_RESET = vfio(11);
export const VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = vfio(12);
export const VFIO_DEVICE_PCI_HOT_RESET = vfio(13);
export const VFIO_DEVICE_QUERY_GFX_PLANE = vfio(14);
export const VFIO_DEVICE_GET_GFX_DMABUF = vfio(15);
export const VFIO_DEVICE_IOEVENTFD = vfio(16);
export const VFIO_DEVICE_FEATURE = vfio(17);
export const VFIO_DEVICE_BIND_IOMMUFD = vfio(18);
export const VFIO_DEVICE_ATTACH_IOMMUFD_PT = vfio(19);
export const VFIO_DEVICE_DETACH_IOMMUFD_PT = vfio(20);
// migration data fd
export const VFIO_MIG_GET_PRECOPY_INFO = vfio(21);
// type1 container fd, after VFIO_SET_IOMMU
export const VFIO_IOMMU_GET_INFO = vfio(12);
export const VFIO_IOMMU_MAP_DMA = vfio(13);
export const VFIO_IOMMU_UNMAP_DMA = vfio(14);
export const VFIO_IOMMU_ENABLE = vfio(15);
export const VFIO_IOMMU_DISABLE = vfio(16);
export const VFIO_IOMMU_DIRTY_PAGES = vfio(17);

/** The kinds of fd an ioctl can be issued on. */
export type FdKind = 'container' | 'group' | 'device' | 'migration' | 'iommufd';

const NAMES: Record<Exclude<FdKind, 'iommufd'>, Record<number, string>> = {
  container: {
    [VFIO_GET_API_VERSION]: 'VFIO_GET_API_VERSION',
    [VFIO_CHECK_EXTENSION]: 'VFIO_CHECK_EXTENSION',
    [VFIO_SET_IOMMU]: 'VFIO_SET_IOMMU',
    [VFIO_IOMMU_GET_INFO]: 'VFIO_IOMMU_GET_INFO',
    [VFIO_IOMMU_MAP_DMA]: 'VFIO_IOMMU_MAP_DMA',
    [VFIO_IOMMU_UNMAP_DMA]: 'VFIO_IOMMU_UNMAP_DMA',
    [VFIO_IOMMU_ENABLE]: 'VFIO_IOMMU_ENABLE',
    [VFIO_IOMMU_DISABLE]: 'VFIO_IOMMU_DISABLE',
    [VFIO_IOMMU_DIRTY_PAGES]: 'VFIO_IOMMU_DIRTY_PAGES',
  },
  group: {
    [VFIO_GROUP_GET_STATUS]: 'VFIO_GROUP_GET_STATUS',
    [VFIO_GROUP_SET_CONTAINER]: 'VFIO_GROUP_SET_CONTAINER',
    [VFIO_GROUP_UNSET_CONTAINER]: 'VFIO_GROUP_UNSET_CONTAINER',
    [VFIO_GROUP_GET_DEVICE_FD]: 'VFIO_GROUP_GET_DEVICE_FD',
  },
  device: {
    [VFIO_DEVICE_GET_INFO]: 'VFIO_DEVICE_GET_INFO',
    [VFIO_DEVICE_GET_REGION_INFO]: 'VFIO_DEVICE_GET_REGION_INFO',
    [VFIO_DEVICE_GET_IRQ_INFO]: 'VFIO_DEVICE_GET_IRQ_INFO',
    [VFIO_DEVICE_SET_IRQS]: 'VFIO_DEVICE_SET_IRQS',
    [VFIO_DEVICE_RESET]: 'VFIO_DEVICE_RESET',
    [VFIO_DEVICE_GET_PCI_HOT_RESET_INFO]: 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO',
    [VFIO_DEVICE_PCI_HOT_RESET]: 'VFIO_DEVICE_PCI_HOT_RESET',
    [VFIO_DEVICE_QUERY_GFX_PLANE]: 'VFIO_DEVICE_QUERY_GFX_PLANE',
    [VFIO_DEVICE_GET_GFX_DMABUF]: 'VFIO_DEVICE_GET_GFX_DMABUF',
    [VFIO_DEVICE_IOEVENTFD]: 'VFIO_DEVICE_IOEVENTFD',
    [VFIO_DEVICE_FEATURE]: 'VFIO_DEVICE_FEATURE',
    [VFIO_DEVICE_BIND_IOMMUFD]: 'VFIO_DEVICE_BIND_IOMMUFD',
    [VFIO_DEVICE_ATTACH_IOMMUFD_PT]: 'VFIO_DEVICE_ATTACH_IOMMUFD_PT',
    [VFIO_DEVICE_DETACH_IOMMUFD_PT]: 'VFIO_DEVICE_DETACH_IOMMUFD_PT',
  },
  migration: {
    [VFIO_MIG_GET_PRECOPY_INFO]: 'VFIO_MIG_GET_PRECOPY_INFO',
  },
};

const extraNames = new Map<FdKind, Record<number, string>>();

/** Lets another uAPI module (iommufd) register its request names. */
export function registerIoctlNames(kind: FdKind, names: Record<number, string>): void {
  extraNames.set(kind, { ...extraNames.get(kind), ...names });
}

/** The C name of `request` on an fd of `kind`, or its hex value when unknown. */
export function ioctlName(kind: FdKind, request: number): string {
  const table = kind === 'iommufd' ? extraNames.get(kind) : NAMES[kind];
  return table?.[request] ?? `ioctl 0x${request.toString(16)}`;
}
