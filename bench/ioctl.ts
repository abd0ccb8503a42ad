/**
 * The cost of one ioctl through LibcSys.ioctl (koffi) against the same loop
 * in C (bench/c/ioctl.c, compiled with gcc -O2 in the same run):
 *
 * - success, Uint8Array arg: FIONREAD on a FIFO holding 5 bytes (the kernel writes an int in place);
 * - success, number arg: the same call with the pointer passed as a number (the `unsigned long` alias);
 * - failure: TCGETS on /dev/null, which fails with ENOTTY; JS builds and catches a VfioSystemError;
 * - the same failure with `Error.stackTraceLimit = 0`, to show how much of it is V8 capturing the stack.
 *
 * C and JS take turns over several rounds (the machine is noisy); each figure
 * is the median over rounds. Timings are reported, never asserted.
 *
 *   npx tsx bench/ioctl.ts [--iterations N] [--rounds N]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VfioSystemError } from '../lib/errors.js';
import { LibcSys } from '../lib/sys/libc.js';
import { O_CLOEXEC, O_RDWR } from '../lib/sys/sys.js';

const FIONREAD = 0x541b;
const TCGETS = 0x5401;
const ENOTTY = 25;

export interface IoctlBenchOptions {
  /** Calls per timed loop on the success paths (default 1e6). */
  iterations?: number;
  /** Calls per timed loop on the failure path (default iterations / 5: each builds an Error). */
  failureIterations?: number;
  /** Rounds, C and JS alternating (default 3). */
  rounds?: number;
  /** Progress and the table go here (default console.log). */
  log?: (line: string) => void;
}

/** One loop: median ns per call in JS and in C, and their ratio. */
export interface IoctlPathResult {
  path: string;
  jsNs: number;
  cNs: number;
  /** JS ns/call ÷ C ns/call. */
  ratio: number;
}

export interface IoctlBenchResult {
  iterations: number;
  failureIterations: number;
  rounds: number;
  node: string;
  cpu: string;
  gcc: string;
  paths: IoctlPathResult[];
}

type PathKey = 'success' | 'address' | 'failure' | 'failureNoStack';

const PATHS: ReadonlyArray<readonly [PathKey, string]> = [
  ['success', 'FIONREAD on a FIFO, Uint8Array arg'],
  ['address', 'FIONREAD on a FIFO, pointer as number'],
  ['failure', 'TCGETS on /dev/null -> ENOTTY (throws)'],
  ['failureNoStack', '  same, Error.stackTraceLimit = 0'],
];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
};

function nsPerCall(start: bigint, calls: number): number {
  return Number(process.hrtime.bigint() - start) / calls;
}

/** The JS loops, written out one by one so no closure call is timed. */
function runJs(sys: LibcSys, fd: number, nullFd: number, n: number, nFail: number): Record<PathKey, number> {
  const arg = new Uint8Array(4);
  const avail = new Int32Array(arg.buffer);
  const address = Number(sys.addressOf(arg));
  const termios = new Uint8Array(64);
  let sink = 0;

  for (let i = 0; i < n / 50; i++) sink += sys.ioctl(fd, FIONREAD, arg);

  let t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    sys.ioctl(fd, FIONREAD, arg);
    sink += avail[0] ?? 0;
  }
  const success = nsPerCall(t0, n);

  t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    sys.ioctl(fd, FIONREAD, address);
    sink += avail[0] ?? 0;
  }
  const byAddress = nsPerCall(t0, n);

  for (let i = 0; i < nFail / 50; i++) {
    try {
      sys.ioctl(nullFd, TCGETS, termios);
    } catch {
      sink += 1;
    }
  }
  t0 = process.hrtime.bigint();
  for (let i = 0; i < nFail; i++) {
    try {
      sys.ioctl(nullFd, TCGETS, termios);
    } catch (err) {
      if (!(err instanceof VfioSystemError) || err.errno !== ENOTTY) throw err;
      sink += err.errno;
    }
  }
  const failure = nsPerCall(t0, nFail);

  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  t0 = process.hrtime.bigint();
  try {
    for (let i = 0; i < nFail; i++) {
      try {
        sys.ioctl(nullFd, TCGETS, termios);
      } catch (err) {
        if (!(err instanceof VfioSystemError) || err.errno !== ENOTTY) throw err;
        sink += err.errno;
      }
    }
  } finally {
    Error.stackTraceLimit = limit;
  }
  const failureNoStack = nsPerCall(t0, nFail);

  if (avail[0] !== 5 || sink === 0) throw new Error(`FIONREAD read ${avail[0]}, expected 5`);
  return { success, address: byAddress, failure, failureNoStack };
}

function printTable(result: IoctlBenchResult, log: (line: string) => void): void {
  log('');
  log(`${'path'.padEnd(42)}${'JS ns/call'.padStart(12)}${'C ns/call'.padStart(12)}${'JS/C'.padStart(8)}`);
  for (const p of result.paths) {
    log(`${p.path.padEnd(42)}${p.jsNs.toFixed(0).padStart(12)}${p.cNs.toFixed(0).padStart(12)}${p.ratio.toFixed(2).padStart(8)}`);
  }
}

/** Runs the benchmark, prints the table, writes bench/out/ioctl.json, and returns the results. */
export function run(options: IoctlBenchOptions = {}): IoctlBenchResult {
  const iterations = options.iterations ?? 1_000_000;
  const failureIterations = options.failureIterations ?? Math.max(1, Math.floor(iterations / 5));
  const rounds = options.rounds ?? 3;
  const log = options.log ?? ((line: string) => console.log(line));
  const result: IoctlBenchResult = {
    iterations,
    failureIterations,
    rounds,
    node: process.version,
    cpu: /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown',
    gcc: execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? 'unknown',
    paths: [],
  };
  const sys = new LibcSys();
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ioctl-bench-'));
  const fds: number[] = [];
  try {
    const binary = join(dir, 'ioctl');
    execFileSync('gcc', ['-O2', '-o', binary, fileURLToPath(new URL('./c/ioctl.c', import.meta.url))]);
    // A FIFO is a pipe with a name, so C and JS can each open their own; O_RDWR never waits for a peer.
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const fd = sys.open(fifo, O_RDWR | O_CLOEXEC);
    fds.push(fd);
    const nullFd = sys.open('/dev/null', O_RDWR | O_CLOEXEC);
    fds.push(nullFd);
    sys.write(fd, new TextEncoder().encode('hello'));

    log(`ioctl: LibcSys.ioctl vs C (gcc -O2), ${iterations} calls per loop (failure: ${failureIterations}), ${rounds} rounds, ${result.cpu}`);
    const js: Record<PathKey, number[]> = { success: [], address: [], failure: [], failureNoStack: [] };
    const c: Record<PathKey, number[]> = { success: [], address: [], failure: [], failureNoStack: [] };
    for (let r = 0; r < rounds; r++) {
      // The C process opens the same FIFO, whose 5 bytes stay buffered while this process holds it open.
      const out = execFileSync(binary, [fifo, String(iterations), String(failureIterations)], { encoding: 'utf8' });
      const cOut = JSON.parse(out) as Record<'success' | 'address' | 'failure', number>;
      const cRound: Record<PathKey, number> = { ...cOut, failureNoStack: cOut.failure };
      const jsRound = runJs(sys, fd, nullFd, iterations, failureIterations);
      for (const [key] of PATHS) {
        c[key].push(cRound[key]);
        js[key].push(jsRound[key]);
      }
      log(`  round ${r + 1}: ${PATHS.map(([k]) => `${k} ${jsRound[k].toFixed(0)}/${cRound[k].toFixed(0)} ns`).join(', ')}`);
    }
    for (const [key, path] of PATHS) {
      const jsNs = median(js[key]);
      const cNs = median(c[key]);
      result.paths.push({ path, jsNs, cNs, ratio: jsNs / cNs });
    }
  } finally {
    for (const fd of fds) sys.close(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  printTable(result, log);
  const outDir = fileURLToPath(new URL('./out/', import.meta.url));
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'ioctl.json'), `${JSON.stringify(result, null, 2)}\n`);
  return result;
}

function numberArg(name: string): number | undefined {
  const i = process.argv.indexOf(name);
  const v = i < 0 ? undefined : process.argv[i + 1];
  return v === undefined ? undefined : Number(v);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  run({ iterations: numberArg('--iterations'), rounds: numberArg('--rounds') });
}
