import t from 'tap';
import { barSizeFromMask, checkBarRegionSize, decodeBars, type Bar, type DecodedBar } from '../lib/pci/bar.js';
import { EDU_CONFIG, FULL_CONFIG, MTTY_CONFIG, VF_CONFIG, bytesAt } from './helpers/pci-fixtures.js';

function bar(bars: DecodedBar[], index: number): Bar {
  const b = bars[index];
  if (b === undefined || b.kind === 'upper') throw new Error(`BAR${index} is not a BAR`);
  return b;
}

/**
 * What vfio-pci's `vfio_bar_fixup` returns after all ones are written:
 * `~(len - 1)` masked into the BAR, with the BAR's flag bits in the low dword.
 */
function vfioReadback(len: bigint, flags: number): { low: number; high: number } {
  const mask = ~(len - 1n) & 0xffffffffffffffffn;
  return { low: (Number(mask & 0xffffffffn) | flags) >>> 0, high: Number(mask >> 32n) };
}

t.test('decodes a 32-bit memory BAR and five unimplemented ones (edu)', async (t) => {
  const bars = decodeBars(EDU_CONFIG);
  t.strictSame(bars[0], { index: 0, offset: 0x10, kind: 'mem32', prefetchable: false, address: 0xfea00000n, raw: 0xfea00000 });
  t.strictSame(
    bars.map((b) => b.kind),
    ['mem32', 'mem32', 'mem32', 'mem32', 'mem32', 'mem32'],
    'an unimplemented BAR reads 0 and looks like a 32-bit memory BAR at 0',
  );
});

t.test("decodes mtty's I/O BAR", async (t) => {
  t.strictSame(decodeBars(MTTY_CONFIG)[0], { index: 0, offset: 0x10, kind: 'io', prefetchable: false, address: 0n, raw: 1 });
  const programmed = MTTY_CONFIG.slice();
  programmed.set([0xc1, 0xc0, 0, 0], 0x10);
  t.equal(bar(decodeBars(programmed), 0).address, 0xc0c0n, 'bit 1 is reserved for I/O and masked off with bit 0');
});

t.test('decodes 64-bit prefetchable BARs and their upper halves', async (t) => {
  const bars = decodeBars(VF_CONFIG);
  t.strictSame(
    bars.map((b) => [b.index, b.offset, b.kind]),
    [
      [0, 0x10, 'mem64'],
      [1, 0x14, 'upper'],
      [2, 0x18, 'mem32'],
      [3, 0x1c, 'mem64'],
      [4, 0x20, 'upper'],
      [5, 0x24, 'mem32'],
    ],
  );
  t.strictSame(bars[3], { index: 3, offset: 0x1c, kind: 'mem64', prefetchable: true, address: 0xfe020000n, raw: 0xfe02000c });
  t.strictSame(bars[4], { index: 4, offset: 0x20, kind: 'upper', lowerIndex: 3, raw: 0 });
  const high = bytesAt(256, { 0x10: '0c 00 00 80 12 00 00 00' });
  t.equal(bar(decodeBars(high), 0).address, 0x1280000000n, 'both dwords make the address');
  t.equal(bar(decodeBars(FULL_CONFIG), 0).prefetchable, false);
});

t.test('decodes the obsolete below-1M type', async (t) => {
  t.strictSame(decodeBars(bytesAt(256, { 0x14: '0a 00 0d 00' }))[1], { index: 1, offset: 0x14, kind: 'mem1m', prefetchable: true, address: 0xd0000n, raw: 0x000d000a });
});

t.test('refuses the reserved memory type and a 64-bit BAR5', async (t) => {
  t.throws(() => decodeBars(bytesAt(256, { 0x18: '06 00 00 00' })), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x18, message: /BAR2 has the reserved memory type 11b/ });
  t.throws(() => decodeBars(bytesAt(256, { 0x24: '04 00 00 00' })), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x24, message: /BAR5 is 64-bit but has no following register/ });
});

t.test('sizes BARs from the read-back mask, as vfio-pci emulates it', async (t) => {
  const edu = bar(decodeBars(EDU_CONFIG), 0);
  let r = vfioReadback(0x100000n, 0);
  t.equal(r.low, 0xfff00000);
  t.equal(barSizeFromMask(edu, r.low), 0x100000n, '1 MiB 32-bit');

  const io = bar(decodeBars(MTTY_CONFIG), 0);
  t.equal(barSizeFromMask(io, 0xfffffff9), 8n, "mtty's bar_mask ~8+1 with the I/O bit");
  t.equal(barSizeFromMask(io, 0x0000fff9), 8n, 'an I/O BAR that decodes only 16 bits');

  const vf = bar(decodeBars(VF_CONFIG), 3);
  r = vfioReadback(0x4000n, 0x0c);
  t.strictSame([r.low, r.high], [0xffffc00c, 0xffffffff]);
  t.equal(barSizeFromMask(vf, r.low, r.high), 0x4000n, '16 KiB 64-bit prefetchable');
  r = vfioReadback(0x200000000n, 0x0c);
  t.strictSame([r.low, r.high], [0x0000000c, 0xfffffffe]);
  t.equal(barSizeFromMask(vf, r.low, r.high), 0x200000000n, '8 GiB: only the upper dword has address bits');
  t.equal(barSizeFromMask(vf, 0x0000000c, 0x80000000), 0x8000000000000000n, 'the largest 64-bit BAR');

  t.equal(barSizeFromMask(bar(decodeBars(EDU_CONFIG), 1), 0), 0n, 'unimplemented');
  t.throws(() => barSizeFromMask(vf, r.low), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x20, message: /BAR3 is 64-bit: its upper sizing dword is needed/ });
});

t.test('cross-checks a sized BAR against its VFIO region size', async (t) => {
  const io = bar(decodeBars(MTTY_CONFIG), 0);
  t.doesNotThrow(() => checkBarRegionSize(io, 8n, 8n));
  t.doesNotThrow(() => checkBarRegionSize(bar(decodeBars(MTTY_CONFIG), 1), 0n, 0n), 'unimplemented: both 0');
  t.throws(() => checkBarRegionSize(io, 8n, 16n), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x10, message: /BAR0 decodes 8 bytes but its VFIO region is 16 bytes/ });
  t.throws(() => checkBarRegionSize(bar(decodeBars(VF_CONFIG), 3), 0x4000n, 0n), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x1c });
});
