/**
 * An IOMMU group, `/dev/vfio/<N>`: viability, membership in a container,
 * and the devices opened through it.
 */
import { attempt, throwCollected } from '../attempt.js';
import { DeviceNotFoundError, VfioArgumentError, VfioClosedError } from '../errors.js';
import { O_CLOEXEC, O_RDWR, type Sys } from '../sys/sys.js';
import type { VfioContainer } from './container.js';
import { VfioDevice } from './device.js';
import { ioctl, syscall, type IoctlTarget } from './ioctl.js';
import { VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE } from './uapi/constants.js';
import { VFIO_GROUP_GET_DEVICE_FD, VFIO_GROUP_GET_STATUS, VFIO_GROUP_SET_CONTAINER, VFIO_GROUP_UNSET_CONTAINER } from './uapi/ioctls.js';
import { dataView, decode, encode } from './uapi/layout.js';
import { vfio_group_status } from './uapi/structs.js';

/** `VFIO_GROUP_GET_STATUS`, decoded. */
export interface GroupStatus {
  /** Every device of the group is bound to a VFIO driver (or none is in use by the host). */
  readonly viable: boolean;
  /** The group is attached to a container. */
  readonly containerSet: boolean;
}

export class VfioGroup implements IoctlTarget, Disposable {
  readonly kind = 'group';
  readonly fd: number;
  readonly #devices = new Set<VfioDevice<VfioGroup>>();
  #container: VfioContainer | null = null;
  #closed = false;

  /**
   * Opens `/dev/vfio/<id>` and checks that the group is viable.
   * @throws DeviceNotFoundError when the group is not viable
   */
  constructor(
    readonly id: number,
    readonly sys: Sys,
  ) {
    const path = `/dev/vfio/${id}`;
    this.fd = syscall({ label: path }, 'open group', () => sys.open(path, O_RDWR | O_CLOEXEC));
    try {
      if (!this.status().viable) {
        throw new DeviceNotFoundError(path, 'the group is not viable: bind every device in it to vfio (or unbind it from its host driver)');
      }
    } catch (e) {
      sys.close(this.fd);
      throw e;
    }
  }

  get label(): string {
    return `/dev/vfio/${this.id}`;
  }
  /** The container this group is attached to. */
  get container(): VfioContainer | null {
    return this.#container;
  }
  /** Devices opened through this group and not yet closed. */
  get devices(): ReadonlySet<VfioDevice<VfioGroup>> {
    return this.#devices;
  }
  get closed(): boolean {
    return this.#closed;
  }

  status(): GroupStatus {
    this.#open();
    const buf = encode(vfio_group_status, { argsz: vfio_group_status.size });
    ioctl(this, VFIO_GROUP_GET_STATUS, buf);
    const { flags } = decode(vfio_group_status, buf);
    return { viable: (flags & VFIO_GROUP_FLAGS_VIABLE) !== 0, containerSet: (flags & VFIO_GROUP_FLAGS_CONTAINER_SET) !== 0 };
  }

  /** @internal `VFIO_GROUP_SET_CONTAINER`; use {@link VfioContainer.addGroup}. */
  setContainer(container: VfioContainer): void {
    this.#open();
    if (this.#container !== null) throw new VfioArgumentError('VFIO_GROUP_SET_CONTAINER', `${this.label} is already in a container`);
    const arg = new Uint8Array(4);
    dataView(arg).setInt32(0, container.fd, true);
    ioctl(this, VFIO_GROUP_SET_CONTAINER, arg);
    this.#container = container;
  }

  /** @internal `VFIO_GROUP_UNSET_CONTAINER`; use {@link VfioContainer.removeGroup}. */
  unsetContainer(): void {
    this.#open();
    if (this.#container === null) return;
    ioctl(this, VFIO_GROUP_UNSET_CONTAINER);
    this.#container = null;
  }

  /**
   * Opens the device `name` (its PCI address or mdev UUID) in this group.
   * The group must be in a container whose IOMMU is set.
   */
  openDevice(name: string): VfioDevice<VfioGroup> {
    this.#open();
    const arg = new TextEncoder().encode(`${name}\0`);
    // Errors name the device asked for, not just the group.
    const fd = ioctl({ sys: this.sys, fd: this.fd, kind: 'group', label: `${name} (${this.label})` }, VFIO_GROUP_GET_DEVICE_FD, arg);
    const device = new VfioDevice<VfioGroup>(this.sys, this, name, fd, (d) => this.#devices.delete(d));
    this.#devices.add(device);
    return device;
  }

  /**
   * Closes the devices opened through the group, leaves the container and
   * closes the group fd. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    const errors: unknown[] = [];
    for (const d of [...this.#devices]) attempt(errors, () => d.close());
    attempt(errors, () => this.#container?.removeGroup(this));
    this.#closed = true;
    attempt(errors, () => this.sys.close(this.fd));
    throwCollected(errors, `closing ${this.label} failed`);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(this.label);
  }
}
