/**
 * The vfio core's SET_IRQS argument check that drivers call
 * (`vfio_set_irqs_validate_and_prepare`, drivers/vfio/vfio_main.c, 6.12),
 * plus the driver-side copy of the data that follows the header.
 */
import {
  VFIO_IRQ_SET_ACTION_TYPE_MASK,
  VFIO_IRQ_SET_DATA_BOOL,
  VFIO_IRQ_SET_DATA_EVENTFD,
  VFIO_IRQ_SET_DATA_NONE,
  VFIO_IRQ_SET_DATA_TYPE_MASK,
} from '../vfio/uapi/constants.js';
import { decode, type Decoded } from '../vfio/uapi/layout.js';
import { vfio_irq_set } from '../vfio/uapi/structs.js';
import { fail, userBuf } from './errno.js';
import type { IoctlArg } from './file.js';

const U32_MAX = 0xffff_ffff;
/** `offsetofend(struct vfio_irq_set, count)`. */
const MINSZ = vfio_irq_set.size;

/** A SET_IRQS request as a driver sees it after validation. */
export interface IrqSetRequest {
  readonly hdr: Decoded<typeof vfio_irq_set>;
  /** The `count` u8s or s32s after the header (empty for DATA_NONE). */
  readonly data: Uint8Array;
}

/**
 * `vfio_set_irqs_validate_and_prepare`; returns the data size in bytes.
 * `numIrqs` bounds `start + count` (drivers pass their IRQ *index* count,
 * mtty its cached `dev_info.num_irqs`).
 */
export function setIrqsValidateAndPrepare(hdr: Decoded<typeof vfio_irq_set>, numIrqs: number, maxIrqType: number): number {
  if (
    hdr.argsz < MINSZ ||
    hdr.index >= maxIrqType ||
    hdr.count >= U32_MAX - hdr.start ||
    (hdr.flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK)) !== 0
  ) {
    fail('EINVAL');
  }
  if (hdr.start >= numIrqs || hdr.start + hdr.count > numIrqs) fail('EINVAL');
  let size: number;
  switch (hdr.flags & VFIO_IRQ_SET_DATA_TYPE_MASK) {
    case VFIO_IRQ_SET_DATA_NONE:
      size = 0;
      break;
    case VFIO_IRQ_SET_DATA_BOOL:
      size = 1;
      break;
    case VFIO_IRQ_SET_DATA_EVENTFD:
      size = 4;
      break;
    default:
      fail('EINVAL');
  }
  if (size !== 0 && hdr.argsz - MINSZ < hdr.count * size) fail('EINVAL');
  return hdr.count * size;
}

/**
 * The SET_IRQS preamble of a driver's ioctl: copy the header in, validate it,
 * then `memdup_user` the data (EFAULT when the buffer is shorter than it).
 */
export function readIrqSet(arg: IoctlArg, numIrqs: number, maxIrqType: number): IrqSetRequest {
  const hdr = decode(vfio_irq_set, userBuf(arg, MINSZ));
  const dataSize = setIrqsValidateAndPrepare(hdr, numIrqs, maxIrqType);
  const data = userBuf(arg, MINSZ + dataSize).slice(MINSZ, MINSZ + dataSize);
  return { hdr, data };
}
