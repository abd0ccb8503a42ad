/**
 * A device opened through its vfio cdev and bound to an iommufd is a
 * `VfioDevice` like a group's (`IommufdDevice.device`): it has no group, its
 * migration hooks open on it, and the binding and the device share one fd
 * and one life: closing either closes both, and a failed GET_INFO closes the cdev.
 */
import t from 'tap';
import { VfioClosedError } from '../lib/errors.js';
import { noConfigState } from '../lib/migration/config-state.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { addDmaDevice } from '../lib/sim/dma-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { Iommufd } from '../lib/vfio/iommufd.js';
import { IommufdDevice } from '../lib/vfio/iommufd-device.js';
import { VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_STATE_RUNNING, VFIO_MIGRATION_PRE_COPY } from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_INFO } from '../lib/vfio/uapi/ioctls.js';
import { thrown } from './helpers/expect.js';

function bound() {
  const sim = new SimKernel({ iommufd: true });
  const dma = addDmaDevice(sim, { mode: 'iommu' });
  const base = sim.openFds;
  const fd = Iommufd.open({ sys: sim });
  const idev = IommufdDevice.bind(fd, dma.name);
  return { sim, dma, fd, idev, base };
}

t.test('the device over a bound cdev', async (t) => {
  const { sim, fd, idev, base } = bound();
  const device = idev.device;
  t.equal(idev.device, device, 'made once');
  t.equal(device.group, null, 'no group opened it');
  t.equal(device.fd, idev.fd, 'the cdev fd is the device fd');
  t.equal(device.name, '0000:00:05.0');
  t.ok((device.info.flags & VFIO_DEVICE_FLAGS_PCI) !== 0, 'GET_INFO answered through the cdev');
  // The simulated DMA device has no config space to carry.
  using m = VfioMigration.open(device, { config: noConfigState });
  t.equal(m.driver.protocol, 'v2');
  t.ok((m.driver.flags & VFIO_MIGRATION_PRE_COPY) !== 0);
  t.equal(m.state, VFIO_DEVICE_STATE_RUNNING, 'and its migration hooks open on it');
  m.close();
  idev.close();
  t.ok(device.closed, 'closing the binding closes the device');
  t.throws(() => idev.device, VfioClosedError);
  fd.close();
  t.equal(sim.openFds, base, 'no fd left');
});

t.test('closing the device ends the binding', async (t) => {
  const { sim, fd, idev, base } = bound();
  idev.device.close();
  t.ok(idev.closed, 'the binding is closed with its fd');
  idev.close();
  t.throws(() => idev.attach(1), VfioClosedError);
  fd.close();
  t.equal(sim.openFds, base, 'the fd was closed once');
});

t.test('a failed GET_INFO closes the cdev', async (t) => {
  const { sim, fd, idev, base } = bound();
  sim.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_GET_INFO, nth: 1, errno: 'EIO' });
  t.match(thrown(() => idev.device), { code: 'EIO', op: 'VFIO_DEVICE_GET_INFO' });
  t.type(thrown(() => idev.device), VfioClosedError, 'the binding is gone');
  t.ok(idev.closed);
  idev.close();
  fd.close();
  t.equal(sim.openFds, base, 'no fd left');
});

t.test('a binding closed before its device was asked for', async (t) => {
  const { sim, fd, idev, base } = bound();
  idev.close();
  t.type(thrown(() => idev.device), VfioClosedError);
  fd.close();
  t.equal(sim.openFds, base);
});
