/**
 * An `lspci -v`-style description of a VFIO device, built only from what
 * VFIO exposes: the config header read through the CONFIG region, the
 * region and IRQ infos, and the migration and DMA-logging features.
 *
 *   npx tsx examples/lspci.ts <sysfs path | PCI address | mdev UUID>...   (real kernel)
 */
import { decodeBars } from '../lib/pci/bar.js';
import { listCapabilities, listExtCapabilities } from '../lib/pci/capabilities.js';
import { decodeConfigHeader } from '../lib/pci/config-space.js';
import { VfioContainer } from '../lib/vfio/container.js';
import type { VfioDevice } from '../lib/vfio/device.js';
import {
  VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
  VFIO_DEVICE_FEATURE_MIG_DATA_SIZE,
  VFIO_IRQ_INFO_AUTOMASKED,
  VFIO_IRQ_INFO_EVENTFD,
  VFIO_IRQ_INFO_MASKABLE,
  VFIO_IRQ_INFO_NORESIZE,
  VFIO_MIGRATION_P2P,
  VFIO_MIGRATION_PRE_COPY,
  VFIO_MIGRATION_STOP_COPY,
  VFIO_PCI_CONFIG_REGION_INDEX,
} from '../lib/vfio/uapi/constants.js';
import { dataView } from '../lib/vfio/uapi/layout.js';

const REGION_NAMES = ['BAR0', 'BAR1', 'BAR2', 'BAR3', 'BAR4', 'BAR5', 'ROM', 'CONFIG', 'VGA'];
const IRQ_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];
const hex = (n: number | bigint, w: number): string => n.toString(16).padStart(w, '0');

function flagList(flags: number, names: readonly (readonly [number, string])[]): string {
  return names.filter(([bit]) => (flags & bit) !== 0).map(([, n]) => n).join(', ') || 'none';
}

/** Describes `device` in the spirit of `lspci -v`. */
export function describeDevice(device: VfioDevice): string {
  const out: string[] = [];
  const cfgRegion = device.region(VFIO_PCI_CONFIG_REGION_INDEX);
  const cfg = cfgRegion.readBytes(0, cfgRegion.size);
  const h = decodeConfigHeader(cfg);
  out.push(
    `${device.name} (${device.group === null ? 'opened through its cdev' : `IOMMU group ${device.group.id}`}): class ${hex(h.baseClass, 2)}${hex(h.subClass, 2)} [prog-if ${hex(h.progIf, 2)}]: ` +
      `${hex(h.vendorId, 4)}:${hex(h.deviceId, 4)} (rev ${hex(h.revisionId, 2)})`,
  );
  out.push(`\tSubsystem: ${hex(h.subsystemVendorId, 4)}:${hex(h.subsystemId, 4)}`);
  out.push(`\tControl: command ${hex(h.command, 4)}, status ${hex(h.status, 4)}; interrupt pin ${h.interruptPin ? 'ABCD'[h.interruptPin - 1] : 'none'}`);
  const bars = decodeBars(cfg);
  for (const r of device.regions()) {
    if (r.size === 0) continue;
    const name = REGION_NAMES[r.index] ?? `region ${r.index}`;
    const bar = r.index < 6 ? bars[r.index] : undefined;
    const kind = bar === undefined ? '' : bar.kind === 'io' ? 'I/O ports' : `memory (${bar.kind === 'mem64' ? '64-bit' : '32-bit'}${'prefetchable' in bar && bar.prefetchable ? ', prefetchable' : ''})`;
    const access = `${r.readable ? 'R' : ''}${r.writable ? 'W' : ''}${r.mmappable ? ' mmap' : ''}`;
    const extra = [
      r.info.sparse ? `sparse mmap: ${r.info.sparse.map((a) => `[${hex(a.offset, 1)}+${hex(a.size, 1)}]`).join(' ')}` : '',
      r.info.type ? `type ${hex(r.info.type.type, 8)}/${r.info.type.subtype}` : '',
      r.info.msixMappable ? 'MSI-X mappable' : '',
    ].filter(Boolean);
    out.push(`\t${name}: ${kind ? `${kind}, ` : ''}size=${r.size} [${access}] at fd offset 0x${hex(r.info.offset, 1)}${extra.length ? `; ${extra.join('; ')}` : ''}`);
  }
  if (h.hasCapabilityList) {
    for (const c of listCapabilities(cfg)) out.push(`\tCapabilities: [${hex(c.offset, 2)}] id ${hex(c.id, 2)}`);
    if (cfg.byteLength > 256) for (const c of listExtCapabilities(cfg)) out.push(`\tCapabilities: [${hex(c.offset, 3)}] extended id ${hex(c.id, 4)} v${c.version}`);
  }
  for (let i = 0; i < device.info.numIrqs; i++) {
    const name = IRQ_NAMES[i] ?? `irq ${i}`;
    try {
      const irq = device.irqInfo(i);
      const flags = flagList(irq.flags, [
        [VFIO_IRQ_INFO_EVENTFD, 'eventfd'],
        [VFIO_IRQ_INFO_MASKABLE, 'maskable'],
        [VFIO_IRQ_INFO_AUTOMASKED, 'automasked'],
        [VFIO_IRQ_INFO_NORESIZE, 'noresize'],
      ]);
      out.push(`\tIRQ ${name}: ${irq.count} vector${irq.count === 1 ? '' : 's'} [${flags}]`);
    } catch (e) {
      out.push(`\tIRQ ${name}: not supported (${e instanceof Error && 'code' in e ? String(e.code) : 'error'})`);
    }
  }
  const mig = device.migrationFlags();
  if (mig === 0) out.push('\tMigration: not supported');
  else {
    const size = dataView(device.featureGet(VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, 8)).getBigUint64(0, true);
    const states = flagList(mig, [
      [VFIO_MIGRATION_STOP_COPY, 'STOP_COPY'],
      [VFIO_MIGRATION_P2P, 'P2P'],
      [VFIO_MIGRATION_PRE_COPY, 'PRE_COPY'],
    ]);
    out.push(`\tMigration: v2 [${states}], stop-copy estimate ${size} bytes`);
  }
  out.push(`\tDMA logging: ${device.featureProbe(VFIO_DEVICE_FEATURE_DMA_LOGGING_START) ? 'supported' : 'not supported'}`);
  out.push('\tConfig space:');
  for (let off = 0; off < Math.min(cfg.byteLength, 64); off += 16) {
    out.push(`\t  ${hex(off, 2)}: ${[...cfg.subarray(off, off + 16)].map((b) => hex(b, 2)).join(' ')}`);
  }
  return out.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  using container = VfioContainer.open();
  for (const spec of process.argv.slice(2)) console.log(`${describeDevice(container.openDevice(spec))}\n`);
}
