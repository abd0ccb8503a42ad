/**
 * The uAPI tables against the kernel's own 6.12 headers: a C program is
 * generated from the tables, compiled with gcc against ../shared/uapi, and
 * every sizeof, offsetof, member size and signedness, request number and
 * constant it prints is compared with the TypeScript value.
 */
import t from 'tap';
import * as constants from '../lib/vfio/uapi/constants.js';
import * as ioctls from '../lib/vfio/uapi/ioctls.js';
import * as iommufd from '../lib/vfio/uapi/iommufd.js';
import { bytes, struct, u16, u32, u64 } from '../lib/vfio/uapi/layout.js';
import * as post612 from '../lib/vfio/uapi/post612.js';
import { VFIO_LAYOUTS } from '../lib/vfio/uapi/structs.js';
import {
  buildLayoutProgram,
  checkMemberLists,
  checkStructs,
  checkTiling,
  checkValues,
  haveGcc,
  invalidNames,
  parseCOutput,
  runCProgram,
  type LayoutInput,
  type ValueEntry,
} from './helpers/uapi-cprog.js';
import { C_MEMBERS, REFERENCE_REQUESTS, REFERENCE_STRUCTS } from './helpers/uapi-members.js';

function numbersOf(mod: object, origin: string): ValueEntry[] {
  return Object.entries(mod).flatMap(([name, value]) => (typeof value === 'number' ? [{ name, value, origin }] : []));
}

const tables: LayoutInput = {
  layouts: [
    ...VFIO_LAYOUTS.map((layout) => ({ layout, origin: 'structs.ts' })),
    ...iommufd.IOMMUFD_LAYOUTS.map((layout) => ({ layout, origin: 'iommufd.ts' })),
  ],
  values: [...numbersOf(ioctls, 'ioctls.ts'), ...numbersOf(constants, 'constants.ts'), ...numbersOf(iommufd, 'iommufd.ts')],
  members: C_MEMBERS,
  absent: numbersOf(post612, 'post612.ts').map((v) => v.name),
};

/** Held as the u32 pattern of the C int `(1 << 31)`, as it appears in `vfio_region_info_cap_type.type`. */
const UNSIGNED_VIEW = new Set(['VFIO_REGION_TYPE_PCI_VENDOR_TYPE']);

const allLayoutNames = tables.layouts.map((e) => e.layout.name);

t.test('every struct the reference names (§1, §2, §2.8-§2.10, §3.2) is in the tables', async (t) => {
  const missing = REFERENCE_STRUCTS.filter((s) => !allLayoutNames.includes(s));
  t.strictSame(missing, [], `${REFERENCE_STRUCTS.length} reference structs looked up`);
  const dups = allLayoutNames.filter((n, i) => allLayoutNames.indexOf(n) !== i);
  t.strictSame(dups, [], 'no struct is described twice');
});

t.test('every request of the reference §1 tables is exported with its value', async (t) => {
  const exported = new Map([...numbersOf(ioctls, 'ioctls.ts'), ...numbersOf(iommufd, 'iommufd.ts')].map((v) => [v.name, v.value]));
  const wrong = Object.entries(REFERENCE_REQUESTS).flatMap(([name, req]) =>
    exported.get(name) === req ? [] : [`${name}: reference 0x${req.toString(16)}, exported ${String(exported.get(name))}`],
  );
  t.strictSame(wrong, []);
});

t.test('table names are plain C identifiers and designators', async (t) => {
  t.strictSame(invalidNames(tables), []);
});

t.test('every C member (hand-copied from the headers) is in the tables, and nothing else', async (t) => {
  t.strictSame(checkMemberLists(tables), []);
});

t.test('the tables match the 6.12 headers', { skip: haveGcc() ? false : 'gcc is not installed: cannot compile the layout probe' }, async (t) => {
  const result = runCProgram(buildLayoutProgram(tables));
  if (!result.ok) {
    t.fail(`the layout probe does not compile; names the C headers do not know, or bad member lists:\n${result.errors.join('\n')}`);
    return;
  }
  const c = parseCOutput(result.stdout);
  const nFields = tables.layouts.reduce((n, e) => n + Object.keys(e.layout.fields).length, 0);
  t.strictSame(checkStructs(tables, c), [], `sizeof of ${tables.layouts.length} structs, offset/size/sign of ${nFields} fields`);
  t.strictSame(checkTiling(tables, c), [], 'the member lists tile each struct: none is missing');
  t.strictSame(checkValues(tables, c, UNSIGNED_VIEW), [], `${tables.values.length} request numbers and constants; post-6.12 names absent`);
});

/*
 * The checks above only prove something if they can fail: feed them wrong
 * tables and make sure each kind of mistake is reported.
 */
t.test('the layout checks catch wrong tables', { skip: haveGcc() ? false : 'gcc is not installed' }, async (t) => {
  const wrong: LayoutInput = {
    layouts: [
      // size at 24 instead of 16, offset (u64) at 16 instead of 24
      {
        layout: struct('vfio_region_info', 32, {
          argsz: u32(0),
          flags: u32(4),
          index: u32(8),
          cap_offset: u32(12),
          size: u64(24),
          offset: u64(16),
        }),
        origin: 'mutant',
      },
      // wrong sizeof; `next` declared u16
      { layout: struct('vfio_info_cap_header', 12, { id: u16(0), version: u16(2), next: u16(4) }), origin: 'mutant' },
      // fd declared unsigned
      {
        layout: struct('vfio_device_ioeventfd', 32, {
          argsz: u32(0),
          flags: u32(4),
          offset: u64(8),
          data: u64(16),
          fd: u32(24),
          reserved: u32(28),
        }),
        origin: 'mutant',
      },
      // `reserved` left out of both the table and the member list
      { layout: struct('vfio_region_info_cap_type', 16, { header: bytes(0), type: u32(8) }), origin: 'mutant' },
      // a scalar declared as bytes
      { layout: struct('vfio_group_status', 8, { argsz: u32(0), flags: bytes(4) }), origin: 'mutant' },
    ],
    values: [
      { name: 'VFIO_DEVICE_FEATURE', value: 0x3b76, origin: 'mutant' },
      { name: 'VFIO_REGION_TYPE_PCI_VENDOR_TYPE', value: 2 ** 31, origin: 'mutant' },
      { name: 'VFIO_PCI_DEVID_NOT_OWNED', value: 0xffffffff, origin: 'mutant' },
    ],
    members: {
      ...C_MEMBERS,
      vfio_region_info_cap_type: ['header', 'type'],
      vfio_device_ioeventfd: ['argsz', 'flags', 'offset', 'data', 'fd', 'reserved', 'extra'],
    },
    absent: ['VFIO_DEVICE_FEATURE_MIGRATION'],
  };
  const broken = runCProgram(buildLayoutProgram(wrong));
  t.notOk(broken.ok, 'a member list naming a member the header lacks does not compile');
  if (!broken.ok) t.match(broken.errors.join('\n'), /vfio_device_ioeventfd member extra: .*no member named 'extra'/);

  const unknown = runCProgram(
    buildLayoutProgram({ layouts: [], values: [{ name: 'VFIO_NO_SUCH_THING', value: 1, origin: 'mutant' }], members: {}, absent: [] }),
  );
  t.notOk(unknown.ok, 'a constant the header does not define does not compile');
  if (!unknown.ok) t.match(unknown.errors.join('\n'), /mutant VFIO_NO_SUCH_THING: .*undeclared/);

  const fixedMembers = { ...wrong, members: { ...wrong.members, vfio_device_ioeventfd: C_MEMBERS['vfio_device_ioeventfd'] ?? [] } };
  const run = runCProgram(buildLayoutProgram(fixedMembers));
  if (!run.ok) {
    t.fail(run.errors.join('\n'));
    return;
  }
  const c = parseCOutput(run.stdout);
  const structs = checkStructs(fixedMembers, c).join('\n');
  t.match(structs, /vfio_region_info\.size: offsetof is 16 in C, 24 in the table/);
  t.match(structs, /vfio_region_info\.offset: offsetof is 24 in C, 16 in the table/);
  t.match(structs, /vfio_info_cap_header: sizeof is 8 in C, 12 in the table/);
  t.match(structs, /vfio_info_cap_header\.next: u16 is 2 bytes, the C member is 4/);
  t.match(structs, /vfio_device_ioeventfd\.fd: declared u32, the C member is signed/);
  t.match(structs, /vfio_group_status\.flags: declared bytes, but C has a scalar/);
  t.match(checkTiling(fixedMembers, c).join('\n'), /vfio_region_info_cap_type: sizeof is 16, but the listed members end at 12/);
  t.match(checkMemberLists({ ...fixedMembers, members: C_MEMBERS }).join('\n'), /vfio_region_info_cap_type: C member subtype is missing from the table/);
  const values = checkValues(fixedMembers, c, new Set()).join('\n');
  t.match(values, /VFIO_DEVICE_FEATURE: C says 15221 \(0x3b75\), the table says 15222/);
  t.match(values, /VFIO_REGION_TYPE_PCI_VENDOR_TYPE: C says -2147483648/, 'the unsigned view is only taken when asked for');
  t.match(values, /VFIO_PCI_DEVID_NOT_OWNED: C says -1/, 'a signed constant is not read as unsigned');
  t.match(values, /VFIO_DEVICE_FEATURE_MIGRATION is defined by the 6.12 header/);
  t.notMatch(checkValues(fixedMembers, c, UNSIGNED_VIEW).join('\n'), /PCI_VENDOR_TYPE/, 'the unsigned view accepts 2**31');
});
