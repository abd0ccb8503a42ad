/**
 * `Region`'s layouts: switching a mapped region between its normal and its
 * saving layout re-maps in place (kept areas stay the same objects, removed
 * ones are revoked and raise MappingRevokedError, never reaching freed
 * memory), accesses to unmapped parts go through pread/pwrite, and an
 * unmapped region remembers the mode for its next mmap.
 */
import t from 'tap';
import { MappingRevokedError, VfioArgumentError, VfioClosedError } from '../lib/errors.js';
import { thrown } from './helpers/expect.js';
import { nextMunmapFails } from './helpers/failing-munmap.js';
import { STATE_SIZE, trapBarPair } from './helpers/sim-trap-bar.js';

const PAGE = 4096;

t.test('relayout of a mapped region: revoked, kept and trapped', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  t.same(bar.mmapLayout('normal'), [
    { offset: 0, size: STATE_SIZE },
    { offset: STATE_SIZE, size: PAGE },
  ]);
  t.same(bar.mmapLayout('saving'), [{ offset: STATE_SIZE, size: PAGE }]);
  t.notOk(bar.mapped);
  const [state, doorbell] = bar.mmap();
  if (state === undefined || doorbell === undefined) throw new Error('two areas');
  t.ok(bar.mapped);
  t.equal(bar.mmap()[0], state, 'mmap is idempotent while mapped');
  state.write32(0, 0x1234);

  p.kernel.startTrace();
  bar.relayout('saving');
  t.same(p.kernel.stopTrace(), [], 'narrowing makes no system call: it only unmaps');
  t.equal(bar.layoutMode, 'saving');
  t.same(bar.areas, [doorbell]);
  t.notOk(state.mapped);
  for (const [what, access] of [
    ['read32', () => state.read32(0)],
    ['write8', () => state.write8(0, 1)],
    ['copyOut', () => state.copyOut(0, 16)],
    ['copyIn', () => state.copyIn(0, new Uint8Array(4))],
    ['address', () => state.address],
  ] as const) {
    const e = thrown(access);
    t.type(e, MappingRevokedError, `${what} on the stale view`);
    t.match(e, { code: 'ERR_VFIO_MAPPING_REVOKED' });
  }
  t.equal(doorbell.read32(0), 0, 'the kept area works');

  // The state is still there, through the kernel.
  p.kernel.startTrace();
  t.equal(bar.read32(0), 0x1234);
  bar.write32(4, 0x5678);
  t.same(bar.readBytes(0, 8), Uint8Array.of(0x34, 0x12, 0, 0, 0x78, 0x56, 0, 0));
  t.same(
    p.kernel.stopTrace().map((r) => [r.syscall, r.offset]),
    [
      ['pread', 0n],
      ['pwrite', 4n],
      ['pread', 0n],
    ],
  );

  bar.relayout('saving');
  t.same(bar.areas, [doorbell], 'idempotent');
  bar.relayout('normal');
  t.equal(bar.layoutMode, 'normal');
  t.equal(bar.areas.length, 2);
  t.equal(bar.areas[1], doorbell);
  t.equal(bar.areas[0]?.read32(4), 0x5678, 'a fresh view of the same state');
  t.type(thrown(() => state.read32(0)), MappingRevokedError, 'the old view stays revoked');
});

t.test('an unmapped region keeps the mode for its next mmap; refresh keeps the mode', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  bar.relayout('saving');
  t.same(bar.areas, []);
  t.same(
    bar.mmap().map((a) => a.offset),
    [STATE_SIZE],
    'mapped in the saving layout',
  );
  bar.refresh();
  t.equal(bar.layoutMode, 'saving');
  t.equal(bar.areas.length, 1);
  bar.unmap();
  t.notOk(bar.mapped);
  bar.relayout('normal');
  t.same(bar.areas, [], 'nothing mapped after unmap');

  // A region without a saving layout: both modes are the same.
  const cfg = p.src.device.region(7);
  t.equal(cfg.savingLayout, undefined);
  t.same(cfg.mmapLayout('saving'), cfg.mmapLayout('normal'));
  cfg.relayout('saving');
  t.type(thrown(() => cfg.mmap()), VfioArgumentError, 'a region that cannot be mmapped still refuses');

  bar.close();
  t.type(thrown(() => bar.relayout('saving')), VfioClosedError);
});

t.test('a failed mmap while widening: the areas mapped so far stay, the next relayout completes it', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  bar.mmap();
  bar.relayout('saving');
  p.kernel.faults.inject({ syscall: 'mmap', label: p.src.sim.name, nth: 1, errno: 'ENOMEM' });
  t.match(thrown(() => bar.relayout('normal')), { code: 'ENOMEM', op: 'mmap region 0' });
  t.equal(bar.layoutMode, 'normal');
  t.equal(bar.areas.length, 1);
  bar.relayout('normal');
  t.equal(bar.areas.length, 2);
  t.equal(p.src.sim.barMappings, 2);
});

t.test('a munmap that fails: the other areas are unmapped all the same, and every area is revoked', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  t.teardown(nextMunmapFails(p.kernel));
  const [state, doorbell] = bar.mmap();
  if (state === undefined || doorbell === undefined) throw new Error('two areas');
  t.equal(p.src.sim.barMappings, 2);
  t.match(thrown(() => bar.unmap()), { code: 'EIO', syscall: 'munmap' }, 'the failure is reported');
  t.notOk(bar.mapped);
  t.same(bar.areas, []);
  t.type(thrown(() => state.read32(0)), MappingRevokedError, 'the area whose munmap failed is revoked');
  t.type(thrown(() => doorbell.read32(0)), MappingRevokedError, 'the area after it is revoked');
  t.notOk(doorbell.mapped);
  t.equal(p.src.sim.barMappings, 1, 'and unmapped: only the failed one is left');
  bar.close();
  bar.close();
  t.ok(bar.closed, 'closing after the failure is fine, and idempotent');
});

t.test('a munmap that fails while narrowing: the rest of what the layout lost is unmapped too', async (t) => {
  using p = trapBarPair();
  const bar = p.src.device.region(0);
  // Three areas, two of which the saving layout drops.
  p.src.sim.setBarLayout([
    { offset: 0, size: STATE_SIZE / 2 },
    { offset: STATE_SIZE / 2, size: STATE_SIZE / 2 },
    { offset: STATE_SIZE, size: PAGE },
  ]);
  bar.refresh();
  t.teardown(nextMunmapFails(p.kernel));
  const [low, high, doorbell] = bar.mmap();
  if (low === undefined || high === undefined || doorbell === undefined) throw new Error('three areas');
  t.match(thrown(() => bar.relayout('saving')), { code: 'EIO' });
  t.same(bar.areas, [doorbell], 'only the saving layout is listed');
  t.notOk(high.mapped, 'the second area that left the layout was unmapped');
  t.type(thrown(() => high.read32(0)), MappingRevokedError);
  t.type(thrown(() => low.read32(0)), MappingRevokedError);
  t.equal(p.src.sim.barMappings, 2, 'the failed one and the doorbell');
});
