/**
 * vfio-pci's config-space permission tables (drivers/vfio/pci/vfio_pci_config.c,
 * Linux 6.12): for every byte of the header and of each capability it
 * knows, which bits are virtualized (kept in `vconfig`, never reaching the
 * device) and which are writable, plus the special read and write handlers
 * (BAR sizing and the command register for the header, the power state,
 * FLR through the Express and AF capabilities, MSI's virtualized flags).
 * Capabilities without a table of their own are read-only and read straight
 * from the device, except the next pointer, which the kernel virtualizes so
 * it can hide capabilities.
 */
import { readLe, writeLe } from '../bytes.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_1,
  PCI_BASE_ADDRESS_2,
  PCI_BASE_ADDRESS_3,
  PCI_BASE_ADDRESS_4,
  PCI_BASE_ADDRESS_5,
  PCI_BIST,
  PCI_CACHE_LINE_SIZE,
  PCI_CAPABILITY_LIST,
  PCI_CAP_FLAGS,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_PM,
  PCI_CAP_ID_VNDR,
  PCI_CAP_LIST_ID,
  PCI_CAP_LIST_NEXT,
  PCI_CFG_SPACE_SIZE,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_DEVICE_ID,
  PCI_EXT_CAP_ID_DVSEC,
  PCI_EXT_CAP_ID_ERR,
  PCI_EXT_CAP_ID_MAX,
  PCI_EXT_CAP_ID_PWR,
  PCI_EXT_CAP_ID_VNDR,
  PCI_EXP_DEVCTL,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_LATENCY_TIMER,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_MSI_PENDING_32,
  PCI_MSI_PENDING_64,
  PCI_PM_CTRL,
  PCI_PM_CTRL_STATE_MASK,
  PCI_PM_PMC,
  PCI_ROM_ADDRESS,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STD_HEADER_SIZEOF,
  PCI_VENDOR_ID,
} from '../pci/regs.js';
import { PCI_CAP_EXP_ENDPOINT_SIZEOF_V2, PCI_EXP_DEVCAP_FLR, PCI_EXP_DEVCTL_BCR_FLR } from './pci-config-builder.js';

// pci_regs.h values the permission tables need beyond lib/pci/regs.ts.
const PCI_CAP_ID_AF = 0x13;
const PCI_AF_CAP = 3;
const PCI_AF_CTRL = 4;
const PCI_AF_CAP_TP = 0x01;
const PCI_AF_CAP_FLR = 0x02;
const PCI_AF_CTRL_FLR = 0x01;
const PCI_CAP_AF_SIZEOF = 6;
const PCI_PM_CAP_PME_MASK = 0xf800;
const PCI_PM_CTRL_PME_ENABLE = 0x0100;
const PCI_PM_CTRL_PME_STATUS = 0x8000;
const PCI_EXP_DEVCAP = 0x04;
const PCI_EXP_DEVCTL_PAYLOAD = 0x00e0;
const PCI_EXP_DEVCTL_READRQ = 0x7000;
const PCI_EXP_DEVCTL_PHANTOM = 0x0200;
const PCI_EXP_DEVCTL2 = 0x28;
const PCI_EXP_DEVCTL2_ARI = 0x0020;
const PCI_ERR_UNCOR_STATUS = 0x04;
const PCI_ERR_UNCOR_MASK = 0x08;
const PCI_ERR_UNCOR_SEVER = 0x0c;
const PCI_ERR_COR_STATUS = 0x10;
const PCI_ERR_COR_MASK = 0x14;
const PCI_ERR_CAP = 0x18;
const PCI_ERR_ROOT_COMMAND = 0x2c;
/** PCI_ERR_UNC_UND | DLP | SURPDN | POISON_TLP | FCP | COMP_TIME | COMP_ABORT | UNX_COMP | RX_OVER | MALF_TLP | ECRC | UNSUP | ACSV | INTN | MCBTLP | ATOMEG | TLPPRE */
const PCI_ERR_UNC_WRITABLE = 0x03fff031;
/** PCI_ERR_COR_RCVR | BAD_TLP | BAD_DLLP | REP_ROLL | REP_TIMER | ADV_NFAT | INTERNAL | LOG_OVER */
const PCI_ERR_COR_WRITABLE = 0x0000f1c1;
/** PCI_ERR_CAP_ECRC_GENE | PCI_ERR_CAP_ECRC_CHKE */
const PCI_ERR_CAP_WRITABLE = 0x00000140;
const PCI_PWR_DATA = 0x08;
const PCI_EXT_CAP_PWR_SIZEOF = 0x10;

/** The driver state a permission handler reaches (`struct vfio_pci_core_device`). */
export interface PermContext {
  /** The virtualized config space. */
  readonly vconfig: Uint8Array;
  /** `pci_user_read_config_*` of the device. */
  hwRead(pos: number, count: number): number;
  /** `pci_user_write_config_*` of the device. */
  hwWrite(pos: number, count: number, value: number): void;
  /** `vfio_find_cap_start`. */
  capStart(pos: number): number;
  /** `vfio_bar_fixup`: apply BAR sizing to vconfig when a BAR was written. */
  barFixup(): void;
  /** A BAR register was written (`bardirty`). */
  barsWritten(): void;
  /** `vfio_need_bar_restore` + `vfio_bar_restore`, checked on command writes. */
  barRestoreCheck(newCmd: number, virtCmd: number): void;
  /** INTx disable in vconfig changed (`virq_disabled`, `vfio_pci_intx_mask/unmask`). */
  virtIntxDisable(disabled: boolean): void;
  /** `vdev->irq_type == VFIO_PCI_MSI_IRQ_INDEX`. */
  msiActive(): boolean;
  /** `vdev->msi_qmax`. */
  msiQmax(): number;
  /** `vfio_lock_and_set_power_state`. */
  setPowerState(state: number): void;
  /** `pci_try_reset_function`, as an FLR write asks. */
  resetFunction(): void;
}

/** `perm->readfn`: returns the value read (little-endian, `count` bytes). */
export type PermRead = (c: PermContext, pos: number, count: number, perm: Perm, offset: number) => number;
/** `perm->writefn`. */
export type PermWrite = (c: PermContext, pos: number, count: number, perm: Perm, offset: number, val: number) => void;

/** `struct perm_bits`. */
export interface Perm {
  /** Virtualized bits, per byte of the capability; all zeros for the direct tables. */
  readonly virt: Uint8Array;
  /** Writable bits. */
  readonly write: Uint8Array;
  readonly read: PermRead;
  /** Absent: writes are dropped. */
  readonly writeFn?: PermWrite;
}

const allOnes = (count: number): number => (count === 4 ? 0xffffffff : (1 << (8 * count)) - 1);
/** The little-endian value of `count` (1, 2 or 4) bytes at `at`, as a number. */
export const getLe = (arr: Uint8Array, at: number, count: number): number => Number(readLe(arr, at, count));
/** Stores `count` (1, 2 or 4) bytes of `v` at `at`, little-endian. */
export const setLe = (arr: Uint8Array, at: number, count: number, v: number): void => writeLe(arr, at, count, BigInt(v >>> 0));

/** `vfio_default_config_read`: virtualized bits from vconfig, the rest from the device. */
export const defaultRead: PermRead = (c, pos, count, perm, offset) => {
  let val = getLe(c.vconfig, pos, count);
  const virt = getLe(perm.virt, offset, count);
  if (virt !== allOnes(count)) val = ((c.hwRead(pos, count) & ~virt) | (val & virt)) >>> 0;
  return val;
};

/** `vfio_default_config_write`: writable virtualized bits to vconfig, writable others to the device. */
export const defaultWrite: PermWrite = (c, pos, count, perm, offset, val) => {
  const write = getLe(perm.write, offset, count);
  if (write === 0) return;
  const virt = getLe(perm.virt, offset, count);
  if ((write & virt) !== 0) {
    const v = getLe(c.vconfig, pos, count);
    setLe(c.vconfig, pos, count, ((v & ~(write & virt)) | (val & write & virt)) >>> 0);
  }
  if ((write & ~virt) !== 0) {
    const phys = c.hwRead(pos, count);
    c.hwWrite(pos, count, ((phys & ~(write & ~virt)) | (val & write & ~virt)) >>> 0);
  }
};

/** `vfio_direct_config_read`: the device's value, except the capability id/next bytes (and ext header) from vconfig. */
export const directRead: PermRead = (c, pos, count, _perm, offset) => {
  let val = c.hwRead(pos, count);
  const mix = (n: number): number => {
    const keep = n === 4 ? 0 : ~allOnes(n);
    return ((val & keep) | getLe(c.vconfig, pos, n)) >>> 0;
  };
  if (pos >= PCI_CFG_SPACE_SIZE) {
    if (offset < 4) val = mix(count);
  } else if (pos >= PCI_STD_HEADER_SIZEOF) {
    if (offset === PCI_CAP_LIST_ID && count > 1) val = mix(Math.min(PCI_CAP_FLAGS, count));
    else if (offset === PCI_CAP_LIST_NEXT) val = mix(1);
  }
  return val;
};

/** `vfio_raw_config_read` / `vfio_raw_config_write`: straight to the device. */
const rawRead: PermRead = (c, pos, count) => c.hwRead(pos, count);
export const rawWrite: PermWrite = (c, pos, count, _perm, _offset, val) => c.hwWrite(pos, count, val);

/** `alloc_perm_bits`: all readable, nothing writable or virtualized, sizes rounded up to dwords. */
function allocPerm(size: number, read: PermRead = defaultRead, writeFn: PermWrite = defaultWrite): { virt: Uint8Array; write: Uint8Array; read: PermRead; writeFn: PermWrite } {
  const n = Math.ceil(size / 4) * 4;
  return { virt: new Uint8Array(n), write: new Uint8Array(n), read, writeFn };
}

function p(perm: { virt: Uint8Array; write: Uint8Array }, off: number, width: 1 | 2 | 4, virt: number, write: number): void {
  setLe(perm.virt, off, width, virt >>> 0);
  setLe(perm.write, off, width, write >>> 0);
}

const isBar = (offset: number): boolean =>
  (offset >= PCI_BASE_ADDRESS_0 && offset < PCI_BASE_ADDRESS_5 + 4) || (offset >= PCI_ROM_ADDRESS && offset < PCI_ROM_ADDRESS + 4);

/** `vfio_basic_config_read`. */
const basicRead: PermRead = (c, pos, count, perm, offset) => {
  if (isBar(offset)) c.barFixup();
  return defaultRead(c, pos, count, perm, offset);
};

/** `vfio_basic_config_write`. */
const basicWrite: PermWrite = (c, pos, count, perm, offset, val) => {
  let newCmd = 0;
  if (offset === PCI_COMMAND) {
    newCmd = val & 0xffff;
    c.barRestoreCheck(newCmd, getLe(c.vconfig, PCI_COMMAND, 2));
  }
  defaultWrite(c, pos, count, perm, offset, val);
  if (offset === PCI_COMMAND) {
    const mask = PCI_COMMAND_MEMORY | PCI_COMMAND_IO;
    setLe(c.vconfig, PCI_COMMAND, 2, (getLe(c.vconfig, PCI_COMMAND, 2) & ~mask) | (newCmd & mask));
  }
  if (offset >= PCI_COMMAND && offset <= PCI_COMMAND + 1) c.virtIntxDisable((getLe(c.vconfig, PCI_COMMAND, 2) & PCI_COMMAND_INTX_DISABLE) !== 0);
  if (isBar(offset)) c.barsWritten();
};

/** `init_pci_cap_basic_perm`. */
function basicPerm(): Perm {
  const perm = allocPerm(PCI_STD_HEADER_SIZEOF, basicRead, basicWrite);
  p(perm, PCI_VENDOR_ID, 2, 0xffff, 0);
  p(perm, PCI_DEVICE_ID, 2, 0xffff, 0);
  p(perm, PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE, 0xffff);
  p(perm, PCI_STATUS, 2, PCI_STATUS_CAP_LIST, 0);
  p(perm, PCI_CACHE_LINE_SIZE, 1, 0, 0xff);
  p(perm, PCI_LATENCY_TIMER, 1, 0, 0xff);
  p(perm, PCI_BIST, 1, 0, 0xff);
  for (const bar of [PCI_BASE_ADDRESS_0, PCI_BASE_ADDRESS_1, PCI_BASE_ADDRESS_2, PCI_BASE_ADDRESS_3, PCI_BASE_ADDRESS_4, PCI_BASE_ADDRESS_5, PCI_ROM_ADDRESS]) {
    p(perm, bar, 4, 0xffffffff, 0xffffffff);
  }
  p(perm, PCI_CAPABILITY_LIST, 1, 0xff, 0);
  p(perm, PCI_INTERRUPT_LINE, 1, 0xff, 0xff);
  p(perm, PCI_INTERRUPT_PIN, 1, 0xff, 0);
  return perm;
}

/** `vfio_pm_config_write`: the power state goes through `pci_set_power_state`. */
const pmWrite: PermWrite = (c, pos, count, perm, offset, val) => {
  defaultWrite(c, pos, count, perm, offset, val);
  if (offset === PCI_PM_CTRL) c.setPowerState(val & PCI_PM_CTRL_STATE_MASK);
};

/** `init_pci_cap_pm_perm`. */
function pmPerm(): Perm {
  const perm = allocPerm(8, defaultRead, pmWrite);
  p(perm, PCI_CAP_LIST_NEXT, 1, 0xff, 0);
  p(perm, PCI_PM_PMC, 2, PCI_PM_CAP_PME_MASK, 0);
  p(perm, PCI_PM_CTRL, 4, PCI_PM_CTRL_PME_ENABLE | PCI_PM_CTRL_PME_STATUS, ~(PCI_PM_CTRL_PME_ENABLE | PCI_PM_CTRL_PME_STATUS | PCI_PM_CTRL_STATE_MASK));
  return perm;
}

/** `vfio_exp_config_write`: FLR is virtualized and starts a reset; MRRS is floored at the device's MPS. */
const expWrite: PermWrite = (c, pos, count, perm, offset, val) => {
  const start = pos - offset;
  const ctrlAt = start + PCI_EXP_DEVCTL;
  const readrq = getLe(c.vconfig, ctrlAt, 2) & PCI_EXP_DEVCTL_READRQ;
  defaultWrite(c, pos, count, perm, offset, val);
  let ctrl = getLe(c.vconfig, ctrlAt, 2);
  if ((ctrl & PCI_EXP_DEVCTL_BCR_FLR) !== 0) {
    ctrl &= ~PCI_EXP_DEVCTL_BCR_FLR;
    setLe(c.vconfig, ctrlAt, 2, ctrl);
    if ((c.hwRead(start + PCI_EXP_DEVCAP, 4) & PCI_EXP_DEVCAP_FLR) !== 0) c.resetFunction();
  }
  if (readrq !== (ctrl & PCI_EXP_DEVCTL_READRQ)) {
    const hw = c.hwRead(ctrlAt, 2);
    const mps = 128 << ((hw & PCI_EXP_DEVCTL_PAYLOAD) >> 5);
    const rq = Math.max(128 << ((ctrl & PCI_EXP_DEVCTL_READRQ) >> 12), mps);
    c.hwWrite(ctrlAt, 2, (hw & ~PCI_EXP_DEVCTL_READRQ) | (Math.log2(rq / 128) << 12));
  }
};

/** `init_pci_cap_exp_perm`. */
function expPerm(): Perm {
  const perm = allocPerm(PCI_CAP_EXP_ENDPOINT_SIZEOF_V2, defaultRead, expWrite);
  p(perm, PCI_CAP_LIST_NEXT, 1, 0xff, 0);
  p(perm, PCI_EXP_DEVCTL, 2, PCI_EXP_DEVCTL_BCR_FLR | PCI_EXP_DEVCTL_PAYLOAD | PCI_EXP_DEVCTL_READRQ, ~PCI_EXP_DEVCTL_PHANTOM & 0xffff);
  p(perm, PCI_EXP_DEVCTL2, 2, 0, ~PCI_EXP_DEVCTL2_ARI & 0xffff);
  return perm;
}

/** `vfio_af_config_write`: the AF FLR bit is virtualized and starts a reset. */
const afWrite: PermWrite = (c, pos, count, perm, offset, val) => {
  const start = pos - offset;
  defaultWrite(c, pos, count, perm, offset, val);
  const ctrl = c.vconfig[start + PCI_AF_CTRL] ?? 0;
  if ((ctrl & PCI_AF_CTRL_FLR) === 0) return;
  c.vconfig[start + PCI_AF_CTRL] = ctrl & ~PCI_AF_CTRL_FLR;
  const cap = c.hwRead(start + PCI_AF_CAP, 1);
  if ((cap & PCI_AF_CAP_FLR) !== 0 && (cap & PCI_AF_CAP_TP) !== 0) c.resetFunction();
};

/** `init_pci_cap_af_perm`. */
function afPerm(): Perm {
  const perm = allocPerm(PCI_CAP_AF_SIZEOF, defaultRead, afWrite);
  p(perm, PCI_CAP_LIST_NEXT, 1, 0xff, 0);
  p(perm, PCI_AF_CTRL, 1, PCI_AF_CTRL_FLR, PCI_AF_CTRL_FLR);
  return perm;
}

/** `init_pci_ext_cap_err_perm`. */
function errPerm(): Perm {
  const perm = allocPerm(PCI_ERR_ROOT_COMMAND);
  p(perm, 0, 4, 0xffffffff, 0);
  for (const r of [PCI_ERR_UNCOR_STATUS, PCI_ERR_UNCOR_MASK, PCI_ERR_UNCOR_SEVER]) p(perm, r, 4, 0, PCI_ERR_UNC_WRITABLE);
  for (const r of [PCI_ERR_COR_STATUS, PCI_ERR_COR_MASK]) p(perm, r, 4, 0, PCI_ERR_COR_WRITABLE);
  p(perm, PCI_ERR_CAP, 4, 0, PCI_ERR_CAP_WRITABLE);
  return perm;
}

/** `init_pci_ext_cap_pwr_perm`. */
function pwrPerm(): Perm {
  const perm = allocPerm(PCI_EXT_CAP_PWR_SIZEOF);
  p(perm, 0, 4, 0xffffffff, 0);
  p(perm, PCI_PWR_DATA, 1, 0, 0xff);
  return perm;
}

const NONE = new Uint8Array(PCI_CFG_SPACE_SIZE);
/** `direct_ro_perms` and the default of `cap_perms` / `ecap_perms`. */
export const DIRECT_RO: Perm = { virt: NONE, write: NONE, read: directRead };
/** `unassigned_perms`: gaps between capabilities are raw, as some devices hide registers there. */
export const UNASSIGNED: Perm = { virt: NONE, write: NONE, read: rawRead, writeFn: rawWrite };

/** `cap_perms[]` (the MSI entry is per device, see {@link msiPerm}). */
export const CAP_PERMS: ReadonlyMap<number, Perm> = new Map<number, Perm>([
  [0, basicPerm()],
  [PCI_CAP_ID_PM, pmPerm()],
  [PCI_CAP_ID_VNDR, { ...DIRECT_RO, writeFn: rawWrite }],
  [PCI_CAP_ID_EXP, expPerm()],
  [PCI_CAP_ID_AF, afPerm()],
]);

/** `ecap_perms[]`. */
export const ECAP_PERMS: ReadonlyMap<number, Perm> = new Map<number, Perm>([
  [PCI_EXT_CAP_ID_ERR, errPerm()],
  [PCI_EXT_CAP_ID_PWR, pwrPerm()],
  [PCI_EXT_CAP_ID_VNDR, { ...DIRECT_RO, writeFn: rawWrite }],
  [PCI_EXT_CAP_ID_DVSEC, { ...DIRECT_RO, writeFn: rawWrite }],
]);

/** The permission table of standard capability `id` (ids up to `PCI_CAP_ID_MAX`). */
export function capPerm(id: number): Perm {
  return CAP_PERMS.get(id) ?? DIRECT_RO;
}

/** The permission table of extended capability `id`; unknown ids (a hidden first capability) read directly. */
export function ecapPerm(id: number): Perm {
  return id > PCI_EXT_CAP_ID_MAX ? DIRECT_RO : (ECAP_PERMS.get(id) ?? DIRECT_RO);
}

/** `vfio_msi_config_read`: the flags show `msi_qmax` as the capable vector count. */
const msiRead: PermRead = (c, pos, count, perm, offset) => {
  if (offset <= PCI_MSI_FLAGS && offset + count >= PCI_MSI_FLAGS) {
    const at = c.capStart(pos) + PCI_MSI_FLAGS;
    setLe(c.vconfig, at, 2, (getLe(c.vconfig, at, 2) & ~PCI_MSI_FLAGS_QMASK) | (c.msiQmax() << 1));
  }
  return defaultRead(c, pos, count, perm, offset);
};

/** `vfio_msi_config_write`: enable only through SET_IRQS, the queue size clamped, the flags written to the device. */
const msiWrite: PermWrite = (c, pos, count, perm, offset, val) => {
  defaultWrite(c, pos, count, perm, offset, val);
  if (offset <= PCI_MSI_FLAGS && offset + count >= PCI_MSI_FLAGS) {
    const at = c.capStart(pos) + PCI_MSI_FLAGS;
    let flags = getLe(c.vconfig, at, 2);
    if (!c.msiActive()) flags &= ~PCI_MSI_FLAGS_ENABLE;
    if ((flags & PCI_MSI_FLAGS_QSIZE) >> 4 > c.msiQmax()) flags = (flags & ~PCI_MSI_FLAGS_QSIZE) | (c.msiQmax() << 4);
    setLe(c.vconfig, at, 2, flags);
    c.hwWrite(at, 2, flags);
  }
};

/**
 * `init_pci_cap_msi_perm`, built per device from the device's own flags
 * (`vfio_msi_cap_len`); returns the capability length with it.
 */
export function msiPerm(flags: number): { perm: Perm; len: number } {
  const len = 10 + ((flags & PCI_MSI_FLAGS_64BIT) !== 0 ? 4 : 0) + ((flags & PCI_MSI_FLAGS_MASKBIT) !== 0 ? 10 : 0);
  const perm = allocPerm(len, msiRead, msiWrite);
  p(perm, PCI_CAP_LIST_NEXT, 1, 0xff, 0);
  p(perm, PCI_MSI_FLAGS, 1, 0xff, 0xff);
  p(perm, PCI_MSI_ADDRESS_LO, 4, 0xffffffff, 0xffffffff);
  if ((flags & PCI_MSI_FLAGS_64BIT) !== 0) {
    p(perm, PCI_MSI_ADDRESS_HI, 4, 0xffffffff, 0xffffffff);
    p(perm, PCI_MSI_DATA_64, 2, 0xffff, 0xffff);
    if ((flags & PCI_MSI_FLAGS_MASKBIT) !== 0) {
      p(perm, PCI_MSI_MASK_64, 4, 0, 0xffffffff);
      p(perm, PCI_MSI_PENDING_64, 4, 0, 0xffffffff);
    }
  } else {
    p(perm, PCI_MSI_DATA_32, 2, 0xffff, 0xffff);
    if ((flags & PCI_MSI_FLAGS_MASKBIT) !== 0) {
      p(perm, PCI_MSI_MASK_32, 4, 0, 0xffffffff);
      p(perm, PCI_MSI_PENDING_32, 4, 0, 0xffffffff);
    }
  }
  return { perm, len };
}

/** `vfio_update_pm_vconfig_bytes`: the guest cannot handle PME, so PME support and status read as 0. */
export function hidePme(vconfig: Uint8Array, pos: number): void {
  setLe(vconfig, pos + PCI_PM_PMC, 2, getLe(vconfig, pos + PCI_PM_PMC, 2) & ~PCI_PM_CAP_PME_MASK);
  setLe(vconfig, pos + PCI_PM_CTRL, 2, getLe(vconfig, pos + PCI_PM_CTRL, 2) & ~(PCI_PM_CTRL_PME_ENABLE | PCI_PM_CTRL_PME_STATUS));
}
