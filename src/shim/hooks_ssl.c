/* hooks_ssl.c - interposed OpenSSL calls: HTTP inside TLS, sniffed and injected in plaintext.
 *
 * SSL_read/SSL_read_ex/SSL_write/SSL_write_ex are wrapped whenever libssl is in the process (linked
 * or dlopened, even RTLD_LOCAL as Python's _ssl module does): the real functions are looked up at
 * call time, never linked. The plaintext goes through the same sniffer and injector as a plain
 * socket's bytes, against the socket underneath (SSL_get_fd, or for a non-fd BIO such as curl's the
 * socket its own send/recv used, learned while nested in an SSL call). That socket is marked tls:
 * the socket hooks then pass its ciphertext through with byte counts only, so nothing is sniffed
 * twice. SSL_do_handshake/SSL_connect/SSL_accept are wrapped only to run nested (their socket I/O
 * is ciphertext) and to learn the socket. SSL_sendfile (OpenSSL 3, kernel TLS only) is wrapped
 * when libssl has it: the file bytes it sends are never seen, so like the sendfile hook it tells
 * the sniffer how many body bytes of the outbound message went (a response whose body goes that
 * way ends when the body is complete); it runs nested, so the sendfile libssl makes on the socket
 * is not counted again. A failure that sent nothing (no kTLS on the connection: SSL_ERROR_SSL) is
 * no I/O event for the sniffer; the app sees every result exactly as libssl returned it. Not
 * covered: SSL_peek (not sniffed), BIOs that do not end in a socket of this process (memory BIOs:
 * Node, asyncio) - those stay untraced.
 *
 * Injection and SSL_write's contract. SSL_write(ssl, buf, num) either writes all num bytes or fails
 * (unless SSL_MODE_ENABLE_PARTIAL_WRITE), and after a failure with SSL_ERROR_WANT_WRITE/READ the
 * app must call again with the same arguments; OpenSSL itself demands that its retried call has the
 * same buffer pointer (unless SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) and length. There is no vectored
 * SSL_write, so an app write with our lines in it goes out as pieces - app bytes, our lines, app
 * bytes ... - one real SSL_write each. The pending state lives in the connection (struct
 * ldt__tls_write): the pieces (app pieces by offset into the app's buffer, ours pointing at stable
 * memory in the conn or the span) and which piece is next. A piece that fails is re-sent on the
 * app's retry with exactly the same pointer and length, which is what OpenSSL checks; the app is
 * told num (all its bytes) only when the last piece went, and the real failure otherwise, so it
 * never sees a partial write it did not allow. In partial-write mode a piece the real call took in
 * part continues from where it stopped (a new call for OpenSSL, which allows that). A retry that
 * does not match the pending call (another length, or another buffer without the moving-buffer
 * mode) abandons the pending state: the stream may then lack our lines, never hold them twice.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <string.h>

#include "shim/shim.h"

#define LDT_HOOK __attribute__((visibility("default")))

/* OpenSSL constants (stable ABI since 1.0): SSL_get_error codes and SSL_ctrl(SSL_CTRL_MODE). */
#define X_ERROR_SSL 1
#define X_ERROR_WANT_READ 2
#define X_ERROR_WANT_WRITE 3
#define X_ERROR_SYSCALL 5
#define X_ERROR_ZERO_RETURN 6
#define X_CTRL_MODE 33
#define X_MODE_PARTIAL 0x1L
#define X_MODE_MOVING 0x2L

/* ---- the real functions, resolved at call time ----------------------------------------------- */

#define SSL_SYMS(X)                                                                                \
    X(int, SSL_read, (void *s, void *b, int n))                                                    \
    X(int, SSL_read_ex, (void *s, void *b, size_t n, size_t *r))                                   \
    X(int, SSL_write, (void *s, const void *b, int n))                                             \
    X(int, SSL_write_ex, (void *s, const void *b, size_t n, size_t *w))                            \
    X(int, SSL_do_handshake, (void *s))                                                            \
    X(int, SSL_connect, (void *s))                                                                 \
    X(int, SSL_accept, (void *s))                                                                  \
    X(int, SSL_get_fd, (const void *s))                                                            \
    X(int, SSL_get_error, (const void *s, int r))                                                  \
    X(long, SSL_ctrl, (void *s, int cmd, long l, void *p))                                         \
    X(ssize_t, SSL_sendfile, (void *s, int fd, off_t off, size_t n, int flags))

static struct {
#define X(ret, name, params) ret(*_Atomic name) params;
    SSL_SYMS(X)
#undef X
} xssl;

/* libssl as a dlopen handle when it is not in the global scope (dlopened RTLD_LOCAL as a
 * dependency of a module): found by name among the loaded objects, opened with RTLD_NOLOAD. */
static int find_libssl(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    const char *n = info->dlpi_name;
    const char *b = n ? strrchr(n, '/') : NULL;
    b = b ? b + 1 : n;
    if (!b || strncmp(b, "libssl.so", 9) != 0)
        return 0;
    *(void **)arg = dlopen(n, RTLD_LAZY | RTLD_NOLOAD);
    return *(void **)arg != NULL;
}

static void *resolve(const char *name, void *ours)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p && p != ours)
        return p;
    void *h = NULL;
    dl_iterate_phdr(find_libssl, &h);
    p = h ? dlsym(h, name) : NULL;
    return p && p != ours ? p : NULL;
}

/* Our own hooks: a lookup that finds one of them again counts as missing. */
LDT_HOOK int SSL_read(void *s, void *b, int n);
LDT_HOOK int SSL_read_ex(void *s, void *b, size_t n, size_t *r);
LDT_HOOK int SSL_write(void *s, const void *b, int n);
LDT_HOOK int SSL_write_ex(void *s, const void *b, size_t n, size_t *w);
LDT_HOOK int SSL_do_handshake(void *s);
LDT_HOOK int SSL_connect(void *s);
LDT_HOOK int SSL_accept(void *s);
LDT_HOOK ssize_t SSL_sendfile(void *s, int fd, off_t off, size_t n, int flags);

/* The real function (NULL when libssl has none), resolved on first use; ours is our hook of that
 * name or NULL. Racing resolvers store the same value. */
/* The plain (non-_Atomic) type of a table entry: clang refuses a cast to an _Atomic type. */
#define PLAIN_T(name) __typeof__(atomic_load_explicit(&xssl.name, memory_order_relaxed))
#define REAL_AS(name, ours)                                                                        \
    (atomic_load_explicit(&xssl.name, memory_order_relaxed)                                        \
         ? atomic_load_explicit(&xssl.name, memory_order_relaxed)                                  \
         : (atomic_store_explicit(&xssl.name, (PLAIN_T(name))resolve(#name, ours),                 \
                                  memory_order_relaxed),                                           \
            atomic_load_explicit(&xssl.name, memory_order_relaxed)))
#define REAL(name) REAL_AS(name, (void *)name)
#define HELPER(name) REAL_AS(name, NULL)

/* ---- which socket: SSL_get_fd, else what the BIO was seen using ------------------------------ */

#define MAP_SLOTS 1024

struct map_ent {
    void *_Atomic ssl;
    _Atomic int fd;
};

static struct map_ent fdmap[MAP_SLOTS];

static unsigned map_hash(const void *ssl)
{
    uintptr_t v = (uintptr_t)ssl;
    return (unsigned)((v >> 4) ^ (v >> 14)) % MAP_SLOTS;
}

/* The last word wins: an SSL object freed and another allocated at its address learns its socket
 * again on its first call (a handshake or I/O always precedes the traced calls). */
static void map_put(void *ssl, int fd)
{
    struct map_ent *m = &fdmap[map_hash(ssl)];
    atomic_store_explicit(&m->fd, fd, memory_order_relaxed);
    atomic_store_explicit(&m->ssl, ssl, memory_order_release);
}

static int map_get(void *ssl)
{
    struct map_ent *m = &fdmap[map_hash(ssl)];
    if (atomic_load_explicit(&m->ssl, memory_order_acquire) != ssl)
        return -1;
    return atomic_load_explicit(&m->fd, memory_order_relaxed);
}

static int ssl_fd(void *ssl)
{
    int (*get_fd)(const void *) = HELPER(SSL_get_fd);
    int fd = get_fd ? get_fd(ssl) : -1;
    return fd >= 0 ? fd : map_get(ssl);
}

/* ---- one wrapped call --------------------------------------------------------------------- */

struct tcall {
    void *ssl;
    int fd;
    struct ldt__fd *e; /* the socket's entry, NULL: not traced (the call still runs nested) */
    uint64_t t0;
};

/* Enter: 0 to pass straight through (nested, off); else depth taken and the socket looked up. */
static int tls_begin(void *ssl, struct tcall *t)
{
    if (LDT_UNLIKELY(ldt__mode != LDT__MODE_ON) || ldt__depth)
        return 0;
    int saved = errno;
    ldt__depth++;
    t->ssl = ssl;
    t->fd = ssl_fd(ssl);
    t->e = t->fd >= 0 ? ldt__fd_get(t->fd) : NULL;
    if (t->e && atomic_load_explicit(&t->e->kind, memory_order_relaxed) != LDT__FD_SOCK)
        t->e = NULL;
    if (t->e && !t->e->tls) {
        t->e->tls = 1; /* from now on its ciphertext is not ours to sniff */
        if (t->e->cls == LDT__CLS_PASS)
            t->e->cls = LDT__CLS_NONE; /* classified on handshake bytes: classify the plaintext */
    }
    ldt__nested_fd = -1;
    errno = saved;
    t->t0 = ldt_clock_mono_ns();
    return 1;
}

/* Leave: learn the socket of an SSL whose BIO hides it, from what the call used. Keeps errno. */
static void tls_end(struct tcall *t)
{
    int saved = errno;
    if (t->fd < 0 && ldt__nested_fd >= 0) {
        struct ldt__fd *e = ldt__fd_get(ldt__nested_fd);
        if (e && atomic_load_explicit(&e->kind, memory_order_relaxed) == LDT__FD_SOCK) {
            map_put(t->ssl, ldt__nested_fd);
            if (!e->tls) {
                e->tls = 1;
                if (e->cls == LDT__CLS_PASS)
                    e->cls = LDT__CLS_NONE;
            }
        }
    }
    ldt__depth--;
    errno = saved;
}

/* What a failed or empty SSL read/write means for the sniffer: *n (-1 error, 0 end of stream) and
 * the errno it stands for. */
static int tls_err(void *ssl, int r, int err, ssize_t *n)
{
    int (*get_error)(const void *, int) = HELPER(SSL_get_error);
    int code = get_error ? get_error(ssl, r) : X_ERROR_SSL;
    *n = -1;
    switch (code) {
    case X_ERROR_ZERO_RETURN:
        *n = 0; /* close_notify: the peer's end of stream */
        return 0;
    case X_ERROR_WANT_READ:
    case X_ERROR_WANT_WRITE:
        return EAGAIN;
    case X_ERROR_SYSCALL:
        if (err == 0)
            *n = 0; /* EOF without close_notify */
        return err;
    default:
        return EPROTO;
    }
}

/* After a real read: r bytes (r > 0), or the failure r <= 0. */
static void tls_in(struct tcall *t, void *buf, size_t num, ssize_t r)
{
    int err = errno;
    ssize_t n = r;
    if (r <= 0)
        err = tls_err(t->ssl, (int)r, err, &n);
    if (t->e) {
        struct iovec v = {buf, num};
        ldt__io_end = ldt_clock_mono_ns();
        ldt__sniff_io(t->fd, t->e, LDT__IN, &v, 1, n, err, ldt__io_end - t->t0);
        ldt__io_end = 0;
    }
}

LDT_HOOK int SSL_read(void *ssl, void *buf, int num)
{
    int (*real)(void *, void *, int) = REAL(SSL_read);
    struct tcall t;
    if (!real)
        return -1;
    if (!tls_begin(ssl, &t))
        return real(ssl, buf, num);
    int r = real(ssl, buf, num);
    int err = errno;
    tls_in(&t, buf, num > 0 ? (size_t)num : 0, r);
    tls_end(&t);
    errno = err;
    return r;
}

LDT_HOOK int SSL_read_ex(void *ssl, void *buf, size_t num, size_t *got)
{
    int (*real)(void *, void *, size_t, size_t *) = REAL(SSL_read_ex);
    struct tcall t;
    if (!real)
        return 0;
    if (!tls_begin(ssl, &t))
        return real(ssl, buf, num, got);
    int ok = real(ssl, buf, num, got);
    int err = errno;
    tls_in(&t, buf, num, ok == 1 ? (ssize_t)*got : (ssize_t)(ok > 0 ? 0 : ok));
    tls_end(&t);
    errno = err;
    return ok;
}

/* ---- writes ---------------------------------------------------------------------------------- */

/* One real write of len bytes: 1 and *w, or the failure (<= 0) as SSL_write/_ex returned it. */
static int write_piece(void *ssl, const void *p, size_t len, size_t *w)
{
    int (*wex)(void *, const void *, size_t, size_t *) = REAL(SSL_write_ex);
    if (wex)
        return wex(ssl, p, len, w);
    int (*wr)(void *, const void *, int) = REAL(SSL_write);
    int r = wr ? wr(ssl, p, (int)(len > 0x7fffffff ? 0x7fffffff : len)) : -1;
    *w = r > 0 ? (size_t)r : 0;
    return r > 0 ? 1 : r;
}

/* The pieces of an app write of num bytes with edits ed[ned]. */
static void make_pieces(struct ldt__tls_write *tw, size_t num, const struct ldt__edit *ed, int ned)
{
    size_t cur = 0;
    int k = 0;
    for (int i = 0; i < ned; i++) {
        if (ed[i].off > cur)
            tw->pc[k++] = (struct ldt__tls_piece){NULL, cur, ed[i].off - cur};
        tw->pc[k++] = (struct ldt__tls_piece){ed[i].ins, 0, ed[i].ins_len};
        tw->del[i] = ed[i].del;
        cur = ed[i].off + ed[i].del;
    }
    if (num > cur)
        tw->pc[k++] = (struct ldt__tls_piece){NULL, cur, num - cur};
    tw->npieces = (uint8_t)k;
    tw->idx = 0;
    tw->done = 0;
    tw->ned = (uint8_t)ned;
}

/* Is this call the app's retry of the pending one? */
static int same_call(void *ssl, const struct ldt__tls_write *tw, const void *buf, size_t num)
{
    if (num != tw->num)
        return 0;
    if (buf == tw->buf)
        return 1;
    long (*ctrl)(void *, int, long, void *) = HELPER(SSL_ctrl);
    return ctrl && (ctrl(ssl, X_CTRL_MODE, 0, NULL) & X_MODE_MOVING);
}

/* Send the pending pieces: 1 when all went, else the failing real result (state kept). */
static int send_pieces(void *ssl, struct ldt__tls_write *tw, const char *buf)
{
    while (tw->idx < tw->npieces) {
        const struct ldt__tls_piece *pc = &tw->pc[tw->idx];
        const char *p = (pc->ins ? pc->ins : buf + pc->off) + tw->done;
        size_t w = 0;
        int r = write_piece(ssl, p, pc->len - tw->done, &w);
        if (r != 1) {
            tw->active = 1;
            return r;
        }
        tw->done += w;
        if (tw->done >= pc->len) {
            tw->idx++;
            tw->done = 0;
        }
    }
    tw->active = 0;
    return 1;
}

/* A client-role write: plan (or resume) the pieces, send them, account. 1 and *w = num, or the
 * failing result. */
static int client_write_held(struct tcall *t, struct ldt__conn *c, const void *buf, size_t num,
                             size_t *w)
{
    struct ldt__tls_write *tw = &c->tlsw;
    struct iovec v = {(void *)buf, num};
    if (!tw->active || !same_call(t->ssl, tw, buf, num)) {
        struct ldt__edit ed[LDT__EDITS_MAX];
        int ned = ldt__client_plan(c, &v, 1, ed, tw->sp, tw->rep);
        make_pieces(tw, num, ed, ned);
    }
    tw->buf = buf;
    tw->num = num;
    int r = send_pieces(t->ssl, tw, buf);
    if (r != 1)
        return r;
    struct ldt__edit ed[LDT__EDITS_MAX];
    for (int i = 0; i < tw->ned; i++)
        ed[i] = (struct ldt__edit){0, tw->del[i], 0, NULL};
    ldt__client_sent(c, ed, tw->sp, tw->ned, &v, 1, (ssize_t)num);
    *w = num;
    return 1;
}

/* The same with the conn pinned (the pieces point into it across the app's retries). */
static int client_write(struct tcall *t, const void *buf, size_t num, size_t *w)
{
    struct ldt__conn *c = ldt__conn_hold(t->e); /* not given back to the pool meanwhile */
    if (!c)
        return write_piece(t->ssl, buf, num, w);
    int r = client_write_held(t, c, buf, num, w);
    ldt__conn_unhold(t->e, c);
    return r;
}

/* The traced part of a write: 1 and *w, or the real failure; the sniffer is told either way. */
static int tls_write(struct tcall *t, const void *buf, size_t num, size_t *w, int ex)
{
    struct iovec v = {(void *)buf, num};
    int inj = t->e && num > 0 && ldt__sniff_wants_inject(t->fd, t->e, &v, 1);
    int r;
    if (inj) {
        r = client_write(t, buf, num, w);
    } else if (ex) {
        int (*real)(void *, const void *, size_t, size_t *) = REAL(SSL_write_ex);
        r = real ? real(t->ssl, buf, num, w) : 0;
    } else {
        int (*real)(void *, const void *, int) = REAL(SSL_write);
        r = real ? real(t->ssl, buf, (int)num) : -1;
        *w = r > 0 ? (size_t)r : 0;
    }
    int err = errno;
    ssize_t n = r > 0 ? (ssize_t)*w : -1;
    if (r <= 0)
        err = tls_err(t->ssl, r, err, &n);
    if (t->e) {
        ldt__io_start = t->t0;
        ldt__io_end = ldt_clock_mono_ns();
        ldt__sniff_io(t->fd, t->e, LDT__OUT, inj ? NULL : &v, 1, n < 0 ? -1 : n, err,
                      ldt__io_end - t->t0);
        ldt__io_start = ldt__io_end = 0;
    }
    errno = err;
    return r;
}

LDT_HOOK int SSL_write(void *ssl, const void *buf, int num)
{
    int (*real)(void *, const void *, int) = REAL(SSL_write);
    struct tcall t;
    if (!real)
        return -1;
    if (num <= 0 || !tls_begin(ssl, &t))
        return real(ssl, buf, num);
    size_t w = 0;
    int r = tls_write(&t, buf, (size_t)num, &w, 0);
    int err = errno;
    tls_end(&t);
    errno = err;
    return r == 1 && w <= (size_t)num ? (int)w : r;
}

LDT_HOOK int SSL_write_ex(void *ssl, const void *buf, size_t num, size_t *written)
{
    int (*real)(void *, const void *, size_t, size_t *) = REAL(SSL_write_ex);
    struct tcall t;
    if (!real)
        return 0;
    if (num == 0 || !tls_begin(ssl, &t))
        return real(ssl, buf, num, written);
    size_t w = 0;
    int r = tls_write(&t, buf, num, &w, 1);
    int err = errno;
    tls_end(&t);
    if (r == 1 && written)
        *written = w;
    errno = err;
    return r;
}

/* ---- handshakes: ciphertext only; learn the socket --------------------------------------------
 */

#define HANDSHAKE(name)                                                                            \
    LDT_HOOK int name(void *ssl)                                                                   \
    {                                                                                              \
        int (*real)(void *) = REAL(name);                                                          \
        struct tcall t;                                                                            \
        if (!real)                                                                                 \
            return -1;                                                                             \
        if (!tls_begin(ssl, &t))                                                                   \
            return real(ssl);                                                                      \
        int r = real(ssl);                                                                         \
        tls_end(&t);                                                                               \
        return r;                                                                                  \
    }

HANDSHAKE(SSL_do_handshake)
HANDSHAKE(SSL_connect)
HANDSHAKE(SSL_accept)

/* ---- SSL_sendfile: file bytes sent under kernel TLS, never seen here ------------------------ */

/* After a real SSL_sendfile that returned r: tell the sniffer as the sendfile hook does. r > 0
 * body bytes went (0: none); a failure is an I/O event only when the socket was tried (WANT_WRITE,
 * a system error); SSL_ERROR_SSL (no kTLS, not initialised, shut down) sent nothing. */
static void tls_sendfile_done(struct tcall *t, ssize_t r, int err)
{
    if (r < 0) {
        int (*get_error)(const void *, int) = HELPER(SSL_get_error);
        int code = get_error ? get_error(t->ssl, -1) : X_ERROR_SSL;
        if (code == X_ERROR_WANT_WRITE || code == X_ERROR_WANT_READ)
            err = EAGAIN;
        else if (code != X_ERROR_SYSCALL || err == 0) {
            t->e->calls++;
            return;
        }
    }
    ldt__io_start = t->t0;
    ldt__sniff_sendfile(t->fd, t->e, r < 0 ? -1 : r, err, ldt_clock_mono_ns() - t->t0);
    ldt__io_start = 0;
}

/* SSL_sendfile(ssl, fd, offset, size, flags) -> ossl_ssize_t (OpenSSL >= 3.0): the real call's
 * result and errno, untouched; -1 when libssl has no SSL_sendfile. */
LDT_HOOK ssize_t SSL_sendfile(void *ssl, int fd, off_t off, size_t size, int flags)
{
    ssize_t (*real)(void *, int, off_t, size_t, int) = REAL(SSL_sendfile);
    struct tcall t;
    if (!real)
        return -1;
    if (!tls_begin(ssl, &t))
        return real(ssl, fd, off, size, flags);
    ssize_t r = real(ssl, fd, off, size, flags);
    int err = errno;
    if (t.e)
        tls_sendfile_done(&t, r, err);
    tls_end(&t);
    errno = err;
    return r;
}
