/** The simulated kernel: a `Sys` that behaves like Linux 6.12 VFIO, and its devices. */
export { SimKernel, INTEL_IOMMU_DOMAIN, type MdevPlacement, type PciPlacement } from './kernel.js';
export { SimSyscalls, type SyscallRecord } from './syscalls.js';
export { FaultInjector, type FaultRule, type SimSyscall } from './faults.js';
export { SimVfioDevice, type SimLogOps, type SimMigrationOps, type SimIovaRange } from './vfio-device.js';
export { SimGroup } from './group.js';
export { SimType1, type SimIommuDomain } from './type1.js';
export { SimEventFd } from './eventfd.js';
export { SimFile, type FileOps, type IoctlArg, type SimMmap } from './file.js';
export { KernelErrno, fail } from './errno.js';
export { SimMtty, addMtty, MTTY_PARENT, type MttyType, type MttyFaultPlan, type MttyArcFault, type SerialPortState } from './mtty.js';
