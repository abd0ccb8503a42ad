/**
 * The object layer on the simulated kernel: lifetimes, error shapes,
 * discovery, fault injection and the paths mtty cannot reach (mmapped areas).
 */
import t from 'tap';
import { DeviceNotFoundError, MappingRevokedError, UapiFormatError, VfioArgumentError, VfioClosedError, VfioSystemError } from '../lib/errors.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty } from '../lib/sim/mtty.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { locateDevice, sysfsPathOf } from '../lib/vfio/discovery.js';
import { MappedArea } from '../lib/vfio/mapped-area.js';
import { VfioGroup } from '../lib/vfio/group.js';
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIGRATION,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSI_IRQ_INDEX,
  VFIO_TYPE1_IOMMU,
} from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_SET_IRQS, VFIO_GROUP_GET_STATUS } from '../lib/vfio/uapi/ioctls.js';
import { dataView } from '../lib/vfio/uapi/layout.js';
import { expectErrno } from './helpers/expect.js';

const UUID_A = '11111111-2222-3333-4444-555555555555';
const UUID_B = '11111111-2222-3333-4444-666666666666';

function sim(): SimKernel {
  const k = new SimKernel();
  addMtty(k, { uuid: UUID_A, type: 'mtty-2' });
  addMtty(k, { uuid: UUID_B, type: 'mtty-1' });
  return k;
}

t.test('discovery resolves paths, UUIDs and PCI addresses as QEMU does', async (t) => {
  const k = sim();
  t.equal(sysfsPathOf('00:03.0'), '/sys/bus/pci/devices/0000:00:03.0');
  t.equal(sysfsPathOf('0000:0A:1f.7'), '/sys/bus/pci/devices/0000:0a:1f.7');
  t.equal(sysfsPathOf(UUID_A.toUpperCase()), `/sys/bus/mdev/devices/${UUID_A}`);
  t.equal(sysfsPathOf('/sys/devices/x'), '/sys/devices/x');
  t.throws(() => sysfsPathOf('eth0'), DeviceNotFoundError);
  const loc = locateDevice(k, UUID_A);
  t.equal(loc.name, UUID_A);
  t.equal(loc.sysfsPath, `/sys/devices/virtual/mtty/mtty/${UUID_A}`);
  t.equal(loc.groupId, 0);
  t.same(locateDevice(k, loc.sysfsPath), loc, 'the canonical path resolves to itself');
  t.equal(locateDevice(k, UUID_B).groupId, 1);
  t.throws(() => locateDevice(k, '0000:00:1f.0'), DeviceNotFoundError, 'missing PCI device');
  k.fs.mkdir('/sys/bus/pci/devices/0000:00:1f.0');
  t.throws(() => locateDevice(k, '0000:00:1f.0'), { code: 'ERR_VFIO_DEVICE_NOT_FOUND', message: /no IOMMU group/ });
});

t.test('container lifetime: groups, devices and fds are released in order', async (t) => {
  const k = sim();
  const base = k.openFds;
  const c = VfioContainer.open({ sys: k });
  const a = c.openDevice(UUID_A);
  const b = c.openDevice(UUID_B);
  a.irq(VFIO_PCI_MSI_IRQ_INDEX).enable(1);
  t.equal(k.openFds, base + 1 + 2 + 2 + 1, 'container, 2 groups, 2 devices, 1 eventfd');
  t.equal(c.openDevice(UUID_B).group, b.group, 'a second open reuses the group');
  t.equal(b.group.devices.size, 2);
  c.close();
  t.equal(k.openFds, base, 'everything closed');
  t.ok(a.closed && b.closed && a.group.closed);
  t.doesNotThrow(() => c.close(), 'close is idempotent');
  t.throws(() => c.iommuInfo(), VfioClosedError);
  t.throws(() => a.region(0), VfioClosedError);
  t.throws(() => a.group.status(), VfioClosedError);
  t.equal(k.groups.get(0)?.container, null, 'the kernel side left the container');
});

t.test('groups: one open at a time, viability, explicit IOMMU type', async (t) => {
  const k = sim();
  using c = VfioContainer.open({ sys: k, iommuType: VFIO_TYPE1_IOMMU });
  const g = c.openGroup(0);
  t.equal(c.iommuType, VFIO_TYPE1_IOMMU);
  t.equal(c.openGroup(0), g, 'the same group object');
  expectErrno(t, () => new VfioGroup(0, k), 'EBUSY', 'a group opens once');
  const sg = k.groups.get(1);
  if (sg) sg.viable = false;
  t.throws(() => c.openGroup(1), { code: 'ERR_VFIO_DEVICE_NOT_FOUND', message: /not viable/ });
  t.doesNotThrow(() => c.addGroup(g), 'adding it again to the same container is a no-op');
  using c2 = VfioContainer.open({ sys: k });
  t.throws(() => c2.addGroup(g), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /already in a container/ });
  const other = new SimKernel();
  addMtty(other, { uuid: UUID_A });
  using g2 = new VfioGroup(0, other);
  t.throws(() => c.addGroup(g2), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /another Sys/ });
  // Unset while a device is open: the kernel refuses, the object keeps its state.
  const d = g.openDevice(UUID_A);
  expectErrno(t, () => g.unsetContainer(), 'EBUSY', 'UNSET_CONTAINER with an open device');
  d.close();
  c.removeGroup(g);
  t.equal(c.iommuType, null, 'the last group out resets the container');
  t.equal(g.container, null);
  expectErrno(t, () => g.openDevice(UUID_A), 'EINVAL', 'GET_DEVICE_FD outside a container');
  const st = new Uint8Array(8);
  dataView(st).setUint32(0, 4, true);
  expectErrno(t, () => k.ioctl(g.fd, VFIO_GROUP_GET_STATUS, st), 'EINVAL', 'argsz below minsz');
});

t.test('device: features, migration flags, reset, unknown device names', async (t) => {
  const k = sim();
  using c = VfioContainer.open({ sys: k });
  const d = c.openDevice(UUID_A);
  t.equal(d.migrationFlags(), VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY);
  t.ok(d.featureProbe(VFIO_DEVICE_FEATURE_MIGRATION, VFIO_DEVICE_FEATURE_GET));
  t.notOk(d.featureProbe(VFIO_DEVICE_FEATURE_MIGRATION, VFIO_DEVICE_FEATURE_SET), 'MIGRATION has no SET');
  t.ok(d.featureProbe(VFIO_DEVICE_FEATURE_DMA_LOGGING_START), 'mtty claims DMA logging');
  t.notOk(d.featureProbe(0x55), 'unknown feature');
  t.equal(dataView(d.featureGet(VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, 8)).getBigUint64(0, true), 96n, 'mtty-2 stop-copy size');
  expectErrno(t, () => d.featureSet(VFIO_DEVICE_FEATURE_MIGRATION, new Uint8Array(8)), 'EINVAL', 'SET of a GET-only feature');
  t.notOk(d.resetAdvertised, 'mtty does not advertise reset');
  t.doesNotThrow(() => d.reset(), 'but implements it');
  t.ok(d.isPci);
  t.throws(() => d.group.openDevice('not-a-device'), { code: 'ENODEV', message: /not-a-device/ });
});

t.test('irq: trigger, mask, unmask, iterator merging and ending', async (t) => {
  const k = sim();
  using c = VfioContainer.open({ sys: k });
  const d = c.openDevice(UUID_A);
  const intx = d.irq(VFIO_PCI_INTX_IRQ_INDEX);
  t.ok(intx.maskable && intx.automasked && intx.supportsEventfd);
  t.notOk(intx.noresize);
  intx.enable();
  const it = intx.signals();
  intx.trigger();
  const first = await it.next();
  t.same(first.value, { vector: 0, count: 1n }, 'loopback trigger delivered');
  intx.unmask();
  intx.mask();
  intx.unmask();
  // Two signals before the consumer asks: merged into one entry.
  const got: bigint[] = [];
  intx.on('signal', (_v, n) => got.push(n));
  intx.trigger();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  intx.unmask();
  intx.trigger();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  const merged = await it.next();
  t.equal(merged.value?.vector, 0);
  t.equal(merged.value?.count, 2n, 'two signals merged');
  t.same(got, [1n, 1n]);
  const pending = it.next();
  intx.disable();
  t.same(await pending, { value: undefined, done: true }, 'disable ends the iterator');
  t.throws(() => intx.enable(1, -1), VfioArgumentError);
  const msi = d.irq(VFIO_PCI_MSI_IRQ_INDEX);
  msi.enable();
  const it2 = msi.signals();
  t.same(await it2.return?.(), { value: undefined, done: true }, 'return() ends it');
  d.close();
  t.throws(() => msi.trigger(), VfioClosedError);
  t.same(await msi.signals().next(), { value: undefined, done: true }, 'a closed irq yields nothing');
});

t.test('mapped areas: widths, bounds, revocation', async (t) => {
  const k = new SimKernel();
  const m = k.allocPages(8192);
  const a = new MappedArea(0x1000, 8192, m, 'test area');
  t.ok(a.covers(0x1000, 8192) && !a.covers(0xfff, 2) && !a.covers(0x2fff, 2));
  a.write8(0, 0xab);
  a.write16(2, 0xbeef);
  a.write32(4, 0xdeadbeef);
  a.write64(8, 0x0123456789abcdefn);
  t.equal(a.read8(0), 0xab);
  t.equal(a.read16(2), 0xbeef);
  t.equal(a.read32(4), 0xdeadbeef);
  t.equal(a.read64(8), 0x0123456789abcdefn);
  t.same([...a.copyOut(0, 4)], [0xab, 0, 0xef, 0xbe]);
  a.copyIn(100, new Uint8Array([1, 2, 3]));
  t.same([...m.view(100, 3)], [1, 2, 3], 'writes land in the mapping');
  t.equal(a.address, m.address);
  t.throws(() => a.read32(2), VfioArgumentError, 'unaligned');
  t.throws(() => a.read8(8192), VfioArgumentError, 'past the end');
  t.throws(() => a.copyOut(8190, 4), VfioArgumentError);
  t.throws(() => a.copyOut(0, 4, new Uint8Array(2)), RangeError);
  a.unmap();
  t.notOk(a.mapped);
  t.ok(m.unmapped, 'the mapping was released');
  t.throws(() => a.read8(0), MappingRevokedError);
  t.throws(() => a.address, MappingRevokedError);
  t.doesNotThrow(() => a.unmap());
});

t.test('regions refuse what the kernel would and report short transfers', async (t) => {
  const k = sim();
  using c = VfioContainer.open({ sys: k });
  const d = c.openDevice(UUID_B);
  const bar1 = d.region(1);
  t.equal(bar1.size, 0, 'mtty-1 has no second port');
  t.throws(() => bar1.read8(0), VfioArgumentError);
  t.throws(() => d.region(0).mmap(), { code: 'ERR_VFIO_INVALID_ARGUMENT', message: /not mmap-able/ });
  t.throws(() => d.region(0).readBytes(4, 8), VfioArgumentError);
  t.throws(() => d.region(-1), VfioArgumentError);
  const cfg = d.region(7);
  t.same(cfg.readBytes(0, 4), new Uint8Array([0x48, 0x43, 0x53, 0x32]));
  cfg.writeBytes(0x3c, new Uint8Array([5]));
  t.equal(cfg.read8(0x3c), 5, 'interrupt line is writable');
  t.equal(cfg.refresh().size, 255, 'refresh re-reads the info');
  cfg.close();
  t.throws(() => cfg.read8(0), VfioClosedError);
  // A short read from the kernel is a uAPI violation, not silently returned garbage.
  const k2 = sim();
  using c2 = VfioContainer.open({ sys: k2 });
  const d2 = c2.openDevice(UUID_A);
  k2.faults.inject({ syscall: 'pread', nth: 1, errno: 'EIO' });
  t.throws(() => d2.region(0).read8(5), { code: 'EIO', syscall: 'pread', op: 'read region 0', device: UUID_A });
  const r = d2.region(0);
  const orig = k2.pread.bind(k2);
  k2.pread = () => 0;
  t.throws(() => r.read32(0), UapiFormatError);
  k2.pread = orig;
});

t.test('simulator: fault injection and syscall trace', async (t) => {
  const k = sim();
  using c = VfioContainer.open({ sys: k });
  const d = c.openDevice(UUID_A);
  const undo = k.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_GET_IRQ_INFO, nth: 2, errno: 'ENOMEM' });
  t.equal(k.faults.pending, 1);
  t.doesNotThrow(() => d.irqInfo(0), 'first call passes');
  expectErrno(t, () => d.irqInfo(0), 'ENOMEM', 'second call fails');
  t.doesNotThrow(() => d.irqInfo(0), 'third passes again');
  t.equal(k.faults.pending, 0);
  undo();
  k.faults.inject({ syscall: 'ioctl', fdKind: 'device', label: UUID_A, nth: 1, errno: 5, times: 2 });
  expectErrno(t, () => d.irqInfo(1), 'EIO', 'numeric errno, matched by label');
  expectErrno(t, () => d.irqInfo(1), 'EIO', 'twice');
  t.doesNotThrow(() => d.irqInfo(1));
  k.faults.clear();
  t.throws(() => k.faults.inject({ syscall: 'ioctl', nth: 0, errno: 'EIO' }), RangeError);
  const trace = k.startTrace();
  d.irq(VFIO_PCI_MSI_IRQ_INDEX).enable(1);
  const rec = k.stopTrace();
  t.equal(rec, trace);
  const set = rec.find((r) => r.request === VFIO_DEVICE_SET_IRQS);
  t.equal(set?.op, 'VFIO_DEVICE_SET_IRQS');
  t.equal(set?.kind, 'device');
  t.equal(set?.label, UUID_A);
  t.equal(set?.result, 0);
  t.equal(set?.arg?.byteLength, 24, 'a copy of the argument');
  t.ok(rec.some((r) => r.syscall === 'eventfd'), 'the eventfd was traced');
  k.startTrace();
  expectErrno(t, () => k.ioctl(999, 0), 'EBADF', 'bad fd');
  t.equal(k.stopTrace()[0]?.result, 'EBADF');
  t.throws(() => k.watch(999, () => undefined), VfioSystemError);
});
