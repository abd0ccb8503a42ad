/**
 * Config-state ordering on the simulator (the 2020 ordering thread, reference
 * §5.8), for an MSI device (edu, made migratable by the simulator) and an
 * MSI-X device (the test function), in QEMU's default order and in vfio-ts's
 * opt-in config-before-data mode: the syscall trace shows that the
 * destination wires no interrupt (no VFIO_DEVICE_SET_IRQS with
 * DATA_EVENTFD) before the VMM opens its interrupt gate, that the config
 * reaches the device after the data by default and before it in the mode,
 * that the VM cannot start before the gate opens, and that an interrupt
 * reaches its eventfd on the destination afterwards. Then the same through
 * the reference runner, with the device's state checked, and the refusals:
 * a default-mode reader given a stream in the mode, and a VMM that never
 * opens the gate.
 */
import t, { type Test } from 'tap';
import { InterruptGateClosedError, MigrationError, StreamFormatError } from '../lib/errors.js';
import { bytesSource } from '../lib/migration/byte-io.js';
import { noConfigState } from '../lib/migration/config-state.js';
import { MigrationGroup } from '../lib/migration/group.js';
import { VfioMigration } from '../lib/migration/hooks.js';
import { InterruptGate } from '../lib/pci/interrupt-gate.js';
import { VfioPciDevice } from '../lib/pci/pci-device.js';
import { addEdu } from '../lib/sim/edu.js';
import { SimKernel } from '../lib/sim/kernel.js';
import { addTestDev, TESTDEV_REG_FIRE_MSIX, TESTDEV_REG_SCRATCH } from '../lib/sim/pci-testdev.js';
import type { SyscallRecord } from '../lib/sim/syscalls.js';
import { Errno } from '../lib/sys/errno.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { VFIO_DEVICE_STATE_RESUMING, VFIO_DEVICE_STATE_RUNNING, VFIO_IRQ_SET_DATA_EVENTFD } from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { decode } from '../lib/vfio/uapi/layout.js';
import { vfio_irq_set } from '../lib/vfio/uapi/structs.js';
import { nextEvent } from './helpers/events.js';
import { thrown } from './helpers/expect.js';
import { MemorySink, runBoth } from './helpers/migration-sim.js';
import { EDU_MSI, programEdu, programTestDev, testDevMsix } from './helpers/pci-guest.js';

type Kind = 'edu' | 'testdev';
type Mode = 'default' | 'config-before-data';

const SRC = { edu: '0000:00:06.0', testdev: '0000:00:07.0' } as const;
const DST = { edu: '0000:00:16.0', testdev: '0000:00:17.0' } as const;
/** Device-fd offset of the command register in the CONFIG region (7 << 40 | 4). */
const COMMAND_OFFSET = (7n << 40n) + 4n;

interface Pair {
  readonly sim: SimKernel;
  readonly kind: Kind;
  readonly src: { pci: VfioPciDevice; migration: VfioMigration };
  readonly dst: { pci: VfioPciDevice; migration: VfioMigration; name: string };
  readonly gate: InterruptGate;
}

/** A programmed source and a destination behind a closed gate, each in a container of its own. */
function pair(t: Test, kind: Kind, mode: Mode, dstMode: Mode = mode): Pair {
  const sim = new SimKernel();
  const add = (bdf: string): string => (kind === 'edu' ? addEdu(sim, { bdf, migration: true, dmaDelayMs: 1 }) : addTestDev(sim, { bdf, migration: true })).name;
  const open = (bdf: string, gate?: InterruptGate): VfioPciDevice => {
    const c = VfioContainer.open({ sys: sim });
    t.teardown(() => c.close());
    return new VfioPciDevice(c.openDevice(add(bdf)), gate === undefined ? {} : { interruptGate: gate });
  };
  const gate = new InterruptGate();
  const srcPci = open(SRC[kind]);
  const dstPci = open(DST[kind], gate);
  if (kind === 'edu') programEdu(srcPci);
  else programTestDev(srcPci);
  const src = { pci: srcPci, migration: VfioMigration.open(srcPci, { configBeforeData: mode === 'config-before-data' }) };
  const dst = {
    pci: dstPci,
    name: DST[kind],
    migration: VfioMigration.open(dstPci, { idstr: src.migration.idstr, configBeforeData: dstMode === 'config-before-data' }),
  };
  t.teardown(() => {
    for (const m of [src.migration, dst.migration]) m.close();
  });
  return { sim, kind, src, dst, gate };
}

/** Where in `trace` the destination wired eventfds (SET_IRQS with DATA_EVENTFD), by index. */
function eventfdWirings(trace: readonly SyscallRecord[], device: string): number[] {
  return trace.flatMap((r, i) => {
    if (r.request !== VFIO_DEVICE_SET_IRQS || r.label !== device || r.arg === undefined) return [];
    return (decode(vfio_irq_set, r.arg).flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0 ? [i] : [];
  });
}

/** Index of the destination's command-register write, and of its first write of device data. */
function configAndData(trace: readonly SyscallRecord[], device: string): { config: number; data: number } {
  return {
    config: trace.findIndex((r) => r.syscall === 'pwrite' && r.label === device && r.offset === COMMAND_OFFSET),
    data: trace.findIndex((r) => r.syscall === 'write' && r.kind === 'migration' && r.label === device),
  };
}

/** Fires the interrupt the guest programmed on the destination device and returns what the VMM got. */
async function fire(p: Pair): Promise<unknown[] | undefined> {
  const got = nextEvent(p.dst.pci, 'msi');
  if (p.kind === 'edu') p.dst.pci.bar(0).region.write32(0x60, 1);
  else p.dst.pci.writeBar(0, TESTDEV_REG_FIRE_MSIX, 4, 3n);
  return got;
}

const expected = (kind: Kind): unknown[] => (kind === 'edu' ? [EDU_MSI, { kind: 'msi', vector: 0 }] : [testDevMsix(3), { kind: 'msix', vector: 3 }]);

/** Runs the save hooks as QEMU's migration thread would, and returns each section's VFIO content. */
async function save(m: VfioMigration): Promise<Uint8Array[]> {
  const sink = new MemorySink();
  const sections: Uint8Array[] = [];
  await m.saveSetup(sink);
  sections.push(sink.take());
  if (m.isActiveIterate()) {
    await m.saveLiveIterate(sink);
    sections.push(sink.take());
  }
  new MigrationGroup([m]).stop();
  await m.saveLiveCompletePrecopy(sink);
  sections.push(sink.take());
  await m.saveState(sink);
  sections.push(sink.take());
  m.saveCleanup();
  return sections;
}

for (const kind of ['edu', 'testdev'] as const) {
  for (const mode of ['default', 'config-before-data'] as const) {
    t.test(`${kind} (${kind === 'edu' ? 'MSI' : 'MSI-X'}), ${mode}: no eventfd wired before the gate opens`, async (t) => {
      const p = pair(t, kind, mode);
      const sections = await save(p.src.migration);
      const trace = p.sim.startTrace();
      const dst = p.dst.migration;
      dst.loadSetup();
      for (const s of sections) await dst.loadState(bytesSource([s]));
      await dst.loadConfig();
      dst.loadCleanup();
      t.same(eventfdWirings(trace, p.dst.name), [], 'the stream is loaded: nothing wired');
      t.equal(p.dst.pci.interruptMode, 'none');
      const { config, data } = configAndData(trace, p.dst.name);
      t.ok(config >= 0 && data >= 0, 'the command register and the device data both reached the destination');
      if (mode === 'default') t.ok(config > data, 'QEMU 6.0+: the config after every data byte');
      else t.ok(config < data, 'config-before-data: the config before the data');

      const group = new MigrationGroup([dst]);
      t.throws(() => group.start(), InterruptGateClosedError, 'the VM cannot start before the gate opens');
      t.equal(dst.state, VFIO_DEVICE_STATE_RESUMING, 'and nothing moved');

      const gateAt = trace.length;
      p.gate.open();
      const wired = eventfdWirings(trace, p.dst.name);
      t.ok(wired.length > 0 && wired.every((i) => i >= gateAt), `every eventfd wiring comes after the gate (${wired.length} of them)`);
      t.equal(dst.state, VFIO_DEVICE_STATE_RESUMING, 'wired while still RESUMING, as vfio_pci_load_config does');
      t.equal(p.dst.pci.interruptMode, kind === 'edu' ? 'msi' : 'msix');
      group.start();
      t.equal(dst.state, VFIO_DEVICE_STATE_RUNNING);
      p.sim.stopTrace();
      t.same(await fire(p), expected(kind), 'the interrupt reaches its eventfd and the VMM, with the guest\'s message');
    });
  }
}

for (const mode of ['default', 'config-before-data'] as const) {
  t.test(`the test function through the runner, ${mode}: state, order, interrupts after the gate`, async (t) => {
    const p = pair(t, 'testdev', mode);
    const bar4 = p.src.pci.bar(4).region;
    for (let i = 0; i < 16; i++) bar4.write32(i * 4096, 0xc0de0000 + i);
    p.src.pci.writeBar(0, TESTDEV_REG_SCRATCH, 4, 0x5a5a1234n);
    const trace = p.sim.startTrace();
    let gateAt = -1;
    const { source, destination } = await runBoth(
      { devices: [p.src.migration], bandwidth: 1e9 },
      { devices: [p.dst.migration] },
      (_s, d) => {
        d.on('loaded', () => {
          gateAt = trace.length;
          t.same(eventfdWirings(trace, p.dst.name), [], 'nothing wired when the stream is loaded');
          p.gate.open();
        });
      },
    );
    p.sim.stopTrace();
    t.ok(source.ok && destination.ok, 'both sides completed');
    const wired = eventfdWirings(trace, p.dst.name);
    t.ok(gateAt > 0 && wired.length > 0 && wired.every((i) => i >= gateAt), 'every eventfd wiring after the gate');
    const { config, data } = configAndData(trace, p.dst.name);
    t.ok(mode === 'default' ? config > data : config < data, 'the config where the mode puts it');
    t.equal(p.dst.migration.state, VFIO_DEVICE_STATE_RUNNING);
    const dstBar4 = p.dst.pci.bar(4).region;
    t.same(Array.from({ length: 16 }, (_, i) => dstBar4.read32(i * 4096)), Array.from({ length: 16 }, (_, i) => 0xc0de0000 + i), 'BAR4 migrated');
    t.equal(p.dst.pci.readBar(0, TESTDEV_REG_SCRATCH, 4), 0x5a5a1234n, 'the scratch register migrated');
    t.same(p.dst.pci.saveConfig(), p.src.pci.saveConfig(), 'the destination holds the source\'s config state');
    t.same(await fire(p), expected('testdev'), 'an MSI-X vector fires and reaches its eventfd');
  });
}

t.test('a default-mode destination refuses a stream in the mode, naming it; the source resumes', async (t) => {
  const p = pair(t, 'testdev', 'config-before-data', 'default');
  const { source, destination } = await runBoth({ devices: [p.src.migration], bandwidth: 1e9 }, { devices: [p.dst.migration] });
  t.notOk(destination.ok);
  const e = destination.ok ? undefined : destination.error;
  t.type(e, StreamFormatError);
  t.match(e, {
    message: "VFIO tag CONFIG_BEFORE_DATA belongs to vfio-ts's opt-in config-before-data mode, which this reader does not accept (set configBeforeData to read it) (at byte 39, tag 0xffffffffef10f001)",
  });
  t.match(source, { ok: false, error: { reason: 'peer-failed' } });
  t.equal(p.src.migration.state, VFIO_DEVICE_STATE_RUNNING);
});

t.test('a destination whose VMM never opens the gate refuses to start, resets its device and tells the source', async (t) => {
  const p = pair(t, 'testdev', 'default');
  const { source, destination } = await runBoth({ devices: [p.src.migration], bandwidth: 1e9 }, { devices: [p.dst.migration] });
  t.match(destination, { ok: false, error: { code: 'ERR_VFIO_INTERRUPT_GATE', held: 'gate' } });
  t.match(source, { ok: false, error: { reason: 'peer-failed' } });
  t.equal(p.dst.pci.interruptMode, 'none', 'nothing was ever wired');
  t.equal(p.dst.migration.state, VFIO_DEVICE_STATE_RUNNING, 'reset');
});

t.test('hooks: placement rules of the mode', async (t) => {
  const p = pair(t, 'edu', 'config-before-data');
  const [setup, part, end, full] = await save(p.src.migration);
  const dst = p.dst.migration;
  const load = async (...sections: (Uint8Array | undefined)[]): Promise<void> => {
    dst.loadSetup();
    for (const s of sections) if (s !== undefined) await dst.loadState(bytesSource([s]));
  };
  t.equal(setup?.length, 24);
  await t.rejects(load(setup, setup), { code: 'ERR_VFIO_STREAM_FORMAT', message: /CONFIG_BEFORE_DATA must open the setup section/ });
  const enableFirst = await load(setup, full).then(
    () => 'loaded',
    (e: unknown) => e,
  );
  t.match(enableFirst, { message: /DEV_ENABLE_IRQ before any DEV_CONFIG_NO_IRQ/ });
  await t.rejects(load(setup, end), { message: /device data before its config in the config-before-data mode/ }, 'the config went in the precopy section, which is missing');
  await load(setup, part, end);
  await t.rejects(dst.loadConfig(), MigrationError, 'no DEV_ENABLE_IRQ: incomplete');
  t.equal(dst.hasConfig, false);
  const plain = pair(t, 'edu', 'default', 'config-before-data');
  const sections = await save(plain.src.migration);
  plain.dst.migration.loadSetup();
  for (const s of sections) await plain.dst.migration.loadState(bytesSource([s]));
  await plain.dst.migration.loadConfig();
  t.equal(plain.dst.migration.hasConfig, true, 'a reader of the mode takes a QEMU stream as QEMU would');
  plain.gate.open();
  t.equal(plain.dst.pci.interruptMode, 'msi');
  const strict = pair(t, 'edu', 'config-before-data', 'default');
  strict.dst.migration.loadSetup();
  await t.rejects(strict.dst.migration.loadRecord({ kind: 'config-mode', offset: 0 }), { message: /these hooks do not accept \(option configBeforeData\)/ }, 'records parsed elsewhere');
  const stray = pair(t, 'edu', 'default', 'config-before-data');
  stray.dst.migration.loadSetup();
  await t.rejects(stray.dst.migration.loadRecord({ kind: 'config-early', offset: 0, bytes: new Uint8Array(0) }), { message: /did not declare the config-before-data mode/ });
  stray.dst.migration.loadSetup();
  await stray.dst.migration.loadRecord({ kind: 'config-mode', offset: 0 });
  await t.rejects(stray.dst.migration.loadRecord({ kind: 'config', offset: 8, bytes: new Uint8Array(0) }), { message: /DEV_CONFIG_STATE in a config-before-data stream/ });
});

t.test('the simulated devices: state images, and the minimal provider refusing MSI-X', async (t) => {
  const sim = new SimKernel();
  const edu = addEdu(sim, { migration: true });
  const testdev = addTestDev(sim, { migration: true });
  t.match(thrown(() => edu.fn.loadImage(new Uint8Array(8))), { errno: Errno.EINVAL }, 'not an edu image');
  t.match(thrown(() => testdev.fn.loadImage(edu.fn.saveImage())), { errno: Errno.EINVAL }, 'not a test function image');
  const c = VfioContainer.open({ sys: sim });
  t.teardown(() => c.close());
  const plain = c.openDevice(testdev.name);
  t.throws(() => VfioMigration.open(plain), { code: 'ERR_VFIO_CONFIG_SPACE', message: /has MSI-X/ }, 'without VfioPciDevice, an MSI-X device has no config provider');
  using m = VfioMigration.open(plain, { config: noConfigState });
  t.equal(m.supportsPrecopy, true, 'the driver was closed after the refusal: a second one opens');
});

t.test('a wiring that fails at the gate keeps the VM from starting until it is wired', async (t) => {
  const p = pair(t, 'testdev', 'default');
  const sections = await save(p.src.migration);
  const dst = p.dst.migration;
  dst.loadSetup();
  for (const s of sections) await dst.loadState(bytesSource([s]));
  await dst.loadConfig();
  dst.loadCleanup();
  p.sim.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_SET_IRQS, label: p.dst.name, nth: 1, errno: 'EIO' });
  t.match(thrown(() => p.gate.open()), { code: 'EIO' });
  const group = new MigrationGroup([dst]);
  t.match(thrown(() => group.start()), { code: 'ERR_VFIO_MIGRATION', reason: 'bad-state', device: p.dst.name }, 'refused, not started without interrupts');
  t.equal(dst.state, VFIO_DEVICE_STATE_RESUMING, 'nothing moved');
  p.dst.pci.enableInterrupts();
  t.equal(p.dst.pci.interruptMode, 'msix');
  group.start();
  t.equal(dst.state, VFIO_DEVICE_STATE_RUNNING);
  t.same(await fire(p), expected('testdev'));
});
