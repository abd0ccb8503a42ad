/**
 * Golden bytes: representative structs encoded with known values and compared
 * with hex written by hand from the C layout (x86_64, little-endian), then
 * decoded back. Each hex group below is one C field, in declaration order.
 */
import t from 'tap';
import { UapiFormatError } from '../lib/errors.js';
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_PROBE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_DEVICE_STATE_V1_RUNNING,
  VFIO_DEVICE_STATE_V1_SAVING,
  VFIO_DMA_MAP_FLAG_READ,
  VFIO_DMA_MAP_FLAG_WRITE,
  VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
  VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
  VFIO_IOMMU_DIRTY_PAGES_FLAG_START,
  VFIO_IRQ_SET_ACTION_MASK,
  VFIO_IRQ_SET_ACTION_TRIGGER,
  VFIO_PCI_BAR2_REGION_INDEX,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
} from '../lib/vfio/uapi/constants.js';
import { FEATURE_PAYLOAD, featureBuffer, featurePayload } from '../lib/vfio/uapi/feature.js';
import { decodeIrqInfo, decodeRegionInfo } from '../lib/vfio/uapi/info.js';
import {
  _IO,
  ioctlName,
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_GET_PCI_HOT_RESET_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_DEVICE_SET_IRQS,
  VFIO_GET_API_VERSION,
  VFIO_IOMMU_DIRTY_PAGES,
  VFIO_IOMMU_GET_INFO,
  VFIO_MIG_GET_PRECOPY_INFO,
} from '../lib/vfio/uapi/ioctls.js';
import * as iommufd from '../lib/vfio/uapi/iommufd.js';
import { irqSetBool, irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { dataView, decode, encode } from '../lib/vfio/uapi/layout.js';
import {
  vfio_bitmap,
  vfio_device_feature,
  vfio_device_feature_dma_logging_control,
  vfio_device_feature_dma_logging_range,
  vfio_device_feature_mig_state,
  vfio_device_migration_info,
  vfio_iommu_type1_dirty_bitmap,
  vfio_iommu_type1_dirty_bitmap_get,
  vfio_iommu_type1_dma_map,
  vfio_iommu_type1_dma_unmap,
  vfio_irq_info,
  vfio_irq_set,
  vfio_pci_dependent_device,
  vfio_precopy_info,
  vfio_region_info,
} from '../lib/vfio/uapi/structs.js';
import { bytesOf, hexOf, toHex } from './helpers/uapi-hex.js';

t.test('vfio_region_info (32 bytes)', async (t) => {
  const golden = hexOf(
    '20000000', // argsz 32
    '07000000', // flags READ|WRITE|MMAP
    '02000000', // index 2 (BAR2)
    '00000000', // cap_offset
    '0000000100000000', // size 16 MiB
    '0000000000020000', // offset 2 << 40
  );
  const values = {
    argsz: 32,
    flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP,
    index: VFIO_PCI_BAR2_REGION_INDEX,
    cap_offset: 0,
    size: 0x1000000n,
    offset: 2n << 40n,
  };
  t.equal(toHex(encode(vfio_region_info, values)), golden);
  t.strictSame(decode(vfio_region_info, bytesOf(golden)), values);
  t.strictSame(decodeRegionInfo(bytesOf(golden)), {
    index: 2,
    flags: 7,
    size: 0x1000000,
    offset: 2n << 40n,
    msixMappable: false,
    otherCaps: [],
  });
});

t.test('vfio_irq_info (16 bytes)', async (t) => {
  const golden = bytesOf('10000000', '09000000', '02000000', '00080000'); // argsz, EVENTFD|NORESIZE, MSIX, 2048
  t.strictSame(decodeIrqInfo(golden), { index: 2, flags: 9, count: 2048 });
  t.equal(toHex(encode(vfio_irq_info, { argsz: 16, index: 2 })), hexOf('10000000', '00000000', '02000000', '00000000'));
});

t.test('vfio_irq_set: DATA_NONE, DATA_BOOL, DATA_EVENTFD', async (t) => {
  // Disable every MSI-X vector: DATA_NONE|ACTION_TRIGGER, count 0.
  const none = irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSIX_IRQ_INDEX, 0, 0);
  t.equal(toHex(none), hexOf('14000000', '21000000', '02000000', '00000000', '00000000'));
  t.strictSame(decode(vfio_irq_set, none), { argsz: 20, flags: 0x21, index: 2, start: 0, count: 0 });

  // Mask INTx-style vectors 0..2 with one u8 each.
  const bool = irqSetBool(VFIO_IRQ_SET_ACTION_MASK, VFIO_PCI_INTX_IRQ_INDEX, 0, [true, false, true]);
  t.equal(toHex(bool), hexOf('17000000', '0a000000', '00000000', '00000000', '03000000', '01', '00', '01'));
  t.strictSame(decode(vfio_irq_set, bool), { argsz: 23, flags: 0x0a, index: 0, start: 0, count: 3 });

  // Wire MSI-X vectors 1..3 to fds 7, none (-1), 42.
  const efd = irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSIX_IRQ_INDEX, 1, [7, -1, 42]);
  t.equal(
    toHex(efd),
    hexOf('20000000', '24000000', '02000000', '01000000', '03000000', '07000000', 'ffffffff', '2a000000'),
  );
  t.strictSame(decode(vfio_irq_set, efd), { argsz: 32, flags: 0x24, index: 2, start: 1, count: 3 });
  const dv = dataView(efd);
  t.strictSame([0, 1, 2].map((i) => dv.getInt32(vfio_irq_set.size + 4 * i, true)), [7, -1, 42]);

  t.throws(() => irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, 2, 0, [2 ** 31]), RangeError, 'an fd that is not an s32 is refused');
  t.throws(() => irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, 2, 0, [1.5]), RangeError);
});

t.test('feature buffers, sized as QEMU sizes them', async (t) => {
  // MIG_DEVICE_STATE SET: 8-byte header + vfio_device_feature_mig_state = 16.
  const set = featureBuffer(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, vfio_device_feature_mig_state.size);
  encode(vfio_device_feature_mig_state, { device_state: VFIO_DEVICE_STATE_STOP_COPY }, featurePayload(set));
  t.equal(toHex(set), hexOf('10000000', '02000200', '03000000', '00000000'));
  t.strictSame(decode(vfio_device_feature, set), { argsz: 16, flags: 0x20002 });
  // The kernel's reply carries the data fd.
  const reply = bytesOf('10000000', '02000200', '03000000', '09000000');
  t.strictSame(decode(vfio_device_feature_mig_state, reply, FEATURE_PAYLOAD), { device_state: 3, data_fd: 9 });
  t.strictSame(decode(vfio_device_feature_mig_state, bytesOf('10000000', '02000200', '03000000', 'ffffffff'), 8), {
    device_state: 3,
    data_fd: -1,
  });

  // DMA_LOGGING_START: 8 + vfio_device_feature_dma_logging_control (24) = 32.
  const start = featureBuffer(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, vfio_device_feature_dma_logging_control.size);
  encode(vfio_device_feature_dma_logging_control, { page_size: 4096n, num_ranges: 2, ranges: 0x7f1234560000n }, featurePayload(start));
  const startGolden = hexOf(
    '20000000', // argsz 32
    '06000200', // SET | DMA_LOGGING_START
    '0010000000000000', // page_size 4096
    '02000000', // num_ranges
    '00000000', // __reserved
    '00005634127f0000', // ranges (user pointer)
  );
  t.equal(toHex(start), startGolden);
  t.strictSame(decode(vfio_device_feature_dma_logging_control, bytesOf(startGolden), FEATURE_PAYLOAD), {
    page_size: 4096n,
    num_ranges: 2,
    __reserved: 0,
    ranges: 0x7f1234560000n,
  });
  const range = encode(vfio_device_feature_dma_logging_range, { iova: 0x100000000n, length: 0x80000000n });
  t.equal(toHex(range), hexOf('0000000001000000', '0000008000000000'));

  // A bare PROBE is the 8-byte header; DMA_LOGGING_REPORT is 8 + 32 = 40.
  const probe = featureBuffer(VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START, 0);
  t.equal(toHex(probe), hexOf('08000000', '06000600'));
  t.equal(featureBuffer(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, 32).byteLength, 40);
  // QEMU rounds the payload up to whole u64s.
  t.equal(featureBuffer(VFIO_DEVICE_FEATURE_GET, 4).byteLength, 16);
});

t.test('type1 DMA map, and unmap with a dirty bitmap (48 bytes)', async (t) => {
  const map = encode(vfio_iommu_type1_dma_map, {
    argsz: 32,
    flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
    vaddr: 0x7f0000000000n,
    iova: 0x100000n,
    size: 0x200000n,
  });
  const mapGolden = hexOf('20000000', '03000000', '00000000007f0000', '0000100000000000', '0000200000000000');
  t.equal(toHex(map), mapGolden);
  t.strictSame(decode(vfio_iommu_type1_dma_map, bytesOf(mapGolden)), {
    argsz: 32,
    flags: 3,
    vaddr: 0x7f0000000000n,
    iova: 0x100000n,
    size: 0x200000n,
  });

  const unmap = new Uint8Array(vfio_iommu_type1_dma_unmap.size + vfio_bitmap.size);
  encode(vfio_iommu_type1_dma_unmap, { argsz: 48, flags: VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, iova: 0x100000n, size: 0x200000n }, unmap);
  // 2 MiB of 4 KiB pages = 512 bits = 64 bytes of bitmap.
  encode(vfio_bitmap, { pgsize: 4096n, size: 64n, data: 0x7f0000001000n }, unmap, vfio_iommu_type1_dma_unmap.size);
  const unmapGolden = hexOf(
    '30000000', // argsz 48
    '01000000', // GET_DIRTY_BITMAP
    '0000100000000000', // iova
    '0000200000000000', // size
    '0010000000000000', // bitmap.pgsize
    '4000000000000000', // bitmap.size (bytes)
    '00100000007f0000', // bitmap.data
  );
  t.equal(toHex(unmap), unmapGolden);
  t.equal(unmap.byteLength, 48);
  t.strictSame(decode(vfio_bitmap, bytesOf(unmapGolden), vfio_iommu_type1_dma_unmap.size), {
    pgsize: 4096n,
    size: 64n,
    data: 0x7f0000001000n,
  });
});

t.test('VFIO_IOMMU_DIRTY_PAGES: START (8 bytes) and GET_BITMAP (48 bytes)', async (t) => {
  t.equal(toHex(encode(vfio_iommu_type1_dirty_bitmap, { argsz: 8, flags: VFIO_IOMMU_DIRTY_PAGES_FLAG_START })), hexOf('08000000', '01000000'));

  const get = new Uint8Array(vfio_iommu_type1_dirty_bitmap.size + vfio_iommu_type1_dirty_bitmap_get.size);
  encode(vfio_iommu_type1_dirty_bitmap, { argsz: 48, flags: VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP }, get);
  // 1 GiB of 4 KiB pages = 2^18 bits = 32 KiB of bitmap.
  encode(
    vfio_iommu_type1_dirty_bitmap_get,
    { iova: 0n, size: 0x40000000n, 'bitmap.pgsize': 4096n, 'bitmap.size': 0x8000n, 'bitmap.data': 0x7f0000002000n },
    get,
    vfio_iommu_type1_dirty_bitmap.size,
  );
  const golden = hexOf(
    '30000000', // argsz 48
    '04000000', // GET_BITMAP
    '0000000000000000', // iova
    '0000004000000000', // size 1 GiB
    '0010000000000000', // bitmap.pgsize
    '0080000000000000', // bitmap.size
    '00200000007f0000', // bitmap.data
  );
  t.equal(toHex(get), golden);
  t.strictSame(decode(vfio_iommu_type1_dirty_bitmap_get, bytesOf(golden), 8), {
    iova: 0n,
    size: 0x40000000n,
    'bitmap.pgsize': 4096n,
    'bitmap.size': 0x8000n,
    'bitmap.data': 0x7f0000002000n,
  });
});

t.test('vfio_precopy_info (24 bytes)', async (t) => {
  t.equal(toHex(encode(vfio_precopy_info, { argsz: 24 })), hexOf('18000000', '00000000', '0000000000000000', '0000000000000000'));
  const reply = bytesOf('18000000', '00000000', '3412000000000000', '0000000001000000');
  t.strictSame(decode(vfio_precopy_info, reply), { argsz: 24, flags: 0, initial_bytes: 0x1234n, dirty_bytes: 0x100000000n });
});

t.test('v1 migration region header (32 bytes)', async (t) => {
  const golden = hexOf(
    '03000000', // device_state RUNNING|SAVING (pre-copy)
    '00000000', // reserved
    '0000010000000000', // pending_bytes 64 KiB
    '0010000000000000', // data_offset 4 KiB
    '0008000000000000', // data_size 2 KiB
  );
  const values = {
    device_state: VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING,
    reserved: 0,
    pending_bytes: 0x10000n,
    data_offset: 0x1000n,
    data_size: 0x800n,
  };
  t.equal(toHex(encode(vfio_device_migration_info, values)), golden);
  t.strictSame(decode(vfio_device_migration_info, bytesOf(golden)), values);
});

t.test('vfio_pci_dependent_device: the group_id/devid union (8 bytes)', async (t) => {
  const golden = bytesOf('2a000000', '0000', '03', '08'); // 0000:03:01.0
  t.strictSame(decode(vfio_pci_dependent_device, golden), { group_id: 42, devid: 42, segment: 0, bus: 3, devfn: 8 });
  // VFIO_PCI_DEVID_NOT_OWNED is -1 in C, stored in a __u32.
  t.equal(toHex(encode(vfio_pci_dependent_device, { devid: -1 })), hexOf('ffffffff', '0000', '00', '00'));
});

t.test('iommufd: IOMMU_HWPT_GET_DIRTY_BITMAP and IOMMU_IOAS_MAP', async (t) => {
  const values = {
    size: 48,
    hwpt_id: 5,
    flags: iommufd.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR,
    __reserved: 0,
    iova: 0x80000000n,
    length: 0x200000n,
    page_size: 4096n,
    data: 0x7f0000003000n,
  };
  const golden = hexOf(
    '30000000', // size 48
    '05000000', // hwpt_id
    '01000000', // flags NO_CLEAR
    '00000000', // __reserved
    '0000008000000000', // iova
    '0000200000000000', // length
    '0010000000000000', // page_size
    '00300000007f0000', // data
  );
  t.equal(toHex(encode(iommufd.iommu_hwpt_get_dirty_bitmap, values)), golden);
  t.strictSame(decode(iommufd.iommu_hwpt_get_dirty_bitmap, bytesOf(golden)), values);

  const map = encode(iommufd.iommu_ioas_map, {
    size: 40,
    flags: iommufd.IOMMU_IOAS_MAP_FIXED_IOVA | iommufd.IOMMU_IOAS_MAP_WRITEABLE | iommufd.IOMMU_IOAS_MAP_READABLE,
    ioas_id: 2,
    user_va: 0x7f0000000000n,
    length: 0x100000n,
    iova: 0x100000n,
  });
  t.equal(toHex(map), hexOf('28000000', '07000000', '02000000', '00000000', '00000000007f0000', '0000100000000000', '0000100000000000'));
});

t.test('request numbers', async (t) => {
  t.equal(VFIO_DEVICE_FEATURE, 0x3b75);
  t.equal(VFIO_IOMMU_GET_INFO, 0x3b70);
  t.equal(VFIO_IOMMU_DIRTY_PAGES, 0x3b75, 'the same number as VFIO_DEVICE_FEATURE, on another fd kind');
  t.equal(VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, 0x3b70);
  t.equal(VFIO_GET_API_VERSION, 0x3b64);
  t.equal(VFIO_MIG_GET_PRECOPY_INFO, 0x3b79);
  t.equal(iommufd.IOMMU_HWPT_GET_DIRTY_BITMAP, 0x3b8c);
  t.equal(iommufd.IOMMU_DESTROY, 0x3b80);
  t.equal(_IO(0x3b, 0xff), 0x3bff);
});

t.test('ioctlName depends on the fd kind', async (t) => {
  t.equal(ioctlName('container', 0x3b70), 'VFIO_IOMMU_GET_INFO');
  t.equal(ioctlName('device', 0x3b70), 'VFIO_DEVICE_GET_PCI_HOT_RESET_INFO');
  t.equal(ioctlName('group', 0x3b70), 'ioctl 0x3b70', 'unknown on a group fd');
  t.equal(ioctlName('container', 0x3b75), 'VFIO_IOMMU_DIRTY_PAGES');
  t.equal(ioctlName('device', 0x3b75), 'VFIO_DEVICE_FEATURE');
  t.equal(ioctlName('device', VFIO_DEVICE_SET_IRQS), 'VFIO_DEVICE_SET_IRQS');
  t.equal(ioctlName('device', VFIO_DEVICE_GET_REGION_INFO), 'VFIO_DEVICE_GET_REGION_INFO');
  t.equal(ioctlName('group', 0x3b67), 'VFIO_GROUP_GET_STATUS');
  t.equal(ioctlName('migration', 0x3b79), 'VFIO_MIG_GET_PRECOPY_INFO');
  t.equal(ioctlName('device', 0x3b79), 'ioctl 0x3b79', 'precopy info is only named on the data fd');
  t.equal(ioctlName('iommufd', 0x3b8c), 'IOMMU_HWPT_GET_DIRTY_BITMAP');
  t.equal(ioctlName('iommufd', 0x3b70), 'ioctl 0x3b70');
});

t.test('encode refuses values that do not fit, and short buffers', async (t) => {
  t.throws(() => encode(vfio_irq_set, { argsz: 2 ** 32 + 20 }), RangeError, 'a u32 past 2^32 would wrap to 20');
  t.throws(() => encode(vfio_irq_set, { count: 1.5 }), RangeError, 'fractions would truncate');
  t.throws(() => encode(vfio_irq_set, { count: Number.NaN }), RangeError, 'NaN would become 0');
  t.throws(() => encode(vfio_irq_set, { count: -(2 ** 31) - 1 }), RangeError);
  t.throws(() => encode(vfio_region_info, { size: 1n << 64n }), RangeError);
  t.throws(() => encode(vfio_region_info, { size: -(1n << 63n) - 1n }), RangeError);
  t.throws(() => encode(vfio_device_feature_mig_state, { data_fd: 2 ** 32 }), RangeError);
  t.throws(() => encode(vfio_pci_dependent_device, { bus: 256 }), RangeError);
  t.throws(() => encode(vfio_region_info, {}, new Uint8Array(31)), RangeError);
  t.throws(() => encode(vfio_region_info, {}, new Uint8Array(32), 1), RangeError);
  // The edges that fit.
  t.equal(toHex(encode(vfio_irq_info, { argsz: 0xffffffff })), hexOf('ffffffff', '00000000', '00000000', '00000000'));
  t.equal(toHex(encode(vfio_region_info, { size: (1n << 64n) - 1n })).slice(32, 48), 'ffffffffffffffff');
  // A refused call writes nothing, even for the fields that fit.
  const buf = new Uint8Array(vfio_irq_set.size);
  t.throws(() => encode(vfio_irq_set, { argsz: 20, count: 2 ** 40 }, buf), RangeError);
  t.equal(toHex(buf), '00'.repeat(20));

  t.throws(() => decode(vfio_region_info, new Uint8Array(31)), UapiFormatError, 'a short reply is a format error');
});
