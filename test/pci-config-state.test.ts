/**
 * The config state of a whole VfioPciDevice (lib/pci/pci-device.ts with
 * lib/pci/qemu-config.ts) on the simulated edu and test function: the bytes
 * QEMU's `vfio_pci_save_config` would write after the same guest writes,
 * derived by hand from QEMU's realize and reset (hw/vfio/pci.c
 * vfio_pci_config_setup, vfio_add_std_cap, vfio_add_ext_cap; hw/pci/pci.c
 * pci_register_bar, pci_do_device_reset; msi_init/msi_reset, msix_init/
 * msix_reset) and written at stream offsets (config offset + 4); QEMU's
 * guest reads; the load order of `vfio_pci_load_config`; the read-only check;
 * and the interrupt gate.
 */
import t from 'tap';
import { ConfigSpaceError, InterruptGateClosedError } from '../lib/errors.js';
import { InterruptGate } from '../lib/pci/interrupt-gate.js';
import { VfioPciDevice, type VfioPciDeviceOptions } from '../lib/pci/pci-device.js';
import { qemuConfigSpace } from '../lib/pci/qemu-config.js';
import type { SyscallRecord } from '../lib/sim/syscalls.js';
import { VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX } from '../lib/vfio/uapi/constants.js';
import { VFIO_DEVICE_SET_IRQS } from '../lib/vfio/uapi/ioctls.js';
import { decode } from '../lib/vfio/uapi/layout.js';
import { vfio_irq_set } from '../lib/vfio/uapi/structs.js';
import { nextEvent } from './helpers/events.js';
import { thrown } from './helpers/expect.js';
import { bytesAt, hex } from './helpers/pci-fixtures.js';
import { EDU_CONFIG_STATE, EDU_MSI, programEdu, programTestDev, testDevMsix } from './helpers/pci-guest.js';
import { openEdu, openTestDev } from './helpers/sim-pci.js';

const CONFIG_REGION = 7;

/** Each SET_IRQS of the trace as "index:action:start+count" with "fd" when it wires eventfds. */
function setIrqs(trace: readonly SyscallRecord[]): string[] {
  return trace
    .filter((r) => r.request === VFIO_DEVICE_SET_IRQS && r.arg !== undefined)
    .map((r) => {
      const h = decode(vfio_irq_set, r.arg ?? new Uint8Array(20));
      return `${h.index}:${h.start}+${h.count}${(h.flags & VFIO_IRQ_SET_DATA_EVENTFD) !== 0 ? ' fd' : ''}`;
    });
}

/** The test function: 4 + 4096 + 16 + 16 * 16 + 2 = 4374 bytes. */
const TESTDEV_GOLDEN = bytesAt(4374, {
  0x0000: '00 00 00 02',
  0x0004: '36 1b 01 01 06 00 10 00 01 00 00 ff', // header type 0: single function
  0x0014: '00 00 00 fd 00 00 00 00 00 40 00 fd 00 00 00 00 0c 00 00 00 08 00 00 00', // BAR0, BAR2, BAR4 64-bit prefetchable at 8_0000_0000
  0x0030: 'f4 1a 00 11 00 00 00 00 40', // ROM BAR 0 (not enabled), capability pointer
  0x0040: '0a 01',
  0x0044: '01 50 03 06', // PM as vfio-pci shows it (PME support hidden)
  0x0054: '05 70 80 01', // MSI: 64-bit, per-vector mask, one vector as vfio-pci shows it, off
  0x0074: '11 80 0f 80 02 00 00 00 02 30 00 00', // MSI-X: enabled, 16 entries, table BAR2+0, PBA BAR2+0x3000
  0x0084: '10 c0 02 00 00 00 00 10', // PCIe v2 endpoint, FLR
  0x00c4: '09 00 10 de ad be ef', // vendor-specific
  0x0104: '01 00 82 14', // AER v2, next DSN (0x148)
  0x014c: '03 00 01 17 78 56 34 12 00 ef cd ab', // DSN, next LTR (0x170): ARI is dropped
  0x0158: '1e 00 01 16', // L1SS, unlinked by vfio-pci: its bytes stay
  0x0164: '0e 00 01 17', // ARI, unlinked by QEMU: its bytes stay
  0x0174: '18 00 01 00', // LTR, end of the chain
  // 0x1004..0x1013: irq_state
  0x1044: '00 30 e0 fe 00 00 00 00 63 40 00 00 00 00 00 00', // entry 3: unmasked
  0x1064: '00 50 e0 fe 00 00 00 00 65 40 00 00 01 00 00 00', // entry 5: masked again
  0x1114: '20 00', // PBA: vector 5 fired while masked
});
// The entries the guest did not program: zeros, masked (msix_init), from 0x1014.
for (const v of [0, 1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]) TESTDEV_GOLDEN[0x1014 + v * 16 + 12] = 1;

function pciOf<D>(setup: { device: ConstructorParameters<typeof VfioPciDevice>[0] } & D, options?: VfioPciDeviceOptions): D & { pci: VfioPciDevice } {
  return { ...setup, pci: new VfioPciDevice(setup.device, options) };
}

t.test('golden: edu (MSI, no MSI-X), as QEMU saves it', async (t) => {
  const { pci } = pciOf(openEdu(t));
  programEdu(pci);
  t.equal(pci.configStateSize, 276);
  t.same(pci.configStateLayout, { express: false, msixVectors: 0 });
  t.same(pci.saveConfig(), EDU_CONFIG_STATE);
});

t.test('golden: the test function (MSI-X, PCIe, extended capabilities, a pending vector)', async (t) => {
  const { pci, driver } = pciOf(openTestDev(t));
  programTestDev(pci);
  pci.writeConfig(0x04, 2, 0x0006);
  driver.fn.fireMsix(5);
  await new Promise((r) => setImmediate(r));
  t.equal(pci.configStateSize, 4374);
  t.same(pci.saveConfig(), TESTDEV_GOLDEN);
});

t.test("irq_state and the INTx status bit follow the guest's line", async (t) => {
  const { pci, driver } = pciOf(openTestDev(t));
  const up = nextEvent(pci, 'intx');
  driver.fn.setIntx(true);
  await up;
  const asserted = pci.saveConfig();
  t.equal(asserted[4 + 6], 0x18, 'status: CAP_LIST and INTERRUPT');
  t.same([...asserted.subarray(4 + 4096, 4 + 4096 + 16)], [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 'INTA as be32 1');
  driver.fn.setIntx(false);
  pci.intxEoi();
  const clear = pci.saveConfig();
  t.equal(clear[4 + 6], 0x10);
  t.equal(clear[4 + 4096 + 3], 0);
});

t.test("QEMU's view: realize and reset, reads of emulated bits, writes under its masks", async (t) => {
  const { pci, device } = pciOf(openTestDev(t));
  const kernel = device.region(CONFIG_REGION).readBytes(0, 4096);
  t.equal(pci.readConfig(0x10, 4), 0, 'BAR0 reads QEMU\'s register (no address yet), not the host\'s');
  t.equal(device.region(CONFIG_REGION).read32(0x10), 0xfd000000, 'the kernel still shows the host address');
  pci.writeConfig(0x20, 4, 0xffffffff);
  pci.writeConfig(0x24, 4, 0xffffffff);
  t.equal(pci.readConfig(0x20, 4), 0xffff000c, 'sizing BAR4 through QEMU: ~(64 KiB - 1) | 64-bit prefetchable');
  t.equal(pci.readConfig(0x24, 4), 0xffffffff);
  pci.writeConfig(0x30, 4, 0xffffffff);
  t.equal(pci.readConfig(0x30, 4), 0xfffff801, 'the ROM BAR: 2 KiB, enable bit writable');
  pci.writeConfig(0x30, 4, 0);
  t.equal(pci.readConfig(0x148, 4), 0x17010003, 'the DSN header: next is LTR, QEMU dropped ARI');
  t.equal(pci.readConfig(0x0e, 1), 0x00, 'single function');
  pci.writeConfig(0x06, 2, 0xffff);
  t.equal(pci.qemuConfig()[0x06], 0x10, 'status: read-only and write-1-to-clear bits stay');
  pci.writeConfig(0x08, 1, 0x55);
  t.equal(pci.qemuConfig()[0x08], 0x01, 'the revision is read-only');
  t.same(pci.qemuConfig().subarray(0xc0, 0xd0), kernel.subarray(0xc0, 0xd0), 'a capability QEMU registers is read-only in its view');

});

t.test('qemuConfigSpace on a hand-made image: PCIe version 0, a dropped head of the extended chain, I/O BAR', async (t) => {
  const kernel = bytesAt(4096, {
    0x00: '86 80 20 15 07 01 10 00 01 00 00 02 10 20 80 00', // command, cache line, latency, multi-function
    0x10: '01 e0 00 00', // BAR0: I/O at 0xe000
    0x34: '40',
    0x3c: '0b 01',
    0x40: '10 00 00 00', // PCIe capability, version 0 (an 82599 VF)
    0x100: '0e 00 01 11', // ARI at the head (QEMU drops it), next 0x110
    0x110: '03 00 01 00 11 22 33 44 55 66 77 88', // DSN
  });
  const view = qemuConfigSpace({ kernelImage: kernel, barSizes: [32n, 0n, 0n, 0n, 0n, 0n], romSize: 0n });
  t.same([...view.image.subarray(0, 0x10)], [...hex('86 80 20 15 00 00 10 00 01 00 00 02 00 20 00 00')], 'reset: command and cache line cleared; single function');
  t.same([...view.image.subarray(0x10, 0x14)], [1, 0, 0, 0], 'an I/O BAR keeps its two type bits');
  t.equal(view.image[0x3c], 0, 'the interrupt line is cleared by the reset');
  t.same([...view.image.subarray(0x40, 0x44)], [0x10, 0, 0x01, 0], 'PCIe version 0 shown as 1');
  t.equal(view.emulatedBits[0x42], 0x0f, 'the version field is emulated');
  t.same([...view.image.subarray(0x100, 0x104)], [0, 0, 0, 0x11], 'the dropped head: id 0, its next kept');
  t.same([...view.image.subarray(0x110, 0x114)], [3, 0, 1, 0], 'DSN ends the chain');
  t.equal(view.masks.cmask[0x100], 0, 'the dropped capability is not checked');
  const small = qemuConfigSpace({ kernelImage: hex('86 80 20 15 00 00 10 00'), barSizes: [0n, 0n, 0n, 0n, 0n, 0n], romSize: 0n });
  t.equal(small.image.byteLength, 4096, 'a CONFIG region of any size but 256 gives a 4096-byte image');
});

t.test('load: the image, then the command register, then MSI through SET_IRQS (vfio_pci_load_config)', async (t) => {
  const src = pciOf(openEdu(t, { migration: true }));
  programEdu(src.pci);
  const bytes = src.pci.saveConfig();
  const dst = pciOf(openEdu(t, { migration: true }));
  dst.device.region(CONFIG_REGION).write16(0x04, 0x0000);
  dst.device.region(CONFIG_REGION).write8(0x3c, 0x55);
  const trace = dst.sim.startTrace();
  dst.pci.loadConfig(bytes);
  const writes = trace.filter((r) => r.syscall === 'pwrite' || r.request === VFIO_DEVICE_SET_IRQS).map((r) => (r.syscall === 'pwrite' ? 'pwrite' : 'SET_IRQS'));
  t.same(writes, ['pwrite', 'SET_IRQS', 'SET_IRQS'], 'one config write (the command), then INTx off and MSI on');
  t.same(setIrqs(trace), ['0:0+0', '1:0+1 fd']);
  t.equal(dst.device.region(CONFIG_REGION).read16(0x04), 0x0006, 'the command register reached the device');
  t.equal(dst.pci.interruptMode, 'msi');
  t.same(dst.pci.saveConfig(), bytes, 'saving again gives the same bytes');
  t.equal(dst.pci.readConfig(0x44, 4), 0xfee01000, 'the guest reads its MSI address');
  t.equal(dst.pci.qemuConfig()[0x3c], 0x0b, 'the interrupt line is in QEMU\'s view...');
  t.equal(dst.pci.readConfig(0x3c, 1), 0x55, '...but not written to the device: the guest reads the kernel\'s, as under QEMU');
  dst.sim.stopTrace();
  const got = nextEvent(dst.pci, 'msi');
  dst.driver.fn.dmaDelayMs = 0;
  dst.pci.bar(0).region.write32(0x60, 1);
  t.same(await got, [EDU_MSI, { kind: 'msi', vector: 0 }], 'the loaded MSI is live');
});

t.test('load refuses what QEMU refuses, and changes nothing then', async (t) => {
  const src = pciOf(openTestDev(t));
  programTestDev(src.pci);
  const bytes = src.pci.saveConfig();
  const dst = pciOf(openTestDev(t));
  const before = dst.pci.saveConfig();
  const otherDevice = bytes.slice();
  otherDevice[4 + 2] ^= 0x01;
  const e = thrown(() => dst.pci.loadConfig(otherDevice));
  t.type(e, ConfigSpaceError);
  t.equal((e as ConfigSpaceError).offset, 2, 'the device id differs');
  t.match((e as Error).message, /read-only bits 0x01 differ: incoming 0x00, device 0x01/);
  const dsn = bytes.slice();
  dsn[4 + 0x150] ^= 0x80;
  t.equal((thrown(() => dst.pci.loadConfig(dsn)) as ConfigSpaceError).offset, 0x150, 'a serial number byte (extended capability)');
  const barType = bytes.slice();
  barType[4 + 0x20] = 0x00;
  t.equal((thrown(() => dst.pci.loadConfig(barType)) as ConfigSpaceError).offset, 0x20, 'a BAR\'s type bits');
  t.match(thrown(() => dst.pci.loadConfig(bytes.subarray(0, 100))), { code: 'ERR_VFIO_CONFIG_SPACE', message: /truncated/ });
  t.match(thrown(() => dst.pci.loadConfig(new Uint8Array([...bytes, 0]))), { message: /1 bytes follow the config state/ });
  t.match(thrown(() => dst.pci.loadConfig(bytes.subarray(0, bytes.byteLength - 1))), { code: 'ERR_VFIO_CONFIG_SPACE', message: /the MSI-X PBA needs 2 bytes, 1 remain/ });
  const tableSize = bytes.slice();
  tableSize[4 + 0x72] = 0x10;
  t.match(thrown(() => dst.pci.loadConfig(tableSize)), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 4 + 0x72, message: /MSI-X with 17 entries but the layout says 16/ }, 'msix_load reads the destination\'s table size');
  const msi = dst.pci.msi;
  if (msi === undefined) throw new Error('the test function has MSI');
  const tooMany = bytes.slice();
  const mme = Math.log2(msi.vectorsCapable) + 1;
  tooMany[4 + msi.offset + 2] = ((tooMany[4 + msi.offset + 2] ?? 0) & ~0x70) | (mme << 4) | 0x01;
  t.match(
    thrown(() => dst.pci.loadConfig(tooMany)),
    { code: 'ERR_VFIO_CONFIG_SPACE', offset: msi.offset + 2, message: new RegExp(`MSI enables ${2 ** mme} vectors but the device has ${msi.vectorsCapable}`) },
    'more MSI vectors enabled than the device has',
  );
  const edu = pciOf(openEdu(t));
  t.match(thrown(() => edu.pci.loadConfig(bytes)), { code: 'ERR_VFIO_CONFIG_SPACE' }, 'another device\'s layout');
  t.same(dst.pci.saveConfig(), before, 'refused loads changed nothing');
  t.equal(dst.pci.interruptMode, 'intx');
  const writable = bytes.slice();
  writable[4 + 0x3c] = 0x33;
  writable[4 + 0x6c] = 0x77;
  t.doesNotThrow(() => dst.pci.loadConfig(writable), 'the interrupt line and bytes no capability claims are writable');
  t.equal(dst.pci.qemuConfig()[0x6c], 0x77);
});

t.test('load accepts what QEMU accepts: subsystem ids and version_id 0..2', async (t) => {
  const src = pciOf(openEdu(t));
  programEdu(src.pci);
  const bytes = src.pci.saveConfig();
  // pci_init_cmask checks neither subsystem id: an OEM variant of the same function loads under QEMU.
  const oem = bytes.slice();
  oem[4 + 0x2e] ^= 0x01;
  const dst = pciOf(openEdu(t));
  t.doesNotThrow(() => dst.pci.loadConfig(oem));
  t.equal(dst.pci.qemuConfig()[0x2e], oem[4 + 0x2e], 'get_pci_config_device copies the whole image');
  t.equal(dst.pci.readConfig(0x2e, 1), 0x00, 'the guest still reads the device\'s own id: QEMU does not emulate it');
  const old = bytes.slice();
  old[3] = 1;
  t.doesNotThrow(() => pciOf(openEdu(t)).pci.loadConfig(old), 'get_int32_le takes any version up to 2');
  const next = bytes.slice();
  next[3] = 3;
  const fresh = pciOf(openEdu(t));
  const before = fresh.pci.saveConfig();
  t.match(thrown(() => fresh.pci.loadConfig(next)), { code: 'ERR_VFIO_CONFIG_SPACE', offset: 0, message: /version_id 3 is not 0..2/ });
  t.same(fresh.pci.saveConfig(), before, 'and a refused version changes nothing');
});

t.test('a closed gate holds every interrupt back; opening it wires what the guest enabled', async (t) => {
  const gate = new InterruptGate();
  const setup = openTestDev(t);
  const trace = setup.sim.startTrace();
  const pci = new VfioPciDevice(setup.device, { interruptGate: gate });
  t.equal(pci.interruptMode, 'none', 'not even INTx at open');
  t.equal(pci.interruptHold, 'gate');
  programTestDev(pci);
  t.same(setIrqs(trace), [], 'the guest enabled MSI-X and unmasked vectors: nothing wired');
  t.type(thrown(() => pci.checkCanStart()), InterruptGateClosedError);
  const gateAt = trace.length;
  gate.open();
  gate.open();
  t.same(setIrqs(trace.slice(gateAt)), ['2:0+1 fd', '2:0+4 fd'], 'MSI-X on with no vector (fd -1), then vectors 0-3 with vector 3 wired (5 is masked again)');
  t.same(pci.wiredVectors, [3]);
  t.equal(pci.interruptMode, 'msix');
  t.equal(pci.interruptHold, undefined);
  pci.checkCanStart();
  await gate.opened;
  setup.sim.stopTrace();

  const late = new VfioPciDevice(openEdu(t).device, { interruptGate: gate });
  t.equal(late.interruptMode, 'intx', 'a device opened behind an open gate wires at once');
});

t.test('a config loaded with its interrupts held, then enabled', async (t) => {
  const src = pciOf(openEdu(t));
  programEdu(src.pci);
  const bytes = src.pci.saveConfig();
  const dst = pciOf(openEdu(t));
  t.equal(dst.pci.interruptMode, 'intx');
  const trace = dst.sim.startTrace();
  dst.pci.loadConfig(bytes, { interrupts: 'hold' });
  t.same(setIrqs(trace), ['0:0+0'], 'held: INTx unwired, MSI not wired');
  t.equal(dst.pci.interruptHold, 'config');
  t.match(thrown(() => dst.pci.checkCanStart()), { code: 'ERR_VFIO_INTERRUPT_GATE', held: 'config' });
  dst.pci.enableInterrupts();
  t.same(setIrqs(trace).slice(1), ['1:0+1 fd']);
  t.equal(dst.pci.interruptMode, 'msi');
  dst.sim.stopTrace();
});

t.test('a failing wiring at the gate is reported, and the other devices are still wired', async (t) => {
  const gate = new InterruptGate();
  const a = openTestDev(t);
  const b = openEdu(t);
  const pa = new VfioPciDevice(a.device, { interruptGate: gate });
  const pb = new VfioPciDevice(b.device, { interruptGate: gate });
  a.sim.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_SET_IRQS, nth: 1, errno: 'EIO' });
  t.match(thrown(() => gate.open()), { code: 'EIO' });
  t.equal(pb.interruptMode, 'intx');
  pa.close();
  const c = openEdu(t);
  using pc = new VfioPciDevice(c.device, { interruptGate: new InterruptGate(true) });
  t.equal(pc.interruptMode, 'intx');
});

t.test('closing before the gate opens', async (t) => {
  const gate = new InterruptGate();
  const pci = new VfioPciDevice(openEdu(t).device, { interruptGate: gate });
  pci.close();
  gate.open();
  t.equal(pci.interruptMode, 'none', 'a closed device is not wired when the gate opens');
});

t.test('INTx cannot be wired by hand while the interrupts are held', async (t) => {
  const gate = new InterruptGate();
  const setup = openEdu(t);
  const trace = setup.sim.startTrace();
  const pci = new VfioPciDevice(setup.device, { interruptGate: gate });
  const intx = pci.intx;
  if (intx === undefined) throw new Error('edu has INTx');
  t.match(thrown(() => intx.enable()), { code: 'ERR_VFIO_INTERRUPT_GATE', held: 'gate' }, 'the public IntxLine obeys the gate');
  // Nor through the VFIO device's own IRQ objects: the guard sits under every eventfd wiring.
  for (const index of [VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX]) {
    t.match(thrown(() => setup.device.irq(index).enable(1)), { code: 'ERR_VFIO_INTERRUPT_GATE', held: 'gate' }, `device.irq(${index}).enable()`);
  }
  t.match(thrown(() => setup.device.irq(VFIO_PCI_MSI_IRQ_INDEX).assign(0, [false])), { code: 'ERR_VFIO_INTERRUPT_GATE' }, 'an empty-handed assign');
  t.match(thrown(() => setup.device.setIrqGuard(() => undefined)), { code: 'ERR_VFIO_INVALID_ARGUMENT' }, 'one guard per device');
  t.same(setIrqs(trace), [], 'nothing wired');
  gate.open();
  t.equal(pci.interruptMode, 'intx');
  const src = pciOf(openEdu(t));
  programEdu(src.pci);
  pci.loadConfig(src.pci.saveConfig(), { interrupts: 'hold' });
  const heldAt = trace.length;
  t.match(thrown(() => intx.enable()), { code: 'ERR_VFIO_INTERRUPT_GATE', held: 'config' }, 'and a config hold');
  t.same(setIrqs(trace.slice(heldAt)), []);
  setup.sim.stopTrace();
});

t.test('a wiring that failed at the gate is undone, refuses the start, and enableInterrupts retries it', async (t) => {
  const gate = new InterruptGate();
  const a = openTestDev(t);
  const b = openEdu(t);
  const pa = new VfioPciDevice(a.device, { interruptGate: gate });
  const pb = new VfioPciDevice(b.device, { interruptGate: gate });
  programTestDev(pa);
  const trace = a.sim.startTrace();
  // The second SET_IRQS of MSI-X (vectors 0-3) fails after the first (enable with none) went through.
  a.sim.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_SET_IRQS, nth: 2, errno: 'EIO' });
  t.match(thrown(() => gate.open()), { code: 'EIO' });
  t.equal(pb.interruptMode, 'intx', 'the other device is wired');
  t.same(setIrqs(trace), ['2:0+1 fd', '2:0+4 fd', '2:0+0'], 'the half-enabled MSI-X index is disabled again');
  t.same(pa.wiredVectors, [], 'nothing claims to be wired');
  t.equal(pa.interruptMode, 'none');
  t.match(thrown(() => pa.checkCanStart()), { code: 'ERR_VFIO_MIGRATION', reason: 'bad-state', cause: { code: 'EIO' } }, 'the failure is kept: the VM cannot start');
  pb.checkCanStart();
  pa.enableInterrupts();
  t.same(setIrqs(trace).slice(3), ['2:0+1 fd', '2:0+4 fd'], 'retried whole');
  t.same(pa.wiredVectors, [3]);
  pa.checkCanStart();
  a.sim.stopTrace();
});

t.test('a vector whose wiring failed at unmask: its pending message still delivered, retried whole', async (t) => {
  const src = pciOf(openTestDev(t));
  programTestDev(src.pci);
  src.driver.fn.fireMsix(5);
  await new Promise((r) => setImmediate(r));
  const dst = pciOf(openTestDev(t), { interruptGate: new InterruptGate(true) });
  dst.pci.loadConfig(src.pci.saveConfig());
  t.same(dst.pci.wiredVectors, [3], 'vector 5 is masked and pending');
  dst.sim.faults.inject({ syscall: 'ioctl', request: VFIO_DEVICE_SET_IRQS, nth: 1, errno: 'EIO' });
  const got = nextEvent(dst.pci, 'msi');
  t.match(thrown(() => dst.pci.writeBar(2, 5 * 16 + 12, 4, 0n)), { code: 'EIO' });
  t.same(await got, [testDevMsix(5), { kind: 'msix', vector: 5 }], 'the migrated pending vector is not lost');
  t.same(dst.pci.wiredVectors, [3], 'vector 5 is not claimed');
  t.match(thrown(() => dst.pci.checkCanStart()), { reason: 'bad-state' });
  dst.pci.enableInterrupts();
  t.same(dst.pci.wiredVectors, [3, 5]);
  dst.pci.checkCanStart();
});

t.test('a device whose VFIO device was closed under it does not fail the gate', async (t) => {
  const gate = new InterruptGate();
  const a = openEdu(t);
  const b = openEdu(t);
  const pa = new VfioPciDevice(a.device, { interruptGate: gate });
  const pb = new VfioPciDevice(b.device, { interruptGate: gate });
  a.container.close();
  t.doesNotThrow(() => gate.open(), 'hot-unplugged: its container closed its device');
  t.equal(pa.interruptMode, 'none');
  t.equal(pb.interruptMode, 'intx');
});
