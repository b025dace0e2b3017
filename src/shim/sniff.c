/* sniff.c - classify traced sockets on their first bytes and turn HTTP parser events into spans.
 *
 * hooks_*.c -> here -> span.c. One ldt_http_parser per direction per connection: a server-role
 * connection reads requests and writes responses, a client-role one the reverse. Anything that is
 * not HTTP/1.x, or stops being parseable, is passed through with byte counts only (never broken).
 * All functions preserve errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <string.h>
#include <sys/un.h>

#include "shim/shim.h"

/* ---- attach ---------------------------------------------------------------------------------- */

static void addr_from(const struct sockaddr_storage *ss, socklen_t len, uint8_t *fam,
                      uint8_t addr[16], uint16_t *port)
{
    if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        *fam = LDT_AF_INET;
        memcpy(addr, &s->sin_addr, 4);
        *port = ntohs(s->sin_port);
    } else if (ss->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        *port = ntohs(s->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
            *fam = LDT_AF_INET; /* a dual-stack socket talking IPv4: report the IPv4 address */
            memcpy(addr, &s->sin6_addr.s6_addr[12], 4);
        } else {
            *fam = LDT_AF_INET6;
            memcpy(addr, &s->sin6_addr, 16);
        }
    } else if (ss->ss_family == AF_UNIX) {
        *fam = LDT_AF_UNIX;
    }
}

void ldt__span_peer(struct ldt_span_rec *r, const struct sockaddr *sa, socklen_t len)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, sa, len < sizeof ss ? len : sizeof ss);
    addr_from(&ss, len, &r->peer_family, r->peer_addr, &r->peer_port);
}

/* The unix socket path: the peer's for a client, our own (the listening path) for a server. */
static void unix_path_from(struct ldt__fd *e, const struct sockaddr_storage *ss, socklen_t len)
{
    const struct sockaddr_un *u = (const struct sockaddr_un *)ss;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    if (ss->ss_family != AF_UNIX || len <= off || e->unix_ref)
        return;
    size_t n = strnlen(u->sun_path, len - off);
    e->unix_ref = ldt__name_intern(u->sun_path, n < LDT_SPAN_HOST_MAX ? n : LDT_SPAN_HOST_MAX);
}

/* The addresses of fd's connection into its entry (once: they label every span on it). An IPv6
 * peer goes beside the table's entry (ldt__fd_peer6), so only an entry of the table keeps one. */
static void fetch_addrs(int fd, struct ldt__fd *e)
{
    struct sockaddr_storage ss;
    uint8_t peer[16] = {0}, local[16] = {0};
    socklen_t len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (ldt_real.getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
        addr_from(&ss, len, &e->peer_family, peer, &e->peer_port);
        unix_path_from(e, &ss, len);
    }
    len = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (ldt_real.getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        addr_from(&ss, len, &e->local_family, local, &e->local_port);
        unix_path_from(e, &ss, len);
    }
    if (e->local_family == LDT_AF_INET || e->local_family == LDT_AF_INET6)
        e->local_ref = ldt__name_intern(local, e->local_family == LDT_AF_INET ? 4 : 16);
    if (e->peer_family == LDT_AF_INET) {
        memcpy(e->peer4, peer, 4);
    } else if (e->peer_family == LDT_AF_INET6 && ldt__fd_peek(fd) == e) {
        memcpy(ldt__fd_peer6(e), peer, 16);
        e->addrs |= LDT__ADDRS_PEER6;
    }
    e->addrs |= LDT__ADDRS_FETCHED;
}

struct ldt__conn *ldt__sniff_attach(int fd, struct ldt__fd *e, enum ldt__role role)
{
    int saved = errno;
    if (!e->addrs)
        fetch_addrs(fd, e);
    e->role = (uint8_t)role;
    struct ldt__conn *c = ldt__conn_take(e);
    if (!c) {
        e->cls = LDT__CLS_PASS;
        ldt__count_untracked();
        errno = saved;
        return NULL;
    }
    c->role = (uint8_t)role;
    ldt_http_init(&c->in, role == LDT__ROLE_SERVER ? LDT_HTTP_REQUEST : LDT_HTTP_RESPONSE);
    ldt_http_init(&c->out, role == LDT__ROLE_SERVER ? LDT_HTTP_RESPONSE : LDT_HTTP_REQUEST);
    e->cls = LDT__CLS_HTTP;
    ldt__conn_unlock(c);
    errno = saved;
    return c;
}

/* Decide the socket's class on its first bytes in direction dir. */
static void classify(int fd, struct ldt__fd *e, enum ldt__dir dir, const struct iovec *iov, int cnt,
                     size_t n)
{
    char buf[16];
    size_t got = 0;
    for (int i = 0; i < cnt && got < sizeof buf && got < n; i++) {
        size_t k = iov[i].iov_len;
        if (k > sizeof buf - got)
            k = sizeof buf - got;
        if (k > n - got)
            k = n - got;
        memcpy(buf + got, iov[i].iov_base, k);
        got += k;
    }
    int r = ldt_http_classify(buf, got);
    if (r == LDT_HTTP_REQUEST || r == LDT_HTTP_PARTIAL) {
        ldt__sniff_attach(fd, e, dir == LDT__IN ? LDT__ROLE_SERVER : LDT__ROLE_CLIENT);
        return;
    }
    if (dir == LDT__OUT && e->origin == LDT__ORIG_PROBED && !e->conn && fd >= 0 &&
        ldt__fd_share_sibling(fd, e))
        return;
    e->cls = LDT__CLS_PASS;
    struct ldt__conn *c = ldt__conn_of(e);
    if (c && !c->connecting && !c->shared) {
        atomic_store_explicit(&e->conn, NULL, memory_order_release);
        ldt__conn_unlock(c);
        ldt__conn_free(c); /* it only carried the CONNECT span, now ended */
    } else if (c) {
        ldt__conn_unlock(c);
    }
}

/* ---- span bookkeeping ------------------------------------------------------------------------ */

static struct ldt__span *srv_at(struct ldt__conn *c, unsigned i)
{
    return i < c->srv_n ? &c->srv[(c->srv_head + i) % LDT__SRV_MAX] : NULL;
}

static struct ldt__span *cli_at(struct ldt__conn *c, unsigned i)
{
    return i < c->cli_n ? &c->cli[(c->cli_head + i) % LDT__CLI_MAX] : NULL;
}

/* The response parser must know the method of the request it answers (HEAD: no body, CONNECT:
 * tunnel). With pipelining several requests wait; the next response answers the oldest, so the
 * parser is told at the start of each response: when the oldest changes, and after a 1xx. */
static void expect_head(struct ldt__conn *c)
{
    struct ldt__span *s = c->role == LDT__ROLE_SERVER ? srv_at(c, 0) : cli_at(c, 0);
    if (s && (c->role == LDT__ROLE_SERVER || s->done_req || c->cli_out == 0))
        ldt_http_expect(c->role == LDT__ROLE_SERVER ? &c->out : &c->in,
                        (enum ldt_http_method)s->rec.method);
}

static void srv_pop(struct ldt__conn *c)
{
    struct ldt__span *s = srv_at(c, 0);
    if (s == c->in_cur)
        c->in_cur = NULL;
    c->srv_head = (uint8_t)((c->srv_head + 1) % LDT__SRV_MAX);
    c->srv_n--;
    if (c->srv_n || c->role != LDT__ROLE_SERVER) /* else expect_head finds nothing to expect */
        expect_head(c);
}

static void cli_pop(struct ldt__conn *c)
{
    c->cli_head = (uint8_t)((c->cli_head + 1) % LDT__CLI_MAX);
    c->cli_n--;
    if (c->cli_out > 0)
        c->cli_out--;
    expect_head(c);
}

/* End every client span whose request went out: the connection failed or ended under them. */
static void cli_fail_all(struct ldt__conn *c, int err)
{
    struct ldt__span *s;
    while ((s = cli_at(c, 0)) != NULL && s->started) {
        s->rec.flags |= LDT_SPAN_F_CONN_DIED;
        if (err && !s->rec.err)
            s->rec.err = err;
        ldt__span_end(s, c);
        cli_pop(c);
    }
}

/* Drop every open span without a record (the sniffer lost the stream, or the socket now belongs to
 * a forked child that serves it). */
static void drop_all(struct ldt__conn *c)
{
    struct ldt__span *s;
    while ((s = srv_at(c, 0)) != NULL) {
        s->sampled = 0;
        ldt__span_end(s, c);
        srv_pop(c);
    }
    c->cli_n = c->cli_out = 0;
    c->in_cur = NULL;
}

static void give_up(struct ldt__conn *c)
{
    c->dead = 1;
    ldt__count_reject();
    drop_all(c);
}

/* The span a call on this connection is accounted to. */
static struct ldt__span *io_span(struct ldt__conn *c, enum ldt__dir dir)
{
    if (c->role == LDT__ROLE_SERVER)
        return srv_at(c, 0);
    if (dir == LDT__IN)
        return cli_at(c, 0);
    return c->cli_out < c->cli_n ? cli_at(c, c->cli_out) : cli_at(c, c->cli_n - 1u);
}

/* ---- parser events --------------------------------------------------------------------------- */

static void on_bytes(struct ldt__conn *c, enum ldt__dir dir, size_t r)
{
    struct ldt__span *s;
    if (c->role == LDT__ROLE_SERVER && dir == LDT__IN) {
        if (c->in_cur)
            c->in_cur->rec.bytes_in += r;
        else
            c->in_hdr_bytes += r;
    } else if (c->role == LDT__ROLE_SERVER) {
        if ((s = srv_at(c, 0)) != NULL && r) {
            s->rec.bytes_out += r;
            s->started = 1;
        }
    } else if (dir == LDT__OUT) {
        c->out_sent += r;
        if ((s = cli_at(c, c->cli_out)) != NULL && r) {
            s->rec.bytes_out += r;
            s->started = 1;
        }
    } else if ((s = cli_at(c, 0)) != NULL) {
        s->rec.bytes_in += r;
    }
}

static void server_in_event(struct ldt__conn *c, int ev)
{
    if (ev == LDT_HTTP_EV_DONE) {
        c->in_cur = NULL;
        return;
    }
    if (c->srv_n == LDT__SRV_MAX) {
        ldt__count_untracked();
        c->in_cur = NULL;
        return;
    }
    struct ldt__span *s = &c->srv[(c->srv_head + c->srv_n) % LDT__SRV_MAX];
    c->srv_n++;
    ldt__span_server_begin(s, c, &c->in.msg);
    s->started = 0;
    s->rec.bytes_in = c->in_hdr_bytes;
    c->in_hdr_bytes = 0;
    c->in_cur = s;
    if (c->srv_n == 1) /* no response pending before this one: it is next (expect_head) */
        ldt_http_expect(&c->out, (enum ldt_http_method)s->rec.method);
}

static void server_out_event(struct ldt__conn *c, int ev)
{
    struct ldt__span *s = srv_at(c, 0);
    uint16_t st = c->out.msg.status;
    if (!s)
        return;
    if (ev == LDT_HTTP_EV_HEADERS) {
        s->rec.status_code = st;
        if (st >= 500 && s->sampled) {
            ldt__stack_capture(s->rec.span_id); /* the app is writing its 5xx: its stack */
            s->rec.flags |= LDT_SPAN_F_STACK;
        }
        if (st != 101)
            return;
    } else if (st >= 100 && st < 200 && st != 101) {
        expect_head(c); /* an interim response: the final one is still to come (RFC 9110 15.2) */
        return;
    }
    ldt__span_end(s, c);
    srv_pop(c);
}

static void client_out_event(struct ldt__conn *c, int ev)
{
    struct ldt__span *s = cli_at(c, c->cli_out);
    if (ev == LDT_HTTP_EV_HEADERS) {
        if (s)
            ldt__span_client_headers(s, c, &c->out.msg);
        ldt__conn_flush_connect(c); /* the first request said whose connect it was */
        if (s && c->cli_out == 0)
            expect_head(c); /* the oldest request waiting: its response is next */
        else if (!s)
            ldt_http_expect(&c->in, (enum ldt_http_method)c->out.msg.method);
        return;
    }
    c->out_sent = 0;
    if (s) {
        s->done_req = 1;
        c->cli_out++;
    }
}

static void client_in_event(struct ldt__conn *c, int ev)
{
    struct ldt__span *s = cli_at(c, 0);
    uint16_t st = c->in.msg.status;
    if (!s)
        return;
    if (ev == LDT_HTTP_EV_HEADERS) {
        s->rec.status_code = st;
        if (st != 101)
            return;
    } else if (st >= 100 && st < 200 && st != 101) {
        expect_head(c);
        return;
    }
    ldt__span_end(s, c);
    cli_pop(c);
}

static void on_event(struct ldt__conn *c, enum ldt__dir dir, int ev)
{
    if (c->role == LDT__ROLE_SERVER)
        (dir == LDT__IN ? server_in_event : server_out_event)(c, ev);
    else
        (dir == LDT__IN ? client_in_event : client_out_event)(c, ev);
}

/* feed() for a server-role conn and one buffer (a request read, a response written): the same
 * steps with on_bytes and the events of the role inline. */
static inline __attribute__((always_inline)) void feed_server(struct ldt__conn *c,
                                                              enum ldt__dir dir, const char *b,
                                                              size_t l)
{
    struct ldt_http_parser *p = dir == LDT__IN ? &c->in : &c->out;
    do {
        if (c->dead)
            return;
        ssize_t r = ldt_http_feed(p, b, l);
        if (LDT_UNLIKELY(r < 0)) {
            give_up(c);
            return;
        }
        if (dir == LDT__IN) {
            if (c->in_cur)
                c->in_cur->rec.bytes_in += (size_t)r;
            else
                c->in_hdr_bytes += (size_t)r;
        } else if (r && c->srv_n) {
            struct ldt__span *s = &c->srv[c->srv_head % LDT__SRV_MAX];
            s->rec.bytes_out += (size_t)r;
            s->started = 1;
        }
        b += r;
        l -= (size_t)r;
        if (p->ev != LDT_HTTP_EV_NONE) {
            if (dir == LDT__IN)
                server_in_event(c, p->ev);
            else if (p->ev == LDT_HTTP_EV_HEADERS && c->srv_n && c->out.msg.status < 500 &&
                     c->out.msg.status != 101)
                /* server_out_event's usual header block, without the call */
                c->srv[c->srv_head % LDT__SRV_MAX].rec.status_code = c->out.msg.status;
            else
                server_out_event(c, p->ev);
        } else if (r == 0) {
            break;
        }
    } while (l > 0 || p->ev == LDT_HTTP_EV_HEADERS);
}

/* feed() for a client-role conn reading one buffer (a response). */
static __attribute__((noinline)) void feed_client_in(struct ldt__conn *c, const char *b, size_t l)
{
    struct ldt_http_parser *p = &c->in;
    do {
        if (c->dead)
            return;
        ssize_t r = ldt_http_feed(p, b, l);
        if (LDT_UNLIKELY(r < 0)) {
            give_up(c);
            return;
        }
        if (c->cli_n)
            c->cli[c->cli_head % LDT__CLI_MAX].rec.bytes_in += (size_t)r;
        b += r;
        l -= (size_t)r;
        if (p->ev != LDT_HTTP_EV_NONE)
            client_in_event(c, p->ev);
        else if (r == 0)
            break;
    } while (l > 0 || p->ev == LDT_HTTP_EV_HEADERS);
}

static __attribute__((noinline)) void feed_server_in(struct ldt__conn *c, const char *b, size_t l)
{
    feed_server(c, LDT__IN, b, l);
}

static __attribute__((noinline)) void feed_server_out(struct ldt__conn *c, const char *b, size_t l)
{
    feed_server(c, LDT__OUT, b, l);
}

/* Feed n bytes spread over iov to the parser of direction dir, event by event. */
static void feed(struct ldt__conn *c, enum ldt__dir dir, const struct iovec *iov, int cnt, size_t n)
{
    struct ldt_http_parser *p = dir == LDT__IN ? &c->in : &c->out;
    if (c->role == LDT__ROLE_SERVER && n > 0 && cnt >= 1 && iov[0].iov_len >= n) {
        (dir == LDT__IN ? feed_server_in : feed_server_out)(c, iov[0].iov_base, n);
        return;
    }
    if (c->role == LDT__ROLE_CLIENT && dir == LDT__IN && n > 0 && cnt >= 1 &&
        iov[0].iov_len >= n) {
        feed_client_in(c, iov[0].iov_base, n);
        return;
    }
    for (int i = 0; i < cnt && n > 0; i++) {
        const char *b = iov[i].iov_base;
        size_t l = iov[i].iov_len < n ? iov[i].iov_len : n;
        n -= l;
        do {
            if (c->dead)
                return;
            ssize_t r = ldt_http_feed(p, b, l);
            if (r < 0) {
                give_up(c);
                return;
            }
            on_bytes(c, dir, (size_t)r);
            b += r;
            l -= (size_t)r;
            if (p->ev != LDT_HTTP_EV_NONE)
                on_event(c, dir, p->ev);
            else if (r == 0)
                break;
        } while (l > 0 || p->ev == LDT_HTTP_EV_HEADERS);
    }
}

void ldt__sniff_feed_out(struct ldt__conn *c, const struct iovec *iov, int cnt, size_t n)
{
    feed(c, LDT__OUT, iov, cnt, n);
}

void ldt__sniff_replay_out(struct ldt__conn *c, const struct ldt_http_parser *fin,
                           const struct ldt__feed_step *st, int n)
{
    if (fin->state == LDT_HTTP_S_START) {
        /* Between messages the kept strings are dead (the next byte clears them): not copied. */
        memcpy(&c->out, fin, offsetof(struct ldt_http_parser, msg.path));
        c->out.msg.path_len = c->out.msg.host_len = c->out.msg.tp_len = c->out.msg.ts_len = 0;
        c->out.msg.path[0] = c->out.msg.host[0] = c->out.msg.tp[0] = c->out.msg.ts[0] = '\0';
    } else {
        c->out = *fin;
    }
    for (int i = 0; i < n && !c->dead; i++) {
        on_bytes(c, LDT__OUT, st[i].r);
        if (st[i].ev != LDT_HTTP_EV_NONE)
            client_out_event(c, st[i].ev);
    }
}

/* ---- end of stream, errors, connect ---------------------------------------------------------- */

static void on_eof(struct ldt__conn *c)
{
    if (c->role != LDT__ROLE_CLIENT)
        return; /* a client's half-close: the response may still be written */
    struct ldt__span *s = cli_at(c, 0);
    if (s && s->started && ldt_http_eof(&c->in) == 1 && c->in.msg.status >= 200) {
        ldt__span_end(s, c); /* a response delimited by the close (RFC 9112 6.3 item 8) */
        cli_pop(c);
    }
    cli_fail_all(c, 0);
}

static int is_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_NONBLOCK);
}

static void on_error(int fd, struct ldt__conn *c, int err)
{
    c->err = err;
    if (c->role != LDT__ROLE_CLIENT)
        return;
    if (err == ECONNRESET || err == EPIPE || err == ETIMEDOUT) {
        cli_fail_all(c, err);
    } else if ((err == EAGAIN || err == EWOULDBLOCK) && is_blocking(fd)) {
        struct ldt__span *s = cli_at(c, 0); /* SO_RCVTIMEO/SO_SNDTIMEO ran out */
        if (s) {
            s->rec.flags |= LDT_SPAN_F_TIMEOUT;
            s->rec.err = err;
        }
    }
}

/* A non-blocking connect's span ends at the first use of the socket (or its close): SO_ERROR says
 * how the handshake went. Caller holds the lock. */
static void connect_end(struct ldt__conn *c, int soerr)
{
    c->connecting = 0;
    c->conn_span.rec.err = soerr;
    c->conn_span.rec.op = LDT_OP_CONNECT;
    if (ldt__stack_worthy(soerr) && c->conn_span.sampled) {
        ldt__stack_capture(c->conn_span.rec.span_id);
        c->conn_span.rec.flags |= LDT_SPAN_F_STACK;
    }
    if (soerr)
        ldt__span_end(&c->conn_span, NULL); /* failed: keep the address connect got */
    else
        ldt__conn_connect_done(c, c);
}

/* fd's conn has a connect span open: end it, with value as SO_ERROR (or read SO_ERROR: rd). */
static void connect_check(int fd, struct ldt__fd *e, int rd, int value)
{
    struct ldt__conn *c = atomic_load_explicit(&e->conn, memory_order_acquire);
    if (!c || !c->connecting) /* a racy peek: conns stay mapped; checked again under the lock */
        return;
    socklen_t l = sizeof value;
    if (rd && ldt_real.getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &l) != 0)
        value = 0;
    if (!e->addrs && fd >= 0)
        fetch_addrs(fd, e);
    if ((c = ldt__conn_of(e)) == NULL)
        return;
    if (c->connecting)
        connect_end(c, value);
    ldt__conn_put(e, c);
}

void ldt__sniff_so_error(int fd, struct ldt__fd *e, int value)
{
    int saved = errno;
    connect_check(fd, e, 0, value);
    errno = saved;
}

/* LDTRACE_SYSCALL_SPANS: the call as an INTERNAL child of the span it served (off the hot path). */
static __attribute__((noinline)) void syscall_span(const struct ldt__span *s, enum ldt__dir dir,
                                                   ssize_t n, int err, uint64_t io_ns)
{
    struct ldt__ctx p;
    memcpy(p.trace_id, s->rec.trace_id, 16);
    memcpy(p.span_id, s->rec.span_id, 8);
    p.flags = s->rec.trace_flags;
    p.valid = 1;
    p.ts_len = 0;
    uint64_t now = ldt_clock_wall_ns();
    ldt__span_internal(&p, dir == LDT__IN ? LDT_OP_RECV : LDT_OP_SEND, now - io_ns, io_ns,
                       n < 0 ? err : 0, NULL, 0);
}

/* account() of a server-role conn: the oldest request waiting for its response. */
static inline void account_server(struct ldt__conn *c, enum ldt__dir dir, ssize_t n, int err,
                                  uint64_t io_ns)
{
    if (!c->srv_n)
        return;
    struct ldt__span *s = &c->srv[c->srv_head % LDT__SRV_MAX];
    s->rec.io_ns += io_ns;
    s->rec.io_calls++;
    if (LDT_UNLIKELY(ldt__cfg.syscall_spans) && s->sampled)
        syscall_span(s, dir, n, err, io_ns);
}

static void account(struct ldt__conn *c, enum ldt__dir dir, ssize_t n, int err, uint64_t io_ns)
{
    struct ldt__span *s = io_span(c, dir);
    if (!s)
        return;
    s->rec.io_ns += io_ns;
    s->rec.io_calls++;
    if (LDT_UNLIKELY(ldt__cfg.syscall_spans) && s->sampled)
        syscall_span(s, dir, n, err, io_ns);
}

/* ---- entry points ---------------------------------------------------------------------------- */

static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t t = 0;
    for (int i = 0; i < cnt; i++)
        t += iov[i].iov_len;
    return t;
}

/* The conn of a traced socket after this call's bookkeeping, locked and checked to be e's (taken
 * from the pool when these bytes may start a message on an idle connection), or NULL when there is
 * nothing to sniff (not HTTP; gone dead: then given back). Ends an open non-blocking CONNECT span
 * and classifies on first bytes. */
static struct ldt__conn *io_conn(int fd, struct ldt__fd *e, enum ldt__dir dir,
                                 const struct iovec *iov, int cnt, ssize_t n)
{
    struct ldt__conn *c = atomic_load_explicit(&e->conn, memory_order_relaxed);
    e->calls++;
    if (LDT_UNLIKELY(c != NULL && c->connecting)) /* a racy peek: conns stay mapped */
        connect_check(fd, e, 1, 0);
    if (e->cls == LDT__CLS_NONE && n > 0 && iov)
        classify(fd, e, dir, iov, cnt, (size_t)n);
    if (e->cls != LDT__CLS_HTTP)
        return NULL;
    /* Bytes may start a message: take a conn if the connection is idle; anything else only
     * concerns a message in flight. */
    c = n > 0 && iov ? ldt__conn_take(e) : ldt__conn_of(e);
    if (c && c->dead) {
        ldt__conn_put(e, c); /* gives it back: the connection is pass-through from now on */
        return NULL;
    }
    return c;
}

/* One server-role call moving one buffer (a request read, a response written) on a conn that is
 * e's and locked: the steps of sniff_conn below, in order, with the feed loop of the direction
 * inline (one call fewer per hook). */
static inline __attribute__((always_inline)) void server_one(struct ldt__fd *e,
                                                             struct ldt__conn *c,
                                                             enum ldt__dir dir, const char *b,
                                                             ssize_t n, int err, uint64_t io_ns)
{
    if (dir == LDT__IN) {
        ldt__ctx_note_read(c);
        feed_server(c, LDT__IN, b, (size_t)n);
        if (!c->dead)
            account_server(c, dir, n, err, io_ns);
    } else {
        account_server(c, dir, n, err, io_ns);
        feed_server(c, LDT__OUT, b, (size_t)n);
    }
    ldt__conn_put(e, c); /* the response done: back to the pool */
}

/* Everything ldt__sniff_call does once io_conn handed it c. */
static void sniff_conn(int fd, struct ldt__fd *e, struct ldt__conn *c, enum ldt__dir dir,
                       const struct iovec *iov, int cnt, ssize_t n, int err, uint64_t io_ns)
{
    c->epoch = atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed);
    if (n > 0 && iov && cnt >= 1 && c->role == LDT__ROLE_SERVER && iov[0].iov_len >= (size_t)n) {
        /* A server's request read or response written in one buffer: server_one's steps. */
        if (dir == LDT__IN) {
            ldt__ctx_note_read(c);
            feed_server_in(c, iov[0].iov_base, (size_t)n);
            if (!c->dead)
                account_server(c, dir, n, err, io_ns);
        } else {
            account_server(c, dir, n, err, io_ns);
            feed_server_out(c, iov[0].iov_base, (size_t)n);
        }
        ldt__conn_put(e, c);
        return;
    }
    /* The call is accounted to the span it served: one a request read creates (server, in) exists
     * only after feeding; one a response completes (everything else) only before. */
    int late = c->role == LDT__ROLE_SERVER && dir == LDT__IN;
    if (dir == LDT__IN && n > 0)
        ldt__ctx_note_read(c);
    if (!late)
        account(c, dir, n, err, io_ns);
    if (n > 0 && iov)
        feed(c, dir, iov, cnt, (size_t)n);
    else if (n == 0 && dir == LDT__IN && iov && iov_total(iov, cnt) > 0)
        on_eof(c);
    else if (n < 0)
        on_error(fd, c, err);
    if (late && !c->dead)
        account(c, dir, n, err, io_ns);
    ldt__conn_put(e, c);
}

/* ldt__sniff_call for a classified server-role connection with no connect span open (a racy
 * peek, as io_conn's) moving bytes in one buffer: io_conn and sniff_conn for that case only. No
 * fd: with bytes moved nothing needs it (it names the socket for errors and connect spans), and
 * six arguments make the dispatch a plain jump. */
static __attribute__((noinline)) void sniff_server(struct ldt__fd *e, enum ldt__dir dir,
                                                   const struct iovec *iov, ssize_t n, int err,
                                                   uint64_t io_ns)
{
    const int fd = -1; /* for sniff_conn: unused when n > 0 */
    e->calls++;
    struct ldt__conn *c = ldt__conn_take(e);
    if (!c)
        return;
    if (LDT_UNLIKELY(c->dead)) {
        ldt__conn_put(e, c); /* gives it back: the connection is pass-through from now on */
        return;
    }
    if (LDT_UNLIKELY(c->role != LDT__ROLE_SERVER)) {
        sniff_conn(fd, e, c, dir, iov, 1, n, err, io_ns);
        return;
    }
    c->epoch = atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed);
    if (dir == LDT__IN)
        server_one(e, c, LDT__IN, iov[0].iov_base, n, err, io_ns);
    else
        server_one(e, c, LDT__OUT, iov[0].iov_base, n, err, io_ns);
}

/* The same for a client-role connection reading one buffer (a response). */
static __attribute__((noinline)) void sniff_client_in(int fd, struct ldt__fd *e,
                                                      const struct iovec *iov, ssize_t n, int err,
                                                      uint64_t io_ns)
{
    e->calls++;
    struct ldt__conn *c = ldt__conn_take(e);
    if (!c)
        return;
    if (LDT_UNLIKELY(c->dead)) {
        ldt__conn_put(e, c);
        return;
    }
    if (LDT_UNLIKELY(c->role != LDT__ROLE_CLIENT)) {
        sniff_conn(fd, e, c, LDT__IN, iov, 1, n, err, io_ns);
        return;
    }
    c->epoch = atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed);
    ldt__ctx_note_read(c);
    account(c, LDT__IN, n, err, io_ns);
    feed_client_in(c, iov[0].iov_base, (size_t)n);
    ldt__conn_put(e, c);
}

/* ldt__sniff_call's general case, out of line so the dispatch below keeps no frame. */
static __attribute__((noinline)) void sniff_general(int fd, struct ldt__fd *e, enum ldt__dir dir,
                                                    const struct iovec *iov, int cnt, ssize_t n,
                                                    int err, uint64_t io_ns)
{
    struct ldt__conn *c = io_conn(fd, e, dir, iov, cnt, n);
    if (c)
        sniff_conn(fd, e, c, dir, iov, cnt, n, err, io_ns);
}

void ldt__sniff_call(int fd, struct ldt__fd *e, enum ldt__dir dir, const struct iovec *iov,
                     int cnt, ssize_t n, int err, uint64_t io_ns)
{
    if (LDT_LIKELY(n > 0 && iov && cnt >= 1 && iov[0].iov_len >= (size_t)n &&
                   e->cls == LDT__CLS_HTTP)) {
        struct ldt__conn *pc = atomic_load_explicit(&e->conn, memory_order_relaxed);
        if (LDT_LIKELY(!(pc && pc->connecting))) {
            if (e->role == LDT__ROLE_SERVER) {
                sniff_server(e, dir, iov, n, err, io_ns);
                return;
            }
            if (e->role == LDT__ROLE_CLIENT && dir == LDT__IN) {
                sniff_client_in(fd, e, iov, n, err, io_ns);
                return;
            }
        }
    }
    sniff_general(fd, e, dir, iov, cnt, n, err, io_ns);
}

void ldt__sniff_sent(int fd, struct ldt__fd *e, struct ldt__conn *c, ssize_t n, int err,
                     uint64_t io_ns)
{
    /* What ldt__sniff_call(iov NULL) and then ldt__conn_unhold do, under one lock when c is still
     * e's, the connection HTTP and no connect span open (a racy peek, checked under the lock). */
    if (LDT_LIKELY(e->cls == LDT__CLS_HTTP && !c->connecting)) {
        ldt__conn_lock(c);
        if (LDT_LIKELY(atomic_load_explicit(&e->conn, memory_order_relaxed) == c &&
                       !c->connecting)) {
            e->calls++;
            if (!c->dead) {
                c->epoch = atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed);
                account(c, LDT__OUT, n, err, io_ns);
                if (n < 0)
                    on_error(fd, c, err);
            }
            c->busy--;
            ldt__conn_put(e, c);
            return;
        }
        ldt__conn_unlock(c);
    }
    ldt__sniff_call(fd, e, LDT__OUT, NULL, 0, n, err, io_ns);
    ldt__conn_unhold(e, c);
}

void ldt__sniff_io(int fd, struct ldt__fd *e, enum ldt__dir dir, const struct iovec *iov, int cnt,
                   ssize_t n, int err, uint64_t io_ns)
{
    int saved = errno;
    if (!ldt__io_end)
        ldt__io_end = ldt_clock_mono_ns(); /* the hooks set it already, right after the call */
    ldt__sniff_call(fd, e, dir, iov, cnt, n, err, io_ns);
    ldt__io_end = 0;
    errno = saved;
}

int ldt__sniff_wants_inject(int fd, struct ldt__fd *e, const struct iovec *iov, int cnt)
{
    /* A classified connection with no connect span open (a racy peek, as below): nothing to end
     * or classify, so no call and no errno to keep. */
    struct ldt__conn *pc = atomic_load_explicit(&e->conn, memory_order_acquire);
    if (LDT_LIKELY(e->cls == LDT__CLS_HTTP && !(pc && pc->connecting)))
        return e->role == LDT__ROLE_CLIENT && !(pc && pc->dead);
    int saved = errno;
    connect_check(fd, e, 1, 0);
    if (e->cls == LDT__CLS_NONE) {
        size_t t = iov_total(iov, cnt);
        if (t > 0)
            classify(fd, e, LDT__OUT, iov, cnt, t);
    }
    errno = saved;
    /* A racy peek at dead (conns stay mapped): the injector checks it again under the lock. */
    struct ldt__conn *c = atomic_load_explicit(&e->conn, memory_order_acquire);
    return e->cls == LDT__CLS_HTTP && e->role == LDT__ROLE_CLIENT && !(c && c->dead);
}

void ldt__sniff_sendfile(int fd, struct ldt__fd *e, ssize_t n, int err, uint64_t io_ns)
{
    int saved = errno;
    ldt__io_end = ldt_clock_mono_ns();
    e->calls++;
    struct ldt__conn *c = NULL;
    if (e->cls == LDT__CLS_HTTP)
        c = n > 0 ? ldt__conn_take(e) : ldt__conn_of(e);
    if (c && !c->dead) {
        c->epoch = atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed);
        account(c, LDT__OUT, n, err, io_ns);
        if (n > 0) {
            ssize_t r = ldt_http_skip(&c->out, (size_t)n);
            if (r < 0)
                give_up(c);
            else {
                on_bytes(c, LDT__OUT, (size_t)r);
                if (c->out.ev == LDT_HTTP_EV_DONE)
                    on_event(c, LDT__OUT, LDT_HTTP_EV_DONE);
            }
        } else if (n < 0) {
            on_error(fd, c, err);
        }
    }
    if (c)
        ldt__conn_put(e, c);
    (void)fd;
    ldt__io_end = 0;
    errno = saved;
}

void ldt__sniff_close(struct ldt__conn *c, struct ldt__fd *e)
{
    (void)e;
    ldt__conn_lock(c);
    if (c->connecting)
        c->connecting = 0; /* closed before use: the caller ends it (fd still valid there) */
    if (c->epoch != atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed)) {
        /* The socket was shared by a fork and this process did no I/O on it since: the other side
         * of the fork serves it (a fork-per-connection server's parent, or a child closing the
         * fds it inherited before exec). Its open spans are not ours to end, let alone as errors.
         */
        drop_all(c);
    } else if (c->role == LDT__ROLE_SERVER && !c->dead) {
        struct ldt__span *s = srv_at(c, 0);
        if (s && s->started && ldt_http_eof(&c->out) == 1 && c->out.msg.status >= 200) {
            ldt__span_end(s, c); /* a response delimited by our own close */
            srv_pop(c);
        }
        while ((s = srv_at(c, 0)) != NULL) {
            s->rec.flags |= LDT_SPAN_F_CONN_DIED;
            ldt__span_end(s, c);
            srv_pop(c);
        }
    } else if (c->role == LDT__ROLE_CLIENT && !c->dead) {
        cli_fail_all(c, c->err);
    }
    ldt__conn_unlock(c);
}

/* Close of a socket with a non-blocking connect still open: end that span first. */
void ldt__sniff_close_fd(int fd, struct ldt__fd *e)
{
    connect_check(fd, e, 1, 0);
}
