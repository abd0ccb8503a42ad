/**
 * Migration contract tests, on the simulated kernel (`npm test`) and on the
 * real one (`npm run test:kernel` in ../shared/vm/run), with mtty:
 *
 * - the planner against the kernel: for every pair of the 7 requestable
 *   states, the SET succeeds exactly when the planner has a path, GET reads
 *   back the target, and a data_fd comes back exactly when the last planned
 *   arc opens a session; PRE_COPY(_P2P) -> STOP_COPY gives -1 and the
 *   PRE_COPY fd goes on with the stop-copy data;
 * - a live migration between two containers through the runner, the receive
 *   FIFOs intact.
 */
import t from 'tap';
import { PassThrough } from 'node:stream';
import { VfioSystemError } from '../lib/errors.js';
import { planTransition, returnsDataFd, stateName, supportedStates, type MigrationState } from '../lib/migration/fsm.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { MigrationDestination, MigrationSource } from '../lib/migration/runner.js';
import { VfioContainer } from '../lib/vfio/container.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import {
  VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
} from '../lib/vfio/uapi/constants.js';
import { decode, encode } from '../lib/vfio/uapi/layout.js';
import { vfio_device_feature_mig_state } from '../lib/vfio/uapi/structs.js';
import { backend } from './helpers/backend.js';
import { canonicalMtty, receiveMtty } from './helpers/mtty-uart.js';

/** MIG_DEVICE_STATE SET through the device object; the data_fd the kernel copied back. */
function set(device: VfioDevice, state: number): number {
  const p = encode(vfio_device_feature_mig_state, { device_state: state, data_fd: -1 });
  return decode(vfio_device_feature_mig_state, device.featureSet(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, p)).data_fd;
}

function get(device: VfioDevice): number {
  return decode(vfio_device_feature_mig_state, device.featureGet(VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, 8)).device_state;
}

/** Reads a data fd until it returns 0. */
function drain(device: VfioDevice, fd: number): Uint8Array {
  const out: number[] = [];
  const buf = new Uint8Array(256);
  for (let n = device.sys.read(fd, buf); n > 0; n = device.sys.read(fd, buf)) out.push(...buf.subarray(0, n));
  return Uint8Array.from(out);
}

t.test('the planner walk: every pair of states, SET, GET and the data fd as planned', async (t) => {
  const b = backend();
  using c = VfioContainer.open({ sys: b.sys });
  const d = c.openDevice(b.mttys[0]);
  const flags = d.migrationFlags();
  const states = supportedStates(flags);
  t.equal(states.length, 7, 'mtty: STOP_COPY | P2P | PRE_COPY, all 7 requestable states');
  // A valid stream of this very device, for leaving RESUMING (RESUMING -> STOP validates what was written).
  d.reset();
  set(d, VFIO_DEVICE_STATE_STOP);
  const saveFd = set(d, VFIO_DEVICE_STATE_STOP_COPY);
  const image = drain(d, saveFd);
  b.sys.close(saveFd);
  t.equal(image.length, 96, 'mtty-2 saves 96 bytes');

  const failures: string[] = [];
  let pairs = 0;
  let blocked = 0;
  for (const from of states) {
    for (const to of states) {
      d.reset();
      const fds: number[] = [];
      try {
        const first = set(d, from);
        if (first >= 0) fds.push(first);
        if (from === VFIO_DEVICE_STATE_RESUMING && to !== from) b.sys.write(first, image);
        let plan: ReturnType<typeof planTransition> | undefined;
        try {
          plan = planTransition(from as MigrationState, to as MigrationState, flags);
        } catch {
          plan = undefined;
        }
        const what = `${stateName(from)} -> ${stateName(to)}`;
        let fd: number;
        try {
          fd = set(d, to);
        } catch (e) {
          if (plan === undefined && e instanceof VfioSystemError && e.code === 'EINVAL') {
            blocked++;
            continue;
          }
          failures.push(`${what}: ${String(e)}`);
          continue;
        }
        pairs++;
        if (plan === undefined) failures.push(`${what}: the planner says blocked, the kernel accepted`);
        if (fd >= 0) fds.push(fd);
        if (get(d) !== to) failures.push(`${what}: GET reads ${stateName(get(d))}`);
        if ((fd >= 0) !== returnsDataFd(plan ?? [])) failures.push(`${what}: data_fd ${fd}, planned ${returnsDataFd(plan ?? []) ? 'a new fd' : '-1'}`);
        if ((from === VFIO_DEVICE_STATE_PRE_COPY || from === VFIO_DEVICE_STATE_PRE_COPY_P2P) && to === VFIO_DEVICE_STATE_STOP_COPY) {
          const rest = drain(d, first);
          if (rest.length !== 96) failures.push(`${what}: the PRE_COPY fd gave ${rest.length} bytes, not the whole 96-byte image`);
        }
      } finally {
        for (const fd of fds) b.sys.close(fd);
      }
    }
  }
  t.same(failures, [], 'the kernel walks exactly what the planner plans');
  t.equal(pairs, 47, '47 pairs succeed (7 x 7 minus STOP_COPY -> PRE_COPY and -> PRE_COPY_P2P)');
  t.equal(blocked, 2, 'the 2 blocked pairs are EINVAL');
  d.reset();
  t.equal(get(d), VFIO_DEVICE_STATE_RUNNING);
});

t.test('mtty migrates live between two containers with its FIFOs intact', async (t) => {
  const b = backend();
  using c1 = VfioContainer.open({ sys: b.sys });
  using c2 = VfioContainer.open({ sys: b.sys });
  const src = c1.openDevice(b.mttys[0]);
  const dst = c2.openDevice(b.mttys[1]);
  canonicalMtty(src, ['to the other', 'side']);
  receiveMtty(dst, 0);
  receiveMtty(dst, 1);
  using out = VfioMigration.open(src);
  using into = VfioMigration.open(dst, { idstr: out.idstr });
  const path: string[] = [];
  out.on('state', (from, to) => path.push(`src ${stateName(from)}>${stateName(to)}`));
  into.on('state', (from, to) => path.push(`dst ${stateName(from)}>${stateName(to)}`));
  const forward = new PassThrough();
  const back = new PassThrough();
  const source = new MigrationSource({ devices: [out], output: forward, returnPath: back, switchoverAck: true, bandwidth: 1e6 });
  const destination = new MigrationDestination({ devices: [into], input: forward, returnPath: back, switchoverAck: true });
  const [r, l] = await Promise.all([source.run(), destination.run()]);
  t.equal(r.precopyBytes, 24, 'precopy: the header');
  t.equal(r.stopCopyBytes, 72, 'stop-copy: both ports');
  t.equal(l.deviceBytes, 96);
  t.ok(l.switchoverAcked);
  t.same(
    path.filter((p) => p.startsWith('src')),
    ['src RUNNING>PRE_COPY', 'src PRE_COPY>PRE_COPY_P2P', 'src PRE_COPY_P2P>STOP_COPY', 'src STOP_COPY>STOP'],
  );
  t.same(
    path.filter((p) => p.startsWith('dst')),
    ['dst RUNNING>RESUMING', 'dst RESUMING>RUNNING_P2P', 'dst RUNNING_P2P>RUNNING'],
  );
  t.equal(get(dst), VFIO_DEVICE_STATE_RUNNING);
  t.equal(get(src), VFIO_DEVICE_STATE_STOP);
  t.equal(receiveMtty(dst, 0), 'to the other', 'port 0 FIFO');
  t.equal(receiveMtty(dst, 1), 'side', 'port 1 FIFO');
  // Leave both devices as a fresh test would want them.
  src.reset();
  receiveMtty(src, 0);
  receiveMtty(src, 1);
});
