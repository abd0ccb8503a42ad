/**
 * Fixtures for the saving-layout and remap-IRQ tests: two simulated
 * trap-BAR devices in one kernel, each opened in a container of its own with
 * its migration hooks, as two VMMs would.
 */
import { VfioMigration } from '../../lib/migration/hooks.js';
import { SimKernel } from '../../lib/sim/kernel.js';
import { addTrapBarDevice, type SimTrapBarDevice, type TrapBarDeviceOptions } from '../../lib/sim/trap-bar-device.js';
import { VfioContainer } from '../../lib/vfio/container.js';
import type { VfioDevice } from '../../lib/vfio/device.js';

export const SRC_UUID = '5a1e0000-0000-4000-8000-000000000001';
export const DST_UUID = '5a1e0000-0000-4000-8000-000000000002';
/** 16 pages of state by default. */
export const STATE_SIZE = 16 * 4096;

/** One side: the simulated device, its VFIO device and its hooks. */
export interface TrapBarSide {
  readonly sim: SimTrapBarDevice;
  readonly device: VfioDevice;
  readonly migration: VfioMigration;
}

/** A source and a destination trap-BAR device. */
export interface TrapBarPair extends Disposable {
  readonly kernel: SimKernel;
  readonly src: TrapBarSide;
  readonly dst: TrapBarSide;
}

type Options = Omit<TrapBarDeviceOptions, 'uuid' | 'seed' | 'stateSize'> & { readonly stateSize?: number };

/** Two devices of the same geometry with different content; the destination answers to the source's section name. */
export function trapBarPair(options: Options = {}): TrapBarPair {
  const kernel = new SimKernel();
  const stateSize = options.stateSize ?? STATE_SIZE;
  const a = addTrapBarDevice(kernel, { ...options, stateSize, uuid: SRC_UUID, seed: 1 });
  const b = addTrapBarDevice(kernel, { ...options, stateSize, uuid: DST_UUID, seed: 2 });
  const containers: VfioContainer[] = [];
  const side = (sim: SimTrapBarDevice, idstr?: string): TrapBarSide => {
    const container = VfioContainer.open({ sys: kernel });
    containers.push(container);
    const device = container.openDevice(sim.name);
    return { sim, device, migration: VfioMigration.open(device, idstr === undefined ? {} : { idstr }) };
  };
  const src = side(a);
  const dst = side(b, src.migration.idstr);
  return {
    kernel,
    src,
    dst,
    [Symbol.dispose]() {
      for (const s of [src, dst]) s.migration.close();
      for (const c of containers) c.close();
    },
  };
}
