/**
 * The v2 driver (MigrationFile) on the simulated kernel: the data fd it owns
 * and when it opens, continues and ends; PRECOPY_INFO and MIG_DATA_SIZE;
 * ENOMSG and mtty's 0; "out of sync" fds; recovery of its state after a
 * failed SET; the fd surviving an in-flight read.
 */
import t from 'tap';
import { MigrationFile } from '../lib/migration/v2-driver.js';
import { addBulkDevice } from '../lib/sim/bulk-device.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty, type SimMtty } from '../lib/sim/mtty.js';
import { VfioContainer } from '../lib/vfio/container.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import {
  VFIO_DEVICE_STATE_ERROR,
  VFIO_DEVICE_STATE_PRE_COPY,
  VFIO_DEVICE_STATE_PRE_COPY_P2P,
  VFIO_DEVICE_STATE_RESUMING,
  VFIO_DEVICE_STATE_RUNNING,
  VFIO_DEVICE_STATE_RUNNING_P2P,
  VFIO_DEVICE_STATE_STOP,
  VFIO_DEVICE_STATE_STOP_COPY,
} from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_FEATURE, VFIO_DEVICE_RESET, VFIO_MIG_GET_PRECOPY_INFO } from '../lib/vfio/uapi/ioctls.js';
import { decode } from '../lib/vfio/uapi/layout.js';
import { vfio_precopy_info } from '../lib/vfio/uapi/structs.js';
import { setMigState } from './helpers/sim-mtty.js';

const UUID = '2f1e0d0c-0b0a-4909-8807-060504030201';

function mtty(): { kernel: SimKernel; sim: SimMtty; device: VfioDevice; driver: MigrationFile } {
  const kernel = new SimKernel();
  const sim = addMtty(kernel, { uuid: UUID, type: 'mtty-2' });
  const device = VfioContainer.open({ sys: kernel }).openDevice(UUID);
  return { kernel, sim, device, driver: MigrationFile.open(device) };
}

const migrationFds = (kernel: SimKernel): number => {
  let n = 0;
  for (let fd = 3; fd < 64; fd++) {
    try {
      if (kernel.fileOf(fd).ops.kind === 'migration') n++;
    } catch {
      // no file at this fd
    }
  }
  return n;
};

t.test('the data fd: opened by the last arc, continued into STOP_COPY, ended by leaving the session', async (t) => {
  const { kernel, driver } = mtty();
  t.equal(driver.protocol, 'v2');
  t.equal(driver.resumeFraming, 'stream');
  t.equal(driver.maxChunkSize, undefined);
  t.equal(driver.label, UUID);
  t.equal(driver.state, VFIO_DEVICE_STATE_RUNNING);
  t.notOk(driver.hasSession);
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  t.ok(driver.hasSession, 'RUNNING -> PRE_COPY opened a session');
  t.equal(migrationFds(kernel), 1);
  const buf = new Uint8Array(4096);
  t.equal(await driver.read(buf), 24, 'mtty precopy: the 24-byte header');
  t.equal(await driver.read(buf), 0, "mtty's 0 at the temporary end");
  kernel.startTrace();
  driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  const trace = kernel.stopTrace();
  t.equal(trace.length, 1, 'one SET for PRE_COPY -> PRE_COPY_P2P -> STOP_COPY');
  t.equal(migrationFds(kernel), 1, 'no new fd: the same one continues');
  t.equal(await driver.read(buf), 72, 'the PRE_COPY fd delivers the stop-copy data');
  t.equal(await driver.read(buf), 0);
  driver.setState(VFIO_DEVICE_STATE_STOP);
  t.notOk(driver.hasSession, 'STOP_COPY -> STOP ended it');
  t.equal(migrationFds(kernel), 0, 'and the fd is closed');
  await t.rejects(driver.read(buf), { code: 'ERR_VFIO_MIGRATION', reason: 'no-session' });
  driver.setState(VFIO_DEVICE_STATE_STOP);
  t.equal(kernel.stopTrace().length, 0, 'a SET to the current state makes no call');
  driver.setState(VFIO_DEVICE_STATE_RESUMING);
  t.ok(driver.hasSession);
  await t.rejects(driver.read(buf), { code: 'ERR_VFIO_MIGRATION', reason: 'no-session' }, 'a resuming session cannot be read');
  t.throws(() => driver.precopyInfo(), { code: 'ERR_VFIO_MIGRATION', reason: 'no-session' });
  driver.closeSession();
  driver.closeSession();
  t.equal(migrationFds(kernel), 0, 'closeSession closes the fd, idempotently');
  await t.rejects(driver.write(buf), { code: 'ERR_VFIO_MIGRATION', reason: 'no-session' });
  // PRE_COPY -> RESUMING ends one session and opens another in one SET.
  driver.reset();
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  driver.setState(VFIO_DEVICE_STATE_RESUMING);
  t.equal(migrationFds(kernel), 1, 'the saving fd closed, the resuming fd open');
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_ERROR), { code: 'ERR_VFIO_MIGRATION_STATE', reason: 'target-is-error' }, 'refused before any call');
  driver.close();
  driver.close();
  t.equal(migrationFds(kernel), 0);
  t.throws(() => driver.queryState(), { code: 'ERR_VFIO_CLOSED' });
});

t.test('PRECOPY_INFO goes in with flags 0; MIG_DATA_SIZE', async (t) => {
  const { kernel, driver } = mtty();
  t.equal(driver.stopCopySize(), 96, 'mtty-2: 24 + 2 x 36');
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  kernel.startTrace();
  t.same(driver.precopyInfo(), { initialBytes: 24, dirtyBytes: 0 });
  const [call] = kernel.stopTrace();
  t.equal(call?.request, VFIO_MIG_GET_PRECOPY_INFO);
  t.equal(call?.kind, 'migration');
  const arg = call?.arg ?? new Uint8Array(24);
  t.same(decode(vfio_precopy_info, arg), { argsz: 24, flags: 0, initial_bytes: 0n, dirty_bytes: 0n }, 'argsz 24, flags zeroed');
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY_P2P);
  t.same(driver.precopyInfo(), { initialBytes: 24, dirtyBytes: 0 }, 'valid in PRE_COPY_P2P too');
});

t.test('ENOMSG from a driver that follows the uAPI reads as 0', async (t) => {
  const kernel = new SimKernel();
  const sim = addBulkDevice(kernel, { stateSize: 4096 });
  const driver = MigrationFile.open(VfioContainer.open({ sys: kernel }).openDevice(sim.name));
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  const buf = new Uint8Array(1 << 16);
  t.ok((await driver.read(buf)) > 0);
  kernel.startTrace();
  t.equal(await driver.read(buf), 0);
  t.equal(kernel.stopTrace()[0]?.result, 'ENOMSG', 'the kernel said ENOMSG');
});

t.test('out of sync: a data fd nobody planned, or none where one was planned', async (t) => {
  const { kernel, device, driver } = mtty();
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  // Someone resets the device behind the driver's back: the kernel walks RUNNING -> ... -> STOP_COPY and opens a new fd.
  kernel.ioctl(device.fd, VFIO_DEVICE_RESET);
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_STOP_COPY), { code: 'ERR_VFIO_MIGRATION', reason: 'data-fd-out-of-sync', message: /although no arc/ });
  t.equal(driver.state, VFIO_DEVICE_STATE_STOP_COPY, 'the SET itself went through');
  t.equal(migrationFds(kernel), 1, 'the unexpected fd was closed at once');

  driver.reset();
  // The device is put into PRE_COPY behind the driver's back: the planned session opens nothing.
  const fd = setMigState(kernel, device.fd, VFIO_DEVICE_STATE_PRE_COPY);
  kernel.close(fd);
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_PRE_COPY), { code: 'ERR_VFIO_MIGRATION', reason: 'data-fd-out-of-sync', message: /no data fd/ });

});

t.test('a failed SET: the state is read back, a session the device left is closed', async (t) => {
  const { kernel, sim, driver } = mtty();
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  sim.faults = { arc: { from: VFIO_DEVICE_STATE_PRE_COPY_P2P, to: VFIO_DEVICE_STATE_STOP_COPY, errno: 'EIO' } };
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_STOP_COPY), { code: 'EIO', op: 'VFIO_DEVICE_FEATURE' });
  t.equal(driver.state, VFIO_DEVICE_STATE_PRE_COPY_P2P, 'stuck half way, as GET says');
  t.ok(driver.hasSession, 'still in the saving group: the session stays');
  sim.faults = { arc: { from: VFIO_DEVICE_STATE_PRE_COPY_P2P, to: VFIO_DEVICE_STATE_RUNNING_P2P, errno: 'EIO', enterError: true } };
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_RUNNING), { code: 'EIO' });
  t.equal(driver.state, VFIO_DEVICE_STATE_ERROR);
  t.notOk(driver.hasSession, 'ERROR is outside the session: closed');
  t.equal(migrationFds(kernel), 0);
  sim.faults = {};
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_RUNNING), { code: 'ERR_VFIO_MIGRATION_STATE', reason: 'current-is-error' });
  driver.reset();
  t.equal(driver.state, VFIO_DEVICE_STATE_RUNNING);

  // SET and the GET after it both fail: the state cannot be trusted.
  const undo = kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_FEATURE, nth: 1, errno: 'EIO', times: 2 });
  t.throws(() => driver.setState(VFIO_DEVICE_STATE_STOP), { code: 'ERR_VFIO_MIGRATION', reason: 'bad-state' });
  undo();
  t.equal(driver.state, VFIO_DEVICE_STATE_ERROR, 'taken as ERROR: only a reset helps');
});

t.test('closing during a read: the fd outlives the read in flight', async (t) => {
  const { kernel, driver } = mtty();
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  const reading = driver.read(new Uint8Array(64));
  driver.closeSession();
  t.equal(migrationFds(kernel), 1, 'still open while the read is in flight');
  t.equal(await reading, 24);
  t.equal(migrationFds(kernel), 0, 'closed once it settled');
  driver.setState(VFIO_DEVICE_STATE_RUNNING);
  driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  const again = driver.read(new Uint8Array(64));
  driver.close();
  await again;
  t.equal(migrationFds(kernel), 0, 'close() waits the same way');
  // A close that fails still forgets the fd (Linux releases it); the errno reaches the caller.
  const d2 = mtty();
  d2.driver.setState(VFIO_DEVICE_STATE_PRE_COPY);
  d2.kernel.faults.inject({ syscall: 'close', fdKind: 'migration', nth: 1, errno: 'EIO' });
  t.throws(() => d2.driver.closeSession(), { code: 'EIO', op: 'close migration data fd' });
  t.notOk(d2.driver.hasSession);
  t.equal(migrationFds(d2.kernel), 0, 'the fd is gone anyway');
  // A reset whose close fails still resets the device: recovery must not stop at the fd.
  const d3 = mtty();
  d3.driver.setState(VFIO_DEVICE_STATE_STOP_COPY);
  d3.kernel.faults.inject({ syscall: 'close', fdKind: 'migration', nth: 1, errno: 'EIO' });
  t.throws(() => d3.driver.reset(), { code: 'EIO', op: 'close migration data fd' });
  t.equal(d3.driver.state, VFIO_DEVICE_STATE_RUNNING);
  t.equal(d3.driver.queryState(), VFIO_DEVICE_STATE_RUNNING, 'the kernel says RUNNING: the reset went ahead');
  t.equal(migrationFds(d3.kernel), 0);
});

t.test('a device without v2 migration', async (t) => {
  const { kernel, device } = mtty();
  t.throws(() => new MigrationFile(device, 0), { code: 'ERR_VFIO_MIGRATION', reason: 'unsupported' }, 'flags without STOP_COPY');
  kernel.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_FEATURE, nth: 1, errno: 'ENOTTY' });
  t.throws(() => MigrationFile.open(device), { code: 'ERR_VFIO_MIGRATION', reason: 'unsupported' }, 'VFIO_DEVICE_FEATURE_MIGRATION answers ENOTTY');
});
