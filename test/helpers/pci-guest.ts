/** What a guest does to the simulated PCI devices before their config is saved: the tests' common starting point. */
import type { VfioPciDevice } from '../../lib/pci/pci-device.js';
import { bytesAt } from './pci-fixtures.js';

/** The message of edu's MSI and of the test function's MSI-X vector `v` once programmed by {@link programEdu} / {@link programTestDev}. */
export const EDU_MSI = { address: 0xfee01000n, data: 0x4041 } as const;
export const testDevMsix = (v: number): { address: bigint; data: number } => ({ address: 0xfee00000n + BigInt(v << 12), data: 0x4060 + v });

/** Config writes of a guest: offset, width, value. */
type ConfigWrites = readonly (readonly [number, 1 | 2 | 4, number])[];

/** edu: BAR0 placed, memory and bus master on, line 0x0b, MSI at 0xfee01000/0x4041 enabled. */
const EDU_WRITES: ConfigWrites = [
  [0x10, 4, 0xfea00000],
  [0x04, 2, 0x0006],
  [0x3c, 1, 0x0b],
  [0x44, 4, 0xfee01000],
  [0x48, 4, 0],
  [0x4c, 2, 0x4041],
  [0x42, 2, 0x0081],
];

/** The test function: BARs placed (BAR4 64-bit at 8_0000_0000), memory and bus master on, line 0x0a, MSI-X enabled. */
const TESTDEV_WRITES: ConfigWrites = [
  [0x10, 4, 0xfd000000],
  [0x18, 4, 0xfd004000],
  [0x20, 4, 0x00000000],
  [0x24, 4, 0x00000008],
  [0x04, 2, 0x0006],
  [0x3c, 1, 0x0a],
  [0x72, 2, 0x8000],
];

/** edu as a guest leaves it (see EDU_WRITES). */
export function programEdu(p: VfioPciDevice): void {
  for (const [offset, width, value] of EDU_WRITES) p.writeConfig(offset, width, value);
}

/** The test function as a guest leaves it (see TESTDEV_WRITES), with MSI-X vector 3 unmasked and vector 5 used, then masked again. */
export function programTestDev(p: VfioPciDevice): void {
  for (const [offset, width, value] of TESTDEV_WRITES) p.writeConfig(offset, width, value);
  for (const v of [3, 5]) {
    const { address, data } = testDevMsix(v);
    p.writeBar(2, v * 16, 8, address);
    p.writeBar(2, v * 16 + 8, 4, BigInt(data));
    p.writeBar(2, v * 16 + 12, 4, 0n);
  }
  p.writeBar(2, 5 * 16 + 12, 4, 1n);
}

/**
 * What QEMU's `vfio_pci_save_config` writes for edu after {@link programEdu},
 * derived by hand from QEMU's realize and reset (see test/pci-config-state.test.ts):
 * 4 + 256 + 16 = 276 bytes, written at stream offsets (config offset + 4).
 */
export const EDU_CONFIG_STATE = bytesAt(276, {
  0x000: '00 00 00 02', // PCIDevice version_id 2
  0x004: '34 12 e8 11 06 00 10 00 10 00 ff 00', // ids; command as the guest wrote it; status CAP_LIST; rev, class
  0x014: '00 00 a0 fe', // BAR0: the guest's address, type bits 0 (32-bit memory)
  0x030: 'f4 1a 00 11', // subsystem
  0x038: '40', // capability pointer
  0x040: '0b 01', // interrupt line (the guest's), pin A
  0x044: '05 00 81 00 00 10 e0 fe 00 00 00 00 41 40', // MSI: 64-bit, enabled, address, data
  // 0x104..0x113: irq_state, no line asserted
});
