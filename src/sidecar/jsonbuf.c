/* jsonbuf.c - growable output buffer and the hand-written JSON string, integer, hex and address
 * formatters of the OTLP encoder's per-span path (no snprintf, no allocation per call). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "sidecar/sidecar.h"

static const char hex_digits[] = "0123456789abcdef";

static const char dec_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

int ldt__buf_reserve(struct ldt__buf *b, size_t n)
{
    if (LDT_LIKELY(b->cap - b->len >= n))
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

void ldt__buf_free(struct ldt__buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629, section 4: no overlongs, no surrogates,
 * nothing above U+10FFFF), or 0 when the lead byte at p does not start one. */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return n;
}

static char *esc_ascii(char *o, unsigned c)
{
    *o++ = '\\';
    switch (c) {
    case '"':
        *o++ = '"';
        break;
    case '\\':
        *o++ = '\\';
        break;
    case '\n':
        *o++ = 'n';
        break;
    case '\r':
        *o++ = 'r';
        break;
    case '\t':
        *o++ = 't';
        break;
    default:
        memcpy(o, "u00", 3);
        o[3] = hex_digits[c >> 4];
        o[4] = hex_digits[c & 15];
        o += 5;
    }
    return o;
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Non-zero when a byte of x is 0 (the classic bit trick; exact as a truth value). */
static uint64_t has_zero8(uint64_t x)
{
    return (x - ONES) & ~x & HIGHS;
}

/* Non-zero when one of the 8 bytes of v needs a look of its own: below 0x20, '"', '\\', or not
 * ASCII. */
static uint64_t special8(uint64_t v)
{
    return ((v - ONES * 0x20) & ~v & HIGHS) | has_zero8(v ^ (ONES * '"')) |
           has_zero8(v ^ (ONES * '\\')) | (v & HIGHS);
}

char *ldt__json_str(char *o, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    *o++ = '"';
    while (p < end) {
        /* Plain printable ASCII goes 8 bytes at a time. */
        while (end - p >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            if (special8(v))
                break;
            memcpy(o, p, 8);
            o += 8;
            p += 8;
        }
        if (p == end)
            break;
        unsigned c = *p;
        if (LDT_LIKELY(c >= 0x20 && c < 0x80 && c != '"' && c != '\\')) {
            *o++ = (char)c;
            p++;
        } else if (c < 0x80) {
            o = esc_ascii(o, c);
            p++;
        } else {
            size_t k = utf8_seq(p, (size_t)(end - p));
            if (k == 0) {
                memcpy(o, "\xef\xbf\xbd",
                       3); /* U+FFFD for each byte that starts no valid sequence */
                o += 3;
                p++;
            } else {
                memcpy(o, p, k);
                o += k;
                p += k;
            }
        }
    }
    *o++ = '"';
    return o;
}

/* Digits of v < 10^8. */
static unsigned digits8(uint32_t v)
{
    if (v < 10000)
        return v < 10 ? 1 : v < 100 ? 2 : v < 1000 ? 3 : 4;
    return v < 100000 ? 5 : v < 1000000 ? 6 : v < 10000000 ? 7 : 8;
}

/* Two digits of v < 100 at o. */
static void put2(char *o, uint32_t v)
{
    memcpy(o, dec_pairs + 2 * v, 2);
}

/* v < 10^8 without leading zeros, written backwards two digits at a time in 32-bit arithmetic. */
static char *fmt_small(char *out, uint32_t v)
{
    char *end = out + digits8(v), *t = end;
    while (v >= 100) {
        t -= 2;
        put2(t, v % 100);
        v /= 100;
    }
    if (v >= 10)
        put2(t - 2, v);
    else
        t[-1] = (char)('0' + v);
    return end;
}

/* Exactly 8 digits of v < 10^8 (leading zeros kept). */
static char *put8(char *o, uint32_t v)
{
    uint32_t hi = v / 10000, lo = v % 10000;
    put2(o, hi / 100);
    put2(o + 2, hi % 100);
    put2(o + 4, lo / 100);
    put2(o + 6, lo % 100);
    return o + 8;
}

/* Split into 8-digit pieces so that only one or two 64-bit divisions remain (the timestamps, 19
 * digits, are most of what a span formats). */
char *ldt__fmt_u64(char *out, uint64_t v)
{
    if (v < 100000000u)
        return fmt_small(out, (uint32_t)v);
    if (v < 10000000000000000u) {
        out = fmt_small(out, (uint32_t)(v / 100000000u));
        return put8(out, (uint32_t)(v % 100000000u));
    }
    uint64_t rest = v % 10000000000000000u;
    out = fmt_small(out, (uint32_t)(v / 10000000000000000u));
    out = put8(out, (uint32_t)(rest / 100000000u));
    return put8(out, (uint32_t)(rest % 100000000u));
}

char *ldt__fmt_i64(char *out, int64_t v)
{
    if (v >= 0)
        return ldt__fmt_u64(out, (uint64_t)v);
    *out++ = '-';
    return ldt__fmt_u64(out, (uint64_t)0 - (uint64_t)v);
}

char *ldt__fmt_hex(char *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_digits[in[i] >> 4];
        out[2 * i + 1] = hex_digits[in[i] & 15];
    }
    return out + 2 * n;
}

/* One octet, 1 to 3 digits. */
static char *fmt_octet(char *o, unsigned v)
{
    if (v >= 100) {
        *o++ = (char)('0' + v / 100);
        put2(o, v % 100);
        return o + 2;
    }
    if (v >= 10) {
        put2(o, v);
        return o + 2;
    }
    *o = (char)('0' + v);
    return o + 1;
}

static char *fmt_ipv4(char *o, const uint8_t *a)
{
    for (int i = 0; i < 4; i++) {
        if (i)
            *o++ = '.';
        o = fmt_octet(o, a[i]);
    }
    return o;
}

static char *fmt_word(char *o, unsigned w)
{
    int started = 0;
    for (int sh = 12; sh >= 0; sh -= 4) {
        unsigned d = (w >> sh) & 15;
        if (d || started || sh == 0) {
            *o++ = hex_digits[d];
            started = 1;
        }
    }
    return o;
}

/* RFC 5952 section 4: the longest run of two or more zero words becomes "::" (first on a tie). */
static char *fmt_ipv6(char *o, const uint8_t *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
        memcpy(o, "::ffff:", 7);
        return fmt_ipv4(o + 7, a + 12);
    }
    unsigned w[8];
    int best = -1, best_len = 1, run = 0;
    for (int i = 0; i < 8; i++) {
        w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
        run = w[i] ? 0 : run + 1;
        if (run > best_len) {
            best_len = run;
            best = i - run + 1;
        }
    }
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            *o++ = ':';
            *o++ = ':';
            i += best_len - 1;
            continue;
        }
        if (i && i != best + best_len)
            *o++ = ':';
        o = fmt_word(o, w[i]);
    }
    return o;
}

char *ldt__fmt_addr(char *out, uint8_t family, const uint8_t addr[16])
{
    if (family == LDT_AF_INET)
        return fmt_ipv4(out, addr);
    if (family == LDT_AF_INET6)
        return fmt_ipv6(out, addr);
    return out;
}
