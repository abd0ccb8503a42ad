/**
 * The 16550 UART that mtty emulates behind each I/O BAR: mtty.c's
 * `struct serial_port` with `handle_bar_write` / `handle_bar_read`, a
 * loopback port whose transmitter feeds its own 16-byte receive FIFO.
 * Register bits are those of `<uapi/linux/serial_reg.h>`.
 */

// Register offsets (DLAB=0).
const UART_RX = 0;
const UART_TX = 0;
const UART_IER = 1;
const UART_IIR = 2;
const UART_FCR = 2;
const UART_LCR = 3;
const UART_MCR = 4;
const UART_LSR = 5;
const UART_MSR = 6;
const UART_SCR = 7;

const UART_IER_MSI = 0x08;
const UART_IER_RLSI = 0x04;
const UART_IER_THRI = 0x02;
const UART_IER_RDI = 0x01;

const UART_IIR_NO_INT = 0x01;
const UART_IIR_THRI = 0x02;
const UART_IIR_RDI = 0x04;
const UART_IIR_RLSI = 0x06;

const UART_FCR_ENABLE_FIFO = 0x01;
const UART_FCR_CLEAR_RCVR = 0x02;
const UART_FCR_CLEAR_XMIT = 0x04;

const UART_LCR_DLAB = 0x80;

const UART_MCR_AFE = 0x20;
const UART_MCR_OUT2 = 0x08;
const UART_MCR_RTS = 0x02;
const UART_MCR_DTR = 0x01;

const UART_LSR_TEMT = 0x40;
const UART_LSR_THRE = 0x20;
const UART_LSR_OE = 0x02;
const UART_LSR_DR = 0x01;

const UART_MSR_DCD = 0x80;
const UART_MSR_DSR = 0x20;
const UART_MSR_CTS = 0x10;
const UART_MSR_DDSR = 0x02;
const UART_MSR_DCTS = 0x01;

/** `MAX_FIFO_SIZE`: the loopback FIFO depth. */
export const MAX_FIFO_SIZE = 16;

/** `sizeof(struct serial_port)` on x86_64: 36 bytes, alignment 2. */
export const SERIAL_PORT_SIZE = 36;

// Field offsets in struct serial_port (see reference §8.5).
const OFF_UART_REG = 0;
const OFF_FIFO = 8;
const OFF_HEAD = 24;
const OFF_TAIL = 25;
const OFF_COUNT = 26;
const OFF_DLAB = 27;
const OFF_OVERRUN = 28;
const OFF_PAD_29 = 29;
const OFF_DIVISOR = 30;
const OFF_FCR = 32;
const OFF_MAX_FIFO_SIZE = 33;
const OFF_INTR_TRIGGER_LEVEL = 34;
const OFF_PAD_35 = 35;

/** A read-only copy of one port's state, field by field as in `struct serial_port`. */
export interface SerialPortState {
  readonly uartReg: readonly number[];
  readonly fifo: readonly number[];
  readonly head: number;
  readonly tail: number;
  readonly count: number;
  readonly dlab: boolean;
  readonly overrun: boolean;
  readonly divisor: number;
  readonly fcr: number;
  readonly maxFifoSize: number;
  readonly intrTriggerLevel: number;
}

/** `CIRCULAR_BUF_INC_IDX`. */
const inc = (idx: number): number => (idx + 1) & (MAX_FIFO_SIZE - 1);

/**
 * One mtty serial port. Fields are the C struct's; u8 fields wrap as u8. The
 * zeroed initial state is `vfio_alloc_device`'s kzalloc (mtty_init_dev then
 * sets `max_fifo_size`, which the owner does through the constructor).
 */
export class SerialPort {
  /** `uart_reg[8]`: IER, LCR, MCR and SCR are stored here (FCR is not). */
  readonly uartReg = new Uint8Array(8);
  readonly fifo = new Uint8Array(MAX_FIFO_SIZE);
  head = 0;
  tail = 0;
  count = 0;
  dlab = false;
  overrun = false;
  divisor = 0;
  fcr = 0;
  maxFifoSize: number;
  /** Starts at 0, so no RDI interrupt fires until FCR has been written (mtty quirk). */
  intrTriggerLevel = 0;
  // The struct's padding bytes: mtty memcpy()s whole structs in and out of the
  // migration image, so bytes a resumed stream put there come back out.
  #pad29 = 0;
  #pad35 = 0;

  constructor(maxFifoSize: number) {
    this.maxFifoSize = maxFifoSize;
  }

  /**
   * `handle_bar_write`: the guest writes `data` (the access's first byte; mtty
   * ignores the others) to register `offset`. `trigger` is
   * `mtty_trigger_interrupt`.
   */
  write(offset: number, data: number, trigger: () => void): void {
    switch (offset) {
      case UART_TX:
        // With DLAB set the byte is the divisor's LSB, OR-ed in as mtty does.
        if (this.dlab) {
          this.divisor |= data;
          break;
        }
        if (this.count < this.maxFifoSize) {
          // mtty indexes fifo[head] unchecked; a resumed head >= 16 would write out of bounds.
          this.fifo[this.head & (MAX_FIFO_SIZE - 1)] = data;
          this.count = (this.count + 1) & 0xff;
          this.head = inc(this.head);
          this.overrun = false;
          if ((this.uartReg[UART_IER] & UART_IER_RDI) !== 0 && this.count === this.intrTriggerLevel) trigger();
        } else {
          this.overrun = true;
          if ((this.uartReg[UART_IER] & UART_IER_RLSI) !== 0) trigger();
        }
        break;
      case UART_IER:
        if (this.dlab) {
          this.divisor |= data << 8;
        } else {
          this.uartReg[UART_IER] = data;
          if ((data & UART_IER_THRI) !== 0 && this.head === this.tail) trigger();
        }
        break;
      case UART_FCR:
        this.fcr = data;
        if ((data & (UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT)) !== 0) {
          this.count = 0;
          this.head = 0;
          this.tail = 0;
        }
        // mtty decodes the FCR trigger bits and then overrides them: the level is always 1.
        this.intrTriggerLevel = 1;
        this.maxFifoSize = (data & UART_FCR_ENABLE_FIFO) !== 0 ? MAX_FIFO_SIZE : 1;
        break;
      case UART_LCR:
        if ((data & UART_LCR_DLAB) !== 0) {
          this.dlab = true;
          this.divisor = 0;
        } else {
          this.dlab = false;
        }
        this.uartReg[UART_LCR] = data;
        break;
      case UART_MCR: {
        this.uartReg[UART_MCR] = data;
        const msi = (this.uartReg[UART_IER] & UART_IER_MSI) !== 0;
        // Two independent checks: with MSI, OUT2|RTS signals the eventfd twice.
        if (msi && (data & UART_MCR_OUT2) !== 0) trigger();
        if (msi && (data & (UART_MCR_RTS | UART_MCR_DTR)) !== 0) trigger();
        break;
      }
      case UART_SCR:
        this.uartReg[UART_SCR] = data;
        break;
      default:
        // UART_LSR, UART_MSR and anything past the 8 registers: ignored.
        break;
    }
  }

  /**
   * `handle_bar_read`: the byte the guest reads from register `offset`. Where
   * mtty leaves the byte unwritten (RX with an empty FIFO, offsets past 7) the
   * kernel returns uninitialised stack; this returns 0.
   */
  read(offset: number, trigger: () => void): number {
    const ier = this.uartReg[UART_IER];
    const mcr = this.uartReg[UART_MCR];
    switch (offset) {
      case UART_RX: {
        if (this.dlab) return this.divisor & 0xff;
        let value = 0;
        if (this.head !== this.tail) {
          value = this.fifo[this.tail & (MAX_FIFO_SIZE - 1)];
          this.count = (this.count - 1) & 0xff;
          this.tail = inc(this.tail);
        }
        // Draining the FIFO is mtty's "transmitter empty" event.
        if (this.head === this.tail && (ier & UART_IER_THRI) !== 0) trigger();
        return value;
      }
      case UART_IER:
        if (this.dlab) return (this.divisor >> 8) & 0xff;
        return ier & 0x0f;
      case UART_IIR: {
        let iir = 0;
        if ((ier & UART_IER_RLSI) !== 0 && this.overrun) iir |= UART_IIR_RLSI;
        if ((ier & UART_IER_RDI) !== 0 && this.count >= this.intrTriggerLevel) iir |= UART_IIR_RDI;
        if ((ier & UART_IER_THRI) !== 0 && this.head === this.tail) iir |= UART_IIR_THRI;
        // mtty's priority-4 (modem status) case ORs in UART_IIR_MSI, which is 0: it never shows.
        if (iir === 0) iir = UART_IIR_NO_INT;
        // Bits 6 and 7: 16550 FIFOs enabled.
        return iir | 0xc0;
      }
      case UART_LCR:
      case UART_MCR:
      case UART_SCR:
        return this.uartReg[offset];
      case UART_LSR: {
        // head == tail is "empty" to mtty, even with 16 bytes queued.
        let lsr = 0;
        if (this.head !== this.tail) lsr |= UART_LSR_DR;
        if (this.overrun) lsr |= UART_LSR_OE;
        if (this.head === this.tail) lsr |= UART_LSR_TEMT | UART_LSR_THRE;
        return lsr;
      }
      case UART_MSR: {
        let msr = UART_MSR_DSR | UART_MSR_DDSR | UART_MSR_DCD;
        if ((mcr & UART_MCR_AFE) === 0 || this.count < this.maxFifoSize) msr |= UART_MSR_CTS | UART_MSR_DCTS;
        return msr;
      }
      default:
        return 0;
    }
  }

  /** Writes the `struct serial_port` image (36 bytes) at `at` in `buf`, as mtty_save_state's memcpy. */
  encode(buf: Uint8Array, at: number): void {
    const dv = new DataView(buf.buffer, buf.byteOffset + at, SERIAL_PORT_SIZE);
    buf.set(this.uartReg, at + OFF_UART_REG);
    buf.set(this.fifo, at + OFF_FIFO);
    dv.setUint8(OFF_HEAD, this.head);
    dv.setUint8(OFF_TAIL, this.tail);
    dv.setUint8(OFF_COUNT, this.count);
    dv.setUint8(OFF_DLAB, this.dlab ? 1 : 0);
    dv.setUint8(OFF_OVERRUN, this.overrun ? 1 : 0);
    dv.setUint8(OFF_PAD_29, this.#pad29);
    dv.setUint16(OFF_DIVISOR, this.divisor, true);
    dv.setUint8(OFF_FCR, this.fcr);
    dv.setUint8(OFF_MAX_FIFO_SIZE, this.maxFifoSize);
    dv.setUint8(OFF_INTR_TRIGGER_LEVEL, this.intrTriggerLevel);
    dv.setUint8(OFF_PAD_35, this.#pad35);
  }

  /**
   * Loads the 36-byte image at `at` in `buf`, as mtty_load_state's memcpy.
   * A `bool` byte other than 0 or 1 (undefined behaviour in C) becomes true.
   */
  decode(buf: Uint8Array, at: number): void {
    const dv = new DataView(buf.buffer, buf.byteOffset + at, SERIAL_PORT_SIZE);
    this.uartReg.set(buf.subarray(at + OFF_UART_REG, at + OFF_UART_REG + 8));
    this.fifo.set(buf.subarray(at + OFF_FIFO, at + OFF_FIFO + MAX_FIFO_SIZE));
    this.head = dv.getUint8(OFF_HEAD);
    this.tail = dv.getUint8(OFF_TAIL);
    this.count = dv.getUint8(OFF_COUNT);
    this.dlab = dv.getUint8(OFF_DLAB) !== 0;
    this.overrun = dv.getUint8(OFF_OVERRUN) !== 0;
    this.#pad29 = dv.getUint8(OFF_PAD_29);
    this.divisor = dv.getUint16(OFF_DIVISOR, true);
    this.fcr = dv.getUint8(OFF_FCR);
    this.maxFifoSize = dv.getUint8(OFF_MAX_FIFO_SIZE);
    this.intrTriggerLevel = dv.getUint8(OFF_INTR_TRIGGER_LEVEL);
    this.#pad35 = dv.getUint8(OFF_PAD_35);
  }

  /** A frozen copy of the state, for tests and checksums. */
  snapshot(): SerialPortState {
    return Object.freeze({
      uartReg: Object.freeze([...this.uartReg]),
      fifo: Object.freeze([...this.fifo]),
      head: this.head,
      tail: this.tail,
      count: this.count,
      dlab: this.dlab,
      overrun: this.overrun,
      divisor: this.divisor,
      fcr: this.fcr,
      maxFifoSize: this.maxFifoSize,
      intrTriggerLevel: this.intrTriggerLevel,
    });
  }
}
