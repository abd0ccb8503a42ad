/** Waiting for events in tests, with a deadline (interrupts arrive through the event loop). */
import type { EventEmitter } from 'node:events';

/** How long to wait for an interrupt: the test guest is 50-100x slower than the host. */
export const IRQ_WAIT_MS = process.env.VFIO_BACKEND === 'kernel' ? 3000 : 200;

/**
 * The arguments of the next `event` of `emitter`, or undefined when none
 * comes within `ms` milliseconds.
 */
export function nextEvent(emitter: Pick<EventEmitter, 'once' | 'off'>, event: string, ms = IRQ_WAIT_MS): Promise<unknown[] | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      resolve(undefined);
    }, ms);
    const on = (...args: unknown[]): void => {
      clearTimeout(timer);
      resolve(args);
    };
    emitter.once(event, on);
  });
}

/** Collects every `event` of `emitter` for `ms` milliseconds. */
export async function eventsDuring(emitter: Pick<EventEmitter, 'on' | 'off'>, event: string, ms: number): Promise<unknown[][]> {
  const seen: unknown[][] = [];
  const on = (...args: unknown[]): void => {
    seen.push(args);
  };
  emitter.on(event, on);
  await new Promise((r) => setTimeout(r, ms));
  emitter.off(event, on);
  return seen;
}

/** Resolves once `check()` is true, polling every millisecond; false after `ms`. */
export async function until(check: () => boolean, ms = IRQ_WAIT_MS): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return true;
}
