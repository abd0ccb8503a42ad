/**
 * The VFIOPCIDevice config vmstate against bytes derived by hand from QEMU's
 * source: hw/vfio/pci.c (vmstate_vfio_pci_config, vfio_pci_save_config),
 * hw/pci/pci.c (vmstate_pci_device: VMSTATE_INT32_POSITIVE_LE version_id,
 * put_pci_config_device, put_pci_irq_state), hw/pci/msix.c (msix_save) and
 * migration/vmstate.c (VMS_STRUCT nesting writes no version; subsections).
 * The golden streams below are written at stream offsets (config offset + 4),
 * not assembled from the fixtures, so a shifted or reordered field fails.
 */
import { concatBytes } from '../lib/bytes.js';
import t from 'tap';
import { ConfigSpaceError, VfioArgumentError } from '../lib/errors.js';
import {
  configStateLayoutOf,
  configStateSize,
  decodeConfigState,
  encodeConfigState,
  qemuConfigImageSize,
  type VfioPciConfigState,
} from '../lib/pci/vmstate.js';
import { EDU_CONFIG, VF_CONFIG, VF_MSIX_PBA, VF_MSIX_TABLE, bytesAt, hex } from './helpers/pci-fixtures.js';

const concat = (...parts: Uint8Array[]): Uint8Array => concatBytes(parts);
const ascii = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** (a) edu-like, conventional, no MSI-X, INTA asserted: 4 + 256 + 16 = 276 bytes. */
const EDU_STATE: VfioPciConfigState = { versionId: 2, config: EDU_CONFIG, irqState: [1, 0, 0, 0], msix: undefined };
const GOLDEN_A = bytesAt(276, {
  0x000: '00 00 00 02 34 12 e8 11 06 00 18 00 10 00 ff 00', // be32 version_id 2, then config 0x00..0x0b
  0x010: '00 00 00 00 00 00 a0 fe', // config 0x0c..0x13: BAR0 at stream 0x14
  0x030: 'f4 1a 00 11 00 00 00 00 40', // config 0x2c: subsystem ids, 0x34: capability pointer
  0x040: '0b 01 00 00 05 00 80 00', // config 0x3c: interrupt line/pin, 0x40: MSI id, next, flags
  0x104: '00 00 00 01', // irq_state[0] (INTA) = 1 as be32; INTB..INTD 0 up to 0x113
});

/** (b) PCIe, MSI-X with 4 entries: 4 + 4096 + 16 + 4 * 16 + 1 = 4181 bytes. */
const VF_STATE: VfioPciConfigState = { versionId: 2, config: VF_CONFIG, irqState: [0, 0, 0, 0], msix: { table: VF_MSIX_TABLE, pba: VF_MSIX_PBA } };
const GOLDEN_B = bytesAt(4181, {
  0x0000: '00 00 00 02',
  0x0004: '86 80 20 15 06 04 10 00 01 00 00 02 00 00 00 00',
  0x0014: '0c 00 00 fe 00 00 00 00 00 00 00 00 0c 00 02 fe',
  0x0024: '00 00 00 00 00 00 00 00 00 00 00 00 86 80 0a 00',
  0x0034: '00 00 00 00 70',
  0x0074: '11 a0 03 80 03 00 00 00 03 20 00 00', // MSI-X capability (config 0x70)
  0x00a4: '10 00 02 00 a2 8c 00 10 10 28', // PCIe capability (config 0xa0)
  0x0104: '01 00 02 15', // AER header (config 0x100)
  0x0110: '30 20 46 00',
  0x0154: '0e 00 01 16', // ARI (config 0x150)
  0x0164: '0f 00 01 00 20', // ATS (config 0x160)
  // 0x1004..0x1013: irq_state, four be32 zeros
  0x1014: '00 10 e0 fe 00 00 00 00 21 00 00 00 00 00 00 00', // msix_save: table entry 0, raw little-endian
  0x1024: '00 20 e0 fe 00 00 00 00 22 00 00 00 00 00 00 00',
  0x1034: '00 30 e0 fe 00 00 00 00 23 00 00 00 00 00 00 00',
  0x1044: '00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00', // entry 3: vector control mask bit
  0x1054: '08', // PBA: (4 + 7) / 8 = 1 byte, vector 3 pending
});

/** (c) conventional with MSI-X (1 entry) next to MSI: 4 + 256 + 16 + 16 + 1 = 293 bytes. */
const EDU_MSIX_CONFIG = EDU_CONFIG.slice();
EDU_MSIX_CONFIG.set(hex('05 50'), 0x40);
EDU_MSIX_CONFIG.set(hex('11 00 00 c0 01 00 00 00 01 08 00 00'), 0x50);
const EDU_MSIX_STATE: VfioPciConfigState = {
  versionId: 2,
  config: EDU_MSIX_CONFIG,
  irqState: [0, 0, 0, 0],
  msix: { table: hex('00 40 e0 fe 00 00 00 00 30 00 00 00 01 00 00 00'), pba: hex('01') },
};
const GOLDEN_C = bytesAt(293, {
  0x000: '00 00 00 02 34 12 e8 11 06 00 18 00 10 00 ff 00',
  0x010: '00 00 00 00 00 00 a0 fe',
  0x030: 'f4 1a 00 11 00 00 00 00 40',
  0x040: '0b 01 00 00 05 50 80 00',
  0x050: '00 00 00 00 11 00 00 c0 01 00 00 00 01 08 00 00', // MSI-X at config 0x50: enabled, function-masked
  0x114: '00 40 e0 fe 00 00 00 00 30 00 00 00 01 00 00 00 01',
});

const LAYOUT_A = { express: false, msixVectors: 0 };
const LAYOUT_B = { express: true, msixVectors: 4 };

t.test('golden (a): a conventional device without MSI-X', async (t) => {
  t.equal(configStateSize(LAYOUT_A), 276);
  t.strictSame(encodeConfigState(EDU_STATE), GOLDEN_A);
  const { state, byteLength } = decodeConfigState(GOLDEN_A, LAYOUT_A);
  t.equal(byteLength, 276);
  t.strictSame(state, EDU_STATE);
});

t.test('golden (b): a PCIe device with 4 MSI-X vectors', async (t) => {
  t.equal(configStateSize(LAYOUT_B), 4181);
  t.strictSame(encodeConfigState(VF_STATE), GOLDEN_B);
  const { state, byteLength } = decodeConfigState(GOLDEN_B, LAYOUT_B);
  t.equal(byteLength, 4181);
  t.strictSame(state, VF_STATE);
  t.strictSame(encodeConfigState(state), GOLDEN_B, 'round trip');
});

t.test('golden (c): a conventional device with MSI-X', async (t) => {
  t.strictSame(encodeConfigState(EDU_MSIX_STATE), GOLDEN_C);
  t.strictSame(decodeConfigState(GOLDEN_C, { express: false, msixVectors: 1 }).state, EDU_MSIX_STATE);
});

t.test('irq_state levels and version_id are big-endian, pin by pin', async (t) => {
  const out = encodeConfigState({ ...EDU_STATE, versionId: 1, irqState: [0, 1, 0, 1] });
  t.strictSame(out.subarray(0, 4), hex('00 00 00 01'));
  t.strictSame(out.subarray(0x104), hex('00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 01'));
  t.strictSame(decodeConfigState(out, LAYOUT_A).state.irqState, [0, 1, 0, 1]);
  t.equal(decodeConfigState(out, LAYOUT_A).state.versionId, 1, 'get_int32_le accepts any version <= 2');
  t.equal(decodeConfigState(encodeConfigState({ ...EDU_STATE, versionId: 0 }), LAYOUT_A).state.versionId, 0);
});

t.test('configStateSize: every combination, and the size QEMU migrates for a region size', async (t) => {
  t.equal(configStateSize({ express: false, msixVectors: 0 }), 4 + 256 + 16);
  t.equal(configStateSize({ express: false, msixVectors: 4 }), 4 + 256 + 16 + 64 + 1);
  t.equal(configStateSize({ express: true, msixVectors: 0 }), 4 + 4096 + 16);
  t.equal(configStateSize({ express: true, msixVectors: 9 }), 4 + 4096 + 16 + 144 + 2, 'PBA rounds up to whole bytes');
  t.equal(configStateSize({ express: true, msixVectors: 2048 }), 4 + 4096 + 16 + 32768 + 256);
  t.equal(qemuConfigImageSize(256), 256);
  t.equal(qemuConfigImageSize(256n), 256);
  t.equal(qemuConfigImageSize(4096n), 4096);
  t.equal(qemuConfigImageSize(255), 4096, "mtty's 255-byte region is not PCI_CONFIG_SPACE_SIZE, so QEMU stays express");
  t.equal(configStateSize({ express: qemuConfigImageSize(255) === 4096, msixVectors: 0 }), 4116, 'what a QEMU destination expects for mtty');
  for (const bad of [-1, 2049, 1.5]) {
    t.throws(() => configStateSize({ express: false, msixVectors: bad }), VfioArgumentError);
  }
});

t.test('configStateLayoutOf reads the layout off a QEMU-shaped image', async (t) => {
  t.strictSame(configStateLayoutOf(EDU_CONFIG), LAYOUT_A);
  t.strictSame(configStateLayoutOf(VF_CONFIG), LAYOUT_B);
  t.strictSame(configStateLayoutOf(EDU_MSIX_CONFIG), { express: false, msixVectors: 1 });
  t.throws(() => configStateLayoutOf(new Uint8Array(255)), { code: 'ERR_VFIO_CONFIG_SPACE', message: /256 or 4096 bytes, not 255/ });
});

t.test('decoding refuses truncated input at the field cut short', async (t) => {
  const cases: Array<[Uint8Array, { express: boolean; msixVectors: number }, number, RegExp]> = [
    [GOLDEN_A.subarray(0, 0), LAYOUT_A, 0, /version_id needs 4 bytes, 0 remain/],
    [GOLDEN_A.subarray(0, 3), LAYOUT_A, 0, /version_id/],
    [GOLDEN_A.subarray(0, 100), LAYOUT_A, 4, /the config image needs 256 bytes, 96 remain/],
    [GOLDEN_A, { express: true, msixVectors: 0 }, 4, /the config image needs 4096 bytes, 272 remain/],
    [GOLDEN_A.subarray(0, 0x104 + 5), LAYOUT_A, 0x104, /irq_state needs 16 bytes, 5 remain/],
    [GOLDEN_A.subarray(0, 275), LAYOUT_A, 0x104, /irq_state/],
    [GOLDEN_B.subarray(0, 0x1014 + 10), LAYOUT_B, 0x1014, /the MSI-X table needs 64 bytes, 10 remain/],
    [GOLDEN_B.subarray(0, 0x1054), LAYOUT_B, 0x1054, /the MSI-X PBA needs 1 bytes, 0 remain/],
  ];
  for (const [buf, layout, offset, message] of cases) {
    const err = t.throws(() => decodeConfigState(buf, layout), { code: 'ERR_VFIO_CONFIG_SPACE', offset, message }, `${buf.byteLength} bytes`);
    t.ok(err instanceof ConfigSpaceError);
  }
});

t.test('decoding refuses what QEMU loaders refuse: version_id and irq levels', async (t) => {
  for (const v of ['00 00 00 03', 'ff ff ff ff', '02 00 00 00']) {
    const buf = GOLDEN_A.slice();
    buf.set(hex(v), 0);
    t.throws(() => decodeConfigState(buf, LAYOUT_A), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0, message: /version_id -?\d+ is not 0..2/ }, v);
  }
  const buf = GOLDEN_A.slice();
  buf.set(hex('00 00 00 02'), 0x10c);
  t.throws(() => decodeConfigState(buf, LAYOUT_A), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x10c, message: /irq_state\[2\] is 2, not 0 or 1/ });
  buf.set(hex('01 00 00 00'), 0x10c);
  t.throws(() => decodeConfigState(buf, LAYOUT_A), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x10c, message: /is 16777216/ }, 'a little-endian 1 is not 1');
});

t.test('decoding refuses subsections, as vmstate_subsection_load would see them', async (t) => {
  const display = concat(hex('05 19'), ascii('VFIOPCIDevice/VFIODisplay'), hex('00 00 00 01 00'));
  t.throws(() => decodeConfigState(concat(GOLDEN_A, display), LAYOUT_A), {
    code: 'ERR_VFIO_CONFIG_SPACE',
    offset: 276,
    message: /subsection "VFIOPCIDevice\/VFIODisplay" of VFIOPCIDevice is not supported/,
  });
  t.throws(() => decodeConfigState(concat(GOLDEN_B, display), LAYOUT_B), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 4181 });

  const afterPba = concat(GOLDEN_B, hex('05 09'), ascii('msix/test'));
  t.throws(() => decodeConfigState(afterPba, LAYOUT_B), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x1055, message: /subsection "msix\/test" of msix/ });

  const pciSub = GOLDEN_B.slice();
  pciSub.set(concat(hex('05 0d'), ascii('PCIDevice/foo')), 0x1014);
  t.throws(() => decodeConfigState(pciSub, LAYOUT_B), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x1014, message: /subsection "PCIDevice\/foo" of PCIDevice/ });
});

t.test('bytes that only look like a subsection belong to what follows', async (t) => {
  const endOfState = hex('ff ff ff ff ef 10 00 01');
  t.equal(decodeConfigState(concat(GOLDEN_A, endOfState), LAYOUT_A).byteLength, 276, "QEMU's END_OF_STATE tag follows");
  t.equal(decodeConfigState(concat(GOLDEN_A, hex('05 03'), ascii('abc')), LAYOUT_A).byteLength, 276, 'name shorter than "VFIOPCIDevice" + 1');
  t.equal(decodeConfigState(concat(GOLDEN_A, hex('05 0e'), ascii('OtherDevice/xy')), LAYOUT_A).byteLength, 276, 'another prefix');
  t.equal(decodeConfigState(concat(GOLDEN_A, hex('05 19'), ascii('VFIOPCI')), LAYOUT_A).byteLength, 276, 'name cut short: the peek fails');
  t.equal(decodeConfigState(concat(GOLDEN_A, hex('05')), LAYOUT_A).byteLength, 276, 'no length byte');
  // A table entry whose first bytes are 05 02 is data, not a subsection.
  const table = VF_MSIX_TABLE.slice();
  table.set(hex('05 02'), 0);
  const state = { ...VF_STATE, msix: { table, pba: VF_MSIX_PBA } };
  t.strictSame(decodeConfigState(encodeConfigState(state), LAYOUT_B).state, state);
});

t.test('decoding cross-checks the layout against the image', async (t) => {
  t.throws(() => decodeConfigState(GOLDEN_B, { express: true, msixVectors: 0 }), {
    code: 'ERR_VFIO_CONFIG_SPACE',
    offset: 4 + 0x70 + 2,
    message: /the config image has MSI-X with 4 entries but the layout says 0/,
  });
  t.throws(() => decodeConfigState(GOLDEN_B, { express: true, msixVectors: 8 }), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0x76 });
  const err = t.throws(() => decodeConfigState(GOLDEN_A, { express: false, msixVectors: 4 }), { message: /has no MSI-X but the layout says 4/ });
  t.equal((err as ConfigSpaceError).offset, undefined);
  const loop = GOLDEN_A.slice();
  loop[4 + 0x41] = 0x40;
  t.throws(() => decodeConfigState(loop, LAYOUT_A), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 4 + 0x41, message: 'VFIOPCIDevice vmstate: config image capability list: pointer 0x40 goes back to a capability already listed (a loop) (image offset 0x41) (at offset 0x45)' });
  t.throws(() => decodeConfigState(GOLDEN_A, { express: false, msixVectors: 4096 }), VfioArgumentError);
});

t.test('decoded buffers are copies', async (t) => {
  const buf = GOLDEN_B.slice();
  const { state } = decodeConfigState(buf, LAYOUT_B);
  buf.fill(0xee);
  t.equal(state.config[0], 0x86);
  t.equal(state.msix?.table[2], 0xe0);
  t.equal(state.msix?.pba[0], 0x08);
});

t.test('encoding refuses states QEMU could not have written', async (t) => {
  const bad: Array<[VfioPciConfigState, RegExp]> = [
    [{ ...EDU_STATE, config: new Uint8Array(255) }, /config must be 256 or 4096 bytes, not 255/],
    [{ ...EDU_STATE, versionId: 3 }, /versionId must be 0..2, got 3/],
    [{ ...EDU_STATE, versionId: -1 }, /versionId/],
    [{ ...EDU_STATE, versionId: 1.5 }, /versionId/],
    [{ ...EDU_STATE, irqState: [0, 0, 0] }, /irqState must be 4 levels of 0 or 1, got \[0, 0, 0\]/],
    [{ ...EDU_STATE, irqState: [0, 2, 0, 0] }, /irqState/],
    [{ ...EDU_STATE, msix: { table: VF_MSIX_TABLE, pba: VF_MSIX_PBA } }, /msix is given but the config image has no MSI-X capability/],
    [{ ...VF_STATE, msix: undefined }, /the config image has MSI-X \(4 entries\) but msix is missing/],
    [{ ...VF_STATE, msix: { table: VF_MSIX_TABLE.subarray(0, 48), pba: VF_MSIX_PBA } }, /4 MSI-X entries need a 64-byte table and a 1-byte PBA, got 48 and 1/],
    [{ ...VF_STATE, msix: { table: VF_MSIX_TABLE, pba: new Uint8Array(8) } }, /got 64 and 8/],
  ];
  for (const [state, message] of bad) {
    t.throws(() => encodeConfigState(state), { name: 'VfioArgumentError', code: 'ERR_VFIO_INVALID_ARGUMENT', message });
  }
});
