/**
 * Typed decoding of a PCI configuration image: bounds-checked little-endian
 * accessors and the type 0 (endpoint) header. Images come from a device
 * through the VFIO CONFIG region or from a migration stream, so every read is
 * checked against the image's length; mtty's region is only 255 bytes.
 */
import { ConfigSpaceError } from '../errors.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BIST,
  PCI_CACHE_LINE_SIZE,
  PCI_CAPABILITY_LIST,
  PCI_CARDBUS_CIS,
  PCI_CLASS_DEVICE,
  PCI_CLASS_PROG,
  PCI_COMMAND,
  PCI_DEVICE_ID,
  PCI_HEADER_TYPE,
  PCI_HEADER_TYPE_MASK,
  PCI_HEADER_TYPE_MFD,
  PCI_HEADER_TYPE_NORMAL,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_LATENCY_TIMER,
  PCI_MAX_LAT,
  PCI_MIN_GNT,
  PCI_REVISION_ID,
  PCI_ROM_ADDRESS,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STD_HEADER_SIZEOF,
  PCI_STD_NUM_BARS,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
} from './regs.js';

function view(image: Uint8Array): DataView {
  return new DataView(image.buffer, image.byteOffset, image.byteLength);
}

function checkRead(image: Uint8Array, offset: number, size: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + size > image.byteLength) {
    throw new ConfigSpaceError('config space', `a ${size}-byte read lies outside the ${image.byteLength}-byte image`, offset);
  }
}

/**
 * Reads the byte at `offset`.
 * @throws ConfigSpaceError when `offset` is outside the image.
 */
export function configRead8(image: Uint8Array, offset: number): number {
  checkRead(image, offset, 1);
  return view(image).getUint8(offset);
}

/**
 * Reads the little-endian 16-bit register at `offset`.
 * @throws ConfigSpaceError when the register is not wholly inside the image.
 */
export function configRead16(image: Uint8Array, offset: number): number {
  checkRead(image, offset, 2);
  return view(image).getUint16(offset, true);
}

/**
 * Reads the little-endian 32-bit register at `offset`, as an unsigned number.
 * @throws ConfigSpaceError when the register is not wholly inside the image.
 */
export function configRead32(image: Uint8Array, offset: number): number {
  checkRead(image, offset, 4);
  return view(image).getUint32(offset, true);
}

/** The type 0 configuration header (offsets 0x00-0x3f), field by field. */
export interface ConfigHeader {
  readonly vendorId: number;
  readonly deviceId: number;
  readonly command: number;
  readonly status: number;
  readonly revisionId: number;
  /** The 24-bit class code: base class, sub-class, programming interface. */
  readonly classCode: number;
  readonly baseClass: number;
  readonly subClass: number;
  readonly progIf: number;
  readonly cacheLineSize: number;
  readonly latencyTimer: number;
  /** The header layout (`PCI_HEADER_TYPE & 0x7f`); always `PCI_HEADER_TYPE_NORMAL` here. */
  readonly headerType: number;
  /** Bit 7 of the header type register. */
  readonly multiFunction: boolean;
  readonly bist: number;
  /** The six BAR registers as raw dwords; decode them with `decodeBars` from `bar.ts`. */
  readonly bars: readonly number[];
  readonly cardbusCis: number;
  readonly subsystemVendorId: number;
  readonly subsystemId: number;
  /** The expansion ROM BAR as a raw dword. */
  readonly romAddress: number;
  /** `PCI_STATUS_CAP_LIST`: without it the capabilities pointer means nothing. */
  readonly hasCapabilityList: boolean;
  /** The raw capabilities pointer byte (its low two bits are reserved). */
  readonly capabilitiesPointer: number;
  readonly interruptLine: number;
  /** 0 for none, 1-4 for INTA-INTD. */
  readonly interruptPin: number;
  readonly minGnt: number;
  readonly maxLat: number;
}

/**
 * Decodes the type 0 header of a config image.
 * @throws ConfigSpaceError when the image is shorter than the 64-byte header
 *   or its header type is not 0 (a bridge or CardBus header).
 */
export function decodeConfigHeader(image: Uint8Array): ConfigHeader {
  if (image.byteLength < PCI_STD_HEADER_SIZEOF) {
    throw new ConfigSpaceError('config header', `the image has ${image.byteLength} bytes, the header needs ${PCI_STD_HEADER_SIZEOF}`, image.byteLength);
  }
  const headerTypeReg = configRead8(image, PCI_HEADER_TYPE);
  const headerType = headerTypeReg & PCI_HEADER_TYPE_MASK;
  if (headerType !== PCI_HEADER_TYPE_NORMAL) {
    throw new ConfigSpaceError('config header', `header type ${headerType} is not a type 0 (endpoint) header`, PCI_HEADER_TYPE);
  }
  const baseClass = configRead8(image, PCI_CLASS_DEVICE + 1);
  const subClass = configRead8(image, PCI_CLASS_DEVICE);
  const progIf = configRead8(image, PCI_CLASS_PROG);
  const status = configRead16(image, PCI_STATUS);
  const bars: number[] = [];
  for (let i = 0; i < PCI_STD_NUM_BARS; i++) bars.push(configRead32(image, PCI_BASE_ADDRESS_0 + 4 * i));
  return {
    vendorId: configRead16(image, PCI_VENDOR_ID),
    deviceId: configRead16(image, PCI_DEVICE_ID),
    command: configRead16(image, PCI_COMMAND),
    status,
    revisionId: configRead8(image, PCI_REVISION_ID),
    classCode: (baseClass << 16) | (subClass << 8) | progIf,
    baseClass,
    subClass,
    progIf,
    cacheLineSize: configRead8(image, PCI_CACHE_LINE_SIZE),
    latencyTimer: configRead8(image, PCI_LATENCY_TIMER),
    headerType,
    multiFunction: (headerTypeReg & PCI_HEADER_TYPE_MFD) !== 0,
    bist: configRead8(image, PCI_BIST),
    bars,
    cardbusCis: configRead32(image, PCI_CARDBUS_CIS),
    subsystemVendorId: configRead16(image, PCI_SUBSYSTEM_VENDOR_ID),
    subsystemId: configRead16(image, PCI_SUBSYSTEM_ID),
    romAddress: configRead32(image, PCI_ROM_ADDRESS),
    hasCapabilityList: (status & PCI_STATUS_CAP_LIST) !== 0,
    capabilitiesPointer: configRead8(image, PCI_CAPABILITY_LIST),
    interruptLine: configRead8(image, PCI_INTERRUPT_LINE),
    interruptPin: configRead8(image, PCI_INTERRUPT_PIN),
    minGnt: configRead8(image, PCI_MIN_GNT),
    maxLat: configRead8(image, PCI_MAX_LAT),
  };
}
