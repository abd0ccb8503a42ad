/**
 * Fuzzing the savevm and VFIO framing parsers: mutated QEMU-shaped streams
 * (truncations, flipped tags, random bytes, huge sizes, swapped, duplicated
 * and dropped sections, splices) fed in random chunks. Whatever the input,
 * the parsers must either accept it or throw a StreamFormatError, never
 * another error, and their work must stay linear in the input.
 *
 * The PRNG seed is fixed so a failure reproduces; set FUZZ_SEED to explore.
 */
import t from 'tap';
import { SavevmParser } from '../lib/migration/sections.js';
import {
  encodeDevConfigState,
  encodeDataHeader,
  encodeDataState,
  encodeEndOfState,
  encodeInitDataSent,
  encodeSetupState,
  encodeTag,
  VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY,
  VfioStreamParser,
} from '../lib/migration/stream.js';
import { CONFIG_SIZE, pattern, prng, StreamBuilder, typicalStream, type BuiltStream } from './helpers/migration-streams.js';
import { BYTE_MUTATIONS, SECTION_MUTATIONS, SEED, chunksOf, describe, fuzzSavevm, fuzzVfioOptions, int, pick, runOne, type Tally } from './helpers/stream-fuzz.js';

const SAVEVM_CASES = 10_000;
const VFIO_CASES = 5_000;

/** The seed corpus: valid streams of different shapes. */
function corpus(): BuiltStream[] {
  const multi = new StreamBuilder()
    .fileHeader()
    .full('start', 2, 'dev-a/vfio', [encodeSetupState()])
    .full('start', 3, 'dev-b/vfio', [encodeSetupState()])
    .part('part', 2, [encodeDataState(pattern(40, 1)), encodeEndOfState()])
    .part('part', 3, [encodeInitDataSent()])
    .part('end', 2, [encodeDataHeader(0), encodeDataState(pattern(9, 2)), encodeEndOfState()])
    .part('end', 3, [encodeEndOfState()])
    .full('full', 2, 'dev-a/vfio', [encodeDevConfigState(pattern(CONFIG_SIZE, 3))])
    .full('full', 3, 'dev-b/vfio', [encodeTag(VFIO_MIG_FLAG_DEV_CONFIG_LOAD_READY)])
    .eof()
    .build();
  const big = new StreamBuilder()
    .full('start', 7, 'big/vfio', [encodeSetupState()])
    .part('end', 7, [encodeDataState(pattern(1500, 4)), encodeDataState(pattern(700, 5)), encodeEndOfState()])
    .eof()
    .build();
  return [typicalStream(), typicalStream({ fileHeader: false, sectionId: 0 }), multi, big];
}


t.test(`savevm + VFIO parsers on ${SAVEVM_CASES} mutated streams (seed ${SEED})`, async (t) => {
  fuzzSavevm(t, {
    label: 'savevm',
    cases: SAVEVM_CASES,
    rng: prng(SEED),
    bases: corpus(),
    sectionMutations: SECTION_MUTATIONS,
    byteMutations: BYTE_MUTATIONS,
    parser: (rng) => {
      const vfio = fuzzVfioOptions(rng);
      return new SavevmParser({ device: (h) => (h.idstr.length === 0 ? undefined : vfio) });
    },
    minKinds: 20,
  });
});

t.test(`VFIO stream parser alone on ${VFIO_CASES} mutated device streams (seed ${SEED})`, async (t) => {
  const rng = prng(SEED ^ 0xa5a5a5a5);
  const bases = corpus().map((s) => s.vfioOnly);
  const tally: Tally = { accepted: 0, rejected: 0, kinds: new Map(), maxMs: 0 };
  const started = performance.now();
  let failures = 0;
  for (let i = 0; i < VFIO_CASES; i++) {
    let bytes = pick(rng, bases);
    const names: string[] = [];
    for (let n = 1 + int(rng, 3); n > 0; n--) {
      const [name, mutate] = pick(rng, BYTE_MUTATIONS);
      bytes = mutate(bytes, rng);
      names.push(name);
    }
    const options = fuzzVfioOptions(rng);
    const problem = runOne(chunksOf(bytes, rng), () => new VfioStreamParser(options), tally);
    if (problem !== undefined && failures++ < 10) t.fail(describe(`vfio [${names.join(', ')}]`, i, bytes, problem));
  }
  t.equal(failures, 0, 'only StreamFormatError, within the work bound');
  t.ok(tally.accepted > 0 && tally.rejected > 0, `${tally.accepted} accepted, ${tally.rejected} rejected`);
  t.ok(tally.kinds.size >= 10, `${tally.kinds.size} distinct error kinds reached`);
  t.comment(`${VFIO_CASES} VFIO inputs in ${(performance.now() - started).toFixed(0)} ms (slowest input ${tally.maxMs.toFixed(2)} ms)`);
  for (const [kind, count] of [...tally.kinds].sort((a, b) => b[1] - a[1])) t.comment(`  ${count} x ${kind}`);
});
