/**
 * `npm run demo`: opens two simulated mtty mdevs through a container and
 * their groups, exactly as it would on a real kernel, and inspects them.
 */
import { SimKernel } from '../lib/sim/kernel.js';
import { addMtty } from '../lib/sim/mtty.js';
import { VfioContainer } from '../lib/vfio/container.js';
import { describeDevice } from './lspci.js';

const sim = new SimKernel();
const uuids = [addMtty(sim, { type: 'mtty-2' }).name, addMtty(sim, { type: 'mtty-1' }).name];

using container = VfioContainer.open({ sys: sim });
for (const uuid of uuids) {
  const device = container.openDevice(uuid);
  console.log(`${describeDevice(device)}\n`);
}
const info = container.iommuInfo();
console.log(`Container: IOMMU type ${container.iommuType}, ${container.groups.size} groups, page sizes 0x${info.iovaPgsizes.toString(16)}, ` +
  `dirty page size ${info.migration?.pgsizeBitmap ?? 'n/a'}, ${info.dmaAvail ?? '?'} DMA mappings left`);
