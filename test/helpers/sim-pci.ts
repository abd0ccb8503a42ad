/** Simulated PCI devices for unit tests: a kernel with one test function or one edu, opened through a container. */
import type { Test } from 'tap';
import { addEdu, type EduOptions, type SimEdu } from '../../lib/sim/edu.js';
import { SimKernel } from '../../lib/sim/kernel.js';
import { addTestDev, type SimTestDevDriver, type TestDevOptions } from '../../lib/sim/pci-testdev.js';
import type { SimVfioPciDevice } from '../../lib/sim/vfio-pci.js';
import { VfioContainer } from '../../lib/vfio/container.js';
import type { VfioDevice } from '../../lib/vfio/device.js';

/** A simulated kernel with one device open through a container closed at teardown. */
export interface SimPciSetup<D> {
  readonly sim: SimKernel;
  readonly driver: D;
  readonly container: VfioContainer;
  readonly device: VfioDevice;
}

/** The test function at 0000:00:07.0, opened. */
export function openTestDev(t: Test, options: TestDevOptions = {}): SimPciSetup<SimTestDevDriver> {
  const sim = new SimKernel();
  const driver = addTestDev(sim, options);
  const container = VfioContainer.open({ sys: sim });
  t.teardown(() => container.close());
  return { sim, driver, container, device: container.openDevice(driver.name) };
}

/** An edu at 0000:00:06.0, opened. */
export function openEdu(t: Test, options: EduOptions = {}): SimPciSetup<SimVfioPciDevice<SimEdu>> {
  const sim = new SimKernel();
  const driver = addEdu(sim, options);
  const container = VfioContainer.open({ sys: sim });
  t.teardown(() => container.close());
  return { sim, driver, container, device: container.openDevice(driver.name) };
}

/** The device-fd offset of `region`'s byte `offset` (vfio-pci's index << 40 layout). */
export function regionOffset(region: number, offset: number): bigint {
  return (BigInt(region) << 40n) + BigInt(offset);
}

/** The contents of simulated eventfd `fd` without consuming them. */
export function eventfdCount(sim: SimKernel, fd: number): bigint {
  return sim.eventfdOf(fd).count;
}
