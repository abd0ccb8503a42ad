/**
 * A small WebAssembly text assembler: enough of the WAT format for
 * lib/vfio/dirty-bitmap.wat (no wabt on the build machines, and no new
 * dependency). It supports one imported memory, functions with params, results
 * and locals, exports, folded instructions (every instruction in parentheses),
 * labelled block/loop/if, and the instructions listed in OPS below; add to OPS
 * when the .wat needs more.
 *
 * `npx tsx scripts/wat2wasm.ts in.wat out.ts` writes a TypeScript module
 * exporting the binary as base64 (`WASM_BASE64`); test/dirty-bitmap.test.ts
 * checks that the committed module matches the .wat.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type Atom = { kind: 'atom'; text: string } | { kind: 'string'; text: string };
type SExpr = Atom | SExpr[];

type ValType = 'i32' | 'i64' | 'f32' | 'f64' | 'v128';
const VALTYPES: Record<ValType, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** How an instruction's immediates are encoded. */
type Imm = 'none' | 'mem' | 'lane' | 'local' | 'label' | 'func' | 'i32' | 'i64' | 'f64' | 'v128' | 'memidx';
interface OpInfo {
  readonly code: readonly number[];
  readonly imm: Imm;
  /** log2 of the natural alignment, for memory instructions. */
  readonly align?: number;
}

const simd = (n: number, imm: Imm = 'none', align?: number): OpInfo => ({ code: [0xfd, ...uleb(n)], imm, align });
const op = (code: number, imm: Imm = 'none', align?: number): OpInfo => ({ code: [code], imm, align });

const OPS: Record<string, OpInfo> = {
  br: op(0x0c, 'label'),
  br_if: op(0x0d, 'label'),
  return: op(0x0f),
  call: op(0x10, 'func'),
  'local.get': op(0x20, 'local'),
  'local.set': op(0x21, 'local'),
  'i64.load': op(0x29, 'mem', 3),
  'i64.store': op(0x37, 'mem', 3),
  'f64.store': op(0x39, 'mem', 3),
  'i32.const': op(0x41, 'i32'),
  'i64.const': op(0x42, 'i64'),
  'f64.const': op(0x44, 'f64'),
  'i32.eqz': op(0x45),
  'i32.lt_u': op(0x49),
  'i32.gt_u': op(0x4b),
  'i32.ge_u': op(0x4f),
  'i64.eqz': op(0x50),
  'i64.eq': op(0x51),
  'i64.ne': op(0x52),
  'i64.gt_u': op(0x56),
  'i64.ge_u': op(0x5a),
  'i32.add': op(0x6a),
  'i32.sub': op(0x6b),
  'i32.and': op(0x71),
  'i32.shl': op(0x74),
  'i64.ctz': op(0x7a),
  'i64.popcnt': op(0x7b),
  'i64.add': op(0x7c),
  'i64.sub': op(0x7d),
  'i64.and': op(0x83),
  'i64.or': op(0x84),
  'i64.xor': op(0x85),
  'i64.shl': op(0x86),
  'i64.shr_u': op(0x88),
  'i32.wrap_i64': op(0xa7),
  'i64.extend_i32_u': op(0xad),
  'i64.trunc_f64_u': op(0xb1),
  'f64.convert_i64_u': op(0xba),
  'memory.fill': { code: [0xfc, 0x0b], imm: 'memidx' },
  'v128.load': simd(0x00, 'mem', 4),
  'v128.store': simd(0x0b, 'mem', 4),
  'v128.const': simd(0x0c, 'v128'),
  'i64x2.extract_lane': simd(0x1d, 'lane'),
  'v128.not': simd(0x4d),
  'v128.andnot': simd(0x4f),
  'v128.or': simd(0x50),
  'v128.any_true': simd(0x53),
  'i8x16.popcnt': simd(0x62),
  'i8x16.add': simd(0x6e),
  'i16x8.extadd_pairwise_i8x16_u': simd(0x7d),
  'i32x4.extadd_pairwise_i16x8_u': simd(0x7f),
  'i64x2.extend_low_i32x4_u': simd(0xc9),
  'i64x2.extend_high_i32x4_u': simd(0xca),
  'i64x2.shl': simd(0xcb),
  'i64x2.shr_u': simd(0xcd),
  'i64x2.add': simd(0xce),
};

/** Assembler errors name the offending construct. */
export class WatError extends Error {}

function uleb(value: number | bigint): number[] {
  let v = BigInt(value);
  if (v < 0n) throw new WatError(`negative unsigned LEB128 ${v}`);
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return out;
}

function sleb(value: bigint): number[] {
  let v = value;
  const out: number[] = [];
  for (;;) {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    const done = (v === 0n && (byte & 0x40) === 0) || (v === -1n && (byte & 0x40) !== 0);
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}

function tokenize(src: string): Array<'(' | ')' | Atom> {
  const tokens: Array<'(' | ')' | Atom> = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (c === undefined) break;
    if (/\s/.test(c)) {
      i++;
    } else if (src.startsWith(';;', i)) {
      const nl = src.indexOf('\n', i);
      i = nl < 0 ? src.length : nl;
    } else if (src.startsWith('(;', i)) {
      const close = src.indexOf(';)', i);
      if (close < 0) throw new WatError('unterminated block comment');
      i = close + 2;
    } else if (c === '(' || c === ')') {
      tokens.push(c);
      i++;
    } else if (c === '"') {
      const close = src.indexOf('"', i + 1);
      if (close < 0) throw new WatError('unterminated string');
      tokens.push({ kind: 'string', text: src.slice(i + 1, close) });
      i = close + 1;
    } else {
      let j = i;
      while (j < src.length && !/[\s()";]/.test(src[j] ?? ' ')) j++;
      tokens.push({ kind: 'atom', text: src.slice(i, j) });
      i = j;
    }
  }
  return tokens;
}

function parse(src: string): SExpr[] {
  const stack: SExpr[][] = [[]];
  for (const t of tokenize(src)) {
    const top = stack[stack.length - 1];
    if (top === undefined) throw new WatError('unbalanced parentheses');
    if (t === '(') {
      const list: SExpr[] = [];
      top.push(list);
      stack.push(list);
    } else if (t === ')') {
      if (stack.length === 1) throw new WatError('unbalanced parentheses');
      stack.pop();
    } else {
      top.push(t);
    }
  }
  const root = stack[0];
  if (stack.length !== 1 || root === undefined) throw new WatError('unbalanced parentheses');
  return root;
}

const isAtom = (e: SExpr | undefined): e is Atom & { kind: 'atom' } => e !== undefined && !Array.isArray(e) && e.kind === 'atom';
const head = (e: SExpr): string | undefined => (Array.isArray(e) && isAtom(e[0]) ? e[0].text : undefined);

function atomText(e: SExpr | undefined, what: string): string {
  if (!isAtom(e)) throw new WatError(`expected ${what}`);
  return e.text;
}

function stringText(e: SExpr | undefined, what: string): string {
  if (e === undefined || Array.isArray(e) || e.kind !== 'string') throw new WatError(`expected ${what} string`);
  return e.text;
}

function valType(e: SExpr | undefined): ValType {
  const t = atomText(e, 'value type');
  if (!(t in VALTYPES)) throw new WatError(`unknown value type ${t}`);
  return t as ValType;
}

function parseInteger(text: string): bigint {
  const neg = text.startsWith('-');
  const body = text.replace(/^[-+]/, '').replaceAll('_', '');
  const v = BigInt(body);
  return neg ? -v : v;
}

interface FuncDef {
  name: string;
  exportName: string | undefined;
  params: ValType[];
  results: ValType[];
  locals: ValType[];
  localNames: Map<string, number>;
  body: SExpr[];
}

function parseFunc(f: SExpr[]): FuncDef {
  const def: FuncDef = { name: '', exportName: undefined, params: [], results: [], locals: [], localNames: new Map(), body: [] };
  let i = 1;
  if (isAtom(f[i])) def.name = atomText(f[i++], 'function name');
  for (; i < f.length; i++) {
    const e = f[i];
    if (e === undefined) break;
    const h = head(e);
    if (!Array.isArray(e) || (h !== 'export' && h !== 'param' && h !== 'result' && h !== 'local')) break;
    if (h === 'export') {
      def.exportName = stringText(e[1], 'export name');
      continue;
    }
    const list = h === 'param' ? def.params : h === 'result' ? def.results : def.locals;
    const named = isAtom(e[1]) && e[1].text.startsWith('$');
    if (named) {
      if (h === 'result') throw new WatError('results cannot be named');
      const index = h === 'param' ? def.params.length : -1 - def.locals.length;
      def.localNames.set(atomText(e[1], 'name'), index);
      list.push(valType(e[2]));
    } else {
      for (const t of e.slice(1)) list.push(valType(t));
    }
  }
  // Locals are numbered after the params.
  for (const [name, index] of def.localNames) {
    if (index < 0) def.localNames.set(name, def.params.length + (-1 - index));
  }
  def.body = f.slice(i);
  return def;
}

class FuncCompiler {
  readonly out: number[] = [];
  private readonly labels: Array<string | undefined> = [];
  constructor(
    private readonly def: FuncDef,
    private readonly funcIndex: Map<string, number>,
  ) {}

  compileBody(): void {
    this.sequence(this.def.body);
    this.out.push(0x0b);
  }

  private sequence(items: SExpr[]): void {
    for (const e of items) {
      if (!Array.isArray(e)) throw new WatError(`${this.def.name}: expected a folded instruction, got ${atomText(e, 'atom')}`);
      this.folded(e);
    }
  }

  /** `(result t)` at items[i], if there: the block type, and the index after it. */
  private blockType(items: SExpr[], i: number): [number[], number] {
    const e = items[i];
    if (e !== undefined && head(e) === 'result' && Array.isArray(e)) return [[VALTYPES[valType(e[1])]], i + 1];
    return [[0x40], i];
  }

  /** An optional `$label` at items[i]: the label, and the index after it. */
  private labelAt(items: SExpr[], i: number): [string | undefined, number] {
    const e = items[i];
    return isAtom(e) && e.text.startsWith('$') ? [e.text, i + 1] : [undefined, i];
  }

  private folded(e: SExpr[]): void {
    const name = atomText(e[0], 'instruction');
    if (name === 'block' || name === 'loop') {
      const [label, i] = this.labelAt(e, 1);
      const [bt, body] = this.blockType(e, i);
      this.out.push(name === 'block' ? 0x02 : 0x03, ...bt);
      this.labels.push(label);
      this.sequence(e.slice(body));
      this.labels.pop();
      this.out.push(0x0b);
      return;
    }
    if (name === 'if') {
      const [label, i] = this.labelAt(e, 1);
      const [bt, cond] = this.blockType(e, i);
      const thenIdx = e.findIndex((x) => head(x) === 'then');
      if (thenIdx < 0) throw new WatError('folded if without (then ...)');
      this.sequence(e.slice(cond, thenIdx));
      this.out.push(0x04, ...bt);
      this.labels.push(label);
      const thenPart = e[thenIdx];
      if (Array.isArray(thenPart)) this.sequence(thenPart.slice(1));
      const elsePart = e[thenIdx + 1];
      if (elsePart !== undefined && Array.isArray(elsePart) && head(elsePart) === 'else') {
        this.out.push(0x05);
        this.sequence(elsePart.slice(1));
      }
      this.labels.pop();
      this.out.push(0x0b);
      return;
    }
    // (op immediate-atoms... operand-expressions...)
    let i = 1;
    while (i < e.length && !Array.isArray(e[i])) i++;
    this.sequence(e.slice(i));
    const used = this.instruction(name, e.slice(0, i), 1);
    if (used !== i) throw new WatError(`${name}: unexpected immediates`);
  }

  private local(e: SExpr | undefined): number {
    const t = atomText(e, 'local');
    if (t.startsWith('$')) {
      const idx = this.def.localNames.get(t);
      if (idx === undefined) throw new WatError(`unknown local ${t} in ${this.def.name}`);
      return idx;
    }
    return Number(t);
  }

  private label(e: SExpr | undefined): number {
    const t = atomText(e, 'label');
    if (!t.startsWith('$')) return Number(t);
    for (let d = 0; d < this.labels.length; d++) {
      if (this.labels[this.labels.length - 1 - d] === t) return d;
    }
    throw new WatError(`unknown label ${t} in ${this.def.name}`);
  }

  /** Emits one non-block instruction whose immediates start at items[start]; returns the index after them. */
  private instruction(name: string, items: SExpr[], start: number): number {
    const info = OPS[name];
    if (info === undefined) throw new WatError(`unsupported instruction ${name}`);
    let i = start;
    const out = this.out;
    out.push(...info.code);
    switch (info.imm) {
      case 'none':
        break;
      case 'local':
        out.push(...uleb(this.local(items[i++])));
        break;
      case 'label':
        out.push(...uleb(this.label(items[i++])));
        break;
      case 'func': {
        const fname = atomText(items[i++], 'function');
        const idx = this.funcIndex.get(fname);
        if (idx === undefined) throw new WatError(`unknown function ${fname}`);
        out.push(...uleb(idx));
        break;
      }
      case 'lane':
        out.push(Number(atomText(items[i++], 'lane')));
        break;
      case 'memidx':
        out.push(0);
        break;
      case 'i32': {
        const v = parseInteger(atomText(items[i++], 'i32'));
        out.push(...sleb(BigInt.asIntN(32, v)));
        break;
      }
      case 'i64': {
        const v = parseInteger(atomText(items[i++], 'i64'));
        out.push(...sleb(BigInt.asIntN(64, v)));
        break;
      }
      case 'f64': {
        const b = new Uint8Array(8);
        new DataView(b.buffer).setFloat64(0, Number(atomText(items[i++], 'f64')), true);
        out.push(...b);
        break;
      }
      case 'v128': {
        const shape = atomText(items[i++], 'v128 shape');
        if (shape !== 'i64x2') throw new WatError('v128.const supports the i64x2 shape only');
        const b = new Uint8Array(16);
        const dv = new DataView(b.buffer);
        dv.setBigUint64(0, BigInt.asUintN(64, parseInteger(atomText(items[i++], 'lane'))), true);
        dv.setBigUint64(8, BigInt.asUintN(64, parseInteger(atomText(items[i++], 'lane'))), true);
        out.push(...b);
        break;
      }
      case 'mem': {
        let offset = 0;
        let align = info.align ?? 0;
        while (isAtom(items[i]) && /^(offset|align)=/.test(atomText(items[i], 'memarg'))) {
          const [k, v] = atomText(items[i++], 'memarg').split('=');
          if (k === 'offset') offset = Number(v);
          else align = Math.log2(Number(v));
        }
        out.push(...uleb(align), ...uleb(offset));
        break;
      }
    }
    return i;
  }
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

function name(s: string): number[] {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
}

/** Assembles WAT text (the subset described above) into a binary module. */
export function assemble(src: string): Uint8Array {
  const top = parse(src);
  const mod = top[0];
  if (top.length !== 1 || mod === undefined || !Array.isArray(mod) || head(mod) !== 'module') {
    throw new WatError('expected a single (module ...)');
  }
  const imports: number[][] = [];
  const funcs: FuncDef[] = [];
  for (const field of mod.slice(1)) {
    const h = head(field);
    if (!Array.isArray(field)) throw new WatError('unexpected atom at module level');
    if (h === 'import') {
      const desc = field[3];
      if (!Array.isArray(desc) || head(desc) !== 'memory') throw new WatError('only memory imports are supported');
      const [min, max] = desc.slice(1).map((x) => Number(atomText(x, 'memory limit')));
      if (min === undefined) throw new WatError('memory import needs a minimum');
      const limits = max === undefined ? [0x00, ...uleb(min)] : [0x01, ...uleb(min), ...uleb(max)];
      imports.push([...name(stringText(field[1], 'module')), ...name(stringText(field[2], 'field')), 0x02, ...limits]);
    } else if (h === 'func') {
      funcs.push(parseFunc(field));
    } else {
      throw new WatError(`unsupported module field ${String(h)}`);
    }
  }
  const funcIndex = new Map(funcs.map((f, i) => [f.name, i] as const));
  const types: string[] = [];
  const typeOf = funcs.map((f) => {
    const sig = `${f.params.join(',')}->${f.results.join(',')}`;
    if (!types.includes(sig)) types.push(sig);
    return types.indexOf(sig);
  });
  const typeSection = types.map((sig) => {
    const [ps = '', rs = ''] = sig.split('->');
    const toCodes = (s: string): number[] => (s === '' ? [] : s.split(',').map((t) => VALTYPES[t as ValType]));
    return [0x60, ...vec(toCodes(ps).map((c) => [c])), ...vec(toCodes(rs).map((c) => [c]))];
  });
  const exports = funcs.flatMap((f, i) => (f.exportName === undefined ? [] : [[...name(f.exportName), 0x00, ...uleb(i)]]));
  const bodies = funcs.map((f) => {
    const c = new FuncCompiler(f, funcIndex);
    c.compileBody();
    // Locals run-length encoded, one group per local (simple, valid).
    const locals = vec(f.locals.map((t) => [1, VALTYPES[t]]));
    const body = [...locals, ...c.out];
    return [...uleb(body.length), ...body];
  });
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(typeSection)),
    ...section(2, vec(imports)),
    ...section(3, vec(typeOf.map((t) => uleb(t)))),
    ...section(7, vec(exports)),
    ...section(10, vec(bodies)),
  ]);
}

/** The TypeScript module that carries the binary. */
export function renderModule(wasm: Uint8Array, sourceName: string): string {
  const b64 = Buffer.from(wasm).toString('base64');
  const lines = b64.match(/.{1,100}/g) ?? [];
  return [
    `// Generated from ${sourceName} by scripts/wat2wasm.ts; do not edit.`,
    `// Regenerate: npx tsx scripts/wat2wasm.ts lib/vfio/${sourceName} lib/vfio/dirty-bitmap-wasm.ts`,
    '',
    '/** The assembled dirty-bitmap WebAssembly module, base64. */',
    'export const WASM_BASE64 =',
    lines.map((l) => `  '${l}'`).join(' +\n') + ';',
    '',
  ].join('\n');
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [input, output] = process.argv.slice(2);
  if (input === undefined || output === undefined) {
    console.error('usage: tsx scripts/wat2wasm.ts input.wat output.ts');
    process.exit(2);
  }
  const wasm = assemble(readFileSync(input, 'utf8'));
  writeFileSync(output, renderModule(wasm, input.split('/').pop() ?? input));
  console.log(`${output}: ${wasm.length} bytes of wasm`);
}
