/**
 * `VfioMigration`: the hooks a VMM calls to migrate one VFIO device, named and
 * behaving as QEMU's `savevm_vfio_handlers` (hw/vfio/migration.c, reference
 * §5.3-5.7). Save hooks write one savevm section's VFIO content to a
 * {@link ByteSink}; load hooks read one section's content from a
 * {@link ByteSource}. The section headers and footers around them are the
 * caller's (the runner writes QEMU's).
 *
 * Device states follow QEMU:
 * - source: saveSetup → PRE_COPY (if supported); prepareStop → *_P2P;
 *   vmStop → STOP_COPY (or STOP); saveLiveCompletePrecopy → STOP_COPY;
 *   saveCleanup → STOP; abortSave → RUNNING.
 * - destination: loadSetup → RESUMING; data, then the config (loadConfig);
 *   loadCleanup closes the data fd; prepareStart → RUNNING_P2P (the
 *   RESUMING → STOP arc validates the data); vmStart → RUNNING; abortLoad resets.
 *
 * Every state change is QEMU's `vfio_migration_set_state`: on failure the
 * device goes to a recover state, and is reset if that fails too.
 *
 * The config state goes in `saveState` and loads in `loadConfig`, after all
 * data, as QEMU 6.0+ does. With `configBeforeData` the hooks use vfio-ts's
 * opt-in mode instead (README "Config-state ordering and the opt-in mode"):
 * `saveSetup` declares it, the config travels before the data of the precopy
 * and stop-copy sections whenever it changed, and is loaded at once with its
 * interrupts held, and `saveState` sends only the record that enables them.
 * Either way the VM cannot start (`prepareStart`, `vmStart`) while the
 * config provider says the interrupts are still held back.
 */
import { attempt, throwCollected } from '../attempt.js';
import { EventEmitter } from 'node:events';
import type TypedEmitter from 'typed-emitter';
import { MigrationError, StreamFormatError, UapiFormatError, VfioArgumentError, VfioError, VfioSystemError } from '../errors.js';
import { VfioPciDevice } from '../pci/pci-device.js';
import type { Mapping } from '../sys/sys.js';
import type { VfioDevice } from '../vfio/device.js';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_RUNNING_P2P,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
} from '../vfio/uapi/constants.js';
import type { ByteSink, ByteSource } from './byte-io.js';
import { noConfigState, pciConfigState, vfioPciConfigState, type ConfigStateProvider } from './config-state.js';
import type { MigrationDriver } from './driver.js';
import { stateName, type MigrationState } from './fsm.js';
import {
  VFIO_MIG_FLAG_DEV_CONFIG_STATE,
  VFIO_MIG_FLAG_DEV_DATA_STATE,
  VFIO_MIG_FLAG_DEV_INIT_DATA_SENT,
  VFIO_MIG_FLAG_DEV_SETUP_STATE,
  VFIO_MIG_FLAG_END_OF_STATE,
  VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA,
  VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ,
  VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ,
  VfioSectionParser,
  encodeDataHeader,
  encodeTag,
  type VfioParserOptions,
  type VfioRecord,
} from './stream.js';
import { openMigrationDriver } from './open-driver.js';
import type { MigrationRegionOptions } from './v1-region.js';

/** `VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE`: the read buffer, and the stop-copy size assumed for it when the query fails. */
export const VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE = 2 ** 20;
/** `VFIO_MIG_STOP_COPY_SIZE`: the pending size of a device that cannot estimate, so it never passes the downtime check. */
export const VFIO_MIG_STOP_COPY_SIZE = 100 * 2 ** 30;

/** Events of a {@link VfioMigration}. */
export type VfioMigrationEvents = {
  /** The device moved from `from` to `to` (also to a recover state, and to RUNNING by a reset). */
  state: (from: MigrationState, to: MigrationState) => void;
  /**
   * Something failed that QEMU tolerates (an estimate query, a recover SET
   * before a reset): the migration goes on, the errno is not lost.
   */
  warning: (error: VfioError) => void;
};

/** Options of {@link VfioMigration}. */
export interface VfioMigrationOptions {
  /** The savevm section name. Default `"<device name>/vfio"`, as QEMU names a device by its id. */
  idstr?: string;
  /** The config state carried after the data. Default {@link noConfigState}. */
  config?: ConfigStateProvider;
  /**
   * vfio-ts's opt-in config-before-data mode. Source: declare it at
   * `saveSetup` and send the config before the data (the device needs it
   * first; no kernel uAPI says so, so the VMM decides). Destination: accept
   * a stream that declares it (a stream that does not is read as QEMU's).
   * Default false: QEMU's format, and a stream in the mode is refused.
   */
  configBeforeData?: boolean;
  /** For {@link VfioMigration.open} on a v1 device: how to reach its data section. */
  v1?: MigrationRegionOptions;
}

/** Options of {@link VfioMigration.saveSetup}. */
export interface SaveSetupOptions {
  /** Switchover-ack is on (QEMU 8.1): end the precopy section that drains the initial bytes with DEV_INIT_DATA_SENT. */
  switchoverAck?: boolean;
}

/** Options of {@link VfioMigration.loadSetup}. */
export interface LoadSetupOptions {
  /**
   * Switchover-ack is on: called once, when DEV_INIT_DATA_SENT arrives (every
   * initial byte is in the device), as QEMU's `qemu_loadvm_approve_switchover`.
   * Without it, a DEV_INIT_DATA_SENT in the stream is an error.
   */
  approveSwitchover?: () => void;
}

// typed-emitter ships CommonJS typings: under NodeNext its interface is the module's `default`.
const Emitter = EventEmitter as new () => TypedEmitter.default<VfioMigrationEvents>;

const isPrecopy = (s: MigrationState): boolean => s === VFIO_DEVICE_STATE_PRE_COPY || s === VFIO_DEVICE_STATE_PRE_COPY_P2P;

/** The migration hooks of one device. Owns its driver: {@link close} closes it. */
export class VfioMigration extends Emitter implements Disposable {
  readonly driver: MigrationDriver;
  readonly idstr: string;
  readonly config: ConfigStateProvider;
  /** The opt-in config-before-data mode is on (see {@link VfioMigrationOptions.configBeforeData}). */
  readonly configBeforeData: boolean;
  // Source
  #buffer: Mapping | undefined;
  #precopyInitSize = 0;
  #precopyDirtySize = 0;
  #switchoverAck = false;
  #initialDataSent = false;
  /** DEV_DATA_STATE payload bytes sent since saveSetup. */
  #bytesSaved = 0;
  /** Config-before-data mode: the config last sent, so an unchanged one is not sent again. */
  #configSent: Uint8Array | undefined;
  // Destination
  #approve: (() => void) | undefined;
  #receivedConfig: Uint8Array | undefined;
  #configLoaded = false;
  /** The stream declared the config-before-data mode. */
  #streamConfigFirst = false;
  /** A record other than the declaration was loaded (the declaration must come first). */
  #loadedAny = false;
  /** Config-before-data: a config was loaded (with its interrupts held). */
  #earlyConfig = false;
  /** Config-before-data: DEV_ENABLE_IRQ arrived. */
  #enableReceived = false;
  /** The record being assembled, for a driver that needs whole records. */
  #record: { buf: Uint8Array; filled: number } | undefined;
  #bytesLoaded = 0;

  constructor(driver: MigrationDriver, options: VfioMigrationOptions = {}) {
    super();
    this.driver = driver;
    this.idstr = options.idstr ?? `${driver.label}/vfio`;
    this.config = options.config ?? noConfigState;
    this.configBeforeData = options.configBeforeData ?? false;
    if (!Number.isSafeInteger(this.config.size) || this.config.size < 0) {
      throw new VfioArgumentError('VfioMigration', `config state size ${this.config.size} is not a non-negative integer`);
    }
    // The hooks own the driver, so the subscription lives as long as both.
    driver.onWarning?.((e) => this.emit('warning', e));
  }

  /**
   * The hooks for `device` with the driver its offer picks (the v2 feature
   * first, the v1 migration region otherwise: {@link openMigrationDriver})
   * and its config provider: QEMU's VFIO PCI config state
   * ({@link vfioPciConfigState}) for a {@link VfioPciDevice}, the minimal
   * one ({@link pciConfigState}) for a PCI device driven without it, none
   * otherwise. The hooks own the driver, not the device.
   * @throws MigrationError `unsupported` when the device cannot migrate
   */
  static open(device: VfioDevice | VfioPciDevice, options: VfioMigrationOptions = {}): VfioMigration {
    const vfio = device instanceof VfioPciDevice ? device.device : device;
    const driver = openMigrationDriver(vfio, options.v1);
    try {
      const config = options.config ?? (device instanceof VfioPciDevice ? vfioPciConfigState(device) : vfio.isPci ? pciConfigState(vfio) : noConfigState);
      return new VfioMigration(driver, { ...options, config });
    } catch (e) {
      driver.close();
      throw e;
    }
  }

  /** The device state as last seen. */
  get state(): MigrationState {
    return this.driver.state;
  }

  /** The device has PRE_COPY: it iterates, and needs a switchover ack when that is on (QEMU's `switchover_ack_needed`). */
  get supportsPrecopy(): boolean {
    return (this.driver.flags & VFIO_MIGRATION_PRE_COPY) !== 0;
  }

  /** The device has the P2P states: it gets a P2P quiesce before any device stops. */
  get supportsP2P(): boolean {
    return (this.driver.flags & VFIO_MIGRATION_P2P) !== 0;
  }

  /** Bytes of device data sent by the save hooks since {@link saveSetup}. */
  get bytesSaved(): number {
    return this.#bytesSaved;
  }

  /** Bytes of device data written into the device by the load hooks since {@link loadSetup}. */
  get bytesLoaded(): number {
    return this.#bytesLoaded;
  }

  /** The read buffer size {@link saveSetup} chose: min(1 MiB, stop-copy estimate), never 0. */
  get bufferSize(): number {
    return this.#buffer?.length ?? 0;
  }

  /** What the destination's parser needs to read this device's sections. */
  parserOptions(): VfioParserOptions {
    const max = this.driver.maxChunkSize;
    // A driver that takes whole records gets each one assembled in memory: bound them.
    const bound = max ?? (this.driver.resumeFraming === 'record' ? VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE : undefined);
    return {
      configStateSize: this.config.size,
      ...(bound === undefined ? {} : { maxDataSize: bound }),
      ...(this.configBeforeData ? { configBeforeData: true } : {}),
    };
  }

  // ------------------------------------------------------------ source

  /**
   * `save_setup`: sizes the read buffer from the stop-copy estimate, moves a
   * RUNNING device with PRE_COPY to PRE_COPY (recover: RUNNING) and reads its
   * precopy estimates. Emits `DEV_SETUP_STATE, END_OF_STATE`, after
   * `CONFIG_BEFORE_DATA` in the config-before-data mode.
   * @throws MigrationError `bad-state` for a PRE_COPY device neither RUNNING nor STOP
   */
  async saveSetup(sink: ByteSink, options: SaveSetupOptions = {}): Promise<void> {
    this.#buffer?.unmap();
    this.#resetSaveState();
    this.#switchoverAck = options.switchoverAck ?? false;
    const estimate = this.#estimate(() => this.driver.stopCopySize(), VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE);
    // QEMU fails on a 0 estimate (a 0-byte buffer); a device that says 0 may still send data.
    let size = estimate > 0 ? Math.min(VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE, estimate) : VFIO_MIG_DEFAULT_DATA_BUFFER_SIZE;
    size = Math.max(size, this.driver.maxChunkSize ?? 0);
    this.#buffer = this.driver.sys.allocPages(size);
    if (this.supportsPrecopy) {
      const state = this.driver.state;
      if (state === VFIO_DEVICE_STATE_RUNNING) {
        this.#setState(VFIO_DEVICE_STATE_PRE_COPY, VFIO_DEVICE_STATE_RUNNING);
        this.#queryPrecopy();
      } else if (state !== VFIO_DEVICE_STATE_STOP) {
        throw new MigrationError(`cannot start saving in ${stateName(state)}: RUNNING or STOP expected`, 'bad-state', this.driver.label);
      }
    }
    const declare = this.configBeforeData ? [encodeTag(VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA)] : [];
    await sink.write(...declare, encodeTag(VFIO_MIG_FLAG_DEV_SETUP_STATE), encodeTag(VFIO_MIG_FLAG_END_OF_STATE));
  }

  /** `state_pending_estimate`: the cached precopy estimates, in a precopy state (cheap, no system call). */
  statePendingEstimate(): number {
    return isPrecopy(this.driver.state) ? this.#precopyInitSize + this.#precopyDirtySize : 0;
  }

  /**
   * `state_pending_exact`: the stop-copy estimate (100 GiB when the device
   * cannot tell), plus fresh precopy estimates in a precopy state.
   */
  statePendingExact(): number {
    let pending = this.#estimate(() => this.driver.stopCopySize(), VFIO_MIG_STOP_COPY_SIZE);
    if (isPrecopy(this.driver.state)) {
      this.#queryPrecopy();
      pending += this.#precopyInitSize + this.#precopyDirtySize;
    }
    return pending;
  }

  /** `is_active_iterate`: the device is in a precopy state, so {@link saveLiveIterate} has something to do. */
  isActiveIterate(): boolean {
    return isPrecopy(this.driver.state);
  }

  /**
   * `save_live_iterate`: one read of the data fd, emitted as `DATA(n)` when
   * n > 0, then END_OF_STATE, or DEV_INIT_DATA_SENT for the first section
   * after the initial bytes drained when switchover-ack is on. In the
   * config-before-data mode the config goes first when it changed.
   * @returns true when the device has no precopy data now (both estimates 0)
   */
  async saveLiveIterate(sink: ByteSink): Promise<boolean> {
    if (this.configBeforeData) await this.#saveEarlyConfig(sink);
    const n = await this.#saveBlock(sink);
    this.#consumed(n);
    if (this.#switchoverAck && this.#precopyInitSize === 0 && !this.#initialDataSent) {
      await sink.write(encodeTag(VFIO_MIG_FLAG_DEV_INIT_DATA_SENT));
      this.#initialDataSent = true;
    } else {
      await sink.write(encodeTag(VFIO_MIG_FLAG_END_OF_STATE));
    }
    return this.#precopyInitSize === 0 && this.#precopyDirtySize === 0;
  }

  /**
   * QEMU's `prepare_cb` when the VM stops: the P2P quiesce, PRE_COPY →
   * PRE_COPY_P2P or RUNNING → RUNNING_P2P, reset on failure. Call it for
   * every device before any {@link vmStop}. A no-op without P2P.
   */
  prepareStop(): void {
    if (!this.supportsP2P) return;
    const state = this.driver.state;
    if (state === VFIO_DEVICE_STATE_PRE_COPY) this.#setStateOrReset(VFIO_DEVICE_STATE_PRE_COPY_P2P);
    else if (state === VFIO_DEVICE_STATE_RUNNING) this.#setStateOrReset(VFIO_DEVICE_STATE_RUNNING_P2P);
  }

  /**
   * QEMU's `vfio_vmstate_change` when the VM stops for the switchover:
   * STOP_COPY from a precopy state (the same data fd goes on), else STOP;
   * reset on failure.
   */
  vmStop(): void {
    this.#setStateOrReset(isPrecopy(this.driver.state) ? VFIO_DEVICE_STATE_STOP_COPY : VFIO_DEVICE_STATE_STOP);
  }

  /**
   * `save_live_complete_precopy`: STOP_COPY (recover: STOP), then the data fd
   * read to its end as `DATA(n1) DATA(n2) ...`, then END_OF_STATE. In the
   * config-before-data mode the final config goes first unless the
   * destination already has it.
   */
  async saveLiveCompletePrecopy(sink: ByteSink): Promise<void> {
    this.#setState(VFIO_DEVICE_STATE_STOP_COPY, VFIO_DEVICE_STATE_STOP);
    if (this.configBeforeData) await this.#saveEarlyConfig(sink);
    while ((await this.#saveBlock(sink)) > 0);
    await sink.write(encodeTag(VFIO_MIG_FLAG_END_OF_STATE));
  }

  /**
   * `save_state`: `DEV_CONFIG_STATE`, the config provider's bytes,
   * END_OF_STATE; in the config-before-data mode only `DEV_ENABLE_IRQ,
   * END_OF_STATE` (the config went ahead of the data).
   * @throws VfioArgumentError when the provider returns another size than it declared
   */
  async saveState(sink: ByteSink): Promise<void> {
    if (this.configBeforeData) {
      await sink.write(encodeTag(VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ), encodeTag(VFIO_MIG_FLAG_END_OF_STATE));
      return;
    }
    await sink.write(encodeTag(VFIO_MIG_FLAG_DEV_CONFIG_STATE), await this.#configBytes('saveState'), encodeTag(VFIO_MIG_FLAG_END_OF_STATE));
  }

  /**
   * `save_cleanup`: STOP_COPY → STOP (after the switchover, so it costs no
   * downtime; reset on failure), the buffer freed, the data fd closed. Every
   * step runs; a failure is rethrown (several together, as an AggregateError).
   */
  saveCleanup(): void {
    const errors: unknown[] = [];
    if (this.driver.state === VFIO_DEVICE_STATE_STOP_COPY) attempt(errors, () => this.#setStateOrReset(VFIO_DEVICE_STATE_STOP));
    this.#buffer?.unmap();
    this.#resetSaveState();
    attempt(errors, () => this.driver.closeSession());
    throwCollected(errors, `cleaning up after saving ${this.idstr} failed`);
  }

  /** The migration failed or was cancelled (QEMU's `MIG_EVENT_PRECOPY_FAILED`): back to RUNNING, reset if that fails. */
  abortSave(): void {
    this.#setStateOrReset(VFIO_DEVICE_STATE_RUNNING);
  }

  // ------------------------------------------------------------ destination

  /** `load_setup`: RESUMING (recover: the state the device was in). */
  loadSetup(options: LoadSetupOptions = {}): void {
    this.#approve = options.approveSwitchover;
    this.#receivedConfig = undefined;
    this.#configLoaded = false;
    this.#streamConfigFirst = false;
    this.#loadedAny = false;
    this.#earlyConfig = false;
    this.#enableReceived = false;
    this.#record = undefined;
    this.#bytesLoaded = 0;
    this.#setState(VFIO_DEVICE_STATE_RESUMING, this.driver.state);
  }

  /**
   * `load_state`: reads one section's VFIO content from `source` (up to the
   * END_OF_STATE, or the tag, that ends it) and gives back the bytes after it.
   * @throws StreamFormatError for malformed or truncated content
   */
  async loadState(source: ByteSource): Promise<void> {
    const parser = new VfioSectionParser(this.parserOptions());
    parser.begin(0);
    for (;;) {
      const chunk = await source.read();
      if (chunk === null) {
        parser.finish();
        return;
      }
      const records: VfioRecord[] = [];
      const used = parser.feed(chunk, 0, (r) => records.push(r));
      for (const r of records) await this.loadRecord(r);
      if (parser.ended) {
        source.unread(chunk.subarray(used));
        return;
      }
    }
  }

  /**
   * What {@link loadState} does with each parsed record, for callers that
   * parse the framing themselves (the runner reads whole savevm streams with
   * `SavevmParser`). Data goes into the device as it arrives (or one whole
   * record at a time, if the driver needs that); the config is kept for
   * {@link loadConfig}, or in the config-before-data mode loaded at once
   * with its interrupts held.
   * @throws StreamFormatError for data after the config (before it, in the
   *   config-before-data mode), a record the driver cannot take, or a tag
   *   that is not allowed here
   */
  async loadRecord(record: VfioRecord): Promise<void> {
    if (record.kind === 'config-mode') {
      if (!this.configBeforeData) {
        throw new StreamFormatError(`${this.idstr}: the stream uses the config-before-data mode, which these hooks do not accept (option configBeforeData)`, record.offset, VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA);
      }
      if (this.#loadedAny) throw new StreamFormatError(`${this.idstr}: CONFIG_BEFORE_DATA must open the setup section`, record.offset, VFIO_TS_MIG_FLAG_CONFIG_BEFORE_DATA);
      this.#streamConfigFirst = true;
      return;
    }
    this.#loadedAny = true;
    switch (record.kind) {
      case 'data-begin': {
        if (this.#receivedConfig !== undefined || this.#enableReceived) {
          throw new StreamFormatError(`${this.idstr}: device data after the config state (every data byte must come first)`, record.offset, VFIO_MIG_FLAG_DEV_DATA_STATE);
        }
        if (this.#streamConfigFirst && !this.#earlyConfig) {
          throw new StreamFormatError(`${this.idstr}: device data before its config in the config-before-data mode`, record.offset, VFIO_MIG_FLAG_DEV_DATA_STATE);
        }
        if (this.driver.resumeFraming === 'record') this.#record = { buf: new Uint8Array(record.size), filled: 0 };
        return;
      }
      case 'data':
        this.#bytesLoaded += record.bytes.byteLength;
        if (this.#record === undefined) {
          await this.driver.write(record.bytes);
        } else {
          this.#record.buf.set(record.bytes, this.#record.filled);
          this.#record.filled += record.bytes.byteLength;
        }
        return;
      case 'data-end': {
        const whole = this.#record;
        this.#record = undefined;
        if (whole !== undefined && whole.buf.byteLength > 0) await this.driver.write(whole.buf);
        return;
      }
      case 'init-data-sent': {
        const approve = this.#approve;
        if (approve === undefined || !this.supportsPrecopy) {
          const why = approve === undefined ? 'switchover-ack is off' : 'the device has no PRE_COPY';
          throw new StreamFormatError(`${this.idstr}: DEV_INIT_DATA_SENT but ${why}`, record.offset, VFIO_MIG_FLAG_DEV_INIT_DATA_SENT);
        }
        this.#approve = undefined;
        approve();
        return;
      }
      case 'config':
        if (this.#streamConfigFirst) {
          throw new StreamFormatError(`${this.idstr}: DEV_CONFIG_STATE in a config-before-data stream (expected DEV_ENABLE_IRQ)`, record.offset, VFIO_MIG_FLAG_DEV_CONFIG_STATE);
        }
        this.#receivedConfig = record.bytes.slice();
        return;
      case 'config-early':
        this.#checkConfigFirst(record.offset, VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ, 'DEV_CONFIG_NO_IRQ');
        await this.config.load(record.bytes.slice(), { interrupts: 'hold' });
        this.#earlyConfig = true;
        return;
      case 'enable-interrupts':
        this.#checkConfigFirst(record.offset, VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ, 'DEV_ENABLE_IRQ');
        if (!this.#earlyConfig) throw new StreamFormatError(`${this.idstr}: DEV_ENABLE_IRQ before any DEV_CONFIG_NO_IRQ`, record.offset, VFIO_TS_MIG_FLAG_DEV_ENABLE_IRQ);
        this.#enableReceived = true;
        return;
      case 'config-load-ready':
        throw new StreamFormatError(`${this.idstr}: DEV_CONFIG_LOAD_READY belongs to multifd transfer, which is not supported`, record.offset);
      case 'setup':
      case 'end-of-state':
        return;
    }
  }

  /** True once the config state has arrived whole (it may not be loaded yet): DEV_CONFIG_STATE, or in the config-before-data mode DEV_ENABLE_IRQ. */
  get hasConfig(): boolean {
    return this.#receivedConfig !== undefined || this.#enableReceived;
  }

  /**
   * Loads the received config state into the device: a step of its own,
   * after every data byte and before the VM starts (QEMU loads it when it
   * parses the FULL section, which comes after all data). In the
   * config-before-data mode the config is in already: this step ends its
   * hold on the interrupts. Either way a device behind a closed interrupt
   * gate wires its interrupts only when the gate opens. Idempotent.
   * @throws MigrationError `incomplete` when no config state arrived (in the mode: no DEV_ENABLE_IRQ)
   */
  async loadConfig(): Promise<void> {
    if (this.#configLoaded) return;
    if (this.#streamConfigFirst) {
      if (!this.#enableReceived) throw new MigrationError('the config-before-data stream never enabled the interrupts (no DEV_ENABLE_IRQ)', 'incomplete', this.idstr);
      this.config.enableInterrupts?.();
    } else {
      const bytes = this.#receivedConfig;
      if (bytes === undefined) throw new MigrationError('the stream carried no config state for this device', 'incomplete', this.idstr);
      await this.config.load(bytes);
    }
    this.#configLoaded = true;
  }

  /** `load_cleanup`: closes the data fd, before RESUMING → STOP (drivers must not take it for an abort). */
  loadCleanup(): void {
    this.#record = undefined;
    this.driver.closeSession();
  }

  /**
   * QEMU's `prepare_cb` at VM start: RUNNING_P2P (from RESUMING the kernel
   * walks RESUMING → STOP, which validates the data, then STOP → RUNNING_P2P);
   * reset on failure. Call it for every device before any {@link vmStart}.
   * A no-op without P2P, apart from the check.
   * @throws InterruptGateClosedError, before anything changes, while the config provider holds the interrupts back
   */
  prepareStart(): void {
    this.config.checkStart?.();
    if (this.supportsP2P) this.#setStateOrReset(VFIO_DEVICE_STATE_RUNNING_P2P);
  }

  /**
   * QEMU's `vfio_vmstate_change` at VM start: RUNNING, reset on failure.
   * @throws InterruptGateClosedError, before anything changes, while the config provider holds the interrupts back
   */
  vmStart(): void {
    this.config.checkStart?.();
    this.#setStateOrReset(VFIO_DEVICE_STATE_RUNNING);
  }

  /** The incoming migration failed: the data fd closed and the device reset (RUNNING, nothing loaded). */
  abortLoad(): void {
    this.loadCleanup();
    this.#reset(undefined);
  }

  /** Closes the driver (its data fd); the device stays open. Idempotent. */
  close(): void {
    this.#buffer?.unmap();
    this.#buffer = undefined;
    this.driver.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // ------------------------------------------------------------ internals

  /** The provider's config bytes, checked against its declared size. */
  async #configBytes(op: string): Promise<Uint8Array> {
    const bytes = await this.config.save();
    if (bytes.byteLength !== this.config.size) {
      throw new VfioArgumentError(op, `the config provider of ${this.idstr} gave ${bytes.byteLength} bytes, not its declared ${this.config.size}`);
    }
    return bytes;
  }

  /** Config-before-data: `DEV_CONFIG_NO_IRQ` and the config, unless the destination has these very bytes already. */
  async #saveEarlyConfig(sink: ByteSink): Promise<void> {
    const bytes = await this.#configBytes('saveEarlyConfig');
    if (this.#configSent !== undefined && Buffer.compare(bytes, this.#configSent) === 0) return;
    this.#configSent = bytes.slice();
    await sink.write(encodeTag(VFIO_TS_MIG_FLAG_DEV_CONFIG_NO_IRQ), bytes);
  }

  /** A config-before-data record needs the stream to have declared the mode. */
  #checkConfigFirst(offset: number, tag: bigint, name: string): void {
    if (!this.#streamConfigFirst) throw new StreamFormatError(`${this.idstr}: ${name} in a stream that did not declare the config-before-data mode`, offset, tag);
  }

  #resetSaveState(): void {
    this.#buffer = undefined;
    this.#configSent = undefined;
    this.#precopyInitSize = 0;
    this.#precopyDirtySize = 0;
    this.#initialDataSent = false;
    this.#bytesSaved = 0;
  }

  /** `vfio_save_block`: one read; `DATA(n)` when n > 0. */
  async #saveBlock(sink: ByteSink): Promise<number> {
    const buffer = this.#buffer;
    if (buffer === undefined) throw new MigrationError('saveSetup has not run', 'no-session', this.driver.label);
    const view = buffer.view();
    const n = await this.driver.read(view);
    if (n > 0) {
      await sink.write(encodeDataHeader(n), view.subarray(0, n));
      this.#bytesSaved += n;
    }
    return n;
  }

  /** `vfio_update_estimated_pending_data`: a read of `n` bytes drains the initial bytes first, then the dirty ones. */
  #consumed(n: number): void {
    if (n === 0) {
      // Nothing more for now (ENOMSG or 0).
      this.#precopyInitSize = 0;
      this.#precopyDirtySize = 0;
      return;
    }
    const init = Math.min(this.#precopyInitSize, n);
    this.#precopyInitSize -= init;
    this.#precopyDirtySize -= Math.min(this.#precopyDirtySize, n - init);
  }

  /** `vfio_query_precopy_size`: both estimates, or 0 and a warning when the query fails. */
  #queryPrecopy(): void {
    this.#precopyInitSize = 0;
    this.#precopyDirtySize = 0;
    const info = this.#estimate(() => this.driver.precopyInfo(), undefined);
    if (info === undefined) return;
    this.#precopyInitSize = info.initialBytes;
    this.#precopyDirtySize = info.dirtyBytes;
  }

  /** An estimate query: QEMU goes on with `fallback` when it fails; the error becomes a warning. */
  #estimate<T, F>(query: () => T, fallback: F): T | F {
    try {
      return query();
    } catch (e) {
      if (!(e instanceof VfioSystemError || e instanceof UapiFormatError)) throw e;
      this.emit('warning', e);
      return fallback;
    }
  }

  /**
   * `vfio_migration_set_state(target, recover)`: a failed SET tries `recover`
   * (ERROR means: reset at once); a failed recovery resets the device. The
   * first error is rethrown either way.
   */
  #setState(target: MigrationState, recover: MigrationState): void {
    const from = this.driver.state;
    if (from === target) return;
    try {
      this.driver.setState(target);
      this.#moved(from);
      return;
    } catch (err) {
      this.#moved(from);
      // The SET itself went through (the data fd disagreed): nothing to recover from.
      if (this.driver.state === target) throw err;
      if (recover === VFIO_DEVICE_STATE_ERROR) {
        this.#reset(err);
        throw err;
      }
      const at = this.driver.state;
      try {
        this.driver.setState(recover);
        this.#moved(at);
      } catch (e) {
        this.#moved(at);
        if (e instanceof VfioError) this.emit('warning', e);
        this.#reset(err);
      }
      throw err;
    }
  }

  /** `vfio_migration_set_state_or_reset`. */
  #setStateOrReset(target: MigrationState): void {
    this.#setState(target, VFIO_DEVICE_STATE_ERROR);
  }

  /** `VFIO_DEVICE_RESET` after a failure (`cause`, if any); a failed reset leaves the device unknown. */
  #reset(cause: unknown): void {
    const from = this.driver.state;
    try {
      this.driver.reset();
    } catch (e) {
      const errors = cause === undefined ? [e] : [cause, e];
      throw new MigrationError('resetting the device failed: its state is unknown', 'reset-failed', this.driver.label, { cause: new AggregateError(errors) });
    }
    this.#moved(from);
  }

  #moved(from: MigrationState): void {
    const to = this.driver.state;
    if (to !== from) this.emit('state', from, to);
  }
}
