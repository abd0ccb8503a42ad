/**
 * Raw-`Sys` plumbing for the mtty simulator tests: open a device the way a
 * VMM does (container, group, SET_CONTAINER, SET_IOMMU, GET_DEVICE_FD by
 * UUID), and encode the ioctl arguments with the uapi codecs.
 */
import { VfioSystemError } from '../../lib/errors.js';
import type { SimKernel } from '../../lib/sim/kernel.js';
import type { SimMtty } from '../../lib/sim/mtty.js';
import { O_RDWR } from '../../lib/sys/sys.js';
import {
  VFIO_DEVICE_FEATURE_GET,
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_FEATURE_SET,
  VFIO_TYPE1v2_IOMMU,
} from '../../lib/vfio/uapi/constants.js';
import { featureBuffer, featurePayload } from '../../lib/vfio/uapi/feature.js';
import {
  VFIO_DEVICE_FEATURE,
  VFIO_DEVICE_GET_INFO,
  VFIO_DEVICE_GET_IRQ_INFO,
  VFIO_DEVICE_GET_REGION_INFO,
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_SET_IOMMU,
} from '../../lib/vfio/uapi/ioctls.js';
import { dataView, decode, encode, type Decoded } from '../../lib/vfio/uapi/layout.js';
import { vfio_device_feature_mig_state, vfio_device_info, vfio_irq_info, vfio_region_info } from '../../lib/vfio/uapi/structs.js';

/** An mtty opened through the VFIO group path. */
export interface OpenMtty {
  readonly container: number;
  readonly group: number;
  readonly fd: number;
}

/** Opens `device` in a container of its own, as a VMM does. */
export function openMtty(kernel: SimKernel, device: SimMtty): OpenMtty {
  const container = kernel.open('/dev/vfio/vfio', O_RDWR);
  const groupId = kernel.readlink(`/sys/bus/mdev/devices/${device.name}/iommu_group`).split('/').at(-1) ?? '';
  const group = kernel.open(`/dev/vfio/${groupId}`, O_RDWR);
  const cfd = new Uint8Array(4);
  dataView(cfd).setInt32(0, container, true);
  kernel.ioctl(group, VFIO_GROUP_SET_CONTAINER, cfd);
  kernel.ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
  const fd = kernel.ioctl(group, VFIO_GROUP_GET_DEVICE_FD, new TextEncoder().encode(`${device.name}\0`));
  return { container, group, fd };
}

/** Closes the device, group and container fds. */
export function closeMtty(kernel: SimKernel, m: OpenMtty): void {
  kernel.close(m.fd);
  kernel.close(m.group);
  kernel.close(m.container);
}

/** The errno name a call fails with, or `'ok'`. */
export function errnoOf(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    if (e instanceof VfioSystemError) return e.code;
    throw e;
  }
}

/** VFIO_DEVICE_GET_INFO with a full 24-byte struct. */
export function getInfo(kernel: SimKernel, fd: number): Decoded<typeof vfio_device_info> {
  const buf = encode(vfio_device_info, { argsz: vfio_device_info.size });
  kernel.ioctl(fd, VFIO_DEVICE_GET_INFO, buf);
  return decode(vfio_device_info, buf);
}

export function regionInfo(kernel: SimKernel, fd: number, index: number): Decoded<typeof vfio_region_info> {
  const buf = encode(vfio_region_info, { argsz: vfio_region_info.size, index });
  kernel.ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, buf);
  return decode(vfio_region_info, buf);
}

export function irqInfo(kernel: SimKernel, fd: number, index: number): Decoded<typeof vfio_irq_info> {
  const buf = encode(vfio_irq_info, { argsz: vfio_irq_info.size, index });
  kernel.ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, buf);
  return decode(vfio_irq_info, buf);
}

/** MIG_DEVICE_STATE SET: the `data_fd` the kernel copied back (-1 when none). */
export function setMigState(kernel: SimKernel, fd: number, state: number): number {
  const buf = featureBuffer(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, vfio_device_feature_mig_state.size);
  encode(vfio_device_feature_mig_state, { device_state: state, data_fd: -2 }, featurePayload(buf));
  kernel.ioctl(fd, VFIO_DEVICE_FEATURE, buf);
  return decode(vfio_device_feature_mig_state, featurePayload(buf)).data_fd;
}

/** MIG_DEVICE_STATE GET. */
export function getMigState(kernel: SimKernel, fd: number): number {
  const buf = featureBuffer(VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, vfio_device_feature_mig_state.size);
  kernel.ioctl(fd, VFIO_DEVICE_FEATURE, buf);
  return decode(vfio_device_feature_mig_state, featurePayload(buf)).device_state;
}

/** Device-fd offset of `offset` in region `index` (mtty: index << 40). */
export function regionOffset(index: number, offset = 0): bigint {
  return (BigInt(index) << 40n) + BigInt(offset);
}

/** One-byte register write to UART `bar` (0 or 1). */
export function outb(kernel: SimKernel, fd: number, bar: number, reg: number, value: number): void {
  kernel.pwrite(fd, Uint8Array.of(value), regionOffset(bar, reg));
}

/** One-byte register read from UART `bar`. */
export function inb(kernel: SimKernel, fd: number, bar: number, reg: number): number {
  const b = new Uint8Array(1);
  kernel.pread(fd, b, regionOffset(bar, reg));
  return b[0];
}

/** Reads a data fd until it returns 0; the bytes read. */
export function drain(kernel: SimKernel, fd: number, chunk = 4096): Uint8Array {
  const parts: number[] = [];
  const buf = new Uint8Array(chunk);
  for (;;) {
    const n = kernel.read(fd, buf);
    if (n === 0) return Uint8Array.from(parts);
    parts.push(...buf.subarray(0, n));
  }
}
