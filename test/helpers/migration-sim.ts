/**
 * Plumbing for the migration tests on the simulated kernel: two devices in
 * their own containers with their hooks, a pipe with a return path, an
 * in-memory sink, and a runner pair that runs both sides to completion.
 */
import { PassThrough } from 'node:stream';
import { concatBytes } from '../../lib/bytes.js';
import type { ByteSink } from '../../lib/migration/byte-io.js';
import { VfioMigration, type VfioMigrationOptions } from '../../lib/migration/hooks.js';
import {
  MigrationDestination,
  MigrationSource,
  type DestinationOptions,
  type DestinationResult,
  type SourceOptions,
  type SourceResult,
} from '../../lib/migration/runner.js';
import { addBulkDevice, type BulkDeviceOptions, type SimBulkDevice } from '../../lib/sim/bulk-device.js';
import { SimKernel } from '../../lib/sim/kernel.js';
import { addMtty, type SimMtty } from '../../lib/sim/mtty.js';
import { VfioContainer } from '../../lib/vfio/container.js';
import type { VfioDevice } from '../../lib/vfio/device.js';

/** The UUIDs of the `n`th pair made in this process (deterministic, distinct). */
function uuids(n: number): [string, string] {
  const hex = (side: number): string => (n * 2 + side).toString(16).padStart(12, '0');
  return [`7c0e1d2a-3b4c-4d5e-8f60-${hex(0)}`, `7c0e1d2a-3b4c-4d5e-8f60-${hex(1)}`];
}
let pairs = 0;

/** One side: the simulated device, its VFIO device and its hooks. */
export interface Side<D> {
  readonly sim: D;
  readonly device: VfioDevice;
  readonly container: VfioContainer;
  readonly migration: VfioMigration;
}

/** A source and a destination in one simulated kernel. */
export interface SimPair<D> {
  readonly kernel: SimKernel;
  readonly src: Side<D>;
  readonly dst: Side<D>;
  close(): void;
}

function side<D extends { name: string }>(kernel: SimKernel, sim: D, options: VfioMigrationOptions): Side<D> {
  const container = VfioContainer.open({ sys: kernel });
  const device = container.openDevice(sim.name);
  return { sim, device, container, migration: VfioMigration.open(device, options) };
}

function pairOf<D extends { name: string }>(kernel: SimKernel, a: D, b: D): SimPair<D> {
  const src = side(kernel, a, {});
  // The destination answers to the source's section name, as QEMU's devices share their id.
  const dst = side(kernel, b, { idstr: src.migration.idstr });
  return {
    kernel,
    src,
    dst,
    close: () => {
      for (const s of [src, dst]) {
        s.migration.close();
        s.container.close();
      }
    },
  };
}

/** Two mtty-2 mdevs, each in a container of its own. */
export function mttyPair(): SimPair<SimMtty> {
  const kernel = new SimKernel();
  const [a, b] = uuids(pairs++);
  return pairOf(kernel, addMtty(kernel, { uuid: a, type: 'mtty-2' }), addMtty(kernel, { uuid: b, type: 'mtty-2' }));
}

/** Two bulk devices of the same size with different content. */
export function bulkPair(options: Omit<BulkDeviceOptions, 'uuid' | 'seed'>): SimPair<SimBulkDevice> {
  const kernel = new SimKernel();
  const [a, b] = uuids(pairs++);
  return pairOf(kernel, addBulkDevice(kernel, { ...options, uuid: a, seed: 1 }), addBulkDevice(kernel, { ...options, uuid: b, seed: 2 }));
}

/** A sink that keeps every byte, in order. */
export class MemorySink implements ByteSink {
  readonly chunks: Uint8Array[] = [];

  write(...chunks: Uint8Array[]): Promise<void> {
    for (const c of chunks) this.chunks.push(c.slice());
    return Promise.resolve();
  }

  /** Everything written, and forgets it. */
  take(): Uint8Array {
    const all = concatBytes(this.chunks);
    this.chunks.length = 0;
    return all;
  }
}

/** A pipe and its return path, in memory. */
export function pipes(): { forward: PassThrough; back: PassThrough } {
  return { forward: new PassThrough(), back: new PassThrough() };
}

/** How one side of {@link runBoth} ended. */
export type Outcome<R> = { readonly ok: true; readonly result: R } | { readonly ok: false; readonly error: unknown };

async function settle<R>(p: Promise<R>): Promise<Outcome<R>> {
  try {
    return { ok: true, result: await p };
  } catch (error) {
    return { ok: false, error };
  }
}

/** Both runners over a fresh pipe with a return path, each run to its end. */
export async function runBoth(
  src: Omit<SourceOptions, 'output' | 'returnPath'>,
  dst: Omit<DestinationOptions, 'input' | 'returnPath'>,
  hook?: (source: MigrationSource, destination: MigrationDestination) => void,
): Promise<{ source: Outcome<SourceResult>; destination: Outcome<DestinationResult> }> {
  const { forward, back } = pipes();
  const source = new MigrationSource({ ...src, output: forward, returnPath: back });
  const destination = new MigrationDestination({ ...dst, input: forward, returnPath: back });
  hook?.(source, destination);
  const [s, d] = await Promise.all([settle(source.run()), settle(destination.run())]);
  return { source: s, destination: d };
}
