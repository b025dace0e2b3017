/* test_soak.c - integration: 1,000 concurrent connections through the traced demo chain, twice,
 * with a sidecar draining: no crash, no fd leak, shim and sidecar memory flat.
 *
 * The five demo services run under the shim (thread per connection, so 1,000 client connections
 * mean ~1,000 threads and ~1,000 upstream connections in gateway, auth, order, payment and db);
 * ldtraced drains into a file. This binary opens 1,000 non-blocking connections to the gateway at
 * once and makes 2 keep-alive requests on each (epoll), closing them all once every one is done,
 * in a bounded time. Figures are read from
 * /proc at start (after a warm-up), after the first round and at the end.
 *
 * Bounds (documented in the assertions):
 *   - fds: after each round, once the connections are closed, every service is back to its start
 *     count (threads exit and close their upstream connections; the shim keeps no fd of its own);
 *   - memory: a round grows a process to its working set for 1,000 connections (thread stacks,
 *     which glibc keeps cached after the threads exit, the shim's connection pool, kept for reuse,
 *     malloc arenas): at most 128 KiB a connection over the start (1 MiB under ASan). That working
 *     set depends on how many of the 1,000 threads happened to be alive at once: measured over 6
 *     rounds, untraced and traced alike, a service's RSS moves up and down by up to ~25 MiB between
 *     rounds without a trend. So rounds 1 and 2 set the working set (the larger of the two) and
 *     round 3 must stay within it + 25% + 24 MiB: a leak of ~8 KiB a request or a connection
 *     exceeds that. Under ASan only the first bound is checked (two rounds): its allocator keeps a
 *     quarantine and caches freed chunks, so RSS grows with no leak (measured 100 -> 190 MiB).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fault_util.h"

#define NCONN 1000
#define NREQ 2
#define NSVC 5

static const char *const names[NSVC] = {"db", "payment", "auth", "order", "gateway"};

struct chain {
    char dir[ITEST_PATH_MAX];
    char out[ITEST_PATH_MAX + 16], err[ITEST_PATH_MAX + 16];
    pid_t pid[NSVC], sc;
    int port[NSVC];
};

static void chain_start(struct chain *c)
{
    cr_assert(itest_mkdtemp(c->dir) == 0);
    snprintf(c->out, sizeof(c->out), "%s/spans.json", c->dir);
    snprintf(c->err, sizeof(c->err), "%s/ldtraced.err", c->dir);
    c->sc = fu_sidecar(c->dir, c->out, c->err);
    char peer[4][32];
    for (int i = 0; i < NSVC; i++) {
        struct itest_env env;
        itest_env_init(&env);
        cr_assert(itest_env_trace(&env, c->dir, names[i]) == 0);
        if (fu_asan()) /* a small quarantine, so that freed memory does not look like growth */
            itest_env_set(&env, "ASAN_OPTIONS",
                          "detect_leaks=0:verify_asan_link_order=0:quarantine_size_mb=16:"
                          "thread_local_quarantine_size_kb=64");
        const char *extra[5] = {NULL};
        if (i == 3) { /* order */
            const char *e[] = {"--payment", peer[1], "--db", peer[0], NULL};
            memcpy(extra, e, sizeof(e));
        } else if (i == 4) { /* gateway */
            const char *e[] = {"--auth", peer[2], "--order", peer[3], NULL};
            memcpy(extra, e, sizeof(e));
        }
        c->pid[i] = fu_service(names[i], NULL, &c->port[i], extra, &env);
        if (i < 4)
            snprintf(peer[i], sizeof(peer[i]), "127.0.0.1:%d", c->port[i]);
        itest_env_free(&env);
    }
}

/* A figure line: on stderr (hidden by Criterion's TAP mode) and in
 * $LDT_BUILD_ROOT/meson-logs/soak-figures.txt. */
static void note(const char *text)
{
    fputs(text, stderr);
    FILE *f = fopen(itest_build("meson-logs/soak-figures.txt"), "a");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* ---- 1,000 connections at once, 2 requests each (epoll) ---- */

struct conn {
    int fd;
    int sent;     /* requests written */
    int answered; /* responses read */
    size_t got;
    char buf[8192];
};

static int open_conn(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    cr_assert(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
    return fd;
}

static void send_req(struct conn *k, int id)
{
    char req[256];
    int n = snprintf(req, sizeof(req), "GET /checkout?order=%d HTTP/1.1\r\nHost: gw\r\n\r\n", id);
    ssize_t w = send(k->fd, req, (size_t)n, MSG_NOSIGNAL);
    cr_assert_eq(w, n, "send on connection %d: %s", id, strerror(errno));
    k->sent++;
    k->got = 0;
}

/* Read what is there; 1 when a whole response (headers + Content-Length body) is in, -1 on EOF or
 * error, 0 for more to come. */
static int read_resp(struct conn *k)
{
    for (;;) {
        ssize_t r = recv(k->fd, k->buf + k->got, sizeof(k->buf) - 1 - k->got, 0);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (r <= 0)
            return -1;
        k->got += (size_t)r;
        if (k->got == sizeof(k->buf) - 1)
            return -1;
    }
    k->buf[k->got] = '\0';
    char *end = strstr(k->buf, "\r\n\r\n");
    if (!end)
        return 0;
    char *cl = strcasestr(k->buf, "\r\nContent-Length:");
    size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
    return k->got >= (size_t)(end + 4 - k->buf) + body ? 1 : 0;
}

/* One round: returns the number of 200 answers; fails on a connection error or the time bound. */
static int round_trip(int port, int round, int budget_ms)
{
    struct conn *k = calloc(NCONN, sizeof(*k));
    int ep = epoll_create1(EPOLL_CLOEXEC), ok = 0, done = 0;
    cr_assert(k && ep >= 0);
    /* Connect in bursts of 100 (the demo servers listen with a backlog of 128: a SYN dropped on a
     * full queue is retried after 1, 3, 7 ... s, which on a loaded machine can exceed the budget).
     * All stay open until the end of the round, so 1,000 are open at once all the same. */
    for (int i = 0; i < NCONN; i++) {
        k[i].fd = open_conn(port);
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
        cr_assert(epoll_ctl(ep, EPOLL_CTL_ADD, k[i].fd, &ev) == 0);
        if (i % 100 == 99)
            fu_sleep_ms(20);
    }
    double t0 = fu_now_ms();
    struct epoll_event evs[256];
    while (done < NCONN) {
        cr_assert_lt(fu_now_ms() - t0, budget_ms, "round %d: %d of %d connections done in %d ms",
                     round, done, NCONN, budget_ms);
        int n = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < n; e++) {
            struct conn *c = &k[evs[e].data.u32];
            int id = round * 10 * NCONN + (int)evs[e].data.u32 * NREQ + c->sent + 1;
            if (c->sent == 0 && (evs[e].events & EPOLLOUT)) {
                send_req(c, id);
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            if (!(evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->answered == c->sent)
                continue;
            int r = read_resp(c);
            cr_assert_geq(r, 0, "round %d: connection %u failed after %d answers", round,
                          evs[e].data.u32, c->answered);
            if (r == 0)
                continue;
            ok += strncmp(c->buf, "HTTP/1.1 200", 12) == 0;
            if (++c->answered < NREQ)
                send_req(c, id);
            else
                done++;
        }
    }
    char line[160];
    snprintf(line, sizeof(line),
             "soak: round %d: %d connections x %d requests in %.0f ms, %d "
             "answered 200\n",
             round, NCONN, NREQ, fu_now_ms() - t0, ok);
    note(line);
    /* Every connection stays open until all are done, so each round has the same peak (1,000
     * live connections, hence threads, in every service) and rounds compare. */
    for (int i = 0; i < NCONN; i++)
        close(k[i].fd);
    close(ep);
    free(k);
    return ok;
}

/* ---- figures ---- */

struct figures {
    long rss[NSVC + 1]; /* services, then the sidecar */
    int fds[NSVC + 1];
};

static void measure(const struct chain *c, struct figures *f)
{
    for (int i = 0; i <= NSVC; i++) {
        pid_t p = i < NSVC ? c->pid[i] : c->sc;
        f->rss[i] = fu_rss_kb(p);
        f->fds[i] = fu_fd_count(p);
        cr_assert(f->rss[i] > 0 && f->fds[i] > 0, "%s (pid %d) is gone",
                  i < NSVC ? names[i] : "ldtraced", (int)p);
    }
}

/* Wait (bounded) until every process is back to its start fd count. */
static void settle(const struct chain *c, const struct figures *start, struct figures *now)
{
    for (double t0 = fu_now_ms(); fu_now_ms() - t0 < 5000; fu_sleep_ms(50)) {
        measure(c, now);
        int same = 1;
        for (int i = 0; i <= NSVC; i++)
            same &= now->fds[i] <= start->fds[i];
        if (same)
            return;
    }
}

static void print_figures(const char *label, const struct figures *f)
{
    char line[512];
    int n = snprintf(line, sizeof(line), "soak: %-7s", label);
    for (int i = 0; i <= NSVC; i++)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " %s %ld kB/%d fds",
                      i < NSVC ? names[i] : "ldtraced", f->rss[i], f->fds[i]);
    snprintf(line + n, sizeof(line) - (size_t)n, "\n");
    note(line);
}

Test(soak, thousand_connections_no_fd_leak_memory_flat, .timeout = 170)
{
    struct rlimit rl;
    cr_assert(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rlim_t want = rl.rlim_max < 16384 ? rl.rlim_max : 16384;
    cr_assert_geq(want, 4 * NCONN, "RLIMIT_NOFILE hard limit %lu is too low for the soak",
                  (unsigned long)rl.rlim_max);
    rl.rlim_cur = want;
    cr_assert(setrlimit(RLIMIT_NOFILE, &rl) == 0); /* the children inherit it */
    struct chain c;
    chain_start(&c);
    int gw = c.port[4];
    struct fu_load warm = {.port = gw, .path_fmt = "/checkout?order=%d", .nconn = 4, .max = 200};
    fu_load_start(&warm);
    for (int i = 0; i < warm.nconn; i++)
        pthread_join(warm.th[i], NULL);
    cr_assert_eq(atomic_load(&warm.done), 200);
    struct figures start, mid, end;
    settle(&c, &(struct figures){.fds = {99999, 99999, 99999, 99999, 99999, 99999}}, &start);
    fu_sleep_ms(300);
    measure(&c, &start);
    int budget = fu_asan() ? 60000 : 30000;
    /* Normal build: rounds 1 and 2 set the working set (the larger of the two), round 3 must stay
     * within it. ASan: rounds 1 and 2, no growth bound (see the top of this file). */
    int rounds = fu_asan() ? 2 : 3;
    cr_expect_eq(round_trip(gw, 1, budget), NCONN * NREQ);
    settle(&c, &start, &mid);
    cr_expect_eq(round_trip(gw, 2, budget), NCONN * NREQ);
    settle(&c, &start, &end);
    print_figures("round 1", &mid);
    for (int i = 0; i <= NSVC; i++)
        mid.rss[i] = end.rss[i] > mid.rss[i] ? end.rss[i] : mid.rss[i];
    if (rounds == 3) {
        print_figures("round 2", &end);
        cr_expect_eq(round_trip(gw, 3, budget), NCONN * NREQ);
        settle(&c, &start, &end);
    }
    print_figures("start", &start);
    print_figures("end", &end);
    double pct = 0.25;
    long slack = 24576, per_conn = fu_asan() ? 1024 : 128;
    for (int i = 0; i <= NSVC; i++) {
        const char *who = i < NSVC ? names[i] : "ldtraced";
        cr_expect_leq(mid.fds[i], start.fds[i], "%s: %d fds after round 1, %d at start", who,
                      mid.fds[i], start.fds[i]);
        cr_expect_leq(end.fds[i], start.fds[i], "%s: %d fds at the end, %d at start", who,
                      end.fds[i], start.fds[i]);
        cr_expect_leq(mid.rss[i], start.rss[i] + per_conn * NCONN,
                      "%s: RSS %ld kB after 1,000 connections, %ld kB at start", who, mid.rss[i],
                      start.rss[i]);
        if (!fu_asan())
            cr_expect_leq(end.rss[i], mid.rss[i] + (long)(pct * (double)mid.rss[i]) + slack,
                          "%s: RSS grew from %ld kB (the larger of rounds 1 and 2) to %ld kB "
                          "in an identical round 3 (start %ld kB)",
                          who, mid.rss[i], end.rss[i], start.rss[i]);
    }
    for (int i = NSVC - 1; i >= 0; i--)
        cr_expect_eq(itest_stop(c.pid[i]), 0, "%s did not exit cleanly", names[i]);
    cr_expect_eq(itest_stop(c.sc), 0, "ldtraced did not exit cleanly");
    size_t dups, bad;
    const char *files[] = {c.out, NULL};
    size_t spans = fu_server_spans(files, "gateway", &dups, &bad);
    char line[128];
    snprintf(line, sizeof(line), "soak: %zu gateway SERVER spans exported for %d requests\n", spans,
             200 + rounds * NCONN * NREQ);
    note(line);
    cr_expect_eq(dups + bad, 0);
    cr_expect_eq(spans, 200 + rounds * NCONN * NREQ, "gateway spans lost in the soak");
    itest_rmtree(c.dir);
}
