/* shim.h - private header of libldtrace.so: real-symbol table, fd table, connection state, spans.
 *
 * Rules for everything in src/shim (they follow from living inside someone else's process):
 *   - Every hook has one shape: guard (ldt__enter), real call, save errno, record, restore errno,
 *     return the real result. Recording may fail; it never changes what the app sees.
 *   - No malloc and no stdio on any hook path: the fd table and the connection pool are mmapped.
 *   - No lock is held across a real call. The per-connection spin lock only covers sniffing.
 *   - Code that runs inside the shim does so with ldt__depth > 0, so libc calls we make ourselves
 *     (the segment's open/close, getpeername ...) pass straight through our own hooks.
 *   - Names shared between files of this folder use ldt__; ldt_real is the one libc symbol table.
 */
#ifndef LDTRACE_SHIM_H
#define LDTRACE_SHIM_H

#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common/common.h"
#include "ldtrace/http.h"
#include "ldtrace/record.h"
#include "ldtrace/tracecontext.h"

/* ------------------------------------------------------------------------------------------------
 * Real libc symbols (real.c). Every entry always points at something callable: a lazy trampoline
 * until resolved, the libc function once resolved, or a stub failing with ENOSYS when dlsym found
 * nothing (or found our own hook).
 * ---------------------------------------------------------------------------------------------- */

#define LDT_REAL_SYMS(X) \
    X(int, socket, (int d, int t, int p), (d, t, p)) \
    X(int, connect, (int fd, __CONST_SOCKADDR_ARG a, socklen_t l), (fd, a, l)) \
    X(int, accept, (int fd, __SOCKADDR_ARG a, socklen_t *l), (fd, a, l)) \
    X(int, accept4, (int fd, __SOCKADDR_ARG a, socklen_t *l, int f), (fd, a, l, f)) \
    X(int, shutdown, (int fd, int how), (fd, how)) \
    X(int, close, (int fd), (fd)) \
    X(int, dup2, (int o, int n), (o, n)) \
    X(int, dup3, (int o, int n, int f), (o, n, f)) \
    X(ssize_t, send, (int fd, const void *b, size_t n, int f), (fd, b, n, f)) \
    X(ssize_t, sendto, (int fd, const void *b, size_t n, int f, __CONST_SOCKADDR_ARG a, \
                        socklen_t l), (fd, b, n, f, a, l)) \
    X(ssize_t, sendmsg, (int fd, const struct msghdr *m, int f), (fd, m, f)) \
    X(ssize_t, write, (int fd, const void *b, size_t n), (fd, b, n)) \
    X(ssize_t, writev, (int fd, const struct iovec *v, int c), (fd, v, c)) \
    X(ssize_t, recv, (int fd, void *b, size_t n, int f), (fd, b, n, f)) \
    X(ssize_t, recvfrom, (int fd, void *b, size_t n, int f, __SOCKADDR_ARG a, socklen_t *l), \
      (fd, b, n, f, a, l)) \
    X(ssize_t, recvmsg, (int fd, struct msghdr *m, int f), (fd, m, f)) \
    X(ssize_t, read, (int fd, void *b, size_t n), (fd, b, n)) \
    X(ssize_t, readv, (int fd, const struct iovec *v, int c), (fd, v, c)) \
    X(ssize_t, sendfile, (int o, int i, off_t *off, size_t n), (o, i, off, n)) \
    X(ssize_t, sendfile64, (int o, int i, off64_t *off, size_t n), (o, i, off, n)) \
    X(ssize_t, __read_chk, (int fd, void *b, size_t n, size_t bl), (fd, b, n, bl)) \
    X(ssize_t, __recv_chk, (int fd, void *b, size_t n, size_t bl, int f), (fd, b, n, bl, f)) \
    X(ssize_t, __recvfrom_chk, (int fd, void *b, size_t n, size_t bl, int f, __SOCKADDR_ARG a, \
                                socklen_t *l), (fd, b, n, bl, f, a, l)) \
    X(int, getaddrinfo, (const char *n, const char *s, const struct addrinfo *h, \
                         struct addrinfo **r), (n, s, h, r)) \
    X(int, getpeername, (int fd, __SOCKADDR_ARG a, socklen_t *l), (fd, a, l)) \
    X(int, getsockname, (int fd, __SOCKADDR_ARG a, socklen_t *l), (fd, a, l)) \
    X(int, getsockopt, (int fd, int lv, int name, void *v, socklen_t *l), (fd, lv, name, v, l)) \
    X(int, setuid, (uid_t u), (u)) \
    X(int, seteuid, (uid_t u), (u)) \
    X(int, setreuid, (uid_t r, uid_t e), (r, e)) \
    X(int, setresuid, (uid_t r, uid_t e, uid_t s), (r, e, s)) \
    X(int, execve, (const char *p, char *const *a, char *const *e), (p, a, e)) \
    X(int, execv, (const char *p, char *const *a), (p, a)) \
    X(int, execvp, (const char *p, char *const *a), (p, a)) \
    X(int, execvpe, (const char *p, char *const *a, char *const *e), (p, a, e)) \
    X(int, fexecve, (int fd, char *const *a, char *const *e), (fd, a, e))

struct ldt_real_syms {
#define LDT__X(ret, name, params, args) ret (*name) params;
    LDT_REAL_SYMS(LDT__X)
#undef LDT__X
};

/* The table. Thread-safe to call at any time, even before our constructor ran. */
extern struct ldt_real_syms ldt_real;

/* Resolve every entry with dlsym(RTLD_NEXT) now (the constructor calls it; the trampolines call it
 * lazily). Idempotent and safe to race: each entry is one aligned pointer store. */
void ldt__real_resolve(void);

/* ------------------------------------------------------------------------------------------------
 * Process state (state.c)
 * ---------------------------------------------------------------------------------------------- */

enum ldt__mode {
    LDT__MODE_INIT = 0,     /* constructor not done: every hook passes through */
    LDT__MODE_ON = 1,
    LDT__MODE_OFF = 2,      /* OTEL_SDK_DISABLED=true */
};

extern int ldt__mode;                   /* enum ldt__mode */
extern struct ldt_config ldt__cfg;      /* read once by the constructor; tests fill it directly */
extern _Atomic uint32_t ldt__fork_epoch; /* bumped in parent and child at every fork */
extern __thread int ldt__depth __attribute__((tls_model("initial-exec")));
/* The last fd a byte-moving hook saw while nested (depth > 0): how the SSL_* hooks learn the socket
 * under an SSL object whose BIO is not a plain fd BIO (curl's). */
extern __thread int ldt__nested_fd __attribute__((tls_model("initial-exec")));
/* Monotonic time the current hook's real call returned (0 outside one): spans ending inside a hook
 * end then, not after our own work (a stack capture can take milliseconds). */
extern __thread uint64_t ldt__io_end __attribute__((tls_model("initial-exec")));
/* Monotonic time the current send hook's real call was entered (0 outside one): a SERVER span whose
 * response this call completes ends then (the client may see the response before the real call
 * returns to us, on a loaded machine by milliseconds), and a CLIENT span the injector begins for
 * this write starts then (set before the injector's planning). */
extern __thread uint64_t ldt__io_start __attribute__((tls_model("initial-exec")));

/* Wall-clock ns for a monotonic time: mono plus a (wall - mono) offset read once and refreshed at
 * most once a second (so one span costs no wall-clock read). Thread-safe, lock-free. */
uint64_t ldt__wall_of(uint64_t mono);

/* ------------------------------------------------------------------------------------------------
 * The fd table (fdtab.c): one small entry per fd, in mmapped chunks of LDT__FD_CHUNK entries.
 * ---------------------------------------------------------------------------------------------- */

#define LDT__FD_CHUNK_SHIFT 12
#define LDT__FD_CHUNK (1u << LDT__FD_CHUNK_SHIFT)
#define LDT__FD_MAX_CHUNKS 1024u                    /* fds up to 4M are tracked */

enum ldt__fd_kind {
    LDT__FD_UNKNOWN = 0,    /* never seen (or closed): probe on first use */
    LDT__FD_OTHER = 1,      /* not a traced socket: pass through, nothing else */
    LDT__FD_SOCK = 2,       /* a stream socket of AF_INET, AF_INET6 or AF_UNIX */
};

enum ldt__fd_cls {
    LDT__CLS_NONE = 0,      /* no byte seen yet */
    LDT__CLS_HTTP = 1,      /* conn attached, sniffed */
    LDT__CLS_PASS = 2,      /* anything else: byte counts only */
};

enum ldt__fd_origin {
    LDT__ORIG_PROBED = 0,
    LDT__ORIG_SOCKET,
    LDT__ORIG_CONNECTED,
    LDT__ORIG_ACCEPTED,
};

struct ldt__conn;

/* 32 bytes: everything an fd keeps while no HTTP message is in flight on it (an idle keep-alive
 * connection costs only this; see fdtab.c). Written by the thread doing I/O on the fd; kind is
 * read by every hook. The addresses label every span of the connection: fetched once, when it is
 * classified HTTP (or its connect completes); the local address and a unix socket path are
 * interned (ldt__name_*), being mostly the same few for every connection. ldt__skip reads kind
 * and cls together: keep them the first two bytes. */
struct ldt__fd {
    _Atomic uint8_t kind;   /* enum ldt__fd_kind */
    uint8_t cls;            /* enum ldt__fd_cls */
    uint8_t origin;         /* enum ldt__fd_origin */
    uint8_t tls;            /* OpenSSL runs over it: sniffed in the SSL_* hooks, never here */
    uint8_t role;           /* enum ldt__role, once cls is LDT__CLS_HTTP */
    uint8_t addrs;          /* LDT__ADDRS_* */
    uint8_t peer_family, local_family;
    uint16_t peer_port, local_port;
    uint16_t local_ref;     /* ldt__name_intern of the local address bytes, 0: none */
    uint16_t unix_ref;      /* ldt__name_intern of the unix socket path, 0: none */
    uint32_t calls;         /* intercepted calls on this socket (byte totals: in the spans) */
    uint8_t peer4[4];       /* an IPv4 peer address; an IPv6 one is at ldt__fd_peer6 */
    /* HTTP or pending-connect state while a message is in flight, from the conn pool; NULL when
     * idle. Change it only with ldt__conn_take/put (the protocol is at the top of fdtab.c). */
    struct ldt__conn *_Atomic conn;
};

#define LDT__ADDRS_FETCHED 1u   /* ldt__fd.addrs: the address fields are filled */
#define LDT__ADDRS_PEER6 2u     /* ... and the IPv6 peer address is at ldt__fd_peer6 */

_Static_assert(offsetof(struct ldt__fd, kind) == 0 && offsetof(struct ldt__fd, cls) == 1,
               "ldt__skip reads kind and cls as one word");
_Static_assert(sizeof(struct ldt__fd) <= 64, "issue #9: <= 64 bytes per tracked fd");

extern struct ldt__fd *_Atomic ldt__fd_chunks[LDT__FD_MAX_CHUNKS];

/* The entry of fd, probing an unknown fd once (fstat + SO_TYPE + SO_DOMAIN); NULL when fd is
 * negative or past the table. Lock-free; a chunk is mmapped on first use of its range. Preserves
 * errno. */
struct ldt__fd *ldt__fd_get(int fd);

/* The entry of fd without probing (close, dup2): NULL when its chunk was never mapped. */
struct ldt__fd *ldt__fd_peek(int fd);

/* Set fd's entry for a new socket of (domain, type) or one accepted from a traced listener.
 * Releases any state left from an earlier use of the number. */
void ldt__fd_set(int fd, enum ldt__fd_kind kind, enum ldt__fd_origin origin);

/* The 16 bytes kept for the IPv6 peer address of e, an entry of the table (not a copy): each chunk
 * of the table carries them after its entries, touched only by IPv6 sockets. */
uint8_t *ldt__fd_peer6(const struct ldt__fd *e);

/* Forget fd (close, dup2 target): ends its spans as a closed connection would, releases the conn,
 * and returns the entry to UNKNOWN. Preserves errno. */
void ldt__fd_reset(int fd);

/* fd (inherited, about to be classified on bytes that are no request) is a dup of an inherited fd
 * serving HTTP: 1 and e now shares that fd's conn, else 0. */
int ldt__fd_share_sibling(int fd, struct ldt__fd *e);

/* Probe fd with fstat/getsockopt: LDT__FD_SOCK or LDT__FD_OTHER. Preserves errno. */
enum ldt__fd_kind ldt__fd_probe(int fd);

/* Interned byte strings (a local address, a unix socket path): up to LDT_SPAN_HOST_MAX bytes, kept
 * for the life of the process in a fixed table. ldt__name_intern returns the reference (>= 1) of
 * b[n], adding it if new, or 0 when n is 0, too long, or the table is full. ldt__name_get gives the
 * bytes of a reference (NULL and *n 0 for 0), in a buffer of LDT_SPAN_HOST_MAX bytes that is zero
 * past *n. Thread-safe; lookups take no lock. */
uint16_t ldt__name_intern(const void *b, size_t n);
static inline const char *ldt__name_get(uint16_t ref, size_t *n);

/* The table behind them (fdtab.c): a slot's len is set last (release), once; its bytes never
 * change after. */
#define LDT__NAMES 1024u
struct ldt__name {
    _Atomic uint8_t len; /* 0: empty */
    char b[LDT_SPAN_HOST_MAX];
};
extern struct ldt__name ldt__names[LDT__NAMES];

static inline const char *ldt__name_get(uint16_t ref, size_t *n)
{
    if (ref == 0 || ref > LDT__NAMES) {
        *n = 0;
        return NULL;
    }
    *n = atomic_load_explicit(&ldt__names[ref - 1].len, memory_order_acquire);
    return ldt__names[ref - 1].b;
}

/* ------------------------------------------------------------------------------------------------
 * Connection state (fdtab.c pool; sniff.c, span.c, inject.c use it)
 * ---------------------------------------------------------------------------------------------- */

#define LDT__SRV_MAX 8          /* pipelined inbound requests waiting for their response */
#define LDT__CLI_MAX 4          /* outbound requests written and waiting for their response */
#define LDT__INJ_MAX 640        /* "traceparent: ...\r\n" + "tracestate: <512>\r\n" */

enum ldt__role { LDT__ROLE_NONE = 0, LDT__ROLE_SERVER, LDT__ROLE_CLIENT };

/* A span in progress: the record is filled as things become known and pushed when it ends. */
struct ldt__span {
    struct ldt_span_rec rec;
    uint64_t start_mono;
    uint64_t serial;        /* server spans: the serving-registry serial (0: not registered) */
    int16_t reg;            /* serving-registry slot, -1 none */
    uint8_t sampled;
    uint8_t started;        /* server: response bytes written; client: request bytes written */
    uint8_t done_req;       /* client: request fully written */
    uint8_t injected;       /* client: our lines are placed (or decided not to be) */
    uint8_t guess;          /* client: no parent was certain at begin; try the path at headers */
    uint8_t hdrs;           /* client: its request headers were taken (the planner and the
                             * out-parser both see them: the second look changes nothing) */
};

#define LDT__EDITS_MAX 8

/* One change to the app's byte stream: at app offset off, drop del app bytes and send ins[ins_len]
 * in their place (an insertion has del 0; a parent-id replacement has del == ins_len == 16). */
struct ldt__edit {
    size_t off;
    uint32_t del;
    uint32_t ins_len;
    const char *ins;
};

/* An app's SSL_write carrying our header lines, sent as pieces (app bytes, our lines, app bytes ..)
 * with one real SSL_write each; see hooks_ssl.c for why and how a failed piece is resumed. */
struct ldt__tls_piece {
    const char *ins;        /* our bytes, NULL: app bytes at off */
    size_t off, len;
};

struct ldt__tls_write {
    uint8_t active;         /* a piece failed (WANT_WRITE ...): the app must call again */
    uint8_t npieces, idx;   /* pieces, the one to write next */
    uint8_t ned;
    size_t done;            /* bytes of pieces[idx] already written (partial-write mode) */
    const void *buf;        /* the app call being served */
    size_t num;
    struct ldt__tls_piece pc[2 * LDT__EDITS_MAX + 1];
    struct ldt__span *sp[LDT__EDITS_MAX];
    uint32_t del[LDT__EDITS_MAX];   /* the edits' del, for the span flags */
    char rep[LDT__EDITS_MAX * 16];  /* replaced parent-ids (stable until written) */
};

struct ldt__conn {
    atomic_flag lock;
    uint8_t role;               /* enum ldt__role */
    uint8_t dead;               /* the sniffer gave up: pass-through from now on */
    uint8_t busy;               /* holders (ldt__conn_hold): an injected send in progress */
    uint8_t connecting;         /* a non-blocking connect span is open */
    uint8_t connect_pending;    /* conn_span ended well and waits for the first request (below) */
    uint32_t epoch;             /* ldt__fork_epoch at the last I/O seen on it in this process */
    int32_t err;                /* last failing call's errno */
    uint8_t shared;             /* more fds than one use it (dup'd socket): close ends it last */
    uint8_t bound;              /* bind_*: the request being served when this socket connected */
    int16_t bind_slot;
    uint64_t bind_serial;
    struct ldt_http_parser in;  /* bytes the app receives */
    struct ldt_http_parser out; /* bytes the app sends */
    uint64_t out_sent;          /* bytes of the current outbound message written so far */
    uint64_t in_hdr_bytes;      /* bytes of the current inbound message before its span exists */
    struct ldt__span *in_cur;   /* server role: the span of the request being read, NULL if none */
    /* server role: FIFO of inbound requests (head = oldest, waiting for its response) */
    uint8_t srv_head, srv_n;
    /* client role: FIFO of outbound requests; cli_out = index (from head) being written */
    uint8_t cli_head, cli_n, cli_out;
    uint16_t pend_off, pend_len;    /* injected bytes the kernel has not taken yet */
    struct ldt__span srv[LDT__SRV_MAX];
    struct ldt__span cli[LDT__CLI_MAX];
    struct ldt__span conn_span;     /* an open non-blocking CONNECT span */
    char pend[LDT__INJ_MAX];
    /* The header lines we add are made when a request's header block ends (inject.c), from its
     * span's ids and the tracestate of its parent: wts, kept for the one request being written
     * (the next cannot start before its header block ended). They go into blk, shared by the
     * requests of one planned write (several only when pipelined in one call), and stay there
     * until that write is sent (or, TLS, its pieces are). One blk per connection rather than one
     * per span: 12 x 640 bytes less per in-flight conn. */
    uint16_t wts_len, blk_used;
    char wts[LDT_TS_MAX];
    char blk[LDT__INJ_MAX];
    struct ldt__fd *owner;          /* the fd entry whose addresses label its spans, NULL: free */
    struct ldt__conn *next_free;
    struct ldt__tls_write tlsw;     /* an SSL_write with our lines in it (hooks_ssl.c) */
};

/* Take a zeroed conn from the pool (mmapped chunks, never unmapped, so a stale pointer stays
 * readable). NULL when mmap fails (counted as an untracked connection). Thread-safe. */
struct ldt__conn *ldt__conn_alloc(void);
void ldt__conn_free(struct ldt__conn *c);

/* The conn of fd entry e, locked and checked to still be e's (see the protocol at the top of
 * fdtab.c), or NULL when e has none (idle). Inline below: the first try; a lost race goes on in
 * ldt__conn_of_slow. */
static inline struct ldt__conn *ldt__conn_of(struct ldt__fd *e);
struct ldt__conn *ldt__conn_of_slow(struct ldt__fd *e);

/* The same, taking a conn from the pool for e (in e->role) when it has none: a message starts.
 * NULL only when the pool is exhausted. Inline below: a connection that has its conn (in flight
 * or warm) takes it in the caller; ldt__conn_take_slow does the rest. */
static inline struct ldt__conn *ldt__conn_take(struct ldt__fd *e);
struct ldt__conn *ldt__conn_take_slow(struct ldt__fd *e);

/* Done with c (locked, e's): unlock it, first giving it back to the pool when the connection is
 * idle again (ldt__conn_idle), or when it turned pass-through (e->cls becomes LDT__CLS_PASS). */
void ldt__conn_put(struct ldt__fd *e, struct ldt__conn *c);

/* 0: c holds state that must survive until the next event (a message in flight, owed bytes, an
 * open connect span, a holder ...); 1: nothing but what the fd entry keeps; 2: likewise, and the
 * connection has become pass-through (sniffer gave up, or a tunnel). Caller holds the lock. */
int ldt__conn_idle(const struct ldt__conn *c);

/* Pin e's conn (taking one if needed) across a real call made without its lock (an injected send):
 * it is not given back to the pool until ldt__conn_unhold. NULL when the pool is exhausted. */
struct ldt__conn *ldt__conn_hold(struct ldt__fd *e);
void ldt__conn_unhold(struct ldt__fd *e, struct ldt__conn *c);

/* Conns in use (taken from the pool and not given back): for tests and the scale bench. */
extern _Atomic uint64_t ldt__conn_in_use;

/* Warm conns: while no more than this many conns are in use, a connection going idle keeps its
 * conn for its next message instead of giving it back. Taking and giving back costs ~350
 * instructions a request (the parsers' set-up, the pool lock); a process with a few busy
 * keep-alive connections - the common case - then pays none of it, and memory stays bounded:
 * at most LDT__CONN_WARM idle conns (~8 KiB each) beyond those with a message in flight, however
 * many connections are open. Tests set ldt__conn_warm to 0 to see every give-back. */
#define LDT__CONN_WARM 16u
extern unsigned ldt__conn_warm;

/* Fork child: release every lock of the pool and its conns (their holders did not survive). */
void ldt__conn_atfork_child(void);

static inline void ldt__conn_lock(struct ldt__conn *c)
{
    while (atomic_flag_test_and_set_explicit(&c->lock, memory_order_acquire))
        __builtin_ia32_pause();
}

static inline void ldt__conn_unlock(struct ldt__conn *c)
{
    atomic_flag_clear_explicit(&c->lock, memory_order_release);
}

static inline struct ldt__conn *ldt__conn_of(struct ldt__fd *e)
{
    struct ldt__conn *c = atomic_load_explicit(&e->conn, memory_order_acquire);
    if (!c)
        return NULL;
    ldt__conn_lock(c);
    if (LDT_LIKELY(atomic_load_explicit(&e->conn, memory_order_relaxed) == c))
        return c;
    ldt__conn_unlock(c); /* given back (and maybe reused) since we read the pointer */
    return ldt__conn_of_slow(e);
}

static inline struct ldt__conn *ldt__conn_take(struct ldt__fd *e)
{
    struct ldt__conn *c = ldt__conn_of(e);
    return LDT_LIKELY(c != NULL) ? c : ldt__conn_take_slow(e);
}

/* ------------------------------------------------------------------------------------------------
 * Sniffing (sniff.c): the bytes the app moved on a traced socket, after the real call.
 * ---------------------------------------------------------------------------------------------- */

enum ldt__dir { LDT__IN = 0, LDT__OUT = 1 };

/* The app received (dir IN) or sent (dir OUT) on fd: n is the real result (bytes, 0 for EOF on IN,
 * -1 with err), iov the buffers holding the bytes, io_ns the time spent in the real call.
 * Classifies the socket on its first bytes, feeds the parsers, opens and ends spans. Preserves
 * errno. */
void ldt__sniff_io(int fd, struct ldt__fd *e, enum ldt__dir dir, const struct iovec *iov, int cnt,
                   ssize_t n, int err, uint64_t io_ns);
/* iov == NULL: the bytes were already fed (by the injector); count, account and check errors. */

/* ldt__sniff_io for the hooks of hooks_io.c, which keep errno themselves and have set ldt__io_end:
 * the same work without either. */
void ldt__sniff_call(int fd, struct ldt__fd *e, enum ldt__dir dir, const struct iovec *iov,
                     int cnt, ssize_t n, int err, uint64_t io_ns);

/* After an injected send on fd (through ldt__client_send, with c held by ldt__conn_hold):
 * ldt__sniff_call with iov NULL, then ldt__conn_unhold(e, c), under one lock when it can. Does not
 * preserve errno (the hooks restore it). */
void ldt__sniff_sent(int fd, struct ldt__fd *e, struct ldt__conn *c, ssize_t n, int err,
                     uint64_t io_ns);

/* Before a send on fd: classify on the bytes about to be sent if the socket has not been, and say
 * whether the send must go through the injector (a client-role HTTP connection). */
int ldt__sniff_wants_inject(int fd, struct ldt__fd *e, const struct iovec *iov, int cnt);

/* sendfile moved n body bytes out of fd without us seeing them. */
void ldt__sniff_sendfile(int fd, struct ldt__fd *e, ssize_t n, int err, uint64_t io_ns);

/* The connection's last fd is going away: end what is open (see the rules in sniff.c). */
void ldt__sniff_close(struct ldt__conn *c, struct ldt__fd *e);

/* Fill the peer address fields of r from a sockaddr (connect's argument). */
void ldt__span_peer(struct ldt_span_rec *r, const struct sockaddr *sa, socklen_t len);

/* The app read SO_ERROR (rc, value): that is how it learns a non-blocking connect's outcome, and
 * reading clears it, so the open CONNECT span ends here with that value. */
void ldt__sniff_so_error(int fd, struct ldt__fd *e, int value);

/* Before the fd goes away: end a non-blocking CONNECT span still open on it (needs the fd). */
void ldt__sniff_close_fd(int fd, struct ldt__fd *e);

/* Attach a conn to an fd in the given role, fetching addresses; NULL when the pool is empty. */
struct ldt__conn *ldt__sniff_attach(int fd, struct ldt__fd *e, enum ldt__role role);

/* Feed n bytes the app sent on a client-role conn (called by the injector after the real call, with
 * the app's own bytes only). Caller holds the conn lock. */
void ldt__sniff_feed_out(struct ldt__conn *c, const struct iovec *iov, int cnt, size_t n);

/* One ldt_http_feed call of a parse the injector's planner made: r bytes taken, event ev. */
struct ldt__feed_step {
    uint32_t r;
    uint8_t ev;
};

/* ldt__sniff_feed_out without parsing again: the planner parsed exactly these bytes (one buffer)
 * from the out-parser's state with a scratch copy that ended in *fin, taking the steps given.
 * Sets the out-parser to *fin and does what feeding would have done with each step. Caller holds
 * the conn lock. */
void ldt__sniff_replay_out(struct ldt__conn *c, const struct ldt_http_parser *fin,
                           const struct ldt__feed_step *st, int n);

/* ------------------------------------------------------------------------------------------------
 * Injection (inject.c)
 * ---------------------------------------------------------------------------------------------- */

/* The real vectored send: returns bytes taken or -1 with errno, like writev(2). */
typedef ssize_t (*ldt__sendv_fn)(void *ctx, const struct iovec *iov, int cnt);


#define LDT__IOV_MAX 1024

/* Send the app's bytes (iov, cnt) with the edits applied (sorted by off, within the app's bytes),
 * preceded by the injected bytes left over from an earlier partial send (pend[*pend_off ..
 * *pend_len]); make the real calls through fn(ctx). Returns how many of the APP's bytes went out
 * (a replaced range counts as the app's), or -1 with errno from the real call. Injected bytes the
 * kernel did not take are kept in pend to go before the app's next bytes; when a call took only
 * injected bytes it calls again, so the app never sees 0 for a non-zero write. *placed says how
 * many edits (a prefix of ed) are now on the wire or in pend, even when -1 is returned: those must
 * never be planned again. Pure apart from fn. */
ssize_t ldt__inject_sendv(char *pend, uint16_t *pend_off, uint16_t *pend_len,
                          const struct iovec *iov, int cnt, const struct ldt__edit *ed, int ned,
                          ldt__sendv_fn fn, void *ctx, int *placed);

/* A send on a client-role conn: plan where our header lines go in these bytes, send through fn
 * with ldt__inject_sendv, then feed what went out to the out-parser. Same returns as
 * ldt__inject_sendv. Takes the conn lock around planning and the accounting, never around fn. */
ssize_t ldt__client_send(struct ldt__conn *c, const struct iovec *iov, int cnt,
                         ldt__sendv_fn fn, void *ctx);

/* The planning half of ldt__client_send, for writers that cannot take a vectored call (SSL_write):
 * where our lines go in these app bytes. Fills ed[LDT__EDITS_MAX] and sp[LDT__EDITS_MAX] (the span
 * of each edit); a replacement's 16 bytes are copied to rep (LDT__EDITS_MAX * 16 bytes, which the
 * caller keeps until the bytes are sent). Returns the number of edits. Takes the conn lock. */
int ldt__client_plan(struct ldt__conn *c, const struct iovec *iov, int cnt, struct ldt__edit *ed,
                     struct ldt__span **sp, char *rep);

/* The accounting half: the first `placed` edits are on the wire; n app bytes went out. */
void ldt__client_sent(struct ldt__conn *c, const struct ldt__edit *ed, struct ldt__span **sp,
                      int placed, const struct iovec *iov, int cnt, ssize_t n);

/* Requests whose traceparent could not be placed or replaced because the spot was already sent. */
extern _Atomic uint64_t ldt__inject_missed;

/* ------------------------------------------------------------------------------------------------
 * Spans (span.c)
 * ---------------------------------------------------------------------------------------------- */

/* What a child span needs from its parent. */
struct ldt__ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;          /* W3C flags to propagate */
    uint8_t sampled;
    uint8_t valid;
    uint8_t remote;
    uint16_t ts_len;
    char ts[LDT_TS_MAX + 1];
};

/* When set (tests), finished records go to this function instead of the ring. */
extern void (*ldt__span_sink)(const void *rec, size_t len);

/* Sampling decision for a span with this parent (NULL or !valid: a root with this trace id). */
int ldt__sample(const struct ldt__ctx *parent, const uint8_t trace_id[16]);

/* Fill s as a new span of kind under parent (NULL: root): ids, flags, sampling, start clocks. */
void ldt__span_begin(struct ldt__span *s, enum ldt_span_kind kind, const struct ldt__ctx *parent);

/* Server span for an inbound request whose headers are complete (m): parent from its traceparent,
 * method/path rules, registry entry and thread stack push. */
void ldt__span_server_begin(struct ldt__span *s, struct ldt__conn *c, const struct ldt_http_msg *m);

/* Client span for a request about to be written on c: parent = this thread's innermost open server
 * span (or *fwd when the app forwards a served traceparent); keeps the parent's tracestate in
 * c->wts (c may be NULL: none kept). */
void ldt__span_client_begin(struct ldt__span *s, struct ldt__conn *c);

/* The request headers of a client span on c are known: method, path, host; adopt the app's own
 * traceparent (F_APP_TP) or the forwarded one (F_REPLACED, parent = that served request). Only the
 * first call for a span does anything (the same request's headers, seen again). */
void ldt__span_client_headers(struct ldt__span *s, struct ldt__conn *c,
                              const struct ldt_http_msg *m);

/* The header lines to inject for s into out (LDT__INJ_MAX bytes): "traceparent: ...\r\n", and
 * "tracestate: <ts>\r\n" when ts_len (<= LDT_TS_MAX). Returns the length. */
size_t ldt__span_block(const struct ldt__span *s, const char *ts, size_t ts_len, char *out);

/* End s now: duration, status rules for its kind, push if sampled, registry release. */
void ldt__span_end(struct ldt__span *s, struct ldt__conn *c);

/* ldt__span_end in two steps: finish (duration, status, registry release) now, and push later
 * (ldt__span_emit, which pushes nothing once the app has shown it traces itself). */
void ldt__span_finish(struct ldt__span *s, struct ldt__conn *c);
void ldt__span_emit(struct ldt__span *s);

/* A connect that succeeded keeps its span until the first request on the socket shows whose
 * request it is: if the app traces itself (an SDK), the connect span goes with the other spans of
 * that request. Emitted at the first request's headers, or when the connection is let go. */
void ldt__conn_connect_done(struct ldt__conn *c, struct ldt__conn *addrs);
void ldt__conn_flush_connect(struct ldt__conn *c);

/* Innermost open server span of this thread (or most recent inbound request read on it): 1 and *out
 * filled, or 0. */
int ldt__ctx_current(struct ldt__ctx *out);

/* Remember on c (a socket being connected) the request this thread is serving now, if certain:
 * the first request written on c is that request's call (see the rule at the top of span.c). */
void ldt__ctx_bind(struct ldt__conn *c);

/* This thread read bytes of an HTTP message on c (evidence for the event-loop rule). */
void ldt__ctx_note_read(const struct ldt__conn *c);

/* The open server span whose inbound traceparent is exactly tp[len]: 1 and *out, or 0. */
int ldt__ctx_served(const char *tp, size_t len, struct ldt__ctx *out);

/* Push a finished record (span or stack) to this thread's ring (the segment is made lazily). */
void ldt__emit(const void *rec, size_t len);

/* A one-shot INTERNAL span (connect, DNS, one syscall) under parent, already ended. */
void ldt__span_internal(const struct ldt__ctx *parent, enum ldt_span_op op, uint64_t start_wall,
                        uint64_t dur, int err, const char *host, size_t host_len);

/* Errors that deserve the app's stack on an INTERNAL connect span. */
static inline int ldt__stack_worthy(int err)
{
    return err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH;
}

/* Error stacks (stack.c). Capture the calling thread's stack (the app's frames only, <= 32) for
 * span span_id into a per-thread buffer; ldt__stack_ready says whether this thread holds it; emit
 * pushes it as LDT_REC_STACK parts (call right before pushing the span). Error paths only. */
void ldt__stack_capture(const uint8_t span_id[8]);
int ldt__stack_ready(const uint8_t span_id[8]);
void ldt__stack_emit(const uint8_t trace_id[16], const uint8_t span_id[8]);
size_t ldt__stack_text(char *out, size_t cap);

/* Counters in the segment header (no-ops before the segment exists). */
void ldt__count_reject(void);
void ldt__count_untracked(void);

/* Fork: child side (new segment lazily, ids reseeded, thread rings forgotten). */
void ldt__span_atfork_child(void);
/* Create this process's segment now if it does not exist yet (before a privilege drop, while the
 * segment directory is still writable: the mapping stays writable afterwards). Preserves errno. */
void ldt__seg_prepare(void);
/* exec: mark the segment exited right before the real exec (on 1), clear the mark again when the
 * exec failed (on 0). Does nothing in a vfork child (the segment is its parent's). Signal-safe. */
void ldt__seg_exec_mark(int on);
/* Exit: mark the segment exited. */
void ldt__span_atexit(void);
/* Thread-exit ring release key (created by the constructor). */
void ldt__span_init(void);

/* ------------------------------------------------------------------------------------------------
 * The guard
 * ---------------------------------------------------------------------------------------------- */

/* Enter the shim for an fd hook: the entry of a traced socket (depth taken), or NULL to pass
 * through (nested, not initialised, disabled, not a traced socket). */
static inline struct ldt__fd *ldt__enter(int fd)
{
    if (LDT_UNLIKELY(ldt__mode != LDT__MODE_ON) || ldt__depth)
        return NULL;
    /* The hot path, inline: two loads for a known fd; unknown ones go to ldt__fd_get to be probed.
     * Acquire pairs with the release that published the chunk (free on x86). */
    unsigned u = (unsigned)fd;
    struct ldt__fd *e = NULL;
    if (LDT_LIKELY(u < LDT__FD_CHUNK * LDT__FD_MAX_CHUNKS)) {
        struct ldt__fd *c = atomic_load_explicit(&ldt__fd_chunks[u >> LDT__FD_CHUNK_SHIFT],
                                                 memory_order_acquire);
        e = c ? &c[u & (LDT__FD_CHUNK - 1)] : NULL;
    }
    uint8_t k = e ? atomic_load_explicit(&e->kind, memory_order_relaxed) : LDT__FD_UNKNOWN;
    if (LDT_UNLIKELY(k == LDT__FD_UNKNOWN)) {
        e = ldt__fd_get(fd);
        k = e ? atomic_load_explicit(&e->kind, memory_order_relaxed) : LDT__FD_OTHER;
    }
    if (k != LDT__FD_SOCK)
        return NULL;
    ldt__depth++;
    return e;
}

/* ldt__skip (below) that also hands over what it found: when it returns 0, *ep is fd's entry if its
 * chunk is mapped (any kind), else NULL. The hook's traced part enters with ldt__enter_at. */
static inline int ldt__skip_at(int fd, struct ldt__fd **ep)
{
    *ep = NULL;
    if (LDT_UNLIKELY(ldt__mode != LDT__MODE_ON))
        return 1;
    if (ldt__depth) {
        ldt__nested_fd = fd;
        return 1;
    }
    unsigned u = (unsigned)fd;
    if (LDT_UNLIKELY(u >= LDT__FD_CHUNK * LDT__FD_MAX_CHUNKS))
        return 1;
    struct ldt__fd *c = atomic_load_explicit(&ldt__fd_chunks[u >> LDT__FD_CHUNK_SHIFT],
                                             memory_order_acquire);
    if (LDT_UNLIKELY(c == NULL))
        return 0;
    struct ldt__fd *e = &c[u & (LDT__FD_CHUNK - 1)];
    /* kind and cls side by side, read as one 16-bit word (x86 is little-endian). A TLS socket
     * classified PASS is pass-only too (its plaintext is sniffed in the SSL hooks). */
    uint16_t kc;
    __builtin_memcpy(&kc, (const void *)e, sizeof kc);
    if ((uint8_t)kc == LDT__FD_OTHER)
        return 1;
    *ep = e;
    return kc == (LDT__FD_SOCK | LDT__CLS_PASS << 8) && e->conn == NULL;
}

/* 1 when fd certainly needs nothing from us right now (nested, not initialised, disabled, a known
 * fd that is not a traced socket, or a socket already classified as not HTTP with nothing of ours
 * on it): the hook then tail-calls libc with no frame of its own. Such a PASS socket costs what a
 * file costs; its bytes are not counted (the counters were never exported). 0 means "maybe": the
 * hook's out-of-line part calls ldt__enter (which probes unknown fds). */
static inline int ldt__skip(int fd)
{
    struct ldt__fd *e;
    return ldt__skip_at(fd, &e);
}

/* ldt__enter for the traced part of a hook, given the entry ldt__skip_at found: a known traced
 * socket enters without a second lookup; anything else goes through ldt__enter (probing). */
static inline struct ldt__fd *ldt__enter_at(int fd, struct ldt__fd *e)
{
    if (LDT_LIKELY(e != NULL) &&
        atomic_load_explicit(&e->kind, memory_order_relaxed) == LDT__FD_SOCK) {
        ldt__depth++;
        return e;
    }
    return ldt__enter(fd);
}

/* Enter for a hook that is not about one fd (getaddrinfo): 1 when recording is allowed. */
static inline int ldt__enter_any(void)
{
    if (LDT_UNLIKELY(ldt__mode != LDT__MODE_ON) || ldt__depth)
        return 0;
    ldt__depth++;
    return 1;
}

static inline void ldt__leave(void)
{
    ldt__depth--;
}

#endif
