/**
 * mtty's emulated PCI config space: the image `mtty_create_config_space`
 * builds and the writes `handle_pci_cfg_write` accepts (BAR sizing, the
 * interrupt line; everything else read-only or ignored).
 */

/** `MTTY_CONFIG_SPACE_SIZE`: the region size GET_REGION_INFO reports (255, not 256). */
export const MTTY_CONFIG_SPACE_SIZE = 0xff;
/** `MTTY_IO_BAR_SIZE`: each UART's I/O BAR. */
export const MTTY_IO_BAR_SIZE = 0x8;

/**
 * kzalloc(255) comes from the kmalloc-256 slab, zeroed over the whole object,
 * so byte 0xff reads as 0 on the kernel too.
 */
const ALLOCATED = 256;

const PCI_BASE_ADDRESS_0 = 0x10;
const PCI_BASE_ADDRESS_1 = 0x14;

/** "PCI Serial/UART" at 0x60, part of mtty's vendor-specific bytes. */
const VENDOR_STRING = 'PCI Serial/UART';

/** `mdev_state->vconfig` and `bar_mask[]`. */
export class MttyConfigSpace {
  readonly #bytes = new Uint8Array(ALLOCATED);
  readonly #dv = new DataView(this.#bytes.buffer);
  readonly #barMask: readonly [number, number];

  /** `mtty_create_config_space`. */
  constructor(private readonly nrPorts: 1 | 2) {
    const dv = this.#dv;
    dv.setUint32(0x00, 0x32534348, true); // vendor 0x4348, device 0x3253
    dv.setUint16(0x04, 0x0001, true); // command: I/O+
    dv.setUint16(0x06, 0x0200, true); // status
    dv.setUint8(0x08, 0x10); // revision
    dv.setUint8(0x09, 0x02); // prog-if: 16550-compatible
    dv.setUint8(0x0a, 0x00); // subclass
    dv.setUint8(0x0b, 0x07); // class: simple communication controller
    dv.setUint32(PCI_BASE_ADDRESS_0, 0x000001, true); // BAR0: I/O
    // ~(MTTY_IO_BAR_SIZE) + 1 as a u32; BAR1's mask stays 0 on a one-port device.
    const ioMask = (~MTTY_IO_BAR_SIZE + 1) >>> 0;
    if (nrPorts === 2) dv.setUint32(PCI_BASE_ADDRESS_1, 0x000001, true);
    this.#barMask = [ioMask, nrPorts === 2 ? ioMask : 0];
    dv.setUint32(0x2c, 0x32534348, true); // subsystem
    dv.setUint8(0x34, 0x00); // capability pointer
    dv.setUint8(0x3d, 0x01); // interrupt pin INTA#
    dv.setUint8(0x40, 0x23);
    dv.setUint8(0x43, 0x80);
    dv.setUint8(0x44, 0x23);
    dv.setUint8(0x48, 0x23);
    dv.setUint8(0x4c, 0x23);
    this.#bytes.set(new TextEncoder().encode(VENDOR_STRING), 0x60);
  }

  /**
   * The config read of `mdev_access`: a memcpy from `vconfig + offset`. The
   * kernel does not bound `offset`, so past the 256-byte allocation it reads
   * neighbouring slab memory; the simulator returns zeros there.
   */
  read(offset: bigint, out: Uint8Array): void {
    for (let i = 0; i < out.length; i++) {
      const at = offset + BigInt(i);
      out[i] = at < ALLOCATED ? this.#bytes[Number(at)] : 0;
    }
  }

  /**
   * `handle_pci_cfg_write`. `offset` is the access offset already cut to the
   * function's `u16` parameter; `buf` is the access (1, 2 or 4 bytes).
   */
  write(offset: number, buf: Uint8Array): void {
    switch (offset) {
      case 0x3c: // interrupt line
        this.#bytes[0x3c] = buf[0];
        break;
      case PCI_BASE_ADDRESS_0:
      case PCI_BASE_ADDRESS_1: {
        const bar = offset === PCI_BASE_ADDRESS_0 ? 0 : 1;
        if (this.nrPorts === 1 && bar === 1) {
          this.#dv.setUint32(offset, 0, true);
          break;
        }
        // mtty reads a u32 from the access buffer whatever its size; the kernel
        // gets stack bytes past a 1- or 2-byte access, the simulator zeros.
        let addr = 0;
        for (let i = 0; i < 4 && i < buf.length; i++) addr |= buf[i] << (8 * i);
        addr >>>= 0;
        // All ones is BAR sizing: answer with the size mask.
        if (addr === 0xffffffff) addr = (addr & this.#barMask[bar]) >>> 0;
        addr = (addr | (this.#bytes[offset] & 0x3)) >>> 0;
        this.#dv.setUint32(offset, addr, true);
        break;
      }
      case 0x18: // BAR2
      case 0x1c: // BAR3
      case 0x20: // BAR4
        this.#dv.setUint32(offset, 0, true);
        break;
      default:
        // Command, status, interrupt pin, BAR5 and the rest: ignored.
        break;
    }
  }
}
