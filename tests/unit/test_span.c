/* test_span.c - span rules: sampling decisions, parent choice, ERROR rules, path and query. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "shim/shim.h"

static struct ldt_span_rec recs[32];
static int nrecs;

static void sink(const void *rec, size_t len)
{
    if (nrecs < 32)
        memcpy(&recs[nrecs++], rec, len);
}

static void setup(void)
{
    memset(&ldt__cfg, 0, sizeof ldt__cfg);
    ldt__cfg.sampler = LDT_SAMPLER_PARENT_RATIO;
    ldt__cfg.ratio = 1.0;
    ldt__cfg.ratio_bound = UINT64_C(1) << 56;
    ldt__span_sink = sink;
    nrecs = 0;
    ldt_id_seed();
}

/* ---- sampling ---- */

struct samp {
    int sampler;
    double ratio;
    int parent;  /* -1 none, 0 unsampled parent, 1 sampled parent */
    uint8_t low; /* the trace id's byte 9 (top of the low 56 bits) */
    int want;
};

static struct samp samps[] = {
    {LDT_SAMPLER_PARENT_RATIO, 1.0, -1, 0xff, 1}, {LDT_SAMPLER_PARENT_RATIO, 0.0, -1, 0x00, 0},
    {LDT_SAMPLER_PARENT_RATIO, 0.5, -1, 0x10, 1}, {LDT_SAMPLER_PARENT_RATIO, 0.5, -1, 0xf0, 0},
    {LDT_SAMPLER_PARENT_RATIO, 0.0, 1, 0xf0, 1}, /* a sampled parent wins over the ratio */
    {LDT_SAMPLER_PARENT_RATIO, 1.0, 0, 0x00, 0}, /* an unsampled parent is honoured */
    {LDT_SAMPLER_ALWAYS_ON, 0.0, 0, 0xff, 1},     {LDT_SAMPLER_ALWAYS_OFF, 1.0, 1, 0x00, 0},
    {LDT_SAMPLER_RATIO, 0.5, 1, 0xf0, 0}, /* traceidratio ignores the parent */
    {LDT_SAMPLER_RATIO, 0.5, 0, 0x10, 1},         {LDT_SAMPLER_PARENT_OFF, 1.0, -1, 0x00, 0},
    {LDT_SAMPLER_PARENT_OFF, 1.0, 1, 0x00, 1},
};

ParameterizedTestParameters(span_sampling, decision_table)
{
    return cr_make_param_array(struct samp, samps, sizeof samps / sizeof samps[0]);
}

ParameterizedTest(struct samp *s, span_sampling, decision_table, .init = setup)
{
    ldt__cfg.sampler = (enum ldt_sampler)s->sampler;
    ldt__cfg.ratio = s->ratio;
    ldt__cfg.ratio_bound = (uint64_t)(s->ratio * (double)(UINT64_C(1) << 56));
    uint8_t id[16] = {0};
    id[0] = 1;
    id[9] = s->low;
    struct ldt__ctx p;
    memset(&p, 0, sizeof p);
    p.valid = s->parent >= 0;
    p.flags = s->parent == 1 ? LDT_TC_FLAG_SAMPLED : 0;
    cr_assert_eq(ldt__sample(s->parent >= 0 ? &p : NULL, id), s->want,
                 "sampler %d ratio %f parent %d", s->sampler, s->ratio, s->parent);
}

Test(span_sampling, unsampled_request_writes_no_span_but_propagates, .init = setup)
{
    ldt__cfg.ratio = 0.0;
    ldt__cfg.ratio_bound = 0;
    struct ldt__span s;
    ldt__span_begin(&s, LDT_SPAN_SERVER, NULL);
    cr_assert_eq(s.sampled, 0);
    cr_assert_eq(s.rec.trace_flags & LDT_TC_FLAG_SAMPLED, 0);
    ldt__span_end(&s, NULL);
    cr_assert_eq(nrecs, 0);
}

/* ---- server spans from inbound requests ---- */

static struct ldt__fd fdes[8];
static int nfde;

static struct ldt__conn *serve(const char *req)
{
    struct ldt__fd *e = &fdes[nfde++];
    memset(e, 0, sizeof *e);
    atomic_store(&e->kind, LDT__FD_SOCK);
    struct iovec v = {(void *)req, strlen(req)};
    ldt__sniff_io(-1, e, LDT__IN, &v, 1, (ssize_t)v.iov_len, 0, 1);
    cr_assert_eq(e->cls, LDT__CLS_HTTP);
    return e->conn;
}

static void respond(struct ldt__conn *c, const char *resp)
{
    for (int i = 0; i < nfde; i++) {
        if (fdes[i].conn == c) {
            struct iovec v = {(void *)resp, strlen(resp)};
            ldt__sniff_io(-1, &fdes[i], LDT__OUT, &v, 1, (ssize_t)v.iov_len, 0, 1);
        }
    }
}

#define TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

Test(span_parent, valid_traceparent_is_the_parent, .init = setup)
{
    struct ldt__conn *c = serve("GET / HTTP/1.1\r\ntraceparent: " TP "\r\n\r\n");
    respond(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(nrecs, 1);
    cr_assert(recs[0].flags & LDT_SPAN_F_PARENT_REMOTE);
    cr_assert_eq(recs[0].parent_id[0], 0xb7);
    cr_assert_eq(recs[0].trace_id[0], 0x0a);
    cr_assert_eq(recs[0].status, LDT_STATUS_UNSET);
}

Test(span_parent, invalid_traceparent_makes_a_new_root, .init = setup)
{
    struct ldt__conn *c =
        serve("GET / HTTP/1.1\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-"
              "0000000000000000-01\r\ntracestate: a=b\r\n\r\n");
    cr_assert_eq(c->srv[c->srv_head].reg >= 0, 1);
    struct ldt__ctx cur;
    cr_assert(ldt__ctx_current(&cur));
    cr_assert_eq(cur.ts_len, 0, "tracestate dropped with an invalid traceparent");
    respond(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(nrecs, 1);
    cr_assert_not(recs[0].flags & LDT_SPAN_F_PARENT_REMOTE);
    static const uint8_t zero[8];
    cr_assert(memcmp(recs[0].parent_id, zero, 8) == 0);
    cr_assert_neq(recs[0].trace_id[0] == 0x0a && recs[0].trace_id[1] == 0xf7, 1);
}

Test(span_parent, invalid_tracestate_is_dropped, .init = setup)
{
    serve("GET / HTTP/1.1\r\ntraceparent: " TP "\r\ntracestate: BAD KEY=1\r\n\r\n");
    struct ldt__ctx cur;
    cr_assert(ldt__ctx_current(&cur));
    cr_assert_eq(cur.ts_len, 0);
}

Test(span_parent, innermost_open_server_span_is_current, .init = setup)
{
    struct ldt__conn *a = serve("GET /a HTTP/1.1\r\n\r\n");
    struct ldt__conn *b = serve("GET /b HTTP/1.1\r\n\r\n");
    struct ldt__ctx cur;
    cr_assert(ldt__ctx_current(&cur));
    cr_assert(memcmp(cur.span_id, b->srv[b->srv_head].rec.span_id, 8) == 0);
    respond(b, "HTTP/1.1 204 No Content\r\n\r\n");
    cr_assert(ldt__ctx_current(&cur), "b ended: a is current again");
    cr_assert(memcmp(cur.span_id, a->srv[a->srv_head].rec.span_id, 8) == 0);
    respond(a, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_not(ldt__ctx_current(&cur), "nothing open");
}

static void *other_thread(void *arg)
{
    struct ldt__ctx cur;
    (void)arg;
    return (void *)(intptr_t)ldt__ctx_current(&cur);
}

Test(span_parent, another_thread_sees_the_only_open_request, .init = setup)
{
    struct ldt__conn *a = serve("GET /a HTTP/1.1\r\n\r\n");
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, &r);
    cr_assert_not_null(r, "one request open in the process: it is the parent anywhere");
    serve("GET /b HTTP/1.1\r\n\r\n");
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, &r);
    cr_assert_null(r, "two open: another thread cannot tell which");
    respond(a, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, &r);
    cr_assert_not_null(r);
}

/* ---- status rules ---- */

struct st {
    int kind;
    uint16_t code;
    int err;
    uint16_t flags;
    int started;
    int want;
};

static struct st sts[] = {
    {LDT_SPAN_SERVER, 200, 0, 0, 1, LDT_STATUS_UNSET},
    {LDT_SPAN_SERVER, 404, 0, 0, 1, LDT_STATUS_UNSET}, /* 4xx is the client's fault */
    {LDT_SPAN_SERVER, 500, 0, 0, 1, LDT_STATUS_ERROR},
    {LDT_SPAN_SERVER, 503, 0, 0, 1, LDT_STATUS_ERROR},
    {LDT_SPAN_SERVER, 200, 0, LDT_SPAN_F_CONN_DIED, 1, LDT_STATUS_ERROR},
    {LDT_SPAN_SERVER, 0, 0, LDT_SPAN_F_CONN_DIED, 0, LDT_STATUS_UNSET},
    {LDT_SPAN_CLIENT, 200, 0, 0, 1, LDT_STATUS_UNSET},
    {LDT_SPAN_CLIENT, 404, 0, 0, 1, LDT_STATUS_ERROR},
    {LDT_SPAN_CLIENT, 502, 0, 0, 1, LDT_STATUS_ERROR},
    {LDT_SPAN_CLIENT, 0, ECONNRESET, 0, 1, LDT_STATUS_ERROR},
    {LDT_SPAN_CLIENT, 0, 0, LDT_SPAN_F_CONN_DIED, 1, LDT_STATUS_ERROR},
    {LDT_SPAN_INTERNAL, 0, ECONNREFUSED, 0, 0, LDT_STATUS_ERROR},
    {LDT_SPAN_INTERNAL, 0, 0, 0, 0, LDT_STATUS_UNSET},
};

ParameterizedTestParameters(span_status, error_rules)
{
    return cr_make_param_array(struct st, sts, sizeof sts / sizeof sts[0]);
}

ParameterizedTest(struct st *t, span_status, error_rules, .init = setup)
{
    struct ldt__span s;
    ldt__span_begin(&s, (enum ldt_span_kind)t->kind, NULL);
    s.rec.status_code = t->code;
    s.rec.err = t->err;
    s.rec.flags = t->flags;
    s.started = (uint8_t)t->started;
    ldt__span_end(&s, NULL);
    cr_assert_eq(nrecs, 1);
    cr_assert_eq(recs[0].status, t->want, "kind %d code %u err %d", t->kind, t->code, t->err);
}

/* ---- path rules ---- */

Test(span_path, query_is_dropped_by_default, .init = setup)
{
    struct ldt__conn *c = serve("GET /search?q=secret&x=1 HTTP/1.1\r\n\r\n");
    respond(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(recs[0].path_len, 7);
    cr_assert(memcmp(recs[0].path, "/search", 7) == 0);
    cr_assert_not(recs[0].flags & LDT_SPAN_F_QUERY);
}

Test(span_path, query_is_kept_when_asked, .init = setup)
{
    ldt__cfg.capture_query = 1;
    struct ldt__conn *c = serve("GET /search?q=1 HTTP/1.1\r\n\r\n");
    respond(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(recs[0].path_len, 11);
    cr_assert(recs[0].flags & LDT_SPAN_F_QUERY);
}

Test(span_path, long_path_is_truncated_and_flagged, .init = setup)
{
    char req[512];
    char path[201];
    memset(path, 'a', 200);
    path[0] = '/';
    path[200] = 0;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\n\r\n", path);
    struct ldt__conn *c = serve(req);
    respond(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(recs[0].path_len, LDT_SPAN_PATH_MAX);
    cr_assert(recs[0].flags & LDT_SPAN_F_PATH_TRUNC);
}

Test(span_path, http10_and_method_are_recorded, .init = setup)
{
    struct ldt__conn *c = serve("DELETE /x HTTP/1.0\r\n\r\n");
    respond(c, "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    cr_assert_eq(recs[0].method, LDT_HTTP_M_DELETE);
    cr_assert(recs[0].flags & LDT_SPAN_F_HTTP10);
}

Test(span_internal, child_of_the_current_request, .init = setup)
{
    serve("GET /a HTTP/1.1\r\n\r\n");
    struct ldt__ctx cur;
    cr_assert(ldt__ctx_current(&cur));
    ldt__span_internal(&cur, LDT_OP_DNS, 1, 2, 0, "db.example", 10);
    cr_assert_eq(nrecs, 1);
    cr_assert_eq(recs[0].kind, LDT_SPAN_INTERNAL);
    cr_assert_eq(recs[0].op, LDT_OP_DNS);
    cr_assert(memcmp(recs[0].parent_id, cur.span_id, 8) == 0);
    cr_assert(memcmp(recs[0].trace_id, cur.trace_id, 16) == 0);
    cr_assert_eq(recs[0].host_len, 10);
}

/* ---- event loops: the rule at the top of span.c ---- */

/* A client span begun on conn cc, with its request line parsed from req. */
static void client_for(struct ldt__span *s, struct ldt__conn *cc, const char *req)
{
    struct ldt_http_parser p;
    ldt_http_init(&p, LDT_HTTP_REQUEST);
    ldt__span_client_begin(s, cc);
    ssize_t r = ldt_http_feed(&p, req, strlen(req));
    cr_assert(r > 0 && p.ev == LDT_HTTP_EV_HEADERS, "request did not parse");
    ldt__span_client_headers(s, cc, &p.msg);
}

static const struct ldt_span_rec *srv_rec(struct ldt__conn *c)
{
    return &c->srv[c->srv_head].rec;
}

Test(span_eventloop, newest_request_is_current_until_another_connection_is_read, .init = setup)
{
    struct ldt__conn *a = serve("GET /a HTTP/1.1\r\n\r\n");
    struct ldt__conn *b = serve("GET /b HTTP/1.1\r\n\r\n");
    struct ldt__ctx cur;
    cr_assert(ldt__ctx_current(&cur), "b was just read: its handler is running");
    cr_assert(memcmp(cur.span_id, srv_rec(b)->span_id, 8) == 0);
    ldt__ctx_note_read(b);
    cr_assert(ldt__ctx_current(&cur), "more bytes of b itself change nothing");
    ldt__ctx_note_read(a);
    cr_assert_not(ldt__ctx_current(&cur), "two open and another connection read since: no guess");
}

Test(span_eventloop, ambiguous_client_takes_the_one_open_request_with_its_path, .init = setup)
{
    struct ldt__conn *a = serve("GET /acc/0/1 HTTP/1.1\r\n\r\n");
    serve("GET /acc/0/2 HTTP/1.1\r\n\r\n");
    ldt__ctx_note_read(a);
    struct ldt__conn cc;
    memset(&cc, 0, sizeof cc);
    struct ldt__span s;
    client_for(&s, &cc, "GET /acc/0/1 HTTP/1.1\r\nHost: up\r\n\r\n");
    cr_assert(memcmp(s.rec.parent_id, srv_rec(a)->span_id, 8) == 0, "not the request of its path");
    cr_assert(memcmp(s.rec.trace_id, srv_rec(a)->trace_id, 16) == 0);
    char hex[33];
    ldt_hex_encode(srv_rec(a)->trace_id, 16, hex);
    char blk[LDT__INJ_MAX];
    size_t n = ldt__span_block(&s, cc.wts, cc.wts_len, blk);
    cr_assert(memmem(blk, n, hex, 32), "the injected line is not in a's trace");
}

Test(span_eventloop, two_open_requests_with_the_same_path_give_no_parent, .init = setup)
{
    struct ldt__conn *a = serve("GET /same HTTP/1.1\r\n\r\n");
    struct ldt__conn *b = serve("GET /same HTTP/1.1\r\n\r\n");
    ldt__ctx_note_read(a);
    struct ldt__conn cc;
    memset(&cc, 0, sizeof cc);
    struct ldt__span s;
    client_for(&s, &cc, "GET /same HTTP/1.1\r\nHost: up\r\n\r\n");
    static const uint8_t zero[8];
    cr_assert(memcmp(s.rec.parent_id, zero, 8) == 0, "a guess between two requests");
    cr_assert(memcmp(s.rec.trace_id, srv_rec(a)->trace_id, 16) != 0);
    cr_assert(memcmp(s.rec.trace_id, srv_rec(b)->trace_id, 16) != 0);
}

Test(span_eventloop, socket_connected_for_a_request_carries_its_first_call, .init = setup)
{
    struct ldt__conn *a = serve("GET /a HTTP/1.1\r\n\r\n");
    struct ldt__conn cc;
    memset(&cc, 0, sizeof cc);
    ldt__ctx_bind(&cc);
    cr_assert(cc.bound, "connected in a's handler");
    serve("GET /b HTTP/1.1\r\n\r\n"); /* the connect completes after b was read */
    struct ldt__span s;
    client_for(&s, &cc, "GET /other HTTP/1.1\r\nHost: up\r\n\r\n");
    cr_assert(memcmp(s.rec.parent_id, srv_rec(a)->span_id, 8) == 0, "not the connecting request");
    cr_assert_not(cc.bound, "only the first request on the socket");
}

/* ---- end times ---- */

Test(span_timing, server_span_ends_when_the_completing_write_was_entered, .init = setup)
{
    struct ldt__conn *c = serve("GET /t HTTP/1.1\r\n\r\n");
    uint64_t start = c->srv[c->srv_head].start_mono;
    ldt__io_start = start + 1000;   /* the app entered its write */
    ldt__io_end = start + 16000000; /* ... and got it back 16 ms later (preempted) */
    respond(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    ldt__io_start = 0;
    cr_assert_eq(nrecs, 1);
    cr_assert_eq(recs[0].dur_ns, 1000, "ended at %llu, not when the write was entered",
                 (unsigned long long)recs[0].dur_ns);
}

Test(span_timing, client_span_ends_when_the_last_read_returned, .init = setup)
{
    struct ldt__span s;
    ldt__span_begin(&s, LDT_SPAN_CLIENT, NULL);
    ldt__io_start = s.start_mono + 1000;
    ldt__io_end = s.start_mono + 7000;
    ldt__span_end(&s, NULL);
    ldt__io_start = ldt__io_end = 0;
    cr_assert_eq(nrecs, 1);
    cr_assert_eq(recs[0].dur_ns, 7000);
}

Test(span_timing, wall_clock_start_follows_the_monotonic_one, .init = setup)
{
    uint64_t m = ldt_clock_mono_ns(), w = ldt_clock_wall_ns();
    uint64_t d = ldt__wall_of(m) > w ? ldt__wall_of(m) - w : w - ldt__wall_of(m);
    cr_assert_lt(d, 5000000, "wall from mono is %llu ns off", (unsigned long long)d);
    cr_assert_eq(ldt__wall_of(m + 12345) - ldt__wall_of(m), 12345);
}

/* ---- error stacks ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A capture runs inside the app's write on the error path: it must stay cheap (was ~0.5 ms with
 * unw_get_proc_name per frame; now unw_backtrace and cached module ranges, ~10 us). */
Test(span_stack, capture_is_module_offset_text_and_cheap, .init = setup)
{
    char buf[LDT_STACK_TEXT_MAX * LDT_STACK_MAX_PARTS];
    uint64_t t[21];
    size_t n = 0;
    for (int i = 0; i < 21; i++) {
        uint64_t t0 = ldt_clock_mono_ns();
        n = ldt__stack_text(buf, sizeof buf);
        t[i] = ldt_clock_mono_ns() - t0;
    }
    qsort(t, 21, sizeof t[0], cmp_u64);
    cr_assert_gt(n, 0, "no frame captured");
    cr_assert(memmem(buf, n, "+0x", 3) && buf[n - 1] == '\n', "not module+offset lines: %.*s",
              (int)n, buf);
    cr_assert_lt(t[10], 200000, "median capture %llu ns", (unsigned long long)t[10]);
}
