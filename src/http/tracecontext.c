/* tracecontext.c - W3C traceparent/tracestate parse, validate, format: the extract/inject core. */
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

/* "00" "01" ... "ff": one 2-byte copy per encoded byte. */
static const char hexpairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

/* Inlined into the traceparent paths, where n is a constant and the loops unroll. */
static inline __attribute__((always_inline)) void encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        memcpy(out + 2 * i, hexpairs + 2 * in[i], 2);
}

/* Branch-free over the digits: every class entry must carry C_HEX; returns that bit (0: bad). */
static inline __attribute__((always_inline)) unsigned decode(const char *in, size_t n,
                                                             uint8_t *out)
{
    unsigned ok = C_HEX;
    for (size_t i = 0; i < n; i++) {
        unsigned hi = cls[(unsigned char)in[2 * i]];
        unsigned lo = cls[(unsigned char)in[2 * i + 1]];
        ok &= hi & lo;
        out[i] = (uint8_t)(((hi & 0x0f) << 4) | (lo & 0x0f));
    }
    return ok & C_HEX;
}

void ldt_hex_encode(const uint8_t *in, size_t n, char *out)
{
    encode(in, n, out);
}

int ldt_hex_decode(const char *in, size_t n, uint8_t *out)
{
    return decode(in, n, out) ? 0 : -EINVAL;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
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
    uint8_t ver, b[25]; /* trace-id, parent-id, flags */
    if (len < LDT_TP_LEN || !decode(s, 1, &ver) || ver == 0xff)
        return -EINVAL;
    if (ver == 0 && len != LDT_TP_LEN)
        return -EINVAL;
    if (len > LDT_TP_LEN && (s[LDT_TP_LEN] != '-' || !tail_ok(s + LDT_TP_LEN, len - LDT_TP_LEN)))
        return -EINVAL;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return -EINVAL;
    unsigned ok = decode(s + 3, 16, b) & decode(s + 36, 8, b + 16) & decode(s + 53, 1, b + 24);
    uint64_t t0, t1, p;
    memcpy(&t0, b, 8);
    memcpy(&t1, b + 8, 8);
    memcpy(&p, b + 16, 8);
    if (!ok || (t0 | t1) == 0 || p == 0)
        return -EINVAL;
    memcpy(out->trace_id, b, 16);
    memcpy(out->span_id, b + 16, 8);
    out->flags = b[24] & LDT_TC_FLAGS_KNOWN;
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
    encode(tc->trace_id, 16, out + 3);
    out[35] = '-';
    encode(tc->span_id, 8, out + 36);
    out[52] = '-';
    encode(&flags, 1, out + 53);
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

/* The next ','-separated member from s[*i], without the optional whitespace around it, as
 * [*b, *e); moves *i past the ','. */
static void next_member(const char *s, size_t len, size_t *i, size_t *b, size_t *e)
{
    size_t start = *i, end = *i;
    while (end < len && s[end] != ',')
        end++;
    *i = end + 1;
    while (start < end && is_ows(s[start]))
        start++;
    while (end > start && is_ows(s[end - 1]))
        end--;
    *b = start;
    *e = end;
}

int ldt_ts_normalize(const char *s, size_t len, char *out, size_t cap)
{
    struct ts_key keys[LDT_TS_MAX_MEMBERS];
    size_t nkeys = 0, used = 0;
    size_t i = 0, b, e;
    while (i <= len) {
        next_member(s, len, &i, &b, &e);
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
