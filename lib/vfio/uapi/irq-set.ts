/**
 * `struct vfio_irq_set` arguments for VFIO_DEVICE_SET_IRQS: the 20-byte header
 * followed by no data, one u8 per vector (DATA_BOOL) or one s32 fd per vector
 * (DATA_EVENTFD, -1 de-assigns).
 */
import { VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE } from './constants.js';
import { dataView, encode } from './layout.js';
import { vfio_irq_set } from './structs.js';

const HEADER = vfio_irq_set.size;

function header(argsz: number, flags: number, index: number, start: number, count: number): Uint8Array {
  return encode(vfio_irq_set, { argsz, flags, index, start, count }, new Uint8Array(argsz));
}

/** DATA_NONE with `action` (ACTION_TRIGGER with count 0 disables the whole index). */
export function irqSetNone(action: number, index: number, start: number, count: number): Uint8Array {
  return header(HEADER, VFIO_IRQ_SET_DATA_NONE | action, index, start, count);
}

/** DATA_BOOL with `action`: one byte per vector from `start`. */
export function irqSetBool(action: number, index: number, start: number, values: readonly boolean[]): Uint8Array {
  const buf = header(HEADER + values.length, VFIO_IRQ_SET_DATA_BOOL | action, index, start, values.length);
  values.forEach((v, i) => (buf[HEADER + i] = v ? 1 : 0));
  return buf;
}

/** DATA_EVENTFD with `action`: one fd per vector from `start` (-1 de-assigns that vector). */
export function irqSetEventfd(action: number, index: number, start: number, fds: readonly number[]): Uint8Array {
  const bad = fds.find((fd) => !Number.isInteger(fd) || fd < -(2 ** 31) || fd >= 2 ** 31);
  // setInt32 would wrap it into some other fd number.
  if (bad !== undefined) throw new RangeError(`vfio_irq_set: eventfd ${bad} is not an s32`);
  const buf = header(HEADER + 4 * fds.length, VFIO_IRQ_SET_DATA_EVENTFD | action, index, start, fds.length);
  const dv = dataView(buf);
  fds.forEach((fd, i) => dv.setInt32(HEADER + 4 * i, fd, true));
  return buf;
}
