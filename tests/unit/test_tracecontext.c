/* test_tracecontext.c - unit tests for W3C traceparent/tracestate parse, normalise and format. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ldtrace/tracecontext.h"

#define SPEC_TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define SPEC_TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define SPEC_SPAN "00f067aa0ba902b7"
#define SPEC_TS "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"

/* ---- helpers ---- */

/* Copies s[len] to the very end of a readable page followed by a PROT_NONE page, so that any read
 * past len faults (picohttpparser's trick). */
struct guarded {
    char *map;
    size_t page;
};

static const char *guard_copy(struct guarded *g, const char *s, size_t len)
{
    g->page = (size_t)sysconf(_SC_PAGESIZE);
    g->map = mmap(NULL, 2 * g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(g->map, MAP_FAILED);
    cr_assert_eq(mprotect(g->map + g->page, g->page, PROT_NONE), 0);
    cr_assert_leq(len, g->page);
    char *dst = g->map + g->page - len;
    memcpy(dst, s, len);
    return dst;
}

static void guard_free(struct guarded *g)
{
    munmap(g->map, 2 * g->page);
}

static void expect_hex(const uint8_t *bytes, size_t n, const char *hex)
{
    char buf[64];
    ldt_hex_encode(bytes, n, buf);
    buf[2 * n] = '\0';
    cr_expect_str_eq(buf, hex);
}

static int ts(const char *s, char *out, size_t cap)
{
    return ldt_ts_normalize(s, strlen(s), out, cap);
}

/* ---- traceparent: table ---- */

struct tp_case {
    char in[128];
    size_t len;  /* 0: strlen(in) */
    int rc;
    char trace[33];
    char span[17];
    uint8_t flags;
    uint8_t version;
    char label[64];
};

#define OK(in_, tr, sp, fl, ver, lab) {in_, 0, 0, tr, sp, fl, ver, lab}
#define BAD(in_, lab) {in_, 0, -EINVAL, "", "", 0, 0, lab}

static struct tp_case tp_cases[] = {
    OK(SPEC_TP, SPEC_TRACE, SPEC_SPAN, 1, 0, "spec example, sampled"),
    OK("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", SPEC_TRACE, SPEC_SPAN, 0, 0,
       "spec example, not sampled"),
    OK("  \t" SPEC_TP " \t", SPEC_TRACE, SPEC_SPAN, 1, 0, "surrounding spaces and tabs ignored"),
    OK("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", SPEC_TRACE, SPEC_SPAN, 3, 0,
       "level 2 random flag kept"),
    OK("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", SPEC_TRACE, SPEC_SPAN, 3, 0,
       "unknown flag bits cleared (ff)"),
    OK("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", SPEC_TRACE, SPEC_SPAN, 1, 0,
       "unknown flag bits cleared (09)"),
    OK("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", SPEC_TRACE, SPEC_SPAN, 1, 1,
       "higher version, exactly 55 chars"),
    OK("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
       SPEC_TRACE, SPEC_SPAN, 1, 0xcc, "higher version, longer, '-' after flags"),
    OK("fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", SPEC_TRACE, SPEC_SPAN, 1, 0xfe,
       "version fe with an empty extra field"),
    OK("00-00000000000000000000000000000001-0000000000000001-01",
       "00000000000000000000000000000001", "0000000000000001", 1, 0, "ids with a single bit set"),
    BAD("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", "version 00 longer than 55"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what", "version 00 with extra"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "version 00, 54 chars"),
    BAD("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what", "higher version, no '-'"),
    BAD("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", "higher version, 54 chars"),
    BAD("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "uppercase trace-id"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", "uppercase parent-id"),
    BAD("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "uppercase version"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", "uppercase flags"),
    BAD("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "all-zero trace-id"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "all-zero parent-id"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", "non-hex in trace-id"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", "non-hex in parent-id"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g", "non-hex in flags"),
    BAD("0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "non-hex in version"),
    BAD("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", "wrong separators"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01", "trace-id one char too long"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001", "flags three chars"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx-evil: 1",
        "CRLF after the value (header injection)"),
    BAD("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-\r\nx-evil: 1",
        "CRLF in a future version's extra fields"),
    BAD("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-a\x01", "control byte in extra"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n", "trailing LF"),
    BAD("\r00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "leading CR"),
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\0", 56, -EINVAL, "", "", 0, 0,
     "trailing NUL"},
    {"00-4bf92f3577b34da6a3\0e929d0e0e4736-00f067aa0ba902b7-01", 55, -EINVAL, "", "", 0, 0,
     "embedded NUL"},
    BAD("", "empty"),
    BAD("   \t ", "only whitespace"),
    BAD(SPEC_TP "," SPEC_TP, "two values joined"),
    BAD("00 -4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "space inside"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\t1", "tab inside"),
    BAD("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-\xc3\xa9", "non-ASCII flags"),
};

ParameterizedTestParameters(traceparent, table)
{
    return cr_make_param_array(struct tp_case, tp_cases, sizeof(tp_cases) / sizeof(tp_cases[0]));
}

ParameterizedTest(struct tp_case *c, traceparent, table)
{
    size_t len = c->len ? c->len : strlen(c->in);
    struct guarded g;
    const char *in = guard_copy(&g, c->in, len);
    struct ldt_tc tc;
    memset(&tc, 0xaa, sizeof(tc));
    int rc = ldt_tc_parse(in, len, &tc);
    cr_expect_eq(rc, c->rc, "%s: rc %d, expected %d", c->label, rc, c->rc);
    if (c->rc == 0) {
        expect_hex(tc.trace_id, 16, c->trace);
        expect_hex(tc.span_id, 8, c->span);
        cr_expect_eq(tc.flags, c->flags, "%s: flags %02x", c->label, tc.flags);
        cr_expect_eq(tc.version, c->version, "%s: version %02x", c->label, tc.version);
    } else {
        static const struct ldt_tc zero;
        cr_expect_eq(memcmp(&tc, &zero, sizeof(tc)), 0, "%s: out not zeroed", c->label);
    }
    guard_free(&g);
}

/* ---- traceparent: properties ---- */

Test(traceparent, every_strict_prefix_invalid)
{
    const char *tp = SPEC_TP;
    struct ldt_tc tc;
    for (size_t n = 0; n < LDT_TP_LEN; n++) {
        struct guarded g;
        const char *in = guard_copy(&g, tp, n);
        cr_expect_eq(ldt_tc_parse(in, n, &tc), -EINVAL, "prefix of %zu bytes accepted", n);
        guard_free(&g);
    }
}

/* Every byte value at every position: accepted exactly when the grammar allows it, and then the
 * re-formatted header contains no byte outside lowercase hex and '-'. */
Test(traceparent, every_byte_at_every_position)
{
    char buf[LDT_TP_LEN];
    char out[LDT_TP_LEN + 1];
    struct ldt_tc tc;
    for (size_t pos = 0; pos < LDT_TP_LEN; pos++) {
        for (int b = 0; b < 256; b++) {
            memcpy(buf, SPEC_TP, LDT_TP_LEN);
            buf[pos] = (char)b;
            int dash = pos == 2 || pos == 35 || pos == 52;
            int hex = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f');
            int want = dash ? b == '-' : hex;
            if (pos < 2 && memcmp(buf, "ff", 2) == 0)
                want = 0;
            if (pos == 0 && b != '0' && hex)
                want = 1; /* a higher version of exactly 55 characters is fine */
            int rc = ldt_tc_parse(buf, LDT_TP_LEN, &tc);
            cr_assert_eq(rc == 0, want, "pos %zu byte 0x%02x: rc %d", pos, b, rc);
            if (rc == 0) {
                cr_assert_eq(ldt_tc_format(&tc, out), LDT_TP_LEN);
                for (size_t i = 0; i < LDT_TP_LEN; i++)
                    cr_assert(out[i] == '-' || (out[i] >= '0' && out[i] <= '9') ||
                              (out[i] >= 'a' && out[i] <= 'f'));
            }
        }
    }
}

/* ---- traceparent: format ---- */

Test(traceparent, format_round_trips_spec_example)
{
    struct ldt_tc tc;
    char out[LDT_TP_LEN + 1];
    cr_assert_eq(ldt_tc_parse(SPEC_TP, strlen(SPEC_TP), &tc), 0);
    cr_assert_eq(ldt_tc_format(&tc, out), LDT_TP_LEN);
    cr_expect_str_eq(out, SPEC_TP);
    cr_expect_eq(strlen(out), LDT_TP_LEN);
}

Test(traceparent, higher_version_reemitted_as_00)
{
    const char *in =
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-what-the-future-will-be-like";
    struct ldt_tc tc;
    char out[LDT_TP_LEN + 1];
    cr_assert_eq(ldt_tc_parse(in, strlen(in), &tc), 0);
    cr_expect_eq(tc.version, 0xcc);
    ldt_tc_format(&tc, out);
    cr_expect_str_eq(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
}

Test(traceparent, format_clears_unknown_flags)
{
    struct ldt_tc tc = {.flags = 0xfd, .version = 7};
    memset(tc.trace_id, 0xab, sizeof(tc.trace_id));
    memset(tc.span_id, 0x01, sizeof(tc.span_id));
    char out[LDT_TP_LEN + 1];
    memset(out, 'x', sizeof(out));
    cr_assert_eq(ldt_tc_format(&tc, out), LDT_TP_LEN);
    cr_expect_str_eq(out, "00-abababababababababababababababab-0101010101010101-01");
}

/* ---- hex helpers ---- */

Test(hex, encode_decode_round_trip)
{
    uint8_t in[256], back[256];
    char hex[512];
    for (int i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    ldt_hex_encode(in, 256, hex);
    cr_expect_eq(memcmp(hex, "000102", 6), 0);
    cr_expect_eq(memcmp(hex + 510, "ff", 2), 0);
    cr_assert_eq(ldt_hex_decode(hex, 256, back), 0);
    cr_expect_eq(memcmp(in, back, 256), 0);
}

Test(hex, decode_rejects_uppercase_and_non_hex)
{
    uint8_t b[2];
    cr_expect_eq(ldt_hex_decode("0aff", 2, b), 0);
    cr_expect_eq(b[0], 0x0a);
    cr_expect_eq(b[1], 0xff);
    cr_expect_eq(ldt_hex_decode("0A", 1, b), -EINVAL);
    cr_expect_eq(ldt_hex_decode("g0", 1, b), -EINVAL);
    cr_expect_eq(ldt_hex_decode(" 0", 1, b), -EINVAL);
    cr_expect_eq(ldt_hex_decode("0\0", 1, b), -EINVAL);
    cr_expect_eq(ldt_hex_decode("", 0, b), 0);
}

/* ---- tracestate: table ---- */

struct ts_case {
    char in[160];
    size_t len;
    int rc;            /* expected length, or -EINVAL */
    char out[160];
    char label[64];
};

#define TS_OK(in_, out_, lab) {in_, 0, (int)sizeof(out_) - 1, out_, lab}
#define TS_BAD(in_, lab) {in_, 0, -EINVAL, "", lab}

static struct ts_case ts_cases[] = {
    TS_OK(SPEC_TS, SPEC_TS, "spec example"),
    TS_OK(" rojo=00f067aa0ba902b7 ,\tcongo=t61rcWkgMzE\t ", SPEC_TS, "spaces and tabs dropped"),
    TS_OK("rojo=00f067aa0ba902b7" "," "congo=t61rcWkgMzE", SPEC_TS, "two header lines joined"),
    TS_OK("rojo=00f067aa0ba902b7" "," "" "," "congo=t61rcWkgMzE", SPEC_TS,
          "three lines joined, the middle one empty"),
    TS_OK(",, ,\t,rojo=00f067aa0ba902b7,,", "rojo=00f067aa0ba902b7", "empty members dropped"),
    TS_OK("", "", "empty header"),
    TS_OK(" \t ", "", "whitespace-only header"),
    TS_OK("congo=t61rcWkgMzE", "congo=t61rcWkgMzE", "single member"),
    TS_OK("a_-*/0=x", "a_-*/0=x", "every key character"),
    TS_OK("fw529a3039@dt=abc", "fw529a3039@dt=abc", "multi-tenant key"),
    TS_OK("1tenant@sys=v", "1tenant@sys=v", "tenant may start with a digit"),
    TS_OK("k=a b", "k=a b", "space inside a value"),
    TS_OK("k=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~", "k=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~",
          "every punctuation character allowed in a value"),
    TS_OK("a=1,b=1,a1=1", "a=1,b=1,a1=1", "similar keys are distinct"),
    TS_BAD("Rojo=1", "uppercase key"),
    TS_BAD("1a=1", "simple key starting with a digit"),
    TS_BAD("_a=1", "simple key starting with '_'"),
    TS_BAD("tenant@1sys=v", "system starting with a digit"),
    TS_BAD("@sys=v", "empty tenant"),
    TS_BAD("t@=v", "empty system"),
    TS_BAD("a@b@c=v", "two '@'"),
    TS_BAD("=v", "empty key"),
    TS_BAD("k=", "empty value"),
    TS_BAD("k= ", "value of only a space"),
    TS_BAD("k=a=b", "'=' in a value"),
    TS_BAD("k", "member without '='"),
    TS_BAD("k=a\tb", "tab inside a value"),
    TS_BAD("k=a\x7f", "DEL in a value"),
    TS_BAD("k=\xc3\xa9", "non-ASCII value"),
    TS_BAD("k=a\r\nx-evil: 1", "CRLF in a value (header injection)"),
    TS_BAD("a=1,\r\nb=2", "CRLF between members"),
    TS_BAD("a=1\n", "trailing LF"),
    TS_BAD("\ra=1", "leading CR"),
    TS_BAD("a=1,\x0b", "vertical tab member"),
    {"a=1\0b", 5, -EINVAL, "", "embedded NUL"},
    {"a=1,\0", 5, -EINVAL, "", "NUL member"},
    TS_BAD("a=1,b=2,a=3", "duplicate key"),
    TS_BAD("a=1,b=2;c=3", "';' is not a member separator but is a value char, '=' twice"),
    TS_BAD("k y=1", "space inside a key"),
};

ParameterizedTestParameters(tracestate, table)
{
    return cr_make_param_array(struct ts_case, ts_cases, sizeof(ts_cases) / sizeof(ts_cases[0]));
}

ParameterizedTest(struct ts_case *c, tracestate, table)
{
    size_t len = c->len ? c->len : strlen(c->in);
    struct guarded g;
    const char *in = guard_copy(&g, c->in, len);
    char out[LDT_TS_MAX];
    int rc = ldt_ts_normalize(in, len, out, sizeof(out));
    cr_expect_eq(rc, c->rc, "%s: rc %d, expected %d", c->label, rc, c->rc);
    if (rc >= 0 && c->rc >= 0)
        cr_expect_str_eq(out, c->out, "%s", c->label);
    guard_free(&g);
}

/* ---- tracestate: limits ---- */

/* Builds "m0=v,m1=v,..." with n members into buf. */
static size_t members(char *buf, size_t cap, int n, const char *sep)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%sm%d=v", i ? sep : "", i);
    return len;
}

Test(tracestate, thirty_two_members_accepted)
{
    char in[1024], out[1024];
    size_t len = members(in, sizeof(in), 32, ",");
    cr_expect_eq(ldt_ts_normalize(in, len, out, sizeof(out)), (int)len);
    cr_expect_str_eq(out, in);
}

Test(tracestate, thirty_three_members_rejected)
{
    char in[1024], out[1024];
    size_t len = members(in, sizeof(in), 33, ",");
    cr_expect_eq(ldt_ts_normalize(in, len, out, sizeof(out)), -EINVAL);
}

Test(tracestate, empty_members_do_not_count)
{
    char in[1024], out[1024], want[1024];
    size_t len = members(in, sizeof(in), 32, ", ,");
    size_t wlen = members(want, sizeof(want), 32, ",");
    cr_expect_eq(ldt_ts_normalize(in, len, out, sizeof(out)), (int)wlen);
    cr_expect_str_eq(out, want);
}

static void fill(char *p, char c, size_t n)
{
    memset(p, c, n);
    p[n] = '\0';
}

Test(tracestate, key_and_value_length_limits)
{
    char in[1200], part[300], out[1200];
    fill(part, 'k', 256);
    snprintf(in, sizeof(in), "%s=v", part);
    cr_expect_eq(ts(in, out, sizeof(out)), 258, "256-char key");
    fill(part, 'k', 257);
    snprintf(in, sizeof(in), "%s=v", part);
    cr_expect_eq(ts(in, out, sizeof(out)), -EINVAL, "257-char key");
    fill(part, 'v', 256);
    snprintf(in, sizeof(in), "k=%s", part);
    cr_expect_eq(ts(in, out, sizeof(out)), 258, "256-char value");
    fill(part, 'v', 257);
    snprintf(in, sizeof(in), "k=%s", part);
    cr_expect_eq(ts(in, out, sizeof(out)), -EINVAL, "257-char value");
}

Test(tracestate, multi_tenant_length_limits)
{
    char in[600], tenant[300], sys[20], out[600];
    fill(tenant, 't', 241);
    fill(sys, 's', 14);
    snprintf(in, sizeof(in), "%s@%s=v", tenant, sys);
    cr_expect_eq(ts(in, out, sizeof(out)), (int)strlen(in), "241@14");
    fill(tenant, 't', 242);
    snprintf(in, sizeof(in), "%s@%s=v", tenant, sys);
    cr_expect_eq(ts(in, out, sizeof(out)), -EINVAL, "242@14");
    fill(tenant, 't', 241);
    fill(sys, 's', 15);
    snprintf(in, sizeof(in), "%s@%s=v", tenant, sys);
    cr_expect_eq(ts(in, out, sizeof(out)), -EINVAL, "241@15");
}

Test(tracestate, too_long_for_buffer_is_enospc)
{
    char out[64];
    size_t n = strlen(SPEC_TS);
    cr_expect_eq(ldt_ts_normalize(SPEC_TS, n, out, n + 1), (int)n, "exact fit");
    cr_expect_str_eq(out, SPEC_TS);
    cr_expect_eq(ldt_ts_normalize(SPEC_TS, n, out, n), -ENOSPC, "one byte short");
    cr_expect_eq(ldt_ts_normalize(SPEC_TS, n, out, 0), -ENOSPC, "no room at all");
    cr_expect_eq(ldt_ts_normalize("", 0, out, 1), 0, "empty into one byte");
    cr_expect_eq(out[0], '\0');
    cr_expect_eq(ldt_ts_normalize("a=1,B=2", 7, out, 2), -EINVAL, "invalid wins over too long");
}

Test(tracestate, longer_than_ts_max_dropped)
{
    /* 32 members of ~20 characters: valid, but more than LDT_TS_MAX once joined. */
    char in[2048], out[LDT_TS_MAX];
    size_t len = 0;
    for (int i = 0; i < 32; i++)
        len += (size_t)snprintf(in + len, sizeof(in) - len, "%svendor%02d=0123456789abcdef",
                                i ? "," : "", i);
    cr_assert_gt(len, LDT_TS_MAX);
    cr_expect_eq(ldt_ts_normalize(in, len, out, sizeof(out)), -ENOSPC);
}

/* Every control byte at every position of the spec example is rejected, except a tab where
 * optional whitespace may stand (around a member). */
Test(tracestate, control_bytes_never_pass)
{
    const char *base = SPEC_TS;
    size_t n = strlen(base);
    char in[128], out[128];
    for (size_t pos = 0; pos <= n; pos++) {
        for (int b = 0; b < 0x20; b++) {
            memcpy(in, base, pos);
            in[pos] = (char)b;
            memcpy(in + pos + 1, base + pos, n - pos);
            int rc = ldt_ts_normalize(in, n + 1, out, sizeof(out));
            int ows_spot = pos == 0 || pos == n || base[pos - 1] == ',' || base[pos] == ',';
            if (b == '\t' && ows_spot) {
                cr_expect_eq(rc, (int)n, "tab at %zu", pos);
                cr_expect_str_eq(out, base);
            } else {
                cr_expect_eq(rc, -EINVAL, "byte 0x%02x at %zu: rc %d", b, pos, rc);
            }
        }
    }
}
