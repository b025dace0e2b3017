/* test_http.c - unit tests of the HTTP/1.x sniffer: rules table, real captures, every split. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ldtrace/http.h"

#define TP1 "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

/* ---- guard page: every input is fed from right before an unreadable page ---- */

#define GUARD_MAX (4u << 20) /* the largest piece ever fed (the 2 MB capture fits) */

static char *guard_map;
static size_t guard_page;

/* .init fixture: a readable area of GUARD_MAX bytes followed by a PROT_NONE page. */
static void guard_init(void)
{
    guard_page = (size_t)sysconf(_SC_PAGESIZE);
    guard_map = mmap(NULL, GUARD_MAX + guard_page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(guard_map, MAP_FAILED);
    cr_assert_eq(mprotect(guard_map + GUARD_MAX, guard_page, PROT_NONE), 0);
}

static void guard_fini(void)
{
    munmap(guard_map, GUARD_MAX + guard_page);
}

/* Copy s[n] so that it ends exactly at the unreadable page: any read past n faults. */
static const char *guarded(const char *s, size_t n)
{
    cr_assert_leq(n, GUARD_MAX);
    char *dst = guard_map + GUARD_MAX - n;
    memmove(dst, s, n);
    return dst;
}

/* ---- the driver: feeds a stream and writes what the parser reported as one line of text ---- */

struct drv {
    struct ldt_http_parser p;
    const char *methods; /* response side: the request method per final response, 'H' HEAD,
                          * 'C' CONNECT, anything else GET */
    size_t next;         /* index into methods of the response being parsed */
    int tunnel_seen;
    char out[16384];
    size_t len;
};

static void out(struct drv *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(d->out + d->len, sizeof(d->out) - d->len, fmt, ap);
    va_end(ap);
    cr_assert(n >= 0 && (size_t)n < sizeof(d->out) - d->len, "trace overflow");
    d->len += (size_t)n;
}

static void expect_next(struct drv *d)
{
    char m = d->methods && d->methods[d->next] ? d->methods[d->next] : 'G';
    ldt_http_expect(&d->p, m == 'H'   ? LDT_HTTP_M_HEAD
                           : m == 'C' ? LDT_HTTP_M_CONNECT
                                      : LDT_HTTP_M_GET);
}

static void drv_init(struct drv *d, enum ldt_http_dir dir, const char *methods)
{
    memset(d, 0, sizeof(*d));
    ldt_http_init(&d->p, dir);
    d->methods = methods;
    if (dir == LDT_HTTP_RESPONSE)
        expect_next(d);
}

static void out_flags(struct drv *d, unsigned f)
{
    static const char *const names[] = {"CH", "CL",  "CLOSE", "UPG", "E100", "PT",
                                        "HT", "TPT", "TST",   "TPM", "UC",   "10"};
    if (!f)
        return;
    out(d, " [");
    for (unsigned i = 0, first = 1; i < sizeof(names) / sizeof(names[0]); i++) {
        if (f & (1u << i)) {
            out(d, "%s%s", first ? "" : ",", names[i]);
            first = 0;
        }
    }
    out(d, "]");
}

/* One EV_HEADERS as text: "GET /path h=host cl=N tp=value@off ts=value [FLAGS];" for requests,
 * "200 cl=N ... [FLAGS];" for responses. */
static void out_headers(struct drv *d)
{
    const struct ldt_http_msg *m = &d->p.msg;

    if (d->p.dir == LDT_HTTP_REQUEST)
        out(d, "%s %.*s", ldt_http_method_name(m->method), (int)m->path_len, m->path);
    else
        out(d, "%u", m->status);
    if (m->host_len)
        out(d, " h=%.*s", (int)m->host_len, m->host);
    if (m->content_length >= 0)
        out(d, " cl=%lld", (long long)m->content_length);
    if (m->tp_len)
        out(d, " tp=%.*s@%u", (int)m->tp_len, m->tp, m->tp_off);
    if (m->ts_len)
        out(d, " ts=%.*s", (int)m->ts_len, m->ts);
    out_flags(d, m->flags);
    out(d, ";");
}

/* What every EV_HEADERS must satisfy, whatever the input. */
static void check_msg(const struct drv *d)
{
    const struct ldt_http_msg *m = &d->p.msg;

    cr_assert_eq(m->_pad, 0, "internal flags leaked");
    cr_assert_leq(m->path_len, LDT_HTTP_PATH_MAX);
    cr_assert_leq(m->host_len, LDT_HTTP_HOST_MAX);
    cr_assert_leq(m->tp_len, LDT_HTTP_TP_MAX);
    cr_assert_leq(m->ts_len, LDT_HTTP_TS_MAX);
    cr_assert_leq(m->reqline_len, m->hdr_len);
    cr_assert_lt(m->hdr_len, d->p.pos);
    cr_assert_leq(d->p.pos, LDT_HTTP_HDR_CAP);
    if (m->tp_len) {
        cr_assert_geq(m->tp_off, m->reqline_len);
        cr_assert_leq(m->tp_off + m->tp_len, m->hdr_len);
    }
}

static void on_event(struct drv *d)
{
    if (d->p.ev == LDT_HTTP_EV_HEADERS) {
        check_msg(d);
        out_headers(d);
    } else if (d->p.ev == LDT_HTTP_EV_DONE) {
        out(d, "D;");
        if (d->p.dir == LDT_HTTP_RESPONSE && d->p.msg.status >= 200) {
            d->next++;
            expect_next(d);
        }
    }
    if (d->p.state == LDT_HTTP_S_PASS && d->p.passthrough == 3 && !d->tunnel_seen) {
        d->tunnel_seen = 1;
        out(d, "T;");
    }
}

/* Feed one piece, calling again after every event as the contract says. */
static void drv_feed(struct drv *d, const char *piece, size_t n)
{
    const char *buf = guarded(piece, n);
    size_t off = 0;

    for (int guard = 0;; guard++) {
        cr_assert_lt(guard, 1 << 24, "parser does not make progress");
        ssize_t r = ldt_http_feed(&d->p, buf + off, n - off);
        if (r < 0) {
            cr_assert_eq(r, LDT_HTTP_INVALID);
            cr_assert_eq(d->p.state, LDT_HTTP_S_PASS);
            out(d, "X%d;", d->p.passthrough);
            /* Pass-through consumes everything, forever, with no more errors. */
            cr_assert_eq(ldt_http_feed(&d->p, buf + off, n - off), (ssize_t)(n - off));
            return;
        }
        cr_assert_leq((size_t)r, n - off);
        off += (size_t)r;
        on_event(d);
        if (d->p.ev == LDT_HTTP_EV_NONE) {
            cr_assert_eq(off, n, "consumed less than given without an event");
            return;
        }
    }
}

static void drv_eof(struct drv *d)
{
    int r = ldt_http_eof(&d->p);
    if (d->p.ev == LDT_HTTP_EV_DONE)
        on_event(d);
    out(d, "E%d", r);
}

/* Feed s[n] cut at the sorted positions cuts[ncuts], then end the stream. */
static void run_cuts(struct drv *d, const char *s, size_t n, const size_t *cuts, size_t ncuts)
{
    size_t from = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        drv_feed(d, s + from, to - from);
        from = to;
    }
    drv_eof(d);
}

static void run_whole(struct drv *d, const char *s, size_t n)
{
    run_cuts(d, s, n, NULL, 0);
}

/* Feeding one byte per call must give the same trace. */
static void run_bytes(struct drv *d, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        drv_feed(d, s + i, 1);
    drv_eof(d);
}

/* Every split of s at one point in [from, to) gives the trace want. */
static void check_splits(enum ldt_http_dir dir, const char *methods, const char *s, size_t n,
                         size_t from, size_t to, const char *want, const char *label)
{
    static struct drv d;
    for (size_t k = from; k < to && k <= n; k++) {
        drv_init(&d, dir, methods);
        run_cuts(&d, s, n, &k, 1);
        cr_assert_str_eq(d.out, want, "%s split at %zu", label, k);
    }
}

/* ---- the rules table ---- */

struct rule {
    enum ldt_http_dir dir;
    const char *methods;
    const char *in;
    size_t len;
    const char *want;
    const char *label;
};

#define RQ LDT_HTTP_REQUEST
#define RS LDT_HTTP_RESPONSE
#define IN(lit) lit, sizeof(lit) - 1

static const struct rule rules[] = {
    /* classification by the first bytes */
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "GET / h=a;D;E1", "plain GET"},
    {RQ, NULL, IN("BREW /pot HTTP/1.1\r\n\r\n"), "_OTHER /pot;D;E1", "unknown method token"},
    {RQ, NULL, IN("M-SEARCH * HTTP/1.1\r\n\r\n"), "_OTHER *;D;E1", "method with a dash"},
    {RS, NULL, IN("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"), "200 cl=2 [CL];D;E1",
     "status line"},
    {RQ, NULL, IN("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), "X1;E1", "TLS record"},
    {RS, NULL, IN("\x16\x03\x03\x00\x7a\x02"), "X1;E1", "TLS record on the response side"},
    {RQ, NULL, IN("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "X1;E1", "HTTP/2 preface"},
    {RQ, NULL, IN("*1\r\n$4\r\nPING\r\n"), "X1;E1", "Redis RESP"},
    {RQ, NULL, IN("PING\r\n"), "X1;E1", "Redis inline command"},
    {RQ, NULL, IN("SET key value\r\n"), "X1;E1", "Redis inline with spaces"},
    {RQ, NULL, IN("\x00\x01\x02\x03"), "X1;E1", "binary"},
    {RQ, NULL, IN("get / HTTP/1.1\r\n\r\n"), "X1;E1", "lowercase method"},
    {RQ, NULL, IN("GET / HTTP/2.0\r\n\r\n"), "X1;E1", "HTTP/2.0 request line"},
    {RQ, NULL, IN("GET / HTTP/1.1 \r\n\r\n"), "X1;E1", "space after the version"},
    {RQ, NULL, IN("GET  / HTTP/1.1\r\n\r\n"), "X1;E1", "two spaces after the method"},
    {RQ, NULL, IN("GET /\r\n\r\n"), "X1;E1", "HTTP/0.9 request"},
    {RQ, NULL, IN("ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n\r\n"), "X1;E1", "method too long"},
    {RQ, NULL, IN("HTTP/1.1 200 OK\r\n\r\n"), "X1;E1", "response on the request side"},
    {RS, NULL, IN("GET / HTTP/1.1\r\n\r\n"), "X1;E1", "request on the response side"},
    {RS, NULL, IN("HTTP/1.1 20 OK\r\n\r\n"), "X1;E1", "two-digit status"},
    {RS, NULL, IN("HTTP/1.1 099 OK\r\n\r\n"), "X1;E1", "status below 100"},
    {RS, NULL, IN("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), "200 cl=0 [CL];D;E1",
     "status without a reason phrase"},
    {RS, NULL, IN("HTTP/1.1 200 OK\x01\r\n\r\n"), "X1;E1", "control byte in the reason"},
    {RQ, NULL, IN("\r\n\r\nGET / HTTP/1.1\r\n\r\n"), "GET /;D;E1", "empty lines before a request"},
    {RQ, NULL, IN("\r\n"), "E1", "only an empty line"},

    /* header names, values, trace context */
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHOST: A.b\r\nhOsT: second\r\n\r\n"), "GET / h=A.b;D;E1",
     "Host case-insensitive, first kept"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHost:\r\n\r\n"), "GET /;D;E1", "empty Host"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nTraceParent: \t " TP1 " \t\r\n\r\n"),
     "GET / tp=" TP1 "@31;D;E1", "traceparent trimmed, offset of the value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\ntraceparent: " TP1 "\r\ntraceparent: 00-x\r\n\r\n"),
     "GET / tp=" TP1 "@29 [TPM];D;E1", "two traceparent lines"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\ntracestate: a=1 , b=2 \r\nx: y\r\nTraceState: c=3\r\n\r\n"),
     "GET / ts=a=1 , b=2,c=3;D;E1", "tracestate lines joined"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\ntracestate:\r\ntracestate: c=3\r\n\r\n"), "GET / ts=c=3;D;E1",
     "empty tracestate line"},
    {RQ, NULL, IN("GET / HTTP/1.1\nHost: a\ntraceparent: " TP1 "\n\n"),
     "GET / h=a tp=" TP1 "@36;D;E1", "LF-only lines"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), "X1;E1", "space before the colon"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\n: a\r\n\r\n"), "X1;E1", "empty header name"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-A: b\r\n  c\r\n\r\n"), "X1;E1", "obs-fold"},
    {RQ, NULL,
     IN("GET / HTTP/1.1\r\nX-A: b\x00"
        "c\r\n\r\n"),
     "X1;E1", "NUL in a value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHost: a\x00\r\n\r\n"), "X1;E1", "NUL in a kept value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-A: b\rc\r\n\r\n"), "X1;E1", "bare CR in a value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-A: b\x7f\r\n\r\n"), "X1;E1", "DEL in a value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-A: caf\xc3\xa9\r\n\r\n"), "GET /;D;E1",
     "obs-text in a value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\n\r\r\n"), "X1;E1", "CR CR at the end of the headers"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nhostxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx: a\r\n\r\n"),
     "GET /;D;E1", "long name starting like host"},
    {RQ, NULL, IN("GET /a\x01 HTTP/1.1\r\n\r\n"), "X1;E1", "control byte in the target"},
    {RQ, NULL,
     IN("GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaa\x7f"
        "bbbbbbbbbbbbbbbb\r\n\r\n"),
     "X1;E1", "DEL deep inside a long value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x00\r\n\r\n"), "X1;E1",
     "NUL at the end of a long value"},
    {RQ, NULL,
     IN("GET / HTTP/1.1\r\nHost: aaaaaaaaaaaaaaaaaaa\x0b"
        "aaaaaaaaaa\r\n\r\n"),
     "X1;E1", "VT inside a long Host"},
    {RQ, NULL,
     IN("GET / HTTP/1.1\r\nX-Tabs: a\tb\tccccccccccccccccccccccccc\td\r\n"
        "Host: x\ty  \t    \t\r\n\r\n"),
     "GET / h=x\ty;D;E1", "tabs inside values, long trailing OWS"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nConnection: keep-alive,\tUpgrade , close;x=1\r\n\r\n"),
     "GET / [CLOSE];D;E1", "Connection list with tabs and parameters"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: \t 2 \t\r\n\r\nab"), "POST / cl=2 [CL];D;E1",
     "CL with OWS around it"},
    {RS, NULL, IN("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
     "200 [CH,CLOSE,UC,10];D;E1", "HTTP/1.0 response with TE reads until close"},
    {RS, NULL, IN("HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"), "999 cl=0 [CL];D;E1",
     "unknown three-digit status"},
    {RQ, NULL,
     IN("OPTIONS * HTTP/1.1\r\n\r\nDELETE /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        "PATCH /y HTTP/1.1\r\n\r\n"),
     "OPTIONS *;D;DELETE /x cl=0 [CL];D;PATCH /y;D;E1", "more methods, CL 0"},

    /* Content-Length (RFC 9112 6.3) */
    {RQ, NULL, IN("POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /q HTTP/1.1\r\n\r\n"),
     "POST /p cl=3 [CL];D;GET /q;D;E1", "CL body then the next request"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n"), "X1;E1", "CL not a number"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), "X1;E1", "CL negative"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"), "X1;E1", "CL with a sign"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length:\r\n\r\n"), "X1;E1", "CL empty"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n"), "X1;E1", "CL with a space"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"), "X1;E1", "CL list differs"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"), "X1;E1",
     "CL lines differ"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 2 , 2\r\nContent-Length: 2\r\n\r\nxy"),
     "POST / cl=2 [CL];D;E1", "CL repeated with the same value"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n"), "X1;E1",
     "CL too large"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 007\r\n\r\n1234567"), "POST / cl=7 [CL];D;E1",
     "CL leading zeros"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"), "POST / cl=5 [CL];E0",
     "eof inside a CL body"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHost: a\r\n"), "E0", "eof inside the headers"},
    {RQ, NULL, IN("GET / HTT"), "E0", "eof inside the request line"},

    /* Transfer-Encoding */
    {RQ, NULL,
     IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n"
        "3\r\nabc\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n"),
     "POST / cl=100 [CH,CL];D;GET /n;D;E1", "TE takes precedence over CL"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n0\r\n\r\n"),
     "POST / [CH];D;E1", "chunked last in a list"},
    {RQ, NULL,
     IN("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\n"),
     "POST / [CH];D;E1", "chunked last over two lines"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), "X1;E1",
     "request with chunked not last"},
    {RQ, NULL, IN("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), "X1;E1",
     "HTTP/1.0 request with TE"},
    {RS, NULL, IN("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabcdef"),
     "200 cl=3 [CL,UC];D;E1", "response with TE not chunked reads until close"},
    {RQ, NULL,
     IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "a;name=\"v\";x\r\n0123456789\r\n10 \r\n0123456789abcdef\r\n"
        "0;last\r\nTrailer-A: 1\r\nTrailer-B: 2\r\n\r\n"),
     "POST / [CH];D;E1", "chunk extensions and trailers"},
    {RQ, NULL, IN("POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n3\nabc\n0\nT: 1\n\n"),
     "POST / [CH];D;E1", "chunked with bare LF lines"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
     "POST / [CH];X1;E1", "chunk size not hex"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\n"),
     "POST / [CH];X1;E1", "chunk size with junk"},
    {RQ, NULL,
     IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1000000000000000000\r\n"),
     "POST / [CH];X1;E1", "chunk size overflow"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n"),
     "POST / [CH];X1;E1", "chunk data not followed by CRLF"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"), "POST / [CH];E0",
     "eof inside a chunk"},

    /* Connection, Upgrade, Expect, HTTP/1.0 */
    {RQ, NULL, IN("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n"), "GET / [CLOSE];D;E1",
     "Connection list with close"},
    {RQ, NULL, IN("GET / HTTP/1.0\r\n\r\n"), "GET / [CLOSE,10];D;E1", "HTTP/1.0 request"},
    {RQ, NULL, IN("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"),
     "GET / [10];D;GET /2 [CLOSE,10];D;E1", "HTTP/1.0 keep-alive"},
    {RS, NULL, IN("HTTP/1.0 200 OK\r\n\r\nbody bytes"), "200 [CLOSE,UC,10];D;E1",
     "HTTP/1.0 response until close"},
    {RS, NULL, IN("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody"), "200 [CLOSE,UC];D;E1",
     "HTTP/1.1 response until close"},
    {RS, NULL, IN("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"),
     "200 cl=1 [CL,10];D;E1", "HTTP/1.0 keep-alive response"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx"),
     "POST / cl=1 [CL,E100];D;E1", "Expect 100-continue"},
    {RQ, NULL,
     IN("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        "\x81\x85\x37\xfa"),
     "GET /ws [UPG];D;T;E1", "Upgrade request, then frames"},
    {RQ, NULL, IN("GET /ws HTTP/1.1\r\nUpgrade: h2c\r\n\r\nGET /next HTTP/1.1\r\n\r\n"),
     "GET /ws [UPG];D;GET /next;D;E1", "Upgrade refused, next request"},
    {RS, NULL, IN("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"),
     "101 [UPG];D;T;E1", "101 switches to pass-through"},

    /* 1xx, 204, 304, HEAD, CONNECT */
    {RS, NULL, IN("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
     "100;D;200 cl=0 [CL];D;E1", "100 Continue then the final response"},
    {RS, NULL,
     IN("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n"
        "Content-Length: 1\r\n\r\nx"),
     "103;D;200 cl=1 [CL];D;E1", "103 Early Hints"},
    {RS, "H", IN("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
     "100;D;200 cl=9 [CL];D;E1", "HEAD still applies after a 1xx"},
    {RS, NULL, IN("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
     "204;D;200 cl=0 [CL];D;E1", "204 has no body"},
    {RS, NULL,
     IN("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
     "304 cl=50 [CL];D;200 cl=0 [CL];D;E1", "304 has no body even with a CL"},
    {RS, "HG",
     IN("HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\nHTTP/1.1 200 OK\r\n"
        "Content-Length: 2\r\n\r\nok"),
     "200 cl=24 [CL];D;200 cl=2 [CL];D;E1", "HEAD response has no body"},
    {RS, "C", IN("HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01"), "200;D;T;E1",
     "2xx to CONNECT switches to pass-through"},
    {RS, "CG",
     IN("HTTP/1.1 407 Proxy Auth\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n"
        "Content-Length: 0\r\n\r\n"),
     "407 cl=1 [CL];D;200 cl=0 [CL];D;E1", "non-2xx to CONNECT stays HTTP"},
    {RQ, NULL,
     IN("CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\nContent-Length: 5\r\n\r\n"
        "\x16\x03\x01\x00\x05"),
     "CONNECT db:5432 h=db:5432 cl=5 [CL];D;T;E1", "CONNECT request has no body, then the tunnel"},
    {RQ, NULL, IN("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nHEAD /c HTTP/1.1\r\n\r\n"),
     "GET /a;D;GET /b;D;HEAD /c;D;E1", "pipelined requests in one buffer"},

    /* whole-line fast path: its limits are cut by every split, so they must agree with the
     * byte-wise machine */
    {RQ, NULL,
     IN("GET / HTTP/1.1\r\nX-A-Very-Long-Header-Name-Over-Thirty-Two: v\r\nHost: h\r\n\r\n"),
     "GET / h=h;D;E1", "header name longer than 32 bytes"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX_Under.Dot~Tilde: v\r\nhost: h\r\n\r\n"), "GET / h=h;D;E1",
     "rarer token characters in a name"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-Sep(: v\r\n\r\n"), "X1;E1", "separator in a name"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-\xc3\xa9: v\r\n\r\n"), "X1;E1", "obs-text in a name"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nX-Long-Name-Seventeen: v:w\r\n\r\n"), "GET /;D;E1",
     "colon inside a value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nA: 0123456789abcdef0123456789abcdef0123456789\x01x\r\n\r\n"),
     "X1;E1", "control byte in the third block of a value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nA: 0123456789\x80\xff\t 0123456789abcdef0123\r\n\r\n"),
     "GET /;D;E1", "obs-text, HTAB and SP across blocks"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nA: b\n\r\n"), "GET /;D;E1", "LF line then CRLF end"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nA: b\r\r\n\r\n"), "X1;E1", "CR CR LF ending a header line"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nA:b\r\nB:\r\nC: \t \r\nHOST:\tx \r\n\r\n"), "GET / h=x;D;E1",
     "no OWS, empty values, OWS-only value"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nHost: c\r\n\r\n"), "GET / h=a;D;E1",
     "three Host lines"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nHost:\r\nHost: b\r\n\r\n"), "GET /;D;E1",
     "an empty first Host still counts as the first"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\ntraceparent:\r\ntraceparent: " TP1 "\r\n\r\n"),
     "GET / [TPM];D;E1", "an empty first traceparent still counts as the first"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\ntracestate: a=1\r\ntracestate: \r\ntracestate: b=2\r\n\r\n"),
     "GET / ts=a=1,b=2;D;E1", "empty tracestate line between two"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\ncontent-length: 000000000000000003\r\n\r\nabc"),
     "POST / cl=3 [CL];D;E1", "CL of 18 digits"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\ncontent-length: 0000000000000000003\r\n\r\nabc"), "X1;E1",
     "CL of 19 digits"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 3\t\r\nContent-Length: 3,3\r\n\r\nabc"),
     "POST / cl=3 [CL];D;E1", "CL with trailing HTAB, then a list"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\nabc"), "X1;E1", "CL with a letter"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), "X1;E1",
     "two plain CL lines differ"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nConnection: CLOSE\r\n\r\n"), "GET / [CLOSE];D;E1",
     "Connection token in upper case"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\nConnection: clo se\r\n\r\n"), "GET / [CLOSE];D;E1",
     "OWS inside a list token is dropped (as the byte-wise machine does)"},
    {RQ, NULL, IN("GET / HTTP/1.0\r\nConnection: keep-alive \r\n\r\n"), "GET / [10];D;E1",
     "keep-alive with trailing OWS"},
    {RQ, NULL,
     IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: ,\r\n\r\n0\r\n\r\n"),
     "POST / [CH];D;E1", "an empty TE list leaves chunked"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n"), "X1;E1",
     "TE token that only starts like chunked"},
    {RQ, NULL, IN("POST / HTTP/1.1\r\nExpect: 100-CONTINUE\r\nContent-Length: 1\r\n\r\nx"),
     "POST / cl=1 [CL,E100];D;E1", "Expect in upper case"},
    {RQ, NULL, IN("ABCDEFGHIJKLMNOPQRSTUVWX / HTTP/1.1\r\n\r\n"), "_OTHER /;D;E1",
     "method of 24 bytes"},
    {RQ, NULL, IN("GET_X / HTTP/1.1\r\n\r\nPUT /p HTTP/1.1\r\n\r\nGETX / HTTP/1.1\r\n\r\n"),
     "_OTHER /;D;PUT /p;D;_OTHER /;D;E1", "method tokens near the known ones"},
    {RQ, NULL, IN("GET /0123456789abcde HTTP/1.1\r\n\r\nGET /0123456789abcdef HTTP/1.1\n\n"),
     "GET /0123456789abcde;D;GET /0123456789abcdef;D;E1", "targets of 16 and 17 bytes"},
    {RQ, NULL, IN("GET /a\x7f HTTP/1.1\r\n\r\n"), "X1;E1", "DEL in the target"},
    {RQ, NULL, IN("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"), "GET /caf\xc3\xa9;D;E1",
     "obs-text in the target"},
    {RQ, NULL, IN("GET / HTTP/1.x\r\n\r\n"), "X1;E1", "version without a digit"},
    {RQ, NULL, IN("GET / HTTP/1.1\r\r\n\r\n"), "X1;E1", "CR CR ending the request line"},
    {RS, NULL, IN("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), "200 cl=0 [CL];D;E1",
     "empty reason phrase"},
    {RS, NULL, IN("HTTP/1.1 200 O\tK \xc3\xa9\r\nContent-Length: 0\r\n\r\n"), "200 cl=0 [CL];D;E1",
     "reason with HTAB and obs-text"},
    {RS, NULL, IN("HTTP/1.1 200 OK\rX\nContent-Length: 0\r\n\r\n"), "X1;E1",
     "bare CR in the reason"},
    {RS, NULL, IN("HTTP/1.1 2000 OK\r\n\r\n"), "X1;E1", "four-digit status"},
    {RS, NULL, IN("HTTPHTTP/1.1 200 OK\r\n\r\n"), "X1;E1",
     "a status line starting again after a few bytes (found by fuzz_http)"},
    {RQ, NULL, IN("GGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"), "_OTHER /;D;GET /;D;E1",
     "a request line taken from its first byte only"},
    {RS, NULL, IN("HTTP/1.1 200\nContent-Length: 0\n\n"), "200 cl=0 [CL];D;E1",
     "LF-only status line without a reason"},
};

ParameterizedTestParameters(http_rules, table)
{
    static int idx[sizeof(rules) / sizeof(rules[0])];
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++)
        idx[i] = (int)i;
    return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

/* Each rule: fed whole, one byte at a time, and split at every byte: the same trace each time. */
ParameterizedTest(int *i, http_rules, table, .init = guard_init, .fini = guard_fini)
{
    static struct drv d;
    const struct rule *r = &rules[*i];
    size_t n = r->len;

    drv_init(&d, r->dir, r->methods);
    run_whole(&d, r->in, n);
    cr_assert_str_eq(d.out, r->want, "%s (whole)", r->label);
    drv_init(&d, r->dir, r->methods);
    run_bytes(&d, r->in, n);
    cr_assert_str_eq(d.out, r->want, "%s (byte by byte)", r->label);
    check_splits(r->dir, r->methods, r->in, n, 0, n + 1, r->want, r->label);
}

/* ---- the recorded captures (tests/data/captures, see its README.md) ---- */

struct blob {
    char *data;
    size_t len;
};

static struct blob load_capture(const char *name, const char *suffix)
{
    const char *root = getenv("LDT_SOURCE_ROOT");
    char path[1024];
    struct stat st;
    struct blob b = {0};

    snprintf(path, sizeof(path), "%s/tests/data/captures/%s.%s.bin", root ? root : ".", name,
             suffix);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    cr_assert_geq(fd, 0, "open %s: %s (is LDT_SOURCE_ROOT set?)", path, strerror(errno));
    cr_assert_eq(fstat(fd, &st), 0);
    b.len = (size_t)st.st_size;
    b.data = malloc(b.len + 1);
    cr_assert_not_null(b.data);
    cr_assert_eq(read(fd, b.data, b.len), (ssize_t)b.len);
    close(fd);
    return b;
}

struct capture {
    const char *name;
    const char *methods; /* request methods, for ldt_http_expect on the response side */
    const char *req;     /* expected trace of the request stream */
    const char *resp;    /* expected trace of the response stream */
};

#define NODE "h=127.0.0.1:19541"

static const struct capture captures[] = {
    {"curl-to-nginx-conn1", "GG",
     "GET /via-nginx/1 h=127.0.0.1:19531;D;GET /chunked/via-nginx h=127.0.0.1:19531;D;E1",
     "200 cl=31 [CL];D;200 [CH];D;E1"},
    {"curl-to-node-conn1", "GG", "GET /keepalive/a " NODE ";D;GET /keepalive/b " NODE ";D;E1",
     "200 cl=31 [CL];D;200 cl=31 [CL];D;E1"},
    {"curl-to-node-conn2", "G", "POST /upload-expect-100 " NODE " cl=2000000 [CL,E100];D;E1",
     "100;D;200 cl=43 [CL];D;E1"},
    {"curl-to-node-conn3", "H", "HEAD /head " NODE ";D;E1", "200 cl=24 [CL];D;E1"},
    {"curl-to-node-conn4", "G", "GET /chunked " NODE ";D;E1", "200 [CH];D;E1"},
    {"curl-to-node-conn5", "G", "GET /notmod " NODE ";D;E1", "304;D;E1"},
    {"curl-to-node-conn6", "G",
     "GET /err " NODE " tp=" TP1 "@93 ts=congo=t61rcWkgMzE,rojo=00f067aa0ba902b7;D;E1",
     "503 cl=23 [CL];D;E1"},
    {"curl-to-node-conn7", "G", "POST /chunked-upload " NODE " [CH];D;E1", "200 [CH];D;E1"},
    {"curl-to-python-httpserver-conn1", "G", "GET /text.txt h=127.0.0.1:19515;D;E1",
     "200 cl=108894 [CL,CLOSE,10];D;E1"},
    {"nginx-upstream-to-node-conn1", "GG",
     "GET /via-nginx/1 h=back;D;GET /chunked/via-nginx h=back;D;E1",
     "200 cl=31 [CL];D;200 [CH];D;E1"},
    {"nodeclient-to-node-conn1", "GG",
     "GET /node-ka-1 h=127.0.0.1:19514;D;GET /node-ka-2 h=127.0.0.1:19514;D;E1",
     "200 cl=29 [CL];D;200 cl=29 [CL];D;E1"},
    {"urllib-to-node-conn1", "G", "GET /urllib-get h=127.0.0.1:19513 [CLOSE];D;E1",
     "200 cl=30 [CL,CLOSE];D;E1"},
    {"urllib-to-node-conn2", "G", "POST /urllib-post h=127.0.0.1:19513 cl=7 [CL,CLOSE];D;E1",
     "200 cl=31 [CL,CLOSE];D;E1"},
    {"wget-to-node-conn1", "G", "GET /wget h=127.0.0.1:19512;D;E1", "200 cl=24 [CL];D;E1"},
};

/* Splits of one stream: every byte for streams under 64 KiB; for larger ones every byte of the
 * first and last 4 KiB (the header parts and the end of the body) and 300 random points, or for the
 * 2 MB upload the first 512 bytes and 300 random points (keeps the suite fast under ASan). */
static void check_stream(enum ldt_http_dir dir, const char *methods, const struct blob *b,
                         const char *want, const char *label)
{
    static struct drv d;

    drv_init(&d, dir, methods);
    run_whole(&d, b->data, b->len);
    cr_assert_str_eq(d.out, want, "%s (whole)", label);
    drv_init(&d, dir, methods);
    run_bytes(&d, b->data, b->len);
    cr_assert_str_eq(d.out, want, "%s (byte by byte)", label);
    if (b->len < LDT_HTTP_HDR_CAP) {
        check_splits(dir, methods, b->data, b->len, 0, b->len + 1, want, label);
        return;
    }
    size_t head = b->len > (1u << 20) ? 512 : 4096;
    check_splits(dir, methods, b->data, b->len, 0, head, want, label);
    if (head == 4096)
        check_splits(dir, methods, b->data, b->len, b->len - 4096, b->len + 1, want, label);
    srand(42);
    for (int i = 0; i < 300; i++) {
        size_t k = (size_t)rand() % (b->len + 1);
        check_splits(dir, methods, b->data, b->len, k, k + 1, want, label);
    }
}

ParameterizedTestParameters(http_captures, every_split_same_messages)
{
    static int idx[sizeof(captures) / sizeof(captures[0])];
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++)
        idx[i] = (int)i;
    return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *i, http_captures, every_split_same_messages, .init = guard_init,
                  .fini = guard_fini, .timeout = 60)
{
    const struct capture *c = &captures[*i];
    struct blob req = load_capture(c->name, "request");
    struct blob resp = load_capture(c->name, "response");

    check_stream(LDT_HTTP_REQUEST, NULL, &req, c->req, c->name);
    check_stream(LDT_HTTP_RESPONSE, c->methods, &resp, c->resp, c->name);
    free(req.data);
    free(resp.data);
}

/* The offsets the injector and the span code rely on, checked on a real request. */
Test(http_captures, offsets_of_conn6, .init = guard_init, .fini = guard_fini)
{
    struct blob b = load_capture("curl-to-node-conn6", "request");
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_REQUEST);
    cr_assert_eq(ldt_http_feed(&p, guarded(b.data, b.len), b.len), (ssize_t)b.len);
    cr_assert_eq(p.ev, LDT_HTTP_EV_HEADERS);
    cr_assert_eq(p.msg.reqline_len, strlen("GET /err HTTP/1.1\r\n"));
    cr_assert_eq(p.msg.hdr_len, b.len - 2);
    cr_assert_eq(memcmp(b.data + p.msg.tp_off, TP1, strlen(TP1)), 0);
    cr_assert_eq(p.msg.method, LDT_HTTP_M_GET);
    cr_assert_eq(p.msg.minor, 1);
    cr_assert_eq(p.msg.content_length, -1);
    cr_assert_eq(ldt_http_feed(&p, "", 0), 0);
    cr_assert_eq(p.ev, LDT_HTTP_EV_DONE);
    cr_assert_eq(p.messages, 1);
    cr_assert_eq(p.msg_bytes, b.len);
    cr_assert_eq(p.state, LDT_HTTP_S_START);
    free(b.data);
}

/* ---- bounds: the header cap and the kept fields ---- */

/* A request whose header block is exactly total bytes long (start line to the blank line's LF),
 * padded with one Cookie header, with a traceparent after the cookie. */
static char *big_request(size_t total, size_t *len)
{
    const char *head = "GET /big HTTP/1.1\r\nCookie: ";
    const char *tail = "\r\ntraceparent: " TP1 "\r\n\r\n";
    size_t fixed = strlen(head) + strlen(tail);
    cr_assert_gt(total, fixed);
    char *s = malloc(total + 1);
    cr_assert_not_null(s);
    strcpy(s, head);
    memset(s + strlen(head), 'c', total - fixed);
    strcpy(s + total - strlen(tail), tail);
    *len = total;
    return s;
}

Test(http_request, cookie_before_traceparent_up_to_the_cap, .init = guard_init, .fini = guard_fini)
{
    static struct drv d;
    size_t n;
    char *s = big_request(LDT_HTTP_HDR_CAP, &n);
    char want[256];

    snprintf(want, sizeof(want), "GET /big tp=" TP1 "@%zu;D;E1", n - 4 - strlen(TP1));
    drv_init(&d, LDT_HTTP_REQUEST, NULL);
    run_whole(&d, s, n);
    cr_assert_str_eq(d.out, want);
    drv_init(&d, LDT_HTTP_REQUEST, NULL);
    run_bytes(&d, s, n);
    cr_assert_str_eq(d.out, want);
    check_splits(LDT_HTTP_REQUEST, NULL, s, n, n - 200, n + 1, want, "cap");
    free(s);
}

Test(http_request, over_the_cap_is_passed_through, .init = guard_init, .fini = guard_fini)
{
    static struct drv d;
    size_t n;
    char *s = big_request(LDT_HTTP_HDR_CAP + 1, &n);

    drv_init(&d, LDT_HTTP_REQUEST, NULL);
    run_whole(&d, s, n);
    cr_assert_str_eq(d.out, "X2;E1");
    cr_assert_eq(d.p.passthrough, 2);
    drv_init(&d, LDT_HTTP_REQUEST, NULL);
    run_bytes(&d, s, n);
    cr_assert_str_eq(d.out, "X2;E1");
    free(s);
}

Test(http_request, long_fields_are_truncated_and_flagged, .init = guard_init, .fini = guard_fini)
{
    char s[4096], path[300], host[100], tp[200], ts[400];
    struct ldt_http_parser p;

    memset(path, 'p', sizeof(path));
    path[0] = '/';
    memset(host, 'h', sizeof(host));
    memset(tp, 't', sizeof(tp));
    memset(ts, 's', sizeof(ts));
    int n = snprintf(s, sizeof(s),
                     "GET %.*s HTTP/1.1\r\nHost: %.*s\r\ntraceparent: %.*s\r\n"
                     "tracestate: %.*s\r\ntracestate: %.*s\r\n\r\n",
                     (int)sizeof(path), path, (int)sizeof(host), host, (int)sizeof(tp), tp,
                     (int)sizeof(ts), ts, (int)sizeof(ts), ts);
    ldt_http_init(&p, LDT_HTTP_REQUEST);
    cr_assert_eq(ldt_http_feed(&p, guarded(s, (size_t)n), (size_t)n), n);
    cr_assert_eq(p.ev, LDT_HTTP_EV_HEADERS);
    cr_assert_eq(p.msg.path_len, LDT_HTTP_PATH_MAX);
    cr_assert_eq(memcmp(p.msg.path, path, LDT_HTTP_PATH_MAX), 0);
    cr_assert_eq(p.msg.host_len, LDT_HTTP_HOST_MAX);
    cr_assert_eq(p.msg.tp_len, LDT_HTTP_TP_MAX);
    cr_assert_eq(p.msg.ts_len, LDT_HTTP_TS_MAX);
    cr_assert_eq(p.msg.ts[sizeof(ts)], ',', "tracestate lines joined with ','");
    unsigned want =
        LDT_HTTP_F_PATH_TRUNC | LDT_HTTP_F_HOST_TRUNC | LDT_HTTP_F_TP_TRUNC | LDT_HTTP_F_TS_TRUNC;
    cr_assert_eq(p.msg.flags, want, "flags %#x", p.msg.flags);
}

Test(http_request, exact_fit_is_not_truncated, .init = guard_init, .fini = guard_fini)
{
    char s[1024], path[LDT_HTTP_PATH_MAX];
    struct ldt_http_parser p;

    memset(path, 'p', sizeof(path));
    path[0] = '/';
    int n =
        snprintf(s, sizeof(s), "GET %.*s HTTP/1.1\r\nHost: h  \t\r\n\r\n", (int)sizeof(path), path);
    ldt_http_init(&p, LDT_HTTP_REQUEST);
    cr_assert_eq(ldt_http_feed(&p, guarded(s, (size_t)n), (size_t)n), n);
    cr_assert_eq(p.msg.path_len, LDT_HTTP_PATH_MAX);
    cr_assert_eq(p.msg.flags, 0);
    cr_assert_eq(p.msg.host_len, 1);
    cr_assert_str_eq(p.msg.host, "h", "trailing OWS trimmed and not left in the buffer");
}

/* ---- O(1) bodies: a Content-Length body is counted, never read ---- */

Test(http_body, content_length_body_is_not_read, .init = guard_init, .fini = guard_fini)
{
    const char *h = "POST / HTTP/1.1\r\nContent-Length: 10000000000000\r\n\r\n";
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_REQUEST);
    cr_assert_eq(ldt_http_feed(&p, guarded(h, strlen(h)), strlen(h)), (ssize_t)strlen(h));
    cr_assert_eq(p.ev, LDT_HTTP_EV_HEADERS);
    /* One readable byte before the guard page, but a length of 1 GiB: any read past the first
     * byte faults, so the parser must only count. */
    const char *b = guarded("x", 1);
    for (int i = 0; i < 1000; i++) {
        ssize_t r = ldt_http_feed(&p, b, (size_t)1 << 30);
        cr_assert_eq(r, (ssize_t)1 << 30, "%zd ev %d state %d", r, p.ev, p.state);
        cr_assert_eq(p.ev, LDT_HTTP_EV_NONE);
    }
    cr_assert_eq(p.remaining, 10000000000000ull - 1000ull * (1u << 30));
    cr_assert_eq(p.state, LDT_HTTP_S_BODY);
}

Test(http_body, chunk_data_is_not_read, .init = guard_init, .fini = guard_fini)
{
    const char *h = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40000000\r\n";
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_REQUEST);
    cr_assert_eq(ldt_http_feed(&p, guarded(h, strlen(h)), strlen(h)), (ssize_t)strlen(h) - 10);
    cr_assert_eq(ldt_http_feed(&p, guarded(h + strlen(h) - 10, 10), 10), 10);
    cr_assert_eq(p.remaining, 0x40000000u);
    cr_assert_eq(ldt_http_feed(&p, guarded("x", 1), 0x40000000u), 0x40000000);
    cr_assert_eq(ldt_http_feed(&p, guarded("\r\n0\r\n\r\n", 7), 7), 7);
    cr_assert_eq(p.ev, LDT_HTTP_EV_DONE);
}

/* ---- ldt_http_skip: body bytes sent with sendfile ---- */

static void feed_all(struct ldt_http_parser *p, const char *s)
{
    size_t n = strlen(s), off = 0;
    const char *b = guarded(s, n);
    while (off < n) {
        ssize_t r = ldt_http_feed(p, b + off, n - off);
        cr_assert_geq(r, 0);
        off += (size_t)r;
    }
}

Test(http_skip, inside_content_length_body, .init = guard_init, .fini = guard_fini)
{
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_RESPONSE);
    feed_all(&p, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    cr_assert_eq(ldt_http_skip(&p, 600), 600);
    cr_assert_eq(p.ev, LDT_HTTP_EV_NONE);
    cr_assert_eq(ldt_http_skip(&p, 0), 0);
    cr_assert_eq(ldt_http_skip(&p, 500), 400, "stops where the body ends");
    cr_assert_eq(p.ev, LDT_HTTP_EV_DONE);
    cr_assert_eq(p.messages, 1);
    cr_assert_eq(p.msg_bytes, strlen("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n") + 1000);
    feed_all(&p, "HTTP/1.1 204 No Content\r\n\r\n");
    cr_assert_eq(p.msg.status, 204);
}

/* An empty feed inside a body (the shim's second call when the read ended with the header block)
 * changes nothing, whatever the framing; the body then ends where it should. */
Test(http_skip, empty_feed_inside_bodies, .init = guard_init, .fini = guard_fini)
{
    static const char *const heads[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\n\r\n",
    };
    static const char *const bodies[] = {"abc", "3\r\nabc\r\n0\r\n\r\n", "abc"};

    for (size_t i = 0; i < 3; i++) {
        struct ldt_http_parser p, before;
        ldt_http_init(&p, LDT_HTTP_RESPONSE);
        feed_all(&p, heads[i]);
        cr_assert_eq(p.ev, LDT_HTTP_EV_HEADERS);
        before = p;
        cr_assert_eq(ldt_http_feed(&p, "", 0), 0);
        cr_assert_eq(p.ev, LDT_HTTP_EV_NONE);
        cr_assert_eq(p.state, LDT_HTTP_S_BODY);
        cr_assert_eq(p.sub, before.sub);
        cr_assert_eq(p.remaining, before.remaining);
        cr_assert_eq(p.msg_bytes, strlen(heads[i]));
        feed_all(&p, bodies[i]);
        cr_assert_eq(p.msg_bytes, strlen(heads[i]) + strlen(bodies[i]), "case %zu", i);
        cr_assert_eq(p.ev, i < 2 ? LDT_HTTP_EV_DONE : LDT_HTTP_EV_NONE, "case %zu", i);
        cr_assert_eq(ldt_http_eof(&p), 1);
    }
}

Test(http_skip, until_close_body, .init = guard_init, .fini = guard_fini)
{
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_RESPONSE);
    feed_all(&p, "HTTP/1.0 200 OK\r\n\r\n");
    cr_assert_eq(ldt_http_skip(&p, 1u << 20), 1 << 20);
    cr_assert_eq(p.ev, LDT_HTTP_EV_NONE);
    cr_assert_eq(ldt_http_eof(&p), 1);
    cr_assert_eq(p.ev, LDT_HTTP_EV_DONE);
}

Test(http_skip, chunk_data_then_framing, .init = guard_init, .fini = guard_fini)
{
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_RESPONSE);
    feed_all(&p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    feed_all(&p, "100\r\n");
    cr_assert_eq(ldt_http_skip(&p, 0x100), 0x100);
    feed_all(&p, "\r\n0\r\n\r\n");
    cr_assert_eq(p.messages, 1);
}

Test(http_skip, in_headers_or_framing_passes_through, .init = guard_init, .fini = guard_fini)
{
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_RESPONSE);
    feed_all(&p, "HTTP/1.1 200 OK\r\nContent-");
    cr_assert_eq(ldt_http_skip(&p, 10), LDT_HTTP_INVALID);
    cr_assert_eq(p.state, LDT_HTTP_S_PASS);
    cr_assert_eq(ldt_http_feed(&p, "abc", 3), 3, "pass-through consumes everything");

    ldt_http_init(&p, LDT_HTTP_RESPONSE);
    feed_all(&p, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n");
    cr_assert_eq(ldt_http_skip(&p, 20), LDT_HTTP_INVALID, "past the chunk: framing unseen");

    ldt_http_init(&p, LDT_HTTP_REQUEST);
    cr_assert_eq(ldt_http_skip(&p, 5), LDT_HTTP_INVALID, "between messages");
    cr_assert_eq(p.passthrough, 1);
}

/* ---- classify, method names, eof, counters ---- */

struct cls_case {
    char in[32];
    int len;
    int want;
};

ParameterizedTestParameters(http_classify, first_bytes)
{
    static struct cls_case cases[] = {
        {"GET / HTTP/1.1", 14, LDT_HTTP_REQUEST},
        {"PROPFIND /x", 11, LDT_HTTP_REQUEST},
        {"M-SEARCH *", 10, LDT_HTTP_REQUEST},
        {"HTTP/1.1 200 OK", 15, LDT_HTTP_RESPONSE},
        {"HTTP/1.0 200", 12, LDT_HTTP_RESPONSE},
        {"HTTP/1.", 7, LDT_HTTP_RESPONSE},
        {"", 0, LDT_HTTP_PARTIAL},
        {"H", 1, LDT_HTTP_PARTIAL},
        {"HTTP/", 5, LDT_HTTP_PARTIAL},
        {"HEA", 3, LDT_HTTP_PARTIAL},
        {"HEAD ", 5, LDT_HTTP_REQUEST},
        {"HTTP/2 200", 10, 0},
        {"PRI * HTTP/2.0", 14, 0},
        {"\x16\x03\x01", 3, 0},
        {"*1\r\n", 4, 0},
        {"get /", 5, 0},
        {" GET", 4, 0},
        {"-GET /", 6, 0},
        {"ABCDEFGHIJKLMNOPQRSTUVWX", 24, LDT_HTTP_PARTIAL},
        {"ABCDEFGHIJKLMNOPQRSTUVWXY", 25, 0}, /* one more than the longest method */
        {{0, 1, 2}, 3, 0},
    };
    return cr_make_param_array(struct cls_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct cls_case *c, http_classify, first_bytes, .init = guard_init,
                  .fini = guard_fini)
{
    size_t n = (size_t)c->len;
    cr_assert_eq(ldt_http_classify(guarded(c->in, n), n), c->want, "'%.*s'", c->len, c->in);
}

Test(http_method, names_round_trip)
{
    for (int m = LDT_HTTP_M_GET; m < LDT_HTTP_M_COUNT; m++) {
        const char *s = ldt_http_method_name((enum ldt_http_method)m);
        cr_assert_eq(ldt_http_method_from(s, strlen(s)), m, "%s", s);
    }
    cr_assert_str_eq(ldt_http_method_name(LDT_HTTP_M_OTHER), "_OTHER");
    cr_assert_str_eq(ldt_http_method_name(LDT_HTTP_M_COUNT), "_OTHER");
    cr_assert_eq(ldt_http_method_from("GETX", 4), LDT_HTTP_M_OTHER);
    cr_assert_eq(ldt_http_method_from("GE", 2), LDT_HTTP_M_OTHER);
    cr_assert_eq(ldt_http_method_from("get", 3), LDT_HTTP_M_OTHER, "methods are case-sensitive");
}

Test(http_response, no_body_message_gives_done_on_an_empty_call)
{
    struct ldt_http_parser p;
    const char *s = "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n";

    ldt_http_init(&p, LDT_HTTP_RESPONSE);
    ssize_t n = ldt_http_feed(&p, s, strlen(s));
    cr_assert_eq(n, (ssize_t)strlen("HTTP/1.1 204 No Content\r\n\r\n"));
    cr_assert_eq(p.ev, LDT_HTTP_EV_HEADERS);
    cr_assert_eq(p.state, LDT_HTTP_S_BODY);
    cr_assert_eq(ldt_http_feed(&p, NULL, 0), 0);
    cr_assert_eq(p.ev, LDT_HTTP_EV_DONE);
    cr_assert_eq(p.msg.status, 204, "the finished message stays readable at EV_DONE");
    cr_assert_eq(ldt_http_feed(&p, s + n, strlen(s) - (size_t)n), (ssize_t)(strlen(s) - (size_t)n));
    cr_assert_eq(p.ev, LDT_HTTP_EV_NONE);
    cr_assert_eq(p.msg.status, 200);
    cr_assert_eq(p.state, LDT_HTTP_S_HEAD);
    cr_assert_eq(ldt_http_eof(&p), 0, "headers cut short");
    cr_assert_eq(p.messages, 1);
}

Test(http_response, tunnel_after_connect_keeps_consuming)
{
    struct ldt_http_parser p;
    const char *s = "HTTP/1.1 200 OK\r\n\r\n";

    ldt_http_init(&p, LDT_HTTP_RESPONSE);
    ldt_http_expect(&p, LDT_HTTP_M_CONNECT);
    cr_assert_eq(ldt_http_feed(&p, s, strlen(s)), (ssize_t)strlen(s));
    cr_assert_eq(ldt_http_feed(&p, NULL, 0), 0);
    cr_assert_eq(p.ev, LDT_HTTP_EV_DONE);
    cr_assert_eq(p.state, LDT_HTTP_S_PASS);
    cr_assert_eq(p.passthrough, 3);
    cr_assert_eq(ldt_http_feed(&p, "HTTP/1.1 200 OK\r\n\r\n", 19), 19);
    cr_assert_eq(p.ev, LDT_HTTP_EV_NONE, "no events inside the tunnel");
    cr_assert_eq(ldt_http_eof(&p), 1);
}

Test(http_request, lf_only_offsets)
{
    const char *s = "GET /x HTTP/1.1\nHost: a\n\n";
    struct ldt_http_parser p;

    ldt_http_init(&p, LDT_HTTP_REQUEST);
    cr_assert_eq(ldt_http_feed(&p, s, strlen(s)), (ssize_t)strlen(s));
    cr_assert_eq(p.ev, LDT_HTTP_EV_HEADERS);
    cr_assert_eq(p.msg.reqline_len, 16);
    cr_assert_eq(p.msg.hdr_len, strlen(s) - 1, "the blank line's LF");
}

Test(http_body, chunk_lines_and_trailers_are_bounded, .init = guard_init, .fini = guard_fini)
{
    static struct drv d;
    const char *head = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    size_t cap = 200000;
    char *s = malloc(cap);

    /* A chunk extension longer than the bound on a size line. */
    int n = snprintf(s, cap, "%s1;%0*d\r\nx\r\n0\r\n\r\n", head, 5000, 0);
    drv_init(&d, LDT_HTTP_REQUEST, NULL);
    run_whole(&d, s, (size_t)n);
    cr_assert_str_eq(d.out, "POST / [CH];X2;E1");

    /* Trailer lines adding up to more than LDT_HTTP_HDR_CAP. */
    n = snprintf(s, cap, "%s0\r\n", head);
    while ((size_t)n < LDT_HTTP_HDR_CAP + 1000)
        n += snprintf(s + n, cap - (size_t)n, "X-Trailer: %0*d\r\n", 100, n);
    n += snprintf(s + n, cap - (size_t)n, "\r\n");
    drv_init(&d, LDT_HTTP_REQUEST, NULL);
    run_whole(&d, s, (size_t)n);
    cr_assert_str_eq(d.out, "POST / [CH];X2;E1");

    /* Under the bounds: accepted. */
    n = snprintf(s, cap, "%s1;%0*d\r\nx\r\n0\r\nX-T: 1\r\n\r\n", head, 4000, 0);
    drv_init(&d, LDT_HTTP_REQUEST, NULL);
    run_bytes(&d, s, (size_t)n);
    cr_assert_str_eq(d.out, "POST / [CH];D;E1");
    free(s);
}

/* ---- the whole-line fast path and the byte-wise machine agree ---- */

static int is_tchar_byte(unsigned c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20u) >= 'a' && (c | 0x20u) <= 'z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", (int)c) != NULL);
}

static int is_value_byte(unsigned c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* s[n] fed whole (whole lines taken at once) and one byte at a time (the byte-wise machine) gives
 * the same trace; that trace is returned (static). */
static const char *agree(enum ldt_http_dir dir, const char *s, size_t n, const char *label)
{
    static struct drv whole, bytes;

    drv_init(&whole, dir, NULL);
    run_whole(&whole, s, n);
    drv_init(&bytes, dir, NULL);
    run_bytes(&bytes, s, n);
    cr_assert_str_eq(whole.out, bytes.out, "%s", label);
    return whole.out;
}

static const size_t at_places[] = {0, 1, 14, 15, 16, 17, 31, 32, 33};

/* Every byte value at several places of a header name longer than 16 bytes: valid exactly when
 * it is a token character (or a colon after the first byte, which just ends the name early). */
Test(http_fast, every_byte_in_a_name, .init = guard_init, .fini = guard_fini)
{
    char s[256], label[64];
    const char *name = "X-Some-Rather-Long-Name-Here-And-More";

    for (size_t i = 0; i < sizeof(at_places) / sizeof(at_places[0]); i++) {
        for (unsigned c = 0; c < 256; c++) {
            size_t k = at_places[i];
            int n = snprintf(s, sizeof(s), "GET / HTTP/1.1\r\n%s: v\r\nHost: h\r\n\r\n", name);
            s[16 + k] = (char)c;
            snprintf(label, sizeof(label), "byte %#x at %zu of a name", c, k);
            int ok = is_tchar_byte(c) || (c == ':' && k > 0);
            /* An LF first is the blank line: the rest is then not a request. */
            const char *want = ok                    ? "GET / h=h;D;E1"
                               : c == '\n' && k == 0 ? "GET /;D;X1;E1"
                                                     : "X1;E1";
            cr_assert_str_eq(agree(RQ, s, (size_t)n, label), want, "%s", label);
        }
    }
}

/* Every byte value at several places of a skipped value and of each kept one: valid exactly when
 * it is allowed in a field value (so a NUL, bare CR, control or DEL is caught in skipped headers
 * too), and the kept fields are the same on both paths. */
Test(http_fast, every_byte_in_a_value, .init = guard_init, .fini = guard_fini)
{
    static const char *const names[] = {"X-Skipped",  "Host",       "traceparent",
                                        "tracestate", "Connection", "Content-Length"};
    char s[256], label[96];
    const char *value = "0123456789abcdef0123456789abcdef01234567";

    for (size_t h = 0; h < sizeof(names) / sizeof(names[0]); h++) {
        for (size_t i = 0; i < sizeof(at_places) / sizeof(at_places[0]); i++) {
            for (unsigned c = 0; c < 256; c++) {
                size_t k = at_places[i];
                int n = snprintf(s, sizeof(s), "GET / HTTP/1.1\r\n%s: %s\r\nA: b\r\n\r\n", names[h],
                                 value);
                s[16 + strlen(names[h]) + 2 + k] = (char)c;
                snprintf(label, sizeof(label), "byte %#x at %zu of a %s value", c, k, names[h]);
                const char *got = agree(RQ, s, (size_t)n, label);
                if (!is_value_byte(c))
                    cr_assert_str_eq(got, "X1;E1", "%s", label);
                else if (h < 5)
                    cr_assert_neq(got[0], 'X', "%s: %s", label, got);
            }
        }
    }
}

/* The same message cut into pieces of every size from 1 to 40 bytes: the fast path sees lines
 * cut at every place by the end of a buffer and hands them to the byte-wise machine. */
Test(http_fast, pieces_of_every_size, .init = guard_init, .fini = guard_fini)
{
    static struct drv d;
    static const char s[] = "POST /upload?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
                            "User-Agent: curl/7.88.1\r\nAccept: */*\r\n"
                            "traceparent: " TP1 "\r\ntracestate: a=1, b=2\r\n"
                            "Connection: keep-alive\r\nContent-Length: 4\r\n\r\nbody"
                            "GET /next HTTP/1.1\r\n\r\n";
    const char *want =
        "POST /upload?x=1 h=example.com:8080 cl=4 tp=" TP1 "@102 ts=a=1, b=2 [CL];D;GET /next;D;E1";
    size_t n = sizeof(s) - 1, cuts[256];

    for (size_t piece = 1; piece <= 40; piece++) {
        size_t nc = 0;
        for (size_t at = piece; at < n; at += piece)
            cuts[nc++] = at;
        drv_init(&d, RQ, NULL);
        run_cuts(&d, s, n, cuts, nc);
        cr_assert_str_eq(d.out, want, "pieces of %zu: %s", piece, d.out);
    }
}

/* ---- the whole-block path and the byte-wise machine agree on every field ----
 *
 * A message whose header block is all in one buffer is taken by the whole-block path from its
 * first byte; fed one byte at a time it goes through the byte-wise machine only. Both must leave
 * the same fields at every event: method, version, status, flags, the kept strings and their
 * offsets, the header and start-line lengths, the body framing, and the same errors. */

/* What a parser shows at an event (or an error), with the kept strings cut to their lengths. */
struct snap {
    int64_t ret;
    uint8_t ev, state, passthrough;
    uint32_t pos;
    uint64_t remaining, msg_bytes, messages;
    struct ldt_http_msg msg;
};

struct strace {
    struct snap s[16];
    size_t n;
};

static void snap_take(struct strace *t, const struct ldt_http_parser *p, int64_t ret)
{
    struct snap *s;

    cr_assert_lt(t->n, sizeof(t->s) / sizeof(t->s[0]), "too many events");
    s = &t->s[t->n++];
    memset(s, 0, sizeof(*s));
    s->ret = ret < 0 ? ret : 0;
    s->ev = p->ev;
    s->state = p->state;
    s->passthrough = p->passthrough;
    s->messages = p->messages;
    if (ret < 0 || p->state == LDT_HTTP_S_PASS)
        return; /* after an error or in a tunnel only the pass-through state is defined */
    s->pos = p->pos;
    s->remaining = p->remaining;
    s->msg_bytes = p->msg_bytes;
    memcpy(&s->msg, &p->msg, offsetof(struct ldt_http_msg, path));
    memcpy(s->msg.path, p->msg.path, p->msg.path_len);
    memcpy(s->msg.host, p->msg.host, p->msg.host_len);
    memcpy(s->msg.tp, p->msg.tp, p->msg.tp_len);
    memcpy(s->msg.ts, p->msg.ts, p->msg.ts_len);
}

/* Feed one piece (from right before the unreadable page), snapshotting every event. */
static int sfeed(struct ldt_http_parser *p, struct strace *t, const char *piece, size_t n)
{
    const char *buf = guarded(piece, n);
    size_t off = 0;

    for (int guard = 0; guard < 1000; guard++) {
        ssize_t r = ldt_http_feed(p, buf + off, n - off);
        if (r < 0) {
            snap_take(t, p, r);
            return -1;
        }
        off += (size_t)r;
        if (p->ev == LDT_HTTP_EV_NONE) {
            cr_assert_eq(off, n);
            return 0;
        }
        snap_take(t, p, 0);
        if (p->ev == LDT_HTTP_EV_DONE && p->dir == LDT_HTTP_RESPONSE && p->msg.status >= 200)
            ldt_http_expect(p, LDT_HTTP_M_GET);
    }
    cr_assert_fail("no progress");
    return -1;
}

/* s[n] cut at every multiple of step (0: whole), then the end of the stream. */
static void srun(enum ldt_http_dir dir, const char *s, size_t n, size_t step, struct strace *t)
{
    struct ldt_http_parser p;
    size_t from = 0;

    memset(t, 0, sizeof(*t));
    ldt_http_init(&p, dir);
    if (dir == LDT_HTTP_RESPONSE)
        ldt_http_expect(&p, LDT_HTTP_M_GET);
    int failed = 0, eof;
    while (from < n && !failed) {
        size_t k = step && n - from > step ? step : n - from;
        failed = sfeed(&p, t, s + from, k) < 0;
        from += k;
    }
    eof = ldt_http_eof(&p);
    snap_take(t, &p, failed ? -10 - eof : eof); /* after an error: the pass-through state only */
}

/* Whole, one byte at a time, and in pieces of 7 bytes: the same snapshots. */
static void sagree(enum ldt_http_dir dir, const char *s, size_t n, const char *label)
{
    static struct strace whole, bytes, sevens;

    srun(dir, s, n, 0, &whole);
    srun(dir, s, n, 1, &bytes);
    srun(dir, s, n, 7, &sevens);
    cr_assert_eq(whole.n, bytes.n, "%s: %zu events whole, %zu byte by byte", label, whole.n,
                 bytes.n);
    cr_assert_eq(whole.n, sevens.n, "%s: events in pieces of 7", label);
    for (size_t i = 0; i < whole.n; i++) {
        cr_assert_eq(memcmp(&whole.s[i], &bytes.s[i], sizeof(whole.s[i])), 0,
                     "%s: event %zu differs byte by byte", label, i);
        cr_assert_eq(memcmp(&whole.s[i], &sevens.s[i], sizeof(whole.s[i])), 0,
                     "%s: event %zu differs in pieces of 7", label, i);
    }
}

static const char *const hostile_bases[] = {
    /* the bench's traced request and its response */
    "GET /api/orders/1234?expand=items HTTP/1.1\r\nHost: orders.internal:8080\r\n"
    "User-Agent: curl/7.88.1\r\nAccept: */*\r\ntraceparent: " TP1 "\r\n"
    "tracestate: congo=t61rcWkgMzE\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    "Content-Length: 12\r\nDate: Sat, 28 Nov 2026 10:45:38 GMT\r\n"
    "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello world!",
    /* framing and list headers, repeated kept headers */
    "POST /u HTTP/1.1\r\nHOST: a\r\nhost: b\r\nTransfer-Encoding: gzip, chunked\r\n"
    "Expect: 100-continue\r\ntracestate: a=1\r\nTraceState: b=2\r\nTRACEPARENT: " TP1 "\r\n"
    "traceparent: x\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n"
    "Content-Length: 5, 5\r\n\r\nhello",
    "HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    "HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nXXXX",
    "OPTIONS * HTTP/1.0\r\nX-Very-Long-Header-Name-Over-Sixteen: v\r\nContent-Length:3\r\n\r\nabc"
    "DELETE /x HTTP/1.1\r\nHost:  spaced  \r\n\r\n",
    /* names of 31 and 32 bytes (the longest the block path takes, and one more), a 16-byte one */
    "PUT /a HTTP/1.1\r\nX-Forwarded-For-Client-Addr-123: a\r\n"
    "X-Forwarded-For-Client-Addr-1234: b\r\nX-Forwarded-Proto: https\r\n"
    "Accept-Encodings: gzip\r\nTransfer-Encoding: chunked\r\nHost: h\r\n\r\n0\r\n\r\n",
};

/* Every byte of each base message replaced by each of the bytes the rules single out, or
 * deleted, or doubled: whole-block and byte-wise parses agree on every field and every error. */
Test(http_block, hostile_bytes_agree_with_byte_wise, .init = guard_init, .fini = guard_fini)
{
    static const unsigned char subs[] = {0,   '\t', '\r', '\n', ' ', ':', 0x7f, 0x80, '_',
                                         '(', ',',  ';',  'a',  'Z', '0', '-',  0x01, 0xff};
    static char s[1024];
    char label[96];

    for (size_t b = 0; b < sizeof(hostile_bases) / sizeof(hostile_bases[0]); b++) {
        const char *base = hostile_bases[b];
        size_t n = strlen(base);
        enum ldt_http_dir dir = base[0] == 'H' ? RS : RQ;
        sagree(dir, base, n, "base");
        for (size_t at = 0; at < n; at++) {
            for (size_t k = 0; k < sizeof(subs); k++) {
                memcpy(s, base, n);
                s[at] = (char)subs[k];
                snprintf(label, sizeof(label), "base %zu, byte %#x at %zu", b, subs[k], at);
                sagree(dir, s, n, label);
            }
            memcpy(s, base, at);
            memcpy(s + at, base + at + 1, n - at - 1);
            snprintf(label, sizeof(label), "base %zu, byte at %zu deleted", b, at);
            sagree(dir, s, n - 1, label);
            memcpy(s, base, at + 1);
            memcpy(s + at + 1, base + at, n - at);
            snprintf(label, sizeof(label), "base %zu, byte at %zu doubled", b, at);
            sagree(dir, s, n + 1, label);
        }
    }
}

/* The captures, each stream whole, byte by byte and in pieces of 7: the same snapshots. */
Test(http_block, captures_agree_with_byte_wise, .init = guard_init, .fini = guard_fini,
     .timeout = 60)
{
    for (size_t i = 0; i < sizeof(captures) / sizeof(captures[0]); i++) {
        struct blob req = load_capture(captures[i].name, "request");
        struct blob resp = load_capture(captures[i].name, "response");
        sagree(RQ, req.data, req.len, captures[i].name);
        sagree(RS, resp.data, resp.len, captures[i].name);
        free(req.data);
        free(resp.data);
    }
}
