/**
 * vfio-ts's opt-in uAPI extensions as bytes: the saving-layout region
 * capability, the extended GET_IRQ_INFO reply of the remap IRQ (golden
 * bytes, the argsz dance), and the remap bitmap. The kernel never merged
 * either, so the C layout test does not look for them.
 */
import t from 'tap';
import { UapiFormatError } from '../lib/errors.js';
import { answerRegionInfo } from '../lib/sim/region-info-reply.js';
import { SimRemapIrq } from '../lib/sim/remap-irq.js';
import type { SimEventFd } from '../lib/sim/eventfd.js';
import {
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_FLAG_MMAP,
  VFIO_REGION_INFO_FLAG_READ,
} from '../lib/vfio/uapi/constants.js';
import {
  VFIO_TS_IRQ_INFO_CAP_TYPE,
  VFIO_TS_IRQ_INFO_FLAG_CAPS,
  VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING,
  decodeIrqInfoExt,
  decodeRemapBitmap,
  decodeSavingLayout,
  encodeSparseAreas,
  isRemapIrq,
  vfio_ts_irq_info,
} from '../lib/vfio/uapi/extensions.js';
import { buildCapChain, decodeRegionInfo, type CapSpec } from '../lib/vfio/uapi/info.js';
import { dataView, encode } from '../lib/vfio/uapi/layout.js';
import { vfio_region_info } from '../lib/vfio/uapi/structs.js';
import * as constants from '../lib/vfio/uapi/constants.js';
import { hexOf, toHex } from './helpers/uapi-hex.js';

/** A region info reply (as the simulated driver writes it) with these capabilities, decoded. */
function regionWith(caps: CapSpec[], flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP, size = 0x10000) {
  // Exactly as large as the reply, so the last capability ends where the buffer does.
  const buf = new Uint8Array(vfio_region_info.size + buildCapChain(caps, vfio_region_info.size).byteLength);
  encode(vfio_region_info, { argsz: buf.byteLength, index: 0 }, buf);
  answerRegionInfo(buf, buf.byteLength, 0, { flags, size, offset: 0n, caps });
  return decodeRegionInfo(buf);
}

const sparse = (areas: { offset: number; size: number }[], id = VFIO_REGION_INFO_CAP_SPARSE_MMAP, version = 1): CapSpec => ({ id, version, body: encodeSparseAreas(areas) });
const saving = (areas: { offset: number; size: number }[], version = 1): CapSpec => sparse(areas, VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, version);

t.test('ids and flags are outside what the kernel defines', async (t) => {
  const kernelRegionCaps = Object.entries(constants)
    .filter(([name]) => name.startsWith('VFIO_REGION_INFO_CAP_'))
    .map(([, v]) => v);
  t.notOk(kernelRegionCaps.includes(VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING));
  t.equal(VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, 0xf001);
  t.equal(VFIO_TS_IRQ_INFO_FLAG_CAPS, 0x80000000);
  const irqFlags = Object.entries(constants)
    .filter(([name]) => name.startsWith('VFIO_IRQ_INFO_'))
    .reduce((m, [, v]) => m | (v as number), 0);
  t.equal(irqFlags & VFIO_TS_IRQ_INFO_FLAG_CAPS, 0);
});

t.test('the saving layout capability: the sparse-mmap body under its own id', async (t) => {
  t.equal(
    toHex(encodeSparseAreas([{ offset: 0x10000, size: 0x1000 }])),
    hexOf('01000000', '00000000', '0000010000000000', '0010000000000000'),
    'nr_areas, reserved, then { offset, size }',
  );
  const info = regionWith([sparse([{ offset: 0, size: 0x8000 }, { offset: 0x8000, size: 0x8000 }]), saving([{ offset: 0x8000, size: 0x1000 }])]);
  t.same(info.otherCaps.map((c) => c.id), [0xf001], 'decodeRegionInfo keeps it as an unknown capability');
  t.same(decodeSavingLayout(info), [{ offset: 0x8000, size: 0x1000 }]);
  t.same(decodeSavingLayout(regionWith([saving([])])), [], 'an empty saving layout: nothing may stay mapped');
  t.same(decodeSavingLayout(regionWith([saving([{ offset: 0, size: 0x10000 }])])), [{ offset: 0, size: 0x10000 }], 'no SPARSE_MMAP: the whole region is the normal layout');
  t.equal(decodeSavingLayout(regionWith([])), undefined, 'absent');
  t.equal(decodeSavingLayout(regionWith([saving([{ offset: 0, size: 0x1000 }], 2)])), undefined, 'a version this library does not know is ignored');

  const bad: [CapSpec[], RegExp, string, number?][] = [
    [[sparse([{ offset: 0, size: 0x1000 }]), saving([{ offset: 0x1000, size: 0x1000 }])], /saving area 0 \[4096, \+4096\) is not inside/, 'outside the normal areas'],
    [[sparse([{ offset: 0, size: 0x1000 }, { offset: 0x1000, size: 0x1000 }]), saving([{ offset: 0, size: 0x2000 }])], /not inside an area/, 'straddling two normal areas'],
    [[saving([{ offset: 0, size: 0x1000 }])], /not inside an area/, 'a region that cannot be mmapped', VFIO_REGION_INFO_FLAG_READ],
  ];
  for (const [caps, why, what, flags] of bad) {
    const info2 = regionWith(caps, flags);
    t.throws(() => decodeSavingLayout(info2), UapiFormatError, what);
    t.throws(() => decodeSavingLayout(info2), why, what);
  }
  const past = regionWith([{ id: VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, version: 1, body: encodeSparseAreas([{ offset: 0xf000, size: 0x2000 }]) }]);
  t.throws(() => decodeSavingLayout(past), /lies outside the 65536-byte region/, 'past the region');
  const truncated = regionWith([{ id: VFIO_TS_REGION_INFO_CAP_SPARSE_MMAP_SAVING, version: 1, body: encodeSparseAreas([{ offset: 0, size: 0x1000 }]).subarray(0, 16) }]);
  t.throws(() => decodeSavingLayout(truncated), /needs 32 bytes but only 24/, 'nr_areas larger than the capability');
});

t.test('the saving layout: areas mmap could not honour exactly are refused', async (t) => {
  const normal = sparse([{ offset: 0, size: 0x8000 }]);
  const bad: [{ offset: number; size: number }[], RegExp, string][] = [
    [[{ offset: 0x1000, size: 0 }], /saving area 0 \[4096, \+0\) is empty/, 'an empty area'],
    [[{ offset: 0x800, size: 0x1000 }], /saving area 0 \[2048, \+4096\) is not aligned to the 4096-byte page/, 'a misaligned start'],
    [[{ offset: 0x1000, size: 0x800 }], /is not aligned/, 'an end inside a page (the rest of the page would be mapped)'],
    [[{ offset: 0x2000, size: 0x2000 }, { offset: 0x1000, size: 0x2000 }], /saving area 0 \[8192, \+8192\) overlaps saving area 1/, 'overlapping, in any order'],
    [[{ offset: 0x1000, size: 0x1000 }, { offset: 0x1000, size: 0x1000 }], /saving area 1 .* overlaps saving area 0/, 'the same area twice'],
    [[{ offset: 0, size: 0x4000 }, { offset: 0x5000, size: 0x1000 }, { offset: 0x1000, size: 0x1000 }], /saving area 2 .* overlaps saving area 0/, 'inside an earlier, longer one'],
  ];
  for (const [areas, why, what] of bad) {
    const info = regionWith([normal, saving(areas)]);
    t.throws(() => decodeSavingLayout(info), UapiFormatError, what);
    t.throws(() => decodeSavingLayout(info), why, what);
  }
  t.same(
    decodeSavingLayout(regionWith([normal, saving([{ offset: 0x1000, size: 0x1000 }, { offset: 0x2000, size: 0x1000 }])])),
    [
      { offset: 0x1000, size: 0x1000 },
      { offset: 0x2000, size: 0x1000 },
    ],
    'adjacent areas do not overlap',
  );
  // A BAR smaller than a page ends inside one: the kernel pads that page, so the region's end may be unaligned.
  t.same(decodeSavingLayout(regionWith([saving([{ offset: 0, size: 0x100 }])], undefined, 0x100)), [{ offset: 0, size: 0x100 }]);
  const on4k = regionWith([normal, saving([{ offset: 0x1000, size: 0x1000 }])]);
  t.throws(() => decodeSavingLayout(on4k, 0x10000), /is not aligned to the 65536-byte page/, "aligned to the system's page size");
});

t.test('the saving layout: the largest reply the library accepts decodes in linear time', async (t) => {
  // 1 MiB of argsz holds about 65 000 areas; split between the two capabilities, a pairwise check would make 1e9 comparisons.
  const n = 32000;
  const areas = Array.from({ length: n }, (_, i) => ({ offset: i * 0x1000, size: 0x1000 }));
  const info = regionWith([sparse(areas), saving([...areas].reverse())], undefined, n * 0x1000);
  const started = performance.now();
  t.equal(decodeSavingLayout(info)?.length, n);
  t.ok(performance.now() - started < 1000, `decoded in ${Math.round(performance.now() - started)} ms`);
});

/** The reply the simulated remap IRQ writes for a caller's argsz. */
function irqReply(argsz: number, bufSize = Math.max(argsz, 16)): Uint8Array {
  const irq = new SimRemapIrq(5, { eventfdOf: (): SimEventFd => { throw new Error('unused'); }, acked: () => undefined });
  const buf = new Uint8Array(bufSize);
  dataView(buf).setUint32(0, argsz, true);
  dataView(buf).setUint32(8, 5, true);
  irq.info(buf);
  return buf;
}

t.test('the extended GET_IRQ_INFO reply: golden bytes and the argsz dance', async (t) => {
  const full = irqReply(40);
  t.equal(
    toHex(full),
    hexOf(
      '28000000', // argsz 40
      '0f000080', // EVENTFD | MASKABLE | AUTOMASKED | NORESIZE | VFIO_TS_IRQ_INFO_FLAG_CAPS
      '05000000', // index
      '01000000', // count
      '18000000', // cap_offset 24
      '00000000', // reserved
      '01f0', '0100', '00000000', // cap header: id 0xf001, version 1, next 0
      '01000000', // type: REMAP
      '01000000', // subtype: REMAP_SPARSE_MMAP
    ),
  );
  const info = decodeIrqInfoExt(full);
  t.same(info, { index: 5, flags: 0x8000000f, count: 1, type: { type: 1, subtype: 1 }, otherCaps: [] });
  t.ok(isRemapIrq(info));

  const fixed = irqReply(24);
  t.equal(toHex(fixed), hexOf('28000000', '0f000080', '05000000', '01000000', '00000000', '00000000'), 'argsz 24: raised to 40, cap_offset 0');
  t.same(decodeIrqInfoExt(fixed).type, undefined, 'no chain to read yet');
  const old = irqReply(16, 24);
  t.equal(toHex(old), hexOf('28000000', '0f000080', '05000000', '01000000', '00000000', '00000000'), 'a 16-byte caller gets 16 bytes; the rest is untouched');
  t.throws(() => irqReply(8), /kernel errno 22/, 'argsz below 16 is EINVAL');

  // A 6.12 kernel leaves bytes 16-23 alone and never sets the flag: they are not read.
  const plain = new Uint8Array(24);
  encode(vfio_ts_irq_info, { argsz: 24, flags: 0x7, index: 0, count: 1, cap_offset: 0xdead }, plain);
  t.same(decodeIrqInfoExt(plain), { index: 0, flags: 7, count: 1, otherCaps: [] });
  t.notOk(isRemapIrq(decodeIrqInfoExt(plain)));

  // Other capabilities are kept; another type is not the remap IRQ; a malformed chain is refused.
  const chain = buildCapChain(
    [
      { id: 0xf0f0, version: 1, body: new Uint8Array(8) },
      { id: VFIO_TS_IRQ_INFO_CAP_TYPE, version: 1, body: Uint8Array.of(2, 0, 0, 0, 1, 0, 0, 0) },
    ],
    24,
  );
  const other = new Uint8Array(24 + chain.byteLength);
  encode(vfio_ts_irq_info, { argsz: other.byteLength, flags: VFIO_TS_IRQ_INFO_FLAG_CAPS, index: 6, count: 1, cap_offset: 24 }, other);
  other.set(chain, 24);
  const decoded = decodeIrqInfoExt(other);
  t.same(decoded.otherCaps.map((c) => c.id), [0xf0f0]);
  t.same(decoded.type, { type: 2, subtype: 1 });
  t.notOk(isRemapIrq(decoded));
  // A type capability of another version may have another layout: it is kept raw, and the IRQ is no remap IRQ.
  const v2 = other.slice();
  dataView(v2).setUint16(24 + 16 + 2, 2, true);
  dataView(v2).setUint32(24 + 16 + 8, 1, true);
  const decodedV2 = decodeIrqInfoExt(v2);
  t.equal(decodedV2.type, undefined);
  t.same(decodedV2.otherCaps.map((c) => [c.id, c.version]), [[0xf0f0, 1], [VFIO_TS_IRQ_INFO_CAP_TYPE, 2]]);
  t.notOk(isRemapIrq(decodedV2));
  const loop = other.slice();
  dataView(loop).setUint32(16, 8, true);
  t.throws(() => decodeIrqInfoExt(loop), /points into the fixed struct \(size 24\)/);
  const short = full.slice(0, 32);
  t.throws(() => decodeIrqInfoExt(short), /capability 61441 needs 16 bytes but only 8/);
});

t.test('the remap bitmap: region indexes, stray bits', async (t) => {
  t.same(decodeRemapBitmap(0b1000_0001n, 9), { regions: [0, 7], stray: 0n }, 'BAR0 and the config region');
  t.same(decodeRemapBitmap(1n << 9n, 9), { regions: [], stray: 1n << 9n }, 'past num_regions');
  t.same(decodeRemapBitmap((1n << 62n) | (1n << 63n), 100), { regions: [62], stray: 1n << 63n }, 'bit 63 is never a region');
  t.same(decodeRemapBitmap(0n, 9), { regions: [], stray: 0n });
});
