/**
 * Config images for the lib/pci tests, written out by hand (byte values and
 * offsets from the PCI spec and `<linux/pci_regs.h>`), so that no fixture is
 * produced by the code under test.
 */

/** Bytes from a hex string; whitespace is ignored. */
export function hex(text: string): Uint8Array {
  const digits = text.replace(/\s+/g, '');
  if (digits.length % 2 !== 0 || /[^0-9a-f]/i.test(digits)) throw new Error(`bad hex: ${text}`);
  const out = new Uint8Array(digits.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A zeroed buffer of `size` bytes with each hex segment copied in at its offset. */
export function bytesAt(size: number, segments: Readonly<Record<number, string>>): Uint8Array {
  const out = new Uint8Array(size);
  for (const [at, text] of Object.entries(segments)) out.set(hex(text), Number(at));
  return out;
}

/**
 * A QEMU `edu`-like conventional device (256 bytes): vendor 0x1234, device
 * 0x11e8, revision 0x10, class 0x00ff00, BAR0 a 1 MiB 32-bit memory BAR at
 * 0xfea00000, subsystem 1af4:1100, INTA asserted (status INTERRUPT set), and
 * one capability: 64-bit MSI at 0x40, one vector, not enabled.
 */
export const EDU_CONFIG = bytesAt(256, {
  0x00: '34 12 e8 11 06 00 18 00 10 00 ff 00 00 00 00 00',
  0x10: '00 00 a0 fe 00 00 00 00 00 00 00 00 00 00 00 00',
  0x20: '00 00 00 00 00 00 00 00 00 00 00 00 f4 1a 00 11',
  0x30: '00 00 00 00 40 00 00 00 00 00 00 00 0b 01 00 00',
  0x40: '05 00 80 00 00 00 00 00 00 00 00 00 00 00 00 00',
});

/**
 * A PCIe SR-IOV VF-like device (4096 bytes): vendor 0x8086, device 0x1520,
 * class 0x020000; BAR0 and BAR3 are 64-bit prefetchable memory BARs (BAR1 and
 * BAR4 their upper halves); capabilities MSI-X at 0x70 (enabled, 4 entries,
 * table in BAR3 at 0, PBA in BAR3 at 0x2000) then PCI Express at 0xa0
 * (v2 endpoint, FLR); extended AER at 0x100, ARI at 0x150, ATS at 0x160.
 */
export const VF_CONFIG = bytesAt(4096, {
  0x00: '86 80 20 15 06 04 10 00 01 00 00 02 00 00 00 00',
  0x10: '0c 00 00 fe 00 00 00 00 00 00 00 00 0c 00 02 fe',
  0x20: '00 00 00 00 00 00 00 00 00 00 00 00 86 80 0a 00',
  0x30: '00 00 00 00 70 00 00 00 00 00 00 00 00 00 00 00',
  0x70: '11 a0 03 80 03 00 00 00 03 20 00 00',
  0xa0: '10 00 02 00 a2 8c 00 10 10 28 00 00',
  0x100: '01 00 02 15',
  0x10c: '30 20 46 00',
  0x150: '0e 00 01 16',
  0x160: '0f 00 01 00 20 00 00 00',
});

/** VF_CONFIG's MSI-X table: three programmed vectors, the fourth masked and never programmed. */
export const VF_MSIX_TABLE = hex(`
  00 10 e0 fe 00 00 00 00 21 00 00 00 00 00 00 00
  00 20 e0 fe 00 00 00 00 22 00 00 00 00 00 00 00
  00 30 e0 fe 00 00 00 00 23 00 00 00 00 00 00 00
  00 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00`);
/** Vector 3 pending. */
export const VF_MSIX_PBA = hex('08');

/**
 * mtty's config space, byte for byte as `mtty_create_config_space`
 * (samples/vfio-mdev/mtty.c, Linux 6.12) fills its 255-byte (0xff) region
 * for a one-port device.
 */
export const MTTY_CONFIG = bytesAt(0xff, {
  0x00: '48 43 53 32 01 00 00 02 10 02 00 07 00 00 00 00',
  0x10: '01 00 00 00',
  0x2c: '48 43 53 32',
  0x3c: '00 01',
  0x40: '23 00 00 80 23 00 00 00 23 00 00 00 23',
  0x60: '50 43 49 20 53 65 72 69 61 6c 2f 55 41 52 54',
});

/**
 * A PCIe device with PM, MSI, MSI-X, PCI Express and vendor-specific
 * capabilities and an extended list with AER, DSN, a hidden capability
 * (id 0), SR-IOV and ARI:
 *
 * - 0x40 PM (v3, D1/D2 support), next 0x50
 * - 0x50 MSI: 64-bit, per-vector masking, 8 vectors capable, 2 enabled, on; next 0x70
 * - 0x70 MSI-X: 16 entries, table BIR 0 at 0x3000, PBA BIR 0 at 0x3800; next 0xa0
 * - 0xa0 PCIe v2 endpoint; next 0xe0
 * - 0xe0 vendor-specific, length 0x10; end
 * - 0x100 AER v2 -> 0x148 DSN v1 -> 0x154 id 0 -> 0x160 SR-IOV v1 -> 0x1a0 ARI v1, end
 */
export const FULL_CONFIG = bytesAt(4096, {
  0x00: 'ab 1a cd 00 06 00 10 00 02 00 80 01 00 00 00 00',
  0x10: '04 00 00 fd 00 00 00 00 00 00 00 00 00 00 00 00',
  0x20: '00 00 00 00 00 00 00 00 00 00 00 00 ab 1a 01 00',
  0x30: '00 00 00 00 40 00 00 00 00 00 00 00 0a 01 00 00',
  0x40: '01 50 03 06 08 00 00 00',
  0x50: '05 70 97 01 00 00 e0 fe 00 00 00 00 41 00 00 00 fe 00 00 00 00 00 00 00',
  0x70: '11 a0 0f 00 00 30 00 00 00 38 00 00',
  0xa0: '10 e0 02 00 a2 8c 00 10 10 28 00 00',
  0xe0: '09 00 10 01 de ad be ef 00 00 00 00 00 00 00 00',
  0x100: '01 00 82 14',
  0x148: '03 00 41 15 78 56 34 12 00 ef cd ab',
  0x154: '00 00 01 16',
  0x160: '10 00 01 1a',
  0x1a0: '0e 00 01 00',
});
