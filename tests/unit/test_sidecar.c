/* test_sidecar.c - unit tests of ldtraced's logic: JSON escaping and number formatting, the OTLP
 * encoder (every field parsed back with jansson), resource attributes, stack assembly, and the
 * drain loop over real segments in a private directory. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "ldtrace/http.h"
#include "sidecar/sidecar.h"

/* ---- helpers ---- */

static json_t *parse(const char *s, size_t n)
{
    json_error_t err;
    json_t *j = json_loadb(s, n, JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
    cr_assert_not_null(j, "invalid JSON: %s at %d: %.*s", err.text, err.position, (int)n, s);
    return j;
}

/* Escape s[0..n) and return the decoded string (malloc'ed, length in *outlen). */
static char *roundtrip(const char *s, size_t n, size_t *outlen)
{
    char *buf = malloc(LDT__JSON_STR_MAX(n));
    char *e = ldt__json_str(buf, s, n);
    cr_assert_leq((size_t)(e - buf), LDT__JSON_STR_MAX(n));
    json_t *j = parse(buf, (size_t)(e - buf));
    cr_assert(json_is_string(j));
    *outlen = json_string_length(j);
    char *out = malloc(*outlen + 1);
    memcpy(out, json_string_value(j), *outlen + 1);
    json_decref(j);
    free(buf);
    return out;
}

/* The value object of attribute key in an OTLP attribute array, or NULL. */
static json_t *attr(json_t *arr, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(arr, i, a)
    {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0)
            return json_object_get(a, "value");
    }
    return NULL;
}

static const char *attr_s(json_t *arr, const char *key)
{
    json_t *v = attr(arr, key);
    cr_assert_not_null(v, "attribute %s missing", key);
    json_t *s = json_object_get(v, "stringValue");
    cr_assert(json_is_string(s), "attribute %s is not a string", key);
    return json_string_value(s);
}

static long long attr_i(json_t *arr, const char *key)
{
    json_t *v = attr(arr, key);
    cr_assert_not_null(v, "attribute %s missing", key);
    json_t *s = json_object_get(v, "intValue");
    cr_assert(json_is_string(s), "attribute %s is not an int64 string", key);
    return strtoll(json_string_value(s), NULL, 10);
}

static const char *get_s(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "field %s missing or not a string", key);
    return json_string_value(v);
}

/* ---- JSON strings ---- */

/* Inline arrays, not pointers: Criterion's workers are fresh processes (other addresses). */
struct esc_case {
    char in[16];
    size_t inlen;
    char json[64]; /* exact encoder output */
};

#define ESC(lit, out)                                                                              \
    {                                                                                              \
        lit, sizeof(lit) - 1, out                                                                  \
    }

ParameterizedTestParameters(json_str, escapes_exactly)
{
    static struct esc_case cases[] = {
        ESC("plain", "\"plain\""),
        ESC("", "\"\""),
        ESC("a\"b", "\"a\\\"b\""),
        ESC("a\\b", "\"a\\\\b\""),
        ESC("GET /\r\nHost: x\r\n", "\"GET /\\r\\nHost: x\\r\\n\""),
        ESC("\t", "\"\\t\""),
        ESC("\x01\x1f", "\"\\u0001\\u001f\""),
        ESC("a\0b", "\"a\\u0000b\""),
        ESC("\x7f", "\"\x7f\""),
        ESC("\xc3\xa9", "\"\xc3\xa9\""),                                 /* é */
        ESC("\xe2\x82\xac", "\"\xe2\x82\xac\""),                         /* € */
        ESC("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""),                 /* U+1F600 */
        ESC("\x80", "\"\xef\xbf\xbd\""),                                 /* lone continuation */
        ESC("\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\""),                 /* overlong '/' */
        ESC("\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""), /* surrogate */
        ESC("\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""),
        ESC("\xe2\x82", "\"\xef\xbf\xbd\xef\xbf\xbd\""),   /* truncated at the end */
        ESC("\xe2\x82x", "\"\xef\xbf\xbd\xef\xbf\xbdx\""), /* truncated in the middle */
        ESC("\xff\xfe", "\"\xef\xbf\xbd\xef\xbf\xbd\""),
    };
    return cr_make_param_array(struct esc_case, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct esc_case *c, json_str, escapes_exactly)
{
    char out[256];
    char *e = ldt__json_str(out, c->in, c->inlen);
    cr_assert_eq((size_t)(e - out), strlen(c->json), "length for %s", c->json);
    cr_assert(memcmp(out, c->json, strlen(c->json)) == 0, "got %.*s want %s", (int)(e - out), out,
              c->json);
    size_t n;
    free(roundtrip(c->in, c->inlen, &n)); /* and jansson accepts it */
}

Test(json_str, every_byte_pair_is_valid_json)
{
    /* Every 2-byte input (65536 of them): the output always parses, and ASCII printable input
     * decodes back to itself. */
    for (unsigned a = 0; a < 256; a++) {
        for (unsigned b = 0; b < 256; b += 1) {
            char in[2] = {(char)a, (char)b};
            char out[LDT__JSON_STR_MAX(2)];
            char *e = ldt__json_str(out, in, 2);
            json_error_t err;
            json_t *j = json_loadb(out, (size_t)(e - out), JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
            cr_assert_not_null(j, "bytes %02x %02x: %s", a, b, err.text);
            if (a < 0x80 && b < 0x80)
                cr_assert(json_string_length(j) == 2 && memcmp(json_string_value(j), in, 2) == 0);
            json_decref(j);
        }
    }
}

Test(json_str, hostile_path_roundtrips)
{
    const char in[] = "/a\"b\\c\r\nX-Evil: 1\x01\x7f\xc3\xa9\xff";
    size_t n;
    char *out = roundtrip(in, sizeof(in) - 1, &n);
    const char want[] = "/a\"b\\c\r\nX-Evil: 1\x01\x7f\xc3\xa9\xef\xbf\xbd";
    cr_assert_eq(n, sizeof(want) - 1);
    cr_assert(memcmp(out, want, n) == 0);
    free(out);
}

/* ---- numbers and addresses ---- */

/* Strings of random tokens at every alignment against the escape each token must get, so that
 * the 8-bytes-at-a-time path and the byte path agree wherever a special byte falls. */
Test(json_str, token_strings_at_every_alignment)
{
    static const struct {
        const char *in, *out;
    } tok[] = {{"a", "a"},
               {"Z9/-", "Z9/-"},
               {"\"", "\\\""},
               {"\\", "\\\\"},
               {"\n", "\\n"},
               {"\x01", "\\u0001"},
               {"\x7f", "\x7f"},
               {"\xc3\xa9", "\xc3\xa9"},
               {"\xff", "\xef\xbf\xbd"},
               {"\xe2\x82\xac", "\xe2\x82\xac"}};
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        char in[128], want[512], out[800];
        size_t n = 0, w = 0;
        for (unsigned k = (unsigned)round % 7; k > 0; k--)
            in[n++] = want[w++] = 'x'; /* shifts the alignment */
        while (n < 100) {
            seed = seed * 1103515245u + 12345u;
            /* mostly plain text, so that 8-byte runs happen */
            unsigned t =
                (seed >> 16) % 40 < 30 ? (seed >> 8) % 2 : (seed >> 16) % LDT_ARRAY_LEN(tok);
            size_t li = strlen(tok[t].in), lo = strlen(tok[t].out);
            memcpy(in + n, tok[t].in, li);
            memcpy(want + w, tok[t].out, lo);
            n += li;
            w += lo;
        }
        char *e = ldt__json_str(out, in, n);
        cr_assert_eq((size_t)(e - out), w + 2, "round %d", round);
        cr_assert(out[0] == '"' && e[-1] == '"');
        cr_assert(memcmp(out + 1, want, w) == 0, "round %d", round);
    }
}

Test(fmt, decimal_and_hex)
{
    char b[32];
    static const uint64_t u[] = {0,
                                 9,
                                 10,
                                 99,
                                 100,
                                 101,
                                 12345,
                                 99999999,
                                 100000000,
                                 100000001,
                                 9999999999999999ull,
                                 10000000000000000ull,
                                 10000000000000001ull,
                                 1700000000000000000ull,
                                 1700000000123456789ull,
                                 UINT64_MAX};
    for (size_t i = 0; i < LDT_ARRAY_LEN(u); i++) {
        char want[32];
        snprintf(want, sizeof(want), "%llu", (unsigned long long)u[i]);
        *ldt__fmt_u64(b, u[i]) = '\0';
        cr_assert_str_eq(b, want);
    }
    static const int64_t s[] = {0, -1, -100, 42, INT64_MIN, INT64_MAX};
    for (size_t i = 0; i < LDT_ARRAY_LEN(s); i++) {
        char want[32];
        snprintf(want, sizeof(want), "%lld", (long long)s[i]);
        *ldt__fmt_i64(b, s[i]) = '\0';
        cr_assert_str_eq(b, want);
    }
    const uint8_t h[] = {0x00, 0x0f, 0xa5, 0xff};
    *ldt__fmt_hex(b, h, 4) = '\0';
    cr_assert_str_eq(b, "000fa5ff");
}

static void check_addr6(const char *text)
{
    uint8_t a[16];
    char b[64];
    cr_assert_eq(inet_pton(AF_INET6, text, a), 1);
    *ldt__fmt_addr(b, LDT_AF_INET6, a) = '\0';
    cr_assert_str_eq(b, text);
}

Test(fmt, addresses_rfc5952)
{
    char b[64];
    const uint8_t v4[16] = {192, 168, 0, 255};
    *ldt__fmt_addr(b, LDT_AF_INET, v4) = '\0';
    cr_assert_str_eq(b, "192.168.0.255");
    cr_assert_eq(ldt__fmt_addr(b, LDT_AF_UNIX, v4), b);
    cr_assert_eq(ldt__fmt_addr(b, LDT_AF_NONE, v4), b);
    const char *texts[] = {"::",
                           "::1",
                           "2001:db8::1",
                           "2001:db8::1:0:0:1",
                           "1:0:0:2::3",
                           "fe80::1:2",
                           "1::",
                           "1:2:3:4:5:6:7:8",
                           "2001:0:1::",
                           "::ffff:10.0.0.1",
                           "1:0:2:0:3:0:4:0"};
    for (size_t i = 0; i < LDT_ARRAY_LEN(texts); i++)
        check_addr6(texts[i]);
}

Test(fmt, ipv6_agrees_with_inet_ntop)
{
    srand(7);
    for (int n = 0; n < 20000; n++) {
        uint8_t a[16];
        for (int i = 0; i < 16; i += 2) {
            int zero = rand() % 2;
            a[i] = zero ? 0 : (uint8_t)rand();
            a[i + 1] = zero ? 0 : (uint8_t)rand();
        }
        static const uint8_t z12[12];
        if (memcmp(a, z12, 12) == 0)
            continue; /* glibc writes IPv4-compatible "::1.2.3.4", which RFC 5952 deprecates */
        char want[64], got[64];
        inet_ntop(AF_INET6, a, want, sizeof(want));
        *ldt__fmt_addr(got, LDT_AF_INET6, a) = '\0';
        cr_assert_str_eq(got, want);
    }
}

/* ---- records ---- */

static void fill_hdr(struct ldt_seg_hdr *h)
{
    memset(h, 0, sizeof(*h));
    h->pid = 31337;
    h->nonce = 0x00a1b2c3d4e5f607ull;
    strcpy(h->service_name, "checkout");
    strcpy(h->exe_name, "python3");
    strcpy(h->host_name, "box1");
    memcpy(h->command_args, "python3\0app.py\0--port\08080\0", 27);
    h->args_len = 27;
    strcpy(h->resource, "deployment.environment=prod,service.name=ignored,host.name=override,"
                        "team=a%2Cb%3Dc%20d");
    h->resource_len = (uint32_t)strlen(h->resource);
}

static void server_span(struct ldt_span_rec *s)
{
    memset(s, 0, sizeof(*s));
    s->type = LDT_REC_SPAN;
    s->kind = LDT_SPAN_SERVER;
    s->status = LDT_STATUS_ERROR;
    s->trace_flags = 1;
    s->method = LDT_HTTP_M_POST;
    s->op = LDT_OP_HTTP;
    s->flags = LDT_SPAN_F_PARENT_REMOTE | LDT_SPAN_F_HTTP10;
    for (int i = 0; i < 16; i++)
        s->trace_id[i] = (uint8_t)(0xa0 + i);
    for (int i = 0; i < 8; i++) {
        s->span_id[i] = (uint8_t)(0x10 + i);
        s->parent_id[i] = (uint8_t)(0xf0 + i);
    }
    s->start_ns = 1700000000123456789ull;
    s->dur_ns = 2500000;
    s->bytes_in = 345;
    s->bytes_out = 6789;
    s->io_ns = 12345;
    s->io_calls = 4;
    s->status_code = 503;
    s->peer_port = 54321;
    s->local_port = 8080;
    s->peer_family = LDT_AF_INET;
    s->local_family = LDT_AF_INET;
    memcpy(s->peer_addr, "\x0a\x00\x00\x07", 4);
    memcpy(s->local_addr, "\x7f\x00\x00\x01", 4);
    s->path_len = 11;
    memcpy(s->path, "/orders/\"1\"", 11);
}

static json_t *encode_one(const struct ldt_span_rec *s, const struct ldt__stack *st, json_t **res)
{
    struct ldt_seg_hdr h;
    struct ldt__batch bt;
    fill_hdr(&h);
    cr_assert_eq(ldt__batch_init(&bt, &h), 0);
    cr_assert_null(ldt__batch_finish(&bt, &(size_t){0}), "an empty batch makes no line");
    cr_assert_eq(ldt__batch_add(&bt, s, st), 0);
    size_t len;
    const char *line = ldt__batch_finish(&bt, &len);
    cr_assert_not_null(line);
    cr_assert_eq(line[len - 1], '\n');
    cr_assert_null(memchr(line, '\n', len - 1), "one request per line");
    json_t *root = parse(line, len);
    ldt__batch_free(&bt);
    json_t *rs = json_array_get(json_object_get(root, "resourceSpans"), 0);
    cr_assert_eq(json_array_size(json_object_get(root, "resourceSpans")), 1);
    *res = json_object_get(json_object_get(rs, "resource"), "attributes");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    json_t *scope = json_object_get(ss, "scope");
    cr_assert_str_eq(get_s(scope, "name"), "ldtrace");
    cr_assert_str_eq(get_s(scope, "version"), LDT_VERSION);
    json_t *spans = json_object_get(ss, "spans");
    cr_assert_eq(json_array_size(spans), 1);
    json_incref(*res);
    json_t *span = json_incref(json_array_get(spans, 0));
    json_decref(root);
    return span;
}

Test(encode, server_span_every_field)
{
    struct ldt_span_rec s;
    json_t *res;
    server_span(&s);
    json_t *j = encode_one(&s, NULL, &res);
    cr_assert_str_eq(get_s(j, "traceId"), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    cr_assert_str_eq(get_s(j, "spanId"), "1011121314151617");
    cr_assert_str_eq(get_s(j, "parentSpanId"), "f0f1f2f3f4f5f6f7");
    cr_assert_eq(json_integer_value(json_object_get(j, "flags")), 0x301);
    cr_assert_str_eq(get_s(j, "name"), "POST");
    cr_assert_eq(json_integer_value(json_object_get(j, "kind")), 2);
    cr_assert_str_eq(get_s(j, "startTimeUnixNano"), "1700000000123456789");
    cr_assert_str_eq(get_s(j, "endTimeUnixNano"), "1700000000125956789");
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "status"), "code")), 2);
    cr_assert_null(json_object_get(j, "events"));
    json_t *a = json_object_get(j, "attributes");
    cr_assert_str_eq(attr_s(a, "http.request.method"), "POST");
    cr_assert_str_eq(attr_s(a, "url.path"), "/orders/\"1\"");
    cr_assert_null(attr(a, "url.query"));
    cr_assert_eq(attr_i(a, "http.response.status_code"), 503);
    cr_assert_str_eq(attr_s(a, "server.address"), "127.0.0.1");
    cr_assert_eq(attr_i(a, "server.port"), 8080);
    cr_assert_str_eq(attr_s(a, "client.address"), "10.0.0.7");
    cr_assert_eq(attr_i(a, "client.port"), 54321);
    cr_assert_str_eq(attr_s(a, "network.peer.address"), "10.0.0.7");
    cr_assert_eq(attr_i(a, "network.peer.port"), 54321);
    cr_assert_str_eq(attr_s(a, "network.transport"), "tcp");
    cr_assert_str_eq(attr_s(a, "network.protocol.version"), "1.0");
    cr_assert_str_eq(attr_s(a, "error.type"), "503");
    cr_assert_eq(attr_i(a, "ldtrace.bytes_in"), 345);
    cr_assert_eq(attr_i(a, "ldtrace.bytes_out"), 6789);
    cr_assert_eq(attr_i(a, "ldtrace.io_ns"), 12345);
    cr_assert_eq(attr_i(a, "ldtrace.io_calls"), 4);
    cr_assert_null(attr(a, "ldtrace.injected"));
    cr_assert_eq(json_array_size(a), 16, "no other attribute");
    json_decref(j);
    json_decref(res);
}

Test(encode, client_span_every_field)
{
    struct ldt_span_rec s;
    json_t *res;
    server_span(&s);
    s.kind = LDT_SPAN_CLIENT;
    s.status = LDT_STATUS_UNSET;
    s.status_code = 200;
    s.trace_flags = 3;
    s.method = LDT_HTTP_M_OTHER;
    s.flags = LDT_SPAN_F_INJECTED | LDT_SPAN_F_QUERY | LDT_SPAN_F_CONN_DIED | LDT_SPAN_F_PATH_TRUNC;
    memset(s.parent_id, 0, 8);
    s.path_len = 9;
    memcpy(s.path, "/q?x=1&y", 9);
    s.host_len = 14;
    memcpy(s.host, "api.local:9000", 14);
    s.peer_family = LDT_AF_INET6;
    memcpy(s.peer_addr, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    s.peer_port = 9000;
    json_t *j = encode_one(&s, NULL, &res);
    cr_assert_null(json_object_get(j, "parentSpanId"), "root: no parentSpanId");
    cr_assert_null(json_object_get(j, "status"), "unset: no status");
    cr_assert_eq(json_integer_value(json_object_get(j, "flags")), 0x103);
    cr_assert_str_eq(get_s(j, "name"), "_OTHER");
    cr_assert_eq(json_integer_value(json_object_get(j, "kind")), 3);
    json_t *a = json_object_get(j, "attributes");
    cr_assert_str_eq(attr_s(a, "http.request.method"), "_OTHER");
    cr_assert_str_eq(attr_s(a, "url.path"), "/q");
    cr_assert_str_eq(attr_s(a, "url.query"), "x=1&y");
    cr_assert_eq(attr_i(a, "http.response.status_code"), 200);
    cr_assert_str_eq(attr_s(a, "server.address"), "api.local");
    cr_assert_eq(attr_i(a, "server.port"), 9000);
    cr_assert_null(attr(a, "client.address"));
    cr_assert_str_eq(attr_s(a, "network.peer.address"), "2001:db8::1");
    cr_assert_eq(attr_i(a, "network.peer.port"), 9000);
    cr_assert_str_eq(attr_s(a, "network.protocol.version"), "1.1");
    cr_assert_null(attr(a, "error.type"));
    cr_assert(json_is_true(json_object_get(attr(a, "ldtrace.injected"), "boolValue")));
    cr_assert(json_is_true(json_object_get(attr(a, "ldtrace.conn_died"), "boolValue")));
    cr_assert(json_is_true(json_object_get(attr(a, "ldtrace.path_truncated"), "boolValue")));
    cr_assert_null(attr(a, "ldtrace.replaced"));
    json_decref(j);
    json_decref(res);
}

/* Counters that are 0 are left out; a span with nothing else to say has "attributes":[]. */
Test(encode, zero_counters_left_out)
{
    struct ldt_span_rec s;
    json_t *res;
    server_span(&s);
    s.bytes_out = s.io_ns = s.io_calls = 0;
    json_t *j = encode_one(&s, NULL, &res);
    json_t *a = json_object_get(j, "attributes");
    cr_assert_eq(attr_i(a, "ldtrace.bytes_in"), 345);
    cr_assert_null(attr(a, "ldtrace.bytes_out"));
    cr_assert_null(attr(a, "ldtrace.io_ns"));
    cr_assert_null(attr(a, "ldtrace.io_calls"));
    json_decref(j);
    json_decref(res);
    memset(&s, 0, sizeof(s));
    s.type = LDT_REC_SPAN;
    s.kind = LDT_SPAN_INTERNAL;
    s.op = 77;
    s.span_id[7] = 1;
    j = encode_one(&s, NULL, &res);
    a = json_object_get(j, "attributes");
    cr_assert(json_is_array(a), "attributes is an array");
    cr_assert_eq(json_array_size(a), 0);
    json_decref(j);
    json_decref(res);
}

Test(encode, internal_spans_and_errno)
{
    static const struct {
        uint8_t op;
        const char *name;
    } ops[] = {{LDT_OP_CONNECT, "connect"}, {LDT_OP_DNS, "dns.lookup"}, {LDT_OP_SEND, "send"},
               {LDT_OP_RECV, "recv"},       {LDT_OP_ACCEPT, "accept"},  {77, "internal"}};
    for (size_t i = 0; i < LDT_ARRAY_LEN(ops); i++) {
        struct ldt_span_rec s;
        json_t *res;
        server_span(&s);
        s.kind = LDT_SPAN_INTERNAL;
        s.op = ops[i].op;
        s.err = ECONNREFUSED;
        s.status_code = 0;
        s.host_len = 9;
        memcpy(s.host, "db.svc\r\n\x01", 9);
        json_t *j = encode_one(&s, NULL, &res);
        cr_assert_str_eq(get_s(j, "name"), ops[i].name);
        cr_assert_eq(json_integer_value(json_object_get(j, "kind")), 1);
        json_t *a = json_object_get(j, "attributes");
        cr_assert_str_eq(attr_s(a, "error.type"), "ECONNREFUSED");
        cr_assert_null(attr(a, "http.request.method"));
        cr_assert_str_eq(attr_s(a, "network.peer.address"), "10.0.0.7");
        if (s.op == LDT_OP_CONNECT) {
            cr_assert_str_eq(attr_s(a, "server.address"), "db.svc\r\n\x01");
            cr_assert_eq(attr_i(a, "server.port"), 54321);
        }
        if (s.op == LDT_OP_DNS)
            cr_assert_str_eq(attr_s(a, "dns.question.name"), "db.svc\r\n\x01");
        json_decref(j);
        json_decref(res);
    }
}

Test(encode, hostile_record_fields_are_bounded)
{
    struct ldt_span_rec s;
    json_t *res;
    server_span(&s);
    s.kind = 200;
    s.status = 9;
    s.method = 250;
    s.path_len = 255; /* more than path[] holds: clamped, never read past */
    memset(s.path, '\xff', sizeof(s.path));
    s.host_len = 255;
    memset(s.host, '"', sizeof(s.host));
    s.peer_family = 99;
    s.local_family = LDT_AF_UNIX;
    json_t *j = encode_one(&s, NULL, &res);
    cr_assert_eq(json_integer_value(json_object_get(j, "kind")), 0);
    cr_assert_null(json_object_get(j, "status"));
    cr_assert_str_eq(get_s(j, "name"), "_OTHER");
    json_t *a = json_object_get(j, "attributes");
    cr_assert_eq(strlen(attr_s(a, "url.path")), 3 * LDT_SPAN_PATH_MAX);
    cr_assert_eq(strlen(attr_s(a, "server.address")), LDT_SPAN_HOST_MAX);
    cr_assert_str_eq(attr_s(a, "network.transport"), "unix");
    cr_assert_null(attr(a, "network.peer.address"));
    json_decref(j);
    json_decref(res);
}

Test(encode, resource_every_attribute)
{
    struct ldt_span_rec s;
    json_t *res;
    server_span(&s);
    json_t *j = encode_one(&s, NULL, &res);
    cr_assert_str_eq(attr_s(res, "service.name"), "checkout");
    cr_assert_str_eq(attr_s(res, "service.instance.id"), "31337-00a1b2c3d4e5f607");
    cr_assert_eq(attr_i(res, "process.pid"), 31337);
    cr_assert_str_eq(attr_s(res, "process.executable.name"), "python3");
    json_t *args =
        json_object_get(json_object_get(attr(res, "process.command_args"), "arrayValue"), "values");
    const char *want[] = {"python3", "app.py", "--port", "8080"};
    cr_assert_eq(json_array_size(args), 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_str_eq(get_s(json_array_get(args, i), "stringValue"), want[i]);
    cr_assert_str_eq(attr_s(res, "host.name"), "override");
    cr_assert_str_eq(attr_s(res, "telemetry.sdk.name"), "ldtrace");
    cr_assert_str_eq(attr_s(res, "telemetry.sdk.version"), LDT_VERSION);
    cr_assert_str_eq(attr_s(res, "deployment.environment"), "prod");
    cr_assert_str_eq(attr_s(res, "team"), "a,b=c d");
    cr_assert_eq(json_array_size(res), 10);
    json_decref(j);
    json_decref(res);
}

Test(encode, resource_defaults_without_names)
{
    struct ldt_seg_hdr h;
    struct ldt__buf b = {0};
    memset(&h, 0, sizeof(h));
    h.pid = 1;
    strcpy(h.exe_name, "srv");
    strcpy(h.resource, "bad-member-without-equals,x=1");
    h.resource_len = (uint32_t)strlen(h.resource);
    cr_assert_eq(ldt__res_encode(&b, &h), 1, "invalid resource string reported");
    json_t *r = parse(b.p, b.len);
    json_t *a = json_object_get(r, "attributes");
    cr_assert_str_eq(attr_s(a, "service.name"), "unknown_service:srv");
    cr_assert_null(attr(a, "x"), "the whole value is discarded");
    cr_assert_null(attr(a, "host.name"));
    cr_assert_null(attr(a, "process.command_args"));
    json_decref(r);
    ldt__buf_free(&b);
}

Test(encode, batch_of_many_spans_resets)
{
    struct ldt_seg_hdr h;
    struct ldt__batch bt;
    struct ldt_span_rec s;
    fill_hdr(&h);
    server_span(&s);
    cr_assert_eq(ldt__batch_init(&bt, &h), 0);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 1000 + round; i++) {
            s.span_id[7] = (uint8_t)i;
            cr_assert_eq(ldt__batch_add(&bt, &s, NULL), 0);
        }
        size_t len;
        const char *line = ldt__batch_finish(&bt, &len);
        json_t *root = parse(line, len);
        json_t *ss = json_array_get(
            json_object_get(json_array_get(json_object_get(root, "resourceSpans"), 0),
                            "scopeSpans"),
            0);
        cr_assert_eq(json_array_size(json_object_get(ss, "spans")), (size_t)(1000 + round));
        json_decref(root);
        ldt__batch_reset(&bt);
        ldt__batch_trim(&bt, 4096);
        cr_assert_leq(bt.buf.cap, 4096, "trimmed to what it keeps");
        cr_assert_eq(bt.buf.len, bt.prefix_len, "the prefix survives");
    }
    ldt__batch_free(&bt);
}

Test(encode, error_type_rules)
{
    struct ldt_span_rec s;
    char b[48];
    server_span(&s);
    s.status = LDT_STATUS_UNSET;
    s.status_code = 404;
    cr_assert_eq(ldt__error_type(&s, b, sizeof(b)), 0, "a 404 the shim did not call an error");
    s.status = LDT_STATUS_ERROR;
    ldt__error_type(&s, b, sizeof(b));
    cr_assert_str_eq(b, "404");
    s.status_code = 0;
    ldt__error_type(&s, b, sizeof(b));
    cr_assert_str_eq(b, "_OTHER");
    s.err = ETIMEDOUT;
    ldt__error_type(&s, b, sizeof(b));
    cr_assert_str_eq(b, "ETIMEDOUT");
    s.err = 100000;
    ldt__error_type(&s, b, sizeof(b));
    cr_assert_str_eq(b, "100000");
    cr_assert_eq(ldt__error_type(&s, b, 3), 2);
    cr_assert_str_eq(b, "10");
}

/* ---- resource attribute parsing ---- */

Test(resource, percent_decoding_and_trimming)
{
    struct ldt__kv *kv;
    const char in[] = " a = 1 ,, b%3D=x%2cy%25 ,c=,d=%E2%82%AC ,";
    int n = ldt__res_parse(in, sizeof(in) - 1, &kv);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(kv[0].key, "a");
    cr_assert_str_eq(kv[0].val, "1");
    cr_assert_str_eq(kv[1].key, "b=");
    cr_assert_str_eq(kv[1].val, "x,y%");
    cr_assert_str_eq(kv[2].key, "c");
    cr_assert_str_eq(kv[2].val, "");
    cr_assert_str_eq(kv[3].val, "\xe2\x82\xac");
    ldt__kv_free(kv, n);
    cr_assert_eq(ldt__res_parse("", 0, &kv), 0);
    ldt__kv_free(kv, 0);
    cr_assert_eq(ldt__res_parse("k=v=w", 5, &kv), 1);
    cr_assert_str_eq(kv[0].val, "v=w", "split at the first '='");
    ldt__kv_free(kv, 1);
}

struct bad_res {
    char in[16];
};

ParameterizedTestParameters(resource, bad_input_rejected)
{
    static struct bad_res bad[] = {{"novalue"}, {"a=1,novalue"}, {"=v"},    {" =v"},   {"a=%"},
                                   {"a=%4"},    {"a=%G1"},       {"a=%4g"}, {"%zz=1"}, {"a=1,b=%"}};
    return cr_make_param_array(struct bad_res, bad, sizeof(bad) / sizeof(bad[0]));
}

ParameterizedTest(struct bad_res *b, resource, bad_input_rejected)
{
    struct ldt__kv *kv = (struct ldt__kv *)1;
    cr_assert_eq(ldt__res_parse(b->in, strlen(b->in), &kv), -EINVAL, "%s", b->in);
    cr_assert_null(kv);
}

/* ---- stacks ---- */

static void stack_rec(struct ldt_stack_rec *r, const struct ldt_span_rec *s, int part, int nparts,
                      const char *text)
{
    memset(r, 0, sizeof(*r));
    r->type = LDT_REC_STACK;
    r->part = (uint8_t)part;
    r->nparts = (uint8_t)nparts;
    r->len = (uint16_t)strlen(text);
    memcpy(r->trace_id, s->trace_id, 16);
    memcpy(r->span_id, s->span_id, 8);
    memcpy(r->text, text, r->len);
}

Test(stack, assembles_parts_in_order)
{
    struct ldt__stack st = {0};
    struct ldt_stack_rec r;
    struct ldt_span_rec s;
    server_span(&s);
    s.flags |= LDT_SPAN_F_STACK;
    stack_rec(&r, &s, 0, 3, "app+0x10 main+0x4\n");
    cr_assert_eq(ldt__stack_feed(&st, &r), 1);
    stack_rec(&r, &s, 1, 3, "libc.so.6+0x2");
    cr_assert_eq(ldt__stack_feed(&st, &r), 1);
    stack_rec(&r, &s, 2, 3, "a\"\n");
    cr_assert_eq(ldt__stack_feed(&st, &r), 1);
    const struct ldt__stack *got = ldt__stack_take(&st, &s);
    cr_assert_not_null(got);
    cr_assert_eq(got->len, strlen("app+0x10 main+0x4\nlibc.so.6+0x2a\"\n"));
    cr_assert(memcmp(got->text, "app+0x10 main+0x4\nlibc.so.6+0x2a\"\n", got->len) == 0);
    json_t *res;
    json_t *j = encode_one(&s, got, &res);
    json_t *ev = json_array_get(json_object_get(j, "events"), 0);
    cr_assert_eq(json_array_size(json_object_get(j, "events")), 1);
    cr_assert_str_eq(get_s(ev, "name"), "exception");
    cr_assert_str_eq(get_s(ev, "timeUnixNano"), "1700000000125956789");
    json_t *a = json_object_get(ev, "attributes");
    cr_assert_str_eq(attr_s(a, "exception.type"), "503");
    cr_assert_str_eq(attr_s(a, "exception.message"), "HTTP status 503");
    cr_assert_str_eq(attr_s(a, "exception.stacktrace"), "app+0x10 main+0x4\nlibc.so.6+0x2a\"\n");
    json_decref(j);
    json_decref(res);
    cr_assert_null(ldt__stack_take(&st, &s), "taken once");
}

Test(stack, rejects_gaps_mismatches_and_incomplete)
{
    struct ldt__stack st = {0};
    struct ldt_stack_rec r;
    struct ldt_span_rec s, other;
    server_span(&s);
    s.flags |= LDT_SPAN_F_STACK;
    other = s;
    other.span_id[0] ^= 1;
    stack_rec(&r, &s, 1, 2, "x"); /* no part 0 */
    cr_assert_eq(ldt__stack_feed(&st, &r), 0);
    cr_assert_null(ldt__stack_take(&st, &s));
    stack_rec(&r, &s, 0, 2, "x"); /* incomplete */
    ldt__stack_feed(&st, &r);
    cr_assert_null(ldt__stack_take(&st, &s));
    stack_rec(&r, &other, 0, 1, "x"); /* complete, but for another span */
    ldt__stack_feed(&st, &r);
    cr_assert_null(ldt__stack_take(&st, &s));
    stack_rec(&r, &s, 0, 2, "x"); /* part 1 from another span */
    ldt__stack_feed(&st, &r);
    stack_rec(&r, &other, 1, 2, "y");
    cr_assert_eq(ldt__stack_feed(&st, &r), 0);
    cr_assert_null(ldt__stack_take(&st, &s));
    stack_rec(&r, &s, 0, 0, "x"); /* nparts 0 */
    cr_assert_eq(ldt__stack_feed(&st, &r), 0);
    stack_rec(&r, &s, 0, 1, "x"); /* span without F_STACK */
    ldt__stack_feed(&st, &r);
    s.flags &= (uint16_t)~LDT_SPAN_F_STACK;
    cr_assert_null(ldt__stack_take(&st, &s));
}

/* ---- the drain loop over real segments ---- */

static char tmpdir[64];

static void mk_tmp(void)
{
    strcpy(tmpdir, "/tmp/ldt-sidecar-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    chmod(tmpdir, 0700);
}

static void rm_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

static int count_ring_files(void)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "ls %s | grep -c '\\.ring$'", tmpdir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

/* Read the output file: returns the spans of all lines (a new array) and the number of lines. */
static json_t *read_spans(const char *path, int *lines)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    *lines = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        (*lines)++;
        json_t *root = parse(line, (size_t)n);
        json_t *rss = json_object_get(root, "resourceSpans");
        size_t i;
        json_t *rs;
        json_array_foreach(rss, i, rs)
        {
            json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
            json_array_extend(all, json_object_get(ss, "spans"));
        }
        json_decref(root);
    }
    free(line);
    fclose(f);
    return all;
}

TestSuite(drain, .init = mk_tmp, .fini = rm_tmp, .timeout = 30);

Test(drain, exports_spans_and_stacks_then_removes_exited_segment)
{
    struct ldt_seg_params p = {.nrings = 4, .ring_cap = 64, .service_name = "svc"};
    struct ldt_seg seg;
    cr_assert_eq(ldt_seg_create(tmpdir, &p, &seg), 0);
    unsigned ring = ldt_ring_claim(&seg, 1234);
    struct ldt_span_rec s;
    struct ldt_stack_rec r;
    server_span(&s);
    for (int i = 0; i < 50; i++) {
        s.span_id[7] = (uint8_t)i;
        s.flags = i == 10 ? LDT_SPAN_F_STACK : 0;
        if (i == 10) {
            stack_rec(&r, &s, 0, 2, "f1\n");
            cr_assert_eq(ldt_ring_push(&seg, ring, &r, sizeof(r)), 0);
            stack_rec(&r, &s, 1, 2, "f2");
            cr_assert_eq(ldt_ring_push(&seg, ring, &r, sizeof(r)), 0);
        }
        cr_assert_eq(ldt_ring_push(&seg, ring, &s, sizeof(s)), 0);
    }
    char out[128];
    snprintf(out, sizeof(out), "%s/out.jsonl", tmpdir);
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, out), 0);
    struct ldt__drain_opts o = {.dir = tmpdir, .exp = &e, .poll_ms = 1, .batch_max = 16};
    struct ldt__drain *d = ldt__drain_new(&o);
    cr_assert_eq(ldt__drain_all(d), 0);
    cr_assert_eq(count_ring_files(), 1, "a live producer's segment stays");
    ldt_seg_mark_exited(&seg);
    cr_assert_eq(ldt__drain_all(d), 0);
    cr_assert_eq(count_ring_files(), 0, "an exited producer's segment is removed");
    struct ldt__stats st;
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.spans, 50);
    cr_assert_eq(st.segments, 1);
    cr_assert_eq(st.bad_records, 0);
    cr_assert_eq(st.bad_segments, 0);
    ldt__drain_free(d);
    e.ops->close(&e);
    ldt_seg_unmap(&seg);
    int lines;
    json_t *spans = read_spans(out, &lines);
    cr_assert_eq(json_array_size(spans), 50);
    cr_assert_eq(lines, 4, "batches of 16: 16+16+16+2");
    for (size_t i = 0; i < 50; i++) {
        json_t *sp = json_array_get(spans, i);
        char want[17];
        snprintf(want, sizeof(want), "10111213141516%02zx", i);
        cr_assert_str_eq(get_s(sp, "spanId"), want, "order kept within a ring");
        json_t *ev = json_object_get(sp, "events");
        cr_assert_eq(json_array_size(ev), i == 10 ? 1u : 0u);
        if (i == 10)
            cr_assert_str_eq(attr_s(json_object_get(json_array_get(ev, 0), "attributes"),
                                    "exception.stacktrace"),
                             "f1\nf2");
    }
    json_decref(spans);
}

Test(drain, bad_segment_reported_once)
{
    char bad[128], out[128];
    snprintf(bad, sizeof(bad), "%s/999.0000000000000001.ring", tmpdir);
    snprintf(out, sizeof(out), "%s/out.jsonl", tmpdir);
    int fd = open(bad, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "garbage", 7), 7);
    close(fd);
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, out), 0);
    struct ldt__drain_opts o = {.dir = tmpdir, .exp = &e, .poll_ms = 1};
    struct ldt__drain *d = ldt__drain_new(&o);
    struct ldt__stats st;
    cr_assert_eq(ldt__drain_all(d), 0);
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.bad_segments, 0, "a fresh file may be a segment being created: not yet");
    struct timespec old[2] = {{.tv_sec = 1000000}, {.tv_sec = 1000000}};
    cr_assert_eq(utimensat(AT_FDCWD, bad, old, 0), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(ldt__drain_all(d), 0);
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.bad_segments, 1, "reported once while unchanged");
    old[1].tv_sec = 2000000; /* changed: looked at (and rejected) again */
    cr_assert_eq(utimensat(AT_FDCWD, bad, old, 0), 0);
    cr_assert_eq(ldt__drain_all(d), 0);
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.bad_segments, 2);
    cr_assert_eq(st.segments, 0);
    cr_assert_eq(count_ring_files(), 1, "a rejected file is left alone");
    ldt__drain_free(d);
    e.ops->close(&e);
}

Test(drain, torn_slot_of_exited_producer_is_skipped)
{
    struct ldt_seg_params p = {.nrings = 2, .ring_cap = 16, .service_name = "torn"};
    struct ldt_seg seg;
    cr_assert_eq(ldt_seg_create(tmpdir, &p, &seg), 0);
    unsigned ring = 1; /* the shared ring: there a reservation moves head before the commit */
    struct ldt_span_rec s;
    server_span(&s);
    cr_assert_eq(ldt_ring_push(&seg, ring, &s, sizeof(s)), 0);
    uint64_t pos;
    cr_assert_not_null(ldt_ring_reserve(&seg, ring, &pos)); /* the producer "dies" mid-write */
    s.span_id[0] = 0x77;
    cr_assert_eq(ldt_ring_push(&seg, ring, &s, sizeof(s)), 0);
    char out[128];
    snprintf(out, sizeof(out), "%s/out.jsonl", tmpdir);
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, out), 0);
    struct ldt__drain_opts o = {.dir = tmpdir, .exp = &e, .poll_ms = 1};
    struct ldt__drain *d = ldt__drain_new(&o);
    struct ldt__stats st;
    cr_assert_eq(ldt__drain_all(d), 0);
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.spans, 1, "alive: stops at the uncommitted slot (got %llu)",
                 (unsigned long long)st.spans);
    ldt_seg_mark_exited(&seg);
    cr_assert_eq(ldt__drain_all(d), 0);
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.spans, 2, "gone: the slot is skipped and the next record read");
    cr_assert_eq(st.torn, 1);
    cr_assert_eq(count_ring_files(), 0);
    ldt__drain_free(d);
    e.ops->close(&e);
    ldt_seg_unmap(&seg);
    int lines;
    json_t *spans = read_spans(out, &lines);
    cr_assert_eq(json_array_size(spans), 2);
    cr_assert_str_eq(get_s(json_array_get(spans, 1), "spanId"), "7711121314151617");
    json_decref(spans);
}

/* Make "<pid>.<nonce>.new" in tmpdir, `age` seconds old. */
static void make_new_file(char *path, size_t cap, pid_t pid, time_t age)
{
    snprintf(path, cap, "%s/%d.00000000000000aa.new", tmpdir, (int)pid);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    struct timespec t[2] = {{.tv_sec = time(NULL) - age}, {.tv_sec = time(NULL) - age}};
    cr_assert_eq(utimensat(AT_FDCWD, path, t, 0), 0);
}

Test(drain, stale_half_created_segment_of_a_dead_producer_is_removed)
{
    pid_t dead = fork();
    cr_assert_geq(dead, 0);
    if (dead == 0)
        _exit(0);
    waitpid(dead, NULL, 0);
    char gone[256], young[256], alive[256];
    make_new_file(gone, sizeof(gone), dead, 60);
    make_new_file(alive, sizeof(alive), getpid(), 60);
    snprintf(young, sizeof(young), "%s/%d.00000000000000bb.new", tmpdir, (int)dead);
    int fd = open(young, O_CREAT | O_WRONLY, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, "/dev/null"), 0);
    struct ldt__drain_opts o = {.dir = tmpdir, .exp = &e, .poll_ms = 1};
    struct ldt__drain *d = ldt__drain_new(&o);
    cr_assert_eq(ldt__drain_all(d), 0);
    cr_assert_eq(access(gone, F_OK), -1, "a dead producer's old .new file is removed");
    cr_assert_eq(access(alive, F_OK), 0, "a live producer's .new file is kept");
    cr_assert_eq(access(young, F_OK), 0, "a fresh .new file may still be renamed: kept");
    ldt__drain_free(d);
    e.ops->close(&e);
}

Test(drain, missing_directory_is_not_an_error)
{
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, "/dev/null"), 0);
    struct ldt__drain_opts o = {.dir = "/nonexistent/ldtrace-dir", .exp = &e, .poll_ms = 1};
    struct ldt__drain *d = ldt__drain_new(&o);
    cr_assert_eq(ldt__drain_pass(d), 0);
    cr_assert_eq(ldt__drain_all(d), 0);
    ldt__drain_free(d);
    e.ops->close(&e);
}

Test(export, file_open_error)
{
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, "/nonexistent/dir/out.jsonl"), -ENOENT);
}

Test(export, otlp_url_rules)
{
    static const struct {
        const char *in, *out;
    } ok[] = {{"http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"},
              {"http://h:4318/", "http://h:4318/v1/traces"},
              {"https://c.example/otlp/v1/traces", "https://c.example/otlp/v1/traces"},
              {"http://h/custom", "http://h/custom"}};
    char out[64];
    for (size_t i = 0; i < LDT_ARRAY_LEN(ok); i++) {
        cr_assert_eq(ldt__otlp_url(ok[i].in, out, sizeof(out)), 0, "%s", ok[i].in);
        cr_assert_str_eq(out, ok[i].out);
    }
    cr_assert_eq(ldt__otlp_url("ftp://h", out, sizeof(out)), -EINVAL);
    cr_assert_eq(ldt__otlp_url("127.0.0.1:4318", out, sizeof(out)), -EINVAL);
    cr_assert_eq(ldt__otlp_url("http://a-very-long-host-name.example.com:4318", out, 40),
                 -ENAMETOOLONG);
    struct ldt__exporter e;
    struct ldt__http_opts ho = {.url = "localhost:4318"};
    cr_assert_eq(ldt__export_http_open(&e, &ho), -EINVAL);
}

/* ---- the write-ahead journal ---- */

/* A journal entry for a line of len bytes at the end of out, then recovery with the output as
 * `how` leaves it: 'w' whole line written, 'p' partial, 'c' changed in the middle, 'e' changed at
 * its end. Returns what ldt__journal_recover says; *tail is ring 0's tail afterwards. */
static int journal_case(size_t len, char how, uint64_t *tail)
{
    struct ldt_seg_params p = {.nrings = 2, .ring_cap = 64, .service_name = "svc"};
    struct ldt_seg seg;
    struct ldt_span_rec s;
    server_span(&s);
    cr_assert_eq(ldt_seg_create(tmpdir, &p, &seg), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ldt_ring_push(&seg, 0, &s, sizeof(s)), 0);
    char path[512], out[128], why[128];
    snprintf(path, sizeof(path), "%s/%d.%016llx.ring", tmpdir, (int)getpid(),
             (unsigned long long)seg.hdr->nonce);
    struct ldt_seg_reader r;
    cr_assert_eq(ldt_seg_open(path, &r, why, sizeof(why)), 0, "%s", why);
    snprintf(out, sizeof(out), "%s/out.jsonl", tmpdir);
    FILE *f = fopen(out, "w");
    fputs("an earlier line\n", f);
    fclose(f);
    char *line = malloc(len);
    for (size_t i = 0; i < len; i++)
        line[i] = (char)('a' + i % 26);
    struct ldt__journal j = {.fd = -1};
    uint64_t tails[2] = {5, 0};
    cr_assert_eq(ldt__journal_open(&j, tmpdir), 0);
    cr_assert_eq(ldt__journal_begin(&j, &r, tails, out, 16, line, len), 0);
    if (how == 'c')
        line[len / 2] ^= 1; /* beyond the sampled ends of a long line */
    if (how == 'e')
        line[len - 1] ^= 1;
    int fd = open(out, O_WRONLY | O_APPEND);
    cr_assert_eq(write(fd, line, how == 'p' ? len - 1 : len),
                 (ssize_t)(how == 'p' ? len - 1 : len));
    close(fd);
    ldt__journal_close(&j);
    j.fd = -1;
    cr_assert_eq(ldt__journal_open(&j, tmpdir), 0);
    int rc = ldt__journal_recover(&j);
    cr_assert_eq(ldt__journal_recover(&j), 0, "the entry is gone after recovery");
    ldt__journal_close(&j);
    *tail = ldt_seg_tail(&r, 0);
    struct stat st;
    cr_assert_eq(stat(out, &st), 0);
    if (how == 'p')
        cr_assert_eq(st.st_size, 16, "the partial line is cut off");
    ldt_seg_close(&r);
    ldt_seg_unmap(&seg);
    unlink(path);
    unlink(out);
    free(line);
    return rc;
}

ParameterizedTestParameters(journal, recover_by_line_length)
{
    static size_t lens[] = {1, 100, 8192, 8193, 300000};
    return cr_make_param_array(size_t, lens, 5);
}

ParameterizedTest(size_t *len, journal, recover_by_line_length, .init = mk_tmp, .fini = rm_tmp)
{
    uint64_t tail;
    cr_assert_eq(journal_case(*len, 'w', &tail), 1, "a whole line: its tails are applied");
    cr_assert_eq(tail, 5);
    cr_assert_eq(journal_case(*len, 'p', &tail), 2, "a partial line is cut off");
    cr_assert_eq(tail, 0, "its records are read again");
    cr_assert_eq(journal_case(*len, 'e', &tail), 3, "a changed last byte is noticed");
    cr_assert_eq(tail, 0);
    if (*len <= 8192)
        cr_assert_eq(journal_case(*len, 'c', &tail), 3, "a short line is hashed whole");
}

/* A stack part out of place is a bad record, unless the producer dropped records (a full ring
 * took the parts before it): then it is an orphan, counted apart. */
static void orphan_case(int overflow, uint64_t *bad, uint64_t *orphans)
{
    struct ldt_seg_params p = {.nrings = 2, .ring_cap = 64, .service_name = "svc"};
    struct ldt_seg seg;
    cr_assert_eq(ldt_seg_create(tmpdir, &p, &seg), 0);
    struct ldt_span_rec s;
    struct ldt_stack_rec r;
    server_span(&s);
    for (int i = 0; overflow && i < 65; i++)
        ldt_ring_push(&seg, 0, &s, sizeof(s)); /* the 65th is dropped */
    char out[128];
    snprintf(out, sizeof(out), "%s/out.jsonl", tmpdir);
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, out), 0);
    struct ldt__drain_opts o = {.dir = tmpdir, .exp = &e, .poll_ms = 1, .no_journal = 1};
    struct ldt__drain *d = ldt__drain_new(&o);
    cr_assert_eq(ldt__drain_all(d), 0);
    s.flags = LDT_SPAN_F_STACK;
    stack_rec(&r, &s, 1, 2, "f2"); /* part 0 never came */
    cr_assert_eq(ldt_ring_push(&seg, 0, &r, sizeof(r)), 0);
    cr_assert_eq(ldt_ring_push(&seg, 0, &s, sizeof(s)), 0);
    ldt_seg_mark_exited(&seg);
    cr_assert_eq(ldt__drain_all(d), 0);
    struct ldt__stats st;
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.spans, overflow ? 65 : 1);
    *bad = st.bad_records;
    *orphans = st.orphan_parts;
    ldt__drain_free(d);
    e.ops->close(&e);
    ldt_seg_unmap(&seg);
}

Test(drain, stack_part_after_producer_drops_is_an_orphan_not_bad, .init = mk_tmp, .fini = rm_tmp)
{
    uint64_t bad, orphans;
    orphan_case(0, &bad, &orphans);
    cr_assert_eq(bad, 1, "no drop: the part is bad");
    cr_assert_eq(orphans, 0);
    orphan_case(1, &bad, &orphans);
    cr_assert_eq(bad, 0, "after drops: not bad");
    cr_assert_eq(orphans, 1);
}

/* Adaptive polling: a quiet ring is polled every 20 ms, a busy one is read again at once while it
 * yields records, then every poll_ms while its rate is high. */
Test(drain, sleep_follows_the_rings_fill_rate, .init = mk_tmp, .fini = rm_tmp)
{
    struct ldt_seg_params p = {.nrings = 2, .ring_cap = 256, .service_name = "svc"};
    struct ldt_seg seg;
    cr_assert_eq(ldt_seg_create(tmpdir, &p, &seg), 0);
    char out[128];
    snprintf(out, sizeof(out), "%s/out.jsonl", tmpdir);
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, out), 0);
    struct ldt__drain_opts o = {.dir = tmpdir, .exp = &e, .poll_ms = 5, .no_journal = 1};
    struct ldt__drain *d = ldt__drain_new(&o);
    cr_assert_eq(ldt__drain_pass(d), 0);
    usleep(150000); /* longer than the rate's decay: the new segment's rate is measured now */
    cr_assert_eq(ldt__drain_pass(d), 0);
    cr_assert_eq(ldt__drain_sleep_ns(d), 20000000u, "quiet: the longest sleep");
    struct ldt_span_rec s;
    server_span(&s);
    for (int i = 0; i < 200; i++)
        cr_assert_eq(ldt_ring_push(&seg, 0, &s, sizeof(s)), 0);
    cr_assert_eq(ldt__drain_pass(d), 200);
    cr_assert_eq(ldt__drain_sleep_ns(d), 0, "a ring filling within two polls: read again now");
    cr_assert_eq(ldt__drain_pass(d), 0);
    cr_assert_eq(ldt__drain_sleep_ns(d), 5000000u, "nothing new, rate still high: poll_ms");
    ldt_seg_mark_exited(&seg);
    cr_assert_eq(ldt__drain_all(d), 0);
    struct ldt__stats st;
    ldt__drain_stats(d, &st);
    cr_assert_eq(st.spans, 200);
    ldt__drain_free(d);
    e.ops->close(&e);
    ldt_seg_unmap(&seg);
}

/* A segment that appears is opened by the next pass (the directory's mtime changed), not at the
 * next periodic rescan. */
Test(drain, new_segment_read_by_the_next_pass, .init = mk_tmp, .fini = rm_tmp)
{
    char out[128];
    snprintf(out, sizeof(out), "%s/out.jsonl", tmpdir);
    struct ldt__exporter e;
    cr_assert_eq(ldt__export_file_open(&e, out), 0);
    struct ldt__drain_opts o = {
        .dir = tmpdir, .exp = &e, .poll_ms = 1, .rescan_ms = 60000, .no_journal = 1};
    struct ldt__drain *d = ldt__drain_new(&o);
    cr_assert_eq(ldt__drain_pass(d), 0);
    usleep(50000); /* past the "changed recently" window of the scan above */
    cr_assert_eq(ldt__drain_pass(d), 0);
    cr_assert_eq(ldt__drain_open_segments(d), 0);
    struct ldt_seg_params p = {.nrings = 2, .ring_cap = 64, .service_name = "svc"};
    struct ldt_seg seg;
    cr_assert_eq(ldt_seg_create(tmpdir, &p, &seg), 0);
    struct ldt_span_rec s;
    server_span(&s);
    cr_assert_eq(ldt_ring_push(&seg, 0, &s, sizeof(s)), 0);
    cr_assert_eq(ldt__drain_pass(d), 1, "read without waiting for the 60 s rescan");
    cr_assert_eq(ldt__drain_open_segments(d), 1);
    ldt_seg_mark_exited(&seg);
    cr_assert_eq(ldt__drain_all(d), 0);
    ldt__drain_free(d);
    e.ops->close(&e);
    ldt_seg_unmap(&seg);
}
