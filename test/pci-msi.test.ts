import t from 'tap';
import {
  decodeMsixEntry,
  findMsi,
  findMsix,
  msiCapabilitySize,
  msiVectorCount,
  msixPending,
  msixVectorCount,
  parseMsi,
  parseMsix,
} from '../lib/pci/msi.js';
import { EDU_CONFIG, FULL_CONFIG, MTTY_CONFIG, VF_CONFIG, VF_MSIX_PBA, VF_MSIX_TABLE, bytesAt } from './helpers/pci-fixtures.js';

t.test('vector counts follow vfio_pci_get_irq_count', async (t) => {
  // MSI: 1 << ((flags & PCI_MSI_FLAGS_QMASK) >> 1), whatever else is set.
  t.strictSame(
    [0, 1, 2, 3, 4, 5].map((mmc) => msiVectorCount(mmc << 1)),
    [1, 2, 4, 8, 16, 32],
  );
  t.equal(msiVectorCount(0xffff), 128, 'reserved encodings are reported as the kernel computes them');
  t.equal(msiVectorCount(0x0197), 8);
  // MSI-X: (flags & PCI_MSIX_FLAGS_QSIZE) + 1.
  t.equal(msixVectorCount(0x0000), 1);
  t.equal(msixVectorCount(0x8003), 4);
  t.equal(msixVectorCount(0xc7ff), 2048);
});

t.test('MSI capability sizes are msi_cap_sizeof', async (t) => {
  t.equal(msiCapabilitySize(0x0000), 0x0a);
  t.equal(msiCapabilitySize(0x0080), 0x0e);
  t.equal(msiCapabilitySize(0x0100), 0x14);
  t.equal(msiCapabilitySize(0x0180), 0x18);
});

t.test('parses a 64-bit MSI without masking (edu)', async (t) => {
  t.strictSame(findMsi(EDU_CONFIG), {
    offset: 0x40,
    flags: 0x0080,
    enabled: false,
    vectorsCapable: 1,
    vectorsEnabled: 1,
    is64Bit: true,
    perVectorMasking: false,
    size: 0x0e,
    addressOffset: 0x44,
    addressHighOffset: 0x48,
    dataOffset: 0x4c,
    maskOffset: undefined,
    pendingOffset: undefined,
    address: 0n,
    data: 0,
    mask: 0,
    pending: 0,
  });
});

t.test('parses a 64-bit MSI with per-vector masking, enabled', async (t) => {
  const msi = parseMsi(FULL_CONFIG, 0x50);
  t.equal(msi.enabled, true);
  t.equal(msi.vectorsCapable, 8);
  t.equal(msi.vectorsEnabled, 2);
  t.equal(msi.perVectorMasking, true);
  t.equal(msi.size, 0x18);
  t.strictSame([msi.addressOffset, msi.addressHighOffset, msi.dataOffset, msi.maskOffset, msi.pendingOffset], [0x54, 0x58, 0x5c, 0x60, 0x64]);
  t.equal(msi.address, 0xfee00000n);
  t.equal(msi.data, 0x41);
  t.equal(msi.mask, 0xfe);
  t.equal(msi.pending, 0);
});

t.test('parses 32-bit MSI layouts', async (t) => {
  const plain = parseMsi(bytesAt(256, { 0x40: '05 00 01 00 00 10 e0 fe 33 00' }), 0x40);
  t.strictSame([plain.addressHighOffset, plain.dataOffset, plain.maskOffset, plain.size], [undefined, 0x48, undefined, 0x0a]);
  t.equal(plain.address, 0xfee01000n);
  t.equal(plain.data, 0x33);
  const masked = parseMsi(bytesAt(256, { 0x40: '05 00 02 01 00 10 e0 fe 33 00 00 00 01 00 00 00 02 00 00 00' }), 0x40);
  t.strictSame([masked.dataOffset, masked.maskOffset, masked.pendingOffset, masked.size], [0x48, 0x4c, 0x50, 0x14]);
  t.strictSame([masked.vectorsCapable, masked.mask, masked.pending], [2, 1, 2]);
});

t.test('refuses an MSI capability past the image or asking for over 32 vectors', async (t) => {
  t.throws(() => parseMsi(bytesAt(0x50, { 0x40: '05 00 80 01' }), 0x40), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x40, message: /24 bytes from 64 run past the 80-byte image/ });
  t.throws(() => parseMsi(bytesAt(256, { 0x40: '05 00 0c 00' }), 0x40), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x42, message: /more than 32 vectors/ });
  t.throws(() => parseMsi(bytesAt(256, { 0x40: '05 00 60 00' }), 0x40), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x42 }, 'multiple message enable 64');
});

t.test('parses MSI-X: table size, function mask, enable, BIRs and offsets', async (t) => {
  t.strictSame(findMsix(VF_CONFIG), {
    offset: 0x70,
    flags: 0x8003,
    tableSize: 4,
    functionMask: false,
    enabled: true,
    tableBir: 3,
    tableOffset: 0,
    pbaBir: 3,
    pbaOffset: 0x2000,
    tableBytes: 64,
    pbaBytes: 8,
  });
  const full = parseMsix(FULL_CONFIG, 0x70);
  t.strictSame([full.tableSize, full.tableOffset, full.pbaOffset, full.enabled, full.pbaBytes], [16, 0x3000, 0x3800, false, 8]);
  const masked = parseMsix(bytesAt(256, { 0x40: '11 00 ff c7 f2 ff ff ff 05 00 00 80' }), 0x40);
  t.strictSame(
    [masked.tableSize, masked.functionMask, masked.enabled, masked.tableBir, masked.tableOffset, masked.pbaBir, masked.pbaOffset, masked.pbaBytes],
    [2048, true, true, 2, 0xfffffff0, 5, 0x80000000, 256],
  );
  t.equal(findMsix(EDU_CONFIG), undefined);
  t.equal(findMsi(VF_CONFIG), undefined);
  t.equal(findMsi(MTTY_CONFIG), undefined);
});

t.test('refuses MSI-X past the image or with a reserved BIR', async (t) => {
  t.throws(() => parseMsix(bytesAt(0xff, { 0xf4: '11 00 00 00' }), 0xf4), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0xf4, message: /12 bytes from 244 run past the 255-byte image/ });
  t.throws(() => parseMsix(bytesAt(256, { 0x40: '11 00 00 00 06 00 00 00 00 00 00 00' }), 0x40), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x44, message: /table BIR 6 is reserved/ });
  t.throws(() => parseMsix(bytesAt(256, { 0x40: '11 00 00 00 00 00 00 00 07 00 00 00' }), 0x40), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x48, message: /PBA BIR 7 is reserved/ });
});

t.test('decodes MSI-X table entries and pending bits', async (t) => {
  t.strictSame(decodeMsixEntry(VF_MSIX_TABLE, 0), { address: 0xfee01000n, data: 0x21, vectorControl: 0, masked: false });
  t.strictSame(decodeMsixEntry(VF_MSIX_TABLE, 3), { address: 0n, data: 0, vectorControl: 1, masked: true });
  const hi = new Uint8Array(16);
  hi.set([0x00, 0x00, 0xe0, 0xfe, 0x01, 0x00, 0x00, 0x00], 0);
  t.equal(decodeMsixEntry(hi, 0).address, 0x1fee00000n, 'upper address dword');
  t.throws(() => decodeMsixEntry(VF_MSIX_TABLE, 4), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 64, message: /entry 4 lies outside the 64-byte table/ });
  t.throws(() => decodeMsixEntry(VF_MSIX_TABLE, -1), { code: 'ERR_VFIO_CONFIG_SPACE', offset: -16 });
  t.strictSame([0, 1, 2, 3].map((v) => msixPending(VF_MSIX_PBA, v)), [false, false, false, true]);
  const pba = new Uint8Array([0x00, 0x80]);
  t.equal(msixPending(pba, 15), true, 'bit 7 of byte 1');
  t.equal(msixPending(pba, 16), false, 'beyond the array');
});
