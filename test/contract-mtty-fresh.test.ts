/**
 * mtty's quirk, on both backends: its IRQ ioctls check the index against a
 * copy of the device info that only VFIO_DEVICE_GET_INFO fills, so they fail
 * with EINVAL until GET_INFO ran once on the mdev. On the real kernel this
 * holds only for an mdev nobody used yet: `test/kernel.ts` runs it first.
 */
import t from 'tap';
import { VfioContainer } from '../lib/vfio/container.js';
import { VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX } from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_GET_INFO, VFIO_DEVICE_SET_IRQS, VFIO_GROUP_GET_DEVICE_FD } from '../lib/vfio/uapi/ioctls.js';
import { irqSetEventfd, irqSetNone } from '../lib/vfio/uapi/irq-set.js';
import { EFD_CLOEXEC, EFD_NONBLOCK } from '../lib/sys/sys.js';
import { encode } from '../lib/vfio/uapi/layout.js';
import { vfio_device_info, vfio_irq_info } from '../lib/vfio/uapi/structs.js';
import { locateDevice } from '../lib/vfio/discovery.js';
import { backend } from './helpers/backend.js';
import { expectErrno } from './helpers/expect.js';

t.test('mtty: IRQ ioctls fail with EINVAL until VFIO_DEVICE_GET_INFO ran', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const uuid = b.mttys[1];
  const group = c.openGroup(locateDevice(b.sys, uuid).groupId);
  const fd = b.sys.ioctl(group.fd, VFIO_GROUP_GET_DEVICE_FD, new TextEncoder().encode(`${uuid}\0`));
  try {
    const irqInfo = (): number => b.sys.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, encode(vfio_irq_info, { argsz: 16, index: VFIO_PCI_MSI_IRQ_INDEX }));
    const efd = b.sys.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    const enableMsi = (): number => b.sys.ioctl(fd, VFIO_DEVICE_SET_IRQS, irqSetEventfd(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, [efd]));
    try {
      expectErrno(t, irqInfo, 'EINVAL', 'GET_IRQ_INFO before GET_INFO');
      expectErrno(t, enableMsi, 'EINVAL', 'SET_IRQS before GET_INFO');
      b.sys.ioctl(fd, VFIO_DEVICE_GET_INFO, encode(vfio_device_info, { argsz: vfio_device_info.size }));
      t.equal(irqInfo(), 0, 'GET_IRQ_INFO works after GET_INFO');
      t.equal(enableMsi(), 0, 'SET_IRQS works after GET_INFO');
      const disable = irqSetNone(VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX, 0, 0);
      t.equal(b.sys.ioctl(fd, VFIO_DEVICE_SET_IRQS, disable), 0, 'and MSI disables again');
    } finally {
      b.sys.close(efd);
    }
  } finally {
    b.sys.close(fd);
  }
});
