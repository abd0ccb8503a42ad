/**
 * A VFIO device opened through its cdev (`/dev/vfio/devices/vfioN`) and
 * bound to an iommufd, as QEMU's iommufd backend does: BIND_IOMMUFD gives the
 * device id that HWPT allocation and GET_HW_INFO take, and
 * ATTACH/DETACH_IOMMUFD_PT move the device's DMA between page tables. Once
 * bound, the cdev fd is a device fd like a group's: {@link IommufdDevice.device}
 * is the {@link VfioDevice} over it (regions, IRQs, features, migration).
 */
import { DeviceNotFoundError, VfioClosedError } from '../errors.js';
import { O_CLOEXEC, O_RDWR, type Sys } from '../sys/sys.js';
import { VfioDevice } from './device.js';
import { ioctl, syscall, type IoctlTarget } from './ioctl.js';
import type { Iommufd } from './iommufd.js';
import { VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT } from './uapi/ioctls.js';
import { decode, encode } from './uapi/layout.js';
import { vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt } from './uapi/structs.js';

const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;

/** The sysfs directory of a device given as a sysfs path, a PCI address or an mdev UUID. */
function sysfsDir(spec: string): string {
  if (spec.startsWith('/')) return spec;
  return PCI_ADDRESS.test(spec) ? `/sys/bus/pci/devices/${spec}` : `/sys/bus/mdev/devices/${spec}`;
}

/** A device cdev bound to an iommufd; owns the cdev fd. */
export class IommufdDevice implements IoctlTarget, Disposable {
  readonly kind = 'device';
  readonly fd: number;
  /** The device id in the iommufd (`out_devid`). */
  readonly devId: number;
  #closed = false;
  /** The device over the cdev, once asked for: it then owns the fd. */
  #device: VfioDevice<null> | undefined;

  private constructor(
    readonly sys: Sys,
    readonly label: string,
    readonly iommufd: Iommufd,
  ) {
    // A closed context's fd number may already belong to another file: never pass it to BIND.
    iommufd.check();
    const dir = `${sysfsDir(label)}/vfio-dev`;
    const cdev = syscall(this, 'find vfio cdev', () => sys.readdir(dir)).find((n) => n.startsWith('vfio'));
    if (cdev === undefined) throw new DeviceNotFoundError(label, `no vfio cdev under ${dir} (a kernel without CONFIG_VFIO_DEVICE_CDEV?)`);
    this.fd = syscall(this, 'open vfio cdev', () => sys.open(`/dev/vfio/devices/${cdev}`, O_RDWR | O_CLOEXEC));
    try {
      const arg = encode(vfio_device_bind_iommufd, { argsz: vfio_device_bind_iommufd.size, flags: 0, iommufd: iommufd.fd });
      ioctl(this, VFIO_DEVICE_BIND_IOMMUFD, arg);
      this.devId = decode(vfio_device_bind_iommufd, arg).out_devid;
    } catch (e) {
      sys.close(this.fd);
      throw e;
    }
    iommufd.adoptDevice(this);
  }

  /**
   * Opens the cdev of `spec` (sysfs path, PCI address or mdev UUID) and binds
   * it to `iommufd`, which closes the device when it is closed itself.
   */
  static bind(iommufd: Iommufd, spec: string): IommufdDevice {
    return new IommufdDevice(iommufd.sys, spec, iommufd);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * The {@link VfioDevice} over the bound cdev, made on first use (its
   * `VFIO_DEVICE_GET_INFO` is the first device ioctl, as in QEMU after the
   * attach). It shares this binding's fd: closing either closes both, and if
   * GET_INFO fails the cdev is closed too.
   */
  get device(): VfioDevice<null> {
    this.#open();
    if (this.#device === undefined) {
      try {
        this.#device = new VfioDevice(this.sys, null, this.label, this.fd, () => this.#released());
      } catch (e) {
        // The device took the fd and closed it.
        this.#released();
        throw e;
      }
    }
    return this.#device;
  }

  /** `VFIO_DEVICE_ATTACH_IOMMUFD_PT` to a HWPT or an IOAS id; returns the HWPT the kernel attached (for an IOAS, one it found or made). */
  attach(ptId: number): number {
    this.#open();
    const arg = encode(vfio_device_attach_iommufd_pt, { argsz: vfio_device_attach_iommufd_pt.size, flags: 0, pt_id: ptId });
    ioctl(this, VFIO_DEVICE_ATTACH_IOMMUFD_PT, arg);
    return decode(vfio_device_attach_iommufd_pt, arg).pt_id;
  }

  /** `VFIO_DEVICE_DETACH_IOMMUFD_PT`. */
  detach(): void {
    this.#open();
    ioctl(this, VFIO_DEVICE_DETACH_IOMMUFD_PT, encode(vfio_device_detach_iommufd_pt, { argsz: vfio_device_detach_iommufd_pt.size, flags: 0 }));
  }

  /** Closes the cdev (through its {@link device}, if made): the kernel unbinds and closes the device. Idempotent. */
  close(): void {
    if (this.#closed) return;
    if (this.#device !== undefined) {
      this.#device.close();
      return;
    }
    this.#released();
    this.sys.close(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`device ${this.label}`);
  }

  /** The cdev fd is closed (or about to be): the context forgets the device. */
  #released(): void {
    this.#closed = true;
    this.iommufd.forgetDevice(this);
  }
}
