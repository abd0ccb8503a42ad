/**
 * Builds a C program from the TypeScript uAPI tables, compiles it with gcc
 * against the checked 6.12 headers, and compares what the compiler says with
 * what the tables say. Pure functions apart from {@link runCProgram}, so the
 * layout test can also feed deliberately wrong tables through the same checks.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FieldType, StructLayout } from '../../lib/vfio/uapi/layout.js';

/** `../shared/uapi` from the project root: CI clones the repo as a sibling of `shared`. */
export const UAPI_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../shared/uapi');

/** A struct table to check, and the module it comes from (for messages). */
export interface LayoutEntry {
  readonly layout: StructLayout;
  readonly origin: string;
}

/** A number exported by a uAPI module, to be compared with the C macro or enum of the same name. */
export interface ValueEntry {
  readonly name: string;
  readonly value: number;
  readonly origin: string;
}

export interface LayoutInput {
  readonly layouts: readonly LayoutEntry[];
  readonly values: readonly ValueEntry[];
  /** Hand-written C member lists (see uapi-members.ts); `[]` marks a flexible array. */
  readonly members: Readonly<Record<string, readonly string[]>>;
  /** Macro names that must NOT be defined by the 6.12 headers (post-6.12 additions). */
  readonly absent: readonly string[];
}

/** The C source, and what each of its lines probes (to turn gcc errors into messages). */
export interface CProgram {
  readonly source: string;
  readonly lineInfo: ReadonlyMap<number, string>;
}

const DESIGNATOR = /^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$/;
const IDENT = /^[A-Za-z_]\w*$/;

const isFlexible = (member: string): boolean => member.endsWith('[]');
const bareMember = (member: string): string => member.replace(/\[\]$/, '');

/** Field keys and names become C tokens and string literals, so anything but an identifier is refused up front. */
export function invalidNames(input: LayoutInput): string[] {
  const bad: string[] = [];
  for (const { layout, origin } of input.layouts) {
    if (!IDENT.test(layout.name)) bad.push(`${origin}: struct name ${JSON.stringify(layout.name)}`);
    for (const key of Object.keys(layout.fields)) {
      if (!DESIGNATOR.test(key)) bad.push(`${origin}: ${layout.name} field key ${JSON.stringify(key)}`);
    }
    for (const m of input.members[layout.name] ?? []) {
      if (!IDENT.test(bareMember(m))) bad.push(`member list of ${layout.name}: ${JSON.stringify(m)}`);
    }
  }
  for (const v of [...input.values, ...input.absent.map((name) => ({ name, origin: 'absent list' }))]) {
    if (!IDENT.test(v.name)) bad.push(`${v.origin}: constant name ${JSON.stringify(v.name)}`);
  }
  return bad;
}

/**
 * The C program. Output lines, tab-separated:
 * `S struct sizeof alignof`, `F struct member offsetof sizeof(-1: flexible) alignof kind`,
 * `V name value sizeof signed`, `A name defined`. `kind` is u/s for unsigned/signed
 * integers, p for pointers and arrays (they decay), o for structs and unions.
 */
export function buildLayoutProgram(input: LayoutInput): CProgram {
  const lines: string[] = [
    '#include <stdio.h>',
    '#include <stddef.h>',
    '#include <linux/vfio.h>',
    '#include <linux/iommufd.h>',
    '#define KIND(x) _Generic((x), signed char: \'s\', short: \'s\', int: \'s\', long: \'s\', long long: \'s\', \\',
    '  unsigned char: \'u\', unsigned short: \'u\', unsigned int: \'u\', unsigned long: \'u\', unsigned long long: \'u\', \\',
    '  default: (__builtin_classify_type(x) == 5 ? \'p\' : \'o\'))',
    // (x) - (x) - 1 is -1 in a signed type and the maximum in an unsigned one.
    '#define SIGNED(x) ((x) - (x) - 1 < 0)',
    'int main(void) {',
  ];
  const lineInfo = new Map<number, string>();
  const emit = (code: string, what: string): void => {
    lines.push(`  ${code}`);
    lineInfo.set(lines.length, what);
  };
  for (const { layout, origin } of input.layouts) {
    const s = layout.name;
    const what = `${origin} ${s}`;
    emit(`printf("S\\t%s\\t%zu\\t%zu\\n", "${s}", sizeof(struct ${s}), _Alignof(struct ${s}));`, `${what} (sizeof)`);
    const listed = input.members[s] ?? [];
    const flexible = new Set(listed.filter(isFlexible).map(bareMember));
    const designators = new Set([...Object.keys(layout.fields), ...listed.map(bareMember)]);
    for (const d of designators) {
      const m = `((struct ${s} *)0)->${d}`;
      const size = flexible.has(d) ? '-1LL' : `(long long)sizeof(${m})`;
      const align = flexible.has(d) ? `__alignof__(${m}[0])` : `__alignof__(${m})`;
      const kind = flexible.has(d) ? "'p'" : `KIND(${m})`;
      emit(
        `printf("F\\t%s\\t%s\\t%zu\\t%lld\\t%zu\\t%c\\n", "${s}", "${d}", offsetof(struct ${s}, ${d}), ${size}, ${align}, ${kind});`,
        `${what} member ${d}`,
      );
    }
  }
  for (const v of input.values) {
    emit(
      `printf("V\\t%s\\t%lld\\t%zu\\t%d\\n", "${v.name}", (long long)(${v.name}), sizeof(${v.name}), (int)SIGNED(${v.name}));`,
      `${v.origin} ${v.name}`,
    );
  }
  for (const name of input.absent) {
    lines.push(`#ifdef ${name}`);
    emit(`printf("A\\t%s\\t1\\n", "${name}");`, `absent ${name}`);
    lines.push('#else');
    emit(`printf("A\\t%s\\t0\\n", "${name}");`, `absent ${name}`);
    lines.push('#endif');
  }
  lines.push('  return 0;', '}', '');
  return { source: lines.join('\n'), lineInfo };
}

/** Whether gcc can be run. */
export function haveGcc(): boolean {
  const r = spawnSync('gcc', ['--version'], { encoding: 'utf8' });
  return r.error === undefined && r.status === 0;
}

export type RunResult = { readonly ok: true; readonly stdout: string } | { readonly ok: false; readonly errors: readonly string[] };

/**
 * Compiles `prog` against `uapiDir` and runs it. A compile failure comes back
 * as one message per gcc error, naming the table entry on the failing line.
 */
export function runCProgram(prog: CProgram, uapiDir: string = UAPI_DIR): RunResult {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-uapi-'));
  try {
    const src = join(dir, 'layout.c');
    const exe = join(dir, 'layout');
    writeFileSync(src, prog.source);
    // LC_ALL=C: plain ASCII quotes in diagnostics, whatever the caller's locale.
    const cc = spawnSync('gcc', ['-std=gnu11', `-I${uapiDir}`, '-D__user=', '-o', exe, src], {
      encoding: 'utf8',
      env: { ...process.env, LC_ALL: 'C' },
    });
    if (cc.error !== undefined) return { ok: false, errors: [`gcc could not be run: ${cc.error.message}`] };
    if (cc.status !== 0) {
      // A probe line names its member several times, so gcc repeats the error.
      const errors = new Set<string>();
      for (const line of cc.stderr.split('\n')) {
        const m = /^[^:]*:(\d+):\d+: (?:fatal )?error: (.*)$/.exec(line);
        if (m === null) continue;
        const what = prog.lineInfo.get(Number(m[1])) ?? `line ${m[1]}`;
        errors.add(`${what}: ${m[2]}`);
      }
      return { ok: false, errors: errors.size > 0 ? [...errors] : [cc.stderr.trim()] };
    }
    const run = spawnSync(exe, [], { encoding: 'utf8' });
    if (run.status !== 0) return { ok: false, errors: [`the layout program exited with ${String(run.status)}: ${run.stderr}`] };
    return { ok: true, stdout: run.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What the compiler reported, parsed. */
export interface CFacts {
  readonly structs: ReadonlyMap<string, { readonly size: number; readonly align: number }>;
  /** Keyed by `struct.member`; `size` is -1 for a flexible array. */
  readonly fields: ReadonlyMap<string, { readonly offset: number; readonly size: number; readonly align: number; readonly kind: string }>;
  readonly values: ReadonlyMap<string, { readonly value: bigint; readonly size: number; readonly signed: boolean }>;
  readonly defined: ReadonlyMap<string, boolean>;
}

export function parseCOutput(stdout: string): CFacts {
  const structs = new Map<string, { size: number; align: number }>();
  const fields = new Map<string, { offset: number; size: number; align: number; kind: string }>();
  const values = new Map<string, { value: bigint; size: number; signed: boolean }>();
  const defined = new Map<string, boolean>();
  for (const line of stdout.split('\n')) {
    const [tag = '', a = '', b = '', c = '', d = '', e = '', f = ''] = line.split('\t');
    if (tag === 'S') structs.set(a, { size: Number(b), align: Number(c) });
    else if (tag === 'F') fields.set(`${a}.${b}`, { offset: Number(c), size: Number(d), align: Number(e), kind: f });
    else if (tag === 'V') values.set(a, { value: BigInt(b), size: Number(c), signed: d === '1' });
    else if (tag === 'A') defined.set(a, b === '1');
  }
  return { structs, fields, values, defined };
}

const TYPE_SIZE: Record<FieldType, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 };

/** sizeof, and every field's offset, size and signedness. */
export function checkStructs(input: LayoutInput, c: CFacts): string[] {
  const problems: string[] = [];
  for (const { layout, origin } of input.layouts) {
    const s = layout.name;
    const cs = c.structs.get(s);
    if (cs === undefined) {
      problems.push(`${origin} ${s}: no sizeof in the C output`);
      continue;
    }
    if (cs.size !== layout.size) problems.push(`${origin} ${s}: sizeof is ${cs.size} in C, ${layout.size} in the table`);
    for (const [key, f] of Object.entries(layout.fields)) {
      const cf = c.fields.get(`${s}.${key}`);
      const at = `${origin} ${s}.${key}`;
      if (cf === undefined) {
        problems.push(`${at}: missing from the C output`);
        continue;
      }
      if (cf.offset !== f.offset) problems.push(`${at}: offsetof is ${cf.offset} in C, ${f.offset} in the table`);
      if (f.type === 'bytes') {
        // A blob stands for a nested struct or an array; a scalar there would go undecoded.
        if (cf.kind !== 'o' && cf.kind !== 'p') problems.push(`${at}: declared bytes, but C has a scalar (${cf.kind}, ${cf.size} bytes)`);
        continue;
      }
      const want = TYPE_SIZE[f.type];
      if (cf.size !== want) problems.push(`${at}: ${f.type} is ${want} bytes, the C member is ${cf.size}`);
      const kindOk = f.type === 's32' ? cf.kind === 's' : cf.kind === 'u' || (f.type === 'u64' && cf.kind === 'p');
      if (!kindOk) problems.push(`${at}: declared ${f.type}, the C member is ${cf.kind === 's' ? 'signed' : cf.kind === 'u' ? 'unsigned' : 'not an integer'}`);
    }
  }
  return problems;
}

/** The hand-written member lists must name exactly the table's top-level fields. */
export function checkMemberLists(input: LayoutInput): string[] {
  const problems: string[] = [];
  for (const { layout, origin } of input.layouts) {
    const s = layout.name;
    const listed = input.members[s];
    if (listed === undefined) {
      problems.push(`${origin} ${s}: no C member list in test/helpers/uapi-members.ts`);
      continue;
    }
    const members = listed.map(bareMember);
    const keys = Object.keys(layout.fields);
    for (const m of members) if (!keys.includes(m)) problems.push(`${origin} ${s}: C member ${m} is missing from the table`);
    for (const k of keys) {
      const top = k.split('.')[0] ?? k;
      if (!members.includes(top)) problems.push(`${origin} ${s}: table field ${k} is not a member of the C struct`);
    }
  }
  return problems;
}

/**
 * The C members a list names must tile the struct: each starts where the
 * previous one ended, rounded up to its alignment (or shares the previous
 * offset, in a union), and sizeof is the end rounded up to the struct's
 * alignment. A member missing from a list leaves a gap alignment does not explain.
 */
export function checkTiling(input: LayoutInput, c: CFacts): string[] {
  const problems: string[] = [];
  const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;
  for (const { layout } of input.layouts) {
    const s = layout.name;
    const listed = input.members[s];
    const cs = c.structs.get(s);
    if (listed === undefined || cs === undefined) continue;
    const laid = listed
      .map((m, order) => ({ m: bareMember(m), order, f: c.fields.get(`${s}.${bareMember(m)}`) }))
      .sort((x, y) => (x.f?.offset ?? 0) - (y.f?.offset ?? 0) || x.order - y.order);
    let end = 0;
    let prevOffset = -1;
    for (const { m, f } of laid) {
      if (f === undefined) {
        problems.push(`${s}.${m}: missing from the C output`);
        continue;
      }
      const unionMate = f.offset === prevOffset;
      if (!unionMate && f.offset !== alignUp(end, f.align)) {
        problems.push(`${s}: ${m} is at ${f.offset}, but the members before it end at ${end} (a member is missing from the list)`);
      }
      if (f.size >= 0) end = Math.max(end, f.offset + f.size);
      prevOffset = f.offset;
    }
    if (cs.size !== alignUp(end, cs.align)) problems.push(`${s}: sizeof is ${cs.size}, but the listed members end at ${end} (a member is missing from the list)`);
  }
  return problems;
}

/**
 * Every exported number equals its C macro or enum. `unsignedView` names
 * constants the tables hold as the u32 bit pattern of a negative C int
 * (`(1 << 31)`), the form they take in the u32 fields they go into.
 */
export function checkValues(input: LayoutInput, c: CFacts, unsignedView: ReadonlySet<string>): string[] {
  const problems: string[] = [];
  for (const v of input.values) {
    const cv = c.values.get(v.name);
    if (cv === undefined) {
      problems.push(`${v.origin} ${v.name}: missing from the C output`);
      continue;
    }
    if (!Number.isSafeInteger(v.value)) {
      problems.push(`${v.origin} ${v.name}: ${v.value} is not a safe integer`);
      continue;
    }
    const expected = unsignedView.has(v.name) && cv.signed && cv.value < 0n ? cv.value + (1n << BigInt(8 * cv.size)) : cv.value;
    if (BigInt(v.value) !== expected) problems.push(`${v.origin} ${v.name}: C says ${expected} (0x${expected.toString(16)}), the table says ${v.value}`);
  }
  for (const name of input.absent) {
    if (c.defined.get(name) !== false) problems.push(`${name} is defined by the 6.12 header: move it out of post612.ts`);
  }
  return problems;
}
