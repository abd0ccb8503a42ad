/**
 * Streams in vfio-ts's opt-in config-before-data mode (README "Config-state
 * ordering and the opt-in mode"), built from the writers of
 * lib/migration/stream.ts, for the framing tests and the fuzz.
 */
import { encodeConfigBeforeDataSetup, encodeDataState, encodeDevConfigNoIrq, encodeEnableIrq, encodeEndOfState, encodeInitDataSent } from '../../lib/migration/stream.js';
import { CONFIG_SIZE, IDSTR, pattern, StreamBuilder, type BuiltStream } from './migration-streams.js';

/**
 * The typical stream of a PRE_COPY device with switchover-ack in the mode:
 * START [CONFIG_BEFORE_DATA, SETUP, END]; PART [CONFIG_NO_IRQ, DATA, END];
 * PART [END]; PART [DATA, INIT_DATA_SENT]; END [CONFIG_NO_IRQ (changed),
 * DATA, DATA, END]; FULL [ENABLE_IRQ, END].
 */
export function configFirstStream(options: { fileHeader?: boolean; sectionId?: number } = {}): BuiltStream {
  const id = options.sectionId ?? 2;
  const b = new StreamBuilder();
  if (options.fileHeader ?? true) b.fileHeader();
  return b
    .full('start', id, IDSTR, [encodeConfigBeforeDataSetup()])
    .part('part', id, [encodeDevConfigNoIrq(pattern(CONFIG_SIZE, 0x10)), encodeDataState(pattern(100, 1)), encodeEndOfState()])
    .part('part', id, [encodeEndOfState()])
    .part('part', id, [encodeDataState(pattern(37, 2)), encodeInitDataSent()])
    .part('end', id, [encodeDevConfigNoIrq(pattern(CONFIG_SIZE, 0x20)), encodeDataState(pattern(300, 3)), encodeDataState(pattern(5, 4)), encodeEndOfState()])
    .full('full', id, IDSTR, [encodeEnableIrq()])
    .eof()
    .build();
}
