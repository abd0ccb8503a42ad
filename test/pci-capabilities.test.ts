import t from 'tap';
import {
  PCI_MAX_EXT_CAPS,
  PCI_MAX_STD_CAPS,
  findCapability,
  findExtCapability,
  listCapabilities,
  listExtCapabilities,
} from '../lib/pci/capabilities.js';
import { EDU_CONFIG, FULL_CONFIG, MTTY_CONFIG, VF_CONFIG, bytesAt } from './helpers/pci-fixtures.js';

/** A 256-byte image with CAP_LIST set and the given capability pointer at 0x34. */
function stdImage(first: number, size = 256): Uint8Array {
  const img = new Uint8Array(size);
  img[0x06] = 0x10;
  img[0x34] = first;
  return img;
}

/** Writes an extended capability header. */
function extHeader(img: Uint8Array, at: number, id: number, version: number, next: number): void {
  new DataView(img.buffer).setUint32(at, ((next << 20) | (version << 16) | id) >>> 0, true);
}

t.test('walks PM, MSI, MSI-X, PCIe and vendor-specific capabilities in order', async (t) => {
  t.strictSame(listCapabilities(FULL_CONFIG), [
    { id: 0x01, offset: 0x40, next: 0x50 },
    { id: 0x05, offset: 0x50, next: 0x70 },
    { id: 0x11, offset: 0x70, next: 0xa0 },
    { id: 0x10, offset: 0xa0, next: 0xe0 },
    { id: 0x09, offset: 0xe0, next: 0x00 },
  ]);
  t.strictSame(findCapability(FULL_CONFIG, 0x11), { id: 0x11, offset: 0x70, next: 0xa0 });
  t.equal(findCapability(FULL_CONFIG, 0x13), undefined);
});

t.test('walks the extended list: AER, DSN, a hidden id 0, SR-IOV, ARI', async (t) => {
  t.strictSame(listExtCapabilities(FULL_CONFIG), [
    { id: 0x0001, version: 2, offset: 0x100, next: 0x148 },
    { id: 0x0003, version: 1, offset: 0x148, next: 0x154 },
    { id: 0x0000, version: 1, offset: 0x154, next: 0x160 },
    { id: 0x0010, version: 1, offset: 0x160, next: 0x1a0 },
    { id: 0x000e, version: 1, offset: 0x1a0, next: 0x000 },
  ]);
  t.strictSame(findExtCapability(FULL_CONFIG, 0x10), { id: 0x10, version: 1, offset: 0x160, next: 0x1a0 });
  t.equal(findExtCapability(FULL_CONFIG, 0x0b), undefined);
  t.strictSame(
    listExtCapabilities(VF_CONFIG).map((c) => [c.id, c.offset]),
    [
      [0x01, 0x100],
      [0x0e, 0x150],
      [0x0f, 0x160],
    ],
  );
});

t.test("mtty's 255-byte image parses: no capability list, no extended space", async (t) => {
  t.strictSame(listCapabilities(MTTY_CONFIG), []);
  t.strictSame(listExtCapabilities(MTTY_CONFIG), []);
  // Even with a list, a capability whose two bytes end at 0xff still fits.
  const img = stdImage(0xfc, 0xff);
  img[0xfc] = 0x09;
  t.strictSame(listCapabilities(img), [{ id: 0x09, offset: 0xfc, next: 0 }]);
});

t.test('a 256-byte image has no extended list; a zero or all-ones head means none', async (t) => {
  t.strictSame(listExtCapabilities(EDU_CONFIG), []);
  t.strictSame(listExtCapabilities(new Uint8Array(4096)), []);
  t.strictSame(listExtCapabilities(bytesAt(4096, { 0x100: 'ff ff ff ff' })), []);
  t.strictSame(listExtCapabilities(new Uint8Array(0x103)), [], 'no room for a header');
});

t.test('without PCI_STATUS_CAP_LIST the pointer is ignored', async (t) => {
  const img = EDU_CONFIG.slice();
  img[0x06] = 0x08;
  t.strictSame(listCapabilities(img), []);
});

t.test('the reserved low two bits of each pointer are ignored', async (t) => {
  const img = stdImage(0x43);
  img[0x40] = 0x05;
  img[0x41] = 0x52;
  img[0x50] = 0x11;
  img[0x51] = 0x03;
  t.strictSame(listCapabilities(img), [
    { id: 0x05, offset: 0x40, next: 0x50 },
    { id: 0x11, offset: 0x50, next: 0 },
  ]);
});

t.test('a pointer into the header is refused at the register holding it', async (t) => {
  t.throws(() => listCapabilities(stdImage(0x3c)), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x34, message: /pointer 0x3c points into the 64-byte header/ });
  const img = stdImage(0x40);
  img[0x40] = 0x01;
  img[0x41] = 0x10;
  t.throws(() => listCapabilities(img), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x41, message: /pointer 0x10/ });
});

t.test('a pointer past the image is refused', async (t) => {
  const short = stdImage(0x40, 0x80);
  short[0x41] = 0x80;
  t.throws(() => listCapabilities(short), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x41, message: /pointer 0x80 points past the end of the 128-byte image/ });
  const edge = stdImage(0x7c, 0x7d);
  t.throws(() => listCapabilities(edge), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x34, message: /0x7c points past the end of the 125-byte image/ }, 'id fits, next does not');
});

t.test('loops are refused at the pointer that closes them', async (t) => {
  const self = stdImage(0x40);
  self[0x41] = 0x40;
  t.throws(() => listCapabilities(self), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x41, message: /pointer 0x40 goes back to a capability already listed \(a loop\)/ });
  const two = stdImage(0x40);
  two[0x41] = 0x80;
  two[0x81] = 0x40;
  t.throws(() => listCapabilities(two), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x81 });
});

t.test('a list using all 48 slots is fine; a 49th capability must revisit one', async (t) => {
  t.equal(PCI_MAX_STD_CAPS, 48);
  const img = stdImage(0x40);
  for (let at = 0x40; at < 0x100; at += 4) img[at + 1] = at + 4 < 0x100 ? at + 4 : 0;
  t.equal(listCapabilities(img).length, 48);
  img[0xfd] = 0x40;
  t.throws(() => listCapabilities(img), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0xfd, message: /a loop/ });
});

t.test('extended list: next below 0x100, past the image, loops', async (t) => {
  const low = new Uint8Array(4096);
  extHeader(low, 0x100, 1, 2, 0x0fc);
  t.throws(() => listExtCapabilities(low), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x100, message: /next offset 0xfc points into the 256-byte conventional space/ });

  const past = new Uint8Array(0x200);
  extHeader(past, 0x100, 1, 2, 0x1fc);
  t.strictSame(listExtCapabilities(past).length, 2, 'a header in the last dword fits');
  extHeader(past, 0x100, 1, 2, 0x200);
  t.throws(() => listExtCapabilities(past), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x100, message: /next offset 0x200 points past the end of the 512-byte image/ });

  const loop = new Uint8Array(4096);
  extHeader(loop, 0x100, 1, 2, 0x140);
  extHeader(loop, 0x140, 3, 1, 0x100);
  t.throws(() => listExtCapabilities(loop), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x140, message: /next offset 0x100 goes back/ });
  extHeader(loop, 0x140, 3, 1, 0x140);
  t.throws(() => listExtCapabilities(loop), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x140, message: /0x140 goes back/ });
});

t.test('an extended list using all 960 slots is fine; one more must revisit', async (t) => {
  t.equal(PCI_MAX_EXT_CAPS, 960);
  const img = new Uint8Array(4096);
  for (let at = 0x100; at < 0x1000; at += 4) extHeader(img, at, 0x0b, 1, at + 4 < 0x1000 ? at + 4 : 0);
  t.equal(listExtCapabilities(img).length, 960);
  extHeader(img, 0xffc, 0x0b, 1, 0x800);
  t.throws(() => listExtCapabilities(img), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0xffc, message: /a loop/ });
});

t.test('a short image cannot hold the header fields the walk reads', async (t) => {
  t.throws(() => listCapabilities(new Uint8Array(6)), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 6 });
  const img = new Uint8Array(0x34);
  img[0x06] = 0x10;
  t.throws(() => listCapabilities(img), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x34 });
});
