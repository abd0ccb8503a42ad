/** PciConfig (lib/pci/config-access.ts): typed access to the CONFIG region, on the simulated edu and test function. */
import t from 'tap';
import { VfioArgumentError } from '../lib/errors.js';
import { PciConfig } from '../lib/pci/config-access.js';
import { PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX, PCI_EXT_CAP_ID_DSN } from '../lib/pci/regs.js';
import { thrown } from './helpers/expect.js';
import { openEdu, openTestDev } from './helpers/sim-pci.js';

t.test('registers, header and capabilities', async (t) => {
  const cfg = new PciConfig(openEdu(t).device.region(7));
  t.equal(cfg.size, 256);
  t.equal(cfg.read32(0), 0x11e81234);
  t.equal(cfg.read16(2), 0x11e8);
  t.equal(cfg.read8(8), 0x10);
  cfg.write8(0x3c, 0x0a);
  t.equal(cfg.read(0x3c, 1), 0x0a);
  cfg.write16(0x3c, 0x010b);
  t.equal(cfg.read16(0x3c), 0x010b, 'the pin half is read-only and already 1');
  cfg.write32(0x3c, 0x0000010c);
  t.equal(cfg.read8(0x3c), 0x0c);
  t.equal(cfg.header().vendorId, 0x1234);
  t.same(cfg.capabilities(), [{ id: PCI_CAP_ID_MSI, offset: 0x40, next: 0 }]);
  t.same(cfg.capability(PCI_CAP_ID_MSI), { id: PCI_CAP_ID_MSI, offset: 0x40, next: 0 });
  t.equal(cfg.capability(PCI_CAP_ID_MSIX), undefined);
  t.same(cfg.extCapabilities(), [], 'conventional PCI');
  t.equal(cfg.image().byteLength, 256);
  for (const [offset, width] of [
    [256, 1],
    [254, 4],
    [-1, 1],
    [1.5, 1],
  ] as const) {
    t.type(thrown(() => cfg.read(offset, width)), VfioArgumentError, `read of ${width} at ${offset}`);
  }
  t.type(thrown(() => cfg.write(0, 3 as 1, 0)), VfioArgumentError, 'width 3');

  const pcie = new PciConfig(openTestDev(t).device.region(7));
  t.same(pcie.extCapability(PCI_EXT_CAP_ID_DSN), { id: PCI_EXT_CAP_ID_DSN, version: 1, offset: 0x148, next: 0x160 });
  t.equal(pcie.extCapabilities().length, 4);
});
