import t from 'tap';
import { decodeConfigHeader, configRead16, configRead32, configRead8 } from '../lib/pci/config-space.js';
import { ConfigSpaceError } from '../lib/errors.js';
import { EDU_CONFIG, MTTY_CONFIG, VF_CONFIG, bytesAt } from './helpers/pci-fixtures.js';

t.test('decodes the edu-like header field by field', async (t) => {
  t.strictSame(decodeConfigHeader(EDU_CONFIG), {
    vendorId: 0x1234,
    deviceId: 0x11e8,
    command: 0x0006,
    status: 0x0018,
    revisionId: 0x10,
    classCode: 0x00ff00,
    baseClass: 0x00,
    subClass: 0xff,
    progIf: 0x00,
    cacheLineSize: 0,
    latencyTimer: 0,
    headerType: 0,
    multiFunction: false,
    bist: 0,
    bars: [0xfea00000, 0, 0, 0, 0, 0],
    cardbusCis: 0,
    subsystemVendorId: 0x1af4,
    subsystemId: 0x1100,
    romAddress: 0,
    hasCapabilityList: true,
    capabilitiesPointer: 0x40,
    interruptLine: 0x0b,
    interruptPin: 1,
    minGnt: 0,
    maxLat: 0,
  });
});

t.test("decodes mtty's 255-byte config", async (t) => {
  const h = decodeConfigHeader(MTTY_CONFIG);
  t.equal(h.vendorId, 0x4348);
  t.equal(h.deviceId, 0x3253);
  t.equal(h.command, 0x0001);
  t.equal(h.status, 0x0200);
  t.equal(h.hasCapabilityList, false);
  t.equal(h.revisionId, 0x10);
  t.equal(h.classCode, 0x070002, '16550-compatible serial controller');
  t.strictSame(h.bars, [1, 0, 0, 0, 0, 0]);
  t.equal(h.subsystemVendorId, 0x4348);
  t.equal(h.subsystemId, 0x3253);
  t.equal(h.capabilitiesPointer, 0);
  t.equal(h.interruptPin, 1);
});

t.test('a multi-function header and raw 64-bit BAR dwords', async (t) => {
  const img = VF_CONFIG.slice();
  img[0x0e] = 0x80;
  const h = decodeConfigHeader(img);
  t.equal(h.multiFunction, true);
  t.equal(h.headerType, 0);
  t.strictSame(h.bars, [0xfe00000c, 0, 0, 0xfe02000c, 0, 0]);
  t.equal(h.classCode, 0x020000);
});

t.test('refuses short images and non-type-0 headers, naming the offset', async (t) => {
  t.throws(() => decodeConfigHeader(new Uint8Array(63)), { name: 'ConfigSpaceError', code: 'ERR_VFIO_CONFIG_SPACE', offset: 63 });
  const bridge = bytesAt(256, { 0x0e: '81' });
  t.throws(() => decodeConfigHeader(bridge), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x0e, message: /header type 1/ });
});

t.test('accessors are little-endian and bounds-checked', async (t) => {
  t.equal(configRead8(EDU_CONFIG, 0x3d), 1);
  t.equal(configRead16(EDU_CONFIG, 0x00), 0x1234);
  t.equal(configRead32(EDU_CONFIG, 0x00), 0x11e81234);
  t.equal(configRead32(VF_CONFIG, 0x1c), 0xfe02000c, 'unsigned');
  t.equal(configRead8(MTTY_CONFIG, 0xfe), 0);
  const err = t.throws(() => configRead8(MTTY_CONFIG, 0xff));
  t.ok(err instanceof ConfigSpaceError);
  t.throws(() => configRead16(MTTY_CONFIG, 0xfe), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0xfe, message: /2-byte read lies outside the 255-byte image/ });
  t.throws(() => configRead32(MTTY_CONFIG, 0xfc), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0xfc });
  t.throws(() => configRead32(MTTY_CONFIG, -1), { code: 'ERR_VFIO_CONFIG_SPACE', offset: -1 });
  t.throws(() => configRead8(MTTY_CONFIG, 1.5), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 1.5 });
  const sub = EDU_CONFIG.subarray(0x10, 0x20);
  t.equal(configRead32(sub, 0), 0xfea00000, 'a subarray is read from its own start');
});
