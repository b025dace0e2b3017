/* tracecontext.c - W3C Trace Context traceparent/tracestate parse, validate and format (extract/inject). */
#include "ldtrace/tracecontext.h"

#include <errno.h>
#include <string.h>

/* Character classes for one table lookup per byte. HEX entries hold the digit's value in the low
 * nibble and the HEX bit, so that AND-ing two entries keeps the bit only when both were hex. */
enum {
    C_HEX = 0x10,     /* lowercase hex digit; low nibble = value */
    C_KEY = 0x20,     /* lcalpha / DIGIT / "_" / "-" / "*" / "/" (tracestate key characters) */
    C_LCALPHA = 0x40, /* a-z */
    C_VAL = 0x80,     /* tracestate value character: 0x20-0x7E except ',' and '=' */
};

#define H(v) (C_HEX | C_KEY | C_VAL | (v))
#define D(v) (H(v))
#define L (C_KEY | C_LCALPHA | C_VAL)
#define HL(v) (H(v) | C_LCALPHA)
#define K (C_KEY | C_VAL)
#define V C_VAL

static const unsigned char cls[256] = {
    [' '] = V, ['!'] = V, ['"'] = V, ['#'] = V, ['$'] = V, ['%'] = V, ['&'] = V, ['\''] = V,
    ['('] = V, [')'] = V, ['*'] = K, ['+'] = V, ['-'] = K, ['.'] = V, ['/'] = K,
    ['0'] = D(0), ['1'] = D(1), ['2'] = D(2), ['3'] = D(3), ['4'] = D(4),
    ['5'] = D(5), ['6'] = D(6), ['7'] = D(7), ['8'] = D(8), ['9'] = D(9),
    [':'] = V, [';'] = V, ['<'] = V, ['>'] = V, ['?'] = V, ['@'] = V,
    ['A'] = V, ['B'] = V, ['C'] = V, ['D'] = V, ['E'] = V, ['F'] = V, ['G'] = V, ['H'] = V,
    ['I'] = V, ['J'] = V, ['K'] = V, ['L'] = V, ['M'] = V, ['N'] = V, ['O'] = V, ['P'] = V,
    ['Q'] = V, ['R'] = V, ['S'] = V, ['T'] = V, ['U'] = V, ['V'] = V, ['W'] = V, ['X'] = V,
    ['Y'] = V, ['Z'] = V, ['['] = V, ['\\'] = V, [']'] = V, ['^'] = V, ['_'] = K, ['`'] = V,
    ['a'] = HL(10), ['b'] = HL(11), ['c'] = HL(12), ['d'] = HL(13), ['e'] = HL(14),
    ['f'] = HL(15), ['g'] = L, ['h'] = L, ['i'] = L, ['j'] = L, ['k'] = L, ['l'] = L,
    ['m'] = L, ['n'] = L, ['o'] = L, ['p'] = L, ['q'] = L, ['r'] = L, ['s'] = L, ['t'] = L,
    ['u'] = L, ['v'] = L, ['w'] = L, ['x'] = L, ['y'] = L, ['z'] = L,
    ['{'] = V, ['|'] = V, ['}'] = V, ['~'] = V,
};

#undef H
#undef D
#undef L
#undef HL
#undef K
#undef V

static const char hexdig[16] = "0123456789abcdef";

void ldt_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[in[i] >> 4];
        out[2 * i + 1] = hexdig[in[i] & 0x0f];
    }
}

int ldt_hex_decode(const char *in, size_t n, uint8_t *out)
{
    /* Branch-free over the digits: every entry must carry C_HEX, checked once at the end. */
    unsigned ok = C_HEX;
    for (size_t i = 0; i < n; i++) {
        unsigned hi = cls[(unsigned char)in[2 * i]];
        unsigned lo = cls[(unsigned char)in[2 * i + 1]];
        ok &= hi & lo;
        out[i] = (uint8_t)(((hi & 0x0f) << 4) | (lo & 0x0f));
    }
    return (ok & C_HEX) ? 0 : -EINVAL;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* A future version may carry more fields after the flags; we drop them, but a control byte there
 * still means the header is malformed (and must never reach a log or another request). */
static int tail_ok(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* Section 3.2.2 / 3.2.4: size and separators, then the hex fields. */
static int parse_trimmed(const char *s, size_t len, struct ldt_tc *out)
{
    uint8_t ver;
    if (len < LDT_TP_LEN || ldt_hex_decode(s, 1, &ver) < 0 || ver == 0xff)
        return -EINVAL;
    if (ver == 0 && len != LDT_TP_LEN)
        return -EINVAL;
    if (len > LDT_TP_LEN && (s[LDT_TP_LEN] != '-' || !tail_ok(s + LDT_TP_LEN, len - LDT_TP_LEN)))
        return -EINVAL;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -EINVAL;
    uint8_t flags;
    if (ldt_hex_decode(s + 3, 16, out->trace_id) < 0 || ldt_hex_decode(s + 36, 8, out->span_id) < 0 ||
        ldt_hex_decode(s + 53, 1, &flags) < 0)
        return -EINVAL;
    if (all_zero(out->trace_id, 16) || all_zero(out->span_id, 8))
        return -EINVAL;
    out->flags = flags & LDT_TC_FLAGS_KNOWN;
    out->version = ver;
    return 0;
}

int ldt_tc_parse(const char *s, size_t len, struct ldt_tc *out)
{
    while (len > 0 && is_ows(s[0])) {
        s++;
        len--;
    }
    while (len > 0 && is_ows(s[len - 1]))
        len--;
    int rc = parse_trimmed(s, len, out);
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

int ldt_tc_format(const struct ldt_tc *tc, char out[LDT_TP_LEN + 1])
{
    uint8_t flags = tc->flags & LDT_TC_FLAGS_KNOWN;
    out[0] = '0';
    out[1] = '0';
    out[2] = '-';
    ldt_hex_encode(tc->trace_id, 16, out + 3);
    out[35] = '-';
    ldt_hex_encode(tc->span_id, 8, out + 36);
    out[52] = '-';
    ldt_hex_encode(&flags, 1, out + 53);
    out[LDT_TP_LEN] = '\0';
    return LDT_TP_LEN;
}

/* ---- tracestate (section 3.3) ---- */

struct ts_key {
    const char *p;
    size_t n;
};

/* n characters of which the first must have class `first` and the rest C_KEY. */
static int key_part_ok(const char *p, size_t n, unsigned first, size_t max)
{
    if (n == 0 || n > max || !(cls[(unsigned char)p[0]] & first))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(cls[(unsigned char)p[i]] & C_KEY))
            return 0;
    return 1;
}

/* simple-key = lcalpha 0*255(keychar); multi-tenant-key = tenant-id "@" system-id with
 * tenant-id = (lcalpha / DIGIT) 0*240(keychar) and system-id = lcalpha 0*13(keychar). */
static int key_ok(const char *p, size_t n)
{
    const char *at = memchr(p, '@', n);
    if (at == NULL)
        return key_part_ok(p, n, C_LCALPHA, 256);
    size_t tn = (size_t)(at - p);
    /* C_LCALPHA | C_HEX as the first class admits exactly a-z and 0-9. */
    return key_part_ok(p, tn, C_LCALPHA | C_HEX, 241) &&
           key_part_ok(at + 1, n - tn - 1, C_LCALPHA, 14);
}

/* value = 0*255(chr) nblk-chr: 1 to 256 printable characters other than ',' and '=', the last not
 * a space. Tabs and every other control byte fail the class test. */
static int value_ok(const char *p, size_t n)
{
    if (n == 0 || n > 256 || p[n - 1] == ' ')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(cls[(unsigned char)p[i]] & C_VAL))
            return 0;
    return 1;
}

/* Validate one trimmed, non-empty list-member; store its key for the duplicate check. */
static int member_ok(const char *p, size_t n, struct ts_key *keys, size_t nkeys)
{
    const char *eq = memchr(p, '=', n);
    if (eq == NULL)
        return 0;
    size_t kn = (size_t)(eq - p);
    if (!key_ok(p, kn) || !value_ok(eq + 1, n - kn - 1))
        return 0;
    for (size_t i = 0; i < nkeys; i++)
        if (keys[i].n == kn && memcmp(keys[i].p, p, kn) == 0)
            return 0;
    keys[nkeys].p = p;
    keys[nkeys].n = kn;
    return 1;
}

int ldt_ts_normalize(const char *s, size_t len, char *out, size_t cap)
{
    struct ts_key keys[LDT_TS_MAX_MEMBERS];
    size_t nkeys = 0, used = 0;
    size_t i = 0;
    while (i <= len) {
        size_t start = i;
        while (i < len && s[i] != ',')
            i++;
        size_t b = start, e = i;
        i++; /* past the ',' (or past the end) */
        while (b < e && is_ows(s[b]))
            b++;
        while (e > b && is_ows(s[e - 1]))
            e--;
        if (b == e)
            continue; /* empty and whitespace-only members are allowed and dropped */
        if (nkeys == LDT_TS_MAX_MEMBERS || !member_ok(s + b, e - b, keys, nkeys))
            return -EINVAL;
        nkeys++;
        size_t need = (used ? 1 : 0) + (e - b);
        if (used + need < cap) {
            if (used)
                out[used] = ',';
            memcpy(out + used + (used ? 1 : 0), s + b, e - b);
        }
        used += need;
    }
    if (used >= cap)
        return -ENOSPC;
    out[used] = '\0';
    return (int)used;
}
