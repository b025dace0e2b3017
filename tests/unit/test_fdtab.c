/* test_fdtab.c - the per-fd table: lazy chunks, probing once, reset on close and dup2 reuse,
 * threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shim/shim.h"

static void setup(void)
{
    memset(&ldt__cfg, 0, sizeof ldt__cfg);
    ldt__cfg.ratio = 1.0;
    ldt_id_seed();
}

static void sink(const void *rec, size_t len)
{
    (void)rec;
    (void)len;
}

Test(fdtab, entries_are_small)
{
    cr_assert_leq(sizeof(struct ldt__fd), 64); /* issue #9: <= 64 bytes per tracked fd */
}

Test(fdtab, out_of_range_fds_are_not_tracked)
{
    cr_assert_null(ldt__fd_get(-1));
    cr_assert_null(ldt__fd_get((int)(LDT__FD_CHUNK * LDT__FD_MAX_CHUNKS)));
    cr_assert_null(ldt__fd_peek(-5));
}

Test(fdtab, grows_lazily_across_chunks, .init = setup)
{
    int fds[] = {3, (int)LDT__FD_CHUNK - 1, (int)LDT__FD_CHUNK, 5 * (int)LDT__FD_CHUNK + 7,
                 1000000};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        cr_assert_null(ldt__fd_peek(fds[i] + (int)LDT__FD_CHUNK * 300), "unused chunk is unmapped");
        ldt__fd_set(fds[i], LDT__FD_SOCK, LDT__ORIG_SOCKET);
        struct ldt__fd *e = ldt__fd_peek(fds[i]);
        cr_assert_not_null(e);
        cr_assert_eq(atomic_load(&e->kind), LDT__FD_SOCK);
        cr_assert_eq(e->origin, LDT__ORIG_SOCKET);
    }
    /* Neighbours in the same chunk stay unknown. */
    cr_assert_eq(atomic_load(&ldt__fd_peek((int)LDT__FD_CHUNK + 1)->kind), LDT__FD_UNKNOWN);
}

Test(fdtab, probes_once_and_caches, .init = setup)
{
    int sv[2], p[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(atomic_load(&ldt__fd_get(sv[0])->kind), LDT__FD_SOCK);
    cr_assert_eq(atomic_load(&ldt__fd_get(p[0])->kind), LDT__FD_OTHER);
    /* The answer is cached: swap what the numbers are and the table still says the old thing. */
    close(p[0]);
    cr_assert_eq(dup2(sv[1], p[0]), p[0]);
    cr_assert_eq(atomic_load(&ldt__fd_get(p[0])->kind), LDT__FD_OTHER);
    /* Until it is reset (what the close and dup2 hooks do): then it is probed again. */
    ldt__fd_reset(p[0]);
    cr_assert_eq(atomic_load(&ldt__fd_peek(p[0])->kind), LDT__FD_UNKNOWN);
    cr_assert_eq(atomic_load(&ldt__fd_get(p[0])->kind), LDT__FD_SOCK);
    int dg = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_eq(atomic_load(&ldt__fd_get(dg)->kind), LDT__FD_OTHER,
                 "datagram sockets are not traced");
}

Test(fdtab, reset_releases_the_connection_and_ends_its_spans, .init = setup)
{
    ldt__span_sink = sink;
    int fd = 77;
    ldt__fd_set(fd, LDT__FD_SOCK, LDT__ORIG_ACCEPTED);
    struct ldt__fd *e = ldt__fd_get(fd);
    const char req[] = "GET / HTTP/1.1\r\n\r\n";
    struct iovec v = {(void *)req, sizeof req - 1};
    ldt__sniff_io(fd, e, LDT__IN, &v, 1, (ssize_t)v.iov_len, 0, 1);
    cr_assert_eq(e->cls, LDT__CLS_HTTP);
    struct ldt__conn *c = e->conn;
    cr_assert_eq(c->srv_n, 1);
    ldt__fd_reset(fd);
    cr_assert_null(e->conn);
    cr_assert_eq(e->cls, LDT__CLS_NONE);
    cr_assert_eq(e->calls, 0);
    cr_assert_eq(c->role, LDT__ROLE_NONE, "back in the pool");
    /* The pool hands it out again, zeroed. */
    struct ldt__conn *c2 = ldt__conn_alloc();
    cr_assert_eq(c2, c);
    cr_assert_eq(c2->srv_n, 0);
}

Test(fdtab, set_on_a_reused_number_forgets_the_old_socket, .init = setup)
{
    ldt__span_sink = sink;
    ldt__fd_set(90, LDT__FD_SOCK, LDT__ORIG_CONNECTED);
    struct ldt__fd *e = ldt__fd_get(90);
    e->calls = 123;
    e->cls = LDT__CLS_PASS;
    ldt__fd_set(90, LDT__FD_SOCK, LDT__ORIG_ACCEPTED); /* accept() returned the number again */
    cr_assert_eq(e->calls, 0);
    cr_assert_eq(e->cls, LDT__CLS_NONE);
    cr_assert_eq(e->origin, LDT__ORIG_ACCEPTED);
}

#define THREADS 8
#define PER 2000

static void *worker(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int i = 0; i < PER; i++) {
        int fd = 200000 + i * THREADS + base; /* all threads race into the same new chunks */
        ldt__fd_set(fd, LDT__FD_SOCK, LDT__ORIG_SOCKET);
        struct ldt__fd *e = ldt__fd_peek(fd);
        if (!e || atomic_load(&e->kind) != LDT__FD_SOCK)
            return (void *)1;
        e->calls = (uint32_t)fd;
    }
    return NULL;
}

Test(fdtab, concurrent_threads_share_chunks, .init = setup)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        cr_assert_null(r);
    }
    for (int fd = 200000; fd < 200000 + THREADS * PER; fd++)
        cr_assert_eq(ldt__fd_peek(fd)->calls, (uint32_t)fd, "fd %d lost its write", fd);
}

static void *pool_worker(void *arg)
{
    (void)arg;
    struct ldt__conn *mine[16];
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 16; i++) {
            mine[i] = ldt__conn_alloc();
            if (!mine[i])
                return (void *)1;
            mine[i]->err = (int)(intptr_t)&mine[i];
        }
        for (int i = 0; i < 16; i++) {
            if (mine[i]->err != (int)(intptr_t)&mine[i])
                return (void *)2; /* someone else got the same conn */
            ldt__conn_free(mine[i]);
        }
    }
    return NULL;
}

Test(fdtab, conn_pool_is_thread_safe, .init = setup)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, pool_worker, NULL);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        cr_assert_null(r);
    }
}

Test(fdtab, fork_child_releases_locks_held_by_vanished_threads, .init = setup)
{
    struct ldt__conn *c = ldt__conn_alloc();
    cr_assert_not_null(c);
    ldt__conn_lock(c); /* as if another thread were sniffing when fork() happened */
    ldt__conn_atfork_child();
    cr_assert_not(atomic_flag_test_and_set(&c->lock), "the child can take the lock");
    ldt__conn_unlock(c);
    ldt__conn_free(c);
}

/* ldt__skip: the hook's tail-call test. A socket classified PASS with nothing of ours on it costs
 * what a file costs; any other state of a traced socket goes to the traced part. */
Test(fdtab, skip_passes_files_and_classified_pass_sockets_only, .init = setup)
{
    int fd = 4001;
    int saved_mode = ldt__mode;
    ldt__mode = LDT__MODE_ON;
    ldt__fd_set(fd, LDT__FD_OTHER, LDT__ORIG_SOCKET);
    cr_assert_eq(ldt__skip(fd), 1, "a file or pipe is skipped");
    ldt__fd_set(fd, LDT__FD_SOCK, LDT__ORIG_SOCKET);
    struct ldt__fd *e = ldt__fd_peek(fd);
    cr_assert_eq(ldt__skip(fd), 0, "an unclassified socket is not");
    e->cls = LDT__CLS_HTTP;
    cr_assert_eq(ldt__skip(fd), 0, "an HTTP socket is not");
    e->cls = LDT__CLS_PASS;
    cr_assert_eq(ldt__skip(fd), 1, "a classified PASS socket is");
    struct ldt__conn dummy;
    e->conn = &dummy;
    cr_assert_eq(ldt__skip(fd), 0, "a PASS socket still carrying a conn is not");
    e->conn = NULL;
    ldt__depth = 1;
    cr_assert_eq(ldt__skip(fd + 1), 1, "nested calls are skipped");
    cr_assert_eq(ldt__nested_fd, fd + 1);
    ldt__depth = 0;
    ldt__fd_reset(fd);
    cr_assert_eq(ldt__skip(fd), 0, "a forgotten fd is probed again");
    ldt__mode = saved_mode;
}

/* ---- conn state only while a message is in flight (issue #9) ------------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <stdio.h>

static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ldt_span_rec recs[512];
static int nrecs;

static void keep(const void *rec, size_t len)
{
    pthread_mutex_lock(&rec_mu);
    if (*(const uint8_t *)rec == LDT_REC_SPAN && len == sizeof recs[0] && nrecs < 512)
        memcpy(&recs[nrecs++], rec, len);
    pthread_mutex_unlock(&rec_mu);
}

/* The bytes the last injected send put on the wire (a fake kernel taking everything). */
static char wire[4096];
static size_t wire_len;

static ssize_t take_all(void *ctx, const struct iovec *iov, int cnt)
{
    (void)ctx;
    ssize_t t = 0;
    for (int i = 0; i < cnt; i++) {
        if (wire_len + iov[i].iov_len <= sizeof wire)
            memcpy(wire + wire_len, iov[i].iov_base, iov[i].iov_len);
        wire_len += iov[i].iov_len;
        t += (ssize_t)iov[i].iov_len;
    }
    return t;
}

/* What the hooks do around a real call that moved len bytes of buf on fd (entry e). */
static void moved(int fd, struct ldt__fd *e, enum ldt__dir dir, const char *buf, size_t len)
{
    struct iovec v = {(void *)buf, len};
    if (dir == LDT__OUT && ldt__sniff_wants_inject(fd, e, &v, 1)) {
        struct ldt__conn *c = ldt__conn_hold(e);
        cr_assert_not_null(c);
        wire_len = 0;
        ssize_t n = ldt__client_send(c, &v, 1, take_all, NULL);
        cr_assert_eq(n, (ssize_t)len);
        ldt__sniff_io(fd, e, dir, NULL, 0, n, 0, 1);
        ldt__conn_unhold(e, c);
        return;
    }
    ldt__sniff_io(fd, e, dir, &v, 1, (ssize_t)len, 0, 1);
}

static void fresh(struct ldt__fd *e)
{
    memset(e, 0, sizeof *e);
    atomic_store(&e->kind, LDT__FD_SOCK);
}

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/* A loopback TCP pair (client end a, server end b): real addresses for the entries. */
static void tcp_pair(int *a, int *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof sa;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(ls >= 0 && bind(ls, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(ls, 1) == 0);
    cr_assert_eq(getsockname(ls, (struct sockaddr *)&sa, &l), 0);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_eq(connect(*a, (struct sockaddr *)&sa, sizeof sa), 0);
    *b = accept(ls, NULL, NULL);
    cr_assert_geq(*b, 0);
    close(ls);
}

Test(fdtab_idle, keepalive_conn_is_given_back_at_idle_and_retaken_with_correct_spans,
     .init = setup)
{
    ldt__conn_warm = 0; /* every give-back happens (warm conns: the test below) */
    int a, b;
    tcp_pair(&a, &b);
    struct ldt__fd ce, se;
    fresh(&ce);
    fresh(&se);
    ldt__span_sink = keep;
    nrecs = 0;
    uint64_t base = atomic_load(&ldt__conn_in_use);
    const char *reqs[] = {"GET /one HTTP/1.1\r\nHost: x\r\n\r\n",
                          "GET /two HTTP/1.1\r\nHost: x\r\n\r\n",
                          "POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"};
    for (int i = 0; i < 3; i++) {
        moved(a, &ce, LDT__OUT, reqs[i], strlen(reqs[i]));
        cr_assert_not_null(ce.conn, "request %d in flight: the client holds a conn", i);
        char w[4096];
        size_t wl = wire_len;
        cr_assert_gt(wl, strlen(reqs[i]), "our lines went out with request %d", i);
        memcpy(w, wire, wl);
        moved(b, &se, LDT__IN, w, wl);
        cr_assert_not_null(se.conn, "request %d read, not answered: the server holds a conn", i);
        cr_assert_eq(atomic_load(&ldt__conn_in_use), base + 2);
        moved(b, &se, LDT__OUT, RESP, sizeof RESP - 1);
        moved(a, &ce, LDT__IN, RESP, sizeof RESP - 1);
        cr_assert_null(ce.conn, "exchange %d done: the client's conn is back in the pool", i);
        cr_assert_null(se.conn, "exchange %d done: the server's conn is back in the pool", i);
        cr_assert_eq(atomic_load(&ldt__conn_in_use), base);
        cr_assert_eq(ce.cls, LDT__CLS_HTTP);
        cr_assert_eq(se.role, LDT__ROLE_SERVER);
    }
    cr_assert_eq(nrecs, 6, "%d spans", nrecs);
    struct sockaddr_in ca, sa;
    socklen_t l = sizeof ca;
    getsockname(a, (struct sockaddr *)&ca, &l);
    l = sizeof sa;
    getsockname(b, (struct sockaddr *)&sa, &l);
    const char *paths[] = {"/one", "/two", "/three"};
    for (int i = 0; i < 6; i++) {
        const struct ldt_span_rec *r = &recs[i];
        int srv = r->kind == LDT_SPAN_SERVER;
        cr_assert_eq(r->status_code, 200);
        cr_assert_eq(r->path_len, strlen(paths[i / 2]));
        cr_assert(memcmp(r->path, paths[i / 2], r->path_len) == 0, "span %d: %.*s", i,
                  r->path_len, r->path);
        cr_assert_eq(r->peer_family, LDT_AF_INET);
        cr_assert_eq(r->local_family, LDT_AF_INET);
        cr_assert_eq(r->local_port, ntohs(srv ? sa.sin_port : ca.sin_port));
        cr_assert_eq(r->peer_port, ntohs(srv ? ca.sin_port : sa.sin_port));
        cr_assert(memcmp(r->local_addr, &ca.sin_addr, 4) == 0, "the interned local address");
        cr_assert(memcmp(r->peer_addr, &ca.sin_addr, 4) == 0);
        cr_assert_eq(r->bytes_out, srv ? sizeof RESP - 1 : strlen(reqs[i / 2]));
    }
    /* Each client span's lines went out and the server saw them: its server span is the child,
     * a new trace each time (a conn re-taken carries nothing of the previous request). */
    for (int i = 0; i < 6; i += 2) {
        const struct ldt_span_rec *s = recs[i].kind == LDT_SPAN_SERVER ? &recs[i] : &recs[i + 1];
        const struct ldt_span_rec *c = recs[i].kind == LDT_SPAN_SERVER ? &recs[i + 1] : &recs[i];
        cr_assert_eq(c->kind, LDT_SPAN_CLIENT);
        cr_assert(c->flags & LDT_SPAN_F_INJECTED);
        cr_assert(memcmp(s->parent_id, c->span_id, 8) == 0, "exchange %d: not linked", i / 2);
        cr_assert(memcmp(s->trace_id, c->trace_id, 16) == 0);
        if (i > 0)
            cr_assert(memcmp(c->trace_id, recs[i - 1].trace_id, 16) != 0);
    }
    close(a);
    close(b);
}

/* Under LDT__CONN_WARM conns in use, a keep-alive connection keeps its conn between requests
 * (no set-up per request) and its spans are what a conn taken afresh gives. */
Test(fdtab_idle, a_few_keepalive_connections_keep_their_conn_warm, .init = setup)
{
    int a, b;
    tcp_pair(&a, &b);
    struct ldt__fd ce, se;
    fresh(&ce);
    fresh(&se);
    ldt__span_sink = keep;
    nrecs = 0;
    struct ldt__conn *cc = NULL, *sc = NULL;
    static const char req[] = "GET /w HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < 3; i++) {
        moved(a, &ce, LDT__OUT, req, sizeof req - 1);
        char w[4096];
        size_t wl = wire_len;
        memcpy(w, wire, wl);
        moved(b, &se, LDT__IN, w, wl);
        moved(b, &se, LDT__OUT, RESP, sizeof RESP - 1);
        moved(a, &ce, LDT__IN, RESP, sizeof RESP - 1);
        cr_assert_not_null(ce.conn, "exchange %d done: the client keeps its conn warm", i);
        cr_assert_not_null(se.conn, "exchange %d done: the server keeps its conn warm", i);
        cr_assert(i == 0 || (ce.conn == cc && se.conn == sc), "the same conns, not new ones");
        cc = ce.conn;
        sc = se.conn;
    }
    cr_assert_eq(nrecs, 6, "%d spans", nrecs);
    for (int i = 0; i < 6; i += 2) {
        const struct ldt_span_rec *s = recs[i].kind == LDT_SPAN_SERVER ? &recs[i] : &recs[i + 1];
        const struct ldt_span_rec *c = recs[i].kind == LDT_SPAN_SERVER ? &recs[i + 1] : &recs[i];
        cr_assert(memcmp(s->parent_id, c->span_id, 8) == 0, "exchange %d: not linked", i / 2);
        cr_assert_eq(s->path_len, 2);
        if (i > 0)
            cr_assert(memcmp(c->trace_id, recs[i - 2].trace_id, 16) != 0 &&
                          memcmp(c->trace_id, recs[i - 1].trace_id, 16) != 0,
                      "a warm conn carries nothing of the previous request's trace");
    }
    close(a);
    close(b);
}

#define IDLE_N 10000

Test(fdtab_idle, ten_thousand_idle_keepalive_connections_hold_no_conn, .init = setup)
{
    ldt__span_sink = sink;
    uint64_t base = atomic_load(&ldt__conn_in_use);
    static const char req[] = "GET /c HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    /* Both ends of IDLE_N connections in the table (numbers no real fd uses), one exchange
     * each, in flight all at once: every end holds a conn. */
    int fd0 = 3 * (int)LDT__FD_CHUNK;
    for (int i = 0; i < IDLE_N; i++) {
        ldt__fd_set(fd0 + 2 * i, LDT__FD_SOCK, LDT__ORIG_CONNECTED);
        ldt__fd_set(fd0 + 2 * i + 1, LDT__FD_SOCK, LDT__ORIG_ACCEPTED);
        moved(fd0 + 2 * i, ldt__fd_get(fd0 + 2 * i), LDT__OUT, req, sizeof req - 1);
        moved(fd0 + 2 * i + 1, ldt__fd_get(fd0 + 2 * i + 1), LDT__IN, req, sizeof req - 1);
    }
    cr_assert_eq(atomic_load(&ldt__conn_in_use), base + 2 * IDLE_N);
    for (int i = 0; i < IDLE_N; i++) {
        moved(fd0 + 2 * i + 1, ldt__fd_get(fd0 + 2 * i + 1), LDT__OUT, RESP, sizeof RESP - 1);
        moved(fd0 + 2 * i, ldt__fd_get(fd0 + 2 * i), LDT__IN, RESP, sizeof RESP - 1);
    }
    /* All idle keep-alive now: what stays is the entries (<= 64 bytes each), and at most
     * ldt__conn_warm conns kept warm by the last connections to go idle. */
    uint64_t held = atomic_load(&ldt__conn_in_use) - base;
    cr_assert_leq(held, ldt__conn_warm, "%llu conns still held", (unsigned long long)held);
    cr_assert_leq(sizeof(struct ldt__fd), 64);
    uint64_t with_conn = 0;
    for (int i = 0; i < 2 * IDLE_N; i++) {
        struct ldt__fd *e = ldt__fd_peek(fd0 + i);
        with_conn += e->conn != NULL;
        cr_assert_eq(e->cls, LDT__CLS_HTTP);
        ldt__fd_reset(fd0 + i);
    }
    cr_assert_eq(with_conn, held);
    cr_assert_eq(atomic_load(&ldt__conn_in_use), base);
}

/* One socket, two threads: a writer sends requests (at most 3 unanswered), a reader reads the
 * responses, as a pipelining client with a reader thread does. The conn is given back whenever
 * the reader catches up and taken again by the writer's next request, racing the reader. */
#define TT_N 400

static struct ldt__fd tt_e;
static sem_t tt_written, tt_room;

static void *tt_writer(void *arg)
{
    (void)arg;
    char req[64];
    for (int i = 0; i < TT_N; i++) {
        sem_wait(&tt_room);
        int n = snprintf(req, sizeof req, "GET /r/%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
        moved(-1, &tt_e, LDT__OUT, req, (size_t)n);
        sem_post(&tt_written);
    }
    return NULL;
}

static void *tt_reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < TT_N; i++) {
        sem_wait(&tt_written);
        /* In two pieces, so the reader spends time inside the conn while the writer writes. */
        moved(-1, &tt_e, LDT__IN, RESP, 20);
        moved(-1, &tt_e, LDT__IN, RESP + 20, sizeof RESP - 1 - 20);
        sem_post(&tt_room);
    }
    return NULL;
}

Test(fdtab_idle, a_reader_and_a_writer_thread_on_one_socket, .init = setup, .timeout = 30)
{
    ldt__conn_warm = 0; /* the conn goes back and is re-taken, racing */
    fresh(&tt_e);
    ldt__span_sink = keep;
    nrecs = 0;
    uint64_t base = atomic_load(&ldt__conn_in_use);
    sem_init(&tt_written, 0, 0);
    sem_init(&tt_room, 0, 3);
    pthread_t w, r;
    pthread_create(&w, NULL, tt_writer, NULL);
    pthread_create(&r, NULL, tt_reader, NULL);
    pthread_join(w, NULL);
    pthread_join(r, NULL);
    const struct ldt_span_rec *all = recs;
    int got = nrecs;
    cr_assert_eq(got, TT_N, "%d client spans of %d", got, TT_N);
    for (int i = 0; i < TT_N; i++) {
        char want[16];
        int n = snprintf(want, sizeof want, "/r/%d", i);
        cr_assert_eq(all[i].kind, LDT_SPAN_CLIENT);
        cr_assert_eq(all[i].status_code, 200, "span %d", i);
        cr_assert(all[i].path_len == n && memcmp(all[i].path, want, (size_t)n) == 0,
                  "span %d is %.*s", i, all[i].path_len, all[i].path);
        cr_assert(all[i].flags & LDT_SPAN_F_INJECTED);
        cr_assert_not(all[i].flags & LDT_SPAN_F_CONN_DIED);
        cr_assert_eq(all[i].bytes_in, sizeof RESP - 1);
    }
    cr_assert_null(tt_e.conn, "all answered: idle");
    cr_assert_eq(atomic_load(&ldt__conn_in_use), base);
}

/* An IPv6 peer address does not fit the 32-byte entry: it is kept beside the table's entries
 * (ldt__fd_peer6) and still labels every span of an idle-then-busy connection. */
Test(fdtab_idle, ipv6_peer_addresses_label_the_spans, .init = setup)
{
    ldt__conn_warm = 0; /* idle-then-busy: the addresses come back from the entry */
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t l = sizeof sa;
    int ls = socket(AF_INET6, SOCK_STREAM, 0);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (ls >= 0)
            close(ls);
        cr_skip_test("no IPv6 loopback here");
    }
    cr_assert(listen(ls, 1) == 0 && getsockname(ls, (struct sockaddr *)&sa, &l) == 0);
    int a = socket(AF_INET6, SOCK_STREAM, 0);
    cr_assert_eq(connect(a, (struct sockaddr *)&sa, sizeof sa), 0);
    int b = accept(ls, NULL, NULL);
    cr_assert_geq(b, 0);
    close(ls);
    ldt__fd_set(a, LDT__FD_SOCK, LDT__ORIG_CONNECTED);
    ldt__fd_set(b, LDT__FD_SOCK, LDT__ORIG_ACCEPTED);
    ldt__span_sink = keep;
    nrecs = 0;
    static const char req[] = "GET /six HTTP/1.1\r\nHost: x\r\n\r\n";
    for (int i = 0; i < 2; i++) {
        moved(a, ldt__fd_get(a), LDT__OUT, req, sizeof req - 1);
        moved(b, ldt__fd_get(b), LDT__IN, wire, wire_len);
        moved(b, ldt__fd_get(b), LDT__OUT, RESP, sizeof RESP - 1);
        moved(a, ldt__fd_get(a), LDT__IN, RESP, sizeof RESP - 1);
    }
    cr_assert_eq(nrecs, 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(recs[i].peer_family, LDT_AF_INET6, "span %d", i);
        cr_assert_eq(recs[i].local_family, LDT_AF_INET6);
        cr_assert(memcmp(recs[i].peer_addr, &in6addr_loopback, 16) == 0, "span %d: peer", i);
        cr_assert(memcmp(recs[i].local_addr, &in6addr_loopback, 16) == 0, "span %d: local", i);
    }
    cr_assert_null(ldt__fd_get(a)->conn);
    ldt__fd_reset(a);
    ldt__fd_reset(b);
    close(a);
    close(b);
}
