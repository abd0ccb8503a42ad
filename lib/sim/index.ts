/** The simulated kernel: a `Sys` that behaves like Linux 6.12 VFIO, and its devices. */
export { SimKernel, INTEL_IOMMU_DOMAIN, type MdevPlacement, type PciPlacement, type SimKernelOptions, type SimDmaTranslate } from './kernel.js';
export { SimSyscalls, type SyscallRecord } from './syscalls.js';
export { FaultInjector, type FaultRule, type SimSyscall, type CallSite } from './faults.js';
export { SimVfioDevice, checkFeature, LOG_MAX_RANGES, type SimLogOps, type SimMigrationOps, type SimIovaRange } from './vfio-device.js';
export { SimGroup } from './group.js';
export { SimType1, DIRTY_BITMAP_SIZE_MAX, DMA_ENTRY_LIMIT, type SimIommuDomain, type SimType1Group } from './type1.js';
export { SimIommufd, type SimIommufdDomain } from './iommufd.js';
export { SimEventFd } from './eventfd.js';
export { SimFile, type FileOps, type IoctlArg, type SimMmap } from './file.js';
export { SimMemory } from './memory.js';
export { SimFs } from './sysfs.js';
export { KernelErrno, fail, userBuf } from './errno.js';
export { nextArc } from './mig-next-arc.js';
export type { SimArcFault } from './arc-fault.js';

// Devices
export { SimMtty, addMtty, MTTY_PARENT, type MttyType } from './mtty.js';
export type { MttyArcFault, MttyFaultPlan } from './mtty-migration.js';
export type { SerialPortState } from './uart16550.js';
export { SimBulkDevice, addBulkDevice, BULK_PARENT, type BulkDeviceOptions } from './bulk-device.js';
export type { BulkFaultPlan } from './bulk-migration.js';
export { bulkStreamSize } from './bulk-stream.js';
export { SimDmaDevice, addDmaDevice, type DmaMode, type DmaDeviceOptions, type DmaWindow } from './dma-device.js';
export { SimV1Device, addV1Device, V1_MIGRATION_REGION_INDEX, type SimV1DeviceOptions } from './v1-device.js';
export type { V1FaultPlan, V1StateWriteFault, V1Transaction } from './v1-migration-region.js';
export { SimVfioPciDevice, addVfioPci, type SimDeviceRegion, type SimVfioPciOptions, type SimPciStateImage } from './vfio-pci.js';
export { SimTrapBarDevice, addTrapBarDevice, TRAP_BAR_PARENT, TRAP_BAR_REMAP_IRQ_INDEX, type TrapBarDeviceOptions } from './trap-bar-device.js';
export { SimRemapIrq, type SimRemapIrqHooks } from './remap-irq.js';
export { SimMappingTracker } from './mapping-tracker.js';
export { answerRegionInfo, regionInfoRequest, type SimRegionDescription } from './region-info-reply.js';
export {
  SimPciFunction,
  type SimPciFunctionOptions,
  type SimBar,
  type SimBarSpec,
  type SimPciIrqSink,
  type SimDmaFault,
  type SimPciSavedState,
} from './pci-function.js';
export { SimConfigBuilder, type SimPciHeader, type SimBarLayout, type SimConfigSpace } from './pci-config-builder.js';
export * from './edu.js';
export * from './pci-testdev.js';
