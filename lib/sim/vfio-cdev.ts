/**
 * The simulated vfio device cdev (`/dev/vfio/devices/vfioN`,
 * drivers/vfio/device_cdev.c), for kernels built with iommufd: every ioctl
 * but BIND_IOMMUFD fails EINVAL until the fd is bound to an iommufd; bind
 * opens the device, ATTACH/DETACH_IOMMUFD_PT move it between page tables,
 * and everything else goes to the ordinary device file.
 */
import { VFIO_DEVICE_ATTACH_IOMMUFD_PT, VFIO_DEVICE_BIND_IOMMUFD, VFIO_DEVICE_DETACH_IOMMUFD_PT } from '../vfio/uapi/ioctls.js';
import { decode, encode } from '../vfio/uapi/layout.js';
import { vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd, vfio_device_detach_iommufd_pt } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { FileOps, IoctlArg, SimFile, SimMmap } from './file.js';
import { SimIommufd, type SimIommufdDomain } from './iommufd.js';
import type { SimSyscalls } from './syscalls.js';
import { SimDeviceFile, type SimVfioDevice } from './vfio-device.js';

/** A device bound to an iommufd: the context and its `devid`. */
export interface SimIommufdBinding {
  readonly iommufd: SimIommufd;
  readonly devId: number;
}

interface Bound extends SimIommufdBinding {
  readonly file: SimFile;
  readonly inner: SimDeviceFile;
}

/** The file behind an opened device cdev. */
export class SimCdevFile implements FileOps {
  readonly kind = 'device';
  #bound: Bound | null = null;

  constructor(
    private readonly device: SimVfioDevice,
    private readonly domain: SimIommufdDomain,
    private readonly kernel: SimSyscalls,
    /** Tells the kernel where the device's DMA goes now (null: unbound). */
    private readonly onBinding: (binding: SimIommufdBinding | null) => void,
  ) {}

  get label(): string {
    return this.device.name;
  }

  ioctl(request: number, arg: IoctlArg): number {
    if (request === VFIO_DEVICE_BIND_IOMMUFD) return this.#bind(arg);
    const b = this.#granted();
    if (request === VFIO_DEVICE_ATTACH_IOMMUFD_PT) {
      const buf = userBuf(arg, vfio_device_attach_iommufd_pt.size);
      const a = decode(vfio_device_attach_iommufd_pt, buf);
      if (a.argsz < vfio_device_attach_iommufd_pt.size || a.flags !== 0) fail('EINVAL');
      encode(vfio_device_attach_iommufd_pt, { pt_id: b.iommufd.attach(b.devId, a.pt_id) }, buf);
      return 0;
    }
    if (request === VFIO_DEVICE_DETACH_IOMMUFD_PT) {
      const d = decode(vfio_device_detach_iommufd_pt, userBuf(arg, vfio_device_detach_iommufd_pt.size));
      if (d.argsz < vfio_device_detach_iommufd_pt.size || d.flags !== 0) fail('EINVAL');
      b.iommufd.detach(b.devId);
      return 0;
    }
    return b.inner.ioctl(request, arg);
  }

  read(buf: Uint8Array, pos: bigint | null): number {
    return this.#granted().inner.read(buf, pos);
  }

  write(buf: Uint8Array, pos: bigint | null): number {
    return this.#granted().inner.write(buf, pos);
  }

  mmap(offset: bigint, length: number, prot: number): SimMmap {
    return this.#granted().inner.mmap(offset, length, prot);
  }

  release(): void {
    const b = this.#bound;
    if (b === null) return;
    this.#bound = null;
    b.iommufd.unbindDevice(b.devId);
    this.onBinding(null);
    this.device.openCount--;
    if (this.device.openCount === 0) this.device.closeDevice();
    b.file.put();
  }

  /** `vfio_df_ioctl_bind_iommufd`. */
  #bind(arg: IoctlArg): number {
    const buf = userBuf(arg, vfio_device_bind_iommufd.size);
    const bind = decode(vfio_device_bind_iommufd, buf);
    if (bind.argsz < vfio_device_bind_iommufd.size || bind.flags !== 0 || bind.iommufd < 0) fail('EINVAL');
    // vfio_device_block_group: not while the device is open through its group.
    if (this.device.openCount > 0 && this.#bound === null) fail('EBUSY');
    if (this.#bound !== null) fail('EINVAL');
    const file = this.kernel.fileOf(bind.iommufd);
    if (!(file.ops instanceof SimIommufd)) fail('EBADFD');
    const iommufd = file.ops;
    if (this.device.openCount === 0) this.device.openDevice();
    this.device.openCount++;
    const devId = iommufd.bindDevice(this.domain);
    this.#bound = { iommufd, devId, file: file.get(), inner: new SimDeviceFile(this.device, this.kernel, () => undefined) };
    this.onBinding({ iommufd, devId });
    encode(vfio_device_bind_iommufd, { out_devid: devId }, buf);
    return 0;
  }

  #granted(): Bound {
    if (this.#bound === null) fail('EINVAL');
    return this.#bound;
  }
}
