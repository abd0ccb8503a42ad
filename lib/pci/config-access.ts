/**
 * Typed access to a device's PCI config space through its VFIO CONFIG
 * region: register reads and writes of 1, 2 or 4 bytes, the whole image, the
 * decoded header, and the standard and extended capability lists (walked
 * with the bounds and loop checks of `capabilities.ts`, since what the
 * kernel or a vendor driver returns is untrusted).
 */
import { VfioArgumentError } from '../errors.js';
import type { Region } from '../vfio/region.js';
import { findCapability, findExtCapability, listCapabilities, listExtCapabilities, type PciCapability, type PciExtCapability } from './capabilities.js';
import { decodeConfigHeader, type ConfigHeader } from './config-space.js';

/** A config register width. */
export type ConfigWidth = 1 | 2 | 4;

export class PciConfig {
  constructor(
    /** The CONFIG region (index 7 on vfio-pci). */
    readonly region: Region,
  ) {}

  /** The region's size: 256 for conventional PCI, 4096 for PCI Express (mtty: 255). */
  get size(): number {
    return this.region.size;
  }

  /**
   * Reads the `width`-byte register at `offset`.
   * @throws VfioArgumentError outside the region or for a bad width; VfioSystemError from the kernel.
   */
  read(offset: number, width: ConfigWidth): number {
    this.checkAccess(offset, width);
    if (width === 1) return this.region.read8(offset);
    if (width === 2) return this.region.read16(offset);
    return this.region.read32(offset);
  }

  /**
   * Writes the `width`-byte register at `offset` (the kernel keeps what it
   * virtualizes and passes the rest to the device).
   */
  write(offset: number, width: ConfigWidth, value: number): void {
    this.checkAccess(offset, width);
    if (width === 1) this.region.write8(offset, value & 0xff);
    else if (width === 2) this.region.write16(offset, value & 0xffff);
    else this.region.write32(offset, value >>> 0);
  }

  read8(offset: number): number {
    return this.read(offset, 1);
  }
  read16(offset: number): number {
    return this.read(offset, 2);
  }
  read32(offset: number): number {
    return this.read(offset, 4);
  }
  write8(offset: number, value: number): void {
    this.write(offset, 1, value);
  }
  write16(offset: number, value: number): void {
    this.write(offset, 2, value);
  }
  write32(offset: number, value: number): void {
    this.write(offset, 4, value);
  }

  /** The whole config space as the kernel shows it now (one read). */
  image(): Uint8Array {
    return this.region.readBytes(0, this.size);
  }

  /** The decoded type 0 header. @throws ConfigSpaceError for a short image or another header type. */
  header(): ConfigHeader {
    return decodeConfigHeader(this.region.readBytes(0, Math.min(this.size, 64)));
  }

  /** The standard capability list. @throws ConfigSpaceError for a malformed list. */
  capabilities(): PciCapability[] {
    return listCapabilities(this.image());
  }

  /** The extended capability list (empty for conventional PCI). @throws ConfigSpaceError for a malformed list. */
  extCapabilities(): PciExtCapability[] {
    return listExtCapabilities(this.image());
  }

  /** The first standard capability with `id`. */
  capability(id: number): PciCapability | undefined {
    return findCapability(this.image(), id);
  }

  /** The first extended capability with `id`. */
  extCapability(id: number): PciExtCapability | undefined {
    return findExtCapability(this.image(), id);
  }

  /**
   * Refuses an access the region cannot take, before any system call.
   * @throws VfioArgumentError for a width other than 1, 2 or 4, or bytes outside the region
   */
  checkAccess(offset: number, width: number): void {
    if (width !== 1 && width !== 2 && width !== 4) throw new VfioArgumentError('config access', `width ${width} is not 1, 2 or 4`);
    if (!Number.isInteger(offset) || offset < 0 || offset + width > this.size) {
      throw new VfioArgumentError('config access', `a ${width}-byte access at ${offset} lies outside the ${this.size}-byte config space`);
    }
  }
}
