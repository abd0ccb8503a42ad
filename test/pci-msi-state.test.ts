/**
 * The guest's view of MSI and MSI-X (lib/pci/msi-state.ts, msix-state.ts):
 * QEMU's msi.c and msix.c semantics, checked on hand-written capabilities.
 */
import t from 'tap';
import { ConfigSpaceError } from '../lib/errors.js';
import { EmulatedRegisters } from '../lib/pci/emulated-registers.js';
import { MsiState } from '../lib/pci/msi-state.js';
import { parseMsix } from '../lib/pci/msi.js';
import { MsixState } from '../lib/pci/msix-state.js';
import { bytesAt } from './helpers/pci-fixtures.js';
import { thrown } from './helpers/expect.js';

/** A 64-bit MSI capability with per-vector masking at 0x50: flags 64BIT | MASKBIT | 8 vectors. */
const MSI_FLAGS = 0x0180 | (3 << 1);

t.test('EmulatedRegisters: masked guest writes, unmasked own writes', async (t) => {
  const r = new EmulatedRegisters(4);
  r.writable(0, 2, 0x0ff0);
  r.write(0, 4, 0xffffffff);
  t.equal(r.get(0, 4), 0x0ff0n, 'only writable bits');
  r.set(2, 2, 0xabcd);
  t.equal(r.getNumber(0, 4), 0xabcd0ff0, 'the VMM writes anything');
  r.write(3, 4, 0xffffffff);
  t.equal(r.get(3, 2), 0xabn, 'bytes past the block are ignored and read 0');
  t.same([...r.snapshot()], [0xf0, 0x0f, 0xcd, 0xab]);
  t.equal(new EmulatedRegisters(2, true).size, 2);
});

t.test('MSI: msi_init state and write masks', async (t) => {
  const msi = new MsiState(0x50, MSI_FLAGS | 0x0071, 0x70);
  t.equal(msi.size, 0x18);
  t.equal(msi.vectorsCapable, 8);
  t.equal(msi.enabled, false, 'what the device had enabled is not carried over');
  t.same([...msi.snapshot().subarray(0, 4)], [0x05, 0x70, 0x86, 0x01], 'id, next, flags as msi_init sets them');
  t.equal(msi.owns(0x67), true);
  t.equal(msi.owns(0x68), false);
  msi.write(0x52, 2, 0xffff);
  t.equal(msi.readByte(0x52), 0xb7, 'enable and MME writable, MME clamped to the 8 capable vectors (0x30)');
  t.equal(msi.readByte(0x53), 0x01, 'the rest of the flags are read-only');
  t.equal(msi.vectorsEnabled, 8);
  msi.write(0x54, 4, 0xffffffff);
  t.equal(msi.address & 0xffffffffn, 0xfffffffcn, 'the address is dword aligned');
  msi.write(0x60, 4, 0xffffffff);
  t.equal(msi.mask, 0xff, 'mask bits of the capable vectors only');
  msi.write(0x64, 4, 0xffffffff);
  t.equal(msi.pending, 0, 'pending bits are read-only');
  t.type(thrown(() => new MsiState(0x50, 0x000c, 0)), ConfigSpaceError, 'a reserved vector count');
});

t.test('MSI: messages, masking and pending', async (t) => {
  const msi = new MsiState(0x50, MSI_FLAGS, 0);
  t.equal(msi.notify(0), null, 'disabled: nothing');
  msi.write(0x54, 4, 0xfee00000);
  msi.write(0x58, 4, 0x1);
  msi.write(0x5c, 2, 0x4040);
  let effect = msi.write(0x52, 2, 0x0021);
  t.same(effect, { enable: 'enabled', deliver: [] });
  t.equal(msi.vectorsEnabled, 4);
  t.same(msi.notify(3), { address: 0x1fee00000n, data: 0x4043 }, 'the vector number in the enabled low bits of data');
  t.equal(msi.notify(4), null, 'past the enabled vectors');
  msi.write(0x60, 4, 0x4);
  t.equal(msi.notify(2), null, 'masked');
  t.equal(msi.pending, 0x4, 'now pending');
  effect = msi.write(0x60, 4, 0x0);
  t.same(effect, { enable: 'unchanged', deliver: [2] }, 'unmasking delivers it');
  t.equal(msi.pending, 0);
  t.same(msi.write(0x52, 2, 0x0020), { enable: 'disabled', deliver: [] });

  const plain = new MsiState(0x40, 0x0080, 0);
  t.equal(plain.size, 0x0e);
  plain.write(0x4c, 2, 0x4041);
  plain.write(0x42, 2, 0x0001);
  t.same(plain.notify(0), { address: 0n, data: 0x4041 }, 'one vector: data as written');
  t.equal(plain.mask, 0);
  t.equal(plain.pending, 0);
  const short = new MsiState(0x40, 0x0000, 0);
  t.equal(short.size, 0x0a, '32-bit, no masking');
  short.write(0x48, 2, 0x1234);
  t.equal(short.data, 0x1234);
});

t.test('MSI-X: msix_init, function mask, vector use and pending', async (t) => {
  const image = bytesAt(256, { 0x70: '11 80 07 c0 02 00 00 00 02 08 00 00' });
  const cap = parseMsix(image, 0x70);
  const msix = new MsixState(cap, 0x80);
  t.same([...msix.snapshot()], [0x11, 0x80, 0x07, 0x00, 0x02, 0, 0, 0, 0x02, 0x08, 0, 0], 'enable and mask-all of the device dropped');
  t.equal(msix.entries, 8);
  t.equal(msix.tableBytes, 128);
  t.equal(msix.pbaBytes, 8);
  t.equal(msix.isMasked(0), true);
  t.equal(msix.readTable(0x0c, 4), 1n, 'every vector starts masked');
  t.equal(msix.notify(0), null, 'disabled');

  let e = msix.writeConfig(0x72, 2, 0xc000);
  t.same(e, { enable: 'enabled', unmasked: [], masked: [], deliver: [] }, 'enabled with the function masked');
  e = msix.writeTable(0x10, 4, 0xfee02000n);
  e = msix.writeTable(0x18, 4, 0x4051n);
  e = msix.writeTable(0x1c, 4, 0n);
  t.same(e.unmasked, [], 'the function mask still holds vector 1');
  t.equal(msix.notify(1), null);
  t.equal(msix.isPending(1), true);
  t.same(msix.readPba(0, 4), 0x2n);
  e = msix.writeConfig(0x72, 2, 0x8000);
  t.same(e, { enable: 'unchanged', unmasked: [1], masked: [], deliver: [{ vector: 1, message: { address: 0xfee02000n, data: 0x4051 } }] }, 'clearing the function mask uses vector 1 and delivers it');
  t.same(msix.unmaskedVectors(), [1]);
  t.same(msix.notify(1), { address: 0xfee02000n, data: 0x4051 });
  e = msix.writeTable(0x1c, 4, 1n);
  t.same(e.masked, [1]);
  t.same(msix.writeTable(0x1c, 2, 0n).unmasked, [], 'a 2-byte table write is ignored');
  t.equal(msix.readTable(0x1c, 2), 0n, 'and a 2-byte read gives 0');
  e = msix.writeTable(0x18, 8, 0x0000000000004052n);
  t.same(e.unmasked, [1], 'an 8-byte write covers data and vector control');
  t.equal(msix.readTable(0x10, 8), 0xfee02000n);
  t.equal(msix.readPba(2, 4), 0n, 'unaligned PBA read');
  e = msix.writeConfig(0x72, 2, 0x0000);
  t.same(e.enable, 'disabled');
  t.same(e.masked, [1]);
  t.same([...msix.tableSnapshot().subarray(0x10, 0x20)], [0x00, 0x20, 0xe0, 0xfe, 0, 0, 0, 0, 0x52, 0x40, 0, 0, 0, 0, 0, 0]);
  t.same([...msix.pbaSnapshot()], [0, 0, 0, 0, 0, 0, 0, 0]);
  t.equal(msix.owns(0x7b), true);
  t.equal(msix.readByte(0x70), 0x11);
});
