/**
 * Fuzzing the framing parsers over vfio-ts's opt-in config-before-data
 * records, with the mutations of test/helpers/stream-fuzz.ts: a reader that
 * accepts the mode must, whatever the input, accept it or throw a
 * StreamFormatError within the work bound; a default reader must never
 * accept a stream that declares the mode.
 *
 * The PRNG seed is fixed so a failure reproduces; set FUZZ_SEED to explore.
 */
import t from 'tap';
import { StreamFormatError } from '../lib/errors.js';
import { SavevmParser } from '../lib/migration/sections.js';
import {
  encodeConfigBeforeDataSetup,
  encodeDataState,
  encodeDevConfigNoIrq,
  encodeDevConfigState,
  encodeEnableIrq,
  encodeEndOfState,
  encodeSetupState,
  VfioStreamParser,
} from '../lib/migration/stream.js';
import { configFirstStream } from './helpers/config-first-streams.js';
import { CONFIG_SIZE, pattern, prng, StreamBuilder, typicalStream, type BuiltStream } from './helpers/migration-streams.js';
import { BYTE_MUTATIONS, SECTION_MUTATIONS, SEED, chunksOf, fuzzSavevm, fuzzVfio, fuzzVfioOptions, pick } from './helpers/stream-fuzz.js';

const SAVEVM_CASES = 6_000;
const VFIO_CASES = 4_000;

/** Streams in the mode, one QEMU stream (the mode's readers take both), and two devices with one in each format. */
function corpus(): BuiltStream[] {
  const mixed = new StreamBuilder()
    .fileHeader()
    .full('start', 2, 'dev-a/vfio', [encodeConfigBeforeDataSetup()])
    .full('start', 3, 'dev-b/vfio', [encodeSetupState()])
    .part('end', 2, [encodeDevConfigNoIrq(pattern(CONFIG_SIZE, 1)), encodeDataState(pattern(60, 2)), encodeEndOfState()])
    .part('end', 3, [encodeDataState(pattern(20, 3)), encodeEndOfState()])
    .full('full', 2, 'dev-a/vfio', [encodeEnableIrq()])
    .full('full', 3, 'dev-b/vfio', [encodeDevConfigState(pattern(CONFIG_SIZE, 4))])
    .eof()
    .build();
  return [configFirstStream(), configFirstStream({ fileHeader: false, sectionId: 0 }), mixed, typicalStream()];
}


t.test(`savevm + VFIO parsers in the mode on ${SAVEVM_CASES} mutated streams (seed ${SEED})`, async (t) => {
  fuzzSavevm(t, {
    label: 'savevm config-first',
    cases: SAVEVM_CASES,
    rng: prng(SEED ^ 0x0c0f1600),
    bases: corpus(),
    sectionMutations: SECTION_MUTATIONS,
    byteMutations: BYTE_MUTATIONS,
    parser: (rng) => {
      const vfio = fuzzVfioOptions(rng, { configBeforeData: true });
      return new SavevmParser({ device: (h) => (h.idstr.length === 0 ? undefined : vfio) });
    },
    minKinds: 15,
  });
});

t.test(`VFIO stream parser in the mode on ${VFIO_CASES} mutated device streams (seed ${SEED})`, async (t) => {
  fuzzVfio(t, {
    label: 'vfio config-first',
    cases: VFIO_CASES,
    rng: prng(SEED ^ 0x5a5a0c0f),
    bases: corpus().map((s) => s.vfioOnly),
    byteMutations: BYTE_MUTATIONS,
    parser: (rng) => new VfioStreamParser(fuzzVfioOptions(rng, { configBeforeData: true })),
    minKinds: 8,
  });
});

t.test('a default reader never accepts a stream that declares the mode', async (t) => {
  const rng = prng(SEED ^ 0x00defa17);
  const declared = configFirstStream({ fileHeader: false }).vfioOnly;
  let accepted = 0;
  for (let i = 0; i < 1000; i++) {
    // Mutations after the declaration keep it: the reader must still refuse at byte 0.
    const tail = pick(rng, BYTE_MUTATIONS)[1](declared.subarray(8), rng);
    const bytes = new Uint8Array(8 + tail.length);
    bytes.set(declared.subarray(0, 8));
    bytes.set(tail, 8);
    try {
      const p = new VfioStreamParser({ configStateSize: CONFIG_SIZE });
      for (const c of chunksOf(bytes, rng)) p.push(c);
      p.end();
      accepted++;
    } catch (err) {
      if (!(err instanceof StreamFormatError) || err.offset !== 0) t.fail(`input ${i}: ${String(err)}`);
    }
  }
  t.equal(accepted, 0);
});
