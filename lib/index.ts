/**
 * vfio-ts: drive Linux VFIO devices from Node.js.
 *
 * Start with {@link VfioContainer.open} and {@link VfioContainer.openDevice};
 * pass `{ sys: new SimKernel() }` (from `vfio-ts/sim`) to run on the simulated kernel.
 */
export * from './errors.js';
export type { FdWatch, Mapping, Sys } from './sys/sys.js';
export { LibcSys, libcSys } from './sys/libc.js';
export { VfioContainer, type ContainerOptions, type DmaMapOptions, type DmaMapping, type DmaMemory } from './vfio/container.js';
export { VfioGroup, type GroupStatus } from './vfio/group.js';
export { VfioDevice } from './vfio/device.js';
export { Region, type AccessWidth } from './vfio/region.js';
export { MappedArea } from './vfio/mapped-area.js';
export { Irq, type IrqEvents, type IrqSignal } from './vfio/irq.js';
export { EventFd } from './vfio/eventfd.js';
export { locateDevice, sysfsPathOf, type DeviceLocation } from './vfio/discovery.js';
export type { DeviceInfo, IommuInfo, IovaRange, IrqInfo, RegionInfo, SparseArea, Type1MigrationCap } from './vfio/uapi/info.js';
