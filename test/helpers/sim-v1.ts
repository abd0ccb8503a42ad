/**
 * Fixtures for the v1 migration tests: two simulated v1 devices in one
 * kernel, each opened in a container of its own as two VMMs would, device
 * memory filled with seeded bytes, guest writes that dirty it, and raw
 * header accesses that bypass the library.
 */
import { SimKernel } from '../../lib/sim/kernel.js';
import { V1_MIGRATION_REGION_INDEX, addV1Device, type SimV1Device, type SimV1DeviceOptions } from '../../lib/sim/v1-device.js';
import { VfioContainer } from '../../lib/vfio/container.js';
import type { VfioDevice } from '../../lib/vfio/device.js';
import { dataView } from '../../lib/vfio/uapi/layout.js';
import { prng } from './migration-streams.js';

export const SRC_BDF = '0000:00:05.0';
export const DST_BDF = '0000:00:06.0';
/** Device-fd offset of the migration region (`index << 40`). */
export const MIG_BASE = BigInt(V1_MIGRATION_REGION_INDEX) << 40n;

/** A source and a destination v1 device, opened through the library. */
export interface V1Pair extends Disposable {
  readonly kernel: SimKernel;
  readonly src: SimV1Device;
  readonly dst: SimV1Device;
  readonly srcDev: VfioDevice;
  readonly dstDev: VfioDevice;
}

type DeviceOptions = Omit<SimV1DeviceOptions, 'bdf'>;

/** Two v1 devices (same options unless `dst` overrides), the source's memory seeded with `seed`. */
export function v1Pair(options: { src?: DeviceOptions; dst?: DeviceOptions; seed?: number } = {}): V1Pair {
  const kernel = new SimKernel();
  const src = addV1Device(kernel, { ...options.src, bdf: SRC_BDF });
  const dst = addV1Device(kernel, { ...(options.dst ?? options.src), bdf: DST_BDF });
  fillMemory(src, options.seed ?? 1);
  const c1 = VfioContainer.open({ sys: kernel });
  const c2 = VfioContainer.open({ sys: kernel });
  return {
    kernel,
    src,
    dst,
    srcDev: c1.openDevice(SRC_BDF),
    dstDev: c2.openDevice(DST_BDF),
    [Symbol.dispose]() {
      c1.close();
      c2.close();
    },
  };
}

/** Fills the whole device memory with seeded bytes. */
export function fillMemory(device: SimV1Device, seed: number): void {
  const next = prng(seed);
  device.writeMemory(0, Uint8Array.from({ length: device.memorySize }, () => Math.floor(next() * 256)));
}

/** `count` guest writes of 1 to 64 bytes at seeded places. */
export function guestWrites(device: SimV1Device, seed: number, count: number): void {
  const next = prng(seed);
  const size = device.memorySize;
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(next() * 64);
    const at = Math.floor(next() * (size - len));
    device.writeMemory(at, Uint8Array.from({ length: len }, () => Math.floor(next() * 256)));
  }
}

/** Raw accesses to a device's migration region, at native widths, with no library in between. */
export interface RawV1 {
  state(): number;
  setState(word: number): void;
  pending(): bigint;
  dataOffset(): number;
  dataSize(): number;
  setDataSize(size: number): void;
  read(offset: number, length: number): Uint8Array;
  write(offset: number, bytes: Uint8Array): void;
}

/** {@link RawV1} over `fd`, a device fd of `kernel`. */
export function rawV1(kernel: SimKernel, fd: number): RawV1 {
  const read = (offset: number, length: number): Uint8Array => {
    const buf = new Uint8Array(length);
    kernel.pread(fd, buf, MIG_BASE + BigInt(offset));
    return buf;
  };
  const write = (offset: number, bytes: Uint8Array): void => {
    kernel.pwrite(fd, bytes, MIG_BASE + BigInt(offset));
  };
  const u64 = (v: bigint): Uint8Array => {
    const b = new Uint8Array(8);
    dataView(b).setBigUint64(0, v, true);
    return b;
  };
  return {
    state: () => dataView(read(0, 4)).getUint32(0, true),
    setState: (word) => {
      const b = new Uint8Array(4);
      dataView(b).setUint32(0, word, true);
      write(0, b);
    },
    pending: () => dataView(read(8, 8)).getBigUint64(0, true),
    dataOffset: () => Number(dataView(read(16, 8)).getBigUint64(0, true)),
    dataSize: () => Number(dataView(read(24, 8)).getBigUint64(0, true)),
    setDataSize: (size) => write(24, u64(BigInt(size))),
    read,
    write,
  };
}
