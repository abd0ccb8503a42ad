/**
 * Linux errno numbers (asm-generic, as on x86_64 and arm64) with their
 * names and messages. Fixed here rather than read from `os.constants` so the
 * simulated kernel reports Linux values on any host.
 */
const ROWS: ReadonlyArray<readonly [number, string, string]> = [
  [1, "EPERM", "operation not permitted"],
  [2, "ENOENT", "no such file or directory"],
  [3, "ESRCH", "no such process"],
  [4, "EINTR", "interrupted system call"],
  [5, "EIO", "i/o error"],
  [6, "ENXIO", "no such device or address"],
  [7, "E2BIG", "argument list too long"],
  [8, "ENOEXEC", "ENOEXEC"],
  [9, "EBADF", "bad file descriptor"],
  [10, "ECHILD", "ECHILD"],
  [11, "EAGAIN", "resource temporarily unavailable"],
  [12, "ENOMEM", "not enough memory"],
  [13, "EACCES", "permission denied"],
  [14, "EFAULT", "bad address in system call argument"],
  [16, "EBUSY", "resource busy or locked"],
  [17, "EEXIST", "file already exists"],
  [18, "EXDEV", "cross-device link not permitted"],
  [19, "ENODEV", "no such device"],
  [20, "ENOTDIR", "not a directory"],
  [21, "EISDIR", "illegal operation on a directory"],
  [22, "EINVAL", "invalid argument"],
  [23, "ENFILE", "file table overflow"],
  [24, "EMFILE", "too many open files"],
  [25, "ENOTTY", "inappropriate ioctl for device"],
  [26, "ETXTBSY", "text file is busy"],
  [27, "EFBIG", "file too large"],
  [28, "ENOSPC", "no space left on device"],
  [29, "ESPIPE", "invalid seek"],
  [30, "EROFS", "read-only file system"],
  [31, "EMLINK", "too many links"],
  [32, "EPIPE", "broken pipe"],
  [33, "EDOM", "EDOM"],
  [34, "ERANGE", "result too large"],
  [35, "EDEADLK", "EDEADLK"],
  [36, "ENAMETOOLONG", "name too long"],
  [37, "ENOLCK", "ENOLCK"],
  [38, "ENOSYS", "function not implemented"],
  [39, "ENOTEMPTY", "directory not empty"],
  [40, "ELOOP", "too many symbolic links encountered"],
  [42, "ENOMSG", "no message of desired type"],
  [43, "EIDRM", "EIDRM"],
  [60, "ENOSTR", "ENOSTR"],
  [61, "ENODATA", "no data available"],
  [62, "ETIME", "ETIME"],
  [63, "ENOSR", "ENOSR"],
  [67, "ENOLINK", "ENOLINK"],
  [71, "EPROTO", "protocol error"],
  [72, "EMULTIHOP", "EMULTIHOP"],
  [74, "EBADMSG", "EBADMSG"],
  [75, "EOVERFLOW", "value too large for defined data type"],
  [84, "EILSEQ", "illegal byte sequence"],
  [88, "ENOTSOCK", "socket operation on non-socket"],
  [89, "EDESTADDRREQ", "destination address required"],
  [90, "EMSGSIZE", "message too long"],
  [91, "EPROTOTYPE", "protocol wrong type for socket"],
  [92, "ENOPROTOOPT", "protocol not available"],
  [93, "EPROTONOSUPPORT", "protocol not supported"],
  [95, "EOPNOTSUPP", "operation not supported"],
  [97, "EAFNOSUPPORT", "address family not supported"],
  [98, "EADDRINUSE", "address already in use"],
  [99, "EADDRNOTAVAIL", "address not available"],
  [100, "ENETDOWN", "network is down"],
  [101, "ENETUNREACH", "network is unreachable"],
  [102, "ENETRESET", "ENETRESET"],
  [103, "ECONNABORTED", "software caused connection abort"],
  [104, "ECONNRESET", "connection reset by peer"],
  [105, "ENOBUFS", "no buffer space available"],
  [106, "EISCONN", "socket is already connected"],
  [107, "ENOTCONN", "socket is not connected"],
  [110, "ETIMEDOUT", "connection timed out"],
  [111, "ECONNREFUSED", "connection refused"],
  [113, "EHOSTUNREACH", "host is unreachable"],
  [114, "EALREADY", "connection already in progress"],
  [115, "EINPROGRESS", "EINPROGRESS"],
  [116, "ESTALE", "ESTALE"],
  [122, "EDQUOT", "EDQUOT"],
  [125, "ECANCELED", "operation canceled"],
];

const BY_NUMBER = new Map<number, readonly [number, string, string]>(ROWS.map((r) => [r[0], r]));

/** errno values by name (`Errno.EINVAL === 22`). */
export const Errno = Object.freeze(Object.fromEntries(ROWS.map(([n, name]) => [name, n]))) as Readonly<Record<ErrnoName, number>>;

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
  | "ENOSTR"
  | "ENODATA"
  | "ETIME"
  | "ENOSR"
  | "ENOLINK"
  | "EPROTO"
  | "EMULTIHOP"
  | "EBADMSG"
  | "EOVERFLOW"
  | "EILSEQ"
  | "ENOTSOCK"
  | "EDESTADDRREQ"
  | "EMSGSIZE"
  | "EPROTOTYPE"
  | "ENOPROTOOPT"
  | "EPROTONOSUPPORT"
  | "EOPNOTSUPP"
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
  | "ETIMEDOUT"
  | "ECONNREFUSED"
  | "EHOSTUNREACH"
  | "EALREADY"
  | "EINPROGRESS"
  | "ESTALE"
  | "EDQUOT"
  | "ECANCELED";

/** The symbolic name of an errno value (`'EINVAL'`), or `'E<n>'` when unknown. */
export function errnoName(errno: number): string {
  return BY_NUMBER.get(errno)?.[1] ?? `E${errno}`;
}

/** A short description of an errno value, like strerror(3). */
export function errnoMessage(errno: number): string {
  return BY_NUMBER.get(errno)?.[2] ?? `unknown error ${errno}`;
}
