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
 * QEMU's own view of config space (`pdev->config`, {@link qemuConfigSpace})
 * is kept too: guest writes land in it under QEMU's masks, guest reads of
 * the bits QEMU emulates (BARs, ROM, capability pointers, MSI, MSI-X) come
 * from it, and it is what the migration config state carries
 * ({@link VfioPciDevice.saveConfig}, {@link VfioPciDevice.loadConfig}: QEMU's
 * `vfio_pci_save_config` and `vfio_pci_load_config`, byte for byte).
 *
 * Every SET_IRQS that wires eventfds starts from the emulated state
 * (`#syncInterrupts`), and that step is held back while the device's
 * {@link InterruptGate} is closed or a loaded config holds its interrupts:
 * then nothing is wired at all, and the guest's MSI, MSI-X and INTx state is
 * only recorded until the hold ends. A SET_IRQS that fails is kept: the VM
 * may not start ({@link VfioPciDevice.checkCanStart}) until a later step
 * wires everything the guest enabled.
 */
import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import { ConfigSpaceError, InterruptGateClosedError, MigrationError, VfioArgumentError, VfioClosedError } from '../errors.js';
import type { VfioDevice } from '../vfio/device.js';
import { VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX } from '../vfio/uapi/constants.js';
import { listCapabilities, listExtCapabilities, type PciCapability, type PciExtCapability } from './capabilities.js';
import { PciConfig, type ConfigWidth } from './config-access.js';
import { decodeConfigHeader, type ConfigHeader } from './config-space.js';
import { EmulatedRegisters } from './emulated-registers.js';
import type { InterruptGate } from './interrupt-gate.js';
import { IntxLine } from './intx.js';
import { MsiState, type MsiMessage } from './msi-state.js';
import { MsiWiring, type MsiKind } from './msi-wiring.js';
import { parseMsix } from './msi.js';
import { MsixState, type MsixEffect } from './msix-state.js';
import { discoverBars, sizeRomBar, type PciBar } from './pci-bar.js';
import { qemuConfigSpace } from './qemu-config.js';
import { checkReadOnlyBitsWith, type ConfigMasks } from './readonly-mask.js';
import {
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_LIST_NEXT,
  PCI_CFG_SPACE_EXP_SIZE,
  PCI_CFG_SPACE_SIZE,
  PCI_COMMAND,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_QSIZE,
  PCI_STATUS,
  PCI_STATUS_INTERRUPT,
  PCI_STD_NUM_BARS,
} from './regs.js';
import { PCI_DEVICE_VMSTATE_VERSION, PCI_NUM_PINS, configStateSize, decodeConfigState, encodeConfigState, type ConfigStateLayout } from './vmstate.js';

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

/** Why no interrupt may be wired now: the gate is closed, or a loaded config holds them; undefined when none holds them. */
export type InterruptHold = 'gate' | 'config' | undefined;

/** Options of {@link VfioPciDevice}. */
export interface VfioPciDeviceOptions {
  /** Size every BAR through config space and compare it with its region (default true). */
  readonly crossCheckBars?: boolean;
  /** Unmask INTx through an eventfd rather than an ioctl per end of interrupt (default false). */
  readonly intxResample?: boolean;
  /**
   * Wire no interrupt (not even INTx, which QEMU wires at realize) until this
   * gate opens: the VMM opens it once its interrupt controller is restored.
   * Without it, interrupts are wired as the guest enables them.
   */
  readonly interruptGate?: InterruptGate;
}

/** Options of {@link VfioPciDevice.loadConfig}. */
export interface LoadConfigOptions {
  /**
   * `'enable'` (default): wire MSI, MSI-X or INTx as the image says, as
   * `vfio_pci_load_config` does (once the gate is open). `'hold'`: only
   * record them, until {@link VfioPciDevice.enableInterrupts} (the
   * config-before-data mode's "load the config, do not enable interrupts").
   */
  readonly interrupts?: 'enable' | 'hold';
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
  /** The INTx wiring, when the device has an interrupt pin; its `enable` refuses while {@link interruptHold} names a hold (the device's IRQ guard). */
  readonly intx: IntxLine | undefined;
  readonly #wiring: MsiWiring;
  /** QEMU's `pdev->config`; its MSI and MSI-X bytes live in {@link msi} and {@link msix}. */
  readonly #qemu: EmulatedRegisters;
  readonly #masks: ConfigMasks;
  readonly #emulatedBits: Uint8Array;
  readonly #gate: InterruptGate | undefined;
  readonly #cancelGate: () => void;
  #heldByConfig = false;
  /** The error of the last wiring that failed, until a whole rewiring succeeds. */
  #wiringFailure: unknown = undefined;
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
    const barSizes = Array.from({ length: PCI_STD_NUM_BARS }, (_, i) => BigInt(device.region(VFIO_PCI_BAR0_REGION_INDEX + i).size));
    const view = qemuConfigSpace({ kernelImage: image, barSizes, romSize: sizeRomBar(this.config) });
    this.#qemu = EmulatedRegisters.withMasks(view.image, view.masks.wmask, view.masks.w1cmask);
    this.#masks = view.masks;
    this.#emulatedBits = view.emulatedBits;
    this.#wiring = new MsiWiring(device, (kind, vector) => this.#onMsiSignal(kind, vector));
    if (this.header.interruptPin !== 0) {
      const intx = new IntxLine(device, { resample: options.intxResample === true });
      intx.on('assert', () => this.#intxLevel(true));
      intx.on('deassert', () => this.#intxLevel(false));
      this.intx = intx;
    } else this.intx = undefined;
    this.#gate = options.interruptGate;
    // A device whose VFIO device was closed under it (its container closed: hot-unplug) has nothing to wire.
    this.#cancelGate =
      this.#gate?.onOpen(() => {
        if (!this.device.closed) this.#syncInterrupts();
      }) ?? (() => undefined);
    // Every eventfd wiring of the device, the library's or a caller's through device.irq(), passes this check;
    // the device's error and request IRQs (index 3, 4) are not the guest's interrupts.
    device.setIrqGuard((index) => {
      const hold = index <= VFIO_PCI_MSIX_IRQ_INDEX ? this.interruptHold : undefined;
      if (hold !== undefined) throw new InterruptGateClosedError(device.name, hold);
    });
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

  /** What holds the interrupts back now, if anything: the closed gate first, then a config loaded with `'hold'`. */
  get interruptHold(): InterruptHold {
    if (this.#gate !== undefined && !this.#gate.isOpen) return 'gate';
    return this.#heldByConfig ? 'config' : undefined;
  }

  /** What a reader needs to parse this device's config state: the image size QEMU uses and the MSI-X table size. */
  get configStateLayout(): ConfigStateLayout {
    return { express: this.#qemu.size === PCI_CFG_SPACE_EXP_SIZE, msixVectors: this.msix?.entries ?? 0 };
  }

  /** The exact size of {@link saveConfig}'s bytes. */
  get configStateSize(): number {
    return configStateSize(this.configStateLayout);
  }

  /**
   * QEMU's view of config space now (`pdev->config`): 256 or 4096 bytes,
   * BARs and ROM as the guest programmed them, MSI and MSI-X as the guest
   * sees them, the INTx status bit following the guest's line.
   */
  qemuConfig(): Uint8Array {
    const image = this.#qemu.snapshot();
    for (const cap of [this.msi, this.msix]) if (cap !== undefined) image.set(cap.snapshot(), cap.offset);
    return image;
  }

  /**
   * The config state QEMU's `vfio_pci_save_config` writes for this device
   * (`lib/pci/vmstate.ts`): PCIDevice version 2, {@link qemuConfig}, the INTx
   * level of the guest's line in irq_state, and the MSI-X table and PBA when
   * the device has MSI-X.
   */
  saveConfig(): Uint8Array {
    this.#open();
    const irqState = new Array<number>(PCI_NUM_PINS).fill(0);
    const pin = this.header.interruptPin;
    // pci_irq_assert: irq_state has the bit of the function's pin (INTA = 0).
    if (this.intx?.pending === true && pin >= 1 && pin <= PCI_NUM_PINS) irqState[pin - 1] = 1;
    const msix = this.msix;
    return encodeConfigState({
      versionId: PCI_DEVICE_VMSTATE_VERSION,
      config: this.qemuConfig(),
      irqState,
      msix: msix === undefined ? undefined : { table: msix.tableSnapshot(), pba: msix.pbaSnapshot().subarray(0, (msix.entries + 7) >> 3) },
    });
  }

  /**
   * Loads a config state in `vfio_pci_load_config`'s order, while the device
   * is still RESUMING: the image after QEMU's read-only check
   * (`get_pci_config_device`), with the MSI-X table and PBA; then the
   * command register, written to the device; then MSI if the image enables
   * it, else MSI-X, wired through SET_IRQS, unless the gate is closed or
   * `options.interrupts` is `'hold'`: then they are wired when that ends.
   * The irq_state levels are checked, not applied: the guest's INTx line
   * belongs to the VMM's interrupt controller, and a device that still
   * asserts INTx signals again once INTx is wired.
   * @throws ConfigSpaceError for a malformed state, one that does not fit
   *   this device's layout, or read-only bits that differ from this device's;
   *   nothing is changed then
   * @throws VfioSystemError when a SET_IRQS fails: the image is in, the VM
   *   may not start until {@link enableInterrupts} wires the interrupts
   */
  loadConfig(bytes: Uint8Array, options: LoadConfigOptions = {}): void {
    this.#open();
    const { state, byteLength } = decodeConfigState(bytes, this.configStateLayout);
    if (byteLength !== bytes.byteLength) {
      throw new ConfigSpaceError('VFIOPCIDevice vmstate', `${bytes.byteLength - byteLength} bytes follow the config state`, byteLength);
    }
    checkReadOnlyBitsWith(state.config, this.qemuConfig(), this.#masks);
    this.#checkMsiVectors(state.config);
    this.#qemu.restore(state.config);
    for (const cap of [this.msi, this.msix]) cap?.restore(state.config.subarray(cap.offset, cap.offset + cap.size));
    if (this.msix !== undefined && state.msix !== undefined) this.msix.restoreTable(state.msix.table, state.msix.pba);
    this.config.write16(PCI_COMMAND, this.#qemu.getNumber(PCI_COMMAND, 2));
    this.#heldByConfig = options.interrupts === 'hold';
    this.#syncInterrupts(true);
  }

  /**
   * Multiple Message Enable is guest-writable, so the read-only check passes
   * an image that enables more MSI vectors than the device has; SET_IRQS would
   * then fail after the image was applied, so it is refused before.
   */
  #checkMsiVectors(config: Uint8Array): void {
    if (this.msi === undefined) return;
    const at = this.msi.offset + PCI_MSI_FLAGS;
    const flags = (config[at] ?? 0) | ((config[at + 1] ?? 0) << 8);
    const enabled = 1 << ((flags & PCI_MSI_FLAGS_QSIZE) >> 4);
    if (enabled > this.msi.vectorsCapable) {
      throw new ConfigSpaceError('VFIOPCIDevice vmstate', `MSI enables ${enabled} vectors but the device has ${this.msi.vectorsCapable}`, at);
    }
  }

  /**
   * Ends a `'hold'` from {@link loadConfig}: the interrupts are wired now, or
   * when the gate opens. Also wires anew, whole, after a wiring that failed.
   * @throws VfioSystemError when a SET_IRQS fails
   */
  enableInterrupts(): void {
    this.#open();
    this.#heldByConfig = false;
    this.#syncInterrupts();
  }

  /**
   * Throws unless the VM may start running this device: its interrupts must
   * not be held back (QEMU starts the VM only after the VFIO config, and with
   * it MSI/MSI-X, was loaded behind the interrupt controller), and the last
   * wiring must not have failed (a VM would run without them).
   * @throws InterruptGateClosedError saying what still holds them
   * @throws MigrationError `bad-state`, the SET_IRQS error as its cause, when
   *   the last wiring failed and nothing wired them since
   */
  checkCanStart(): void {
    const hold = this.interruptHold;
    if (hold !== undefined) throw new InterruptGateClosedError(this.device.name, hold);
    if (this.#wiringFailure !== undefined) {
      throw new MigrationError('the VM cannot start: wiring its interrupts failed (enableInterrupts() retries)', 'bad-state', this.device.name, { cause: this.#wiringFailure });
    }
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

  /**
   * A guest config read (`vfio_pci_read_config`): the bits QEMU emulates
   * (BARs, ROM, capability pointers, MSI, MSI-X) from its view, the rest
   * from the kernel.
   */
  readConfig(offset: number, width: ConfigWidth): number {
    this.config.checkAccess(offset, width);
    let phys: number | undefined;
    let value = 0;
    for (let i = width - 1; i >= 0; i--) {
      const at = offset + i;
      const bits = this.#emulatedBits[at] ?? 0;
      let byte = bits === 0 ? 0 : this.#emulatedByte(at) & bits;
      if (bits !== 0xff) {
        phys ??= this.config.read(offset, width);
        byte |= (phys >>> (8 * i)) & ~bits & 0xff;
      }
      value = value * 256 + byte;
    }
    return value;
  }

  /**
   * A guest config write (`vfio_pci_write_config`): everything goes to the
   * kernel, which filters what it virtualizes, and to QEMU's view under its
   * masks; writes to the MSI or MSI-X capability then update the emulation
   * and the host wiring.
   */
  writeConfig(offset: number, width: ConfigWidth, value: number): void {
    this.#open();
    this.config.write(offset, width, value);
    this.#qemu.write(offset, width, value);
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
    this.#cancelGate();
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

  /**
   * Brings the host wiring in line with the guest's view: MSI-X, else MSI,
   * else INTx; nothing while the interrupts are held. With `reload` (a
   * config was loaded) MSI and MSI-X are rewired even if already on, as
   * `vfio_msi_enable`/`vfio_msix_enable` start by disabling everything; so
   * is everything after a wiring that failed.
   */
  #syncInterrupts(reload = false): void {
    if (this.#closed) return;
    const want: InterruptMode =
      this.interruptHold !== undefined ? 'none' : this.msix?.enabled ? 'msix' : this.msi?.enabled ? 'msi' : this.intx !== undefined ? 'intx' : 'none';
    if (want === this.#mode && this.#wiringFailure === undefined && !(reload && (want === 'msi' || want === 'msix'))) return;
    try {
      // vfio_disable_interrupts: vfio-pci takes one interrupt type at a time.
      if (this.#mode === 'intx') this.intx?.disable();
      else if (this.#mode !== 'none') this.#wiring.disable();
      this.#mode = 'none';
      if (want === 'msix' && this.msix !== undefined) this.#wiring.enableMsix(this.msix.unmaskedVectors());
      else if (want === 'msi' && this.msi !== undefined) this.#wiring.enableMsi(this.msi.vectorsEnabled);
      else if (want === 'intx') this.intx?.enable();
      this.#mode = want;
      this.#wiringFailure = undefined;
    } catch (e) {
      this.#wiringFailed(e);
    }
  }

  #applyMsix(effect: MsixEffect): void {
    try {
      if (effect.enable !== 'unchanged') this.#syncInterrupts();
      else if (this.#mode === 'msix') {
        try {
          for (const v of effect.unmasked) this.#wiring.useMsixVector(v);
        } catch (e) {
          this.#wiringFailed(e);
        }
      }
    } finally {
      // The emulation has cleared their pending bits: a failed wiring must not lose them.
      for (const d of effect.deliver) this.#emitMsi('msix', d.vector, d.message);
    }
  }

  /** Keeps `error` for {@link checkCanStart} and rethrows it; an MSI index the wiring dropped is no longer the mode. */
  #wiringFailed(error: unknown): never {
    this.#wiringFailure = error;
    if (this.#mode !== 'intx' && this.#wiring.kind === null) this.#mode = 'none';
    throw error;
  }

  /** A byte of QEMU's view: MSI and MSI-X from their emulation. */
  #emulatedByte(at: number): number {
    const cap = this.msi?.owns(at) ? this.msi : this.msix?.owns(at) ? this.msix : undefined;
    return cap === undefined ? this.#qemu.getNumber(at, 1) : cap.readByte(at);
  }

  /** `pci_irq_handler`: the guest's INTx line, mirrored in QEMU's status register (`pci_update_irq_status`). */
  #intxLevel(asserted: boolean): void {
    const status = this.#qemu.getNumber(PCI_STATUS, 1);
    this.#qemu.set(PCI_STATUS, 1, asserted ? status | PCI_STATUS_INTERRUPT : status & ~PCI_STATUS_INTERRUPT);
    this.emit('intx', asserted);
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
