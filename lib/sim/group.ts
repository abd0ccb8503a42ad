/**
 * A simulated IOMMU group and its `/dev/vfio/<N>` file (`drivers/vfio/group.c`):
 * status, SET/UNSET_CONTAINER and GET_DEVICE_FD with the kernel's errnos and
 * reference rules (one open at a time; an open device pins the group file and
 * keeps the container in use).
 */
import { VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE } from '../vfio/uapi/constants.js';
import {
  VFIO_GROUP_GET_DEVICE_FD,
  VFIO_GROUP_GET_STATUS,
  VFIO_GROUP_SET_CONTAINER,
  VFIO_GROUP_UNSET_CONTAINER,
} from '../vfio/uapi/ioctls.js';
import { dataView } from '../vfio/uapi/layout.js';
import { SimContainer } from './container.js';
import { fail, userBuf } from './errno.js';
import { SimFile, type FileOps, type IoctlArg } from './file.js';
import type { SimSyscalls } from './syscalls.js';
import type { SimIommuDomain, SimType1Group } from './type1.js';
import { SimDeviceFile, type SimVfioDevice } from './vfio-device.js';

const PAGE_SIZE = 4096;

export class SimGroup implements SimType1Group {
  readonly devices: SimVfioDevice[] = [];
  /** False when another driver claimed DMA ownership of the group (not viable for VFIO). */
  viable = true;
  #opened: SimFile | null = null;
  #container: { ops: SimContainer; file: SimFile } | null = null;
  #containerUsers = 0;

  constructor(
    readonly id: number,
    /** The hardware IOMMU domain for IOMMU-backed groups; `null` for emulated (mdev) groups. */
    readonly domain: SimIommuDomain | null,
    private readonly kernel: SimSyscalls,
  ) {}

  /** The container this group is attached to, if any. */
  get container(): SimContainer | null {
    return this.#container?.ops ?? null;
  }

  /** `vfio_group_fops_open`. */
  open(): number {
    if (this.devices.length === 0) fail('ENODEV');
    if (this.#opened !== null) fail('EBUSY');
    const file = new SimFile(new GroupFile(this));
    this.#opened = file;
    return this.kernel.installFile(file);
  }

  /** `vfio_group_fops_release`: runs once the fd and every device fd opened through it are closed. */
  release(): void {
    if (this.#container !== null) this.#detach();
    this.#opened = null;
  }

  getStatus(arg: IoctlArg): number {
    const buf = userBuf(arg, 8);
    const dv = dataView(buf);
    if (dv.getUint32(0, true) < 8) fail('EINVAL');
    let flags = 0;
    if (this.#container !== null) flags = VFIO_GROUP_FLAGS_CONTAINER_SET | VFIO_GROUP_FLAGS_VIABLE;
    else if (this.viable) flags = VFIO_GROUP_FLAGS_VIABLE;
    dv.setUint32(4, flags, true);
    return 0;
  }

  setContainer(arg: IoctlArg): number {
    const fd = dataView(userBuf(arg, 4)).getInt32(0, true);
    const file = this.kernel.fileOf(fd);
    if (this.#container !== null) fail('EINVAL');
    if (!(file.ops instanceof SimContainer)) fail('EBADFD');
    const container = file.ops;
    if (!this.viable) fail('EBUSY');
    container.attachGroup(this);
    this.#container = { ops: container, file: file.get() };
    this.#containerUsers = 1;
    return 0;
  }

  unsetContainer(): number {
    if (this.#container === null) fail('EINVAL');
    if (this.#containerUsers !== 1) fail('EBUSY');
    this.#detach();
    return 0;
  }

  /** `vfio_group_ioctl_get_device_fd` + `vfio_df_group_open`. */
  getDeviceFd(arg: IoctlArg): number {
    const buf = userBuf(arg, 1);
    // strndup_user(arg, PAGE_SIZE): the name must end within a page.
    const nul = buf.subarray(0, PAGE_SIZE).indexOf(0);
    if (nul < 0) fail(buf.byteLength >= PAGE_SIZE ? 'EINVAL' : 'EFAULT');
    const name = new TextDecoder().decode(buf.subarray(0, nul));
    const device = this.devices.find((d) => d.name === name);
    if (device === undefined) fail('ENODEV');
    const container = this.#container;
    if (container === null) fail('EINVAL');
    const opened = this.#opened;
    if (opened === null) fail('EBADF');
    if (device.openCount === 0) {
      if (container.ops.iommu === null) fail('EINVAL');
      device.openDevice();
      this.#containerUsers++;
      opened.get();
    }
    device.openCount++;
    const file = new SimFile(
      new SimDeviceFile(device, this.kernel, () => {
        device.openCount--;
        if (device.openCount === 0) {
          device.closeDevice();
          this.#containerUsers--;
          opened.put();
        }
      }),
    );
    return this.kernel.installFile(file);
  }

  #detach(): void {
    const c = this.#container;
    if (c === null) return;
    c.ops.detachGroup(this);
    this.#container = null;
    this.#containerUsers = 0;
    c.file.put();
  }
}

/** The file behind a group fd. */
class GroupFile implements FileOps {
  readonly kind = 'group';

  constructor(private readonly group: SimGroup) {}

  get label(): string {
    return `/dev/vfio/${this.group.id}`;
  }

  ioctl(request: number, arg: IoctlArg): number {
    switch (request) {
      case VFIO_GROUP_GET_DEVICE_FD:
        return this.group.getDeviceFd(arg);
      case VFIO_GROUP_GET_STATUS:
        return this.group.getStatus(arg);
      case VFIO_GROUP_SET_CONTAINER:
        return this.group.setContainer(arg);
      case VFIO_GROUP_UNSET_CONTAINER:
        return this.group.unsetContainer();
      default:
        fail('ENOTTY');
    }
  }

  release(): void {
    this.group.release();
  }
}
