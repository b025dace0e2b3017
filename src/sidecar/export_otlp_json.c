/* export_otlp_json.c - encode span records as OTLP JSON: one ExportTraceServiceRequest per segment
 * and flush, one per line (the OpenTelemetry Collector file exporter format). This is the sidecar's
 * per-span hot path: literals are memcpy'd, numbers and ids are formatted by hand, and each span
 * reserves its worst case once so that the writers below never check for room. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "ldtrace/http.h"
#include "sidecar/sidecar.h"

/* Append a string literal at o and advance o. */
#define PUT(o, lit) (memcpy((o), (lit), sizeof(lit) - 1), (o) += sizeof(lit) - 1)

/* Attributes are written with a leading ','; the first one's ',' is later turned into the '['. */
#define ATTR_S(o, key, s, n)                                                                       \
    do {                                                                                           \
        PUT(o, ",{\"key\":\"" key "\",\"value\":{\"stringValue\":");                               \
        (o) = ldt__json_str((o), (s), (n));                                                        \
        PUT(o, "}}");                                                                              \
    } while (0)
#define ATTR_I(o, key, v)                                                                          \
    do {                                                                                           \
        PUT(o, ",{\"key\":\"" key "\",\"value\":{\"intValue\":\"");                                \
        (o) = ldt__fmt_i64((o), (int64_t)(v));                                                     \
        PUT(o, "\"}}");                                                                            \
    } while (0)
#define ATTR_TRUE(o, key) PUT(o, ",{\"key\":\"" key "\",\"value\":{\"boolValue\":true}}")

/* Room one span needs besides its stack: fixed text (about 2 KB with every attribute present) plus
 * the worst-case escaping of path and host, which may each appear twice. */
#define SPAN_BOUND (3072 + 2 * LDT__JSON_STR_MAX(LDT_SPAN_PATH_MAX + LDT_SPAN_HOST_MAX))
#define STACK_BOUND(n) (1024 + LDT__JSON_STR_MAX(n))

static const char *const op_names[] = {
    [LDT_OP_HTTP] = "http", [LDT_OP_CONNECT] = "connect", [LDT_OP_DNS] = "dns.lookup",
    [LDT_OP_SEND] = "send", [LDT_OP_RECV] = "recv",       [LDT_OP_ACCEPT] = "accept",
};

const char *ldt__span_name(const struct ldt_span_rec *s)
{
    if (s->op == LDT_OP_HTTP)
        return ldt_http_method_name(s->method < LDT_HTTP_M_COUNT ? s->method : LDT_HTTP_M_OTHER);
    if (s->op < LDT_ARRAY_LEN(op_names))
        return op_names[s->op];
    return "internal";
}

size_t ldt__error_type(const struct ldt_span_rec *s, char *out, size_t cap)
{
    char tmp[32];
    const char *t = NULL;
    if (s->err) {
        t = strerrorname_np(s->err);
        if (!t) {
            *ldt__fmt_i64(tmp, s->err) = '\0';
            t = tmp;
        }
    } else if (s->status == LDT_STATUS_ERROR && s->status_code >= 400) {
        *ldt__fmt_u64(tmp, s->status_code) = '\0';
        t = tmp;
    } else if (s->status == LDT_STATUS_ERROR) {
        t = "_OTHER";
    }
    size_t n = t ? strlen(t) : 0;
    if (cap == 0)
        return 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, t ? t : "", n);
    out[n] = '\0';
    return n;
}

static size_t clamp(size_t n, size_t max)
{
    return n < max ? n : max;
}

/* The Host header without its port ("[::1]:80" -> "::1", "a.b:8080" -> "a.b"). */
static size_t host_only(const char *h, size_t n, const char **start)
{
    *start = h;
    if (n && h[0] == '[') {
        const char *close = memchr(h, ']', n);
        if (close) {
            *start = h + 1;
            return (size_t)(close - h - 1);
        }
        return n;
    }
    const char *colon = memchr(h, ':', n);
    if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - h) - 1))
        return (size_t)(colon - h);
    return n;
}

static int inet_family(uint8_t f)
{
    return f == LDT_AF_INET || f == LDT_AF_INET6;
}

static char *attr_addr(char *o, const char *kjson, size_t klen, uint8_t fam, const uint8_t *a)
{
    char tmp[64];
    char *e = ldt__fmt_addr(tmp, fam, a);
    memcpy(o, kjson, klen);
    o += klen;
    *o++ = '"'; /* digits, hex letters, '.' and ':' only: nothing to escape */
    memcpy(o, tmp, (size_t)(e - tmp));
    o += e - tmp;
    PUT(o, "\"}}");
    return o;
}

#define ATTR_ADDR(o, key, fam, a)                                                                  \
    ((o) = attr_addr((o), ",{\"key\":\"" key "\",\"value\":{\"stringValue\":",                     \
                     sizeof(",{\"key\":\"" key "\",\"value\":{\"stringValue\":") - 1, (fam), (a)))

static char *net_attrs(char *o, const struct ldt_span_rec *s)
{
    if (inet_family(s->peer_family)) {
        ATTR_ADDR(o, "network.peer.address", s->peer_family, s->peer_addr);
        ATTR_I(o, "network.peer.port", s->peer_port);
    }
    if (inet_family(s->peer_family) || inet_family(s->local_family))
        ATTR_S(o, "network.transport", "tcp", 3);
    else if (s->peer_family == LDT_AF_UNIX || s->local_family == LDT_AF_UNIX)
        ATTR_S(o, "network.transport", "unix", 4);
    return o;
}

/* server.address/port as a client sees it: the Host header (or the name connected to), else the
 * peer's address; the port is the one actually connected to. */
static char *client_side_server(char *o, const struct ldt_span_rec *s)
{
    size_t hl = clamp(s->host_len, LDT_SPAN_HOST_MAX);
    if (hl) {
        const char *h;
        size_t n = host_only(s->host, hl, &h);
        ATTR_S(o, "server.address", h, n);
    } else if (inet_family(s->peer_family)) {
        ATTR_ADDR(o, "server.address", s->peer_family, s->peer_addr);
    }
    if (s->peer_port)
        ATTR_I(o, "server.port", s->peer_port);
    return o;
}

/* A server span: the server is us (local address, or the unix socket path kept in host[]), the
 * client is the peer. */
static char *server_side(char *o, const struct ldt_span_rec *s)
{
    size_t hl = clamp(s->host_len, LDT_SPAN_HOST_MAX);
    if (inet_family(s->local_family)) {
        ATTR_ADDR(o, "server.address", s->local_family, s->local_addr);
        ATTR_I(o, "server.port", s->local_port);
    } else if (hl && (s->local_family == LDT_AF_UNIX || s->peer_family == LDT_AF_UNIX)) {
        ATTR_S(o, "server.address", s->host, hl);
    }
    if (inet_family(s->peer_family)) {
        ATTR_ADDR(o, "client.address", s->peer_family, s->peer_addr);
        ATTR_I(o, "client.port", s->peer_port);
    }
    return o;
}

static char *http_attrs(char *o, const struct ldt_span_rec *s)
{
    const char *m = ldt__span_name(s);
    ATTR_S(o, "http.request.method", m, strlen(m));
    size_t pl = clamp(s->path_len, LDT_SPAN_PATH_MAX);
    const char *q = (s->flags & LDT_SPAN_F_QUERY) ? memchr(s->path, '?', pl) : NULL;
    size_t plen = q ? (size_t)(q - s->path) : pl;
    if (plen)
        ATTR_S(o, "url.path", s->path, plen);
    if (q)
        ATTR_S(o, "url.query", q + 1, pl - plen - 1);
    if (s->status_code)
        ATTR_I(o, "http.response.status_code", s->status_code);
    if (s->kind == LDT_SPAN_SERVER)
        o = server_side(o, s);
    else
        o = client_side_server(o, s);
    if (s->flags & LDT_SPAN_F_HTTP10)
        ATTR_S(o, "network.protocol.version", "1.0", 3);
    else
        ATTR_S(o, "network.protocol.version", "1.1", 3);
    return o;
}

static char *flag_attrs(char *o, uint16_t f)
{
    if (f & LDT_SPAN_F_INJECTED)
        ATTR_TRUE(o, "ldtrace.injected");
    if (f & LDT_SPAN_F_REPLACED)
        ATTR_TRUE(o, "ldtrace.replaced");
    if (f & LDT_SPAN_F_APP_TP)
        ATTR_TRUE(o, "ldtrace.app_traceparent");
    if (f & LDT_SPAN_F_CONN_DIED)
        ATTR_TRUE(o, "ldtrace.conn_died");
    if (f & LDT_SPAN_F_TIMEOUT)
        ATTR_TRUE(o, "ldtrace.timeout");
    if (f & LDT_SPAN_F_PATH_TRUNC)
        ATTR_TRUE(o, "ldtrace.path_truncated");
    if (f & LDT_SPAN_F_HOST_TRUNC)
        ATTR_TRUE(o, "ldtrace.host_truncated");
    return o;
}

/* The shim's I/O counters; a counter that is 0 is left out (absent reads as 0), which keeps
 * lines short for spans that never got to do I/O. */
static char *counter_attrs(char *o, const struct ldt_span_rec *s)
{
    if (s->bytes_in)
        ATTR_I(o, "ldtrace.bytes_in", s->bytes_in);
    if (s->bytes_out)
        ATTR_I(o, "ldtrace.bytes_out", s->bytes_out);
    if (s->io_ns)
        ATTR_I(o, "ldtrace.io_ns", s->io_ns);
    if (s->io_calls)
        ATTR_I(o, "ldtrace.io_calls", s->io_calls);
    return o;
}

static char *op_attrs(char *o, const struct ldt_span_rec *s)
{
    size_t hl = clamp(s->host_len, LDT_SPAN_HOST_MAX);
    if (s->op == LDT_OP_HTTP)
        o = http_attrs(o, s);
    else if (s->op == LDT_OP_CONNECT)
        o = client_side_server(o, s);
    else if (s->op == LDT_OP_DNS && hl)
        ATTR_S(o, "dns.question.name", s->host, hl);
    return net_attrs(o, s);
}

static char *all_attrs(char *o, const struct ldt_span_rec *s, const char *etype, size_t elen)
{
    char *open = o;
    o = op_attrs(o, s);
    if (elen)
        ATTR_S(o, "error.type", etype, elen);
    o = counter_attrs(o, s);
    o = flag_attrs(o, s->flags);
    if (o == open) { /* an INTERNAL span of an unknown op with nothing to say */
        PUT(o, "[]");
        return o;
    }
    *open = '['; /* the first attribute's ',' */
    *o++ = ']';
    return o;
}

static char *exception_event(char *o, const struct ldt_span_rec *s, const struct ldt__stack *st,
                             const char *etype, size_t elen, uint64_t end)
{
    char msg[96];
    const char *m = s->err ? strerrordesc_np(s->err) : NULL;
    if (!m && s->status_code) {
        memcpy(msg, "HTTP status ", 12);
        *ldt__fmt_u64(msg + 12, s->status_code) = '\0';
        m = msg;
    }
    PUT(o, ",\"events\":[{\"timeUnixNano\":\"");
    o = ldt__fmt_u64(o, end);
    PUT(o, "\",\"name\":\"exception\",\"attributes\":[");
    PUT(o, "{\"key\":\"exception.type\",\"value\":{\"stringValue\":");
    o = elen ? ldt__json_str(o, etype, elen) : ldt__json_str(o, "_OTHER", 6);
    PUT(o, "}}");
    ATTR_S(o, "exception.message", m ? m : "error", strlen(m ? m : "error"));
    ATTR_S(o, "exception.stacktrace", st->text, clamp(st->len, sizeof(st->text)));
    PUT(o, "]}]");
    return o;
}

static char *ids(char *o, const struct ldt_span_rec *s)
{
    static const uint8_t zero[8];
    PUT(o, "{\"traceId\":\"");
    o = ldt__fmt_hex(o, s->trace_id, 16);
    PUT(o, "\",\"spanId\":\"");
    o = ldt__fmt_hex(o, s->span_id, 8);
    if (memcmp(s->parent_id, zero, 8) != 0) {
        PUT(o, "\",\"parentSpanId\":\"");
        o = ldt__fmt_hex(o, s->parent_id, 8);
    }
    /* Span.flags: W3C trace flags in bits 0-7; bit 8 says bit 9 (parent is remote) is known. */
    PUT(o, "\",\"flags\":");
    uint32_t fl = s->trace_flags | 0x100u | (s->flags & LDT_SPAN_F_PARENT_REMOTE ? 0x200u : 0);
    return ldt__fmt_u64(o, fl);
}

static char *encode_span(char *o, const struct ldt_span_rec *s, const struct ldt__stack *st)
{
    char etype[48];
    size_t elen = ldt__error_type(s, etype, sizeof(etype));
    const char *name = ldt__span_name(s);
    uint64_t end = s->start_ns + s->dur_ns;
    o = ids(o, s);
    PUT(o, ",\"name\":");
    o = ldt__json_str(o, name, strlen(name));
    PUT(o, ",\"kind\":");
    *o++ = (char)('0' + (s->kind <= LDT_SPAN_CLIENT ? s->kind : 0));
    PUT(o, ",\"startTimeUnixNano\":\"");
    o = ldt__fmt_u64(o, s->start_ns);
    PUT(o, "\",\"endTimeUnixNano\":\"");
    o = ldt__fmt_u64(o, end);
    PUT(o, "\",\"attributes\":");
    o = all_attrs(o, s, etype, elen);
    if (st)
        o = exception_event(o, s, st, etype, elen, end);
    if (s->status == LDT_STATUS_ERROR)
        PUT(o, ",\"status\":{\"code\":2}");
    else if (s->status == LDT_STATUS_OK)
        PUT(o, ",\"status\":{\"code\":1}");
    *o++ = '}';
    return o;
}

int ldt__batch_add(struct ldt__batch *bt, const struct ldt_span_rec *s, const struct ldt__stack *st)
{
    size_t need = SPAN_BOUND + (st ? STACK_BOUND(st->len) : 0);
    if (ldt__buf_reserve(&bt->buf, need) < 0)
        return -ENOMEM;
    char *o = bt->buf.p + bt->buf.len;
    if (bt->nspans++)
        *o++ = ',';
    else
        bt->first_ns = ldt_clock_mono_ns();
    o = encode_span(o, s, st);
    bt->buf.len = (size_t)(o - bt->buf.p);
    return 0;
}

int ldt__batch_init(struct ldt__batch *bt, const struct ldt_seg_hdr *h)
{
    static const char head[] = "{\"resourceSpans\":[{\"resource\":";
    static const char scope[] =
        ",\"scopeSpans\":[{\"scope\":{\"name\":\"ldtrace\",\"version\":\"" LDT_VERSION
        "\"},\"spans\":[";
    memset(bt, 0, sizeof(*bt));
    if (ldt__buf_reserve(&bt->buf, sizeof(head)) < 0)
        return -ENOMEM;
    memcpy(bt->buf.p, head, sizeof(head) - 1);
    bt->buf.len = sizeof(head) - 1;
    int rc = ldt__res_encode(&bt->buf, h);
    if (rc < 0 || ldt__buf_reserve(&bt->buf, sizeof(scope)) < 0) {
        ldt__buf_free(&bt->buf);
        return -ENOMEM;
    }
    memcpy(bt->buf.p + bt->buf.len, scope, sizeof(scope) - 1);
    bt->buf.len += sizeof(scope) - 1;
    bt->prefix_len = bt->buf.len;
    return rc;
}

const char *ldt__batch_finish(struct ldt__batch *bt, size_t *len)
{
    static const char tail[] = "]}]}]}\n";
    if (bt->nspans == 0 || ldt__buf_reserve(&bt->buf, sizeof(tail)) < 0)
        return NULL;
    memcpy(bt->buf.p + bt->buf.len, tail, sizeof(tail) - 1);
    bt->buf.len += sizeof(tail) - 1;
    *len = bt->buf.len;
    return bt->buf.p;
}

void ldt__batch_reset(struct ldt__batch *bt)
{
    bt->buf.len = bt->prefix_len;
    bt->nspans = 0;
}

void ldt__batch_trim(struct ldt__batch *bt, size_t keep)
{
    size_t want = bt->buf.len > keep ? bt->buf.len : keep;
    if (bt->buf.cap <= 2 * want)
        return;
    char *p = realloc(bt->buf.p, want);
    if (p) { /* on failure the bigger buffer simply stays */
        bt->buf.p = p;
        bt->buf.cap = want;
    }
}

void ldt__batch_free(struct ldt__batch *bt)
{
    ldt__buf_free(&bt->buf);
    memset(bt, 0, sizeof(*bt));
}
