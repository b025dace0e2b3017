/* fdtab.c - the per-fd table (dense, mmapped chunks) and the pool of HTTP connection states.
 *
 * Every hook starts here: fd -> 32-byte entry in two loads, no lock. An fd we never saw (inherited
 * across exec, from dup(), opened by a call we do not hook) is probed once with fstat/getsockopt
 * and the answer cached until close. Connection states (two parsers, the span FIFOs) are much
 * larger and only exist for sockets classified as HTTP; they come from mmapped chunks that are
 * never unmapped.
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

/* Map one chunk of the table; another thread may race us to it: the loser unmaps its copy. */
static struct ldt__fd *chunk_get(unsigned i)
{
    struct ldt__fd *c = atomic_load_explicit(&chunks[i], memory_order_acquire);
    if (LDT_LIKELY(c != NULL))
        return c;
    size_t sz = LDT__FD_CHUNK * sizeof(struct ldt__fd);
    void *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
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

/* Drop whatever an earlier use of this number left behind. */
static void entry_clear(struct ldt__fd *e)
{
    struct ldt__conn *c = e->conn;
    e->conn = NULL;
    if (c && c->shared) {
        c->shared--; /* another fd of the same socket carries on with it */
    } else if (c) {
        ldt__sniff_close(c, e);
        ldt__conn_free(c);
    }
    e->cls = LDT__CLS_NONE;
    e->tls = 0;
    e->calls = 0;
    e->bytes_in = e->bytes_out = 0;
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

struct ldt__conn *ldt__conn_alloc(void)
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
    /* Only the fixed part: the span slots are filled whole when a span begins (14 KiB less to
     * clear per connection). */
    memset(c, 0, offsetof(struct ldt__conn, srv));
    memset(&c->peer_family, 0, sizeof *c - offsetof(struct ldt__conn, peer_family));
    atomic_flag_clear(&c->lock);
    c->epoch = atomic_load_explicit(&ldt__fork_epoch, memory_order_relaxed);
    return c;
}

void ldt__conn_free(struct ldt__conn *c)
{
    ldt__conn_flush_connect(c);
    /* A stale reader (another thread's parent lookup) may still look at it: keep it mapped. */
    c->role = LDT__ROLE_NONE;
    while (atomic_flag_test_and_set_explicit(&pool_lock, memory_order_acquire))
        __builtin_ia32_pause();
    c->next_free = pool_free;
    pool_free = c;
    atomic_flag_clear_explicit(&pool_lock, memory_order_release);
}

void ldt__conn_atfork_child(void)
{
    /* Only the forking thread lives on: a lock another thread held at fork() would never be
     * released, and the child's first close() of that socket would spin forever. */
    atomic_flag_clear(&pool_lock);
    for (unsigned i = 0; i < pool_nchunks; i++)
        for (int j = 0; j < POOL_CHUNK; j++)
            atomic_flag_clear(&pool_chunks[i][j].lock);
}

/* The socket of fd is also an inherited fd of ours that serves HTTP (a worker exec'd with the
 * connection as fd 0 and 1 reads the request on one and answers on the other): share its conn.
 * Only inherited (probed) fds are compared, one fstat each; rare path. */
int ldt__fd_share_sibling(int fd, struct ldt__fd *e)
{
    struct stat me, other;
    if (fstat(fd, &me) != 0)
        return 0;
    for (unsigned k = 0; k < LDT__FD_MAX_CHUNKS; k++) {
        struct ldt__fd *ch = atomic_load_explicit(&chunks[k], memory_order_acquire);
        for (unsigned j = 0; ch && j < LDT__FD_CHUNK; j++) {
            struct ldt__fd *o = &ch[j];
            if (o == e || !o->conn || o->origin != LDT__ORIG_PROBED || o->cls != LDT__CLS_HTTP ||
                o->conn->role != LDT__ROLE_SERVER || o->conn->shared == UINT8_MAX)
                continue;
            if (fstat((int)(k * LDT__FD_CHUNK + j), &other) == 0 && other.st_ino == me.st_ino &&
                other.st_dev == me.st_dev) {
                o->conn->shared++;
                e->conn = o->conn;
                e->cls = LDT__CLS_HTTP;
                return 1;
            }
        }
    }
    return 0;
}
