/* error.c - names and messages for the error codes ursa returns, and the
 * detail that says why the last refusal on this thread happened. */
#include "core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

static __thread char error_detail[512];

const char *ursa_error_detail(void) { return error_detail; }

int ursa__invalid(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error_detail, sizeof(error_detail), fmt, ap);
  va_end(ap);
  return -EINVAL;
}

int ursa__refuse(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error_detail, sizeof(error_detail), fmt, ap);
  va_end(ap);
  return err;
}

/* One table for both names and messages.  The messages are ursa's own
 * words, so they read the same on every libc. */
#define URSA__ERRORS(X)                                            \
  X(EOF, -4095, "end of stream")                                   \
  X(EPERM, -EPERM, "operation not permitted")                      \
  X(ENOENT, -ENOENT, "no such operation or file")                  \
  X(EINTR, -EINTR, "interrupted system call")                      \
  X(EIO, -EIO, "i/o error")                                        \
  X(EBADF, -EBADF, "bad file descriptor")                          \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable")           \
  X(ENOMEM, -ENOMEM, "not enough memory")                          \
  X(EACCES, -EACCES, "permission denied")                          \
  X(EFAULT, -EFAULT, "bad address in a buffer")                    \
  X(EBUSY, -EBUSY, "resource busy or still in use")                \
  X(EEXIST, -EEXIST, "already exists")                             \
  X(ENOTDIR, -ENOTDIR, "not a directory")                          \
  X(EINVAL, -EINVAL, "invalid argument")                           \
  X(ENFILE, -ENFILE, "too many open files in the system")          \
  X(EMFILE, -EMFILE, "too many open files in the process")         \
  X(ENOSPC, -ENOSPC, "no space left")                              \
  X(EPIPE, -EPIPE, "broken pipe")                                  \
  X(ERANGE, -ERANGE, "result out of range")                        \
  X(ENAMETOOLONG, -ENAMETOOLONG, "name too long")                  \
  X(ENOSYS, -ENOSYS, "function not implemented")                   \
  X(ETIME, -ETIME, "timer expired")                                \
  X(ENOTSOCK, -ENOTSOCK, "not a socket")                           \
  X(EMSGSIZE, -EMSGSIZE, "message too long")                       \
  X(EPROTOTYPE, -EPROTOTYPE, "wrong protocol type for socket")     \
  X(ENOPROTOOPT, -ENOPROTOOPT, "protocol option not available")    \
  X(EPROTONOSUPPORT, -EPROTONOSUPPORT, "protocol not supported")   \
  X(EOPNOTSUPP, -EOPNOTSUPP, "operation not supported")            \
  X(EAFNOSUPPORT, -EAFNOSUPPORT, "address family not supported")   \
  X(EADDRINUSE, -EADDRINUSE, "address already in use")             \
  X(EADDRNOTAVAIL, -EADDRNOTAVAIL, "address not available")        \
  X(ENETDOWN, -ENETDOWN, "network is down")                        \
  X(ENETUNREACH, -ENETUNREACH, "network is unreachable")           \
  X(ECONNABORTED, -ECONNABORTED, "connection aborted")             \
  X(ECONNRESET, -ECONNRESET, "connection reset by peer")           \
  X(ENOBUFS, -ENOBUFS, "no buffer space available")                \
  X(EISCONN, -EISCONN, "socket is already connected")              \
  X(ENOTCONN, -ENOTCONN, "socket is not connected")                \
  X(ESHUTDOWN, -ESHUTDOWN, "cannot send after shutdown")           \
  X(ETIMEDOUT, -ETIMEDOUT, "timed out")                            \
  X(ECONNREFUSED, -ECONNREFUSED, "connection refused")             \
  X(EHOSTUNREACH, -EHOSTUNREACH, "host is unreachable")            \
  X(EALREADY, -EALREADY, "operation already in progress")          \
  X(EINPROGRESS, -EINPROGRESS, "operation in progress")            \
  X(ECANCELED, -ECANCELED, "operation canceled")

const char *ursa_strerror(int err) {
  switch (err) {
#define X(name, code, msg) \
  case code:               \
    return msg;
    URSA__ERRORS(X)
#undef X
  case 0:
    return "success";
  default:
    return "unknown error";
  }
}

const char *ursa_err_name(int err) {
  switch (err) {
#define X(name, code, msg) \
  case code:               \
    return #name;
    URSA__ERRORS(X)
#undef X
  case 0:
    return "OK";
  default:
    return "UNKNOWN";
  }
}

unsigned ursa_version(void) { return URSA_VERSION_HEX; }

const char *ursa_version_string(void) {
#define URSA__STR2(x) #x
#define URSA__STR(x) URSA__STR2(x)
  return URSA__STR(URSA_VERSION_MAJOR) "." URSA__STR(
      URSA_VERSION_MINOR) "." URSA__STR(URSA_VERSION_PATCH);
}
