/**
 * Capability chains of the INFO ioctls: building them as the kernel does
 * (drivers/vfio/vfio_main.c: vfio_info_cap_add + vfio_info_cap_shift),
 * decoding the region, IOMMU and device info caps, refusing malformed chains
 * with UapiFormatError, and the argsz re-query loop.
 */
import { concatBytes } from '../lib/bytes.js';
import t from 'tap';
import { UapiFormatError } from '../lib/errors.js';
import { CAP_ALIGN, MAX_INFO_ARGSZ, queryWithCaps, walkCapChain } from '../lib/vfio/uapi/caps.js';
import {
  VFIO_DEVICE_FLAGS_CAPS,
  VFIO_DEVICE_FLAGS_PCI,
  VFIO_DEVICE_FLAGS_RESET,
  VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP,
  VFIO_DEVICE_INFO_CAP_ZPCI_BASE,
  VFIO_IOMMU_INFO_CAPS,
  VFIO_IOMMU_INFO_PGSIZES,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_PCI_ATOMIC_COMP32,
  VFIO_PCI_ATOMIC_COMP64,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_CAP_TYPE,
  VFIO_REGION_INFO_FLAG_CAPS,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
  VFIO_REGION_INFO_FLAG_WRITE,
  VFIO_REGION_TYPE_PCI_VENDOR_TYPE,
  VFIO_REGION_SUBTYPE_INTEL_IGD_OPREGION,
} from '../lib/vfio/uapi/constants.js';
import { buildCapChain, decodeDeviceInfo, decodeIommuInfo, decodeRegionInfo, type CapSpec } from '../lib/vfio/uapi/info.js';
import { dataView, encode } from '../lib/vfio/uapi/layout.js';
import { vfio_device_info, vfio_info_cap_header, vfio_iommu_type1_info, vfio_region_info } from '../lib/vfio/uapi/structs.js';
import { bytesOf, hexOf, toHex } from './helpers/uapi-hex.js';

const concat = (...parts: Uint8Array[]): Uint8Array => concatBytes(parts);

/** A tap test object, as subtest callbacks receive it. */
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0];

/** Asserts that `fn` throws a UapiFormatError with the stable code, and that its message matches `why`. */
function rejects(t: TapTest, fn: () => unknown, why: RegExp, msg: string): void {
  try {
    fn();
    t.fail(`${msg}: no error`);
  } catch (e) {
    t.ok(e instanceof UapiFormatError, `${msg}: a UapiFormatError`);
    if (e instanceof UapiFormatError) {
      t.equal(e.code, 'ERR_VFIO_UAPI_FORMAT', `${msg}: code`);
      t.match(e.message, why, `${msg}: says why`);
    }
  }
}

/**
 * A line-by-line port of the kernel's vfio_info_cap_add (with
 * vfio_info_add_capability's body copy) and vfio_info_cap_shift, as the
 * oracle for buildCapChain.
 */
function kernelCapChain(caps: readonly CapSpec[], offset: number): Uint8Array {
  let buf = new Uint8Array(0);
  let size = 0;
  const next = (at: number): number => dataView(buf).getUint32(at + 4, true);
  const setNext = (at: number, v: number): void => dataView(buf).setUint32(at + 4, v, true);
  for (const cap of caps) {
    const capSize = Math.ceil((8 + cap.body.byteLength) / 8) * 8; // ALIGN(size, sizeof(u64))
    const grown = new Uint8Array(size + capSize); // krealloc + memset(header, 0, size)
    grown.set(buf);
    buf = grown;
    const header = size;
    dataView(buf).setUint16(header, cap.id, true);
    dataView(buf).setUint16(header + 2, cap.version, true);
    buf.set(cap.body, header + 8);
    let tmp = 0;
    while (next(tmp) !== 0) tmp = next(tmp);
    setNext(tmp, size);
    size += capSize;
  }
  if (size === 0) return buf;
  for (let tmp = 0; next(tmp) !== 0; tmp = next(tmp) - offset) setNext(tmp, next(tmp) + offset);
  return buf;
}

// ------------------------------------------------------------------ region info

const sparseBody = bytesOf(
  '02000000', // nr_areas
  '00000000', // reserved
  '0000000000000000', // areas[0].offset
  '0010000000000000', // areas[0].size
  '0030000000000000', // areas[1].offset
  '0010000000000000', // areas[1].size
);
const typeBody = bytesOf('86800080', '01000000'); // PCI_VENDOR_TYPE | 0x8086, IGD_OPREGION

/** The chain after a 32-byte vfio_region_info: sparse (48) at 32, type (16) at 80, msix-mappable (8) at 96. */
const regionChainGolden = hexOf(
  '0100', '0100', '50000000', // SPARSE_MMAP v1, next 80
  '02000000', '00000000',
  '0000000000000000', '0010000000000000',
  '0030000000000000', '0010000000000000',
  '0200', '0100', '60000000', // TYPE v1, next 96
  '86800080', '01000000',
  '0300', '0100', '00000000', // MSIX_MAPPABLE v1, last
);

const regionCaps: CapSpec[] = [
  { id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body: sparseBody },
  { id: VFIO_REGION_INFO_CAP_TYPE, version: 1, body: typeBody },
  { id: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, version: 1, body: new Uint8Array(0) },
];

function regionInfo(chain: Uint8Array, opts: { size?: bigint; capOffset?: number; extra?: number } = {}): Uint8Array {
  const buf = new Uint8Array(vfio_region_info.size + chain.byteLength + (opts.extra ?? 0));
  encode(
    vfio_region_info,
    {
      argsz: buf.byteLength,
      flags: VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS,
      index: 0,
      cap_offset: opts.capOffset ?? (chain.byteLength > 0 ? vfio_region_info.size : 0),
      size: opts.size ?? 0x4000n,
      offset: 0n,
    },
    buf,
  );
  buf.set(chain, vfio_region_info.size);
  return buf;
}

t.test('buildCapChain lays out a chain as vfio_info_cap_add/vfio_info_cap_shift do', async (t) => {
  const chain = buildCapChain(regionCaps, vfio_region_info.size);
  t.equal(toHex(chain), regionChainGolden, 'region chain: 8-byte padding, absolute next offsets');
  t.equal(toHex(kernelCapChain(regionCaps, vfio_region_info.size)), regionChainGolden, 'the kernel port agrees with the golden bytes');

  // A 12-byte capability (dma_avail) is padded to 16 with zeros.
  const avail = buildCapChain(
    [
      { id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version: 1, body: bytesOf('ffff0000') },
      { id: 7, version: 2, body: new Uint8Array(0) },
    ],
    24,
  );
  t.equal(toHex(avail), hexOf('0300', '0100', '28000000', 'ffff0000', '00000000', '0700', '0200', '00000000'));
  t.equal(buildCapChain([], 24).byteLength, 0, 'no capabilities, no bytes');

  // Random chains against the kernel port.
  let seed = 0x5eed;
  const rnd = (n: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const mismatches: string[] = [];
  for (let i = 0; i < 300; i++) {
    const caps = Array.from({ length: rnd(6) }, () => ({
      id: 1 + rnd(0xffff),
      version: rnd(4),
      body: Uint8Array.from({ length: rnd(41) }, () => rnd(256)),
    }));
    const fixed = 8 * (1 + rnd(8));
    if (toHex(buildCapChain(caps, fixed)) !== toHex(kernelCapChain(caps, fixed))) mismatches.push(`case ${i}: fixed ${fixed}, ${caps.length} caps`);
  }
  t.strictSame(mismatches, [], '300 random chains are byte-identical to the kernel port');
});

t.test('region info with SPARSE_MMAP, TYPE and MSIX_MAPPABLE', async (t) => {
  const buf = regionInfo(bytesOf(regionChainGolden));
  t.equal(
    toHex(buf.subarray(0, 32)),
    hexOf('68000000', '0f000000', '00000000', '20000000', '0040000000000000', '0000000000000000'),
    'argsz 104, flags READ|WRITE|MMAP|CAPS, cap_offset 32',
  );
  t.strictSame(decodeRegionInfo(buf), {
    index: 0,
    flags: 0xf,
    size: 0x4000,
    offset: 0n,
    sparse: [
      { offset: 0, size: 0x1000 },
      { offset: 0x3000, size: 0x1000 },
    ],
    // `|` yields an int32 in JS; the decoder reports the u32, hence `>>> 0`.
    type: { type: (VFIO_REGION_TYPE_PCI_VENDOR_TYPE | 0x8086) >>> 0, subtype: VFIO_REGION_SUBTYPE_INTEL_IGD_OPREGION },
    msixMappable: true,
    otherCaps: [],
  });
  t.strictSame(
    walkCapChain(buf, 32, 32, 'vfio_region_info').map((c) => [c.id, c.offset, c.end]),
    [
      [1, 32, 80],
      [2, 80, 96],
      [3, 96, 104],
    ],
    'each capability extends to the next one, the last to the end of the buffer',
  );
  // Unknown capabilities are handed back raw, padding included.
  const odd = regionInfo(buildCapChain([{ id: 0x99, version: 3, body: bytesOf('aabbcc') }], 32));
  t.strictSame(decodeRegionInfo(odd).otherCaps, [{ id: 0x99, version: 3, bytes: bytesOf('9900', '0300', '00000000', 'aabbcc00', '00000000') }]);
  // The kernel's too-small-argsz reply: CAPS set, argsz raised, cap_offset 0.
  t.strictSame(decodeRegionInfo(regionInfo(new Uint8Array(0))).sparse, undefined);
  // An empty area is dropped, as QEMU's vfio_setup_region_sparse_mmaps does: mmap(2) refuses length 0.
  const withEmpty = regionInfo(bytesOf('0100', '0100', '00000000', '02000000', '00000000', '0020000000000000', '0000000000000000', '0030000000000000', '0010000000000000'));
  t.strictSame(decodeRegionInfo(withEmpty).sparse, [{ offset: 0x3000, size: 0x1000 }]);
});

// ------------------------------------------------------------------ iommu info

const iommuChainGolden = hexOf(
  '0200', '0100', '38000000', // MIGRATION v1 at 24, next 56
  '00000000', '00000000', // flags, padding before the u64
  '0010000000000000', // pgsize_bitmap 4 KiB
  '0000001000000000', // max_dirty_bitmap_size 256 MiB
  '0300', '0100', '48000000', // DMA_AVAIL v1 at 56, next 72
  'ffff0000', '00000000', // avail 65535, padding to 16
  '0100', '0100', '00000000', // IOVA_RANGE v1 at 72, last
  '02000000', '00000000', // nr_iovas, reserved
  '0000000000000000', 'ffffdffe00000000', // [0, 0xfedfffff]
  '0000f0fe00000000', 'ffffffff7f000000', // [0xfef00000, 0x7fffffffff]
);

t.test('iommu info with MIGRATION, DMA_AVAIL and IOVA_RANGE, in type1 order', async (t) => {
  const caps: CapSpec[] = [
    { id: VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, version: 1, body: bytesOf('00000000', '00000000', '0010000000000000', '0000001000000000') },
    { id: VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, version: 1, body: bytesOf('ffff0000') },
    {
      id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
      version: 1,
      body: bytesOf('02000000', '00000000', '0000000000000000', 'ffffdffe00000000', '0000f0fe00000000', 'ffffffff7f000000'),
    },
  ];
  const chain = buildCapChain(caps, vfio_iommu_type1_info.size);
  t.equal(toHex(chain), iommuChainGolden);
  const fixed = bytesOf('78000000', '03000000', '0010204000000000', '18000000', '00000000'); // argsz 120, PGSIZES|CAPS, 4K|2M|1G
  t.equal(
    toHex(encode(vfio_iommu_type1_info, { argsz: 120, flags: VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS, iova_pgsizes: 0x40201000n, cap_offset: 24 })),
    toHex(fixed),
  );
  t.strictSame(decodeIommuInfo(concat(fixed, chain)), {
    flags: 3,
    iovaPgsizes: 0x40201000n,
    iovaRanges: [
      { start: 0n, end: 0xfedfffffn },
      { start: 0xfef00000n, end: 0x7fffffffffn },
    ],
    migration: { flags: 0, pgsizeBitmap: 0x1000n, maxDirtyBitmapSize: 0x10000000n },
    dmaAvail: 65535,
    otherCaps: [],
  });
  // The iommufd compat layer sends no MIGRATION cap.
  const compat = buildCapChain(caps.slice(1), 24);
  const compatInfo = decodeIommuInfo(concat(encode(vfio_iommu_type1_info, { argsz: 24 + compat.byteLength, flags: 3, cap_offset: 24 }), compat));
  t.equal(compatInfo.migration, undefined);
  t.equal(compatInfo.dmaAvail, 65535);
});

// ------------------------------------------------------------------ device info

t.test('device info with PCI_ATOMIC_COMP', async (t) => {
  const golden = bytesOf(
    '28000000', // argsz 40
    '83000000', // RESET|PCI|CAPS
    '09000000', // num_regions
    '05000000', // num_irqs
    '18000000', // cap_offset 24
    '00000000', // pad
    '0500', '0100', '00000000', // PCI_ATOMIC_COMP v1, last
    '03000000', // COMP32|COMP64
    '00000000', // reserved
  );
  const chain = buildCapChain([{ id: VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP, version: 1, body: bytesOf('03000000', '00000000') }], 24);
  const fixed = encode(vfio_device_info, {
    argsz: 40,
    flags: VFIO_DEVICE_FLAGS_RESET | VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_CAPS,
    num_regions: 9,
    num_irqs: 5,
    cap_offset: 24,
  });
  t.equal(toHex(concat(fixed, chain)), toHex(golden));
  t.strictSame(decodeDeviceInfo(golden), {
    flags: 0x83,
    numRegions: 9,
    numIrqs: 5,
    atomicComp: VFIO_PCI_ATOMIC_COMP32 | VFIO_PCI_ATOMIC_COMP64,
    otherCaps: [],
  });
  const zpci = buildCapChain([{ id: VFIO_DEVICE_INFO_CAP_ZPCI_BASE, version: 1, body: bytesOf('0102030405060708') }], 24);
  const withZpci = decodeDeviceInfo(concat(encode(vfio_device_info, { argsz: 40, flags: 0x80, cap_offset: 24 }), zpci));
  t.equal(withZpci.atomicComp, undefined);
  t.strictSame(withZpci.otherCaps, [{ id: 1, version: 1, bytes: zpci }]);
});

// ------------------------------------------------------------------ rejections

/** A region info buffer with raw cap headers `[id, next]` at the given absolute offsets. */
function rawRegion(total: number, capOffset: number, caps: readonly (readonly [at: number, id: number, next: number])[]): Uint8Array {
  const buf = new Uint8Array(total);
  encode(vfio_region_info, { argsz: total, flags: VFIO_REGION_INFO_FLAG_CAPS, cap_offset: capOffset, size: 0x4000n }, buf);
  const dv = dataView(buf);
  for (const [at, id, next] of caps) {
    dv.setUint16(at, id, true);
    dv.setUint16(at + 2, 1, true);
    dv.setUint32(at + 4, next, true);
  }
  return buf;
}

t.test('malformed chains are refused with UapiFormatError', async (t) => {
  const msix = VFIO_REGION_INFO_CAP_MSIX_MAPPABLE;
  rejects(t, () => decodeRegionInfo(rawRegion(48, 32, [[32, msix, 32]])), /does not move forward/, 'next points at its own capability');
  rejects(
    t,
    () => decodeRegionInfo(rawRegion(64, 32, [[32, msix, 40], [40, msix, 48], [48, msix, 32]])),
    /does not move forward/,
    'next points back at an earlier capability',
  );
  rejects(t, () => decodeRegionInfo(rawRegion(48, 16, [])), /points into the fixed struct/, 'cap_offset points into the fixed struct');
  rejects(t, () => decodeRegionInfo(rawRegion(48, 32, [[32, msix, 8]])), /does not move forward/, 'a later next points into the fixed struct');
  rejects(t, () => decodeRegionInfo(rawRegion(48, 36, [])), /not 8-byte aligned/, 'a misaligned cap_offset');
  rejects(t, () => decodeRegionInfo(rawRegion(64, 32, [[32, msix, 44]])), /not 8-byte aligned/, 'a misaligned next');
  rejects(t, () => decodeRegionInfo(rawRegion(36, 32, [])), /past the end of the 36-byte buffer/, 'a header cut off by the end of the buffer');
  rejects(t, () => decodeRegionInfo(rawRegion(48, 32, [[32, msix, 48]])), /past the end/, 'next points exactly at the end');
  rejects(t, () => decodeRegionInfo(rawRegion(48, 32, [[32, msix, 0xfffffff8]])), /past the end/, 'next far beyond the buffer');

  // nr_areas says 3 but the capability's extent (up to the next one) holds 2.
  const overrun = bytesOf(regionChainGolden);
  dataView(overrun).setUint32(8, 3, true);
  rejects(t, () => decodeRegionInfo(regionInfo(overrun)), /needs 64 bytes but only 48 are available/, 'sparse nr_areas overruns its capability');
  const huge = bytesOf(regionChainGolden);
  dataView(huge).setUint32(8, 0xffffffff, true);
  rejects(t, () => decodeRegionInfo(regionInfo(huge)), /only 48 are available/, 'sparse nr_areas of 2^32-1');
  // As the last capability, the extent is the end of the buffer.
  const lastSparse = buildCapChain([{ id: VFIO_REGION_INFO_CAP_SPARSE_MMAP, version: 1, body: sparseBody }], 32);
  dataView(lastSparse).setUint32(8, 3, true);
  rejects(t, () => decodeRegionInfo(regionInfo(lastSparse)), /needs 64 bytes but only 48/, 'last sparse capability overruns the buffer');

  rejects(t, () => decodeRegionInfo(regionInfo(bytesOf(regionChainGolden), { size: 0x3fffn })), /area 1 .* outside the 16383-byte region/, 'an area beyond the region size');
  const wrap = bytesOf(regionChainGolden);
  dataView(wrap).setBigUint64(32, 0xfffffffffffff000n, true); // areas[1].offset: offset + size wraps a u64
  rejects(t, () => decodeRegionInfo(regionInfo(wrap)), /area 1/, 'an area whose end wraps past 2^64');

  rejects(t, () => decodeRegionInfo(regionInfo(new Uint8Array(0), { size: 2n ** 53n })), /region size 9007199254740992 is too large/, 'a size beyond MAX_SAFE_INTEGER');
  t.equal(decodeRegionInfo(regionInfo(new Uint8Array(0), { size: 2n ** 53n - 1n })).size, Number.MAX_SAFE_INTEGER, 'MAX_SAFE_INTEGER itself is fine');

  rejects(t, () => decodeRegionInfo(new Uint8Array(31)), /needs 32 bytes/, 'a region info shorter than the struct');
  rejects(t, () => decodeDeviceInfo(new Uint8Array(23)), /needs 24 bytes/, 'a device info shorter than the struct');
  rejects(t, () => decodeIommuInfo(new Uint8Array(16)), /needs 24 bytes/, 'an iommu info shorter than the struct');

  // Capabilities too short for their own struct.
  const shortMig = concat(
    encode(vfio_iommu_type1_info, { argsz: 48, flags: 3, cap_offset: 24 }),
    buildCapChain([{ id: VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, version: 1, body: new Uint8Array(16) }], 24),
  );
  rejects(t, () => decodeIommuInfo(shortMig), /needs 32 bytes but only 24/, 'a truncated MIGRATION capability');
  const shortIova = concat(
    encode(vfio_iommu_type1_info, { argsz: 48, flags: 3, cap_offset: 24 }),
    buildCapChain([{ id: VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, version: 1, body: bytesOf('02000000', '00000000', '00'.repeat(16)) }], 24),
  );
  rejects(t, () => decodeIommuInfo(shortIova), /needs 48 bytes but only 32/, 'IOVA_RANGE nr_iovas overruns the buffer');
  // Only the capability's 8-byte header fits in the buffer.
  const shortAtomic = new Uint8Array(vfio_device_info.size + vfio_info_cap_header.size);
  encode(vfio_device_info, { argsz: shortAtomic.byteLength, flags: VFIO_DEVICE_FLAGS_CAPS, cap_offset: 24 }, shortAtomic);
  encode(vfio_info_cap_header, { id: VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP, version: 1, next: 0 }, shortAtomic, 24);
  rejects(t, () => decodeDeviceInfo(shortAtomic), /needs 12 bytes but only 8/, 'a truncated PCI_ATOMIC_COMP capability');
});

// ------------------------------------------------------------------ queryWithCaps

/**
 * A fake GET_REGION_INFO that behaves as the kernel does: when argsz cannot
 * hold the chain, it raises argsz and leaves cap_offset 0.
 */
function fakeRegionIoctl(chain: Uint8Array, sizes: number[]): (buf: Uint8Array) => void {
  return (buf) => {
    sizes.push(buf.byteLength);
    const dv = dataView(buf);
    const argsz = dv.getUint32(0, true);
    const need = vfio_region_info.size + chain.byteLength;
    const fits = argsz >= need;
    encode(vfio_region_info, { argsz: fits ? argsz : need, flags: 0xf, cap_offset: fits ? 32 : 0, size: 0x4000n }, buf);
    if (fits) buf.set(chain, 32);
  };
}

t.test('queryWithCaps grows the buffer once when argsz is raised', async (t) => {
  const sizes: number[] = [];
  const prepared: number[] = [];
  const chain = bytesOf(regionChainGolden);
  const buf = queryWithCaps(
    vfio_region_info.size,
    (b) => {
      prepared.push(b.byteLength);
      t.ok(b.every((x) => x === 0), 'prepare gets a fresh zeroed buffer');
      encode(vfio_region_info, { index: 2 }, b);
    },
    (b) => {
      t.equal(dataView(b).getUint32(0, true), b.byteLength, 'argsz is set to the buffer size before the call');
      t.equal(dataView(b).getUint32(8, true), 2, 'the input fields were prepared');
      fakeRegionIoctl(chain, sizes)(b);
    },
    'vfio_region_info',
  );
  t.strictSame(sizes, [32, 104], 'the second call gets the argsz the first one asked for');
  t.strictSame(prepared, [32, 104], 'prepare ran again for the second buffer');
  t.equal(buf.byteLength, 104);
  t.equal(decodeRegionInfo(buf).sparse?.length, 2, 'the returned buffer holds the chain');

  const once: number[] = [];
  queryWithCaps(32, () => undefined, fakeRegionIoctl(new Uint8Array(0), once), 'vfio_region_info');
  t.strictSame(once, [32], 'no capabilities: one call');
});

t.test('queryWithCaps refuses argsz above 1 MiB', async (t) => {
  const calls: number[] = [];
  const demand = (need: number) => (b: Uint8Array) => {
    calls.push(b.byteLength);
    if (b.byteLength < need) dataView(b).setUint32(0, need, true);
  };
  rejects(t, () => queryWithCaps(32, () => undefined, demand(MAX_INFO_ARGSZ + 1), 'vfio_region_info'), /argsz 1048577, above the 1048576-byte limit/, 'MAX_INFO_ARGSZ + 1');
  t.strictSame(calls, [32], 'no second call');
  t.equal(queryWithCaps(32, () => undefined, demand(MAX_INFO_ARGSZ), 'vfio_region_info').byteLength, MAX_INFO_ARGSZ, 'exactly 1 MiB is allowed');
});

t.test('queryWithCaps gives up when argsz keeps growing', async (t) => {
  const calls: number[] = [];
  rejects(
    t,
    () =>
      queryWithCaps(
        32,
        () => undefined,
        (b) => {
          calls.push(b.byteLength);
          dataView(b).setUint32(0, b.byteLength + CAP_ALIGN, true);
        },
        'vfio_region_info',
      ),
    /kept growing after 4 calls/,
    'a driver that always wants 8 more bytes',
  );
  t.strictSame(calls, [32, 40, 48, 56], 'four attempts, then it stops');
});

// ------------------------------------------------------------------ random input

t.test('random buffers only ever raise UapiFormatError', async (t) => {
  // mulberry32: a fixed seed keeps failures reproducible.
  let state = 0xc0ffee;
  const rand = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32;
  };
  const int = (n: number): number => Math.floor(rand() * n);
  const decoders = [
    { fn: decodeRegionInfo, fixed: 32, ids: [1, 2, 3, 4, 5] },
    { fn: decodeIommuInfo, fixed: 24, ids: [1, 2, 3] },
    { fn: decodeDeviceInfo, fixed: 24, ids: [1, 5] },
  ];
  const bad: string[] = [];
  let decoded = 0;
  let refused = 0;
  const started = Date.now();
  for (let i = 0; i < 2000; i++) {
    const d = decoders[i % decoders.length];
    if (d === undefined) continue;
    let buf: Uint8Array;
    if (i % 4 === 0) {
      // Pure noise, of any length up to 256.
      buf = Uint8Array.from({ length: int(257) }, () => int(256));
    } else {
      // A plausible chain of known capability ids, then a few corrupted bytes.
      const caps = Array.from({ length: int(5) }, () => ({
        id: d.ids[int(d.ids.length)] ?? 1,
        version: 1,
        body: Uint8Array.from({ length: int(49) }, () => (int(3) === 0 ? int(256) : int(4))),
      }));
      const chain = buildCapChain(caps, d.fixed);
      buf = new Uint8Array(d.fixed + chain.byteLength);
      buf.set(chain, d.fixed);
      const dv = dataView(buf);
      dv.setUint32(0, buf.byteLength, true);
      dv.setUint32(d.fixed === 32 ? 12 : 16, chain.byteLength > 0 ? d.fixed : 0, true);
      if (d.fixed === 32) dv.setBigUint64(16, BigInt(int(2 ** 20)), true);
      for (let k = int(4); k > 0; k--) buf[int(buf.byteLength)] = int(256);
      if (int(8) === 0) buf = buf.subarray(0, int(buf.byteLength + 1));
    }
    try {
      d.fn(buf);
      decoded++;
    } catch (e) {
      if (e instanceof UapiFormatError && e.code === 'ERR_VFIO_UAPI_FORMAT') refused++;
      else bad.push(`case ${i} (${d.fn.name}, ${toHex(buf)}): ${String(e)}`);
    }
  }
  t.strictSame(bad, [], 'no RangeError, TypeError or other error');
  t.ok(decoded > 100 && refused > 100, `both outcomes exercised (${decoded} decoded, ${refused} refused)`);
  t.ok(Date.now() - started < 10_000, 'no pathological slowness');
});
