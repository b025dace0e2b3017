/* hooks_io.c - interposed byte-moving calls: send*, write*, recv*, read*, sendfile, __*_chk.
 *
 * On an fd that is not a traced socket each hook costs one table lookup. On a traced socket the
 * real call is timed and its bytes go to the sniffer after it returned; a send on a client-role
 * HTTP connection goes through the injector instead (inject.c), as one real writev/sendmsg.
 */
/* Meson builds with _FILE_OFFSET_BITS=64, which renames sendfile to sendfile64 in the headers; we
 * define both names ourselves (on LP64 off_t is 64 bits either way). */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <string.h>
#include <sys/sendfile.h>

#include "shim/shim.h"

#define LDT_HOOK __attribute__((visibility("default")))

/* ---- receive side ---------------------------------------------------------------------------- */

#define LDT_INLINE static inline __attribute__((always_inline))

/* After a receive on a traced socket: bytes peeked (MSG_PEEK) will be read again, and MSG_TRUNC
 * on a stream discards them unseen, so neither is sniffed. Preserves errno. */
LDT_INLINE void in_done(int fd, struct ldt__fd *e, const struct iovec *iov, int cnt, ssize_t n,
                        int flags, uint64_t t0)
{
    int err = errno;
    ldt__io_end = ldt_clock_mono_ns();
    uint64_t dt = ldt__io_end - t0;
    if (!(flags & (MSG_PEEK | MSG_TRUNC)))
        ldt__sniff_call(fd, e, LDT__IN, iov, cnt, n, err, dt);
    ldt__io_end = 0;
    ldt__leave();
    errno = err;
}

/* A socket already classified as not HTTP: count the call, nothing else (no clock, no sniffer).
 * Touches nothing that could change errno. */
static inline ssize_t pass_count(struct ldt__fd *e, ssize_t n)
{
    e->calls++;
    ldt__leave();
    return n;
}

/* Bytes of a TLS connection are ciphertext here: the SSL_* hooks sniff the plaintext instead. */
#define PASS_ONLY(e) (((e)->cls == LDT__CLS_PASS && !(e)->conn) || (e)->tls)
#define UNPAREN(...) __VA_ARGS__

/* A hook in two parts: the fast path (not a traced socket) is a tail call to libc with no frame of
 * its own; everything else lives in a separate, never-inlined function. */
#define HOOK(ret, name, params, args, fd, ...) \
    static __attribute__((noinline)) ret name##_traced(struct ldt__fd *e, UNPAREN params) \
    { \
        e = ldt__enter_at(fd, e); \
        if (!e) \
            return ldt_real.name args; \
        __VA_ARGS__ \
    } \
    LDT_HOOK ret name params \
    { \
        struct ldt__fd *e; \
        if (LDT_LIKELY(ldt__skip_at(fd, &e))) \
            return ldt_real.name args; \
        return name##_traced(e, UNPAREN args); \
    }

/* The traced part of a one-buffer receive. */
#define IN_BODY(call, fd, buf, len, flags) \
    if (PASS_ONLY(e)) \
        return pass_count(e, call); \
    struct iovec v = {(void *)(buf), (len)}; \
    uint64_t t0 = ldt_clock_mono_ns(); \
    ssize_t n = call; \
    in_done(fd, e, &v, 1, n, flags, t0); \
    return n;

HOOK(ssize_t, read, (int fd, void *buf, size_t len), (fd, buf, len), fd,
     IN_BODY(ldt_real.read(fd, buf, len), fd, buf, len, 0))

HOOK(ssize_t, __read_chk, (int fd, void *buf, size_t len, size_t buflen), (fd, buf, len, buflen),
     fd, IN_BODY(ldt_real.__read_chk(fd, buf, len, buflen), fd, buf, len, 0))

HOOK(ssize_t, recv, (int fd, void *buf, size_t len, int flags), (fd, buf, len, flags), fd,
     IN_BODY(ldt_real.recv(fd, buf, len, flags), fd, buf, len, flags))

HOOK(ssize_t, __recv_chk, (int fd, void *buf, size_t len, size_t buflen, int flags),
     (fd, buf, len, buflen, flags), fd,
     IN_BODY(ldt_real.__recv_chk(fd, buf, len, buflen, flags), fd, buf, len, flags))

HOOK(ssize_t, recvfrom, (int fd, void *buf, size_t len, int flags, __SOCKADDR_ARG a, socklen_t *l),
     (fd, buf, len, flags, a, l), fd,
     IN_BODY(ldt_real.recvfrom(fd, buf, len, flags, a, l), fd, buf, len, flags))

HOOK(ssize_t, __recvfrom_chk, (int fd, void *buf, size_t len, size_t buflen, int flags,
                               __SOCKADDR_ARG a, socklen_t *l),
     (fd, buf, len, buflen, flags, a, l), fd,
     IN_BODY(ldt_real.__recvfrom_chk(fd, buf, len, buflen, flags, a, l), fd, buf, len, flags))

HOOK(ssize_t, readv, (int fd, const struct iovec *iov, int cnt), (fd, iov, cnt), fd,
     if (PASS_ONLY(e))
         return pass_count(e, ldt_real.readv(fd, iov, cnt));
     uint64_t t0 = ldt_clock_mono_ns();
     ssize_t n = ldt_real.readv(fd, iov, cnt);
     in_done(fd, e, iov, cnt, n, 0, t0);
     return n;)

HOOK(ssize_t, recvmsg, (int fd, struct msghdr *msg, int flags), (fd, msg, flags), fd,
     if (PASS_ONLY(e))
         return pass_count(e, ldt_real.recvmsg(fd, msg, flags));
     uint64_t t0 = ldt_clock_mono_ns();
     ssize_t n = ldt_real.recvmsg(fd, msg, flags);
     in_done(fd, e, msg->msg_iov, (int)msg->msg_iovlen, n, flags, t0);
     return n;)

/* ---- send side ------------------------------------------------------------------------------- */

/* How the app asked to send: the injector's real call keeps the app's flags and address. */
struct out_call {
    int fd;
    int use_msg;                /* sendmsg(flags) for send, sendto, sendmsg; else writev */
    int flags;
    const void *name;
    socklen_t namelen;
    const struct msghdr *msg;   /* sendmsg: its control data goes with the first real call */
};

static ssize_t real_sendv(void *ctx, const struct iovec *iov, int cnt)
{
    struct out_call *o = ctx;
    if (!o->use_msg)
        return ldt_real.writev(o->fd, iov, cnt);
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_name = (void *)o->name;
    m.msg_namelen = o->namelen;
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)cnt;
    if (o->msg) {
        m.msg_control = o->msg->msg_control;
        m.msg_controllen = o->msg->msg_controllen;
        o->msg = NULL;
    }
    return ldt_real.sendmsg(o->fd, &m, o->flags);
}

/* A send through the injector; the out-parser was fed there. Preserves errno; leaves the guard. */
static ssize_t out_inject(struct ldt__fd *e, struct out_call *o, const struct iovec *iov, int cnt)
{
    uint64_t t0 = ldt_clock_mono_ns();
    ldt__io_start = t0; /* a client span begun by this write starts here */
    struct ldt__conn *c = ldt__conn_hold(e); /* not given back to the pool under the send */
    ssize_t n = c ? ldt__client_send(c, iov, cnt, real_sendv, o) : real_sendv(o, iov, cnt);
    int err = errno;
    ldt__io_end = ldt_clock_mono_ns();
    if (c)
        ldt__sniff_sent(o->fd, e, c, n, err, ldt__io_end - t0);
    else
        ldt__sniff_call(o->fd, e, LDT__OUT, NULL, 0, n, err, ldt__io_end - t0);
    ldt__io_start = ldt__io_end = 0;
    ldt__leave();
    errno = err;
    return n;
}

LDT_INLINE void out_done(int fd, struct ldt__fd *e, const struct iovec *iov, int cnt, ssize_t n,
                         uint64_t t0)
{
    int err = errno;
    ldt__io_start = t0; /* a response completed here ends when the app entered this call */
    ldt__io_end = ldt_clock_mono_ns();
    ldt__sniff_call(fd, e, LDT__OUT, iov, cnt, n, err, ldt__io_end - t0);
    ldt__io_start = ldt__io_end = 0;
    ldt__leave();
    errno = err;
}

/* A classified server-role connection with no connect pending: its sends never need the injector
 * (the common case of a traced server, decided without a call). */
#define SERVING(e) ((e)->cls == LDT__CLS_HTTP && (e)->role == LDT__ROLE_SERVER)

/* The traced part of a send: through the injector on a client-role HTTP connection. */
#define OUT_BODY(call, fd, iov, cnt, ...) \
    if (PASS_ONLY(e)) \
        return pass_count(e, call); \
    if (!SERVING(e) && ldt__sniff_wants_inject(fd, e, iov, cnt)) { \
        struct out_call o = {fd, __VA_ARGS__}; \
        return out_inject(e, &o, iov, cnt); \
    } \
    uint64_t t0 = ldt_clock_mono_ns(); \
    ssize_t n = call; \
    out_done(fd, e, iov, cnt, n, t0); \
    return n;

HOOK(ssize_t, write, (int fd, const void *buf, size_t len), (fd, buf, len), fd,
     struct iovec v = {(void *)buf, len};
     OUT_BODY(ldt_real.write(fd, buf, len), fd, &v, 1, 0, 0, NULL, 0, NULL))

HOOK(ssize_t, writev, (int fd, const struct iovec *iov, int cnt), (fd, iov, cnt), fd,
     OUT_BODY(ldt_real.writev(fd, iov, cnt), fd, iov, cnt, 0, 0, NULL, 0, NULL))

HOOK(ssize_t, send, (int fd, const void *buf, size_t len, int flags), (fd, buf, len, flags), fd,
     struct iovec v = {(void *)buf, len};
     OUT_BODY(ldt_real.send(fd, buf, len, flags), fd, &v, 1, 1, flags, NULL, 0, NULL))

HOOK(ssize_t, sendto, (int fd, const void *buf, size_t len, int flags, __CONST_SOCKADDR_ARG a,
                       socklen_t alen), (fd, buf, len, flags, a, alen), fd,
     struct iovec v = {(void *)buf, len};
     OUT_BODY(ldt_real.sendto(fd, buf, len, flags, a, alen), fd, &v, 1, 1, flags, a.__sockaddr__,
              alen, NULL))

HOOK(ssize_t, sendmsg, (int fd, const struct msghdr *msg, int flags), (fd, msg, flags), fd,
     OUT_BODY(ldt_real.sendmsg(fd, msg, flags), fd, msg->msg_iov, (int)msg->msg_iovlen, 1, flags,
              msg->msg_name, msg->msg_namelen, msg))

/* sendfile moves body bytes we never see: the out-parser skips them (Content-Length or until-close
 * bodies; anything else makes the connection pass-through). */
LDT_HOOK ssize_t sendfile(int out, int in, off_t *off, size_t count)
{
    struct ldt__fd *e = ldt__enter(out);
    if (!e)
        return ldt_real.sendfile(out, in, off, count);
    uint64_t t0 = ldt_clock_mono_ns();
    ssize_t n = ldt_real.sendfile(out, in, off, count);
    int err = errno;
    ldt__io_start = t0;
    ldt__sniff_sendfile(out, e, n, err, ldt_clock_mono_ns() - t0);
    ldt__io_start = 0;
    ldt__leave();
    errno = err;
    return n;
}

LDT_HOOK ssize_t sendfile64(int out, int in, off64_t *off, size_t count)
{
    struct ldt__fd *e = ldt__enter(out);
    if (!e)
        return ldt_real.sendfile64(out, in, off, count);
    uint64_t t0 = ldt_clock_mono_ns();
    ssize_t n = ldt_real.sendfile64(out, in, off, count);
    int err = errno;
    ldt__io_start = t0;
    ldt__sniff_sendfile(out, e, n, err, ldt_clock_mono_ns() - t0);
    ldt__io_start = 0;
    ldt__leave();
    errno = err;
    return n;
}
