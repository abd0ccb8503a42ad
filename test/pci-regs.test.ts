/**
 * lib/pci/regs.ts against the kernel's own `<linux/pci_regs.h>` (6.12): a C
 * program printing every exported name is compiled with gcc, so a name the
 * header lacks is a compile error and a wrong value a mismatch.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import * as regs from '../lib/pci/regs.js';

/**
 * The 6.12 uapi tree: `VFIO_TS_KERNEL_UAPI`, else what `scripts/kernel-uapi.sh`
 * unpacked. Without it the header checks skip, except when
 * `VFIO_TS_REQUIRE_HEADERS` is set (CI sets it): then a missing tree fails.
 */
const UAPI = process.env.VFIO_TS_KERNEL_UAPI ?? fileURLToPath(new URL('../.cache/linux-6.12/include/uapi', import.meta.url));
const SKIP = haveGcc() && existsSync(join(UAPI, 'linux/pci_regs.h')) ? false : 'gcc or the 6.12 uapi headers are missing (scripts/kernel-uapi.sh)';

function haveGcc(): boolean {
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const numeric = Object.entries(regs).flatMap(([name, value]) => (typeof value === 'number' ? [[name, value] as const] : []));

/** Compiles and runs a probe printing `NAME value` (as the low 32 bits) for each name. */
function probe(names: readonly string[]): Map<string, number> {
  const dir = mkdtempSync(join(tmpdir(), 'pci-regs-'));
  try {
    const lines = names.map((n) => `  printf("%s %llu\\n", "${n}", (unsigned long long)(${n}) & 0xffffffffULL);`);
    writeFileSync(join(dir, 'p.c'), `#include <stdio.h>\n#include <linux/pci_regs.h>\nint main(void) {\n${lines.join('\n')}\n  return 0;\n}\n`);
    execFileSync('gcc', ['-Wall', '-Werror', '-I', UAPI, '-o', join(dir, 'p'), join(dir, 'p.c')], { stdio: 'pipe' });
    const out = execFileSync(join(dir, 'p'), { encoding: 'utf8' });
    return new Map(out.trim().split('\n').map((l) => {
      const [name, value] = l.split(' ');
      return [name ?? '', Number(value)];
    }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function mismatches(entries: ReadonlyArray<readonly [string, number]>): string[] {
  const c = probe(entries.map(([n]) => n));
  return entries.filter(([name, value]) => c.get(name) !== value >>> 0).map(([name, value]) => `${name}: ts ${value}, C ${c.get(name)}`);
}

t.test('every numeric export of regs.ts matches <linux/pci_regs.h>', { skip: process.env.VFIO_TS_REQUIRE_HEADERS === undefined ? SKIP : false }, async (t) => {
  t.ok(numeric.length > 150, `${numeric.length} constants`);
  t.strictSame(mismatches(numeric), []);
});

t.test('the probe can fail: a wrong value is reported, an unknown name does not compile', { skip: process.env.VFIO_TS_REQUIRE_HEADERS === undefined ? SKIP : false }, async (t) => {
  t.strictSame(mismatches([['PCI_MSIX_FLAGS_QSIZE', 0x3ff], ['PCI_MSIX_FLAGS_ENABLE', 0x8000]]), ['PCI_MSIX_FLAGS_QSIZE: ts 1023, C 2047']);
  t.throws(() => probe(['PCI_NO_SUCH_REGISTER']));
});

t.test('extended capability header fields (PCI_EXT_CAP_ID / _VER / _NEXT)', async (t) => {
  // AER v2 with next 0x148: 0x14820001.
  t.equal(regs.pciExtCapId(0x14820001), 0x0001);
  t.equal(regs.pciExtCapVer(0x14820001), 2);
  t.equal(regs.pciExtCapNext(0x14820001), 0x148);
  // The reserved low two bits of the next field are masked, as the kernel's 0xffc.
  t.equal(regs.pciExtCapNext(0xfff00000), 0xffc);
  t.equal(regs.pciExtCapId(0xffffffff), 0xffff);
  t.equal(regs.pciExtCapVer(0xffffffff), 0xf);
});
