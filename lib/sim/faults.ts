/**
 * Fault injection for the simulated kernel: make the Nth matching system
 * call fail with a chosen errno, before the simulated kernel sees it.
 */
import { Errno, type ErrnoName } from '../sys/errno.js';

/** The system calls of `Sys` that go through the simulated kernel. */
export type SimSyscall = 'open' | 'ioctl' | 'read' | 'write' | 'pread' | 'pwrite' | 'mmap' | 'eventfd' | 'close';

/** One fault: which calls it matches, which one of them fails, and how. */
export interface FaultRule {
  syscall: SimSyscall;
  /** For ioctls: the request number to match (any when omitted). */
  request?: number;
  /** Only calls on files of this kind (`'container'`, `'group'`, `'device'`, `'migration'`, ...). */
  fdKind?: string;
  /** Only calls on files with this label (a device name, a group, a path). */
  label?: string;
  /** Which matching call fails, counting from 1 after the rule is added. */
  nth: number;
  /** The errno to fail with. */
  errno: ErrnoName | number;
  /** How many consecutive matching calls fail from the Nth on (default 1). */
  times?: number;
}

/** What a call looks like to the matcher. */
export interface CallSite {
  readonly syscall: SimSyscall;
  readonly request?: number;
  readonly fdKind?: string;
  readonly label?: string;
}

interface Armed {
  readonly rule: FaultRule;
  seen: number;
  fired: number;
}

/** The set of armed faults of one simulated kernel. */
export class FaultInjector {
  readonly #armed: Armed[] = [];

  /** Arms a fault; returns a function that disarms it. */
  inject(rule: FaultRule): () => void {
    if (!Number.isInteger(rule.nth) || rule.nth < 1) throw new RangeError(`nth must be an integer >= 1, got ${rule.nth}`);
    const armed: Armed = { rule, seen: 0, fired: 0 };
    this.#armed.push(armed);
    return () => {
      const i = this.#armed.indexOf(armed);
      if (i >= 0) this.#armed.splice(i, 1);
    };
  }

  /** Disarms every fault. */
  clear(): void {
    this.#armed.length = 0;
  }

  /** How many armed faults have not fired all their times yet. */
  get pending(): number {
    return this.#armed.filter((a) => a.fired < (a.rule.times ?? 1)).length;
  }

  /** Counts `call` against every matching rule; returns the errno to fail with, if one fires. */
  check(call: CallSite): number | undefined {
    let errno: number | undefined;
    for (const a of this.#armed) {
      const r = a.rule;
      if (r.syscall !== call.syscall) continue;
      if (r.request !== undefined && r.request !== call.request) continue;
      if (r.fdKind !== undefined && r.fdKind !== call.fdKind) continue;
      if (r.label !== undefined && r.label !== call.label) continue;
      a.seen++;
      if (a.seen >= r.nth && a.fired < (r.times ?? 1)) {
        a.fired++;
        errno ??= typeof r.errno === 'number' ? r.errno : Errno[r.errno];
      }
    }
    return errno;
  }
}
