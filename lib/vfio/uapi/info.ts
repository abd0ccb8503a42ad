/**
 * Typed decoders (and, for the simulated kernel, encoders) of the INFO
 * replies: device, region, IRQ and type1 IOMMU info with their capabilities.
 */
import { UapiFormatError } from '../../errors.js';
import { CAP_ALIGN, requireCapBytes, walkCapChain, type CapEntry } from './caps.js';
import {
  VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP,
  VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
  VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
  VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
  VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
  VFIO_REGION_INFO_CAP_SPARSE_MMAP,
  VFIO_REGION_INFO_CAP_TYPE,
} from './constants.js';
import { dataView, decode } from './layout.js';
import {
  vfio_device_info,
  vfio_iommu_type1_info,
  vfio_iommu_type1_info_cap_iova_range,
  vfio_iommu_type1_info_cap_migration,
  vfio_irq_info,
  vfio_region_info,
  vfio_region_info_cap_sparse_mmap,
} from './structs.js';

/** A number read from a u64 field that must be usable as a JS number (a size or an offset in memory). */
export function safeNumber(v: bigint, what: string, struct: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new UapiFormatError(`${what} ${v} is too large`, struct);
  return Number(v);
}

/** A capability the decoder does not interpret: id, version and its raw bytes (header included). */
export interface RawCap {
  readonly id: number;
  readonly version: number;
  readonly bytes: Uint8Array;
}

function rawCap(buf: Uint8Array, c: CapEntry): RawCap {
  return { id: c.id, version: c.version, bytes: buf.slice(c.offset, c.end) };
}

// ---------------------------------------------------------------- device info

/** `VFIO_DEVICE_GET_INFO`, decoded. */
export interface DeviceInfo {
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
  /** `VFIO_PCI_ATOMIC_COMP*` flags from the PCI_ATOMIC_COMP capability, when present. */
  readonly atomicComp?: number;
  /** Capabilities not interpreted here (zPCI and future ones). */
  readonly otherCaps: readonly RawCap[];
}

export function decodeDeviceInfo(buf: Uint8Array): DeviceInfo {
  const d = decode(vfio_device_info, buf);
  let atomicComp: number | undefined;
  const otherCaps: RawCap[] = [];
  for (const c of walkCapChain(buf, d.cap_offset, vfio_device_info.size, 'vfio_device_info')) {
    if (c.id === VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP) {
      requireCapBytes(c, 12, 'vfio_device_info_cap_pci_atomic_comp');
      atomicComp = dataView(buf).getUint32(c.offset + 8, true);
    } else otherCaps.push(rawCap(buf, c));
  }
  return { flags: d.flags, numRegions: d.num_regions, numIrqs: d.num_irqs, ...(atomicComp === undefined ? {} : { atomicComp }), otherCaps };
}

// ---------------------------------------------------------------- region info

/** One mmap-able area of a region (offsets relative to the region). */
export interface SparseArea {
  readonly offset: number;
  readonly size: number;
}

/** `VFIO_DEVICE_GET_REGION_INFO`, decoded with its capabilities. */
export interface RegionInfo {
  readonly index: number;
  readonly flags: number;
  /** Region size in bytes; 0 means the region is not implemented. */
  readonly size: number;
  /** The region's offset within the device fd (for pread/pwrite/mmap). */
  readonly offset: bigint;
  /** The SPARSE_MMAP areas: only these may be mmapped. Absent when the region has no such capability. */
  readonly sparse?: readonly SparseArea[];
  /** The TYPE capability (device-specific regions). */
  readonly type?: { readonly type: number; readonly subtype: number };
  /** MSIX_MAPPABLE: the BAR holding the MSI-X table may be mmapped whole. */
  readonly msixMappable: boolean;
  /** Capabilities not interpreted here, in chain order. */
  readonly otherCaps: readonly RawCap[];
}

/** Decodes the areas of a sparse-mmap-shaped capability (also used by extensions with the same body). */
export function decodeSparseAreas(buf: Uint8Array, c: CapEntry, regionSize: number): SparseArea[] {
  const struct = vfio_region_info_cap_sparse_mmap.name;
  requireCapBytes(c, 16, struct);
  const dv = dataView(buf);
  const n = dv.getUint32(c.offset + 8, true);
  requireCapBytes(c, 16 + 16 * n, struct);
  const areas: SparseArea[] = [];
  for (let i = 0; i < n; i++) {
    const at = c.offset + 16 + 16 * i;
    const offset = dv.getBigUint64(at, true);
    const size = dv.getBigUint64(at + 8, true);
    if (offset + size > BigInt(regionSize)) {
      throw new UapiFormatError(`area ${i} [${offset}, +${size}) lies outside the ${regionSize}-byte region`, struct, at);
    }
    areas.push({ offset: Number(offset), size: Number(size) });
  }
  return areas;
}

export function decodeRegionInfo(buf: Uint8Array): RegionInfo {
  const r = decode(vfio_region_info, buf);
  const size = safeNumber(r.size, 'region size', vfio_region_info.name);
  let sparse: SparseArea[] | undefined;
  let type: { type: number; subtype: number } | undefined;
  let msixMappable = false;
  const otherCaps: RawCap[] = [];
  for (const c of walkCapChain(buf, r.cap_offset, vfio_region_info.size, vfio_region_info.name)) {
    // QEMU's vfio_setup_region_sparse_mmaps skips empty areas: there is nothing to map, and mmap(2) refuses length 0.
    if (c.id === VFIO_REGION_INFO_CAP_SPARSE_MMAP) sparse = decodeSparseAreas(buf, c, size).filter((a) => a.size > 0);
    else if (c.id === VFIO_REGION_INFO_CAP_TYPE) {
      requireCapBytes(c, 16, 'vfio_region_info_cap_type');
      const dv = dataView(buf);
      type = { type: dv.getUint32(c.offset + 8, true), subtype: dv.getUint32(c.offset + 12, true) };
    } else if (c.id === VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) msixMappable = true;
    else otherCaps.push(rawCap(buf, c));
  }
  return {
    index: r.index,
    flags: r.flags,
    size,
    offset: r.offset,
    ...(sparse ? { sparse } : {}),
    ...(type ? { type } : {}),
    msixMappable,
    otherCaps,
  };
}

// ---------------------------------------------------------------- irq info

/** `VFIO_DEVICE_GET_IRQ_INFO`, decoded. */
export interface IrqInfo {
  readonly index: number;
  readonly flags: number;
  readonly count: number;
}

export function decodeIrqInfo(buf: Uint8Array): IrqInfo {
  const i = decode(vfio_irq_info, buf);
  return { index: i.index, flags: i.flags, count: i.count };
}

// ---------------------------------------------------------------- type1 iommu info

/** An inclusive IOVA range. */
export interface IovaRange {
  readonly start: bigint;
  readonly end: bigint;
}

/** The type1 MIGRATION capability: what dirty tracking needs. */
export interface Type1MigrationCap {
  readonly flags: number;
  /** The smallest IOMMU page size (a single bit). */
  readonly pgsizeBitmap: bigint;
  /** Largest bitmap one GET_BITMAP query may fill, in bytes. */
  readonly maxDirtyBitmapSize: bigint;
}

/** `VFIO_IOMMU_GET_INFO`, decoded. */
export interface IommuInfo {
  readonly flags: number;
  readonly iovaPgsizes: bigint;
  readonly iovaRanges?: readonly IovaRange[];
  readonly migration?: Type1MigrationCap;
  readonly dmaAvail?: number;
  readonly otherCaps: readonly RawCap[];
}

export function decodeIommuInfo(buf: Uint8Array): IommuInfo {
  const s = vfio_iommu_type1_info.name;
  const info = decode(vfio_iommu_type1_info, buf);
  const dv = dataView(buf);
  let iovaRanges: IovaRange[] | undefined;
  let migration: Type1MigrationCap | undefined;
  let dmaAvail: number | undefined;
  const otherCaps: RawCap[] = [];
  for (const c of walkCapChain(buf, info.cap_offset, vfio_iommu_type1_info.size, s)) {
    if (c.id === VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE) {
      requireCapBytes(c, 16, vfio_iommu_type1_info_cap_iova_range.name);
      const n = dv.getUint32(c.offset + 8, true);
      requireCapBytes(c, 16 + 16 * n, vfio_iommu_type1_info_cap_iova_range.name);
      iovaRanges = [];
      for (let i = 0; i < n; i++) {
        const at = c.offset + 16 + 16 * i;
        iovaRanges.push({ start: dv.getBigUint64(at, true), end: dv.getBigUint64(at + 8, true) });
      }
    } else if (c.id === VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION) {
      requireCapBytes(c, vfio_iommu_type1_info_cap_migration.size, vfio_iommu_type1_info_cap_migration.name);
      migration = {
        flags: dv.getUint32(c.offset + 8, true),
        pgsizeBitmap: dv.getBigUint64(c.offset + 16, true),
        maxDirtyBitmapSize: dv.getBigUint64(c.offset + 24, true),
      };
    } else if (c.id === VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL) {
      requireCapBytes(c, 12, 'vfio_iommu_type1_info_dma_avail');
      dmaAvail = dv.getUint32(c.offset + 8, true);
    } else otherCaps.push(rawCap(buf, c));
  }
  return {
    flags: info.flags,
    iovaPgsizes: info.iova_pgsizes,
    ...(iovaRanges ? { iovaRanges } : {}),
    ...(migration ? { migration } : {}),
    ...(dmaAvail === undefined ? {} : { dmaAvail }),
    otherCaps,
  };
}

// ---------------------------------------------------------------- building chains (simulated kernel)

/** A capability to append: its id, version and body (the bytes after the 8-byte header). */
export interface CapSpec {
  readonly id: number;
  readonly version: number;
  readonly body: Uint8Array;
}

/**
 * Lays out a chain the way the kernel does (`vfio_info_cap_add` +
 * `vfio_info_cap_shift`): each capability padded to 8 bytes, appended in
 * order, `next` absolute from the start of a buffer whose fixed part is
 * `fixedSize` bytes.
 */
export function buildCapChain(caps: readonly CapSpec[], fixedSize: number): Uint8Array {
  const sizes = caps.map((c) => Math.ceil((8 + c.body.byteLength) / CAP_ALIGN) * CAP_ALIGN);
  const out = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  const dv = dataView(out);
  let at = 0;
  caps.forEach((c, i) => {
    const size = sizes[i] ?? 0;
    dv.setUint16(at, c.id, true);
    dv.setUint16(at + 2, c.version, true);
    dv.setUint32(at + 4, i + 1 < caps.length ? fixedSize + at + size : 0, true);
    out.set(c.body, at + 8);
    at += size;
  });
  return out;
}
