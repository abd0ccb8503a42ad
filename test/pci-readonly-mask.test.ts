/**
 * The read-only-bits check against QEMU's own mask setup: pci_init_cmask,
 * pci_init_wmask, pci_init_w1cmask, pci_register_bar, pci_add_capability
 * (hw/pci/pci.c), msi_init (hw/pci/msi.c), msix_init (hw/pci/msix.c),
 * pci_pm_init, pcie_add_capability (hw/pci/pcie.c) and vfio_add_std_cap /
 * vfio_add_ext_cap (hw/vfio/pci.c). Expected masks are written out by hand.
 */
import t from 'tap';
import { ConfigSpaceError, VfioArgumentError } from '../lib/errors.js';
import { buildConfigMasks, checkReadOnlyBits, findReadOnlyMismatch, type ReadOnlyMaskOptions } from '../lib/pci/readonly-mask.js';
import { EDU_CONFIG, FULL_CONFIG, MTTY_CONFIG, VF_CONFIG, hex } from './helpers/pci-fixtures.js';

/** `current` with the bits of `xor` flipped at `offset`. */
function flip(current: Uint8Array, offset: number, xor: number): Uint8Array {
  const img = current.slice();
  img[offset] = (img[offset] ?? 0) ^ xor;
  return img;
}

/** The offset the check names for a one-byte change, or 'ok'. */
function verdict(current: Uint8Array, offset: number, xor: number, options?: ReadOnlyMaskOptions): number | 'ok' {
  try {
    checkReadOnlyBits(flip(current, offset, xor), current, options);
    return 'ok';
  } catch (err) {
    if (!(err instanceof ConfigSpaceError) || err.offset === undefined) throw err;
    return err.offset;
  }
}

t.test('edu masks: the header and a 64-bit MSI capability, byte for byte', async (t) => {
  const { cmask, wmask, w1cmask } = buildConfigMasks(EDU_CONFIG);
  t.equal(cmask.byteLength, 256);
  t.strictSame(
    cmask.subarray(0, 0x50),
    hex(`
      ff ff ff ff 00 00 10 00 ff ff ff ff 00 00 ff 00
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
      00 00 00 00 00 00 00 00 00 00 00 00 ff ff ff ff
      00 00 00 00 ff 00 00 00 00 00 00 00 00 00 00 00
      ff ff ff ff ff ff ff ff ff ff ff ff ff ff 00 00`),
  );
  t.strictSame(
    wmask.subarray(0, 0x50),
    hex(`
      00 00 00 00 07 05 00 00 00 00 00 00 ff 00 00 00
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
      00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
      00 00 00 00 00 00 00 00 00 00 00 00 ff 00 00 00
      00 00 71 00 fc ff ff ff ff ff ff ff ff ff ff ff`),
  );
  t.ok(wmask.subarray(0x4e).every((b) => b === 0xff), 'the rest of 0x40-0xff stays writable');
  t.ok(cmask.subarray(0x4e).every((b) => b === 0), 'and unchecked');
  t.strictSame(w1cmask.subarray(6, 8), hex('00 f9'));
  t.equal(w1cmask.reduce((n, b) => n + b, 0), 0xf9, 'only the status error bits are write-1-to-clear');
});

t.test('edu: what may differ and what may not', async (t) => {
  t.doesNotThrow(() => checkReadOnlyBits(EDU_CONFIG, EDU_CONFIG));
  const cases: Array<[string, number, number, number | 'ok']> = [
    ['vendor id', 0x00, 0x01, 0x00],
    ['device id', 0x02, 0x80, 0x02],
    ['command: all bits (not checked)', 0x04, 0xff, 'ok'],
    ['status: interrupt', 0x06, 0x08, 'ok'],
    ['status: capability list', 0x06, 0x10, 0x06],
    ['status: error bits', 0x07, 0xf9, 'ok'],
    ['revision', 0x08, 0x01, 0x08],
    ['programming interface', 0x09, 0x01, 0x09],
    ['class', 0x0b, 0x01, 0x0b],
    ['cache line size', 0x0c, 0x10, 'ok'],
    ['header type', 0x0e, 0x80, 0x0e],
    ['BAR0 without barSizes', 0x10, 0x0f, 'ok'],
    ['subsystem vendor', 0x2c, 0x01, 0x2c],
    ['subsystem id', 0x2f, 0x01, 0x2f],
    ['capability pointer', 0x34, 0x08, 0x34],
    ['interrupt line', 0x3c, 0xff, 'ok'],
    ['interrupt pin (QEMU does not check it)', 0x3d, 0x03, 'ok'],
    ['MSI id', 0x40, 0x01, 0x40],
    ['MSI next', 0x41, 0x50, 0x41],
    ['MSI enable', 0x42, 0x01, 'ok'],
    ['MSI multiple message enable', 0x42, 0x70, 'ok'],
    ['MSI multiple message capable', 0x42, 0x02, 0x42],
    ['MSI 64-bit', 0x42, 0x80, 0x42],
    ['MSI masking capable', 0x43, 0x01, 0x43],
    ['MSI address, dword-aligned bits', 0x44, 0xfc, 'ok'],
    ['MSI address, low two bits', 0x44, 0x01, 0x44],
    ['MSI address high', 0x4b, 0xff, 'ok'],
    ['MSI data', 0x4d, 0xff, 'ok'],
    ['past the 14-byte MSI capability', 0x4e, 0xff, 'ok'],
    ['free config space', 0xff, 0xff, 'ok'],
  ];
  for (const [what, offset, xor, expected] of cases) t.equal(verdict(EDU_CONFIG, offset, xor), expected, what);
  t.equal(verdict(EDU_CONFIG, 0x2c, 0x01, { subsystemIds: false }), 'ok', 'subsystem ids, QEMU-exact');
});

t.test('the first offending byte is named, with the differing bits', async (t) => {
  const img = flip(flip(EDU_CONFIG, 0x42, 0x80), 0x02, 0x11);
  t.strictSame(findReadOnlyMismatch(img, EDU_CONFIG), { offset: 0x02, incoming: 0xf9, current: 0xe8, bits: 0x11 });
  t.throws(() => checkReadOnlyBits(img, EDU_CONFIG), {
    name: 'ConfigSpaceError',
    code: 'ERR_VFIO_CONFIG_SPACE',
    offset: 0x02,
    message: 'config read-only bits: read-only bits 0x11 differ: incoming 0xf9, device 0xe8 (at offset 0x2)',
  });
  t.equal(findReadOnlyMismatch(EDU_CONFIG, EDU_CONFIG), undefined);
  const mixed = flip(EDU_CONFIG, 0x42, 0x81); // enable (writable) and 64-bit (read-only)
  t.strictSame(findReadOnlyMismatch(mixed, EDU_CONFIG), { offset: 0x42, incoming: 0x01, current: 0x80, bits: 0x80 });
});

t.test('images of different sizes are refused', async (t) => {
  const err = t.throws(() => checkReadOnlyBits(VF_CONFIG, EDU_CONFIG), { code: 'ERR_VFIO_CONFIG_SPACE', message: /4096 bytes, the device's 256/ });
  t.equal((err as ConfigSpaceError).offset, undefined);
});

t.test('VF: MSI-X, the PCIe capability and extended capabilities', async (t) => {
  const cases: Array<[string, number, number, number | 'ok']> = [
    ['MSI-X enable and function mask', 0x73, 0xc0, 'ok'],
    ['MSI-X table size', 0x72, 0x01, 0x72],
    ['MSI-X reserved flag bits', 0x73, 0x07, 0x73],
    ['MSI-X table offset/BIR', 0x74, 0x01, 0x74],
    ['MSI-X PBA offset', 0x79, 0x10, 0x79],
    ['PCIe device control (QEMU keeps it read-only)', 0xa8, 0x20, 0xa8],
    ['PCIe capability up to 0x100', 0xff, 0x01, 0xff],
    ['AER header', 0x100, 0x01, 0x100],
    ['AER registers', 0x10c, 0x01, 0x10c],
    ['AER up to the next capability', 0x14f, 0x01, 0x14f],
    ['ARI is dropped by vfio_add_ext_cap', 0x150, 0x01, 'ok'],
    ['ARI body', 0x154, 0xff, 'ok'],
    ['ATS', 0x164, 0x01, 0x164],
    ['the last capability runs to 0x1000', 0xfff, 0x01, 0xfff],
  ];
  for (const [what, offset, xor, expected] of cases) t.equal(verdict(VF_CONFIG, offset, xor), expected, what);
  const { wmask, w1cmask } = buildConfigMasks(VF_CONFIG);
  t.strictSame(wmask.subarray(0x100, 0x104), hex('00 00 00 00'), 'the chain head is emulated');
  t.strictSame(wmask.subarray(0x150, 0x160), new Uint8Array(16).fill(0xff), 'ARI stays writable');
  t.equal(w1cmask[0x100], 0);
});

t.test('BARs are checked as pci_register_bar sets them up, given the region sizes', async (t) => {
  const barSizes = [0x4000n, 0n, 0n, 0x4000n, 0n, 0n];
  const cases: Array<[string, number, number, number | 'ok']> = [
    ['BAR0 flag bits', 0x10, 0x08, 0x10],
    ['BAR0 address bits below the size', 0x11, 0x20, 0x11],
    ['BAR0 address bit 14', 0x11, 0x40, 'ok'],
    ['BAR0 high address bits', 0x13, 0xff, 'ok'],
    ['BAR1: the upper half of BAR0', 0x17, 0xff, 'ok'],
    ['BAR2: no region, not registered', 0x18, 0x0f, 'ok'],
    ['BAR3 flag bits', 0x1c, 0x04, 0x1c],
  ];
  for (const [what, offset, xor, expected] of cases) t.equal(verdict(VF_CONFIG, offset, xor, { barSizes }), expected, what);
  const { cmask, wmask } = buildConfigMasks(VF_CONFIG, { barSizes });
  t.strictSame(wmask.subarray(0x10, 0x18), hex('00 c0 ff ff ff ff ff ff'), '64-bit wmask ~(size - 1)');
  t.strictSame(cmask.subarray(0x10, 0x18), new Uint8Array(8).fill(0xff));
  const io = buildConfigMasks(MTTY_CONFIG, { barSizes: [8n, 0n, 0n, 0n, 0n, 0n] });
  t.strictSame(io.wmask.subarray(0x10, 0x18), hex('f8 ff ff ff 00 00 00 00'), "mtty's 8-byte I/O BAR");
  t.equal(verdict(MTTY_CONFIG, 0x10, 0x01, { barSizes: [8n, 0n, 0n, 0n, 0n, 0n] }), 0x10, 'I/O space bit');
  t.throws(() => buildConfigMasks(VF_CONFIG, { barSizes: [0x4000n] }), VfioArgumentError);
});

t.test('PM, masked MSI, vendor-specific and dropped extended capabilities', async (t) => {
  const cases: Array<[string, number, number, number | 'ok', ReadOnlyMaskOptions?]> = [
    ['PM power state', 0x44, 0x03, 'ok'],
    ['PM no-soft-reset', 0x44, 0x08, 0x44],
    ['PM capabilities', 0x43, 0x02, 0x43],
    ['past the 8-byte PM capability', 0x48, 0xff, 'ok'],
    ['MSI mask bits of the 8 vectors', 0x60, 0xff, 'ok'],
    ['MSI mask bits above them', 0x61, 0x01, 0x61],
    ['MSI pending bits', 0x64, 0x01, 0x64],
    ['MSI multiple message enable', 0x52, 0x20, 'ok'],
    ['MSI multiple message capable', 0x52, 0x02, 0x52],
    ['MSI-X table BIR', 0x74, 0x01, 0x74],
    ['vendor-specific length', 0xe2, 0x01, 0xe2],
    ['vendor-specific body (skip-vsc-check)', 0xe4, 0xff, 'ok'],
    ['vendor-specific body without skip-vsc-check', 0xe4, 0xff, 0xe4, { skipVendorSpecificCheck: false }],
    ['vendor-specific up to 0x100 without skip-vsc-check', 0xff, 0x01, 0xff, { skipVendorSpecificCheck: false }],
    ['DSN serial number', 0x14c, 0x01, 0x14c],
    ['hidden capability (id 0)', 0x158, 0xff, 'ok'],
    ['SR-IOV', 0x164, 0xff, 'ok'],
    ['ARI', 0x1a4, 0xff, 'ok'],
  ];
  for (const [what, offset, xor, expected, options] of cases) t.equal(verdict(FULL_CONFIG, offset, xor, options), expected, what);
});

t.test("mtty's 255-byte image", async (t) => {
  const masks = buildConfigMasks(MTTY_CONFIG);
  t.equal(masks.cmask.byteLength, 255);
  t.doesNotThrow(() => checkReadOnlyBits(MTTY_CONFIG, MTTY_CONFIG));
  t.equal(verdict(MTTY_CONFIG, 0x03, 0x01, {}), 0x03);
  t.equal(verdict(MTTY_CONFIG, 0x40, 0xff), 'ok', 'vendor bytes outside any capability');
  const withCap = MTTY_CONFIG.slice();
  withCap.set(hex('10 00'), 0x06);
  withCap[0x34] = 0xf0;
  withCap.set(hex('09 00 0f'), 0xf0);
  t.equal(verdict(withCap, 0xf2, 0x01), 0xf2, 'a capability clipped at the end of the image');
  t.equal(buildConfigMasks(withCap, { skipVendorSpecificCheck: false }).cmask[0xfe], 0xff);
});

t.test('a malformed destination image is refused', async (t) => {
  const loop = flip(EDU_CONFIG, 0x41, 0x40);
  t.throws(() => checkReadOnlyBits(loop, loop), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x41 });
});
