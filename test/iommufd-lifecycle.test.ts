/**
 * The life of iommufd objects against the 6.12 rules: a bound device holds
 * the context (`iommufd_ctx_get` pins the file), so closing an `Iommufd`
 * closes its devices first; a closed context's fd number is never reused for
 * a bind; IOMMU_DESTROY answers EBUSY until the device is detached and the
 * kernel hands a destroyed id to the next object, so a destroyed handle
 * refuses calls; an unmap that fails part way (`iopt_unmap_iova_range`)
 * still reports what it removed; IOVA_RANGES replies are bounds-checked; and
 * values the u64 fields cannot carry are refused as arguments.
 */
import t from 'tap';
import { DirtyTrackingError, UapiFormatError, VfioArgumentError, VfioClosedError, VfioSystemError } from '../lib/errors.js';
import { addDmaDevice } from '../lib/sim/dma-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import type { MappingChange } from '../lib/vfio/container.js';
import { DirtyBitmap } from '../lib/vfio/dirty-bitmap.js';
import { createDirtyTracker } from '../lib/vfio/dirty-tracker.js';
import { Iommufd } from '../lib/vfio/iommufd.js';
import { IommufdDevice } from '../lib/vfio/iommufd-device.js';
import { IOMMU_IOAS_IOVA_RANGES, iommu_ioas_iova_ranges, iommu_iova_range } from '../lib/vfio/uapi/iommufd.js';
import { decode, encode } from '../lib/vfio/uapi/layout.js';
import { expectErrno, thrown } from './helpers/expect.js';

const PAGE = 4096;
const U64_MAX = (1n << 64n) - 1n;

function world() {
  const sim = new SimKernel({ iommufd: true });
  const dma = addDmaDevice(sim, { mode: 'iommu', logging: false, iommuDirtyTracking: true });
  const base = sim.openFds;
  const fd = Iommufd.open({ sys: sim });
  const idev = IommufdDevice.bind(fd, dma.name);
  const ioas = fd.allocIoas();
  return { sim, dma, base, fd, idev, ioas };
}

t.test('closing the iommufd closes the devices bound through it', async (t) => {
  for (const made of [false, true]) {
    const { sim, base, fd, idev, ioas } = world();
    const device = made ? idev.device : null;
    const hwpt = fd.allocHwpt({ devId: idev.devId, ioas });
    idev.attach(hwpt.id);
    fd.close();
    t.ok(idev.closed, `the binding is closed (device ${made ? 'made' : 'not made'})`);
    if (device !== null) t.ok(device.closed, 'and the device over it');
    t.type(thrown(() => idev.attach(hwpt.id)), VfioClosedError, 'a later attach is refused');
    t.type(thrown(() => hwpt.setDirtyTracking(true)), VfioClosedError);
    t.type(thrown(() => ioas.iovaRanges()), VfioClosedError);
    idev.close();
    idev[Symbol.dispose]();
    fd[Symbol.dispose]();
    t.equal(sim.openFds, base, 'every fd closed, once');
  }
});

t.test('a device closed on its own leaves the context alone', async (t) => {
  const { sim, base, fd, idev } = world();
  idev.close();
  const again = IommufdDevice.bind(fd, addDmaDevice(sim, { mode: 'iommu' }).name);
  again.device.close();
  fd.close();
  t.equal(sim.openFds, base);
});

t.test('binding to a closed iommufd never uses its fd number', async (t) => {
  const sim = new SimKernel({ iommufd: true });
  const dma = addDmaDevice(sim, { mode: 'iommu' });
  const old = Iommufd.open({ sys: sim });
  old.close();
  using other = Iommufd.open({ sys: sim });
  t.equal(other.fd, old.fd, 'the fd number went to another context');
  t.type(thrown(() => IommufdDevice.bind(old, dma.name)), VfioClosedError);
  other.close();
});

t.test('teardown order: EBUSY until detached, and a destroyed id is not the handle of the next object', async (t) => {
  const { sim, fd, idev, ioas } = world();
  const hwpt = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
  idev.attach(hwpt.id);
  expectErrno(t, () => fd.destroy(hwpt.id), 'EBUSY', 'a HWPT with a device attached');
  expectErrno(t, () => fd.destroy(ioas.id), 'EBUSY', 'an IOAS under a HWPT');
  t.notOk(hwpt.destroyed, 'a refused destroy leaves the handle');
  hwpt.setDirtyTracking(true);
  idev.detach();
  fd.destroy(hwpt.id);
  t.ok(hwpt.destroyed);
  const next = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
  t.equal(next.id, hwpt.id, 'the kernel reuses the id');
  t.type(thrown(() => hwpt.setDirtyTracking(false)), VfioClosedError, 'the old handle refuses');
  t.type(thrown(() => hwpt.getDirtyBitmap({ iova: 0n, length: 4096n })), VfioClosedError);
  next.setDirtyTracking(true);
  fd.destroy(next.id);
  ioas.map({ iova: 0x10000n, buffer: sim.allocPages(PAGE) });
  fd.destroy(ioas.id);
  t.ok(ioas.destroyed);
  t.equal(ioas.mappings.size, 0, 'the mappings went with it');
  t.type(thrown(() => ioas.map({ iova: 0x10000n, buffer: sim.allocPages(PAGE) })), VfioClosedError);
  t.type(thrown(() => ioas.unmap(0x10000n, BigInt(PAGE))), VfioClosedError);
  idev.close();
  fd.close();
});

t.test('an unmap that fails on a bisected area reports the areas removed before it', async (t) => {
  const { sim, dma, fd, idev, ioas } = world();
  const hwpt = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
  idev.attach(hwpt.id);
  ioas.map({ iova: 0x100000n, buffer: sim.allocPages(4 * PAGE) });
  ioas.map({ iova: 0x104000n, buffer: sim.allocPages(4 * PAGE) });
  const changes: MappingChange[] = [];
  ioas.onMappingChange((c) => changes.push(c));
  using tracker = createDirtyTracker({ iommufd: { ioas, hwpts: [hwpt] } });
  const bitmap = new DirtyBitmap(0x108);
  tracker.start();
  dma.configure({ iova: 0x100000n, size: 4 * PAGE });
  dma.step(8);
  const e = thrown(() => ioas.unmap(0x100000n, BigInt(6 * PAGE)));
  t.equal(e instanceof VfioSystemError && e.code, 'ENOENT', 'the second area is bisected');
  t.same([...ioas.mappings.keys()], [0x104000n], 'the first one is gone, as in the kernel');
  t.same(changes, [{ kind: 'unmap', iova: 0x100000n, size: BigInt(4 * PAGE), dirty: null }], 'and the listeners heard of it');
  tracker.sync(bitmap);
  t.equal(bitmap.count(0x100, 4), 4, 'its dirty bits went with the IOPTEs: its pages count as dirty');
  t.equal(bitmap.count(0x104, 4), 0);
  tracker.close();
  idev.close();
  fd.close();
});

t.test('unmapping everything also forgets a mapping that ends at 2^64', async (t) => {
  const { sim, fd, ioas } = world();
  ioas.map({ iova: (1n << 64n) - BigInt(PAGE), buffer: sim.allocPages(PAGE) });
  ioas.map({ iova: 0x10000n, buffer: sim.allocPages(PAGE) });
  const changes: MappingChange[] = [];
  ioas.onMappingChange((c) => changes.push(c));
  ioas.unmap(0n, U64_MAX);
  t.equal(ioas.mappings.size, 0, 'iopt_unmap_all covers [0, ULONG_MAX]');
  t.same(changes, [{ kind: 'unmap', iova: 0n, size: 1n << 64n, dirty: null }]);
  fd.close();
});

t.test('IOVA_RANGES replies are checked', async (t) => {
  const lying = (patch: (arg: Uint8Array, room: number) => void) => {
    const w = world();
    const ioctl = w.sim.ioctl.bind(w.sim);
    w.sim.ioctl = (fd, request, arg) => {
      if (request !== IOMMU_IOAS_IOVA_RANGES || !(arg instanceof Uint8Array)) return ioctl(fd, request, arg);
      const room = decode(iommu_ioas_iova_ranges, arg).num_iovas;
      ioctl(fd, request, arg);
      patch(arg, room);
      return 0;
    };
    return w;
  };
  const emsgsize = (): never => {
    throw new VfioSystemError(90, 'ioctl');
  };
  let w = lying((arg, room) => {
    encode(iommu_ioas_iova_ranges, { num_iovas: room }, arg);
    emsgsize();
  });
  t.type(thrown(() => w.ioas.iovaRanges()), UapiFormatError, 'EMSGSIZE for an array big enough');
  w.fd.close();
  w = lying((arg, room) => encode(iommu_ioas_iova_ranges, { num_iovas: room + 1 }, arg));
  t.type(thrown(() => w.ioas.iovaRanges()), UapiFormatError, 'always one more range: asked a bounded number of times');
  w.fd.close();
  w = lying((arg) => encode(iommu_ioas_iova_ranges, { num_iovas: 5000 }, arg));
  t.type(thrown(() => w.ioas.iovaRanges()), UapiFormatError, 'too many ranges');
  w.fd.close();
  w = lying((arg) => encode(iommu_ioas_iova_ranges, { out_iova_alignment: 3n }, arg));
  t.type(thrown(() => w.ioas.iovaRanges()), UapiFormatError, 'an alignment that is not a power of two');
  w.fd.close();
  w = lying((arg) => {
    const r = decode(iommu_ioas_iova_ranges, arg);
    encode(iommu_ioas_iova_ranges, { num_iovas: 2 }, arg);
    const array = w.sim.memory.resolve(r.allowed_iovas, 2 * iommu_iova_range.size);
    encode(iommu_iova_range, { start: 0x2000n, last: 0x2fffn }, array);
    encode(iommu_iova_range, { start: 0x1000n, last: 0x1fffn }, array.subarray(iommu_iova_range.size));
  });
  t.type(thrown(() => w.ioas.iovaRanges()), UapiFormatError, 'ranges out of order');
  w.fd.close();
});

t.test('values the u64 fields cannot carry are argument errors', async (t) => {
  const { sim, fd, idev, ioas } = world();
  const buf = sim.allocPages(PAGE);
  t.type(thrown(() => ioas.unmap(-1n, BigInt(PAGE))), VfioArgumentError);
  t.type(thrown(() => ioas.unmap(0n, 1n << 64n)), VfioArgumentError);
  t.type(thrown(() => ioas.map({ iova: 1n << 64n, buffer: buf })), VfioArgumentError);
  t.type(thrown(() => ioas.map({ iova: 0x10000n, vaddr: buf.address, size: 1.5 })), VfioArgumentError);
  t.type(thrown(() => ioas.map({ iova: 0x10000n, vaddr: buf.address, size: -PAGE })), VfioArgumentError);
  t.equal(ioas.mappings.size, 0);
  const hwpt = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
  const e = thrown(() => hwpt.getDirtyBitmap({ iova: 0n, length: 1n << 64n, pageSize: 1n << 64n }));
  t.equal(e instanceof DirtyTrackingError && e.rule, 'page-size', 'a page size past the u64 page_size field');
  fd.close();
});
