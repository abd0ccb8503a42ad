/**
 * vfio-ts: drive Linux VFIO devices from Node.js.
 *
 * Start with {@link VfioContainer.open} and {@link VfioContainer.openDevice};
 * pass `{ sys: new SimKernel() }` (from `vfio-ts/sim`) to run on the simulated kernel.
 */
export * from './errors.js';
export { concatBytes } from './bytes.js';

// The syscall boundary
export type { FdWatch, Mapping, Sys } from './sys/sys.js';
export { O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_RDWR, O_WRONLY, PROT_READ, PROT_WRITE, EFD_CLOEXEC, EFD_NONBLOCK, MAX_VIEW_BYTES } from './sys/sys.js';
export { LibcSys, libcSys, type LibcSysOptions, type WatchBackend } from './sys/libc.js';
export { Errno, errnoName, errnoMessage, type ErrnoName } from './sys/errno.js';
export * from './sys/mmio.js';

// VFIO objects
export * from './vfio/container.js';
export * from './vfio/group.js';
export * from './vfio/device.js';
export { Region, queryRegionInfo, type AccessWidth, type RegionLayoutMode } from './vfio/region.js';
export * from './vfio/remap-irq.js';
export * from './vfio/mapped-area.js';
export * from './vfio/irq.js';
export * from './vfio/eventfd.js';
export * from './vfio/discovery.js';
export type { DmaMemory, DmaMapping } from './vfio/dma-memory.js';
export type { DeviceInfo, IommuInfo, IovaRange, IrqInfo, RegionInfo, SparseArea, Type1MigrationCap, RawCap } from './vfio/uapi/info.js';
export type { IrqInfoExt, RemapBitmap } from './vfio/uapi/extensions.js';

// Dirty tracking
export { DirtyBitmap, kernelBitmapBytes, type DirtyRun, type DirtyRunCallback, type DirtyBitmapOptions, type WasmMemory } from './vfio/dirty-bitmap.js';
export * from './vfio/dirty-tracker.js';
export { RamLayout, type RamRange, type PageRun } from './vfio/ram-layout.js';
export { DmaLogging, checkLoggingRanges, maxLoggingRanges } from './vfio/dma-logging.js';
export { reduceLoggingRanges, type LoggingSection } from './vfio/dma-logging-ranges.js';
export { type1DirtyParams, checkType1Query, checkType1Span, planType1Queries, type Type1DirtyParams, type IovaSpan } from './vfio/type1-dirty.js';
export * from './vfio/iommufd.js';
export * from './vfio/iommufd-ioas.js';
export * from './vfio/iommufd-hwpt.js';
export * from './vfio/iommufd-device.js';

// PCI
export * from './pci/pci-device.js';
export * from './pci/config-access.js';
export * from './pci/pci-bar.js';
export * from './pci/msi-state.js';
export * from './pci/msix-state.js';
export * from './pci/msi-wiring.js';
export * from './pci/intx.js';
export * from './pci/emulated-registers.js';
export * from './pci/config-space.js';
export * from './pci/capabilities.js';
export * from './pci/bar.js';
export * from './pci/msi.js';
export * from './pci/vmstate.js';
export * from './pci/readonly-mask.js';
export * from './pci/interrupt-gate.js';
export * from './pci/qemu-config.js';

// Migration
export * from './migration/driver.js';
export * from './migration/v2-driver.js';
export * from './migration/v1-region.js';
export * from './migration/v1-driver.js';
export * from './migration/v1-state.js';
export * from './migration/hooks.js';
export * from './migration/group.js';
export * from './migration/config-state.js';
export * from './migration/byte-io.js';
export * from './migration/node-streams.js';
export * from './migration/return-path.js';
export * from './migration/runner.js';
export * from './migration/fsm.js';
export * from './migration/stream.js';
export * from './migration/sections.js';
export * from './migration/open-driver.js';
export * from './migration/saving-layout.js';
export * from './migration/guest-ram.js';
export * from './migration/ram-format.js';
export * from './migration/ram-parser.js';
export * from './migration/ram-save.js';
export * from './migration/ram-load.js';
