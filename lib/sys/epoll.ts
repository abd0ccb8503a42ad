/**
 * `epoll(7)` constants and `struct epoll_event` encoding, shared by the fd
 * probe of the uv_poll watcher and by the epoll worker.
 */
import { check, epollCtl } from './libc-bindings.js';

export const EPOLL_CLOEXEC = 0o2000000;
export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x1;
export const EPOLLONESHOT = 1 << 30;

/** `sizeof(struct epoll_event)`: the struct is packed on x86_64 only. */
export const EPOLL_EVENT_SIZE = process.arch === 'x64' ? 12 : 16;
/** Offset of `epoll_data_t data` in `struct epoll_event`. */
export const EPOLL_DATA_OFFSET = process.arch === 'x64' ? 4 : 8;

/** A `struct epoll_event` whose `data` carries `id` (a u32, in the low half of the union). */
export function epollEvent(events: number, id: number): Uint8Array {
  const buf = new Uint8Array(EPOLL_EVENT_SIZE);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, events >>> 0, true);
  dv.setUint32(EPOLL_DATA_OFFSET, id, true);
  return buf;
}

/** `epoll_ctl(2)`; throws a `VfioSystemError` on failure. */
export function epollControl(epfd: number, op: number, fd: number, event: Uint8Array | null): void {
  check(epollCtl(epfd, op, fd, event), 'epoll_ctl');
}
