/**
 * The backend a contract test runs on: the simulated kernel (default, a
 * fresh one per call) or the real kernel inside `../shared/vm/run`
 * (`VFIO_BACKEND=kernel`, devices from `$MTTY_UUIDS` and `$EDU_BDF`).
 */
import { readdirSync } from 'node:fs';
import { libcSys } from '../../lib/sys/libc.js';
import type { Sys } from '../../lib/sys/sys.js';
import { addEdu } from '../../lib/sim/edu.js';
import { SimKernel } from '../../lib/sim/kernel.js';
import { addMtty } from '../../lib/sim/mtty.js';

export interface Backend {
  readonly name: 'sim' | 'kernel';
  readonly sys: Sys;
  /** UUIDs of two migratable mtty-2 mdevs. */
  readonly mttys: readonly [string, string];
  /** PCI address of QEMU's edu device bound to vfio-pci. */
  readonly edu: string;
  /** The simulated kernel, on the sim backend. */
  readonly sim: SimKernel | undefined;
  /** Open file descriptors of the process (libc) or of the simulated kernel. */
  openFds(): number;
}

export const onKernel = process.env.VFIO_BACKEND === 'kernel';

export const SIM_MTTYS = ['83b8f4f2-509f-382f-3c1e-e6bfe0fa1001', '83b8f4f2-509f-382f-3c1e-e6bfe0fa1002'] as const;
/** Where the simulated edu sits: the test guest's address. */
export const SIM_EDU = '0000:00:06.0';

/** A backend for one test: on the simulator a fresh kernel with two mtty-2 devices and an edu. */
export function backend(): Backend {
  if (onKernel) {
    const uuids = (process.env.MTTY_UUIDS ?? '').split(/\s+/).filter(Boolean);
    const [a, b] = uuids;
    if (a === undefined || b === undefined) throw new Error('VFIO_BACKEND=kernel needs two UUIDs in $MTTY_UUIDS (run inside ../shared/vm/run)');
    const edu = process.env.EDU_BDF ?? '';
    return { name: 'kernel', sys: libcSys(), mttys: [a, b], edu, sim: undefined, openFds: () => readdirSync('/proc/self/fd').length };
  }
  const sim = new SimKernel();
  for (const uuid of SIM_MTTYS) addMtty(sim, { uuid, type: 'mtty-2' });
  // The real edu's DMA takes 100 ms of QEMU's virtual time; the simulated one need not.
  addEdu(sim, { bdf: SIM_EDU, dmaDelayMs: 1 });
  return { name: 'sim', sys: sim, mttys: SIM_MTTYS, edu: SIM_EDU, sim, openFds: () => sim.openFds };
}
