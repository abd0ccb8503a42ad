/**
 * Linux errno numbers (asm-generic, as on x86_64 and arm64) with their
 * names and messages, generated from `<asm-generic/errno*.h>`. Fixed here
 * rather than read from `os.constants` so the simulated kernel reports Linux
 * values on any host.
 */
const ROWS: ReadonlyArray<readonly [number, string, string]> = [
  [1, "EPERM", "operation not permitted"],
  [2, "ENOENT", "no such file or directory"],
  [3, "ESRCH", "no such process"],
  [4, "EINTR", "interrupted system call"],
  [5, "EIO", "i/O error"],
  [6, "ENXIO", "no such device or address"],
  [7, "E2BIG", "argument list too long"],
  [8, "ENOEXEC", "exec format error"],
  [9, "EBADF", "bad file number"],
  [10, "ECHILD", "no child processes"],
  [11, "EAGAIN", "try again"],
  [12, "ENOMEM", "out of memory"],
  [13, "EACCES", "permission denied"],
  [14, "EFAULT", "bad address"],
  [15, "ENOTBLK", "block device required"],
  [16, "EBUSY", "device or resource busy"],
  [17, "EEXIST", "file exists"],
  [18, "EXDEV", "cross-device link"],
  [19, "ENODEV", "no such device"],
  [20, "ENOTDIR", "not a directory"],
  [21, "EISDIR", "is a directory"],
  [22, "EINVAL", "invalid argument"],
  [23, "ENFILE", "file table overflow"],
  [24, "EMFILE", "too many open files"],
  [25, "ENOTTY", "not a typewriter"],
  [26, "ETXTBSY", "text file busy"],
  [27, "EFBIG", "file too large"],
  [28, "ENOSPC", "no space left on device"],
  [29, "ESPIPE", "illegal seek"],
  [30, "EROFS", "read-only file system"],
  [31, "EMLINK", "too many links"],
  [32, "EPIPE", "broken pipe"],
  [33, "EDOM", "math argument out of domain of func"],
  [34, "ERANGE", "math result not representable"],
  [35, "EDEADLK", "resource deadlock would occur"],
  [36, "ENAMETOOLONG", "file name too long"],
  [37, "ENOLCK", "no record locks available"],
  [38, "ENOSYS", "invalid system call number"],
  [39, "ENOTEMPTY", "directory not empty"],
  [40, "ELOOP", "too many symbolic links encountered"],
  [42, "ENOMSG", "no message of desired type"],
  [43, "EIDRM", "identifier removed"],
  [44, "ECHRNG", "channel number out of range"],
  [45, "EL2NSYNC", "level 2 not synchronized"],
  [46, "EL3HLT", "level 3 halted"],
  [47, "EL3RST", "level 3 reset"],
  [48, "ELNRNG", "link number out of range"],
  [49, "EUNATCH", "protocol driver not attached"],
  [50, "ENOCSI", "no CSI structure available"],
  [51, "EL2HLT", "level 2 halted"],
  [52, "EBADE", "invalid exchange"],
  [53, "EBADR", "invalid request descriptor"],
  [54, "EXFULL", "exchange full"],
  [55, "ENOANO", "no anode"],
  [56, "EBADRQC", "invalid request code"],
  [57, "EBADSLT", "invalid slot"],
  [59, "EBFONT", "bad font file format"],
  [60, "ENOSTR", "device not a stream"],
  [61, "ENODATA", "no data available"],
  [62, "ETIME", "timer expired"],
  [63, "ENOSR", "out of streams resources"],
  [64, "ENONET", "machine is not on the network"],
  [65, "ENOPKG", "package not installed"],
  [66, "EREMOTE", "object is remote"],
  [67, "ENOLINK", "link has been severed"],
  [68, "EADV", "advertise error"],
  [69, "ESRMNT", "srmount error"],
  [70, "ECOMM", "communication error on send"],
  [71, "EPROTO", "protocol error"],
  [72, "EMULTIHOP", "multihop attempted"],
  [73, "EDOTDOT", "rFS specific error"],
  [74, "EBADMSG", "not a data message"],
  [75, "EOVERFLOW", "value too large for defined data type"],
  [76, "ENOTUNIQ", "name not unique on network"],
  [77, "EBADFD", "file descriptor in bad state"],
  [78, "EREMCHG", "remote address changed"],
  [79, "ELIBACC", "can not access a needed shared library"],
  [80, "ELIBBAD", "accessing a corrupted shared library"],
  [81, "ELIBSCN", ".lib section in a.out corrupted"],
  [82, "ELIBMAX", "attempting to link in too many shared libraries"],
  [83, "ELIBEXEC", "cannot exec a shared library directly"],
  [84, "EILSEQ", "illegal byte sequence"],
  [85, "ERESTART", "interrupted system call should be restarted"],
  [86, "ESTRPIPE", "streams pipe error"],
  [87, "EUSERS", "too many users"],
  [88, "ENOTSOCK", "socket operation on non-socket"],
  [89, "EDESTADDRREQ", "destination address required"],
  [90, "EMSGSIZE", "message too long"],
  [91, "EPROTOTYPE", "protocol wrong type for socket"],
  [92, "ENOPROTOOPT", "protocol not available"],
  [93, "EPROTONOSUPPORT", "protocol not supported"],
  [94, "ESOCKTNOSUPPORT", "socket type not supported"],
  [95, "EOPNOTSUPP", "operation not supported on transport endpoint"],
  [96, "EPFNOSUPPORT", "protocol family not supported"],
  [97, "EAFNOSUPPORT", "address family not supported by protocol"],
  [98, "EADDRINUSE", "address already in use"],
  [99, "EADDRNOTAVAIL", "cannot assign requested address"],
  [100, "ENETDOWN", "network is down"],
  [101, "ENETUNREACH", "network is unreachable"],
  [102, "ENETRESET", "network dropped connection because of reset"],
  [103, "ECONNABORTED", "software caused connection abort"],
  [104, "ECONNRESET", "connection reset by peer"],
  [105, "ENOBUFS", "no buffer space available"],
  [106, "EISCONN", "transport endpoint is already connected"],
  [107, "ENOTCONN", "transport endpoint is not connected"],
  [108, "ESHUTDOWN", "cannot send after transport endpoint shutdown"],
  [109, "ETOOMANYREFS", "too many references: cannot splice"],
  [110, "ETIMEDOUT", "connection timed out"],
  [111, "ECONNREFUSED", "connection refused"],
  [112, "EHOSTDOWN", "host is down"],
  [113, "EHOSTUNREACH", "no route to host"],
  [114, "EALREADY", "operation already in progress"],
  [115, "EINPROGRESS", "operation now in progress"],
  [116, "ESTALE", "stale file handle"],
  [117, "EUCLEAN", "structure needs cleaning"],
  [118, "ENOTNAM", "not a XENIX named type file"],
  [119, "ENAVAIL", "no XENIX semaphores available"],
  [120, "EISNAM", "is a named type file"],
  [121, "EREMOTEIO", "remote I/O error"],
  [122, "EDQUOT", "quota exceeded"],
  [123, "ENOMEDIUM", "no medium found"],
  [124, "EMEDIUMTYPE", "wrong medium type"],
  [125, "ECANCELED", "operation Canceled"],
  [126, "ENOKEY", "required key not available"],
  [127, "EKEYEXPIRED", "key has expired"],
  [128, "EKEYREVOKED", "key has been revoked"],
  [129, "EKEYREJECTED", "key was rejected by service"],
  [130, "EOWNERDEAD", "owner died"],
  [131, "ENOTRECOVERABLE", "state not recoverable"],
  [132, "ERFKILL", "operation not possible due to RF-kill"],
  [133, "EHWPOISON", "memory page has hardware error"],
];

/** Names that share a number with another (`EWOULDBLOCK` is `EAGAIN`). */
const ALIASES: ReadonlyArray<readonly [string, string]> = [
  ["EWOULDBLOCK", "EAGAIN"],
  ["EDEADLOCK", "EDEADLK"],
  ["ENOTSUP", "EOPNOTSUPP"],
];

/** The errno names this table knows. */
export type ErrnoName =
  | "EPERM"
  | "ENOENT"
  | "ESRCH"
  | "EINTR"
  | "EIO"
  | "ENXIO"
  | "E2BIG"
  | "ENOEXEC"
  | "EBADF"
  | "ECHILD"
  | "EAGAIN"
  | "ENOMEM"
  | "EACCES"
  | "EFAULT"
  | "ENOTBLK"
  | "EBUSY"
  | "EEXIST"
  | "EXDEV"
  | "ENODEV"
  | "ENOTDIR"
  | "EISDIR"
  | "EINVAL"
  | "ENFILE"
  | "EMFILE"
  | "ENOTTY"
  | "ETXTBSY"
  | "EFBIG"
  | "ENOSPC"
  | "ESPIPE"
  | "EROFS"
  | "EMLINK"
  | "EPIPE"
  | "EDOM"
  | "ERANGE"
  | "EDEADLK"
  | "ENAMETOOLONG"
  | "ENOLCK"
  | "ENOSYS"
  | "ENOTEMPTY"
  | "ELOOP"
  | "ENOMSG"
  | "EIDRM"
  | "ECHRNG"
  | "EL2NSYNC"
  | "EL3HLT"
  | "EL3RST"
  | "ELNRNG"
  | "EUNATCH"
  | "ENOCSI"
  | "EL2HLT"
  | "EBADE"
  | "EBADR"
  | "EXFULL"
  | "ENOANO"
  | "EBADRQC"
  | "EBADSLT"
  | "EBFONT"
  | "ENOSTR"
  | "ENODATA"
  | "ETIME"
  | "ENOSR"
  | "ENONET"
  | "ENOPKG"
  | "EREMOTE"
  | "ENOLINK"
  | "EADV"
  | "ESRMNT"
  | "ECOMM"
  | "EPROTO"
  | "EMULTIHOP"
  | "EDOTDOT"
  | "EBADMSG"
  | "EOVERFLOW"
  | "ENOTUNIQ"
  | "EBADFD"
  | "EREMCHG"
  | "ELIBACC"
  | "ELIBBAD"
  | "ELIBSCN"
  | "ELIBMAX"
  | "ELIBEXEC"
  | "EILSEQ"
  | "ERESTART"
  | "ESTRPIPE"
  | "EUSERS"
  | "ENOTSOCK"
  | "EDESTADDRREQ"
  | "EMSGSIZE"
  | "EPROTOTYPE"
  | "ENOPROTOOPT"
  | "EPROTONOSUPPORT"
  | "ESOCKTNOSUPPORT"
  | "EOPNOTSUPP"
  | "EPFNOSUPPORT"
  | "EAFNOSUPPORT"
  | "EADDRINUSE"
  | "EADDRNOTAVAIL"
  | "ENETDOWN"
  | "ENETUNREACH"
  | "ENETRESET"
  | "ECONNABORTED"
  | "ECONNRESET"
  | "ENOBUFS"
  | "EISCONN"
  | "ENOTCONN"
  | "ESHUTDOWN"
  | "ETOOMANYREFS"
  | "ETIMEDOUT"
  | "ECONNREFUSED"
  | "EHOSTDOWN"
  | "EHOSTUNREACH"
  | "EALREADY"
  | "EINPROGRESS"
  | "ESTALE"
  | "EUCLEAN"
  | "ENOTNAM"
  | "ENAVAIL"
  | "EISNAM"
  | "EREMOTEIO"
  | "EDQUOT"
  | "ENOMEDIUM"
  | "EMEDIUMTYPE"
  | "ECANCELED"
  | "ENOKEY"
  | "EKEYEXPIRED"
  | "EKEYREVOKED"
  | "EKEYREJECTED"
  | "EOWNERDEAD"
  | "ENOTRECOVERABLE"
  | "ERFKILL"
  | "EHWPOISON"
  | "EWOULDBLOCK"
  | "EDEADLOCK"
  | "ENOTSUP";

const BY_NUMBER = new Map<number, readonly [number, string, string]>(ROWS.map((r) => [r[0], r]));
const BY_NAME = new Map<string, number>([...ROWS.map(([n, name]): [string, number] => [name, n]), ...ALIASES.map(([a, b]): [string, number] => [a, numberOf(b)])]);

function numberOf(name: string): number {
  const row = ROWS.find((r) => r[1] === name);
  if (row === undefined) throw new Error(`errno table: unknown alias target ${name}`);
  return row[0];
}

/** errno values by name (`Errno.EINVAL === 22`). */
export const Errno = Object.freeze(Object.fromEntries(BY_NAME)) as Readonly<Record<ErrnoName, number>>;

/** The symbolic name of an errno value (`'EINVAL'`), or `'E<n>'` when unknown. */
export function errnoName(errno: number): string {
  return BY_NUMBER.get(errno)?.[1] ?? `E${errno}`;
}

/** A short description of an errno value, like strerror(3). */
export function errnoMessage(errno: number): string {
  return BY_NUMBER.get(errno)?.[2] ?? `unknown error ${errno}`;
}
