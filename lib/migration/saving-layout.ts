/**
 * The saving-layout switch both migration drivers run around every state
 * change (vfio-ts's opt-in extension, `vfio/uapi/extensions.ts`): the shape
 * Alex Williamson proposed last in the 2020 dynamic-trap-BAR thread
 * (reference §7), where the user switches its mmaps to the layout a region
 * allows while saving *before* the device enters a saving state, and the
 * device refuses the transition while a conflicting mapping is left.
 *
 * Everything happens synchronously inside the state change, so nothing
 * waits on an interrupt (the objection to the remap-IRQ form):
 * - into a saving state (PRE_COPY, PRE_COPY_P2P, STOP_COPY; v1: SAVING with
 *   or without RUNNING): first the remap IRQ is enabled if the device has
 *   one (the handshake), then every region of the device is switched to its
 *   saving layout, then the device is asked;
 * - out of the saving states (to RUNNING on cancel or failure, to STOP after
 *   a completed migration, by a reset): the device is asked first, and the
 *   normal layout comes back once it has left them.
 *
 * RESUMING is not a saving state: the thread's layout exists so the device
 * sees the guest's writes while its state is read out; a resuming device is
 * stopped and its guest does not run, so its mappings stay as they are.
 */
import type { VfioError } from '../errors.js';
import type { VfioDevice } from '../vfio/device.js';
import type { Region } from '../vfio/region.js';
import { RemapIrq } from '../vfio/remap-irq.js';
import { VFIO_DEVICE_STATE_ERROR } from '../vfio/uapi/constants.js';
import { isSavingState, type MigrationState } from './fsm.js';

/** One device's mmaps, kept in the layout its migration state allows. */
export class SavingLayoutSwitch {
  readonly #device: VfioDevice;
  /** Regions in their saving layout (or left there by a failed restore), to switch back. */
  #saving: Region[] = [];
  readonly #warningListeners = new Set<(error: VfioError) => void>();
  /** The remap IRQ whose warnings go to {@link onWarning}'s listeners. */
  #followed: RemapIrq | undefined;

  constructor(device: VfioDevice) {
    this.#device = device;
  }

  /**
   * Listens for what the device's remap IRQ (enabled by the handshake) could
   * not do: its signals arrive outside any call, so their failures have no
   * caller to throw to. Returns the unsubscribe.
   */
  onWarning(listener: (error: VfioError) => void): () => void {
    this.#warningListeners.add(listener);
    return () => this.#warningListeners.delete(listener);
  }

  /**
   * Runs `set`, the driver's state change from `from` to `target`, with the
   * layout switches around it. `now` reads the state the driver believes
   * after `set` (re-read by the driver after a failure).
   * @throws what `set` throws, after the layout was made to match `now()`
   * @throws VfioSystemError from the switch into the saving layout, before `set` ran (the device did not move)
   * @throws VfioSystemError when the normal layout cannot be restored after a successful change (the device moved; the regions keep fewer mappings and the next change retries)
   */
  change(from: MigrationState, target: MigrationState, set: () => void, now: () => MigrationState): void {
    // Also between saving states: a driver opened on a device already saving (a driver closed mid-migration
    // and opened again) has switched nothing yet. For regions already switched this makes no system call.
    if (isSavingState(target)) this.#enterSaving(from);
    // Leaving a saving state this switch never entered (it lists nothing): the regions a previous driver left
    // narrowed come back too. A switch that entered lists every region already, so this costs it nothing.
    else if (isSavingState(from) && this.#saving.length === 0) this.#adopt();
    try {
      set();
    } catch (e) {
      // The state change's error is the one to report; a restore that fails too is retried by the next change.
      quietly(() => this.settle(now()));
      throw e;
    }
    this.settle(now());
  }

  /**
   * Brings the layout in line with `state`: the normal layout outside the
   * saving states (after a reset, for instance). ERROR keeps what is there:
   * the device's state is unknown until a reset.
   * @throws VfioSystemError when an mmap of the normal layout fails (every region is still tried)
   */
  settle(state: MigrationState): void {
    if (state !== VFIO_DEVICE_STATE_ERROR && !isSavingState(state)) this.#restore();
  }

  /** Every region switched to saving goes back to its normal layout; those that fail stay listed. */
  #restore(): void {
    const failed: Region[] = [];
    let failure: unknown;
    for (const r of this.#saving) {
      // Nothing can be mapped through a closed region: it leaves the list.
      if (r.closed) continue;
      try {
        r.relayout('normal');
      } catch (e) {
        failed.push(r);
        failure ??= e;
      }
    }
    this.#saving = failed;
    if (failure !== undefined) throw failure;
  }

  /**
   * The handshake, then every open region in its saving layout. Regions
   * without a saving layout are switched too (nothing changes for them), so
   * one that gains it through the remap IRQ while saving follows it at once.
   * On failure the layout goes back to what `from`, where the device stays, allows.
   */
  #enterSaving(from: MigrationState): void {
    const remap = RemapIrq.enable(this.#device);
    if (remap !== undefined && remap !== this.#followed) {
      this.#followed = remap;
      remap.on('warning', (e) => {
        for (const l of this.#warningListeners) l(e);
      });
    }
    const regions = this.#device.regions().filter((r) => !r.closed);
    try {
      for (const r of regions) {
        if (!this.#saving.includes(r)) this.#saving.push(r);
        r.relayout('saving');
      }
    } catch (e) {
      // The device has not moved: back to its layout (the normal one unless it is saving already), and the
      // first error is the one reported.
      quietly(() => this.settle(from));
      throw e;
    }
  }

  /**
   * Lists the open regions left in their saving layout, so leaving the saving
   * states restores them. Never throws: a region whose info cannot be read was
   * never opened, so it has nothing to restore, and leaving must not fail for it.
   */
  #adopt(): void {
    for (let i = 0; i < this.#device.info.numRegions; i++) {
      let r: Region;
      try {
        r = this.#device.region(i);
      } catch {
        continue;
      }
      if (!r.closed && r.layoutMode === 'saving' && !this.#saving.includes(r)) this.#saving.push(r);
    }
  }
}

/**
 * Runs a restore whose failure is not the error to report. Its regions keep
 * a narrower layout (always safe: accesses there go through the kernel) and
 * stay listed, so the next state change tries again.
 */
function quietly(restore: () => void): void {
  try {
    restore();
  } catch {
    // Deliberately not reported: the caller throws the error that matters, and the next change retries.
  }
}
