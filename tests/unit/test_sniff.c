/* test_sniff.c - the recorded captures fed through the sniffer in both roles, with a fake record
 * sink.
 *
 * Server role: the request stream is what the app reads, the response stream what it writes. Client
 * role: the request goes through the injector (a fake writev taking everything), the response is
 * read back. Each is fed whole, in 1500- and 7-byte pieces, and byte by byte for small streams; the
 * spans produced must be the same: count, method, path, status, status code, parent links.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim/shim.h"

static struct ldt_span_rec recs[64];
static int nrecs;
static struct ldt_stack_rec stacks[16];
static int nstacks;

/* Spans and stack parts go to separate arrays; a stack part must come right before its span. */
static void sink(const void *rec, size_t len)
{
    cr_assert_eq(len, LDT_REC_SIZE);
    if (*(const uint8_t *)rec == LDT_REC_STACK) {
        if (nstacks < 16)
            memcpy(&stacks[nstacks++], rec, len);
        return;
    }
    if (nrecs < 64)
        memcpy(&recs[nrecs++], rec, len);
}

static void setup(void)
{
    memset(&ldt__cfg, 0, sizeof ldt__cfg);
    ldt__cfg.ratio = 1.0;
    ldt__span_sink = sink;
    nrecs = nstacks = 0;
    ldt_id_seed();
}

static char *load(const char *name, const char *ext, size_t *len)
{
    const char *root = getenv("LDT_SOURCE_ROOT");
    char path[512];
    snprintf(path, sizeof path, "%s/tests/data/captures/%s.%s.bin", root ? root : ".", name, ext);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*len + 1);
    cr_assert_eq(fread(b, 1, *len, f), *len);
    fclose(f);
    return b;
}

static ssize_t take_all(void *ctx, const struct iovec *iov, int cnt)
{
    (void)ctx;
    ssize_t t = 0;
    for (int i = 0; i < cnt; i++)
        t += (ssize_t)iov[i].iov_len;
    return t;
}

/* Move buf through the sniffer in pieces of `piece` bytes (0: whole). */
static void pass(int fd, struct ldt__fd *e, enum ldt__dir dir, const char *buf, size_t len,
                 size_t piece)
{
    size_t off = 0;
    while (off < len) {
        size_t l = piece && len - off > piece ? piece : len - off;
        struct iovec v = {(void *)(buf + off), l};
        if (dir == LDT__OUT && ldt__sniff_wants_inject(fd, e, &v, 1)) {
            struct ldt__conn *c = ldt__conn_hold(e); /* what the send hooks do */
            cr_assert_not_null(c);
            ssize_t r = ldt__client_send(c, &v, 1, take_all, NULL);
            cr_assert_eq(r, (ssize_t)l);
            ldt__sniff_io(fd, e, dir, NULL, 0, r, 0, 1);
            ldt__conn_unhold(e, c);
        } else {
            ldt__sniff_io(fd, e, dir, &v, 1, (ssize_t)l, 0, 1);
        }
        off += l;
    }
}

/* What closing the fd does to its entry (fdtab.c entry_clear): end what is open, free the conn. */
static void close_entry(struct ldt__fd *e)
{
    struct ldt__conn *c = ldt__conn_of(e);
    if (!c)
        return;
    atomic_store(&e->conn, NULL);
    ldt__conn_unlock(c);
    ldt__sniff_close(c, e);
    ldt__conn_free(c);
}

struct cap {
    const char *name;
    int nspans;
    uint16_t status[2];
    const char *path0;
    uint8_t method0;
};

static struct cap caps[] = {
    {"curl-to-nginx-conn1", 2, {200, 200}, "/via-nginx/1", LDT_HTTP_M_GET},
    {"curl-to-node-conn1", 2, {200, 200}, "/keepalive/a", LDT_HTTP_M_GET},
    {"curl-to-node-conn2", 1, {200}, "/upload-expect-100", LDT_HTTP_M_POST},
    {"curl-to-node-conn3", 1, {200}, "/head", LDT_HTTP_M_HEAD},
    {"curl-to-node-conn4", 1, {200}, "/chunked", LDT_HTTP_M_GET},
    {"curl-to-node-conn5", 1, {304}, "/notmod", LDT_HTTP_M_GET},
    {"curl-to-node-conn6", 1, {503}, "/err", LDT_HTTP_M_GET},
    {"curl-to-node-conn7", 1, {200}, "/chunked-upload", LDT_HTTP_M_POST},
    {"curl-to-python-httpserver-conn1", 1, {200}, "/text.txt", LDT_HTTP_M_GET},
    {"nginx-upstream-to-node-conn1", 2, {200, 200}, "/via-nginx/1", LDT_HTTP_M_GET},
    {"nodeclient-to-node-conn1", 2, {200, 200}, "/node-ka-1", LDT_HTTP_M_GET},
    {"urllib-to-node-conn1", 1, {200}, "/urllib-get", LDT_HTTP_M_GET},
    {"urllib-to-node-conn2", 1, {200}, "/urllib-post", LDT_HTTP_M_POST},
    {"wget-to-node-conn1", 1, {200}, "/wget", LDT_HTTP_M_GET},
};

static void check(const struct cap *c, enum ldt_span_kind kind, size_t piece)
{
    cr_assert_eq(nrecs, c->nspans, "%s piece %zu: %d spans", c->name, piece, nrecs);
    for (int i = 0; i < nrecs; i++) {
        struct ldt_span_rec *r = &recs[i];
        cr_assert_eq(r->kind, kind);
        cr_assert_eq(r->status_code, c->status[i], "%s span %d: %u", c->name, i, r->status_code);
        cr_assert_eq(r->status,
                     c->status[i] >= (kind == LDT_SPAN_SERVER ? 500 : 400) ? LDT_STATUS_ERROR
                                                                           : LDT_STATUS_UNSET,
                     "%s", c->name);
        cr_assert_not(r->flags & LDT_SPAN_F_CONN_DIED, "%s", c->name);
        cr_assert_gt(r->bytes_in, 0);
        cr_assert_gt(r->bytes_out, 0);
    }
    cr_assert_eq(recs[0].method, c->method0);
    cr_assert_eq(recs[0].path_len, strlen(c->path0));
    cr_assert(memcmp(recs[0].path, c->path0, recs[0].path_len) == 0, "%s", c->name);
}

/* A server reads all requests then writes all responses (pipelining), then closes. */
static void run_server(const struct cap *c, size_t piece)
{
    size_t ql, sl;
    char *q = load(c->name, "request", &ql), *s = load(c->name, "response", &sl);
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    nrecs = 0;
    pass(-1, &e, LDT__IN, q, ql, piece);
    cr_assert_eq(e.cls, LDT__CLS_HTTP);
    pass(-1, &e, LDT__OUT, s, sl, piece);
    close_entry(&e);
    check(c, LDT_SPAN_SERVER, piece);
    free(q);
    free(s);
}

/* A client writes all requests then reads the responses, EOF, close. */
static void run_client(const struct cap *c, size_t piece)
{
    size_t ql, sl;
    char *q = load(c->name, "request", &ql), *s = load(c->name, "response", &sl);
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    nrecs = 0;
    pass(-1, &e, LDT__OUT, q, ql, piece);
    cr_assert_eq(e.cls, LDT__CLS_HTTP);
    pass(-1, &e, LDT__IN, s, sl, piece);
    char dummy[1];
    struct iovec v = {dummy, 1};
    ldt__sniff_io(-1, &e, LDT__IN, &v, 1, 0, 0, 1); /* EOF */
    close_entry(&e);
    check(c, LDT_SPAN_CLIENT, piece);
    free(q);
    free(s);
}

/* Parameters are indexes into caps[]: Criterion copies parameters into each worker process, so
 * they must not hold pointers. */
static int cap_idx[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};

ParameterizedTestParameters(sniff_capture, server_role)
{
    return cr_make_param_array(int, cap_idx, sizeof cap_idx / sizeof cap_idx[0]);
}

ParameterizedTest(int *i, sniff_capture, server_role, .init = setup)
{
    const struct cap *c = &caps[*i];
    size_t pieces[] = {0, 1500, 7, 1};
    for (size_t k = 0; k < 4; k++)
        if (pieces[k] != 1 || strstr(c->name, "conn2") == NULL)
            run_server(c, pieces[k]);
}

ParameterizedTestParameters(sniff_capture, client_role)
{
    return cr_make_param_array(int, cap_idx, sizeof cap_idx / sizeof cap_idx[0]);
}

ParameterizedTest(int *i, sniff_capture, client_role, .init = setup)
{
    const struct cap *c = &caps[*i];
    size_t pieces[] = {0, 1500, 7, 1};
    for (size_t k = 0; k < 4; k++)
        if (pieces[k] != 1 || strstr(c->name, "conn2") == NULL)
            run_client(c, pieces[k]);
}

Test(sniff_capture, incoming_traceparent_is_the_server_parent, .init = setup)
{
    run_server(&caps[6], 0); /* conn6 carries traceparent and tracestate */
    struct ldt_span_rec *r = &recs[0];
    cr_assert(r->flags & LDT_SPAN_F_PARENT_REMOTE);
    cr_assert_eq(r->status, LDT_STATUS_ERROR, "503 is an error on a server span");
    char hex[33];
    ldt_hex_encode(r->parent_id, 8, hex);
    hex[16] = 0;
    size_t ql;
    char *q = load("curl-to-node-conn6", "request", &ql);
    cr_assert(strstr(q, hex) != NULL, "parent id %s from the request's traceparent", hex);
    free(q);
    /* The 5xx was written: the writer's stack (here the test runner's frames) comes with it. */
    cr_assert(r->flags & LDT_SPAN_F_STACK);
    cr_assert_gt(nstacks, 0);
    cr_assert_eq(stacks[0].part, 0);
    cr_assert_eq(stacks[0].nparts, nstacks);
    cr_assert(memcmp(stacks[0].span_id, r->span_id, 8) == 0);
    cr_assert_gt(stacks[0].len, 0);
}

Test(sniff_capture, app_traceparent_client_keeps_its_ids, .init = setup)
{
    run_client(&caps[6], 0);
    cr_assert(recs[0].flags & LDT_SPAN_F_APP_TP);
    cr_assert_not(recs[0].flags & LDT_SPAN_F_INJECTED);
}

/* A proxy: it serves curl's request and, on the same thread, makes the upstream request. */
Test(sniff_link, client_span_is_child_of_the_served_request, .init = setup)
{
    size_t ql, sl, uql, usl;
    char *q = load("curl-to-nginx-conn1", "request", &ql);
    char *s = load("curl-to-nginx-conn1", "response", &sl);
    char *uq = load("nginx-upstream-to-node-conn1", "request", &uql);
    char *us = load("nginx-upstream-to-node-conn1", "response", &usl);
    struct ldt__fd se, ce;
    memset(&se, 0, sizeof se);
    memset(&ce, 0, sizeof ce);
    atomic_store(&se.kind, LDT__FD_SOCK);
    atomic_store(&ce.kind, LDT__FD_SOCK);
    pass(-1, &se, LDT__IN, q, ql, 0);
    pass(-1, &ce, LDT__OUT, uq, uql, 0);
    pass(-1, &ce, LDT__IN, us, usl, 0);
    pass(-1, &se, LDT__OUT, s, sl, 0);
    cr_assert_eq(nrecs, 4, "%d", nrecs);
    struct ldt_span_rec *c1 = &recs[0], *c2 = &recs[1], *s1 = &recs[2], *s2 = &recs[3];
    cr_assert_eq(c1->kind, LDT_SPAN_CLIENT);
    cr_assert_eq(s1->kind, LDT_SPAN_SERVER);
    /* The upstream requests are made while both inbound requests are open; the innermost (most
     * recent) is the second one. */
    cr_assert(memcmp(c1->trace_id, s2->trace_id, 16) == 0);
    cr_assert(memcmp(c1->parent_id, s2->span_id, 8) == 0);
    cr_assert(memcmp(c2->parent_id, s2->span_id, 8) == 0);
    cr_assert(c1->flags & LDT_SPAN_F_INJECTED);
    (void)s1;
    free(q);
    free(s);
    free(uq);
    free(us);
}

Test(sniff_pass, non_http_is_passed_through_with_counts, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__OUT, "\x16\x03\x01\x02\x00", 5, 0); /* a TLS ClientHello */
    cr_assert_eq(e.cls, LDT__CLS_PASS);
    cr_assert_null(e.conn);
    cr_assert_eq(e.calls, 1);
    pass(-1, &e, LDT__IN, "abc", 3, 0);
    cr_assert_eq(e.calls, 2);
    cr_assert_eq(nrecs, 0);
}

Test(sniff_pass, invalid_http_later_goes_pass_through_without_spans, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    const char bad[] = "GET / HTTP/1.1\r\nBad Header\x01\r\n\r\n";
    pass(-1, &e, LDT__IN, bad, sizeof bad - 1, 0);
    cr_assert(e.conn == NULL || e.conn->dead);
    pass(-1, &e, LDT__OUT, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38, 0);
    cr_assert_eq(nrecs, 0);
}

Test(sniff_close, response_cut_short_is_an_error, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__IN, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 28, 0);
    pass(-1, &e, LDT__OUT, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 42, 0);
    close_entry(&e);
    cr_assert_eq(nrecs, 1);
    cr_assert(recs[0].flags & LDT_SPAN_F_CONN_DIED);
    cr_assert_eq(recs[0].status, LDT_STATUS_ERROR);
}

Test(sniff_close, client_eof_mid_response_is_an_error, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__OUT, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 28, 0);
    pass(-1, &e, LDT__IN, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 42, 0);
    char d[1];
    struct iovec v = {d, 1};
    ldt__sniff_io(-1, &e, LDT__IN, &v, 1, 0, 0, 1);
    cr_assert_eq(nrecs, 1);
    cr_assert_eq(recs[0].status, LDT_STATUS_ERROR);
    cr_assert(recs[0].flags & LDT_SPAN_F_CONN_DIED);
}

Test(sniff_close, reset_ends_client_span_with_errno, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__OUT, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 28, 0);
    char d[16];
    struct iovec v = {d, sizeof d};
    ldt__sniff_io(-1, &e, LDT__IN, &v, 1, -1, ECONNRESET, 1);
    cr_assert_eq(nrecs, 1);
    cr_assert_eq(recs[0].err, ECONNRESET);
    cr_assert_eq(recs[0].status, LDT_STATUS_ERROR);
}

Test(sniff_close, closing_a_socket_shared_by_fork_without_io_since_reports_nothing, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__IN, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 28, 0);
    atomic_fetch_add(&ldt__fork_epoch, 1); /* what the atfork handlers do, on both sides */
    close_entry(&e);
    cr_assert_eq(nrecs, 0);
}

Test(sniff_close, the_side_of_a_fork_that_serves_the_request_reports_it, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__IN, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 28, 0);
    atomic_fetch_add(&ldt__fork_epoch, 1);
    pass(-1, &e, LDT__OUT, "HTTP/1.0 200 OK\r\n\r\nbody", 23, 0); /* ends with the close */
    close_entry(&e);
    cr_assert_eq(nrecs, 1);
    cr_assert_eq(recs[0].status_code, 200);
    cr_assert_not(recs[0].flags & LDT_SPAN_F_CONN_DIED);
}

Test(sniff_io, syscall_spans_are_children_of_the_request, .init = setup)
{
    ldt__cfg.syscall_spans = 1;
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__IN, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 28, 0);
    pass(-1, &e, LDT__OUT, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38, 0);
    cr_assert_eq(nrecs, 3, "%d", nrecs);
    cr_assert_eq(recs[0].op, LDT_OP_RECV);
    cr_assert_eq(recs[1].op, LDT_OP_SEND);
    cr_assert_eq(recs[2].kind, LDT_SPAN_SERVER);
    cr_assert(memcmp(recs[0].parent_id, recs[2].span_id, 8) == 0);
    cr_assert(memcmp(recs[1].parent_id, recs[2].span_id, 8) == 0);
    cr_assert_eq(recs[2].io_calls, 2);
}

/* HEAD pipelined behind a GET: the GET's response has a body, the HEAD's has none, in both roles. */
static const char PIPE_REQ[] = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
                               "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
static const char PIPE_RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
                                "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"
                                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";

Test(sniff_pipeline, head_behind_get_server_role, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__IN, PIPE_REQ, strlen(PIPE_REQ), 0);
    pass(-1, &e, LDT__OUT, PIPE_RESP, strlen(PIPE_RESP), 0);
    cr_assert_eq(nrecs, 3, "%d", nrecs);
    cr_assert_eq(recs[0].status_code, 200);
    cr_assert_eq(recs[1].method, LDT_HTTP_M_HEAD);
    cr_assert_eq(recs[2].status_code, 404);
    cr_assert_eq(recs[2].path[1], 'c');
}

Test(sniff_pipeline, head_behind_get_client_role, .init = setup)
{
    struct ldt__fd e;
    memset(&e, 0, sizeof e);
    atomic_store(&e.kind, LDT__FD_SOCK);
    pass(-1, &e, LDT__OUT, PIPE_REQ, strlen(PIPE_REQ), 0);
    pass(-1, &e, LDT__IN, PIPE_RESP, strlen(PIPE_RESP), 0);
    cr_assert_eq(nrecs, 3, "%d", nrecs);
    cr_assert_eq(recs[1].method, LDT_HTTP_M_HEAD);
    cr_assert_eq(recs[1].status_code, 200);
    cr_assert_eq(recs[2].status_code, 404);
    cr_assert_eq(recs[2].status, LDT_STATUS_ERROR);
}
