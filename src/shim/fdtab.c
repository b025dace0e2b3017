/* fdtab.c - the per-fd table (dense, mmapped chunks), the pool of HTTP connection states, and the
 * interned names (local addresses, unix socket paths) the fd entries refer to.
 *
 * Every hook starts here: fd -> 32-byte entry in two loads, no lock. An fd we never saw (inherited
 * across exec, from dup(), opened by a call we do not hook) is probed once with fstat/getsockopt
 * and the answer cached until close.
 *
 * Memory per connection (issue #9: <= 64 bytes per tracked fd, flat over time; the entry is 32).
 * A connection state (struct ldt__conn: two parsers, the span FIFOs, owed injected bytes ...) is
 * ~8 KiB, so it only exists while a message is in flight: it is taken from the pool when a message
 * starts on an idle connection (ldt__conn_take) and given back as soon as the connection is idle
 * again (ldt__conn_put: both parsers at a message boundary, FIFOs empty, no owed bytes, no open or
 * pending connect span, no holder, no TLS write pending, not shared by a dup) - unless fewer than
 * ldt__conn_warm conns are in use: then the connection keeps it warm for its next message, which
 * saves the set-up on every request of the few busy keep-alive connections most processes have,
 * at a bounded cost (shim.h, LDT__CONN_WARM). What must survive
 * idleness lives in the fd entry: class, role, origin, tls, and the addresses that label the next
 * request (an IPv4 peer inline, an IPv6 one in 16 bytes beside the chunk's entries, touched only
 * by IPv6 sockets; the local address and a unix path interned, as they are mostly the same few).
 * A connection that turns pass-through (the sniffer gave up, a tunnel) gives its conn back too and
 * is marked LDT__CLS_PASS: from then on its hooks skip it like a file. Conns come from
 * mmapped chunks that are never unmapped, so a stale pointer always stays readable. The fork
 * epoch, the last errno and a connect's binding to the request being served stay in the conn:
 * they only matter while something is in flight (a failed connect keeps no conn at all).
 *
 * Concurrency protocol. Two threads may do I/O on one fd (a reader and a writer). e->conn changes
 * only while the conn's lock is held: installed by a compare-and-swap from NULL (ldt__conn_take,
 * the new conn already locked), cleared by ldt__conn_put (lock held) or by close. A thread that
 * read e->conn locks that conn and then checks that e->conn still points to it; if not (it was
 * given back, maybe reused for another fd meanwhile), it unlocks and starts again from e->conn.
 * A conn reused for the same fd passes the check, and rightly: it is that fd's state now. Work
 * that makes a real call without the lock (an injected send, plain or TLS) holds the conn
 * (ldt__conn_hold: a count in the conn, part of "not idle") so it cannot be given back under it.
 * A fresh conn is initialised only after its lock was taken, never by clearing the lock, so a
 * stale holder still checking it keeps its mutual exclusion. dup sharing (ldt__fd_share_sibling)
 * pins the conn (shared > 0 is not idle) while more than one entry points to it.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "shim/shim.h"

int ldt__mode;
struct ldt_config ldt__cfg;
_Atomic uint32_t ldt__fork_epoch;
__thread int ldt__depth __attribute__((tls_model("initial-exec")));
__thread int ldt__nested_fd __attribute__((tls_model("initial-exec")));
__thread uint64_t ldt__io_end __attribute__((tls_model("initial-exec")));
__thread uint64_t ldt__io_start __attribute__((tls_model("initial-exec")));

struct ldt__fd *_Atomic ldt__fd_chunks[LDT__FD_MAX_CHUNKS];
#define chunks ldt__fd_chunks

/* A chunk: its entries, then the IPv6 peer addresses of the same fds; mapped at a multiple of
 * CHUNK_ALIGN, so an entry finds its chunk (and its IPv6 peer) from its own address. */
#define CHUNK_ENTRIES (LDT__FD_CHUNK * sizeof(struct ldt__fd))
#define CHUNK_BYTES (CHUNK_ENTRIES + LDT__FD_CHUNK * 16u)
#define CHUNK_ALIGN (256u * 1024u)
_Static_assert(CHUNK_BYTES <= CHUNK_ALIGN && (CHUNK_ALIGN & (CHUNK_ALIGN - 1)) == 0, "chunk align");

static void *chunk_map(void)
{
    size_t want = 2 * (size_t)CHUNK_ALIGN;
    char *m = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return MAP_FAILED;
    char *a = (char *)(((uintptr_t)m + CHUNK_ALIGN - 1) & ~(uintptr_t)(CHUNK_ALIGN - 1));
    if (a > m)
        munmap(m, (size_t)(a - m));
    munmap(a + CHUNK_BYTES, (size_t)(m + want - (a + CHUNK_BYTES)));
    return a;
}

uint8_t *ldt__fd_peer6(const struct ldt__fd *e)
{
    uintptr_t base = (uintptr_t)e & ~(uintptr_t)(CHUNK_ALIGN - 1);
    size_t i = ((uintptr_t)e - base) / sizeof *e;
    return (uint8_t *)base + CHUNK_ENTRIES + 16 * i;
}

/* Map one chunk of the table; another thread may race us to it: the loser unmaps its copy. */
static struct ldt__fd *chunk_get(unsigned i)
{
    struct ldt__fd *c = atomic_load_explicit(&chunks[i], memory_order_acquire);
    if (LDT_LIKELY(c != NULL))
        return c;
    size_t sz = CHUNK_BYTES;
    void *m = chunk_map();
    if (m == MAP_FAILED)
        return NULL;
    struct ldt__fd *expect = NULL;
    /* Release pairs with the acquire load above: zeroed pages are visible before the pointer. */
    if (!atomic_compare_exchange_strong_explicit(&chunks[i], &expect, (struct ldt__fd *)m,
                                                 memory_order_acq_rel, memory_order_acquire)) {
        munmap(m, sz);
        return expect;
    }
    return (struct ldt__fd *)m;
}

static struct ldt__fd *slot(int fd)
{
    if (fd < 0 || (unsigned)fd >= LDT__FD_CHUNK * LDT__FD_MAX_CHUNKS)
        return NULL;
    struct ldt__fd *c = chunk_get((unsigned)fd >> LDT__FD_CHUNK_SHIFT);
    return c ? &c[(unsigned)fd & (LDT__FD_CHUNK - 1)] : NULL;
}

struct ldt__fd *ldt__fd_peek(int fd)
{
    if (fd < 0 || (unsigned)fd >= LDT__FD_CHUNK * LDT__FD_MAX_CHUNKS)
        return NULL;
    struct ldt__fd *c =
        atomic_load_explicit(&chunks[(unsigned)fd >> LDT__FD_CHUNK_SHIFT], memory_order_acquire);
    return c ? &c[(unsigned)fd & (LDT__FD_CHUNK - 1)] : NULL;
}

enum ldt__fd_kind ldt__fd_probe(int fd)
{
    int saved = errno;
    struct stat st;
    int type = 0, dom = 0;
    socklen_t l1 = sizeof type, l2 = sizeof dom;
    enum ldt__fd_kind k = LDT__FD_OTHER;
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) == 0 && type == SOCK_STREAM &&
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l2) == 0 &&
        (dom == AF_INET || dom == AF_INET6 || dom == AF_UNIX))
        k = LDT__FD_SOCK;
    errno = saved;
    return k;
}

struct ldt__fd *ldt__fd_get(int fd)
{
    struct ldt__fd *e = slot(fd);
    if (LDT_UNLIKELY(e == NULL))
        return NULL;
    if (LDT_UNLIKELY(atomic_load_explicit(&e->kind, memory_order_relaxed) == LDT__FD_UNKNOWN)) {
        enum ldt__fd_kind k = ldt__fd_probe(fd);
        e->origin = LDT__ORIG_PROBED;
        atomic_store_explicit(&e->kind, k, memory_order_relaxed);
    }
    return e;
}

/* The shared conn c loses entry e: if e labelled its spans, another entry using it does now. */
static void share_drop(struct ldt__conn *c, struct ldt__fd *e)
{
    c->shared--;
    if (c->owner != e)
        return;
    for (unsigned k = 0; k < LDT__FD_MAX_CHUNKS; k++) {
        struct ldt__fd *ch = atomic_load_explicit(&chunks[k], memory_order_acquire);
        for (unsigned j = 0; ch && j < LDT__FD_CHUNK; j++)
            if (&ch[j] != e && atomic_load_explicit(&ch[j].conn, memory_order_relaxed) == c) {
                c->owner = &ch[j];
                return;
            }
    }
}

/* Drop whatever an earlier use of this number left behind. */
static void entry_clear(struct ldt__fd *e)
{
    struct ldt__conn *c = ldt__conn_of(e);
    if (c) {
        atomic_store_explicit(&e->conn, NULL, memory_order_release);
        if (c->shared) {
            share_drop(c, e); /* another fd of the same socket carries on with it */
            ldt__conn_unlock(c);
        } else {
            ldt__conn_unlock(c);
            ldt__sniff_close(c, e); /* its spans take their addresses from e: clear e after */
            ldt__conn_free(c);
        }
    }
    /* Everything but kind (the caller stores it) and conn (NULL now). */
    memset(&e->cls, 0, offsetof(struct ldt__fd, conn) - offsetof(struct ldt__fd, cls));
}

void ldt__fd_set(int fd, enum ldt__fd_kind kind, enum ldt__fd_origin origin)
{
    int saved = errno;
    struct ldt__fd *e = slot(fd);
    if (e) {
        entry_clear(e);
        e->origin = (uint8_t)origin;
        atomic_store_explicit(&e->kind, kind, memory_order_relaxed);
    }
    errno = saved;
}

void ldt__fd_reset(int fd)
{
    int saved = errno;
    struct ldt__fd *e = slot(fd);
    if (e && atomic_load_explicit(&e->kind, memory_order_relaxed) != LDT__FD_UNKNOWN) {
        entry_clear(e);
        atomic_store_explicit(&e->kind, LDT__FD_UNKNOWN, memory_order_relaxed);
    }
    errno = saved;
}

/* ---- connection pool ---- */

#define POOL_CHUNK 32

#define POOL_MAX_CHUNKS 4096

static atomic_flag pool_lock = ATOMIC_FLAG_INIT;
static struct ldt__conn *pool_free;
static struct ldt__conn *pool_chunks[POOL_MAX_CHUNKS]; /* for the fork child's lock reset */
static unsigned pool_nchunks;
static atomic_flag names_lock; /* below, with the names */
_Atomic uint64_t ldt__conn_in_use;

static void pool_refill(void)
{
    size_t sz = POOL_CHUNK * sizeof(struct ldt__conn);
    if (pool_nchunks == POOL_MAX_CHUNKS)
        return;
    struct ldt__conn *m =
        mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return;
    pool_chunks[pool_nchunks++] = m;
    for (int i = 0; i < POOL_CHUNK; i++) {
        m[i].next_free = pool_free;
        pool_free = &m[i];
    }
}

/* A conn from the pool for a connection in role, locked, its fixed part zeroed. The lock is taken,
 * not cleared: a thread still holding a stale pointer may be inside it for its ownership check
 * (top of this file). */
static struct ldt__conn *conn_new_locked(enum ldt__role role)
{
    int saved = errno;
    while (atomic_flag_test_and_set_explicit(&pool_lock, memory_order_acquire))
        __builtin_ia32_pause();
    if (!pool_free)
        pool_refill();
    struct ldt__conn *c = pool_free;
    if (c)
        pool_free = c->next_free;
    atomic_flag_clear_explicit(&pool_lock, memory_order_release);
    errno = saved;
    if (!c)
        return NULL;
    ldt__conn_lock(c);
    atomic_fetch_add_explicit(&ldt__conn_in_use, 1, memory_order_relaxed);
    /* Only the scalars (one per message on a keep-alive connection, so kept short): the parsers
     * are initialised for the role (ldt_http_init clears no kept string), the span slots are
     * filled whole when a span begins, the TLS write state when one is planned. */
    size_t from = offsetof(struct ldt__conn, role);
    memset((char *)c + from, 0, offsetof(struct ldt__conn, in) - from);
    from = offsetof(struct ldt__conn, out_sent);
    memset((char *)c + from, 0, offsetof(struct ldt__conn, srv) - from);
    int srv = role == LDT__ROLE_SERVER;
    ldt_http_init(&c->in, srv ? LDT_HTTP_REQUEST : LDT_HTTP_RESPONSE);
    ldt_http_init(&c->out, srv ? LDT_HTTP_RESPONSE : LDT_HTTP_REQUEST);
    c->role = (uint8_t)role;
    c->wts_len = c->blk_used = 0;
    c->owner = NULL;
    c->tlsw.active = 0;
    c->epoch = atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed);
    return c;
}

struct ldt__conn *ldt__conn_alloc(void)
{
    struct ldt__conn *c = conn_new_locked(LDT__ROLE_NONE);
    if (c)
        ldt__conn_unlock(c);
    return c;
}

void ldt__conn_free(struct ldt__conn *c)
{
    ldt__conn_flush_connect(c);
    /* A stale reader (another thread's parent lookup) may still look at it: keep it mapped. */
    c->role = LDT__ROLE_NONE;
    c->owner = NULL;
    atomic_fetch_sub_explicit(&ldt__conn_in_use, 1, memory_order_relaxed);
    while (atomic_flag_test_and_set_explicit(&pool_lock, memory_order_acquire))
        __builtin_ia32_pause();
    c->next_free = pool_free;
    pool_free = c;
    atomic_flag_clear_explicit(&pool_lock, memory_order_release);
}

struct ldt__conn *ldt__conn_of_slow(struct ldt__fd *e)
{
    for (;;) {
        struct ldt__conn *c = atomic_load_explicit(&e->conn, memory_order_acquire);
        if (!c)
            return NULL;
        ldt__conn_lock(c);
        if (atomic_load_explicit(&e->conn, memory_order_relaxed) == c)
            return c;
        ldt__conn_unlock(c); /* given back (and maybe reused) since we read the pointer */
    }
}

struct ldt__conn *ldt__conn_take_slow(struct ldt__fd *e)
{
    struct ldt__conn *c;
    while ((c = ldt__conn_of(e)) == NULL) {
        /* A new message on e: the conn starts as the idle connection's next message would (the
         * parsers keep nothing across a message boundary that matters once it is idle). */
        struct ldt__conn *n = conn_new_locked((enum ldt__role)e->role), *expect = NULL;
        if (!n)
            return NULL;
        n->owner = e;
        if (atomic_compare_exchange_strong_explicit(&e->conn, &expect, n, memory_order_acq_rel,
                                                    memory_order_acquire))
            return n;
        ldt__conn_unlock(n); /* another thread installed one first: use that */
        ldt__conn_free(n);
    }
    return c;
}

/* At a message boundary with nothing to remember (a request stream remembers a tunnel request,
 * CONNECT or Upgrade, past its end). */
static int parser_rest(const struct ldt_http_parser *p)
{
    return p->state == LDT_HTTP_S_START && !(p->dir == LDT_HTTP_REQUEST && p->connect);
}

/* Pass-through from here on, or between messages. */
static int parser_quiet(const struct ldt_http_parser *p)
{
    return p->state == LDT_HTTP_S_PASS || p->state == LDT_HTTP_S_START;
}

int ldt__conn_idle(const struct ldt__conn *c)
{
    if (c->busy || c->srv_n || c->cli_n || c->in_cur || c->connecting || c->connect_pending ||
        c->pend_len || c->tlsw.active || c->shared)
        return 0;
    if (c->dead)
        return 2;
    if (c->in.state == LDT_HTTP_S_PASS || c->out.state == LDT_HTTP_S_PASS)
        return parser_quiet(&c->in) && parser_quiet(&c->out) ? 2 : 0;
    return parser_rest(&c->in) && parser_rest(&c->out);
}

unsigned ldt__conn_warm = LDT__CONN_WARM;

void ldt__conn_put(struct ldt__fd *e, struct ldt__conn *c)
{
    /* The usual case on a process with few conns in use: the conn stays with its connection
     * whether idle (warm) or not, unless the connection turned pass-through (idle 2: dead, or a
     * parser passing bytes through), so only those two need a look, not the ten of idleness.
     * in_use counts this conn, so at most ldt__conn_warm idle connections hold one at any time. */
    if (LDT_LIKELY(atomic_load_explicit(&ldt__conn_in_use, memory_order_relaxed) <=
                   ldt__conn_warm) &&
        !c->dead && c->in.state != LDT_HTTP_S_PASS && c->out.state != LDT_HTTP_S_PASS) {
        ldt__conn_unlock(c);
        return;
    }
    int idle = ldt__conn_idle(c);
    if (!idle || atomic_load_explicit(&e->conn, memory_order_relaxed) != c) {
        ldt__conn_unlock(c);
        return;
    }
    if (idle == 2)
        e->cls = LDT__CLS_PASS;
    atomic_store_explicit(&e->conn, NULL, memory_order_release);
    c->owner = NULL;
    ldt__conn_unlock(c);
    ldt__conn_free(c);
}

struct ldt__conn *ldt__conn_hold(struct ldt__fd *e)
{
    struct ldt__conn *c = ldt__conn_take(e);
    if (!c)
        return NULL;
    c->busy++;
    ldt__conn_unlock(c);
    return c;
}

void ldt__conn_unhold(struct ldt__fd *e, struct ldt__conn *c)
{
    ldt__conn_lock(c);
    c->busy--;
    ldt__conn_put(e, c);
}

void ldt__conn_atfork_child(void)
{
    /* Only the forking thread lives on: a lock another thread held at fork() would never be
     * released, and the child's first close() of that socket would spin forever; their holds
     * are gone with them too. */
    atomic_flag_clear(&pool_lock);
    atomic_flag_clear(&names_lock);
    for (unsigned i = 0; i < pool_nchunks; i++)
        for (int j = 0; j < POOL_CHUNK; j++) {
            atomic_flag_clear(&pool_chunks[i][j].lock);
            pool_chunks[i][j].busy = 0;
        }
}

/* The socket of fd is also an inherited fd of ours that serves HTTP (a worker exec'd with the
 * connection as fd 0 and 1 reads the request on one and answers on the other): share its conn
 * (taking one for it if it is idle). Only inherited (probed) fds are compared, one fstat each; rare
 * path. */
int ldt__fd_share_sibling(int fd, struct ldt__fd *e)
{
    struct stat me, other;
    if (fstat(fd, &me) != 0)
        return 0;
    for (unsigned k = 0; k < LDT__FD_MAX_CHUNKS; k++) {
        struct ldt__fd *ch = atomic_load_explicit(&chunks[k], memory_order_acquire);
        for (unsigned j = 0; ch && j < LDT__FD_CHUNK; j++) {
            struct ldt__fd *o = &ch[j];
            if (o == e || o->origin != LDT__ORIG_PROBED || o->cls != LDT__CLS_HTTP ||
                o->role != LDT__ROLE_SERVER)
                continue;
            if (fstat((int)(k * LDT__FD_CHUNK + j), &other) != 0 || other.st_ino != me.st_ino ||
                other.st_dev != me.st_dev)
                continue;
            struct ldt__conn *c = ldt__conn_take(o);
            if (!c || c->shared == UINT8_MAX) {
                if (c)
                    ldt__conn_put(o, c);
                return 0;
            }
            c->shared++;
            memcpy(&e->role, &o->role, offsetof(struct ldt__fd, conn) -
                                           offsetof(struct ldt__fd, role));
            if (o->addrs & LDT__ADDRS_PEER6)
                memcpy(ldt__fd_peer6(e), ldt__fd_peer6(o), 16);
            e->calls = 0;
            atomic_store_explicit(&e->conn, c, memory_order_release);
            e->cls = LDT__CLS_HTTP;
            ldt__conn_unlock(c);
            return 1;
        }
    }
    return 0;
}

/* ---- interned names -------------------------------------------------------------------------- */

#define NAMES LDT__NAMES /* a power of two; open addressing */

struct ldt__name ldt__names[LDT__NAMES];
static atomic_flag names_lock = ATOMIC_FLAG_INIT;

static uint32_t name_hash(const unsigned char *b, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

/* Slot of b[n] probing from its hash: found (1), or the first empty one (0), or none (-1). */
static int name_find(const void *b, size_t n, uint32_t *at)
{
    uint32_t h = name_hash(b, n);
    for (uint32_t i = 0; i < NAMES; i++) {
        struct ldt__name *s = &ldt__names[(h + i) & (NAMES - 1)];
        size_t l = atomic_load_explicit(&s->len, memory_order_acquire);
        *at = (h + i) & (NAMES - 1);
        if (l == 0)
            return 0;
        if (l == n && memcmp(s->b, b, n) == 0)
            return 1;
    }
    return -1;
}

uint16_t ldt__name_intern(const void *b, size_t n)
{
    uint32_t at;
    if (n == 0 || n > LDT_SPAN_HOST_MAX)
        return 0;
    int r = name_find(b, n, &at);
    if (r == 1)
        return (uint16_t)(at + 1);
    if (r < 0)
        return 0;
    while (atomic_flag_test_and_set_explicit(&names_lock, memory_order_acquire))
        __builtin_ia32_pause();
    r = name_find(b, n, &at); /* again: another thread may have added it (or taken the slot) */
    if (r == 0) {
        memcpy(ldt__names[at].b, b, n);
        atomic_store_explicit(&ldt__names[at].len, (uint8_t)n, memory_order_release);
    }
    atomic_flag_clear_explicit(&names_lock, memory_order_release);
    return r < 0 ? 0 : (uint16_t)(at + 1);
}

