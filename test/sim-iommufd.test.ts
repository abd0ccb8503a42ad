/**
 * The simulated iommufd against the 6.12 rules, through the library's
 * iommufd objects and raw ioctls: the errno conventions (ENOTTY, E2BIG,
 * EOPNOTSUPP, EINVAL, ENOENT, EOVERFLOW), IOAS map/unmap checks, HWPT
 * allocation with DIRTY_TRACKING, dirty tracking with NO_CLEAR, and a device
 * whose DMA through the HWPT is recorded.
 */
import t from 'tap';
import { DirtyTrackingError } from '../lib/errors.js';
import { addDmaDevice } from '../lib/sim/dma-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { Iommufd } from '../lib/vfio/iommufd.js';
import { IommufdDevice } from '../lib/vfio/iommufd-device.js';
import {
  IOMMU_HWPT_ALLOC,
  IOMMU_HWPT_GET_DIRTY_BITMAP,
  IOMMU_IOAS_ALLOC,
  IOMMU_IOAS_MAP,
  IOMMU_IOAS_MAP_FIXED_IOVA,
  IOMMU_IOAS_MAP_READABLE,
  IOMMU_IOAS_UNMAP,
  IOMMU_HWPT_SET_DIRTY_TRACKING,
  iommu_hwpt_alloc,
  iommu_hwpt_get_dirty_bitmap,
  iommu_hwpt_set_dirty_tracking,
  iommu_ioas_alloc,
  iommu_ioas_map,
  iommu_ioas_unmap,
} from '../lib/vfio/uapi/iommufd.js';
import { VFIO_DEVICE_GET_INFO } from '../lib/vfio/uapi/ioctls.js';
import { decode, encode } from '../lib/vfio/uapi/layout.js';
import { vfio_device_info } from '../lib/vfio/uapi/structs.js';
import { expectErrno, thrown } from './helpers/expect.js';

const PAGE = 4096;

function world(options: { dirtyCapable?: boolean } = {}) {
  const sim = new SimKernel({ iommufd: true });
  const dma = addDmaDevice(sim, { mode: 'iommu', logging: false, iommuDirtyTracking: options.dirtyCapable ?? true });
  const fd = Iommufd.open({ sys: sim });
  const idev = IommufdDevice.bind(fd, dma.name);
  const ioas = fd.allocIoas();
  return { sim, dma, fd, idev, ioas };
}

t.test('errno conventions of the ioctl dispatch', async (t) => {
  const { sim, fd } = world();
  const raw = (req: number, arg: Uint8Array): number => sim.ioctl(fd.fd, req, arg);
  expectErrno(t, () => raw(0x3b8f, new Uint8Array(64)), 'ENOTTY', 'an unknown iommufd command');
  expectErrno(t, () => raw(VFIO_DEVICE_GET_INFO, new Uint8Array(64)), 'ENOTTY', 'a VFIO ioctl on /dev/iommu');
  expectErrno(t, () => raw(IOMMU_IOAS_ALLOC, encode(iommu_ioas_alloc, { size: 8 }, new Uint8Array(12))), 'EINVAL', 'size below the minimum');
  const big = new Uint8Array(16);
  encode(iommu_ioas_alloc, { size: 16 }, big);
  big[13] = 1;
  expectErrno(t, () => raw(IOMMU_IOAS_ALLOC, big), 'E2BIG', 'non-zero bytes past the struct');
  big[13] = 0;
  t.equal(raw(IOMMU_IOAS_ALLOC, big), 0, 'zero bytes past the struct are fine');
  expectErrno(t, () => raw(IOMMU_IOAS_ALLOC, encode(iommu_ioas_alloc, { size: 12, flags: 1 })), 'EOPNOTSUPP', 'unknown IOAS flags');
  expectErrno(t, () => fd.destroy(999), 'ENOENT', 'an unknown id');
  const map = (v: { flags: number; iova?: bigint; length: bigint }): number =>
    raw(IOMMU_IOAS_MAP, encode(iommu_ioas_map, { size: iommu_ioas_map.size, ioas_id: 1, ...v }));
  expectErrno(t, () => map({ flags: IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE, iova: (1n << 64n) - 1n, length: 4096n }), 'EOVERFLOW', 'IOVA at ULONG_MAX');
  expectErrno(t, () => map({ flags: IOMMU_IOAS_MAP_FIXED_IOVA, length: 4096n }), 'EINVAL', 'neither readable nor writeable');
  expectErrno(t, () => map({ flags: 1 << 5, length: 4096n }), 'EOPNOTSUPP', 'unknown map flags');
  fd.close();
  fd.close();
});

t.test('IOAS map and unmap follow io_pagetable', async (t) => {
  const { sim, fd, ioas } = world();
  const a = sim.allocPages(4 * PAGE);
  const b = sim.allocPages(4 * PAGE);
  ioas.map({ iova: 0x10000n, buffer: a });
  expectErrno(t, () => ioas.map({ iova: 0x12000n, buffer: b }), 'EEXIST', 'an overlapping mapping');
  ioas.map({ iova: 0x14000n, buffer: b });
  expectErrno(t, () => ioas.unmap(0x11000n, BigInt(PAGE)), 'ENOENT', 'an unmap that bisects a mapping');
  expectErrno(t, () => ioas.unmap(0x40000n, BigInt(PAGE)), 'ENOENT', 'nothing mapped there');
  expectErrno(t, () => ioas.unmap(0x10000n, 0n), 'EINVAL', 'zero length');
  t.equal(ioas.unmap(0x10000n, BigInt(8 * PAGE)), BigInt(8 * PAGE), 'both mappings in one unmap');
  t.equal(ioas.mappings.size, 0);
  const r = ioas.iovaRanges();
  t.equal(r.alignment, 1n, 'no domain yet: byte alignment');
  t.same(r.ranges, [{ start: 0n, last: (1n << 64n) - 1n }], 'everything allowed');
  fd.close();
});

t.test('HWPT with DIRTY_TRACKING, and a device whose writes are recorded', async (t) => {
  const { sim, dma, fd, idev, ioas } = world();
  const info = fd.hwInfo(idev.devId);
  t.ok(info.dirtyTracking, 'GET_HW_INFO reports IOMMU_HW_CAP_DIRTY_TRACKING');
  t.equal(info.dataType, 1, 'Intel VT-d');
  const hwpt = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
  t.equal(idev.attach(hwpt.id), hwpt.id);
  const r = ioas.iovaRanges();
  t.equal(r.alignment, 4096n, 'the domain sets a 4 KiB alignment');
  t.ok(r.ranges.length >= 2, 'the MSI window is reserved');
  const ram = sim.allocPages(8 * PAGE);
  ioas.map({ iova: 0x100000n, buffer: ram });
  dma.configure({ iova: 0x100000n, size: 8 * PAGE });
  dma.step(5);
  hwpt.setDirtyTracking(true);
  t.same([...hwpt.getDirtyBitmap({ iova: 0x100000n, length: BigInt(8 * PAGE) })], [0, 0, 0, 0, 0, 0, 0, 0], 'enabling cleared earlier writes');
  dma.step(30);
  const peek = hwpt.getDirtyBitmap({ iova: 0x100000n, length: BigInt(8 * PAGE), noClear: true });
  t.ok((peek[0] ?? 0) !== 0, 'writes set dirty bits');
  t.same(hwpt.getDirtyBitmap({ iova: 0x100000n, length: BigInt(8 * PAGE) }), peek, 'NO_CLEAR left them');
  t.equal(hwpt.getDirtyBitmap({ iova: 0x100000n, length: BigInt(8 * PAGE) })[0], 0, 'the read cleared them');
  const e = thrown(() => hwpt.getDirtyBitmap({ iova: 0x100000n, length: BigInt(16 * PAGE) }));
  t.equal(e instanceof DirtyTrackingError && e.rule, 'unmapped-range', 'the library refuses a range with a hole');
  const bm = new Uint8Array(8);
  const arg = encode(iommu_hwpt_get_dirty_bitmap, {
    size: iommu_hwpt_get_dirty_bitmap.size,
    hwpt_id: hwpt.id,
    iova: 0x100000n,
    length: BigInt(16 * PAGE),
    page_size: 4096n,
    data: sim.addressOf(bm),
  });
  t.equal(sim.ioctl(fd.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, arg), 0, '6.12 drops the gap error: the raw ioctl succeeds');
  encode(iommu_hwpt_get_dirty_bitmap, { __reserved: 1 }, arg);
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, arg), 'EOPNOTSUPP', '__reserved must be 0');
  encode(iommu_hwpt_get_dirty_bitmap, { __reserved: 0, iova: 0x100800n }, arg);
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, arg), 'EINVAL', 'an unaligned IOVA');
  encode(iommu_hwpt_get_dirty_bitmap, { iova: 0x100000n, length: 0n }, arg);
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_GET_DIRTY_BITMAP, arg), 'EINVAL', 'zero length');
  expectErrno(t, () => fd.destroy(ioas.id), 'EBUSY', 'an IOAS in use by a HWPT');
  expectErrno(t, () => fd.destroy(hwpt.id), 'EBUSY', 'a HWPT with a device attached');
  idev.detach();
  dma.step(3);
  t.equal(dma.faults, 3, 'a detached device faults');
  fd.destroy(hwpt.id);
  idev.close();
  fd.close();
});

t.test('without the IOMMU capability: EOPNOTSUPP, and an auto HWPT has no dirty ops', async (t) => {
  const { sim, fd, idev, ioas } = world({ dirtyCapable: false });
  t.notOk(fd.hwInfo(idev.devId).dirtyTracking);
  expectErrno(t, () => fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true }), 'EOPNOTSUPP', 'DIRTY_TRACKING refused');
  const hwptId = idev.attach(ioas.id);
  t.not(hwptId, ioas.id, 'attaching to an IOAS makes a HWPT');
  const set = encode(iommu_hwpt_set_dirty_tracking, { size: 16, flags: 1, hwpt_id: hwptId });
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, set), 'EOPNOTSUPP', 'no dirty ops');
  encode(iommu_hwpt_set_dirty_tracking, { flags: 2 }, set);
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_SET_DIRTY_TRACKING, set), 'EOPNOTSUPP', 'unknown flags');
  const alloc = encode(iommu_hwpt_alloc, { size: iommu_hwpt_alloc.size, dev_id: idev.devId, pt_id: ioas.id, data_len: 4 });
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_ALLOC, alloc), 'EINVAL', 'data_len without data_type');
  encode(iommu_hwpt_alloc, { data_len: 0, pt_id: 77 }, alloc);
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_ALLOC, alloc), 'EINVAL', 'an unknown pt_id');
  encode(iommu_hwpt_alloc, { pt_id: ioas.id, dev_id: 77 }, alloc);
  expectErrno(t, () => sim.ioctl(fd.fd, IOMMU_HWPT_ALLOC, alloc), 'ENOENT', 'an unknown dev_id');
  const unmap = encode(iommu_ioas_unmap, { size: 24, ioas_id: ioas.id, iova: 0n, length: (1n << 64n) - 1n });
  t.equal(sim.ioctl(fd.fd, IOMMU_IOAS_UNMAP, unmap), 0, 'unmap all of an empty IOAS');
  t.equal(decode(iommu_ioas_unmap, unmap).length, 0n, 'which unmapped 0 bytes');
  ioas.map({ iova: 0x10000n, buffer: sim.allocPages(2 * 4096) });
  ioas.map({ iova: 0x40000n, buffer: sim.allocPages(4096) });
  encode(iommu_ioas_unmap, { iova: 0n, length: (1n << 64n) - 1n }, unmap);
  t.equal(sim.ioctl(fd.fd, IOMMU_IOAS_UNMAP, unmap), 0);
  t.equal(decode(iommu_ioas_unmap, unmap).length, 3n * 4096n, 'unmap all replies the bytes it unmapped (iommufd_ioas_unmap), not U64_MAX');
  idev.close();
  fd.close();
});

t.test('device cdev: EINVAL before bind; busy while open through the group', async (t) => {
  const sim = new SimKernel({ iommufd: true });
  const dma = addDmaDevice(sim, { mode: 'iommu' });
  const cdev = sim.open('/dev/vfio/devices/vfio0', 2);
  const info = encode(vfio_device_info, { argsz: vfio_device_info.size });
  expectErrno(t, () => sim.ioctl(cdev, VFIO_DEVICE_GET_INFO, info), 'EINVAL', 'GET_INFO before BIND_IOMMUFD');
  sim.close(cdev);
  const fd = Iommufd.open({ sys: sim });
  using idev = IommufdDevice.bind(fd, dma.name);
  t.equal(sim.ioctl(idev.fd, VFIO_DEVICE_GET_INFO, info), 0, 'after bind the device answers');
  t.ok(idev.devId > 0);
  const plain = new SimKernel();
  addDmaDevice(plain, { mode: 'iommu' });
  expectErrno(t, () => plain.open('/dev/iommu', 2), 'ENOENT', "Debian's 6.12 has no /dev/iommu");
});
