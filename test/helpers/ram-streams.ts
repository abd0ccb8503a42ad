/**
 * Fixtures for the RAM section tests: a small guest RAM of two blocks, a
 * dirty tracker the test marks by hand, and a savevm stream with a "ram"
 * section (written by `RamSaver`) beside a VFIO device's, with the span of
 * every section for structural mutations.
 */
import { concatBytes } from '../../lib/bytes.js';
import { GuestRam } from '../../lib/migration/guest-ram.js';
import { RAM_SECTION_IDSTR, RAM_SECTION_VERSION } from '../../lib/migration/ram-format.js';
import { RamSaver } from '../../lib/migration/ram-save.js';
import {
  encodeEof,
  encodeFileHeader,
  encodeSectionFooter,
  encodeSectionHeader,
  QEMU_VM_SECTION_END,
  QEMU_VM_SECTION_FULL,
  QEMU_VM_SECTION_PART,
  QEMU_VM_SECTION_START,
  type SectionHeader,
} from '../../lib/migration/sections.js';
import { encodeDataState, encodeDevConfigState, encodeEndOfState, encodeSetupState } from '../../lib/migration/stream.js';
import type { DirtyBitmap } from '../../lib/vfio/dirty-bitmap.js';
import type { DirtyTracker } from '../../lib/vfio/dirty-tracker.js';
import { MemorySink } from './migration-sim.js';
import { CONFIG_SIZE, pattern, type SectionSpan } from './migration-streams.js';

/** A tracker whose syncs report the pages the test {@link mark}s. */
export class ManualTracker implements DirtyTracker {
  readonly kind = 'device-logging';
  readonly reason = 'marked by the test';
  readonly lastError = null;
  tracking = false;
  syncs = 0;
  #marked: number[] = [];

  constructor(readonly pageSize: bigint = 4096n) {}

  /** RAM pages the next sync reports. */
  mark(...pages: number[]): void {
    this.#marked.push(...pages);
  }

  start(): void {
    this.tracking = true;
  }

  stop(): void {
    this.tracking = false;
  }

  sync(bitmap: DirtyBitmap): void {
    this.syncs++;
    for (const p of this.#marked.splice(0)) bitmap.set(p);
  }

  close(): void {
    this.stop();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Two blocks: `pc.ram` (3 pages: content, zero, content) and `vga.vram` (1 page of content). */
export function smallRam(pageSize = 4096): { ram: GuestRam; pcRam: Uint8Array; vram: Uint8Array } {
  const pcRam = new Uint8Array(3 * pageSize);
  pcRam.set(pattern(pageSize, 1), 0);
  pcRam.set(pattern(pageSize, 2), 2 * pageSize);
  const vram = pattern(pageSize, 3);
  const ram = new GuestRam(
    [
      { name: 'pc.ram', memory: pcRam, iova: 0n },
      { name: 'vga.vram', memory: vram, iova: 0x100000n },
    ],
    { pageSize },
  );
  return { ram, pcRam, vram };
}

/** The same geometry, zeroed: a destination for {@link smallRam}. */
export function blankRam(pageSize = 4096): GuestRam {
  const { ram } = smallRam(pageSize);
  return new GuestRam(ram.blocks.map((b) => ({ name: b.name, memory: new Uint8Array(b.length), iova: b.iova })), { pageSize });
}

/** A savevm stream with RAM, its sections' spans, and the RAM it carries. */
export interface RamStream {
  readonly bytes: Uint8Array;
  readonly sections: readonly SectionSpan[];
  /** The source RAM after the stream's last page was taken. */
  readonly pcRam: Uint8Array;
  readonly vram: Uint8Array;
}

/** The device beside the RAM in {@link ramStream}. */
export const RAM_STREAM_DEVICE = 'dev/vfio';

/**
 * QEMU's order, as the runner writes it: START ram and START device; a PART
 * of each (every page, written once the block list is out); a PART of RAM
 * with one page of each block, rewritten; END ram (one page, CONTINUE across
 * sections) and END device; FULL device; EOF.
 */
export async function ramStream(pageSize = 4096): Promise<RamStream> {
  const { ram, pcRam, vram } = smallRam(pageSize);
  const tracker = new ManualTracker(BigInt(pageSize));
  const saver = new RamSaver({ ram, tracker, batchPages: 2 });
  const sink = new MemorySink();
  const header = encodeFileHeader();
  const parts: Uint8Array[] = [header];
  const sections: SectionSpan[] = [];
  let length = header.byteLength;
  const put = (h: SectionHeader, ...content: Uint8Array[]): void => {
    const bytes = concatBytes([encodeSectionHeader(h), ...content, encodeSectionFooter(h.sectionId)]);
    sections.push({ start: length, end: length + bytes.byteLength });
    parts.push(bytes);
    length += bytes.byteLength;
  };
  const ramHeader = { sectionId: 2, idstr: RAM_SECTION_IDSTR, instanceId: 0, versionId: RAM_SECTION_VERSION } as const;
  const devHeader = { sectionId: 1, idstr: RAM_STREAM_DEVICE, instanceId: 0, versionId: 1 } as const;
  await saver.saveSetup(sink);
  put({ type: QEMU_VM_SECTION_START, ...ramHeader }, sink.take());
  put({ type: QEMU_VM_SECTION_START, ...devHeader }, encodeSetupState());
  await saver.saveLiveIterate(sink);
  put({ type: QEMU_VM_SECTION_PART, sectionId: 2 }, sink.take());
  put({ type: QEMU_VM_SECTION_PART, sectionId: 1 }, encodeDataState(pattern(20, 9)), encodeEndOfState());
  pcRam.set(pattern(pageSize, 4), pageSize);
  vram.fill(0);
  tracker.mark(1, 3);
  await saver.saveLiveIterate(sink);
  put({ type: QEMU_VM_SECTION_PART, sectionId: 2 }, sink.take());
  vram.set(pattern(pageSize, 5));
  tracker.mark(3);
  await saver.saveLiveCompletePrecopy(sink);
  put({ type: QEMU_VM_SECTION_END, sectionId: 2 }, sink.take());
  put({ type: QEMU_VM_SECTION_END, sectionId: 1 }, encodeEndOfState());
  put({ type: QEMU_VM_SECTION_FULL, ...devHeader }, encodeDevConfigState(pattern(CONFIG_SIZE, 6)));
  parts.push(encodeEof());
  saver.close();
  return { bytes: concatBytes(parts), sections, pcRam, vram };
}
