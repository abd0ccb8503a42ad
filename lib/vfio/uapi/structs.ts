/**
 * Layouts of the VFIO structs (x86_64 / LP64, Linux 6.12). Field names are
 * the C member designators; `test/uapi-layout.test.ts` checks every `sizeof`
 * and `offsetof` here against `<linux/vfio.h>` with gcc.
 */
import { bytes, s32, struct, u16, u32, u64, u8, type StructLayout } from './layout.js';

export const vfio_info_cap_header = struct('vfio_info_cap_header', 8, { id: u16(0), version: u16(2), next: u32(4) });

export const vfio_group_status = struct('vfio_group_status', 8, { argsz: u32(0), flags: u32(4) });

export const vfio_device_info = struct('vfio_device_info', 24, {
  argsz: u32(0),
  flags: u32(4),
  num_regions: u32(8),
  num_irqs: u32(12),
  cap_offset: u32(16),
  pad: u32(20),
});

export const vfio_device_info_cap_pci_atomic_comp = struct('vfio_device_info_cap_pci_atomic_comp', 16, {
  header: bytes(0),
  flags: u32(8),
  reserved: u32(12),
});

export const vfio_region_info = struct('vfio_region_info', 32, {
  argsz: u32(0),
  flags: u32(4),
  index: u32(8),
  cap_offset: u32(12),
  size: u64(16),
  offset: u64(24),
});

export const vfio_region_sparse_mmap_area = struct('vfio_region_sparse_mmap_area', 16, { offset: u64(0), size: u64(8) });

export const vfio_region_info_cap_sparse_mmap = struct('vfio_region_info_cap_sparse_mmap', 16, {
  header: bytes(0),
  nr_areas: u32(8),
  reserved: u32(12),
  areas: bytes(16),
});

export const vfio_region_info_cap_type = struct('vfio_region_info_cap_type', 16, {
  header: bytes(0),
  type: u32(8),
  subtype: u32(12),
});

/** The 32-byte header at offset 0 of a v1 migration region. */
export const vfio_device_migration_info = struct('vfio_device_migration_info', 32, {
  device_state: u32(0),
  reserved: u32(4),
  pending_bytes: u64(8),
  data_offset: u64(16),
  data_size: u64(24),
});

export const vfio_irq_info = struct('vfio_irq_info', 16, { argsz: u32(0), flags: u32(4), index: u32(8), count: u32(12) });

export const vfio_irq_set = struct('vfio_irq_set', 20, {
  argsz: u32(0),
  flags: u32(4),
  index: u32(8),
  start: u32(12),
  count: u32(16),
  data: bytes(20),
});

export const vfio_pci_dependent_device = struct('vfio_pci_dependent_device', 8, {
  group_id: u32(0),
  devid: u32(0),
  segment: u16(4),
  bus: u8(6),
  devfn: u8(7),
});

export const vfio_pci_hot_reset_info = struct('vfio_pci_hot_reset_info', 12, {
  argsz: u32(0),
  flags: u32(4),
  count: u32(8),
  devices: bytes(12),
});

export const vfio_pci_hot_reset = struct('vfio_pci_hot_reset', 12, {
  argsz: u32(0),
  flags: u32(4),
  count: u32(8),
  group_fds: bytes(12),
});

/** VFIO_DEVICE_QUERY_GFX_PLANE (mdev vGPUs); `region_index` and `dmabuf_id` share a union. */
export const vfio_device_gfx_plane_info = struct('vfio_device_gfx_plane_info', 64, {
  argsz: u32(0),
  flags: u32(4),
  drm_plane_type: u32(8),
  drm_format: u32(12),
  drm_format_mod: u64(16),
  width: u32(24),
  height: u32(28),
  stride: u32(32),
  size: u32(36),
  x_pos: u32(40),
  y_pos: u32(44),
  x_hot: u32(48),
  y_hot: u32(52),
  region_index: u32(56),
  dmabuf_id: u32(56),
  reserved: u32(60),
});

export const vfio_device_ioeventfd = struct('vfio_device_ioeventfd', 32, {
  argsz: u32(0),
  flags: u32(4),
  offset: u64(8),
  data: u64(16),
  fd: s32(24),
  reserved: u32(28),
});

export const vfio_device_feature = struct('vfio_device_feature', 8, { argsz: u32(0), flags: u32(4), data: bytes(8) });

export const vfio_device_bind_iommufd = struct('vfio_device_bind_iommufd', 16, {
  argsz: u32(0),
  flags: u32(4),
  iommufd: s32(8),
  out_devid: u32(12),
});

export const vfio_device_attach_iommufd_pt = struct('vfio_device_attach_iommufd_pt', 12, {
  argsz: u32(0),
  flags: u32(4),
  pt_id: u32(8),
});

export const vfio_device_detach_iommufd_pt = struct('vfio_device_detach_iommufd_pt', 8, { argsz: u32(0), flags: u32(4) });

// Device feature payloads (they follow the 8-byte vfio_device_feature header).
export const vfio_device_feature_migration = struct('vfio_device_feature_migration', 8, { flags: u64(0) });
export const vfio_device_feature_mig_state = struct('vfio_device_feature_mig_state', 8, { device_state: u32(0), data_fd: s32(4) });
export const vfio_device_feature_mig_data_size = struct('vfio_device_feature_mig_data_size', 8, { stop_copy_length: u64(0) });
export const vfio_device_feature_dma_logging_control = struct('vfio_device_feature_dma_logging_control', 24, {
  page_size: u64(0),
  num_ranges: u32(8),
  __reserved: u32(12),
  ranges: u64(16),
});
export const vfio_device_feature_dma_logging_range = struct('vfio_device_feature_dma_logging_range', 16, { iova: u64(0), length: u64(8) });
export const vfio_device_feature_dma_logging_report = struct('vfio_device_feature_dma_logging_report', 32, {
  iova: u64(0),
  length: u64(8),
  page_size: u64(16),
  bitmap: u64(24),
});
export const vfio_device_low_power_entry_with_wakeup = struct('vfio_device_low_power_entry_with_wakeup', 8, {
  wakeup_eventfd: s32(0),
  reserved: u32(4),
});
export const vfio_device_feature_bus_master = struct('vfio_device_feature_bus_master', 4, { op: u32(0) });

export const vfio_precopy_info = struct('vfio_precopy_info', 24, {
  argsz: u32(0),
  flags: u32(4),
  initial_bytes: u64(8),
  dirty_bytes: u64(16),
});

// Type1 IOMMU
export const vfio_iommu_type1_info = struct('vfio_iommu_type1_info', 24, {
  argsz: u32(0),
  flags: u32(4),
  iova_pgsizes: u64(8),
  cap_offset: u32(16),
  pad: u32(20),
});
export const vfio_iova_range = struct('vfio_iova_range', 16, { start: u64(0), end: u64(8) });
export const vfio_iommu_type1_info_cap_iova_range = struct('vfio_iommu_type1_info_cap_iova_range', 16, {
  header: bytes(0),
  nr_iovas: u32(8),
  reserved: u32(12),
  iova_ranges: bytes(16),
});
export const vfio_iommu_type1_info_cap_migration = struct('vfio_iommu_type1_info_cap_migration', 32, {
  header: bytes(0),
  flags: u32(8),
  pgsize_bitmap: u64(16),
  max_dirty_bitmap_size: u64(24),
});
export const vfio_iommu_type1_info_dma_avail = struct('vfio_iommu_type1_info_dma_avail', 12, { header: bytes(0), avail: u32(8) });
export const vfio_iommu_type1_dma_map = struct('vfio_iommu_type1_dma_map', 32, {
  argsz: u32(0),
  flags: u32(4),
  vaddr: u64(8),
  iova: u64(16),
  size: u64(24),
});
export const vfio_bitmap = struct('vfio_bitmap', 24, { pgsize: u64(0), size: u64(8), data: u64(16) });
export const vfio_iommu_type1_dma_unmap = struct('vfio_iommu_type1_dma_unmap', 24, {
  argsz: u32(0),
  flags: u32(4),
  iova: u64(8),
  size: u64(16),
  data: bytes(24),
});
export const vfio_iommu_type1_dirty_bitmap = struct('vfio_iommu_type1_dirty_bitmap', 8, { argsz: u32(0), flags: u32(4), data: bytes(8) });
export const vfio_iommu_type1_dirty_bitmap_get = struct('vfio_iommu_type1_dirty_bitmap_get', 40, {
  iova: u64(0),
  size: u64(8),
  bitmap: bytes(16),
  'bitmap.pgsize': u64(16),
  'bitmap.size': u64(24),
  'bitmap.data': u64(32),
});

/** Every VFIO struct layout, for the layout test. */
export const VFIO_LAYOUTS: readonly StructLayout[] = [
  vfio_info_cap_header,
  vfio_group_status,
  vfio_device_info,
  vfio_device_info_cap_pci_atomic_comp,
  vfio_region_info,
  vfio_region_sparse_mmap_area,
  vfio_region_info_cap_sparse_mmap,
  vfio_region_info_cap_type,
  vfio_device_migration_info,
  vfio_irq_info,
  vfio_irq_set,
  vfio_pci_dependent_device,
  vfio_pci_hot_reset_info,
  vfio_pci_hot_reset,
  vfio_device_gfx_plane_info,
  vfio_device_ioeventfd,
  vfio_device_feature,
  vfio_device_bind_iommufd,
  vfio_device_attach_iommufd_pt,
  vfio_device_detach_iommufd_pt,
  vfio_device_feature_migration,
  vfio_device_feature_mig_state,
  vfio_device_feature_mig_data_size,
  vfio_device_feature_dma_logging_control,
  vfio_device_feature_dma_logging_range,
  vfio_device_feature_dma_logging_report,
  vfio_device_low_power_entry_with_wakeup,
  vfio_device_feature_bus_master,
  vfio_precopy_info,
  vfio_iommu_type1_info,
  vfio_iova_range,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_cap_migration,
  vfio_iommu_type1_info_dma_avail,
  vfio_iommu_type1_dma_map,
  vfio_bitmap,
  vfio_iommu_type1_dma_unmap,
  vfio_iommu_type1_dirty_bitmap,
  vfio_iommu_type1_dirty_bitmap_get,
];
