/**
 * vfio-pci's virtualized config space (drivers/vfio/pci/vfio_pci_config.c,
 * Linux 6.12): at each open the kernel copies the header and every
 * capability it knows into `vconfig`, records which capability owns each
 * byte (`pci_config_map`), hides the capabilities it does not expose by
 * relinking the chain, and then serves every CONFIG-region access through
 * the permission tables of `vfio-pci-perms.ts`, in naturally aligned chunks
 * that never cross a capability or a dword.
 */
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_5,
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_CAPABILITY_LIST,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_PM,
  PCI_CAP_LIST_NEXT,
  PCI_CFG_SPACE_SIZE,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_EXP_FLAGS,
  PCI_EXP_FLAGS_TYPE,
  PCI_EXP_FLAGS_VERS,
  PCI_EXP_TYPE_RC_END,
  PCI_EXT_CAP_ID_DVSEC,
  PCI_EXT_CAP_ID_REBAR,
  PCI_EXT_CAP_ID_VNDR,
  PCI_MSI_FLAGS,
  PCI_PM_CTRL,
  PCI_ROM_ADDRESS,
  PCI_ROM_ADDRESS_ENABLE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STD_HEADER_SIZEOF,
  PCI_STD_NUM_BARS,
  pciExtCapId,
  pciExtCapNext,
} from '../pci/regs.js';
import { fail } from './errno.js';
import type { SimPciFunction } from './pci-function.js';
import { capPerm, ecapPerm, getLe, hidePme, msiPerm, setLe, UNASSIGNED, type Perm, type PermContext } from './vfio-pci-perms.js';

/** `PCI_CAP_ID_INVALID`: a byte no capability owns. */
const CAP_INVALID = 0xff;
/** `PCI_CAP_ID_BASIC`: the header's fake capability id. */
const CAP_BASIC = 0;

/** `pci_cap_length[]`: 0 hides the capability, 0xff means "compute it". */
const CAP_LENGTH = [64, 8, 12, 8, 0, 0xff, 0, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 12, 0xff, 6];
/** `pci_ext_cap_length[]` (ids 0x00-0x23; missing ids are 0, hidden). */
const EXT_CAP_LENGTH = new Map<number, number>([
  [0x01, 0x2c], [0x02, 0xff], [0x03, 12], [0x04, 0x10], [0x08, 0xff], [0x09, 0xff], [0x0b, 0xff], [0x0d, 0xff],
  [0x0e, 8], [0x0f, 8], [0x10, 0x40], [0x12, 40], [0x13, 16], [0x15, 0xff], [0x16, 0xff], [0x17, 0xff], [0x18, 8], [0x23, 0xff],
]);

/** What the config code needs from the rest of the driver. */
export interface VfioPciConfigDriver {
  /** `vdev->irq_type == VFIO_PCI_MSI_IRQ_INDEX`. */
  msiActive(): boolean;
  /** `vdev->msi_qmax`. */
  msiQmax(): number;
  /** INTx disable changed in vconfig: `vfio_pci_intx_mask` / `vfio_pci_intx_unmask`. */
  virtIntxDisable(disabled: boolean): void;
  /** `pci_try_reset_function` for an FLR write. */
  resetFunction(): void;
}

export class VfioPciConfig implements PermContext {
  readonly vconfig: Uint8Array;
  /** `pci_config_map`: the capability id owning each byte. */
  readonly map: Uint8Array;
  #bardirty = true;
  #extendedCaps = false;
  #msiPerm: Perm | null = null;
  /** The BARs as the host assigned them, for `vfio_bar_restore`. */
  readonly #rbar: number[] = [];

  /** `vfio_config_init`. */
  constructor(
    private readonly fn: SimPciFunction,
    private readonly driver: VfioPciConfigDriver,
  ) {
    this.vconfig = new Uint8Array(fn.cfgSize);
    this.map = new Uint8Array(fn.cfgSize).fill(CAP_INVALID);
    this.map.fill(CAP_BASIC, 0, PCI_STD_HEADER_SIZEOF);
    this.#fill(0, PCI_STD_HEADER_SIZEOF);
    for (let at = PCI_BASE_ADDRESS_0; at <= PCI_BASE_ADDRESS_5; at += 4) this.#rbar.push(getLe(this.vconfig, at, 4));
    this.#rbar.push(getLe(this.vconfig, PCI_ROM_ADDRESS, 4));
    this.#capInit();
    this.#ecapInit();
  }

  /** `__vfio_pci_memory_enabled`: memory decode on in vconfig and the function in D0-D2. */
  memoryEnabled(): boolean {
    return this.fn.powerState < 3 && (getLe(this.vconfig, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY) !== 0;
  }

  /**
   * `vfio_pci_config_rw`: one pread/pwrite of the CONFIG region, chopped
   * into accesses. Fails as a whole on the first failing chunk.
   */
  rw(buf: Uint8Array, pos: number, write: boolean): number {
    let done = 0;
    while (done < buf.byteLength) done += this.#doRw(buf.subarray(done), pos + done, write);
    return done;
  }

  // ------------------------------------------------------------ PermContext

  hwRead(pos: number, count: number): number {
    return this.fn.configRead(pos, count as 1 | 2 | 4);
  }

  hwWrite(pos: number, count: number, value: number): void {
    this.fn.configWrite(pos, count as 1 | 2 | 4, value);
  }

  /** `vfio_find_cap_start`. */
  capStart(pos: number): number {
    const cap = this.map[pos];
    if (cap === CAP_BASIC) return 0;
    const base = pos >= PCI_CFG_SPACE_SIZE ? PCI_CFG_SPACE_SIZE : PCI_STD_HEADER_SIZEOF;
    let at = pos;
    while (at - 1 >= base && this.map[at - 1] === cap) at--;
    return at;
  }

  /** `vfio_bar_fixup`: BAR sizing as hardware answers it, from the host's resources. */
  barFixup(): void {
    if (!this.#bardirty) return;
    for (let i = 0; i < PCI_STD_NUM_BARS; i++) {
      const at = PCI_BASE_ADDRESS_0 + 4 * i;
      const bar = this.fn.bars[i];
      if (bar === undefined) {
        setLe(this.vconfig, at, 4, 0);
        continue;
      }
      const mask = BigInt.asUintN(64, ~(BigInt(bar.size) - 1n));
      const flags = bar.kind === 'io' ? PCI_BASE_ADDRESS_SPACE_IO : (bar.prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0) | (bar.kind === 'mem64' ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0);
      const v = ((getLe(this.vconfig, at, 4) & Number(mask & 0xffff_ffffn)) | flags) >>> 0;
      setLe(this.vconfig, at, 4, v);
      if ((v & PCI_BASE_ADDRESS_MEM_TYPE_64) !== 0 && bar.kind !== 'io') {
        setLe(this.vconfig, at + 4, 4, (getLe(this.vconfig, at + 4, 4) & Number(mask >> 32n)) >>> 0);
        i++;
      }
    }
    if (this.fn.rom !== undefined) {
      const mask = (~(romBarSize(this.fn.rom) - 1) | PCI_ROM_ADDRESS_ENABLE) >>> 0;
      setLe(this.vconfig, PCI_ROM_ADDRESS, 4, (getLe(this.vconfig, PCI_ROM_ADDRESS, 4) & mask) >>> 0);
    } else setLe(this.vconfig, PCI_ROM_ADDRESS, 4, 0);
    this.#bardirty = false;
  }

  barsWritten(): void {
    this.#bardirty = true;
  }

  /**
   * The check of `vfio_basic_config_write`: enabling decode the user thinks is
   * on while the device has it off, or BARs that no longer hold the host's
   * addresses, mean a backdoor reset; the host's BARs are written back.
   */
  barRestoreCheck(newCmd: number, virtCmd: number): void {
    const phys = this.hwRead(PCI_COMMAND, 2);
    const mem = (c: number): boolean => (c & PCI_COMMAND_MEMORY) !== 0;
    const io = (c: number): boolean => (c & PCI_COMMAND_IO) !== 0;
    const needRestore = this.#rbar.slice(0, PCI_STD_NUM_BARS).some((r, i) => r !== 0 && this.hwRead(PCI_BASE_ADDRESS_0 + 4 * i, 4) !== r);
    if ((mem(newCmd) && mem(virtCmd) && !mem(phys)) || (io(newCmd) && io(virtCmd) && !io(phys)) || needRestore) {
      this.#rbar.forEach((r, i) => this.hwWrite(i < PCI_STD_NUM_BARS ? PCI_BASE_ADDRESS_0 + 4 * i : PCI_ROM_ADDRESS, 4, r));
    }
  }

  virtIntxDisable(disabled: boolean): void {
    this.driver.virtIntxDisable(disabled);
  }

  msiActive(): boolean {
    return this.driver.msiActive();
  }

  msiQmax(): number {
    return this.driver.msiQmax();
  }

  /** `pci_set_power_state`, D0 to D3hot. */
  setPowerState(state: number): void {
    const at = this.fn.pmCap + PCI_PM_CTRL;
    if (this.fn.pmCap !== 0) this.fn.configWrite(at, 2, (this.fn.configRead(at, 2) & ~3) | state);
  }

  resetFunction(): void {
    this.driver.resetFunction();
  }

  // ------------------------------------------------------------ internals

  /** `vfio_config_do_rw`: one chunk; returns its size. */
  #doRw(buf: Uint8Array, pos: number, write: boolean): number {
    const size = this.fn.cfgSize;
    if (pos < 0 || pos >= size || pos + buf.byteLength > size) fail('EFAULT');
    let count = Math.min(buf.byteLength, this.#remainingDword(pos));
    if (count >= 4 && pos % 4 === 0) count = 4;
    else if (count >= 2 && pos % 2 === 0) count = 2;
    else count = 1;
    const capId = this.map[pos] ?? CAP_INVALID;
    let perm: Perm;
    let capStart = 0;
    if (capId === CAP_INVALID) {
      perm = UNASSIGNED;
      capStart = pos;
    } else if (pos >= PCI_CFG_SPACE_SIZE) {
      perm = ecapPerm(capId);
      capStart = this.capStart(pos);
    } else {
      perm = capId === PCI_CAP_ID_MSI && this.#msiPerm !== null ? this.#msiPerm : capPerm(capId);
      if (capId > CAP_BASIC) capStart = this.capStart(pos);
    }
    const offset = pos - capStart;
    if (write) {
      perm.writeFn?.(this, pos, count, perm, offset, getLe(buf, 0, count));
    } else {
      setLe(buf, 0, count, perm.read(this, pos, count, perm, offset));
    }
    return count;
  }

  /** `vfio_pci_cap_remaining_dword`. */
  #remainingDword(pos: number): number {
    const cap = this.map[pos];
    let i = 1;
    while ((pos + i) % 4 !== 0 && this.map[pos + i] === cap) i++;
    return i;
  }

  /** `vfio_fill_vconfig_bytes`: copies the device's bytes, in dwords where aligned. */
  #fill(offset: number, size: number): void {
    for (let at = offset; at < offset + size; ) {
      const left = offset + size - at;
      const n = left >= 4 && at % 4 === 0 ? 4 : left >= 2 && at % 2 === 0 ? 2 : 1;
      setLe(this.vconfig, at, n, this.hwRead(at, n));
      at += n;
    }
  }

  /** `vfio_cap_init`: walks the device's chain, keeping the capabilities vfio-pci knows. */
  #capInit(): void {
    if ((this.hwRead(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST) === 0) return;
    let pos = this.hwRead(PCI_CAPABILITY_LIST, 1);
    let prev = PCI_CAPABILITY_LIST;
    let caps = 0;
    for (let loops = (PCI_CFG_SPACE_SIZE - PCI_STD_HEADER_SIZEOF) / 4; pos !== 0 && loops > 0; loops--) {
      const cap = this.hwRead(pos, 1);
      const next = this.hwRead(pos + PCI_CAP_LIST_NEXT, 1);
      let len = 0;
      if (cap !== 0 && cap < CAP_LENGTH.length) {
        len = CAP_LENGTH[cap] ?? 0;
        if (len === 0xff) len = this.#capLen(cap, pos);
      }
      if (len === 0) {
        this.vconfig[prev] = next;
        pos = next;
        continue;
      }
      const end = Math.min(pos + len, this.fn.cfgSize);
      this.map.fill(cap, pos, end);
      this.#fill(pos, end - pos);
      if (cap === PCI_CAP_ID_PM) hidePme(this.vconfig, pos);
      prev = pos + PCI_CAP_LIST_NEXT;
      pos = next;
      caps++;
    }
    if (caps === 0) setLe(this.vconfig, PCI_STATUS, 2, getLe(this.vconfig, PCI_STATUS, 2) & ~PCI_STATUS_CAP_LIST);
  }

  /** `vfio_cap_len` for the variable-length standard capabilities. */
  #capLen(cap: number, pos: number): number {
    switch (cap) {
      case PCI_CAP_ID_MSI: {
        const { perm, len } = msiPerm(this.hwRead(pos + PCI_MSI_FLAGS, 2));
        this.#msiPerm ??= perm;
        return len;
      }
      case 0x07: // PCI-X: version 0 is 8 bytes, later ones 24
        if (((this.hwRead(pos + 2, 2) >> 12) & 3) === 0) return 8;
        this.#probeExtended();
        return 24;
      case 0x09: // vendor-specific: its length byte
        return this.hwRead(pos + 2, 1);
      case PCI_CAP_ID_EXP: {
        this.#probeExtended();
        const flags = this.hwRead(pos + PCI_EXP_FLAGS, 2);
        const rcEnd = (flags & PCI_EXP_FLAGS_TYPE) >> 4 === PCI_EXP_TYPE_RC_END;
        if ((flags & PCI_EXP_FLAGS_VERS) === 1) return rcEnd ? 0x0c : 20;
        return rcEnd ? 0x2c : 0x3c;
      }
      case 0x08: // HyperTransport
        return (this.hwRead(pos + 3, 1) & 0xe0) !== 0 ? 24 : 28;
      case 0x12: // SATA
        return (this.hwRead(pos + 4, 1) & 0xf) === 0xf ? 16 : 8;
      default:
        return 0;
    }
  }

  #probeExtended(): void {
    if (this.fn.cfgSize > PCI_CFG_SPACE_SIZE) this.#extendedCaps = this.hwRead(PCI_CFG_SPACE_SIZE, 4) !== 0;
  }

  /** `vfio_ecap_init`: the extended chain, with unknown capabilities unlinked (or blanked when first). */
  #ecapInit(): void {
    if (!this.#extendedCaps) return;
    let epos = PCI_CFG_SPACE_SIZE;
    let prev = -1;
    let ecaps = 0;
    for (let loops = (this.fn.cfgSize - PCI_CFG_SPACE_SIZE) / 4; loops > 0 && epos >= PCI_CFG_SPACE_SIZE; loops--) {
      const header = this.hwRead(epos, 4);
      const ecap = pciExtCapId(header);
      let len = EXT_CAP_LENGTH.get(ecap) ?? 0;
      if (len === 0xff) len = this.#extCapLen(ecap, epos);
      let hidden = false;
      if (len === 0) {
        if (prev >= 0) {
          epos = pciExtCapNext(header);
          setLe(this.vconfig, prev, 4, ((getLe(this.vconfig, prev, 4) & ~(0xffc << 20)) | (epos << 20)) >>> 0);
          continue;
        }
        len = 4;
        hidden = true;
      }
      const end = Math.min(epos + len, this.fn.cfgSize);
      // The map holds one byte per id; ids above 0xfe would collide with CAP_INVALID (never in 6.12).
      this.map.fill(ecap & 0xff, epos, end);
      this.#fill(epos, end - epos);
      if (hidden) setLe(this.vconfig, epos, 4, (getLe(this.vconfig, epos, 4) & (0xffc << 20)) >>> 0);
      else ecaps++;
      prev = epos;
      epos = pciExtCapNext(header);
    }
    if (ecaps === 0) setLe(this.vconfig, PCI_CFG_SPACE_SIZE, 4, 0);
  }

  /** `vfio_ext_cap_len` for the variable-length extended capabilities the simulator supports. */
  #extCapLen(ecap: number, epos: number): number {
    switch (ecap) {
      case PCI_EXT_CAP_ID_VNDR:
        return this.hwRead(epos + 4, 4) >>> 20;
      case PCI_EXT_CAP_ID_DVSEC:
        return (this.hwRead(epos + 4, 4) >>> 20) & 0xfff;
      case PCI_EXT_CAP_ID_REBAR:
        return 4 + ((this.hwRead(epos + 8, 1) & 0xe0) >> 5) * 8;
      case 0x0d: {
        // ACS: 8 bytes, plus the egress control vector when the capability has one.
        if ((this.hwRead(epos + 4, 1) & 0x20) === 0) return 8;
        const bits = this.hwRead(epos + 5, 1);
        return 8 + (bits !== 0 ? Math.ceil(bits / 32) * 32 : 256) / 8;
      }
      default:
        // VC, MFVC, DPA and TPH lengths are not computed: the simulator hides them.
        return 0;
    }
  }
}

/** The ROM BAR's size: the image rounded up to a power of two, at least 2 KiB (`PCI_ROM_ADDRESS_MASK`). */
export function romBarSize(rom: Uint8Array): number {
  let size = 2048;
  while (size < rom.byteLength) size *= 2;
  return size;
}
