/**
 * A small reference VMM loop around {@link VfioMigration}, for the source
 * ({@link MigrationSource}) and the destination ({@link MigrationDestination}),
 * over any Node stream: a pipe, a TCP socket, or a file (snapshot and
 * restore). It does what QEMU's migration thread does for VFIO devices:
 *
 * - the stream is QEMU's savevm framing (file header; per device a START
 *   section from `save_setup`, PART sections from `save_live_iterate`, an END
 *   section from `save_live_complete_precopy`, a FULL section from
 *   `save_state`; footers; EOF), each device named `"<name>/vfio"`;
 * - with guest RAM ({@link RamSaver}), QEMU's `"ram"` section leads each
 *   phase, as QEMU registers it before devices ({@link ramSectionId}): the block list, then the dirty
 *   pages of each round, then what is still dirty once everything stopped;
 * - the source iterates while pending (RAM's dirty pages included) >
 *   bandwidth × downtime limit (and, with switchover-ack, until the
 *   destination acked), then stops the vCPUs (a callback), quiesces and stops
 *   the devices, sends the last RAM pages, completes, saves the config;
 * - the destination writes every data byte before it loads any config, and
 *   makes the devices RUNNING only when it starts the VM.
 *
 * The return path (destination → source, QEMU's message framing) carries the
 * switchover ack and the destination's final status. Over a socket it is the
 * socket's other direction; over a file there is none, and then switchover-ack
 * is off and the source cannot learn how the load went.
 *
 * Memory stays bounded: the source reads one buffer (≤ 1 MiB) at a time and
 * waits for the stream to take it (RAM: one batch of pages); the destination
 * pulls one chunk at a time and writes it into the device (or the RAM).
 * On failure or abort the source devices go back to RUNNING (reset if that
 * fails) and the vCPUs resume; the destination devices are reset.
 */
import { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import type TypedEmitter from 'typed-emitter';
import { MigrationAbortedError, MigrationError, VfioArgumentError, VfioError } from '../errors.js';
import type { ByteSink } from './byte-io.js';
import type { MigrationState } from './fsm.js';
import { MigrationGroup } from './group.js';
import type { VfioMigration } from './hooks.js';
import { ReadableSource, writableSink } from './node-streams.js';
import { RAM_SECTION_IDSTR, RAM_SECTION_VERSION } from './ram-format.js';
import type { RamLoader, RamLoadStats } from './ram-load.js';
import type { RamRecord } from './ram-parser.js';
import type { RamSaveStats, RamSaver } from './ram-save.js';
import { encodeReturnPathMessage, ReturnPathParser } from './return-path.js';
import {
  QEMU_VM_SECTION_END,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_SECTION_PART,
  QEMU_VM_SECTION_START,
  SavevmParser,
  encodeEof,
  encodeFileHeader,
  encodeSectionFooter,
  encodeSectionHeader,
  type SectionHeader,
} from './sections.js';

/** QEMU's default `downtime-limit`, in milliseconds. */
export const DEFAULT_DOWNTIME_LIMIT_MS = 300;
/**
 * The section id of `"ram"` next to `devices` VFIO devices (ids 1 to
 * `devices`): the next one. Never 0: QEMU's loader finds the handler of a
 * PART or END section as the first one whose `load_section_id` equals the id,
 * and every handler starts with 0, so QEMU 7.2 hands a PART of section 0 to
 * its `"timer"` and the load fails (seen with `-incoming`).
 */
export function ramSectionId(devices: number): number {
  return devices + 1;
}

/** Events both runners emit. */
export type RunnerEvents = {
  /** A device (by idstr) changed state. */
  state: (idstr: string, from: MigrationState, to: MigrationState) => void;
  /** Something failed that the migration survives (an estimate query, a recover SET, cleanup after the commit). */
  warning: (error: VfioError, idstr: string | undefined) => void;
  /** Bytes of migration stream moved so far (written by the source, read by the destination). */
  bytes: (total: number) => void;
};

/** One convergence check of the source. */
export interface PendingCheck {
  /** Bytes the devices still have to send. */
  readonly pending: number;
  /** bandwidth × downtime limit: the bytes the switchover may move. */
  readonly threshold: number;
  /** Whether `pending` is exact (`state_pending_exact`) or the cheap estimate. */
  readonly exact: boolean;
}

/** What one precopy round did. */
export interface IterationInfo extends PendingCheck {
  /** 1 for the first round. */
  readonly iteration: number;
  /** Device data bytes this round sent. */
  readonly deviceBytes: number;
  /** RAM pages this round sent (0 without RAM). */
  readonly ramPages: number;
  /** The bandwidth now assumed, in bytes per second. */
  readonly bandwidth: number;
}

/** Events of a {@link MigrationSource}. */
export type SourceEvents = RunnerEvents & {
  /** Before each precopy round, or the switchover. */
  pending: (check: PendingCheck) => void;
  /** After each precopy round. */
  iteration: (info: IterationInfo) => void;
  /** Pending data fits the budget (and the destination acked): the vCPUs are about to stop. */
  switchover: (check: PendingCheck) => void;
  /** The destination acked the switchover. */
  'switchover-ack': () => void;
  /** From stopping the vCPUs to the destination running (with a return path) or the stream written (without). */
  downtime: (ms: number) => void;
};

/** Events of a {@link MigrationDestination}. */
export type DestinationEvents = RunnerEvents & {
  /** Every initial precopy byte of every device is loaded: the ack went to the source. */
  'switchover-ack': () => void;
  /** The stream is loaded (every device's data and config); the devices are still RESUMING. */
  loaded: () => void;
};

/** Options of {@link MigrationSource}. */
export interface SourceOptions {
  /** The devices of the VM, in section order. */
  readonly devices: readonly VfioMigration[];
  /** Where the stream goes. It is ended after a successful migration unless `endOutput` is false. */
  readonly output: Writable;
  /** The destination's return path (a socket's read side); none for a file. */
  readonly returnPath?: Readable;
  /** Stops the vCPUs before the devices stop (the downtime starts here). */
  readonly stopVcpus?: () => void | Promise<void>;
  /** Resumes the vCPUs after a failure that happened once they were stopped. */
  readonly resumeVcpus?: () => void | Promise<void>;
  /** The downtime budget in milliseconds. Default 300 (QEMU's). */
  readonly downtimeLimitMs?: number;
  /** Bytes per second the budget assumes. Default: measured over the precopy rounds (unknown, so 0, before the first). */
  readonly bandwidth?: number;
  /** QEMU's switchover-ack capability (both sides): needs `returnPath`. */
  readonly switchoverAck?: boolean;
  /** Give up after this many precopy rounds without convergence. Default: never (QEMU iterates until cancelled). */
  readonly maxIterations?: number;
  /** How long to wait after a round that moved no data (the devices have nothing new yet), in ms. Default 10. */
  readonly idleWaitMs?: number;
  /** Write the `QEVM` file header first. Default true. */
  readonly fileHeader?: boolean;
  /** End `output` after a successful migration. Default true. */
  readonly endOutput?: boolean;
  /** Cancels the migration: the devices go back to RUNNING and the vCPUs resume. */
  readonly signal?: AbortSignal;
  /** Guest RAM, migrated in the stream ahead of the devices; its tracker is started at setup if it is not running. */
  readonly ram?: RamSaver;
}

/** What a completed outgoing migration did. */
export interface SourceResult {
  /** Precopy rounds. */
  readonly iterations: number;
  /** Bytes of stream written. */
  readonly bytes: number;
  /** Device data bytes sent in precopy rounds. */
  readonly precopyBytes: number;
  /** Device data bytes sent after the vCPUs stopped. */
  readonly stopCopyBytes: number;
  /** The measured downtime, in ms (see the `downtime` event). */
  readonly downtimeMs: number;
  /** The whole migration, in ms. */
  readonly totalMs: number;
  /** The bandwidth assumed at the switchover, in bytes per second. */
  readonly bandwidth: number;
  /** The last convergence check. */
  readonly switchover: PendingCheck;
  /** The destination's final status (0: running), when there is a return path. */
  readonly destinationStatus: number | undefined;
  /** What the RAM hooks did, when there is RAM. */
  readonly ram: RamSaveStats | undefined;
}

/** Options of {@link MigrationDestination}. */
export interface DestinationOptions {
  /** The devices to load, matched to sections by their idstr. */
  readonly devices: readonly VfioMigration[];
  /** Where the stream comes from. */
  readonly input: Readable;
  /** The return path to the source (a socket's write side); none for a file. */
  readonly returnPath?: Writable;
  /** QEMU's switchover-ack capability (both sides): needs `returnPath`. */
  readonly switchoverAck?: boolean;
  /** Start the VM once loaded: devices RUNNING_P2P then RUNNING, then `startVcpus`. Default true. */
  readonly start?: boolean;
  /** Starts the vCPUs, once every device is RUNNING. */
  readonly startVcpus?: () => void | Promise<void>;
  /** Cancels the load: the devices are reset. */
  readonly signal?: AbortSignal;
  /** Guest RAM the stream's `"ram"` sections load into; without it such a section is an unknown device. */
  readonly ram?: RamLoader;
}

/** What a completed incoming migration did. */
export interface DestinationResult {
  /** Bytes of stream read. */
  readonly bytes: number;
  /** Device data bytes written into the devices. */
  readonly deviceBytes: number;
  /** Whether the switchover ack went out. */
  readonly switchoverAcked: boolean;
  /** Whether the devices were started. */
  readonly started: boolean;
  /** What was loaded into RAM, when there is RAM. */
  readonly ram: RamLoadStats | undefined;
}

// typed-emitter ships CommonJS typings: under NodeNext its interface is the module's `default`.
const SourceEmitter = EventEmitter as new () => TypedEmitter.default<SourceEvents>;
const DestinationEmitter = EventEmitter as new () => TypedEmitter.default<DestinationEvents>;

/** The outgoing side: runs once, with {@link MigrationSource.run}. */
export class MigrationSource extends SourceEmitter {
  readonly #o: SourceOptions;
  #ran = false;

  constructor(options: SourceOptions) {
    super();
    this.#o = options;
  }

  /**
   * Migrates the devices out.
   * @throws MigrationAbortedError when the signal fired; MigrationError (`peer-failed`, `no-convergence`,
   *   `transport`, `blocked`, ...), VfioSystemError or StreamFormatError from the step that failed. The
   *   devices are RUNNING again (or reset) and the vCPUs resumed by then.
   */
  async run(): Promise<SourceResult> {
    const o = this.#o;
    if (this.#ran) throw new VfioArgumentError('MigrationSource.run', 'a migration runs once');
    this.#ran = true;
    const switchoverAck = o.switchoverAck ?? false;
    if (switchoverAck && o.returnPath === undefined) throw new VfioArgumentError('MigrationSource', 'switchover-ack needs a return path');
    const group = new MigrationGroup(o.devices);
    const started = performance.now();
    const returnPath = o.returnPath === undefined ? undefined : new ReturnPathListener(o.returnPath, () => this.emit('switchover-ack'));
    const out = new StreamOut(writableSink(o.output), o.signal, returnPath, (n) => this.emit('bytes', n));
    const unsubscribe = forwardDeviceEvents(this, o.devices);
    const swallowStreamError = (): void => undefined; // errors reach the write callbacks; an 'error' event must not crash the process
    o.output.on('error', swallowStreamError);
    let vcpusStopped = false;
    try {
      const r = await this.#migrate(group, out, returnPath, switchoverAck, () => {
        vcpusStopped = true;
      });
      for (const d of o.devices) this.#tryOrWarn(() => d.saveCleanup(), d.idstr);
      this.#cleanupRam();
      if (o.endOutput ?? true) o.output.end();
      return { ...r, bytes: out.bytes, totalMs: performance.now() - started };
    } catch (e) {
      const error = o.signal?.aborted === true ? new MigrationAbortedError({ cause: o.signal.reason }) : e;
      await this.#recover(vcpusStopped, error);
      throw error;
    } finally {
      unsubscribe();
      returnPath?.close();
      o.output.off('error', swallowStreamError);
    }
  }

  async #migrate(
    group: MigrationGroup,
    out: StreamOut,
    returnPath: ReturnPathListener | undefined,
    switchoverAck: boolean,
    onStopped: () => void,
  ): Promise<Omit<SourceResult, 'bytes' | 'totalMs'>> {
    const o = this.#o;
    const { devices, ram } = o;
    const ids = new Map(devices.map((d, i) => [d, i + 1]));
    const ramId = ramSectionId(devices.length);
    const section = async <T>(header: SectionHeader, body: () => Promise<T>): Promise<T> => {
      await out.write(encodeSectionHeader(header));
      const r = await body();
      await out.write(encodeSectionFooter(header.sectionId));
      return r;
    };
    const full = (type: typeof QEMU_VM_SECTION_START | typeof QEMU_VM_SECTION_FULL, d: VfioMigration): SectionHeader => ({
      type,
      sectionId: ids.get(d) ?? 0,
      idstr: d.idstr,
      instanceId: 0,
      versionId: 1,
    });
    const deviceBytes = (): number => devices.reduce((n, d) => n + d.bytesSaved, 0);

    out.checkAbort();
    if (o.fileHeader ?? true) await out.write(encodeFileHeader());
    if (ram !== undefined) {
      const header = { type: QEMU_VM_SECTION_START, sectionId: ramId, idstr: RAM_SECTION_IDSTR, instanceId: 0, versionId: RAM_SECTION_VERSION } as const;
      await section(header, () => ram.saveSetup(out));
    }
    for (const d of devices) await section(full(QEMU_VM_SECTION_START, d), () => d.saveSetup(out, { switchoverAck }));

    // Precopy: QEMU's migration_iteration_run.
    const limitMs = o.downtimeLimitMs ?? DEFAULT_DOWNTIME_LIMIT_MS;
    let bandwidth = o.bandwidth ?? 0;
    let measured = { bytes: 0, ms: 0 };
    let iterations = 0;
    let check: PendingCheck;
    for (;;) {
      out.checkAbort();
      const threshold = (bandwidth * limitMs) / 1000;
      let ramPending = ram?.statePendingEstimate() ?? 0;
      let pending = group.pendingEstimate() + ramPending;
      let exact = false;
      if (pending < threshold) {
        ramPending = ram?.statePendingExact() ?? 0;
        pending = group.pendingExact() + ramPending;
        exact = true;
      }
      check = { pending, threshold, exact };
      this.emit('pending', check);
      const canSwitchover = !switchoverAck || (returnPath?.acked ?? false);
      const active = group.iterating();
      // Without a device in precopy only RAM rounds can lower `pending`: once RAM fits, waiting would not converge.
      if (canSwitchover && (pending <= threshold || (active.length === 0 && ramPending <= threshold))) break;
      if (iterations >= (o.maxIterations ?? Infinity)) {
        throw new MigrationError(`${pending} bytes pending after ${iterations} rounds still exceed the ${Math.round(threshold)}-byte budget`, 'no-convergence');
      }
      iterations++;
      const before = { stream: out.bytes, device: deviceBytes(), at: performance.now() };
      const ramPages = ram === undefined ? 0 : await section({ type: QEMU_VM_SECTION_PART, sectionId: ramId }, () => ram.saveLiveIterate(out));
      for (const d of active) await section({ type: QEMU_VM_SECTION_PART, sectionId: ids.get(d) ?? 0 }, () => d.saveLiveIterate(out));
      const moved = deviceBytes() - before.device;
      const progressed = moved > 0 || ramPages > 0;
      if (o.bandwidth === undefined && progressed) {
        measured = { bytes: measured.bytes + out.bytes - before.stream, ms: measured.ms + performance.now() - before.at };
        if (measured.ms > 0) bandwidth = (measured.bytes * 1000) / measured.ms;
      }
      this.emit('iteration', { ...check, iteration: iterations, deviceBytes: moved, ramPages, bandwidth });
      if (!progressed) await out.idle(o.idleWaitMs ?? 10);
    }
    const precopyBytes = deviceBytes();

    // Switchover: QEMU's migration_completion.
    this.emit('switchover', check);
    const downtimeStart = performance.now();
    await o.stopVcpus?.();
    onStopped();
    group.stop();
    // Nothing writes RAM any more: the final sync sees every last page.
    if (ram !== undefined) await section({ type: QEMU_VM_SECTION_END, sectionId: ramId }, () => ram.saveLiveCompletePrecopy(out));
    for (const d of devices) await section({ type: QEMU_VM_SECTION_END, sectionId: ids.get(d) ?? 0 }, () => d.saveLiveCompletePrecopy(out));
    for (const d of devices) await section(full(QEMU_VM_SECTION_FULL, d), () => d.saveState(out));
    await out.write(encodeEof());
    let destinationStatus: number | undefined;
    if (returnPath !== undefined) {
      destinationStatus = await abortable(returnPath.shut, o.signal);
      if (destinationStatus !== 0) throw peerFailed(destinationStatus);
    }
    const downtimeMs = performance.now() - downtimeStart;
    this.emit('downtime', downtimeMs);
    return {
      iterations,
      precopyBytes,
      stopCopyBytes: deviceBytes() - precopyBytes,
      downtimeMs,
      bandwidth,
      switchover: check,
      destinationStatus,
      ram: ram?.stats,
    };
  }

  /**
   * A cleanup step that cannot change the outcome: after the commit the VM
   * runs on the destination, after a failure the error is already decided.
   * Its failure is only worth a warning.
   */
  #tryOrWarn(step: () => void, idstr: string): void {
    try {
      step();
    } catch (e) {
      this.#warn(e, idstr);
    }
  }

  /** `ram_save_cleanup`: RAM tracking off again. */
  #cleanupRam(): void {
    const { ram } = this.#o;
    if (ram !== undefined) this.#tryOrWarn(() => ram.saveCleanup(), RAM_SECTION_IDSTR);
  }

  /** QEMU after a failed migration: cleanup, devices RUNNING (reset on failure), RAM tracking off, vCPUs resumed, stream closed. */
  async #recover(vcpusStopped: boolean, error: unknown): Promise<void> {
    const o = this.#o;
    this.#cleanupRam();
    for (const d of o.devices) {
      this.#tryOrWarn(() => d.saveCleanup(), d.idstr);
      this.#tryOrWarn(() => d.abortSave(), d.idstr);
    }
    if (vcpusStopped) await o.resumeVcpus?.();
    // The destination sees a truncated stream and resets its devices; an abort does not wait for a full pipe.
    if (error instanceof MigrationAbortedError) o.output.destroy();
    else if (!o.output.destroyed && !o.output.writableEnded) o.output.end();
  }

  #warn(e: unknown, idstr: string | undefined): void {
    if (e instanceof VfioError) this.emit('warning', e, idstr);
  }
}

/** The incoming side: runs once, with {@link MigrationDestination.run}. */
export class MigrationDestination extends DestinationEmitter {
  readonly #o: DestinationOptions;
  #ran = false;

  constructor(options: DestinationOptions) {
    super();
    this.#o = options;
  }

  /**
   * Loads the stream into the devices and (by default) starts them.
   * @throws MigrationAbortedError when the signal fired; StreamFormatError for a malformed or truncated
   *   stream; MigrationError, VfioSystemError from the step that failed. The devices are reset by then,
   *   and the source was told (return path).
   */
  async run(): Promise<DestinationResult> {
    const o = this.#o;
    if (this.#ran) throw new VfioArgumentError('MigrationDestination.run', 'a migration runs once');
    this.#ran = true;
    const switchoverAck = o.switchoverAck ?? false;
    if (switchoverAck && o.returnPath === undefined) throw new VfioArgumentError('MigrationDestination', 'switchover-ack needs a return path');
    const returnPath = o.returnPath === undefined ? undefined : writableSink(o.returnPath);
    const byIdstr = new Map(o.devices.map((d) => [d.idstr, d]));
    let group: MigrationGroup;
    try {
      if (byIdstr.size !== o.devices.length) throw new VfioArgumentError('MigrationDestination', 'two devices share an idstr');
      group = new MigrationGroup(o.devices);
    } catch (e) {
      // Nothing was touched; the source must not wait for an answer that never comes.
      await shut(returnPath, 1);
      throw e;
    }
    const unsubscribe = forwardDeviceEvents(this, o.devices);
    const input = new ReadableSource(o.input);
    const swallowStreamError = (): void => undefined; // errors reach the write callbacks
    o.returnPath?.on('error', swallowStreamError);
    try {
      const r = await this.#load(group, byIdstr, input, returnPath, switchoverAck);
      await returnPath?.write(encodeReturnPathMessage({ type: 'shut', status: 0 }));
      return r;
    } catch (e) {
      const error = o.signal?.aborted === true ? new MigrationAbortedError({ cause: o.signal.reason }) : e;
      for (const d of o.devices) {
        try {
          d.abortLoad();
        } catch (err) {
          if (err instanceof VfioError) this.emit('warning', err, d.idstr);
        }
      }
      await shut(returnPath, 1);
      throw error;
    } finally {
      unsubscribe();
      input[Symbol.dispose]();
      o.returnPath?.off('error', swallowStreamError);
    }
  }

  async #load(
    group: MigrationGroup,
    byIdstr: ReadonlyMap<string, VfioMigration>,
    input: ReadableSource,
    returnPath: ByteSink | undefined,
    switchoverAck: boolean,
  ): Promise<DestinationResult> {
    const o = this.#o;
    const signal = o.signal;
    let ackSent: Promise<void> | undefined;
    let acksPending = switchoverAck ? o.devices.filter((d) => d.supportsPrecopy).length : 0;
    const sendAck = (): void => {
      ackSent = returnPath?.write(encodeReturnPathMessage({ type: 'switchover-ack' })).then(() => {
        this.emit('switchover-ack');
      });
      // Awaited before the end; a failure must not surface as an unhandled rejection meanwhile.
      ackSent?.catch(() => undefined);
    };
    const approve = (): void => {
      if (--acksPending === 0) sendAck();
    };
    for (const d of o.devices) d.loadSetup(switchoverAck && d.supportsPrecopy ? { approveSwitchover: approve } : {});
    if (switchoverAck && acksPending === 0) sendAck();

    const { ram } = o;
    const parser = new SavevmParser<RamRecord>({
      device: (h) => byIdstr.get(h.idstr)?.parserOptions(),
      section: (h, offset) => ram?.sectionParser(h, offset),
    });
    let current: VfioMigration | undefined;
    let ramComplete = false;
    let bytes = 0;
    for (let eof = false; !eof; ) {
      if (signal?.aborted === true) throw new MigrationAbortedError({ cause: signal.reason });
      const chunk = await abortable(input.read(), signal);
      if (chunk === null) {
        parser.end();
        break;
      }
      bytes += chunk.byteLength;
      this.emit('bytes', bytes);
      for (const r of parser.push(chunk)) {
        if (r.kind === 'section-header') {
          current = byIdstr.get(r.device.idstr);
          // RAM is complete once the END section (the pages sent after the source stopped) is read.
          if (r.header.type === QEMU_VM_SECTION_END && r.device.idstr === RAM_SECTION_IDSTR) ramComplete = true;
        } else if (r.kind === 'vfio') await current?.loadRecord(r.record);
        else if (r.kind === 'content') ram?.loadRecord(r.record);
        else if (r.kind === 'eof') eof = true;
      }
    }
    if (ram !== undefined && !ramComplete) throw new MigrationError('the stream carried no complete guest RAM (no END section of "ram")', 'incomplete', RAM_SECTION_IDSTR);
    await ackSent;
    for (const d of o.devices) await d.loadConfig();
    for (const d of o.devices) d.loadCleanup();
    this.emit('loaded');
    const start = o.start ?? true;
    if (start) {
      group.start();
      await o.startVcpus?.();
    }
    const deviceBytes = o.devices.reduce((n, d) => n + d.bytesLoaded, 0);
    return { bytes, deviceBytes, switchoverAcked: ackSent !== undefined, started: start, ram: ram?.stats };
  }
}

/**
 * The source's stream: counts and reports bytes, and stops waiting for a full
 * stream when the migration is aborted or the destination reported a failure.
 */
class StreamOut implements ByteSink {
  bytes = 0;

  constructor(
    private readonly inner: ByteSink,
    private readonly signal: AbortSignal | undefined,
    private readonly returnPath: ReturnPathListener | undefined,
    private readonly onBytes: (total: number) => void,
  ) {}

  async write(...chunks: Uint8Array[]): Promise<void> {
    this.checkAbort();
    await this.interruptible(this.inner.write(...chunks));
    this.bytes += chunks.reduce((n, c) => n + c.byteLength, 0);
    this.onBytes(this.bytes);
  }

  checkAbort(): void {
    if (this.signal?.aborted === true) throw new MigrationAbortedError({ cause: this.signal.reason });
    this.returnPath?.throwIfFailed();
  }

  /** `p`, unless the migration is aborted or the destination fails first. */
  interruptible<T>(p: Promise<T>): Promise<T> {
    const failed = this.returnPath?.failed;
    return abortable(failed === undefined ? p : Promise.race([p, failed]), this.signal);
  }

  /** Waits `ms`, or less if the switchover ack arrives. */
  async idle(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const wait = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    });
    const rp = this.returnPath;
    try {
      await this.interruptible(rp === undefined || rp.acked ? wait : Promise.race([wait, rp.ack]));
    } finally {
      clearTimeout(timer);
    }
  }
}

/** The source's end of the return path: the switchover ack and the destination's final status. */
class ReturnPathListener {
  acked = false;
  /** Settles when the switchover ack arrives (never rejects). */
  readonly ack: Promise<void>;
  /** The destination's final status; rejects if the return path ends or breaks before it. */
  readonly shut: Promise<number>;
  /** Rejects as soon as the destination reports a failure or the return path breaks; never resolves. */
  readonly failed: Promise<never>;
  #failure: unknown;
  readonly #source: ReadableSource;

  constructor(stream: Readable, onAck: () => void) {
    this.#source = new ReadableSource(stream);
    let acked: () => void = () => undefined;
    this.ack = new Promise<void>((resolve) => {
      acked = resolve;
    });
    this.shut = this.#listen(() => {
      this.acked = true;
      acked();
      onAck();
    });
    this.failed = this.shut.then(
      (status) => {
        // A status before the source has finished is a failure whatever its value.
        this.#failure ??= peerFailed(status);
        throw this.#failure;
      },
      (e: unknown) => {
        this.#failure ??= e;
        throw e;
      },
    );
    this.failed.catch(() => undefined);
  }

  /** Throws what broke the return path, or the destination's failure, if either happened. */
  throwIfFailed(): void {
    if (this.#failure !== undefined) throw this.#failure;
  }

  close(): void {
    this.#source[Symbol.dispose]();
  }

  async #listen(onAck: () => void): Promise<number> {
    const parser = new ReturnPathParser();
    for (;;) {
      const chunk = await this.#source.read();
      if (chunk === null) {
        parser.end();
        throw new MigrationError('the return path closed before the destination reported its status', 'transport');
      }
      for (const m of parser.push(chunk)) {
        if (m.type === 'shut') return m.status;
        onAck();
      }
    }
  }
}

function peerFailed(status: number): MigrationError {
  return new MigrationError(`the destination failed to load or start (status ${status})`, 'peer-failed');
}

/** Tells the source the destination failed, so it resumes its VM; it may be gone already, which changes nothing. */
async function shut(returnPath: ByteSink | undefined, status: number): Promise<void> {
  await returnPath?.write(encodeReturnPathMessage({ type: 'shut', status })).catch(() => undefined);
}

/** `p`, or a MigrationAbortedError as soon as `signal` fires. */
function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(new MigrationAbortedError({ cause: signal.reason }));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      p.catch(() => undefined);
      reject(new MigrationAbortedError({ cause: signal.reason }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Re-emits each device's `state` and `warning` events with its idstr; returns the unsubscribe. */
function forwardDeviceEvents(runner: TypedEmitter.default<RunnerEvents>, devices: readonly VfioMigration[]): () => void {
  const offs = devices.map((d) => {
    const onState = (from: MigrationState, to: MigrationState): void => {
      runner.emit('state', d.idstr, from, to);
    };
    const onWarning = (e: VfioError): void => {
      runner.emit('warning', e, d.idstr);
    };
    d.on('state', onState);
    d.on('warning', onWarning);
    return () => {
      d.off('state', onState);
      d.off('warning', onWarning);
    };
  });
  return () => {
    for (const off of offs) off();
  };
}

