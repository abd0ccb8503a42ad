/**
 * A driver's `VFIO_DEVICE_GET_REGION_INFO` reply with its capability chain,
 * laid out as `vfio_pci_ioctl_get_region_info` does it (drivers/vfio/pci/
 * vfio_pci_core.c, 6.12): the CAPS flag whenever there are capabilities,
 * and either the whole chain right after the 32-byte struct or, when argsz
 * is too small, argsz raised to what is needed and `cap_offset` 0.
 */
import { VFIO_REGION_INFO_FLAG_CAPS } from '../vfio/uapi/constants.js';
import { buildCapChain, type CapSpec } from '../vfio/uapi/info.js';
import { decode, encode } from '../vfio/uapi/layout.js';
import { vfio_region_info } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg } from './file.js';

/** One region as a driver describes it. */
export interface SimRegionDescription {
  /** `VFIO_REGION_INFO_FLAG_*` (CAPS is added when `caps` is not empty). */
  readonly flags: number;
  readonly size: number;
  /** The region's offset within the device fd. */
  readonly offset: bigint;
  readonly caps: readonly CapSpec[];
}

/** The request: `copy_from_user` of the 32-byte struct and the `argsz < minsz` check. */
export function regionInfoRequest(arg: IoctlArg): { readonly argsz: number; readonly index: number } {
  const { argsz, index } = decode(vfio_region_info, userBuf(arg, vfio_region_info.size));
  if (argsz < vfio_region_info.size) fail('EINVAL');
  return { argsz, index };
}

/** Writes the reply for region `index`, asked with `argsz`, into `arg`. */
export function answerRegionInfo(arg: IoctlArg, argsz: number, index: number, r: SimRegionDescription): number {
  const minsz = vfio_region_info.size;
  let flags = r.flags;
  let outArgsz = argsz;
  let capOffset = 0;
  if (r.caps.length > 0) {
    const chain = buildCapChain(r.caps, minsz);
    flags |= VFIO_REGION_INFO_FLAG_CAPS;
    if (argsz < minsz + chain.byteLength) outArgsz = minsz + chain.byteLength;
    else {
      userBuf(arg, minsz + chain.byteLength).set(chain, minsz);
      capOffset = minsz;
    }
  }
  encode(vfio_region_info, { argsz: outArgsz, flags, index, cap_offset: capOffset, size: BigInt(r.size), offset: r.offset }, userBuf(arg, minsz));
  return 0;
}
