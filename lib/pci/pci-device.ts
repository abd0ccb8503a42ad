/**
 * A VFIO PCI device as a VMM drives it, following QEMU's hw/vfio/pci.c:
 *
 * - typed config access ({@link PciConfig}) and the decoded header and
 *   capability lists, read at open;
 * - the BARs ({@link PciBar}): type, size from the region cross-checked by
 *   sizing, mmap by sparse area, MSI-X structures honoured;
 * - the guest's view of MSI and MSI-X ({@link MsiState}, {@link MsixState}):
 *   QEMU emulates both capabilities and the MSI-X table entirely, so guest
 *   config reads of them come from there, guest writes go to the kernel
 *   first (it filters what it virtualizes) and then update the emulation;
 * - the host wiring, kept apart ({@link MsiWiring}, {@link IntxLine}): at
 *   most one of INTx, MSI and MSI-X is wired, as vfio-pci allows; enabling
 *   MSI or MSI-X in the guest unwires INTx and disabling rewires it; MSI-X
 *   vectors are wired as the guest unmasks them.
 *
 * Interrupts come out as events: `msi` with the message the guest
 * programmed (never for a masked vector: that one becomes pending and is
 * delivered when unmasked) and `intx` with the line level; the VMM answers
 * an INTx with {@link VfioPciDevice.intxEoi} once the guest serviced it.
 *
 * Every SET_IRQS that wires eventfds starts from the emulated state
 * (`#syncInterrupts`), so restoring a config image and enabling interrupts
 * later, behind a gate, only needs that one step to be deferred.
 */
import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import { ConfigSpaceError, VfioArgumentError, VfioClosedError } from '../errors.js';
import type { VfioDevice } from '../vfio/device.js';
import { VFIO_PCI_CONFIG_REGION_INDEX } from '../vfio/uapi/constants.js';
import { listCapabilities, listExtCapabilities, type PciCapability, type PciExtCapability } from './capabilities.js';
import { PciConfig, type ConfigWidth } from './config-access.js';
import { decodeConfigHeader, type ConfigHeader } from './config-space.js';
import { IntxLine } from './intx.js';
import { MsiState, type MsiMessage } from './msi-state.js';
import { MsiWiring, type MsiKind } from './msi-wiring.js';
import { parseMsix } from './msi.js';
import { MsixState, type MsixEffect } from './msix-state.js';
import { discoverBars, type PciBar } from './pci-bar.js';
import { PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX, PCI_CAP_LIST_NEXT, PCI_CFG_SPACE_SIZE, PCI_MSI_FLAGS } from './regs.js';

/** Where an MSI came from. */
export interface MsiSource {
  readonly kind: MsiKind;
  readonly vector: number;
}

/** Events of a {@link VfioPciDevice}. */
export type PciDeviceEvents = {
  /** Inject this MSI or MSI-X message into the guest. */
  msi: (message: MsiMessage, source: MsiSource) => void;
  /** The guest's INTx line goes to `asserted`. */
  intx: (asserted: boolean) => void;
};

/** Which interrupt is wired on the host. */
export type InterruptMode = 'none' | 'intx' | 'msi' | 'msix';

/** Options of {@link VfioPciDevice}. */
export interface VfioPciDeviceOptions {
  /** Size every BAR through config space and compare it with its region (default true). */
  readonly crossCheckBars?: boolean;
  /** Unmask INTx through an eventfd rather than an ioctl per end of interrupt (default false). */
  readonly intxResample?: boolean;
}

// typed-emitter ships CommonJS typings: under NodeNext its interface is the module's `default`.
const Emitter = EventEmitter as new () => TypedEmitter.default<PciDeviceEvents>;

export class VfioPciDevice extends Emitter implements Disposable {
  readonly device: VfioDevice;
  readonly config: PciConfig;
  /** The header as read at open. */
  readonly header: ConfigHeader;
  /** The standard capabilities as read at open. */
  readonly capabilities: readonly PciCapability[];
  /** The extended capabilities as read at open (none for conventional PCI). */
  readonly extCapabilities: readonly PciExtCapability[];
  /** The implemented BARs, in index order. */
  readonly bars: readonly PciBar[];
  /** The guest's MSI capability, when the device has one. */
  readonly msi: MsiState | undefined;
  /** The guest's MSI-X capability and table, when the device has them. */
  readonly msix: MsixState | undefined;
  /** The INTx wiring, when the device has an interrupt pin. */
  readonly intx: IntxLine | undefined;
  readonly #wiring: MsiWiring;
  #mode: InterruptMode = 'none';
  #closed = false;

  /**
   * Reads the config space, capabilities and BARs of `device` (a vfio-pci
   * device, or an mdev with the vfio-pci API) and wires INTx when the
   * device has a pin, as QEMU does at realize. Takes ownership of `device`:
   * {@link VfioPciDevice.close} closes it. If the constructor throws, the
   * device stays the caller's.
   * @throws ConfigSpaceError for a malformed config space, a BAR whose size
   *   disagrees with its region, or MSI-X structures outside their BAR.
   */
  constructor(device: VfioDevice, options: VfioPciDeviceOptions = {}) {
    super();
    this.device = device;
    this.config = new PciConfig(device.region(VFIO_PCI_CONFIG_REGION_INDEX));
    const image = this.config.image();
    this.header = decodeConfigHeader(image);
    this.capabilities = listCapabilities(image);
    this.extCapabilities = image.byteLength > PCI_CFG_SPACE_SIZE ? listExtCapabilities(image) : [];
    const msiCap = this.capabilities.find((c) => c.id === PCI_CAP_ID_MSI);
    this.msi = msiCap === undefined ? undefined : new MsiState(msiCap.offset, this.config.read16(msiCap.offset + PCI_MSI_FLAGS), image[msiCap.offset + PCI_CAP_LIST_NEXT] ?? 0);
    const msixCap = this.capabilities.find((c) => c.id === PCI_CAP_ID_MSIX);
    const msix = msixCap === undefined ? undefined : parseMsix(image, msixCap.offset);
    this.msix = msix === undefined ? undefined : new MsixState(msix, image[msix.offset + PCI_CAP_LIST_NEXT] ?? 0);
    this.bars = discoverBars(device, this.config, msix, options.crossCheckBars ?? true);
    if (msix !== undefined) {
      this.#checkInBar('table', msix.tableBir, msix.tableOffset, msix.tableBytes);
      this.#checkInBar('PBA', msix.pbaBir, msix.pbaOffset, msix.pbaBytes);
    }
    this.#wiring = new MsiWiring(device, (kind, vector) => this.#onMsiSignal(kind, vector));
    if (this.header.interruptPin !== 0) {
      const intx = new IntxLine(device, { resample: options.intxResample === true });
      intx.on('assert', () => this.emit('intx', true));
      intx.on('deassert', () => this.emit('intx', false));
      this.intx = intx;
    } else this.intx = undefined;
    this.#syncInterrupts();
  }

  /** The interrupt wired on the host now. */
  get interruptMode(): InterruptMode {
    return this.#mode;
  }

  /** MSI or MSI-X vectors wired to an eventfd now. */
  get wiredVectors(): number[] {
    return this.#wiring.vectors;
  }

  /**
   * The implemented BAR `index`.
   * @throws VfioArgumentError when the device does not implement it.
   */
  bar(index: number): PciBar {
    const bar = this.bars.find((b) => b.index === index);
    if (bar === undefined) throw new VfioArgumentError('bar', `${this.device.name} has no BAR${index}`);
    return bar;
  }

  /** A guest config read (`vfio_pci_read_config`): MSI and MSI-X from the emulation, the rest from the kernel. */
  readConfig(offset: number, width: ConfigWidth): number {
    const emulated = (at: number): MsiState | MsixState | undefined => (this.msi?.owns(at) ? this.msi : this.msix?.owns(at) ? this.msix : undefined);
    let phys: number | undefined;
    let value = 0;
    for (let i = width - 1; i >= 0; i--) {
      const cap = emulated(offset + i);
      let byte: number;
      if (cap !== undefined) byte = cap.readByte(offset + i);
      else {
        phys ??= this.config.read(offset, width);
        byte = (phys >>> (8 * i)) & 0xff;
      }
      value = value * 256 + byte;
    }
    return value;
  }

  /**
   * A guest config write (`vfio_pci_write_config`): everything goes to the
   * kernel, which filters what it virtualizes; writes to the MSI or MSI-X
   * capability then update the emulation and the host wiring.
   */
  writeConfig(offset: number, width: ConfigWidth, value: number): void {
    this.#open();
    this.config.write(offset, width, value);
    const touches = (c: { offset: number; size: number }): boolean => offset < c.offset + c.size && offset + width > c.offset;
    if (this.msi !== undefined && touches(this.msi)) {
      const effect = this.msi.write(offset, width, value);
      if (effect.enable !== 'unchanged') this.#syncInterrupts();
      for (const v of effect.deliver) this.#emitMsi('msi', v, this.msi.message(v));
    } else if (this.msix !== undefined && touches(this.msix)) {
      this.#applyMsix(this.msix.writeConfig(offset, width, value));
    }
  }

  /**
   * A guest read of BAR `index`: the MSI-X table and PBA from the
   * emulation, anything else from the device (a mapping when one covers the
   * access, else the kernel).
   */
  readBar(index: number, offset: number, width: 1 | 2 | 4 | 8): bigint {
    const msix = this.msix;
    if (msix !== undefined && index === msix.tableBar && inRange(offset, width, msix.tableOffset, msix.tableBytes)) return msix.readTable(offset - msix.tableOffset, width);
    if (msix !== undefined && index === msix.pbaBar && inRange(offset, width, msix.pbaOffset, msix.pbaBytes)) return msix.readPba(offset - msix.pbaOffset, width);
    const region = this.bar(index).region;
    if (width === 1) return BigInt(region.read8(offset));
    if (width === 2) return BigInt(region.read16(offset));
    if (width === 4) return BigInt(region.read32(offset));
    return region.read64(offset);
  }

  /** A guest write to BAR `index`: MSI-X table writes update the emulation (and may wire vectors); PBA writes are ignored. */
  writeBar(index: number, offset: number, width: 1 | 2 | 4 | 8, value: bigint): void {
    this.#open();
    const msix = this.msix;
    if (msix !== undefined && index === msix.tableBar && inRange(offset, width, msix.tableOffset, msix.tableBytes)) {
      this.#applyMsix(msix.writeTable(offset - msix.tableOffset, width, value));
      return;
    }
    if (msix !== undefined && index === msix.pbaBar && inRange(offset, width, msix.pbaOffset, msix.pbaBytes)) return;
    const region = this.bar(index).region;
    if (width === 1) region.write8(offset, Number(value & 0xffn));
    else if (width === 2) region.write16(offset, Number(value & 0xffffn));
    else if (width === 4) region.write32(offset, Number(value & 0xffff_ffffn));
    else region.write64(offset, value);
  }

  /** The guest serviced the INTx interrupt: deassert and unmask (`vfio_intx_eoi`). */
  intxEoi(): void {
    this.#open();
    this.intx?.eoi();
  }

  /**
   * Closes the device: INTx and MSI listeners stop, then the VFIO device is
   * closed (the kernel tears its interrupts down). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.intx?.close();
    } finally {
      this.device.close();
      this.removeAllListeners();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Brings the host wiring in line with the guest's view: MSI-X, else MSI, else INTx. */
  #syncInterrupts(): void {
    const want: InterruptMode = this.msix?.enabled ? 'msix' : this.msi?.enabled ? 'msi' : this.intx !== undefined ? 'intx' : 'none';
    if (want === this.#mode) return;
    // vfio_disable_interrupts: vfio-pci takes one interrupt type at a time.
    if (this.#mode === 'intx') this.intx?.disable();
    else if (this.#mode !== 'none') this.#wiring.disable();
    this.#mode = 'none';
    if (want === 'msix' && this.msix !== undefined) this.#wiring.enableMsix(this.msix.unmaskedVectors());
    else if (want === 'msi' && this.msi !== undefined) this.#wiring.enableMsi(this.msi.vectorsEnabled);
    else if (want === 'intx') this.intx?.enable();
    this.#mode = want;
  }

  #applyMsix(effect: MsixEffect): void {
    if (effect.enable !== 'unchanged') this.#syncInterrupts();
    else if (this.#mode === 'msix') for (const v of effect.unmasked) this.#wiring.useMsixVector(v);
    for (const d of effect.deliver) this.#emitMsi('msix', d.vector, d.message);
  }

  #onMsiSignal(kind: MsiKind, vector: number): void {
    const message = kind === 'msi' ? this.msi?.notify(vector) : this.msix?.notify(vector);
    if (message !== undefined && message !== null) this.#emitMsi(kind, vector, message);
  }

  #emitMsi(kind: MsiKind, vector: number, message: MsiMessage): void {
    this.emit('msi', message, { kind, vector });
  }

  #checkInBar(what: string, bir: number, offset: number, size: number): void {
    const bar = this.bars.find((b) => b.index === bir);
    if (bar === undefined || offset + size > bar.size) {
      throw new ConfigSpaceError('MSI-X capability', `the ${what} (${size} bytes at 0x${offset.toString(16)} of BAR${bir}) lies outside ${bar === undefined ? 'any implemented BAR' : `the ${bar.size}-byte BAR`}`);
    }
  }

  #open(): void {
    if (this.#closed) throw new VfioClosedError(`PCI device ${this.device.name}`);
  }
}

function inRange(offset: number, width: number, start: number, size: number): boolean {
  return offset < start + size && offset + width > start;
}
