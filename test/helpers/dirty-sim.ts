/**
 * Simulated set-ups for dirty tracking: a DMA device writing into a guest RAM
 * buffer mapped for DMA, wired so that {@link createDirtyTracker} picks a
 * given tracker, and the copy loop a VMM runs with it.
 */
import { SimKernel } from '../../lib/sim/kernel.js';
import { addDmaDevice, type SimDmaDevice } from '../../lib/sim/dma-device.js';
import type { Mapping } from '../../lib/sys/sys.js';
import { VfioContainer } from '../../lib/vfio/container.js';
import type { VfioDevice } from '../../lib/vfio/device.js';
import { DirtyBitmap } from '../../lib/vfio/dirty-bitmap.js';
import type { DirtyTrackerKind, DirtyTrackerOptions } from '../../lib/vfio/dirty-tracker.js';
import { Iommufd } from '../../lib/vfio/iommufd.js';
import { IommufdDevice } from '../../lib/vfio/iommufd-device.js';

/** The trackers of the "done when", plus type1 over `vfio_dma_rw`. */
export type Scenario = 'device-logging' | 'type1-pinned' | 'type1-rw' | 'iommufd' | 'all-dirty';

/** Which tracker each scenario must end up with. */
export const EXPECTED_KIND: Record<Scenario, DirtyTrackerKind> = {
  'device-logging': 'device-logging',
  'type1-pinned': 'type1',
  'type1-rw': 'type1',
  iommufd: 'iommufd',
  'all-dirty': 'all-dirty',
};

/** Where guest RAM is mapped (identity layout: bitmap page = IOVA / 4096). */
export const RAM_IOVA = 0x100000n;
export const PAGE = 4096;

export interface DmaSetup extends Disposable {
  readonly sim: SimKernel;
  readonly dma: SimDmaDevice;
  /** Guest RAM, mapped for DMA at {@link RAM_IOVA}. */
  readonly ram: Mapping;
  readonly ramPages: number;
  /** Bitmap pages: up to the end of RAM. */
  readonly bitmapPages: number;
  readonly trackerOptions: DirtyTrackerOptions;
  /** The VFIO device: opened through its group, or (iommufd) through its cdev. */
  readonly device: VfioDevice;
  /** The type1 container (null for iommufd). */
  readonly container: VfioContainer | null;
}

/** Options of {@link dmaSetup}. */
export interface DmaSetupOptions {
  readonly ramPages?: number;
  readonly seed?: number;
  /** The page size the device logs at, whatever START asks. */
  readonly logPageSize?: bigint;
}

/** A fresh simulated kernel with a DMA device wired for `scenario`, RAM mapped and the engine pointed at it. */
export function dmaSetup(scenario: Scenario, options: DmaSetupOptions = {}): DmaSetup {
  const ramPages = options.ramPages ?? 256;
  const sim = new SimKernel({ iommufd: scenario === 'iommufd' });
  const mode = scenario === 'type1-pinned' ? 'pin' : scenario === 'type1-rw' ? 'rw' : 'iommu';
  const dma = addDmaDevice(sim, {
    mode,
    logging: scenario === 'device-logging',
    seed: options.seed ?? 7,
    ...(options.logPageSize === undefined ? {} : { logPageSize: options.logPageSize }),
  });
  const ram = sim.allocPages(ramPages * PAGE);
  const bitmapPages = Number(RAM_IOVA) / PAGE + ramPages;
  dma.configure({ iova: RAM_IOVA, size: ramPages * PAGE, writeBytes: 48 });
  const base = { sim, dma, ram, ramPages, bitmapPages };
  if (scenario === 'iommufd') {
    const fd = Iommufd.open({ sys: sim });
    const idev = IommufdDevice.bind(fd, dma.name);
    const ioas = fd.allocIoas();
    const hwpt = fd.allocHwpt({ devId: idev.devId, ioas, dirtyTracking: true });
    idev.attach(hwpt.id);
    ioas.map({ iova: RAM_IOVA, buffer: ram });
    return {
      ...base,
      device: idev.device,
      container: null,
      trackerOptions: { iommufd: { ioas, hwpts: [hwpt] } },
      [Symbol.dispose]: () => {
        idev.close();
        fd.close();
      },
    };
  }
  const container = VfioContainer.open({ sys: sim });
  const device = container.openDevice(dma.name);
  container.mapDma({ iova: RAM_IOVA, buffer: ram });
  const disable: DirtyTrackerKind[] = scenario === 'all-dirty' ? ['type1'] : [];
  return {
    ...base,
    device,
    container,
    trackerOptions: { container, devices: [device], disable },
    [Symbol.dispose]: () => container.close(),
  };
}

/** A VMM's copy of guest RAM: pages taken from the dirty bitmap are copied from the source. */
export class RamMirror {
  readonly dst: Uint8Array;
  copied = 0;

  constructor(
    private readonly src: Mapping,
    readonly firstPage: number,
  ) {
    this.dst = new Uint8Array(src.length);
  }

  /** Copies every page (the first pass of a precopy). */
  copyAll(): void {
    this.dst.set(this.src.view());
    this.copied += this.src.length / PAGE;
  }

  /** Takes the dirty runs of `bitmap` and copies them. */
  copyDirty(bitmap: DirtyBitmap): number {
    return bitmap.takeRuns((page, n) => {
      const at = (page - this.firstPage) * PAGE;
      this.dst.set(this.src.view(at, n * PAGE), at);
      this.copied += n;
    }, this.firstPage, this.src.length / PAGE);
  }

  /** True when the copy equals the source byte for byte. */
  matches(): boolean {
    return Buffer.compare(Buffer.from(this.dst), Buffer.from(this.src.view())) === 0;
  }
}
