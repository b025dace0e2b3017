/* hooks_net.c - interposed socket life-cycle calls: socket, connect, accept*, shutdown, close,
 * dup2/3, and getaddrinfo. They keep the fd table right and open CONNECT/DNS spans; bytes are in
 * hooks_io.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "shim/shim.h"

#define LDT_HOOK __attribute__((visibility("default")))

static enum ldt__fd_kind kind_of(int domain, int type)
{
    int stream = (type & 0xf) == SOCK_STREAM;
    int fam = domain == AF_INET || domain == AF_INET6 || domain == AF_UNIX;
    return stream && fam ? LDT__FD_SOCK : LDT__FD_OTHER;
}

LDT_HOOK int socket(int domain, int type, int protocol)
{
    if (!ldt__enter_any())
        return ldt_real.socket(domain, type, protocol);
    int fd = ldt_real.socket(domain, type, protocol);
    if (fd >= 0)
        ldt__fd_set(fd, kind_of(domain, type), LDT__ORIG_SOCKET);
    ldt__leave();
    return fd;
}

/* A connect made while serving a request is a CONNECT child span of that request, with the peer
 * address; a refused or timed-out one carries the app's stack. A non-blocking one (EINPROGRESS)
 * stays open until the socket is first used or closed (sniff.c). */
static void connect_span(struct ldt__fd *e, const struct sockaddr *sa, socklen_t len, int rc,
                         int err, uint64_t wall, uint64_t t0)
{
    struct ldt__ctx p;
    if (!ldt__ctx_current(&p))
        return;
    /* A connect that worked (or is in progress) keeps its span in the socket's conn until the
     * first request (ldt__conn_connect_done); a failed one is pushed now and needs no conn. */
    int open = rc == 0 || err == EINPROGRESS;
    struct ldt__conn *c = open ? ldt__conn_take(e) : NULL;
    if (open && !c)
        return;
    if (c)
        ldt__ctx_bind(c);
    struct ldt__span tmp, *s = c ? &c->conn_span : &tmp;
    ldt__span_begin(s, LDT_SPAN_INTERNAL, &p);
    s->rec.op = LDT_OP_CONNECT;
    s->rec.start_ns = wall;
    s->start_mono = t0;
    if (sa && len)
        ldt__span_peer(&s->rec, sa, len);
    if (c && rc != 0) {
        c->connecting = 1;
        ldt__conn_put(e, c);
        return;
    }
    s->rec.err = rc ? err : 0;
    if (s->sampled && ldt__stack_worthy(s->rec.err)) {
        ldt__stack_capture(s->rec.span_id);
        s->rec.flags |= LDT_SPAN_F_STACK;
    }
    if (c) {
        ldt__conn_connect_done(c, NULL);
        ldt__conn_put(e, c);
    } else {
        ldt__span_end(s, NULL);
    }
}

LDT_HOOK int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    struct ldt__fd *e = ldt__enter(fd);
    if (!e)
        return ldt_real.connect(fd, addr, len);
    uint64_t wall = ldt_clock_wall_ns(), t0 = ldt_clock_mono_ns();
    int rc = ldt_real.connect(fd, addr, len);
    int err = errno;
    e->origin = LDT__ORIG_CONNECTED;
    connect_span(e, addr.__sockaddr__, len, rc, err, wall, t0);
    ldt__leave();
    errno = err;
    return rc;
}

/* Only SO_ERROR matters to us (a non-blocking connect's outcome, cleared by this very read). */
LDT_HOOK int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
    if (LDT_LIKELY(level != SOL_SOCKET || name != SO_ERROR))
        return ldt_real.getsockopt(fd, level, name, val, len);
    struct ldt__fd *e = ldt__enter(fd);
    if (!e)
        return ldt_real.getsockopt(fd, level, name, val, len);
    int rc = ldt_real.getsockopt(fd, level, name, val, len);
    int err = errno;
    if (rc == 0 && val && len && *len >= sizeof(int))
        ldt__sniff_so_error(fd, e, *(int *)val);
    ldt__leave();
    errno = err;
    return rc;
}

static int accepted(int rc)
{
    if (rc >= 0)
        ldt__fd_set(rc, LDT__FD_SOCK, LDT__ORIG_ACCEPTED);
    return rc;
}

LDT_HOOK int accept(int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
    struct ldt__fd *e = ldt__enter(fd);
    if (!e)
        return ldt_real.accept(fd, addr, len);
    int rc = accepted(ldt_real.accept(fd, addr, len));
    ldt__leave();
    return rc;
}

LDT_HOOK int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *len, int flags)
{
    struct ldt__fd *e = ldt__enter(fd);
    if (!e)
        return ldt_real.accept4(fd, addr, len, flags);
    int rc = accepted(ldt_real.accept4(fd, addr, len, flags));
    ldt__leave();
    return rc;
}

LDT_HOOK int shutdown(int fd, int how)
{
    /* Nothing to record: a half-close is not the end of a request (the other side may still
     * answer); the spans end on the parser's events or on close. */
    return ldt_real.shutdown(fd, how);
}

/* Forget what we knew of fd before its number can be reused. */
static void forget(int fd, int closing)
{
    struct ldt__fd *e = ldt__fd_peek(fd);
    if (!e || atomic_load_explicit(&e->kind, memory_order_relaxed) == LDT__FD_UNKNOWN)
        return;
    ldt__depth++;
    if (closing && atomic_load_explicit(&e->kind, memory_order_relaxed) == LDT__FD_SOCK)
        ldt__sniff_close_fd(fd, e);
    ldt__fd_reset(fd);
    ldt__depth--;
}

/* Our one long-lived fd is the diagnostics log (O_CLOEXEC, numbered >= 100). When the app closes or
 * dup2s over that number (a daemon closing every fd), logging stops and the fd is given back first,
 * so the app gets exactly what it would get without us and never writes into our file. */
static void guard_log_fd(int fd)
{
    if (fd >= 0 && fd == ldt_log_fd()) {
        int err = errno;
        ldt_log_open(NULL);
        errno = err;
    }
}

LDT_HOOK int close(int fd)
{
    if (LDT_LIKELY(ldt__mode == LDT__MODE_ON) && !ldt__depth) {
        forget(fd, 1);
        guard_log_fd(fd);
    }
    return ldt_real.close(fd);
}

LDT_HOOK int dup2(int oldfd, int newfd)
{
    if (ldt__mode == LDT__MODE_ON && !ldt__depth && oldfd != newfd)
        guard_log_fd(newfd);
    int rc = ldt_real.dup2(oldfd, newfd);
    if (rc >= 0 && oldfd != newfd && ldt__mode == LDT__MODE_ON && !ldt__depth) {
        int err = errno;
        forget(newfd, 0); /* the socket that was there is closed; the new one gets probed */
        errno = err;
    }
    return rc;
}

LDT_HOOK int dup3(int oldfd, int newfd, int flags)
{
    if (ldt__mode == LDT__MODE_ON && !ldt__depth && oldfd != newfd)
        guard_log_fd(newfd);
    int rc = ldt_real.dup3(oldfd, newfd, flags);
    if (rc >= 0 && ldt__mode == LDT__MODE_ON && !ldt__depth) {
        int err = errno;
        forget(newfd, 0);
        errno = err;
    }
    return rc;
}

/* A numeric address is "looked up" without any DNS traffic: no span for it. */
static int is_numeric(const char *node)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, node, buf) == 1 || inet_pton(AF_INET6, node, buf) == 1;
}

/* A lookup made while serving a request is a DNS child span (host = the name looked up). The
 * resolver's own sockets run inside the guard, so they are never traced themselves. */
LDT_HOOK int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                         struct addrinfo **res)
{
    struct ldt__ctx p;
    if (!ldt__enter_any())
        return ldt_real.getaddrinfo(node, service, hints, res);
    int have = node && !is_numeric(node) && ldt__ctx_current(&p);
    uint64_t wall = ldt_clock_wall_ns(), t0 = ldt_clock_mono_ns();
    int rc = ldt_real.getaddrinfo(node, service, hints, res);
    int err = errno;
    if (have)
        ldt__span_internal(&p, LDT_OP_DNS, wall, ldt_clock_mono_ns() - t0,
                           rc == EAI_SYSTEM ? err : rc, node, strnlen(node, 256));
    ldt__leave();
    errno = err;
    return rc;
}
