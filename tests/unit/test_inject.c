/* test_inject.c - the injector proven against a fake real-writev that takes every possible byte
 * count.
 *
 * For each request shape, each way of splitting it into app writes, and each count k the fake
 * kernel takes before answering EAGAIN, the bytes on the "wire" must equal the app's bytes with our
 * header lines at the one right place, every count returned to the app must be its own bytes (never
 * 0), and nothing of ours may be left owed once the app is done.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "shim/shim.h"

/* ---- the fake kernel ------------------------------------------------------------------------- */

static struct {
    char wire[16384];
    size_t n;
    size_t first_k; /* bytes taken by the first call of the first round */
    size_t trickle; /* bytes taken by the first call of every later round (0: all) */
    int round, calls;
    int zero_returns;
} F;

static ssize_t fake_sendv(void *ctx, const struct iovec *iov, int cnt)
{
    (void)ctx;
    if (F.calls++ > 0) { /* one call per round goes through, then the socket is "full" */
        errno = EAGAIN;
        return -1;
    }
    size_t budget = F.round == 0 ? F.first_k : (F.trickle ? F.trickle : SIZE_MAX);
    size_t took = 0;
    if (budget == 0) { /* a stream socket that takes nothing says so */
        errno = EAGAIN;
        return -1;
    }
    for (int i = 0; i < cnt && took < budget; i++) {
        size_t k = iov[i].iov_len < budget - took ? iov[i].iov_len : budget - took;
        cr_assert_leq(F.n + k, sizeof F.wire);
        memcpy(F.wire + F.n, iov[i].iov_base, k);
        F.n += k;
        took += k;
    }
    return (ssize_t)took;
}

static void fake_reset(size_t first_k, size_t trickle)
{
    memset(&F, 0, sizeof F);
    F.first_k = first_k;
    F.trickle = trickle;
}

/* ---- a client connection and an app that sends like a careful app does ----------------------- */

static struct ldt__fd fde;

static struct ldt__conn *client_conn(void)
{
    memset(&fde, 0, sizeof fde);
    atomic_store(&fde.kind, LDT__FD_SOCK);
    struct ldt__conn *c = ldt__sniff_attach(-1, &fde, LDT__ROLE_CLIENT);
    cr_assert_not_null(c);
    return c;
}

static void sink(const void *rec, size_t len)
{
    (void)rec;
    (void)len;
}

static void setup(void)
{
    memset(&ldt__cfg, 0, sizeof ldt__cfg);
    ldt__cfg.sampler = LDT_SAMPLER_PARENT_RATIO;
    ldt__cfg.ratio = 1.0;
    ldt__span_sink = sink;
    ldt_id_seed();
}

/* Send app[from, to) split into iovecs of at most seg bytes (0: one iovec), looping on partial
 * writes and EAGAIN the way a non-blocking app does. */
static void app_write(struct ldt__conn *c, const char *app, size_t from, size_t to, size_t seg)
{
    size_t off = from;
    int guard = 0;
    while (off < to) {
        struct iovec v[64];
        int cnt = 0;
        size_t at = off;
        while (at < to && cnt < 64) {
            size_t l = seg && to - at > seg ? seg : to - at;
            v[cnt++] = (struct iovec){(void *)(app + at), l};
            at += l;
        }
        F.calls = 0;
        ssize_t r = ldt__client_send(c, v, cnt, fake_sendv, NULL);
        F.round++;
        cr_assert_lt(guard++, 100000, "no progress");
        if (r < 0) {
            cr_assert_eq(errno, EAGAIN, "errno %d", errno);
            continue;
        }
        cr_assert_gt(r, 0, "the app saw 0 for a %zu-byte write", at - off);
        cr_assert_leq((size_t)r, at - off, "more than the app's own bytes counted");
        off += (size_t)r;
    }
}

/* ---- the oracle ------------------------------------------------------------------------------ */

struct req {
    size_t start, reqline_end, hdr_end, tp_parent; /* app offsets; tp_parent: 0 if no traceparent */
};

/* Find the requests of a well-formed app stream (headers and Content-Length bodies only). */
static int requests(const char *app, size_t len, struct req *out, int max)
{
    int n = 0;
    size_t at = 0;
    while (at < len && n < max) {
        struct req *r = &out[n++];
        memset(r, 0, sizeof *r);
        r->start = at;
        r->reqline_end = (size_t)(strstr(app + at, "\r\n") - app) + 2;
        r->hdr_end = (size_t)(strstr(app + at, "\r\n\r\n") - app) + 2;
        const char *tp = strstr(app + at, "\r\ntraceparent: ");
        if (tp && (size_t)(tp - app) < r->hdr_end)
            r->tp_parent = (size_t)(tp - app) + 2 + 13 + 36;
        const char *cl = strstr(app + at, "Content-Length: ");
        size_t body = cl && (size_t)(cl - app) < r->hdr_end ? strtoul(cl + 16, NULL, 10) : 0;
        at = r->hdr_end + 2 + body;
    }
    return n;
}

/* Where each write starts (cuts[0] = 0 ... cuts[ncut] = len). */
static size_t write_start_of(const size_t *cuts, int ncut, size_t off)
{
    size_t ws = 0;
    for (int i = 0; i <= ncut; i++)
        if (cuts[i] <= off)
            ws = cuts[i];
    return ws;
}

enum tp_mode { TP_NONE, TP_APP, TP_FORWARDED };

/* Build the expected wire: app bytes with span i's block (or replaced parent-id) at its place. */
static size_t expected(struct ldt__conn *c, const char *app, size_t len, const size_t *cuts,
                       int ncut, enum tp_mode mode, char *out)
{
    struct req rq[8];
    int n = requests(app, len, rq, 8);
    size_t o = 0, at = 0;
    for (int i = 0; i < n; i++) {
        struct ldt__span *s = &c->cli[(c->cli_head + i) % LDT__CLI_MAX];
        size_t ws = write_start_of(cuts, ncut, rq[i].hdr_end + 1); /* the blank line's LF */
        size_t place = SIZE_MAX;
        if (mode == TP_NONE)
            place = ws <= rq[i].reqline_end ? rq[i].reqline_end
                    : ws <= rq[i].hdr_end   ? rq[i].hdr_end
                                            : SIZE_MAX;
        else if (mode == TP_FORWARDED && ws <= rq[i].tp_parent)
            place = rq[i].tp_parent;
        if (place == SIZE_MAX)
            continue;
        memcpy(out + o, app + at, place - at);
        o += place - at;
        at = place;
        if (mode == TP_NONE) {
            o += ldt__span_block(s, NULL, 0, out + o); /* our lines, as the injector makes them */
            cr_assert(s->rec.flags & LDT_SPAN_F_INJECTED);
        } else {
            ldt_hex_encode(s->rec.span_id, 8, out + o);
            o += 16;
            at += 16;
            cr_assert(s->rec.flags & LDT_SPAN_F_REPLACED);
        }
    }
    memcpy(out + o, app + at, len - at);
    return o + len - at;
}

/* Run one app stream through every (split, k) combination and compare with the oracle. */
static void run_all(const char *app, size_t seg, enum tp_mode mode, void (*prep)(void))
{
    size_t len = strlen(app);
    static char want[16384];
    for (size_t cut = 0; cut <= len; cut++) {
        for (size_t k = 0; k <= len + 2 * LDT__INJ_MAX; k += (k < len + 80 ? 1 : 97)) {
            for (int t = 0; t < 2; t++) {
                if (prep)
                    prep();
                struct ldt__conn *c = client_conn();
                fake_reset(k, t ? 3 : 0);
                size_t cuts[3] = {0, cut, len};
                app_write(c, app, 0, cut, seg);
                app_write(c, app, cut, len, seg);
                size_t wl = expected(c, app, len, cuts, 1, mode, want);
                cr_assert_eq(c->pend_len, 0, "cut %zu k %zu: injected bytes still owed", cut, k);
                cr_assert_eq(F.n, wl, "cut %zu k %zu t %d: wire %zu bytes, want %zu\n%.*s", cut, k,
                             t, F.n, wl, (int)F.n, F.wire);
                cr_assert(memcmp(F.wire, want, wl) == 0, "cut %zu k %zu: wire\n%.*s\nwant\n%.*s",
                          cut, k, (int)F.n, F.wire, (int)wl, want);
                ldt__conn_free(c);
            }
        }
    }
}

/* ---- the pure core --------------------------------------------------------------------------- */

Test(inject_core, every_k_then_eagain_keeps_the_stream_and_counts, .init = setup)
{
    const char app[] = "0123456789abcdefghij";
    const char ins[] = "<INS>";
    struct ldt__edit ed[2] = {{4, 0, 5, ins}, {12, 0, 5, ins}};
    const char want[] = "0123<INS>456789ab<INS>cdefghij";
    for (size_t k = 0; k <= sizeof want; k++) {
        char pend[LDT__INJ_MAX];
        uint16_t po = 0, pl = 0;
        size_t off = 0;
        int placed_total = 0;
        fake_reset(k, 2);
        while (off < sizeof app - 1) {
            struct iovec v = {(void *)(app + off), sizeof app - 1 - off};
            struct ldt__edit e2[2];
            int ne = 0;
            for (int i = placed_total; i < 2; i++)
                e2[ne++] = (struct ldt__edit){ed[i].off - off, 0, 5, ins};
            int placed;
            F.calls = 0;
            ssize_t r = ldt__inject_sendv(pend, &po, &pl, &v, 1, e2, ne, fake_sendv, NULL, &placed);
            F.round++;
            placed_total += placed;
            if (r < 0) {
                cr_assert_eq(errno, EAGAIN);
                continue;
            }
            cr_assert_gt(r, 0);
            off += (size_t)r;
        }
        cr_assert_eq(pl, 0);
        cr_assert_eq(F.n, sizeof want - 1, "k %zu: %.*s", k, (int)F.n, F.wire);
        cr_assert(memcmp(F.wire, want, F.n) == 0, "k %zu: %.*s", k, (int)F.n, F.wire);
    }
}

Test(inject_core, error_of_the_real_call_is_returned_with_its_errno, .init = setup)
{
    char pend[LDT__INJ_MAX];
    uint16_t po = 0, pl = 0;
    int placed;
    struct iovec v = {(void *)"GET / HTTP/1.1\r\n\r\n", 18};
    struct ldt__edit e = {16, 0, 3, "X\r\n"};
    fake_reset(0, 0);
    F.calls = 1; /* the very first call fails */
    errno = 0;
    cr_assert_eq(ldt__inject_sendv(pend, &po, &pl, &v, 1, &e, 1, fake_sendv, NULL, &placed), -1);
    cr_assert_eq(errno, EAGAIN);
    cr_assert_eq(placed, 0);
    cr_assert_eq(pl, 0);
}

Test(inject_core, only_injected_bytes_taken_calls_again, .init = setup)
{
    char pend[LDT__INJ_MAX] = "OWED";
    uint16_t po = 0, pl = 4;
    int placed;
    struct iovec v = {(void *)"abc", 3};
    fake_reset(2, 0); /* takes 2 owed bytes, then EAGAIN */
    ssize_t r = ldt__inject_sendv(pend, &po, &pl, &v, 1, NULL, 0, fake_sendv, NULL, &placed);
    cr_assert_eq(r, -1, "only our bytes went: the app must not see a count");
    cr_assert_eq(errno, EAGAIN);
    cr_assert_eq(pl, 2);
    cr_assert_eq(F.calls, 2, "it called again after taking only owed bytes");
}

/* ---- requests through the planner ------------------------------------------------------------ */

static const char GET1[] = "GET /a/b?q=1 HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";
static const char POST1[] = "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";
static const char PIPE2[] = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
static const char APPTP[] =
    "GET /sdk HTTP/1.1\r\nHost: h\r\n"
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
    "\r\n";

Test(inject_plan, get_every_split_every_k, .init = setup)
{
    run_all(GET1, 0, TP_NONE, NULL);
}

Test(inject_plan, post_with_body_every_split_every_k, .init = setup)
{
    run_all(POST1, 0, TP_NONE, NULL);
}

Test(inject_plan, pipelined_requests_each_get_their_own_line, .init = setup)
{
    run_all(PIPE2, 0, TP_NONE, NULL);
}

Test(inject_plan, writev_of_small_iovecs, .init = setup)
{
    run_all(GET1, 3, TP_NONE, NULL);
    run_all(POST1, 1, TP_NONE, NULL);
}

Test(inject_plan, app_traceparent_is_left_alone, .init = setup)
{
    run_all(APPTP, 0, TP_APP, NULL);
    struct ldt__conn *c = client_conn();
    fake_reset(SIZE_MAX, 0);
    app_write(c, APPTP, 0, strlen(APPTP), 0);
    struct ldt__span *s = &c->cli[c->cli_head];
    cr_assert(s->rec.flags & LDT_SPAN_F_APP_TP);
    char hex[16];
    ldt_hex_encode(s->rec.span_id, 8, hex);
    cr_assert(memcmp(hex, "00f067aa0ba902b7", 16) == 0, "the span takes the app's ids");
}

/* A server request carrying FWD_TP is being served: a client request forwarding it is a proxy's. */
#define FWD_TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
static const char FWDREQ[] = "GET /up HTTP/1.1\r\nHost: backend\r\ntraceparent: " FWD_TP "\r\n\r\n";

static struct ldt__conn *served;

/* Open a server span for an inbound request carrying tp (the previous one, if any, is closed first
 * so registry slots are not used up across the many runs). */
static void serve(const char *in)
{
    static struct ldt__fd se;
    if (served) {
        ldt__sniff_close(served, &se);
        ldt__conn_free(served);
        served = NULL;
    }
    memset(&se, 0, sizeof se);
    atomic_store(&se.kind, LDT__FD_SOCK);
    struct iovec v = {(void *)in, strlen(in)};
    ldt__sniff_io(-1, &se, LDT__IN, &v, 1, (ssize_t)v.iov_len, 0, 0);
    cr_assert_eq(se.cls, LDT__CLS_HTTP);
    cr_assert_eq(se.conn->srv_n, 1);
    served = se.conn;
}

static void serve_forwarded(void)
{
    serve("GET /front HTTP/1.1\r\nHost: proxy\r\ntraceparent: " FWD_TP "\r\n\r\n");
}

Test(inject_plan, forwarded_traceparent_gets_our_parent_id, .init = setup)
{
    run_all(FWDREQ, 0, TP_FORWARDED, serve_forwarded);
    serve_forwarded();
    struct ldt__conn *c = client_conn();
    fake_reset(SIZE_MAX, 0);
    app_write(c, FWDREQ, 0, strlen(FWDREQ), 0);
    struct ldt__span *s = &c->cli[c->cli_head];
    char hex[32];
    ldt_hex_encode(s->rec.trace_id, 16, hex);
    cr_assert(memcmp(hex, "0af7651916cd43dd8448eb211c80319c", 32) == 0);
    cr_assert(memcmp(s->rec.parent_id, served->srv[served->srv_head].rec.span_id, 8) == 0,
              "the parent is the served request");
    cr_assert(s->rec.flags & LDT_SPAN_F_REPLACED);
    cr_assert_not(s->rec.flags & LDT_SPAN_F_APP_TP);
}

Test(inject_plan, client_span_parent_is_the_served_request, .init = setup)
{
    serve_forwarded();
    struct ldt__conn *c = client_conn();
    fake_reset(SIZE_MAX, 0);
    app_write(c, GET1, 0, strlen(GET1), 0);
    struct ldt__span *s = &c->cli[c->cli_head];
    char line[128];
    snprintf(line, sizeof line, "traceparent: 00-0af7651916cd43dd8448eb211c80319c-");
    cr_assert(memmem(F.wire, F.n, line, strlen(line)) != NULL, "%.*s", (int)F.n, F.wire);
    cr_assert(memcmp(s->rec.trace_id, "\x0a\xf7\x65\x19", 4) == 0);
    cr_assert(s->rec.trace_flags & LDT_TC_FLAG_SAMPLED);
}

Test(inject_plan, unsampled_parent_propagates_flags_00, .init = setup)
{
    serve("GET / HTTP/1.1\r\ntraceparent: "
          "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00\r\n\r\n");
    struct ldt__conn *c = client_conn();
    fake_reset(SIZE_MAX, 0);
    app_write(c, GET1, 0, strlen(GET1), 0);
    cr_assert(memmem(F.wire, F.n, "-00\r\n", 5) != NULL, "%.*s", (int)F.n, F.wire);
    cr_assert_eq(c->cli[c->cli_head].sampled, 0);
}

Test(inject_plan, tracestate_of_the_parent_follows, .init = setup)
{
    serve("GET / HTTP/1.1\r\ntraceparent: " FWD_TP "\r\n"
          "tracestate: congo=t61rcWkgMzE , rojo=00f067aa0ba902b7\r\n\r\n");
    struct ldt__conn *c = client_conn();
    fake_reset(SIZE_MAX, 0);
    app_write(c, GET1, 0, strlen(GET1), 0);
    const char *want = "\r\ntracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\r\nHost: example";
    cr_assert(memmem(F.wire, F.n, want, strlen(want)) != NULL, "%.*s", (int)F.n, F.wire);
}

Test(inject_plan, header_block_split_goes_before_the_blank_line, .init = setup)
{
    struct ldt__conn *c = client_conn();
    fake_reset(SIZE_MAX, 0);
    size_t cut = strlen("GET /a/b?q=1 HTTP/1.1\r\nHost: exam");
    app_write(c, GET1, 0, cut, 0);
    cr_assert_eq(F.n, cut, "nothing of ours before the headers are seen whole");
    app_write(c, GET1, cut, strlen(GET1), 0);
    const char *want = "Accept: */*\r\ntraceparent: 00-";
    cr_assert(memmem(F.wire, F.n, want, strlen(want)) != NULL, "%.*s", (int)F.n, F.wire);
    cr_assert(memcmp(F.wire + F.n - 4, "\r\n\r\n", 4) == 0);
}

/* ---- the send path takes the planner's parse instead of parsing again ------------------------ */

/* Send each piece as one buffer through ldt__client_send (kernel takes all: the replay path) on
 * one conn, and through ldt__client_plan + ldt__client_sent (the feed path) on another: the
 * out-parsers and the client spans must end up the same. */
static void replay_matches_feed(const char *app, const size_t *cuts, int ncuts)
{
    struct ldt__conn *a = client_conn();
    struct ldt__conn *b = client_conn();
    size_t from = 0;
    for (int i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : strlen(app);
        struct iovec v = {(void *)(app + from), to - from};
        fake_reset(SIZE_MAX, 0);
        cr_assert_eq(ldt__client_send(a, &v, 1, fake_sendv, NULL), (ssize_t)(to - from));
        struct ldt__edit ed[LDT__EDITS_MAX];
        struct ldt__span *sp[LDT__EDITS_MAX];
        char rep[LDT__EDITS_MAX * 16];
        int ned = ldt__client_plan(b, &v, 1, ed, sp, rep);
        ldt__client_sent(b, ed, sp, ned, &v, 1, (ssize_t)(to - from));
        from = to;
        cr_assert_eq(a->out.state, b->out.state, "piece %d", i);
        cr_assert_eq(a->out.ev, b->out.ev);
        cr_assert_eq(a->out.messages, b->out.messages);
        cr_assert_eq(a->out.msg_bytes, b->out.msg_bytes);
        cr_assert_eq(a->out.remaining, b->out.remaining);
        cr_assert_eq(a->out_sent, b->out_sent);
        cr_assert_eq(a->cli_n, b->cli_n);
        cr_assert_eq(a->cli_out, b->cli_out);
        for (unsigned k = 0; k < a->cli_n; k++) {
            const struct ldt__span *x = &a->cli[(a->cli_head + k) % LDT__CLI_MAX];
            const struct ldt__span *y = &b->cli[(b->cli_head + k) % LDT__CLI_MAX];
            cr_assert_eq(x->rec.bytes_out, y->rec.bytes_out, "request %u", k);
            cr_assert_eq(x->started, y->started);
            cr_assert_eq(x->done_req, y->done_req);
            cr_assert_eq(x->rec.method, y->rec.method);
            cr_assert_eq(x->rec.path_len, y->rec.path_len);
            cr_assert_eq(memcmp(x->rec.path, y->rec.path, x->rec.path_len), 0);
            cr_assert_eq(x->rec.flags, y->rec.flags);
        }
    }
    cr_assert_gt(a->out.messages, 0, "the requests were parsed");
    ldt__conn_free(a);
    ldt__conn_free(b);
}

Test(inject_replay, whole_requests_one_write_each, .init = setup)
{
    const char *app = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /b?q=1 HTTP/1.1\r\nHost: y\r\n\r\n";
    size_t cuts[] = {28};
    replay_matches_feed(app, cuts, 1);
}

Test(inject_replay, pipelined_and_a_body_cut_in_the_middle, .init = setup)
{
    const char *app = "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
                      "GET /g HTTP/1.1\r\nHost: x\r\n\r\nGET /h HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t cuts[] = {50, 55, 60};
    replay_matches_feed(app, cuts, 3);
}
