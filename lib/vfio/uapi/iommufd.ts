/**
 * iommufd (`/dev/iommu`) uAPI: request numbers, constants and struct layouts
 * as in `<linux/iommufd.h>` (Linux 6.12). Every struct starts with `size`,
 * which plays the part of VFIO's `argsz`.
 */
import { registerIoctlNames, _IO } from './ioctls.js';
import { bytes, struct, u16, u32, u64, u8, type StructLayout } from './layout.js';

export const IOMMUFD_TYPE = 0x3b;
export const IOMMUFD_CMD_BASE = 0x80;

export const IOMMU_DESTROY = _IO(IOMMUFD_TYPE, 0x80);
export const IOMMU_IOAS_ALLOC = _IO(IOMMUFD_TYPE, 0x81);
export const IOMMU_IOAS_ALLOW_IOVAS = _IO(IOMMUFD_TYPE, 0x82);
export const IOMMU_IOAS_COPY = _IO(IOMMUFD_TYPE, 0x83);
export const IOMMU_IOAS_IOVA_RANGES = _IO(IOMMUFD_TYPE, 0x84);
export const IOMMU_IOAS_MAP = _IO(IOMMUFD_TYPE, 0x85);
export const IOMMU_IOAS_UNMAP = _IO(IOMMUFD_TYPE, 0x86);
export const IOMMU_OPTION = _IO(IOMMUFD_TYPE, 0x87);
export const IOMMU_VFIO_IOAS = _IO(IOMMUFD_TYPE, 0x88);
export const IOMMU_HWPT_ALLOC = _IO(IOMMUFD_TYPE, 0x89);
export const IOMMU_GET_HW_INFO = _IO(IOMMUFD_TYPE, 0x8a);
export const IOMMU_HWPT_SET_DIRTY_TRACKING = _IO(IOMMUFD_TYPE, 0x8b);
export const IOMMU_HWPT_GET_DIRTY_BITMAP = _IO(IOMMUFD_TYPE, 0x8c);
export const IOMMU_HWPT_INVALIDATE = _IO(IOMMUFD_TYPE, 0x8d);
export const IOMMU_FAULT_QUEUE_ALLOC = _IO(IOMMUFD_TYPE, 0x8e);

registerIoctlNames('iommufd', {
  [IOMMU_DESTROY]: 'IOMMU_DESTROY',
  [IOMMU_IOAS_ALLOC]: 'IOMMU_IOAS_ALLOC',
  [IOMMU_IOAS_ALLOW_IOVAS]: 'IOMMU_IOAS_ALLOW_IOVAS',
  [IOMMU_IOAS_COPY]: 'IOMMU_IOAS_COPY',
  [IOMMU_IOAS_IOVA_RANGES]: 'IOMMU_IOAS_IOVA_RANGES',
  [IOMMU_IOAS_MAP]: 'IOMMU_IOAS_MAP',
  [IOMMU_IOAS_UNMAP]: 'IOMMU_IOAS_UNMAP',
  [IOMMU_OPTION]: 'IOMMU_OPTION',
  [IOMMU_VFIO_IOAS]: 'IOMMU_VFIO_IOAS',
  [IOMMU_HWPT_ALLOC]: 'IOMMU_HWPT_ALLOC',
  [IOMMU_GET_HW_INFO]: 'IOMMU_GET_HW_INFO',
  [IOMMU_HWPT_SET_DIRTY_TRACKING]: 'IOMMU_HWPT_SET_DIRTY_TRACKING',
  [IOMMU_HWPT_GET_DIRTY_BITMAP]: 'IOMMU_HWPT_GET_DIRTY_BITMAP',
  [IOMMU_HWPT_INVALIDATE]: 'IOMMU_HWPT_INVALIDATE',
  [IOMMU_FAULT_QUEUE_ALLOC]: 'IOMMU_FAULT_QUEUE_ALLOC',
});

// enum iommufd_ioas_map_flags
export const IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0;
export const IOMMU_IOAS_MAP_WRITEABLE = 1 << 1;
export const IOMMU_IOAS_MAP_READABLE = 1 << 2;
// enum iommufd_option / iommufd_option_ops
export const IOMMU_OPTION_RLIMIT_MODE = 0;
export const IOMMU_OPTION_HUGE_PAGES = 1;
export const IOMMU_OPTION_OP_SET = 0;
export const IOMMU_OPTION_OP_GET = 1;
// enum iommufd_vfio_ioas_op
export const IOMMU_VFIO_IOAS_GET = 0;
export const IOMMU_VFIO_IOAS_SET = 1;
export const IOMMU_VFIO_IOAS_CLEAR = 2;
// enum iommufd_hwpt_alloc_flags
export const IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0;
export const IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1;
export const IOMMU_HWPT_FAULT_ID_VALID = 1 << 2;
// enum iommu_hwpt_data_type
export const IOMMU_HWPT_DATA_NONE = 0;
export const IOMMU_HWPT_DATA_VTD_S1 = 1;
// enum iommu_hw_info_type
export const IOMMU_HW_INFO_TYPE_NONE = 0;
export const IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
// enum iommufd_hw_capabilities
export const IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0;
export const IOMMU_HW_CAP_PCI_PASID_EXEC = 1 << 1;
export const IOMMU_HW_CAP_PCI_PASID_PRIV = 1 << 2;
// enum iommufd_hwpt_set_dirty_tracking_flags / iommufd_hwpt_get_dirty_bitmap_flags
export const IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;
export const IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;

export const iommu_destroy = struct('iommu_destroy', 8, { size: u32(0), id: u32(4) });
export const iommu_ioas_alloc = struct('iommu_ioas_alloc', 12, { size: u32(0), flags: u32(4), out_ioas_id: u32(8) });
export const iommu_iova_range = struct('iommu_iova_range', 16, { start: u64(0), last: u64(8) });
export const iommu_ioas_iova_ranges = struct('iommu_ioas_iova_ranges', 32, {
  size: u32(0),
  ioas_id: u32(4),
  num_iovas: u32(8),
  __reserved: u32(12),
  allowed_iovas: u64(16),
  out_iova_alignment: u64(24),
});
export const iommu_ioas_allow_iovas = struct('iommu_ioas_allow_iovas', 24, {
  size: u32(0),
  ioas_id: u32(4),
  num_iovas: u32(8),
  __reserved: u32(12),
  allowed_iovas: u64(16),
});
export const iommu_ioas_map = struct('iommu_ioas_map', 40, {
  size: u32(0),
  flags: u32(4),
  ioas_id: u32(8),
  __reserved: u32(12),
  user_va: u64(16),
  length: u64(24),
  iova: u64(32),
});
export const iommu_ioas_copy = struct('iommu_ioas_copy', 40, {
  size: u32(0),
  flags: u32(4),
  dst_ioas_id: u32(8),
  src_ioas_id: u32(12),
  length: u64(16),
  dst_iova: u64(24),
  src_iova: u64(32),
});
export const iommu_ioas_unmap = struct('iommu_ioas_unmap', 24, { size: u32(0), ioas_id: u32(4), iova: u64(8), length: u64(16) });
export const iommu_option = struct('iommu_option', 24, {
  size: u32(0),
  option_id: u32(4),
  op: u16(8),
  __reserved: u16(10),
  object_id: u32(12),
  val64: u64(16),
});
export const iommu_vfio_ioas = struct('iommu_vfio_ioas', 12, { size: u32(0), ioas_id: u32(4), op: u16(8), __reserved: u16(10) });
export const iommu_hwpt_alloc = struct('iommu_hwpt_alloc', 48, {
  size: u32(0),
  flags: u32(4),
  dev_id: u32(8),
  pt_id: u32(12),
  out_hwpt_id: u32(16),
  __reserved: u32(20),
  data_type: u32(24),
  data_len: u32(28),
  data_uptr: u64(32),
  fault_id: u32(40),
  __reserved2: u32(44),
});
export const iommu_hw_info = struct('iommu_hw_info', 40, {
  size: u32(0),
  flags: u32(4),
  dev_id: u32(8),
  data_len: u32(12),
  data_uptr: u64(16),
  out_data_type: u32(24),
  out_max_pasid_log2: u8(28),
  __reserved: bytes(29),
  out_capabilities: u64(32),
});
export const iommu_hwpt_set_dirty_tracking = struct('iommu_hwpt_set_dirty_tracking', 16, {
  size: u32(0),
  flags: u32(4),
  hwpt_id: u32(8),
  __reserved: u32(12),
});
export const iommu_hwpt_get_dirty_bitmap = struct('iommu_hwpt_get_dirty_bitmap', 48, {
  size: u32(0),
  hwpt_id: u32(4),
  flags: u32(8),
  __reserved: u32(12),
  iova: u64(16),
  length: u64(24),
  page_size: u64(32),
  data: u64(40),
});

/** Every iommufd struct layout, for the layout test. */
export const IOMMUFD_LAYOUTS: readonly StructLayout[] = [
  iommu_destroy,
  iommu_ioas_alloc,
  iommu_iova_range,
  iommu_ioas_iova_ranges,
  iommu_ioas_allow_iovas,
  iommu_ioas_map,
  iommu_ioas_copy,
  iommu_ioas_unmap,
  iommu_option,
  iommu_vfio_ioas,
  iommu_hwpt_alloc,
  iommu_hw_info,
  iommu_hwpt_set_dirty_tracking,
  iommu_hwpt_get_dirty_bitmap,
];
