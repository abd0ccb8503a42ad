/**
 * mtty's UARTs through a VfioDevice, for the migration contract tests: put a
 * device into one canonical state whatever earlier tests did to it (the
 * kernel's mdevs live across tests, and mtty's reset keeps the UARTs), queue
 * a message, and read it back.
 */
import type { VfioDevice } from '../../lib/vfio/device.js';

const TX = 0;
const RX = 0;
const IER = 1;
const FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const SCR = 7;
const LSR_DR = 0x01;
const FCR_ENABLE_CLEAR = 0xc7;

/**
 * Every byte of mtty's migrated state, set: divisor 12, 8N1, no interrupts,
 * scratch 0x5a, FIFOs enabled and cleared with known filler behind the head,
 * then `messages[port]` queued in each port's receive FIFO (at most 16 bytes).
 * The config registers mtty lets a guest write (BARs, interrupt line) go back
 * to their values at creation.
 */
export function canonicalMtty(device: VfioDevice, messages: readonly [string, string]): void {
  const config = device.region(7);
  config.write32(0x10, 0);
  config.write32(0x14, 0);
  config.write8(0x3c, 0);
  for (const port of [0, 1] as const) {
    const bar = device.region(port);
    bar.write8(LCR, 0x83);
    bar.write8(TX, 0x0c);
    bar.write8(IER, 0x00);
    bar.write8(LCR, 0x03);
    bar.write8(IER, 0);
    bar.write8(MCR, 0);
    bar.write8(SCR, 0x5a);
    bar.write8(FCR, FCR_ENABLE_CLEAR);
    for (let i = 0; i < 16; i++) bar.write8(TX, 0x2e);
    bar.write8(FCR, FCR_ENABLE_CLEAR);
    sendMtty(device, port, messages[port]);
  }
}

/** Writes `text` to port `port`'s TX: it lands in the port's receive FIFO (mtty is a loopback). */
export function sendMtty(device: VfioDevice, port: 0 | 1, text: string): void {
  const bar = device.region(port);
  for (const c of new TextEncoder().encode(text)) bar.write8(TX, c);
}

/** Drains port `port`'s receive FIFO. */
export function receiveMtty(device: VfioDevice, port: 0 | 1): string {
  const bar = device.region(port);
  const out: number[] = [];
  while ((bar.read8(LSR) & LSR_DR) !== 0 && out.length < 64) out.push(bar.read8(RX));
  return new TextDecoder().decode(Uint8Array.from(out));
}
