/**
 * The simulated kernel with VFIO loaded: `/dev/vfio/vfio`, one IOMMU group per
 * registered device, and the sysfs entries discovery reads, laid out as on
 * Linux 6.12 (mdevs under their parent, PCI devices under their root bus).
 */
import { SimContainer } from './container.js';
import { fail } from './errno.js';
import { SimGroup } from './group.js';
import { SimIommufd } from './iommufd.js';
import { SimSyscalls } from './syscalls.js';
import type { SimIommuDomain, SimType1 } from './type1.js';
import { SimCdevFile, type SimIommufdBinding } from './vfio-cdev.js';
import type { SimVfioDevice } from './vfio-device.js';

/** Where an mdev hangs: its parent device and type, as under `mdev_supported_types`. */
export interface MdevPlacement {
  /** The parent device's sysfs path, e.g. `/sys/devices/virtual/mtty/mtty`. */
  readonly parent: string;
  /** The type directory name, e.g. `mtty-2`. */
  readonly type: string;
  /** The type's `name` attribute, e.g. `Dual port serial`. */
  readonly typeName: string;
}

/** Where a PCI device hangs and what sysfs says about it. */
export interface PciPlacement {
  /** The PCI address, `0000:00:03.0`. */
  readonly bdf: string;
  readonly vendor: number;
  readonly device: number;
  /** The hardware IOMMU the device sits behind. */
  readonly domain: SimIommuDomain;
  /** The IOMMU can track dirty pages for iommufd HWPTs (default false, like QEMU's emulated VT-d). */
  readonly iommuDirtyTracking?: boolean;
}

/** Options of {@link SimKernel}. */
export interface SimKernelOptions {
  /**
   * Build with iommufd and the vfio device cdev (`/dev/iommu`,
   * `/dev/vfio/devices/vfioN` for PCI devices). Default false: Debian's 6.12,
   * which has neither.
   */
  readonly iommufd?: boolean;
}

/** Where a device's DMA goes: the user memory behind an IOVA range (EFAULT when unmapped). */
export type SimDmaTranslate = (iova: bigint, length: number, write: boolean) => Uint8Array;

/**
 * An IOMMU like QEMU's emulated Intel one: 4 KiB, 2 MiB and 1 GiB pages, a
 * 48-bit aperture, and the MSI window reserved.
 */
export const INTEL_IOMMU_DOMAIN: SimIommuDomain = {
  pgsizeBitmap: 0x40201000n,
  iovaRanges: [
    { start: 0n, end: 0xfedfffffn },
    { start: 0xfef00000n, end: (1n << 48n) - 1n },
  ],
};

/**
 * A simulated Linux kernel with VFIO: a `Sys` to hand to the library, plus
 * methods to plug simulated devices in.
 */
export class SimKernel extends SimSyscalls {
  /** The IOMMU groups, by number. */
  readonly groups = new Map<number, SimGroup>();
  /** Built with iommufd and the device cdev. */
  readonly iommufd: boolean;
  readonly #bindings = new Map<SimVfioDevice, SimIommufdBinding>();
  #nextGroup = 0;
  #nextCdev = 0;

  constructor(options: SimKernelOptions = {}) {
    super();
    this.iommufd = options.iommufd === true;
    this.fs.chr('/dev/vfio/vfio', () => this.installOps(new SimContainer(this.memory)));
    for (const dir of ['/sys/kernel/iommu_groups', '/sys/bus/mdev/devices', '/sys/bus/pci/devices', '/sys/bus/pci/drivers/vfio-pci']) {
      this.fs.mkdir(dir);
    }
    if (this.iommufd) {
      this.fs.chr('/dev/iommu', () => this.installOps(new SimIommufd(this.memory)));
      this.fs.mkdir('/dev/vfio/devices');
    }
  }

  /**
   * Where `device`'s DMA goes: the iommufd page table it is attached to when
   * bound through its cdev, else its group's type1 container. Writes through
   * an iommufd HWPT set dirty bits; through type1 the kernel never sees them
   * (which is why type1 reports every page of such a group dirty).
   */
  dmaTranslate(device: SimVfioDevice): SimDmaTranslate {
    return (iova, length, write) => {
      const b = this.#bindings.get(device);
      if (b !== undefined) return b.iommufd.translate(b.devId, iova, length, write);
      const iommu = this.type1Of(device);
      if (iommu === null) fail('EFAULT');
      return iommu.translate(iova, length, write);
    };
  }

  /** The type1 IOMMU of the container `device`'s group is attached to, if any (for `vfio_pin_pages` and `vfio_dma_rw`). */
  type1Of(device: SimVfioDevice): SimType1 | null {
    return this.groupOf(device).container?.iommu ?? null;
  }

  /** Registers a mediated device (an emulated-IOMMU group of its own) named by its UUID. */
  addMdev(device: SimVfioDevice, at: MdevPlacement): SimGroup {
    const group = this.#newGroup(null, device);
    const uuid = device.name;
    const dir = `${at.parent}/${uuid}`;
    const typeDir = `${at.parent}/mdev_supported_types/${at.type}`;
    this.fs.mkdir(`${typeDir}/devices`);
    this.fs.file(`${typeDir}/name`, `${at.typeName}\n`);
    this.fs.file(`${typeDir}/device_api`, 'vfio-pci\n');
    this.fs.mkdir(dir);
    this.fs.symlink(`${dir}/iommu_group`, relative(dir, `/sys/kernel/iommu_groups/${group.id}`));
    this.fs.symlink(`${dir}/mdev_type`, relative(dir, typeDir));
    this.fs.symlink(`${typeDir}/devices/${uuid}`, relative(`${typeDir}/devices`, dir));
    this.fs.symlink(`/sys/bus/mdev/devices/${uuid}`, relative('/sys/bus/mdev/devices', dir));
    this.fs.symlink(`/sys/kernel/iommu_groups/${group.id}/devices/${uuid}`, relative(`/sys/kernel/iommu_groups/${group.id}/devices`, dir));
    return group;
  }

  /** Registers a PCI device bound to vfio-pci, in an IOMMU-backed group of its own. */
  addPciDevice(device: SimVfioDevice, at: PciPlacement): SimGroup {
    if (device.name !== at.bdf) throw new Error(`device name ${device.name} must be its PCI address ${at.bdf}`);
    const group = this.#newGroup(at.domain, device);
    const dir = `/sys/devices/pci${at.bdf.slice(0, 7)}/${at.bdf}`;
    this.fs.mkdir(dir);
    this.fs.file(`${dir}/vendor`, `0x${at.vendor.toString(16).padStart(4, '0')}\n`);
    this.fs.file(`${dir}/device`, `0x${at.device.toString(16).padStart(4, '0')}\n`);
    this.fs.symlink(`${dir}/iommu_group`, relative(dir, `/sys/kernel/iommu_groups/${group.id}`));
    this.fs.symlink(`${dir}/driver`, relative(dir, '/sys/bus/pci/drivers/vfio-pci'));
    this.fs.symlink(`/sys/bus/pci/devices/${at.bdf}`, relative('/sys/bus/pci/devices', dir));
    this.fs.symlink(`/sys/bus/pci/drivers/vfio-pci/${at.bdf}`, relative('/sys/bus/pci/drivers/vfio-pci', dir));
    this.fs.symlink(`/sys/kernel/iommu_groups/${group.id}/devices/${at.bdf}`, relative(`/sys/kernel/iommu_groups/${group.id}/devices`, dir));
    if (this.iommufd) {
      const name = `vfio${this.#nextCdev++}`;
      const domain = { ...at.domain, dirtyTracking: at.iommuDirtyTracking === true };
      this.fs.mkdir(`${dir}/vfio-dev/${name}`);
      this.fs.chr(`/dev/vfio/devices/${name}`, () =>
        this.installOps(
          new SimCdevFile(device, domain, this, (b) => {
            if (b === null) this.#bindings.delete(device);
            else this.#bindings.set(device, b);
          }),
        ),
      );
    }
    return group;
  }

  /** The group a registered device belongs to. */
  groupOf(device: SimVfioDevice): SimGroup {
    for (const g of this.groups.values()) if (g.devices.includes(device)) return g;
    fail('ENODEV');
  }

  #newGroup(domain: SimIommuDomain | null, device: SimVfioDevice): SimGroup {
    const group = new SimGroup(this.#nextGroup++, domain, this);
    group.devices.push(device);
    device.bind(this);
    this.groups.set(group.id, group);
    this.fs.mkdir(`/sys/kernel/iommu_groups/${group.id}/devices`);
    this.fs.chr(`/dev/vfio/${group.id}`, () => group.open());
    return group;
  }
}

/** The relative link target from directory `from` to `to`, as sysfs writes them. */
function relative(from: string, to: string): string {
  const a = from.split('/').filter(Boolean);
  const b = to.split('/').filter(Boolean);
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
}
