/**
 * The README's TypeScript snippets type-check against lib/.
 *
 * Every ```ts (or ```typescript) fenced block of README.md becomes its own
 * ES module (`snippet-L<line>.mts` in a temporary directory), and all of them
 * are checked in one TypeScript program (compiler API, no emit) with the
 * project's compiler options from tsconfig.json, `vfio-ts`, `vfio-ts/sim` and
 * `vfio-ts/uapi` mapped by `paths` to lib/index.ts, lib/sim/index.ts and
 * lib/vfio/uapi/index.ts. Each diagnostic is reported as README.md:line:column.
 *
 * Conventions for README.md:
 * - A snippet that relies on names from earlier text (a `device`, a `socket`)
 *   declares them in a prelude: an HTML comment (invisible when rendered)
 *   that ends on the line right before the fence and starts with
 *   `<!-- snippet-prelude:`. It may span lines:
 *
 *       <!-- snippet-prelude:
 *       import type { VfioDevice } from 'vfio-ts';
 *       declare const device: VfioDevice;
 *       -->
 *       ```ts
 *
 *   The prelude's text goes before the snippet in the same module, so it may
 *   import, declare and define whatever the snippet needs.
 * - Unused locals and parameters are allowed (`noUnusedLocals` and
 *   `noUnusedParameters` are off): a snippet shows calls, not a program.
 * - Byte layouts, shell commands and anything else that is not TypeScript
 *   use another fence (``` or ```sh), never ```ts.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import ts from 'typescript';

const repo = fileURLToPath(new URL('..', import.meta.url));
const readmePath = join(repo, 'README.md');

interface Snippet {
  /** The file name in the temporary directory. */
  name: string;
  /** The markdown it comes from, e.g. `README.md`. */
  file: string;
  /** Where it is shown in messages, e.g. `README.md:27` (the fence). */
  where: string;
  /** Module text: prelude lines, then the snippet's lines. */
  text: string;
  /** README line (1-based) of each line of `text`. */
  lineMap: number[];
}

const PRELUDE_START = '<!-- snippet-prelude:';

/** Every ```ts block of `markdown`, each with the prelude comment right before it. */
function extractSnippets(markdown: string, file: string): Snippet[] {
  const lines = markdown.split(/\r?\n/);
  const snippets: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*([\w+-]*)/.exec(lines[i]!);
    if (!open) continue;
    const fence = open[2]!;
    const lang = open[3]!.toLowerCase();
    let end = i + 1;
    while (end < lines.length && !new RegExp(`^\\s*${fence[0]}{${fence.length},}\\s*$`).test(lines[end]!)) end++;
    if (lang === 'ts' || lang === 'typescript') {
      const text: string[] = [];
      const lineMap: number[] = [];
      // The prelude: an HTML comment whose last line is the line before the fence.
      if (i > 0 && lines[i - 1]!.trimEnd().endsWith('-->')) {
        let start = i - 1;
        while (start > 0 && !lines[start]!.includes('<!--')) start--;
        const first = lines[start]!;
        if (first.trimStart().startsWith(PRELUDE_START)) {
          for (let k = start; k < i; k++) {
            let line = lines[k]!;
            if (k === start) line = line.slice(line.indexOf(PRELUDE_START) + PRELUDE_START.length);
            if (k === i - 1) line = line.slice(0, line.lastIndexOf('-->'));
            text.push(line);
            lineMap.push(k + 1);
          }
        }
      }
      for (let k = i + 1; k < end; k++) {
        text.push(lines[k]!);
        lineMap.push(k + 1);
      }
      // Every snippet is a module, even one without imports.
      text.push('export {};');
      lineMap.push(end + 1);
      snippets.push({ name: `snippet-L${i + 1}.mts`, file, where: `${file}:${i + 1}`, text: text.join('\n'), lineMap });
    }
    i = end;
  }
  return snippets;
}

/** The project's compiler options, with the three package specifiers mapped to lib/. */
function compilerOptions(): ts.CompilerOptions {
  const configPath = join(repo, 'tsconfig.json');
  const config = ts.readConfigFile(configPath, (p) => ts.sys.readFile(p));
  if (config.error) throw new Error(ts.flattenDiagnosticMessageText(config.error.messageText, '\n'));
  const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, repo, undefined, configPath);
  // Nothing is emitted, and the snippets live outside the project: drop the output settings (rootDir would refuse them).
  const { rootDir: _rootDir, outDir: _outDir, declaration: _declaration, sourceMap: _sourceMap, ...options } = parsed.options;
  return {
    ...options,
    noEmit: true,
    noUnusedLocals: false,
    noUnusedParameters: false,
    incremental: false,
    paths: {
      'vfio-ts': [join(repo, 'lib/index.ts')],
      'vfio-ts/sim': [join(repo, 'lib/sim/index.ts')],
      'vfio-ts/uapi': [join(repo, 'lib/vfio/uapi/index.ts')],
    },
  };
}

/** One program over all snippets; per snippet, its diagnostics as `file:line:col TSnnnn message`. */
function check(snippets: Snippet[]): { perSnippet: Map<string, string[]>; codes: Map<string, number[]>; global: string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'vfio-ts-readme-'));
  try {
    const byPath = new Map<string, Snippet>();
    for (const s of snippets) {
      const path = join(dir, s.name);
      writeFileSync(path, s.text);
      byPath.set(path, s);
    }
    const program = ts.createProgram({ rootNames: [...byPath.keys()], options: compilerOptions() });
    const global = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics()].map(
      (d) => `TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`,
    );
    const perSnippet = new Map<string, string[]>();
    const codes = new Map<string, number[]>();
    for (const [path, s] of byPath) {
      const sf = program.getSourceFile(path);
      if (!sf) throw new Error(`${s.where}: not in the program`);
      const diags = [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)];
      perSnippet.set(
        s.name,
        diags.map((d) => {
          const { line, character } = sf.getLineAndCharacterOfPosition(d.start ?? 0);
          const readmeLine = s.lineMap[line] ?? s.lineMap[s.lineMap.length - 1]!;
          return `${s.file}:${readmeLine}:${character + 1} TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
        }),
      );
      codes.set(s.name, diags.map((d) => d.code));
    }
    return { perSnippet, codes, global };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const readme = readFileSync(readmePath, 'utf8');
const snippets = extractSnippets(readme, 'README.md');

// Deliberately wrong: a method VfioContainer does not have. It imports through
// 'vfio-ts', so it also shows the mapping works (a failed import would be TS2307).
const wrong = extractSnippets(
  ['```ts', "import { VfioContainer } from 'vfio-ts';", 'VfioContainer.open().noSuchMethod();', '```'].join('\n'),
  'inline',
)[0]!;
wrong.name = 'inline-wrong.mts';

const started = Date.now();
const result = check([...snippets, wrong]);
const elapsed = Date.now() - started;

t.test('README.md has TypeScript snippets', async (t) => {
  t.ok(snippets.length > 0, `${snippets.length} snippets`);
  // A prelude comment must sit right before a ```ts fence, or it silently does nothing.
  const lines = readme.split(/\r?\n/);
  lines.forEach((line, i) => {
    if (!line.trimStart().startsWith(PRELUDE_START)) return;
    let end = i;
    while (end < lines.length && !lines[end]!.includes('-->')) end++;
    t.match(lines[end + 1] ?? '', /^\s*```(ts|typescript)\s*$/, `prelude at README.md:${i + 1} is followed by a \`\`\`ts fence`);
  });
});

t.test('the compiler options are valid', async (t) => {
  t.strictSame(result.global, []);
});

for (const s of snippets) {
  t.test(`snippet at ${s.where} type-checks`, async (t) => {
    t.strictSame(result.perSnippet.get(s.name), [], s.where);
  });
}

t.test('a wrong snippet fails to type-check', async (t) => {
  const messages = result.perSnippet.get(wrong.name) ?? [];
  t.strictSame(result.codes.get(wrong.name), [2339], messages.join('\n'));
  t.match(messages[0] ?? '', /^inline:3:\d+ TS2339 .*noSuchMethod/);
});

t.test('it is fast', async (t) => {
  t.ok(elapsed < 20_000, `type-checked ${snippets.length + 1} snippets in ${elapsed} ms`);
});
