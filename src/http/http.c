/* http.c - incremental HTTP/1.x sniffer: whole lines 16 bytes at a time, else byte by byte. */
#include "ldtrace/http.h"

#include <stddef.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* http/ depends on nothing else of ours (DESIGN.md), so no common.h here. */
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Why the parser is in LDT_HTTP_S_PASS (p->passthrough). */
enum { PASS_INVALID = 1, PASS_CAP = 2, PASS_TUNNEL = 3 };

/* p->sub: the fine-grained state. Start line, header and body states share one numbering. */
enum sub_state {
    SUB_NONE = 0,
    SUB_RQ_LEAD, /* before a request's method: empty lines are skipped (RFC 9112 2.2) */
    SUB_RQ_METHOD,
    SUB_RQ_TARGET,
    SUB_RQ_VERSION,
    SUB_ST_VERSION, /* "HTTP/1.x " of a status line */
    SUB_ST_CODE,
    SUB_ST_AFTER, /* after the three digits: SP, or the end of the line */
    SUB_ST_REASON,
    SUB_LINE_EOL, /* start line: expecting CR or LF */
    SUB_LINE_LF,  /* start line: CR seen, expecting LF */
    SUB_H_START,  /* first byte of a header line, or of the blank line */
    SUB_H_NAME,
    SUB_H_OWS, /* OWS before a field value */
    SUB_H_VALUE,
    SUB_H_LF,     /* CR of a header line seen */
    SUB_H_END_LF, /* CR of the blank line seen */
    SUB_B_DONE,   /* headers done, no body: EV_DONE on the next call */
    SUB_B_CL,     /* Content-Length body: p->remaining bytes left */
    SUB_B_CLOSE,  /* response body delimited by the connection closing */
    SUB_C_SIZE,   /* chunked: first hex digit of a chunk size */
    SUB_C_SIZE_MORE,
    SUB_C_EXT, /* chunk extension (or BWS) up to the end of the size line */
    SUB_C_SIZE_LF,
    SUB_C_DATA, /* chunk data: p->remaining bytes left */
    SUB_C_DATA_CR,
    SUB_C_DATA_LF,
    SUB_C_TRAILER, /* first byte of a trailer line, or of the final blank line */
    SUB_C_TRAILER_LINE,
    SUB_C_TRAILER_LF,
    SUB_C_END_LF,
};

/* p->hdr_id: the header whose value is being read. */
enum hdr_id { H_NONE = 0, H_HOST, H_TP, H_TS, H_CL, H_TE, H_CONN, H_UPGRADE, H_EXPECT };

/* Internal flags of the header block being read, kept in msg._pad: set while the headers stream
 * past, used to decide the framing, and cleared before EV_HEADERS so callers always see zero. */
#define X_TE 0x0001u        /* a Transfer-Encoding line was seen */
#define X_KEEPALIVE 0x0002u /* Connection: keep-alive */
#define X_HOST 0x0004u      /* a Host line was seen (only the first is kept) */
#define X_TP 0x0008u        /* a traceparent line was seen */

/* Bits of p->tok while reading list-valued headers. */
#define TOK_ENDED 0x80000000u /* Content-Length: OWS after the digits of the current element */
#define TOK_PARAM 0x80000000u /* token lists: inside ";params", ignored up to the next ',' */

#define CHUNK_LINE_MAX 4096 /* longest chunk-size line (with extensions) followed */
#define CL_DIGITS_MAX 18    /* keeps a Content-Length below 2^63 */

/* Byte classes. */
#define C_TCHAR 0x01  /* token character (RFC 9110 5.6.2) */
#define C_FV 0x02     /* allowed inside a field value or reason phrase: HTAB, SP, VCHAR, obs-text */
#define C_TARGET 0x04 /* allowed in a request target: VCHAR and obs-text */
/* Allowed in a method: A-Z, '-', '_' (stricter than token, to reject other protocols such as
 * Redis early). */
#define C_METHOD 0x08

static const uint8_t cls[256] = {
    ['\t'] = C_FV,
    [' '] = C_FV,
    ['!'] = C_TCHAR | C_FV | C_TARGET,
    ['"'] = C_FV | C_TARGET,
    ['#' ... '\''] = C_TCHAR | C_FV | C_TARGET,
    ['('] = C_FV | C_TARGET,
    [')'] = C_FV | C_TARGET,
    ['*' ... '+'] = C_TCHAR | C_FV | C_TARGET,
    [','] = C_FV | C_TARGET,
    ['-'] = C_TCHAR | C_FV | C_TARGET | C_METHOD,
    ['.'] = C_TCHAR | C_FV | C_TARGET,
    ['/'] = C_FV | C_TARGET,
    ['0' ... '9'] = C_TCHAR | C_FV | C_TARGET,
    [':' ... '@'] = C_FV | C_TARGET,
    ['A' ... 'Z'] = C_TCHAR | C_FV | C_TARGET | C_METHOD,
    ['['] = C_FV | C_TARGET,
    ['\\'] = C_FV | C_TARGET,
    [']'] = C_FV | C_TARGET,
    ['^'] = C_TCHAR | C_FV | C_TARGET,
    ['_'] = C_TCHAR | C_FV | C_TARGET | C_METHOD,
    ['`'] = C_TCHAR | C_FV | C_TARGET,
    ['a' ... 'z'] = C_TCHAR | C_FV | C_TARGET,
    ['{'] = C_FV | C_TARGET,
    ['|'] = C_TCHAR | C_FV | C_TARGET,
    ['}'] = C_FV | C_TARGET,
    ['~'] = C_TCHAR | C_FV | C_TARGET,
    [0x80 ... 0xff] = C_FV | C_TARGET,
};

static const char http1[] = "HTTP/1.";

static const char *const method_names[LDT_HTTP_M_COUNT] = {
    [LDT_HTTP_M_OTHER] = "_OTHER",    [LDT_HTTP_M_GET] = "GET",
    [LDT_HTTP_M_HEAD] = "HEAD",       [LDT_HTTP_M_POST] = "POST",
    [LDT_HTTP_M_PUT] = "PUT",         [LDT_HTTP_M_DELETE] = "DELETE",
    [LDT_HTTP_M_CONNECT] = "CONNECT", [LDT_HTTP_M_OPTIONS] = "OPTIONS",
    [LDT_HTTP_M_TRACE] = "TRACE",     [LDT_HTTP_M_PATCH] = "PATCH",
};

static inline int is_ows(unsigned c)
{
    return c == ' ' || c == '\t';
}

static inline int is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

static inline unsigned lower(unsigned c)
{
    return (c >= 'A' && c <= 'Z') ? c | 0x20u : c;
}

static inline int hexval(unsigned c)
{
    if (c >= '0' && c <= '9')
        return (int)(c - '0');
    c |= 0x20u;
    if (c >= 'a' && c <= 'f')
        return (int)(c - 'a' + 10);
    return -1;
}

static inline uint64_t load64(const char *s)
{
    uint64_t x;

    memcpy(&x, s, 8);
    return x;
}

static inline uint16_t load16(const void *s)
{
    uint16_t x;

    memcpy(&x, s, 2);
    return x;
}

static inline uint32_t load32(const char *s)
{
    uint32_t x;

    memcpy(&x, s, 4);
    return x;
}

/* s[n] equals the lowercase literal lit[n] (4 <= n <= 24) when folded with 0x20: compared as the
 * first and last words, and the middle word past 16, overlapping. Exact for bytes allowed in a
 * field value or name (HTAB, SP, VCHAR, obs-text) against a literal of lowercase letters, digits
 * and '-': no other such byte folds onto one of those. */
static inline int fold_eq(const char *s, const char *lit, size_t n)
{
    if (n < 8) {
        const uint32_t f = 0x20202020u;
        return !(((load32(s) | f) ^ load32(lit)) | ((load32(s + n - 4) | f) ^ load32(lit + n - 4)));
    }
    const uint64_t f = 0x2020202020202020ull;
    if (((load64(s) | f) ^ load64(lit)) | ((load64(s + n - 8) | f) ^ load64(lit + n - 8)))
        return 0;
    return n <= 16 || (load64(s + 8) | f) == load64(lit + 8);
}

enum ldt_http_method ldt_http_method_from(const char *tok, size_t len)
{
    int m;

    /* The one candidate of this length and first letter, then one compare. */
    switch (len) {
    case 3:
        m = tok[0] == 'G' ? LDT_HTTP_M_GET : LDT_HTTP_M_PUT;
        break;
    case 4:
        m = tok[0] == 'H' ? LDT_HTTP_M_HEAD : LDT_HTTP_M_POST;
        break;
    case 5:
        m = tok[0] == 'T' ? LDT_HTTP_M_TRACE : LDT_HTTP_M_PATCH;
        break;
    case 6:
        m = LDT_HTTP_M_DELETE;
        break;
    case 7:
        m = tok[0] == 'C' ? LDT_HTTP_M_CONNECT : LDT_HTTP_M_OPTIONS;
        break;
    default:
        return LDT_HTTP_M_OTHER;
    }
    return memcmp(tok, method_names[m], len) == 0 ? (enum ldt_http_method)m : LDT_HTTP_M_OTHER;
}

const char *ldt_http_method_name(enum ldt_http_method m)
{
    if ((unsigned)m >= LDT_HTTP_M_COUNT)
        return method_names[LDT_HTTP_M_OTHER];
    return method_names[m];
}

void ldt_http_init(struct ldt_http_parser *p, enum ldt_http_dir dir)
{
    /* The kept strings are valid up to their lengths only, and p->name up to p->tok: clearing
     * them is wasted work. Two fixed-size clears are a few stores (one of 112 bytes was a loop). */
    memset(p, 0, offsetof(struct ldt_http_parser, name));
    memset(&p->msg, 0, offsetof(struct ldt_http_msg, path));
    p->msg.path[0] = p->msg.host[0] = p->msg.tp[0] = p->msg.ts[0] = '\0';
    p->dir = (uint8_t)dir;
    p->state = LDT_HTTP_S_START;
    p->msg.content_length = -1;
}

void ldt_http_expect(struct ldt_http_parser *p, enum ldt_http_method method)
{
    p->no_body = method == LDT_HTTP_M_HEAD;
    p->connect = method == LDT_HTTP_M_CONNECT;
}

int ldt_http_classify(const char *buf, size_t len)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t i;

    for (i = 0; i < len && i < 7 && buf[i] == http1[i]; i++)
        continue;
    if (i == 7)
        return LDT_HTTP_RESPONSE;
    if (i == len)
        return LDT_HTTP_PARTIAL;
    for (i = 0; i < len && i <= LDT_HTTP_METHOD_MAX; i++) {
        if (b[i] == ' ') {
            /* "PRI * HTTP/2.0" is the HTTP/2 connection preface (RFC 9113 3.4), not HTTP/1.x. */
            if (i == 3 && memcmp(buf, "PRI", 3) == 0)
                return 0;
            return i > 0 ? LDT_HTTP_REQUEST : 0;
        }
        if (!(cls[b[i]] & C_METHOD) || (i == 0 && !(b[i] >= 'A' && b[i] <= 'Z')))
            return 0;
    }
    return i > LDT_HTTP_METHOD_MAX ? 0 : LDT_HTTP_PARTIAL;
}

/* Enter pass-through. Returns what ldt_http_feed returns: after a request that asked for a tunnel
 * (CONNECT or Upgrade), bytes that are not HTTP are the tunnel itself, so they are consumed without
 * an error; otherwise LDT_HTTP_INVALID. */
static ssize_t fail(struct ldt_http_parser *p, int why, size_t len)
{
    p->state = LDT_HTTP_S_PASS;
    p->ev = LDT_HTTP_EV_NONE;
    if (p->dir == LDT_HTTP_REQUEST && p->connect) {
        p->passthrough = PASS_TUNNEL;
        return (ssize_t)len;
    }
    p->passthrough = (uint8_t)why;
    return LDT_HTTP_INVALID;
}

static void start_message(struct ldt_http_parser *p)
{
    /* Clear the fixed fields only; the strings are kept NUL-terminated when there is room. */
    memset(&p->msg, 0, offsetof(struct ldt_http_msg, path));
    p->msg.path[0] = p->msg.host[0] = p->msg.tp[0] = p->msg.ts[0] = '\0';
    p->msg.content_length = -1;
    p->pos = 0;
    p->tok = 0;
    p->remaining = 0;
    p->msg_bytes = 0;
    p->hdr_id = H_NONE;
    p->state = LDT_HTTP_S_HEAD; /* p->sub: feed_start() sets it, telling the directions apart */
}

/* The message ended: report EV_DONE and decide what the next byte is. Inlined where a body-less
 * message ends, called from the other places (finish). */
static inline __attribute__((always_inline)) void finish_inline(struct ldt_http_parser *p)
{
    struct ldt_http_msg *m = &p->msg;

    p->ev = LDT_HTTP_EV_DONE;
    p->messages++;
    p->state = LDT_HTTP_S_START;
    p->sub = SUB_NONE;
    if (p->dir == LDT_HTTP_REQUEST) {
        /* Remember a tunnel request: what follows it may be the tunnel (see fail()). */
        p->connect = m->method == LDT_HTTP_M_CONNECT || (m->flags & LDT_HTTP_F_UPGRADE);
        return;
    }
    if (m->status < 200) {
        /* 1xx are interim (RFC 9110 15.2): the final response to the same request follows. */
        if (m->status == 101) {
            p->state = LDT_HTTP_S_PASS;
            p->passthrough = PASS_TUNNEL;
        }
        return;
    }
    if (p->connect && m->status < 300) {
        p->state = LDT_HTTP_S_PASS;
        p->passthrough = PASS_TUNNEL;
    }
    p->no_body = 0;
    p->connect = 0;
}

static __attribute__((noinline)) void finish(struct ldt_http_parser *p)
{
    finish_inline(p);
}

/* ---- header values ---- */

/* Where a copied header value goes: the destination, the room left there, its length field. */
static char *copy_dest(struct ldt_http_parser *p, size_t *room)
{
    struct ldt_http_msg *m = &p->msg;

    switch (p->hdr_id) {
    case H_HOST:
        *room = LDT_HTTP_HOST_MAX;
        return m->host;
    case H_TP:
        *room = LDT_HTTP_TP_MAX;
        return m->tp;
    default:
        *room = LDT_HTTP_TS_MAX - m->ts_len;
        return m->ts + m->ts_len;
    }
}

/* The first byte of a value (after OWS), at offset at of the message. */
static void value_start(struct ldt_http_parser *p, uint32_t at)
{
    struct ldt_http_msg *m = &p->msg;

    p->tok = 0;
    p->remaining = 0;
    if (p->hdr_id == H_TP) {
        m->tp_off = at;
    } else if (p->hdr_id == H_TS && m->ts_len > 0) {
        /* Several tracestate lines are one list joined with ',' (RFC 9110 5.3). */
        if (m->ts_len < LDT_HTTP_TS_MAX)
            m->ts[m->ts_len++] = ',';
        else
            m->flags |= LDT_HTTP_F_TS_TRUNC;
    } else if (p->hdr_id == H_UPGRADE && p->dir == LDT_HTTP_REQUEST) {
        m->flags |= LDT_HTTP_F_UPGRADE;
    }
}

/* Copy one value byte; p->remaining counts the bytes since the first non-OWS one, p->tok the
 * length up to the last non-OWS one (so trailing OWS is trimmed at the end of the line). */
static void copy_byte(struct ldt_http_parser *p, unsigned c)
{
    size_t room;
    char *dst = copy_dest(p, &room);

    if (p->remaining < room)
        dst[p->remaining] = (char)c;
    p->remaining++;
    if (!is_ows(c))
        p->tok = (uint32_t)p->remaining;
}

static void copy_end(struct ldt_http_parser *p)
{
    struct ldt_http_msg *m = &p->msg;
    size_t room;
    char *dst = copy_dest(p, &room);
    size_t kept = p->tok < room ? p->tok : room;
    int trunc = p->tok > room;

    if (kept < room)
        dst[kept] = '\0'; /* also cuts off trailing OWS that was copied */
    if (p->hdr_id == H_HOST) {
        m->host_len = (uint16_t)kept;
        m->flags |= trunc ? LDT_HTTP_F_HOST_TRUNC : 0;
    } else if (p->hdr_id == H_TP) {
        m->tp_len = (uint16_t)kept;
        m->flags |= trunc ? LDT_HTTP_F_TP_TRUNC : 0;
    } else {
        m->ts_len = (uint16_t)(m->ts_len + kept);
        m->flags |= trunc ? LDT_HTTP_F_TS_TRUNC : 0;
    }
}

/* End of one Content-Length list element. Identical repeated values are accepted as one; an empty
 * element or a different value makes the framing invalid (RFC 9112 6.3 item 5). */
static int cl_commit(struct ldt_http_parser *p)
{
    struct ldt_http_msg *m = &p->msg;

    if ((p->tok & ~TOK_ENDED) == 0)
        return -1;
    if ((m->flags & LDT_HTTP_F_HAS_CL) && (uint64_t)m->content_length != p->remaining)
        return -1;
    m->content_length = (int64_t)p->remaining;
    m->flags |= LDT_HTTP_F_HAS_CL;
    p->tok = 0;
    p->remaining = 0;
    return 0;
}

static int cl_byte(struct ldt_http_parser *p, unsigned c)
{
    if (c >= '0' && c <= '9') {
        if ((p->tok & TOK_ENDED) || p->tok >= CL_DIGITS_MAX)
            return -1;
        p->remaining = p->remaining * 10 + (c - '0');
        p->tok++;
        return 0;
    }
    if (is_ows(c)) {
        if (p->tok)
            p->tok |= TOK_ENDED;
        return 0;
    }
    if (c == ',')
        return cl_commit(p);
    return -1;
}

/* One token of a list (Transfer-Encoding, Connection, Expect), any case, n bytes, when it is one
 * of those the framing needs: applies it and returns 1; else 0 with nothing changed. */
static int list_known(struct ldt_http_parser *p, const char *tok, size_t n)
{
    struct ldt_http_msg *m = &p->msg;

#define IS(s) (n == sizeof(s) - 1 && fold_eq(tok, s, sizeof(s) - 1))
    if (p->hdr_id == H_TE) {
        if (!IS("chunked"))
            return 0;
        m->flags |= LDT_HTTP_F_CHUNKED;
    } else if (p->hdr_id == H_CONN) {
        if (IS("close"))
            m->flags |= LDT_HTTP_F_CLOSE;
        else if (IS("keep-alive"))
            m->_pad |= X_KEEPALIVE;
        else
            return 0;
    } else {
        if (!IS("100-continue"))
            return 0;
        m->flags |= LDT_HTTP_F_EXPECT100;
    }
#undef IS
    return 1;
}

/* One token of a list, any case, n bytes. */
static void list_token(struct ldt_http_parser *p, const char *tok, size_t n)
{
    /* Only the last coding decides: chunked must be the final one (RFC 9112 6.3 item 4). */
    if (!list_known(p, tok, n) && p->hdr_id == H_TE)
        p->msg.flags &= (uint16_t)~LDT_HTTP_F_CHUNKED;
}

/* End of one element of a token list; the lowercase token is in p->name, its length in p->tok. */
static void list_commit(struct ldt_http_parser *p)
{
    uint32_t n = p->tok & ~TOK_PARAM;

    /* Empty list elements are allowed (RFC 9110 5.6.1); no token we look for is longer than
     * p->name, so only its length is compared when it did not fit. */
    if (n > 0)
        list_token(p, p->name, n);
    p->tok = 0;
}

static void list_byte(struct ldt_http_parser *p, unsigned c)
{
    if (c == ',') {
        list_commit(p);
        p->tok = 0;
    } else if (c == ';') {
        p->tok |= TOK_PARAM;
    } else if (!is_ows(c) && !(p->tok & TOK_PARAM)) {
        if (p->tok < sizeof(p->name))
            p->name[p->tok] = (char)lower(c);
        if (p->tok < 0xffff)
            p->tok++;
    }
}

/* A whole list value b[n] (no leading OWS): a lone token is matched in place, anything else
 * (',', ';' or OWS inside) byte by byte. */
static void list_run(struct ldt_http_parser *p, const unsigned char *b, size_t n)
{
    size_t q = n, i;

    while (q > 0 && is_ows(b[q - 1]))
        q--;
    if (list_known(p, (const char *)b, q))
        return; /* the usual case: keep-alive, close, chunked, 100-continue */
    for (i = 0; i < q && b[i] != ',' && b[i] != ';' && !is_ows(b[i]); i++)
        continue;
    if (i < q) {
        for (i = 0; i < n; i++)
            list_byte(p, b[i]);
        return;
    }
    list_token(p, (const char *)b, q);
    p->tok = 0;
}

static int value_byte(struct ldt_http_parser *p, unsigned c)
{
    switch (p->hdr_id) {
    case H_HOST:
    case H_TP:
    case H_TS:
        copy_byte(p, c);
        return 0;
    case H_CL:
        return cl_byte(p, c);
    case H_TE:
    case H_CONN:
    case H_EXPECT:
        list_byte(p, c);
        return 0;
    default:
        return 0;
    }
}

/* The end of a header line (its value may be empty). */
static int header_end(struct ldt_http_parser *p)
{
    int rc = 0;

    switch (p->hdr_id) {
    case H_HOST:
    case H_TP:
    case H_TS:
        copy_end(p);
        break;
    case H_CL:
        rc = cl_commit(p);
        break;
    case H_TE:
    case H_CONN:
    case H_EXPECT:
        list_commit(p);
        break;
    default:
        break;
    }
    p->hdr_id = H_NONE;
    p->tok = 0;
    p->remaining = 0;
    return rc;
}

/* Which interesting header the name s[n] is: dispatch on the length, then one folded compare. */
static inline __attribute__((always_inline)) int name_id(const char *s, size_t n)
{
#define IS(lit, id) (fold_eq(s, lit, sizeof(lit) - 1) ? (id) : H_NONE)
    switch (n) {
    case 4:
        return IS("host", H_HOST);
    case 6:
        return IS("expect", H_EXPECT);
    case 7:
        return IS("upgrade", H_UPGRADE);
    case 10:
        return (s[0] | 0x20) == 't' ? IS("tracestate", H_TS) : IS("connection", H_CONN);
    case 11:
        return IS("traceparent", H_TP);
    case 14:
        return IS("content-length", H_CL);
    case 17:
        return IS("transfer-encoding", H_TE);
    default:
        return H_NONE;
    }
#undef IS
}

/* A header line named id begins: note what the framing needs and pick what to keep. */
static void name_apply(struct ldt_http_parser *p, int id)
{
    struct ldt_http_msg *m = &p->msg;

    if (id == H_HOST) {
        /* Only the first Host line is kept. */
        id = (m->_pad & X_HOST) ? H_NONE : H_HOST;
        m->_pad |= X_HOST;
    }
    if (id == H_TE)
        m->_pad |= X_TE;
    if (id == H_TP) {
        /* Keep the first traceparent; a second one makes the context invalid (W3C 3.2). */
        if (m->_pad & X_TP) {
            m->flags |= LDT_HTTP_F_TP_MULTI;
            id = H_NONE;
        }
        m->_pad |= X_TP;
    }
    p->hdr_id = (uint8_t)id;
    p->tok = 0;
    p->remaining = 0;
}

/* The header name (lowercase in p->name, length p->tok) is complete: pick what to keep. */
static void header_name(struct ldt_http_parser *p)
{
    name_apply(p, p->tok > sizeof(p->name) ? H_NONE : name_id(p->name, p->tok));
}

/* ---- framing ---- */

/* Body framing of a request (RFC 9112 6.3): chunked, Content-Length, or none. */
static inline __attribute__((always_inline)) int frame_request(struct ldt_http_parser *p)
{
    struct ldt_http_msg *m = &p->msg;

    if (m->_pad & X_TE) {
        /* A request whose last coding is not chunked, or any HTTP/1.0 message with
         * Transfer-Encoding, cannot be framed (RFC 9112 6.1, 6.3 item 4). */
        if (!(m->flags & LDT_HTTP_F_CHUNKED) || m->minor == 0)
            return -1;
        return SUB_C_SIZE;
    }
    if (m->method == LDT_HTTP_M_CONNECT)
        return SUB_B_DONE;
    if (m->content_length > 0)
        return SUB_B_CL;
    return SUB_B_DONE;
}

/* Body framing of a response (RFC 9112 6.3 items 1-7). */
static inline __attribute__((always_inline)) int frame_response(struct ldt_http_parser *p)
{
    struct ldt_http_msg *m = &p->msg;
    unsigned st = m->status;

    if (st == 101)
        m->flags |= LDT_HTTP_F_UPGRADE;
    if (st < 200 || st == 204 || st == 304 || p->no_body || (p->connect && st < 300))
        return SUB_B_DONE;
    if ((m->_pad & X_TE) && (m->flags & LDT_HTTP_F_CHUNKED) && m->minor > 0)
        return SUB_C_SIZE;
    if (!(m->_pad & X_TE) && (m->flags & LDT_HTTP_F_HAS_CL))
        return m->content_length > 0 ? SUB_B_CL : SUB_B_DONE;
    m->flags |= LDT_HTTP_F_UNTIL_CLOSE;
    return SUB_B_CLOSE;
}

/* The blank line ended the header block. Returns -1 when the framing is invalid. Inlined into
 * the whole-block path, called from the others (headers_done). */
static inline __attribute__((always_inline)) int headers_end(struct ldt_http_parser *p)
{
    struct ldt_http_msg *m = &p->msg;
    int sub;

    if (m->minor == 0) {
        m->flags |= LDT_HTTP_F_HTTP10;
        if (!(m->_pad & X_KEEPALIVE))
            m->flags |= LDT_HTTP_F_CLOSE;
    }
    sub = p->dir == LDT_HTTP_REQUEST ? frame_request(p) : frame_response(p);
    if (sub < 0)
        return -1;
    m->_pad = 0; /* the internal flags are not needed past the header block */
    p->state = LDT_HTTP_S_BODY;
    p->sub = (uint8_t)sub;
    p->tok = 0;
    p->remaining = sub == SUB_B_CL ? (uint64_t)m->content_length : 0;
    p->ev = LDT_HTTP_EV_HEADERS;
    return 1;
}

static __attribute__((noinline)) int headers_done(struct ldt_http_parser *p)
{
    return headers_end(p);
}

/* ---- start line and headers ---- */

static void start_line_done(struct ldt_http_parser *p)
{
    p->msg.reqline_len = p->pos;
    p->sub = SUB_H_START;
}

/* One byte of the start line or of the header block. Returns 0 to go on, 1 when the header block
 * ended (EV_HEADERS), -1 when the stream is not valid HTTP/1.x. */
static int head_byte(struct ldt_http_parser *p, unsigned c)
{
    struct ldt_http_msg *m = &p->msg;
    uint32_t at = p->pos++;

    switch (p->sub) {
    case SUB_RQ_LEAD:
        if (c == '\r' || c == '\n')
            return 0;
        if (!(c >= 'A' && c <= 'Z'))
            return -1;
        p->name[0] = (char)c;
        p->tok = 1;
        p->sub = SUB_RQ_METHOD;
        return 0;
    case SUB_RQ_METHOD:
        if (c == ' ') {
            m->method = (uint8_t)ldt_http_method_from(p->name, p->tok);
            p->tok = 0;
            p->sub = SUB_RQ_TARGET;
            return 0;
        }
        if (!(cls[c] & C_METHOD) || p->tok >= LDT_HTTP_METHOD_MAX)
            return -1;
        p->name[p->tok++] = (char)c;
        return 0;
    case SUB_RQ_TARGET:
        if (cls[c] & C_TARGET) {
            if (m->path_len < LDT_HTTP_PATH_MAX)
                m->path[m->path_len++] = (char)c;
            else
                m->flags |= LDT_HTTP_F_PATH_TRUNC;
            p->tok++;
            return 0;
        }
        if (c != ' ' || p->tok == 0)
            return -1;
        if (m->path_len < LDT_HTTP_PATH_MAX)
            m->path[m->path_len] = '\0';
        p->tok = 0;
        p->sub = SUB_RQ_VERSION;
        return 0;
    case SUB_RQ_VERSION:
    case SUB_ST_VERSION:
        if (p->tok < 7) {
            if (c != (unsigned char)http1[p->tok++])
                return -1;
        } else if (p->tok == 7) {
            if (c < '0' || c > '9')
                return -1;
            m->minor = (uint8_t)(c - '0');
            p->tok++;
            if (p->sub == SUB_RQ_VERSION)
                p->sub = SUB_LINE_EOL;
        } else {
            if (c != ' ')
                return -1;
            p->tok = 0;
            p->sub = SUB_ST_CODE;
        }
        return 0;
    case SUB_ST_CODE:
        if (c < '0' || c > '9')
            return -1;
        m->status = (uint16_t)(m->status * 10 + (c - '0'));
        if (++p->tok == 3) {
            if (m->status < 100)
                return -1;
            p->sub = SUB_ST_AFTER;
        }
        return 0;
    case SUB_ST_AFTER:
        if (c == ' ') {
            p->sub = SUB_ST_REASON;
            return 0;
        }
        /* fall through - "HTTP/1.1 200\r\n" without a reason phrase is seen in the wild */
    case SUB_LINE_EOL:
        if (c == '\r') {
            p->sub = SUB_LINE_LF;
            return 0;
        }
        if (c != '\n')
            return -1;
        start_line_done(p);
        return 0;
    case SUB_ST_REASON:
        if (cls[c] & C_FV)
            return 0;
        if (c == '\r')
            p->sub = SUB_LINE_LF;
        else if (c == '\n')
            start_line_done(p);
        else
            return -1;
        return 0;
    case SUB_LINE_LF:
        if (c != '\n')
            return -1;
        start_line_done(p);
        return 0;
    case SUB_H_START:
        if (c == '\r' || c == '\n') {
            m->hdr_len = at;
            if (c == '\n')
                return headers_done(p);
            p->sub = SUB_H_END_LF;
            return 0;
        }
        /* A line starting with SP/HTAB is obs-fold (RFC 9112 5.2): rejected here. */
        if (!(cls[c] & C_TCHAR))
            return -1;
        p->name[0] = (char)lower(c);
        p->tok = 1;
        p->sub = SUB_H_NAME;
        return 0;
    case SUB_H_NAME:
        if (cls[c] & C_TCHAR) {
            if (p->tok < sizeof(p->name))
                p->name[p->tok] = (char)lower(c);
            p->tok++;
            return 0;
        }
        /* No whitespace between the name and the colon (RFC 9112 5.1). */
        if (c != ':')
            return -1;
        header_name(p);
        p->sub = SUB_H_OWS;
        return 0;
    case SUB_H_OWS:
        if (is_ows(c))
            return 0;
        if (cls[c] & C_FV) {
            value_start(p, at);
            p->sub = SUB_H_VALUE;
            return value_byte(p, c);
        }
        /* fall through - the end of the line (or a forbidden byte) */
    case SUB_H_VALUE:
        if (cls[c] & C_FV)
            return value_byte(p, c);
        if (c == '\r') {
            p->sub = SUB_H_LF;
            return header_end(p);
        }
        if (c == '\n') {
            p->sub = SUB_H_START;
            return header_end(p);
        }
        return -1; /* NUL, other controls, DEL: RFC 9110 5.5 */
    case SUB_H_LF:
        if (c != '\n')
            return -1;
        p->sub = SUB_H_START;
        return 0;
    case SUB_H_END_LF:
        if (c != '\n')
            return -1;
        return headers_done(p);
    default:
        return -1;
    }
}

/* The fast path: header names, values, the request target and the reason phrase make up almost
 * all of a header block, so their runs are taken in tight loops (run_*), not byte by byte. */
static size_t run_name(struct ldt_http_parser *p, const unsigned char *b, size_t n)
{
    size_t j = 0;

    while (j < n && (cls[b[j]] & C_TCHAR))
        j++;
    /* Keep only what fits: no name we look for is longer than p->name. OR-ing 0x20 lowercases
     * letters and leaves '-' and digits alone; it may map other token characters onto bytes that
     * are in none of our names, so a comparison can never match wrongly. */
    for (size_t k = 0; k < j && p->tok + k < sizeof(p->name); k++)
        p->name[p->tok + k] = (char)(b[k] | 0x20);
    p->tok += (uint32_t)j;
    return j;
}

/* Length of the run of field-value bytes (HTAB, SP, VCHAR, obs-text) at b[0..n). Eight bytes at
 * a time while none of them is a control byte or DEL (the usual case), then byte by byte. */
static size_t fv_span(const unsigned char *b, size_t n)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    size_t j = 0;

    for (;;) {
        while (j + 8 <= n) {
            uint64_t x, del;
            memcpy(&x, b + j, 8);
            del = x ^ (0x7f * ones);
            /* Any byte below 0x20, or equal to 0x7f (high bits excluded: obs-text is fine). */
            if (((x - 0x20 * ones) & ~x & highs) | ((del - ones) & ~del & highs))
                break;
            j += 8;
        }
        size_t stop = j + 8 < n ? j + 8 : n;
        while (j < stop && (cls[b[j]] & C_FV))
            j++;
        if (j < stop || j == n)
            return j;
    }
}

/* Copy the value bytes b[j] into the kept field; p->tok ends up at the last non-OWS one. */
static void copy_run(struct ldt_http_parser *p, const unsigned char *b, size_t j)
{
    size_t room, q = j;
    char *dst = copy_dest(p, &room);

    if (p->remaining < room)
        memcpy(dst + p->remaining, b, j < room - p->remaining ? j : room - p->remaining);
    while (q > 0 && is_ows(b[q - 1]))
        q--;
    if (q > 0)
        p->tok = (uint32_t)(p->remaining + q); /* trimmed length: up to the last non-OWS byte */
    p->remaining += j;
}

static size_t run_copy(struct ldt_http_parser *p, const unsigned char *b, size_t n)
{
    size_t j = fv_span(b, n);

    copy_run(p, b, j);
    return j;
}

static size_t run_target(struct ldt_http_parser *p, const unsigned char *b, size_t n)
{
    struct ldt_http_msg *m = &p->msg;
    size_t j = 0;

    while (j < n && (cls[b[j]] & C_TARGET))
        j++;
    size_t room = LDT_HTTP_PATH_MAX - m->path_len;
    size_t k = j < room ? j : room;
    memcpy(m->path + m->path_len, b, k);
    m->path_len = (uint16_t)(m->path_len + k);
    if (j > room)
        m->flags |= LDT_HTTP_F_PATH_TRUNC;
    p->tok += (uint32_t)j;
    return j;
}

/* The value of a header that is copied or skipped, and the CRLF that ends its line. */
static size_t value_run(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n)
{
    int id = p->hdr_id;

    if (id == H_HOST || id == H_TP || id == H_TS) {
        j += run_copy(p, b + j, n - j);
    } else if (id == H_NONE || id == H_UPGRADE) {
        j += fv_span(b + j, n - j);
    } else if (id != H_CL) {
        while (j < n && (cls[b[j]] & C_FV))
            list_byte(p, b[j++]);
    } else {
        return j; /* Content-Length can fail: byte by byte in head_byte */
    }
    if (j + 1 < n && b[j] == '\r' && b[j + 1] == '\n') {
        (void)header_end(p); /* cannot fail but for Content-Length */
        p->sub = SUB_H_START;
        return j + 2;
    }
    return j;
}

/* "HTTP/1.x" CRLF ending a request line, in one go when it is all there. */
static size_t version_run(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n)
{
    if (p->tok != 0 || n - j < 10 || memcmp(b + j, http1, 7) != 0 || b[j + 7] < '0' ||
        b[j + 7] > '9' || b[j + 8] != '\r' || b[j + 9] != '\n')
        return j;
    p->msg.minor = (uint8_t)(b[j + 7] - '0');
    p->msg.reqline_len = p->pos + (uint32_t)j + 10;
    p->sub = SUB_H_START;
    return j + 10;
}

/* "HTTP/1.x NNN" of a status line, in one go when it is all there. */
static size_t status_run(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n)
{
    const unsigned char *s = b + j;

    if (p->tok != 0 || n - j < 12 || memcmp(s, http1, 7) != 0 || s[8] != ' ' || !is_digit(s[7]) ||
        !is_digit(s[9]) || !is_digit(s[10]) || !is_digit(s[11]))
        return j;
    unsigned st = (s[9] - '0') * 100u + (s[10] - '0') * 10u + (s[11] - '0');
    if (st < 100)
        return j;
    p->msg.minor = (uint8_t)(s[7] - '0');
    p->msg.status = (uint16_t)st;
    p->sub = SUB_ST_AFTER;
    return j + 12;
}

/* ---- whole lines: the fast path ----
 *
 * When a whole start line or header line is in the buffer it is checked and taken in one go: byte
 * classes 16 at a time (SSE2, or a portable loop), header names dispatched on (length, first
 * letter), a value ended by the first byte that may not be in one. A line is taken this way only
 * when it is complete and plain; anything else (a line cut by the end of the buffer or by the
 * header cap, a name with a rarer token character, an error) is left to the byte-wise machine
 * above from the line's first byte, so the outcome is the same however the stream is cut. The
 * checks are as strict as there: every field value, including those of the headers that are
 * skipped, may hold HTAB, SP, VCHAR and obs-text only (RFC 9110 5.5), so a NUL, a bare CR, any
 * other control byte or DEL anywhere in a header block makes it invalid (no smuggling through a
 * header we do not keep). */

/* The byte classes tested 16 at a time. */
enum scan_class {
    K_NAME,   /* the usual header-name bytes: letters, digits, '-' (a subset of C_TCHAR) */
    K_VALUE,  /* C_FV: HTAB, SP, VCHAR, obs-text */
    K_TARGET, /* C_TARGET: VCHAR, obs-text */
};

#if defined(__SSE2__)
/* Bit i set when s[i] is in class k, for the 16 bytes at s. */
static inline uint32_t mask16(const unsigned char *s, enum scan_class k)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s), good;

    if (k == K_NAME) {
        /* A range [lo, lo + w) in one signed compare: adding 0x80 - lo moves it to the bottom
         * of the signed bytes. Letters are folded with 0x20 first (only letters fold into a-z);
         * digits are not (controls would fold into them). */
        __m128i lc = _mm_or_si128(x, _mm_set1_epi8(0x20));
        __m128i alpha = _mm_cmplt_epi8(_mm_add_epi8(lc, _mm_set1_epi8((char)(0x80 - 'a'))),
                                       _mm_set1_epi8((char)(0x80 + 26)));
        __m128i digit = _mm_cmplt_epi8(_mm_add_epi8(x, _mm_set1_epi8((char)(0x80 - '0'))),
                                       _mm_set1_epi8((char)(0x80 + 10)));
        good = _mm_or_si128(_mm_or_si128(alpha, digit), _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    } else {
        /* Unsigned x >= lowest, and not DEL; values also allow HTAB. */
        __m128i lowest = _mm_set1_epi8(k == K_VALUE ? 0x20 : 0x21);
        good = _mm_cmpeq_epi8(_mm_max_epu8(x, lowest), x);
        good = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f)), good);
        if (k == K_VALUE)
            good = _mm_or_si128(good, _mm_cmpeq_epi8(x, _mm_set1_epi8('\t')));
    }
    return (uint32_t)_mm_movemask_epi8(good);
}
#else
static inline uint32_t mask16(const unsigned char *s, enum scan_class k)
{
    uint32_t m = 0;

    for (int i = 0; i < 16; i++) {
        unsigned c = s[i];
        int in = k == K_NAME
                     ? (cls[c] & C_TCHAR) && (lower(c) - 'a' < 26u || c == '-' || is_digit(c))
                 : k == K_VALUE ? (cls[c] & C_FV) != 0
                                : (cls[c] & C_TARGET) != 0;
        m |= (uint32_t)in << i;
    }
    return m;
}
#endif

/* The K_NAME and K_VALUE masks of the 16 bytes at s (one load once inlined). */
static inline void masks16(const unsigned char *s, uint32_t *name, uint32_t *value)
{
    *name = mask16(s, K_NAME);
    *value = mask16(s, K_VALUE);
}

/* scan() for the last piece of b[j..n), shorter than 16 bytes: tested as the end of the 16 bytes
 * that end at b[n], or when the buffer is shorter than that from a zero-padded copy (NUL is in no
 * class). Nothing before b[0] or from b[n] on is read. */
static __attribute__((noinline)) size_t scan_tail(const unsigned char *b, size_t j, size_t n,
                                                  enum scan_class k)
{
    unsigned char tail[16] = {0};
    uint32_t out;

    if (n >= 16) {
        out = (~mask16(b + n - 16, k) & 0xffffu) >> (16 - (n - j));
        return out ? j + (size_t)__builtin_ctz(out) : n;
    }
    memcpy(tail, b + j, n - j);
    j += (size_t)__builtin_ctz(~mask16(tail, k) & 0xffffu); /* not zero: tail[n - j] is NUL */
    return j < n ? j : n;
}

/* The first byte of b[j..n) that is not in class k, or n. */
static inline __attribute__((always_inline)) size_t scan(const unsigned char *b, size_t j, size_t n,
                                                         enum scan_class k)
{
    uint32_t out;

    for (; j + 16 <= n; j += 16) {
        if ((out = ~mask16(b + j, k) & 0xffffu) != 0)
            return j + (size_t)__builtin_ctz(out);
    }
    return j < n ? scan_tail(b, j, n, k) : n;
}

/* The line end at b[e]: the offset of its LF when b[e..n) starts with CRLF or LF, else 0 (a bare
 * CR, another byte, or the line is cut; also an LF at b[0], which the byte-wise machine takes). */
static inline size_t line_end(const unsigned char *b, size_t e, size_t n)
{
    if (e < n && b[e] == '\r')
        e++;
    return e < n && b[e] == '\n' ? e : 0;
}

/* The value b[v..e) (OWS before it already skipped) of the header named p->hdr_id, then the end
 * of its line. Returns -1 only for an invalid Content-Length. */
static int header_value(struct ldt_http_parser *p, const unsigned char *b, size_t v, size_t e)
{
    int id = p->hdr_id;

    if (v < e) {
        value_start(p, p->pos + (uint32_t)v);
        if (id == H_HOST || id == H_TP || id == H_TS) {
            copy_run(p, b + v, e - v);
        } else if (id == H_CL) {
            for (; v < e; v++) {
                if (cl_byte(p, b[v]) < 0)
                    return -1;
            }
        } else if (id == H_TE || id == H_CONN || id == H_EXPECT) {
            list_run(p, b + v, e - v);
        }
    }
    return header_end(p);
}

/* Copy k bytes from src (avail of them readable) to dst (room bytes writable, k <= room): one
 * fixed copy of 32 or 64 bytes when both sides have room for it (what lies past dst[k] is not
 * part of the field: its length says what is valid), else one memcpy. */
static inline __attribute__((always_inline)) void
copy_fixed(char *dst, size_t room, const unsigned char *src, size_t k, size_t avail)
{
    size_t most = room < avail ? room : avail;

    if (k <= 32 && most >= 32)
        memcpy(dst, src, 32);
    else if (k <= 64 && most >= 64)
        memcpy(dst, src, 64);
    else
        memcpy(dst, src, k);
}

/* Keep the value src[len] (OWS trimmed) in dst[room] as copy_byte() and copy_end() do, avail
 * bytes readable at src: returns the bytes kept, and sets trunc in *flags when it did not fit. */
static inline __attribute__((always_inline)) size_t keep_str(char *dst, size_t room,
                                                             const unsigned char *src, size_t len,
                                                             size_t avail, uint16_t *flags,
                                                             uint16_t trunc)
{
    size_t kept = len < room ? len : room;

    copy_fixed(dst, room, src, kept, avail);
    if (kept < room)
        dst[kept] = '\0';
    if (UNLIKELY(len > room))
        *flags |= trunc;
    return kept;
}

/* A Content-Length value b[v..e) that is only digits and trailing OWS, as cl_byte() and
 * cl_commit() take it. Returns 0 or -1 (a different value), or 1 when it is not that simple. */
static int cl_value(struct ldt_http_parser *p, const unsigned char *b, size_t v, size_t e)
{
    struct ldt_http_msg *m = &p->msg;
    uint64_t val = 0;
    size_t d = v, q;

    while (d < e && d - v < CL_DIGITS_MAX && is_digit(b[d]))
        val = val * 10 + (b[d++] - '0');
    for (q = d; q < e && is_ows(b[q]); q++)
        continue;
    if (d == v || q != e)
        return 1;
    if ((m->flags & LDT_HTTP_F_HAS_CL) && (uint64_t)m->content_length != val)
        return -1;
    m->content_length = (int64_t)val;
    m->flags |= LDT_HTTP_F_HAS_CL;
    return 0;
}

/* A header line we keep something of: its name b[j..c) is header id, its value ends at e. The
 * same effects as name_apply(), the value bytes and header_end() in the byte-wise machine, taken
 * directly for the usual headers. Returns -1 only for an invalid Content-Length. */
static __attribute__((noinline)) int header_keep_any(struct ldt_http_parser *p,
                                                     const unsigned char *b, int id, size_t c,
                                                     size_t e, size_t n)
{
    struct ldt_http_msg *m = &p->msg;
    size_t v = c + 1, q = e;
    int rc;

    v += b[v] == ' '; /* the usual single SP; b[e] is CR or LF, so no bound is needed */
    while (UNLIKELY(is_ows(b[v])))
        v++;
    while (UNLIKELY(q > v && is_ows(b[q - 1])))
        q--;
    if (id == H_HOST && !(m->_pad & X_HOST)) {
        m->_pad |= X_HOST;
        m->host_len = (uint16_t)keep_str(m->host, LDT_HTTP_HOST_MAX, b + v, q - v, n - v, &m->flags,
                                         LDT_HTTP_F_HOST_TRUNC);
        return 0;
    }
    if (id == H_TP && !(m->_pad & X_TP)) {
        m->_pad |= X_TP;
        if (v < e)
            m->tp_off = p->pos + (uint32_t)v;
        m->tp_len = (uint16_t)keep_str(m->tp, LDT_HTTP_TP_MAX, b + v, q - v, n - v, &m->flags,
                                       LDT_HTTP_F_TP_TRUNC);
        return 0;
    }
    if (id == H_TS) {
        /* Several tracestate lines are one list joined with ',' (RFC 9110 5.3). */
        if (v < e && m->ts_len > 0) {
            if (m->ts_len < LDT_HTTP_TS_MAX)
                m->ts[m->ts_len++] = ',';
            else
                m->flags |= LDT_HTTP_F_TS_TRUNC;
        }
        m->ts_len =
            (uint16_t)(m->ts_len + keep_str(m->ts + m->ts_len, LDT_HTTP_TS_MAX - m->ts_len, b + v,
                                            q - v, n - v, &m->flags, LDT_HTTP_F_TS_TRUNC));
        return 0;
    }
    if (id == H_CL && (rc = cl_value(p, b, v, e)) <= 0)
        return rc;
    if ((id == H_CONN || id == H_TE || id == H_EXPECT) && v < e) {
        /* The usual value is one token we know (keep-alive, close, chunked, 100-continue): what
         * list_run() would do first, without name_apply() and header_end() around it. */
        m->_pad |= id == H_TE ? X_TE : 0;
        p->hdr_id = (uint8_t)id;
        if (list_known(p, (const char *)b + v, q - v)) {
            p->hdr_id = H_NONE;
            return 0;
        }
        name_apply(p, id);
        list_run(p, b + v, e - v);
        return header_end(p);
    }
    name_apply(p, id);
    return header_value(p, b, v, e);
}

/* header_keep() for the usual lines, in a function small enough to need few saved registers:
 * the first Host line and an all-digit Content-Length, each with no OWS but one SP before the
 * value and none after it; everything else goes to header_keep_any(), with the same outcome. */
static __attribute__((noinline)) int header_keep(struct ldt_http_parser *p, const unsigned char *b,
                                                 int id, size_t c, size_t e, size_t n)
{
    struct ldt_http_msg *m = &p->msg;
    size_t v = c + 1 + (b[c + 1] == ' '), d; /* b[e] is CR or LF: v <= e */
    uint64_t val = 0;

    if (UNLIKELY(is_ows(b[v]) || is_ows(b[e - 1])))
        return header_keep_any(p, b, id, c, e, n);
    if (id == H_HOST && !(m->_pad & X_HOST)) {
        m->_pad |= X_HOST;
        m->host_len = (uint16_t)keep_str(m->host, LDT_HTTP_HOST_MAX, b + v, e - v, n - v, &m->flags,
                                         LDT_HTTP_F_HOST_TRUNC);
        return 0;
    }
    if (id != H_CL || v == e || e - v > CL_DIGITS_MAX)
        return header_keep_any(p, b, id, c, e, n);
    for (d = v; d < e && is_digit(b[d]); d++)
        val = val * 10 + (b[d] - '0');
    if (d != e)
        return header_keep_any(p, b, id, c, e, n);
    if ((m->flags & LDT_HTTP_F_HAS_CL) && (uint64_t)m->content_length != val)
        return -1;
    m->content_length = (int64_t)val;
    m->flags |= LDT_HTTP_F_HAS_CL;
    return 0;
}

/* The rest of a header line once its name b[j..c) and its end e are known, the LF at lf. A
 * skipped header needs nothing more: p->hdr_id is already H_NONE. */
static inline __attribute__((always_inline)) size_t header_rest(struct ldt_http_parser *p,
                                                                const unsigned char *b, size_t j,
                                                                size_t c, size_t e, size_t lf,
                                                                size_t n, int *rc)
{
    int id = name_id((const char *)b + j, c - j);

    if (id != H_NONE)
        *rc = header_keep(p, b, id, c, e, n);
    return lf + 1;
}

/* header_line() when fewer than 16 bytes are left in the buffer. */
static __attribute__((noinline)) size_t
header_line_short(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n, int *rc)
{
    size_t c = scan(b, j, n, K_NAME), e, lf;

    if (c == j || c >= n || b[c] != ':')
        return j;
    e = scan(b, c + 1, n, K_VALUE);
    if ((lf = line_end(b, e, n)) == 0)
        return j;
    return header_rest(p, b, j, c, e, lf, n, rc);
}

/* One whole header line at b[j..n) (p->sub is SUB_H_START, b[j] is not CR or LF): returns the
 * offset past its LF, or j when the line is left to the byte-wise machine. *rc is -1 when the
 * line makes the block invalid. The first 16 bytes give both the end of the name and, unless the
 * line is longer, the end of the value (the name and the colon are value bytes too). */
static inline size_t header_line(struct ldt_http_parser *p, const unsigned char *b, size_t j,
                                 size_t n, int *rc)
{
    uint32_t nm, fv;
    size_t c, e, lf;

    if (j + 16 > n)
        return header_line_short(p, b, j, n, rc);
    masks16(b + j, &nm, &fv);
    c = nm != 0xffffu ? j + (size_t)__builtin_ctz(~nm) : scan(b, j + 16, n, K_NAME);
    if (c == j || c >= n || b[c] != ':')
        return j;
    e = fv != 0xffffu ? j + (size_t)__builtin_ctz(~fv & 0xffffu) : scan(b, j + 16, n, K_VALUE);
    if ((lf = line_end(b, e, n)) == 0)
        return j;
    return header_rest(p, b, j, c, e, lf, n, rc);
}

/* Whole header lines from b[j] (p->sub is SUB_H_START), up to the first that is not in b[j..n)
 * or not plain, or up to and including the blank line. Returns the new j; *rc is 1 when the
 * blank line ended the block (EV_HEADERS), -1 when the block is invalid. */
static size_t header_lines(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n,
                           int *rc)
{
    size_t k, lf;

    /* The usual line, tight: 16 bytes readable, a name of letters, digits and '-' shorter than
     * 16 bytes ending in the colon, the line complete in the buffer. */
    while (j + 16 <= n) { /* a CR or LF first (the blank line) is no name byte: c == j */
        uint32_t nm, fv;
        masks16(b + j, &nm, &fv);
        size_t c = j + (size_t)__builtin_ctz(~nm | 0x10000u), e;
        if (c == j || c == j + 16 || b[c] != ':')
            break;
        e = fv != 0xffffu ? j + (size_t)__builtin_ctz(~fv) : scan(b, j + 16, n, K_VALUE);
        if ((lf = line_end(b, e, n)) == 0)
            return j;
        int id = name_id((const char *)b + j, c - j);
        j = lf + 1;
        if (id != H_NONE && (*rc = header_keep(p, b, id, c, e, n)) < 0)
            return j;
    }
    while (j < n) {
        if (b[j] == '\r' || b[j] == '\n') {
            if ((lf = line_end(b, j, n)) == 0)
                return j;
            p->msg.hdr_len = p->pos + (uint32_t)j;
            *rc = headers_done(p);
            return lf + 1;
        }
        k = header_line(p, b, j, n, rc);
        if (k == j || *rc < 0)
            return k;
        j = k;
    }
    return j;
}

/* s[0..8) is "HTTP/1." and a digit (8 bytes readable at s). */
static inline int is_http1x(const unsigned char *s)
{
    uint64_t x = load64((const char *)s), want = load64("HTTP/1.");

    return (x & 0x00ffffffffffffffull) == want && (x >> 56) - '0' < 10;
}

/* The method token s[len], with s[len] readable (the SP after it). */
static inline __attribute__((always_inline)) enum ldt_http_method method_at(const unsigned char *s,
                                                                            size_t len)
{
    const char *t = (const char *)s;
    enum ldt_http_method m;
    const char *name;

    if (len < 3 || len > 7)
        return LDT_HTTP_M_OTHER;
    m = len == 3   ? (t[0] == 'G' ? LDT_HTTP_M_GET : LDT_HTTP_M_PUT)
        : len == 4 ? (t[0] == 'H' ? LDT_HTTP_M_HEAD : LDT_HTTP_M_POST)
        : len == 5 ? (t[0] == 'T' ? LDT_HTTP_M_TRACE : LDT_HTTP_M_PATCH)
        : len == 6 ? LDT_HTTP_M_DELETE
                   : (t[0] == 'C' ? LDT_HTTP_M_CONNECT : LDT_HTTP_M_OPTIONS);
    name = method_names[m];
    if (len == 3)
        return ((load32(t) ^ load32(name)) & 0xffffffu) == 0 ? m : LDT_HTTP_M_OTHER;
    return load32(t) == load32(name) && load32(t + len - 4) == load32(name + len - 4)
               ? m
               : LDT_HTTP_M_OTHER;
}

/* A whole request line at b[j..n) (b[j] is an uppercase letter): returns the offset past its LF,
 * or j when it is left to the byte-wise machine. */
static size_t request_line(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n)
{
    struct ldt_http_msg *m = &p->msg;
    size_t t, e, lf, max = n - j < LDT_HTTP_METHOD_MAX + 1 ? n : j + LDT_HTTP_METHOD_MAX + 1;

    for (t = j + 1; t < max && b[t] != ' '; t++) {
        if (!(cls[b[t]] & C_METHOD))
            return j;
    }
    if (t >= max)
        return j;
    e = scan(b, t + 1, n, K_TARGET);
    if (e == t + 1 || n - e < 10 || b[e] != ' ' || !is_http1x(b + e + 1) ||
        (lf = line_end(b, e + 9, n)) == 0)
        return j;
    size_t len = e - t - 1, k = len < LDT_HTTP_PATH_MAX ? len : LDT_HTTP_PATH_MAX;
    m->method = (uint8_t)method_at(b + j, t - j);
    if (k <= 16 && t + 17 <= n)
        memcpy(m->path, b + t + 1, 16); /* one fixed-size copy; what follows the target is cut */
    else
        memcpy(m->path, b + t + 1, k);
    if (k < LDT_HTTP_PATH_MAX)
        m->path[k] = '\0';
    m->path_len = (uint16_t)k;
    if (len > k)
        m->flags |= LDT_HTTP_F_PATH_TRUNC;
    m->minor = (uint8_t)(b[e + 8] - '0');
    m->reqline_len = p->pos + (uint32_t)lf + 1;
    p->tok = 0;
    p->sub = SUB_H_START;
    return lf + 1;
}

/* A whole status line at b[j..n) (none of it taken yet): returns the offset past its LF, or j when
 * it is left to the byte-wise machine. */
static size_t status_line(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n)
{
    const unsigned char *s = b + j;
    size_t e = j + 12, lf;

    if (p->tok != 0 || n - j < 13 || !is_http1x(s) || s[8] != ' ' || !is_digit(s[9]) ||
        !is_digit(s[10]) || !is_digit(s[11]))
        return j;
    unsigned st = (s[9] - '0') * 100u + (s[10] - '0') * 10u + (s[11] - '0');
    if (st < 100)
        return j;
    if (s[12] == ' ')
        e = scan(b, e + 1, n, K_VALUE); /* the reason phrase */
    if ((lf = line_end(b, e, n)) == 0)
        return j;
    p->msg.minor = (uint8_t)(s[7] - '0');
    p->msg.status = (uint16_t)st;
    p->msg.reqline_len = p->pos + (uint32_t)lf + 1;
    p->tok = 0;
    p->sub = SUB_H_START;
    return lf + 1;
}

static ssize_t feed_head(struct ldt_http_parser *p, const unsigned char *b, size_t len);

/* ---- whole header blocks: the fastest path ----
 *
 * A message whose start line and header lines arrive in the same read as its first byte (almost
 * every message) is taken here in one pass, from ldt_http_feed() at its first byte: each header
 * line is found and checked from one 32-byte window at its start (the name and its colon in the
 * first 16 bytes, or 32 for a long name; the end of the value in all 32, else scanned 16 bytes at
 * a time), and a line whose first letter begins none of the names the tracer keeps is skipped
 * with no more work; the loop that does this makes no call, so its byte-class constants stay in
 * registers. Every check is the byte-wise machine's: anything this path does not take whole and
 * plain (an HTAB or another control byte in a value, a name with a rarer token character or
 * longer than 31 bytes, a bare LF, an unknown method, a line cut by the end of the buffer or the
 * header cap) is left, from the first byte of its line, to feed_head(), so the outcome is the
 * same however the stream is cut (tests/unit/test_http.c http_block, fuzz_http one byte a read). */

/* For each first letter (either case) of a header name name_id() knows, the lengths of those
 * names as bits: a line whose (first letter, name length) is not in here is skipped without
 * comparing its name (Content-Type, Cache-Control, Accept ...). Names are shorter than 32. */
#define L(n) (1u << (n))
static const uint32_t name_lens[256] = {
    ['c'] = L(10) | L(14),
    ['C'] = L(10) | L(14),
    ['e'] = L(6),
    ['E'] = L(6),
    ['h'] = L(4),
    ['H'] = L(4),
    ['t'] = L(10) | L(11) | L(17),
    ['T'] = L(10) | L(11) | L(17),
    ['u'] = L(7),
    ['U'] = L(7),
};
#undef L

#if defined(__SSE2__)
/* Bit i set when s[i] is a control byte or DEL, or SP too when hi is 0x20 (the stop bytes of a
 * field value, hi 0x1f, and of a request target, hi 0x20). */
static inline uint32_t stop16(const unsigned char *s, int hi)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
    __m128i low = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8((char)hi)), x);

    return (uint32_t)_mm_movemask_epi8(_mm_or_si128(low, _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f))));
}

/* For the 16 bytes at s: *bad has bit i set when s[i] is not a letter, digit or '-' (K_NAME),
 * *stop when it is a control byte or DEL. One load for both. */
static inline void line16(const unsigned char *s, uint32_t *bad, uint32_t *stop)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
    __m128i lc = _mm_or_si128(x, _mm_set1_epi8(0x20));
    __m128i alpha = _mm_cmplt_epi8(_mm_add_epi8(lc, _mm_set1_epi8((char)(0x80 - 'a'))),
                                   _mm_set1_epi8((char)(0x80 + 26)));
    __m128i digit = _mm_cmplt_epi8(_mm_add_epi8(x, _mm_set1_epi8((char)(0x80 - '0'))),
                                   _mm_set1_epi8((char)(0x80 + 10)));
    __m128i good = _mm_or_si128(_mm_or_si128(alpha, digit), _mm_cmpeq_epi8(x, _mm_set1_epi8('-')));
    __m128i low = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);

    *bad = (uint32_t)_mm_movemask_epi8(good) ^ 0xffffu;
    *stop = (uint32_t)_mm_movemask_epi8(_mm_or_si128(low, _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f))));
}
#else
static inline uint32_t stop16(const unsigned char *s, int hi)
{
    uint32_t m = 0;

    for (int i = 0; i < 16; i++)
        m |= (uint32_t)(s[i] <= hi || s[i] == 0x7f) << i;
    return m;
}

static inline void line16(const unsigned char *s, uint32_t *bad, uint32_t *stop)
{
    *bad = ~mask16(s, K_NAME) & 0xffffu;
    *stop = stop16(s, 0x1f);
}
#endif

/* The first stop byte (stop16) of b[k..n), or n; n >= 16. The last piece is tested as the end of
 * the 16 bytes that end at b[n], so nothing from b[n] on is read. */
static inline size_t stop_scan(const unsigned char *b, size_t k, size_t n, int hi)
{
    uint32_t m;

    for (; k + 16 <= n; k += 16) {
        if ((m = stop16(b + k, hi)) != 0)
            return k + (size_t)__builtin_ctz(m);
    }
    if (k >= n)
        return n;
    m = stop16(b + n - 16, hi) >> (16 - (n - k));
    return m ? k + (size_t)__builtin_ctz(m) : n;
}

/* A request line with a known method from b[0] (n >= 16): returns the offset past its CRLF, or 0
 * when it is left to feed_head(). */
static size_t fast_request_line(struct ldt_http_parser *p, const unsigned char *b, size_t n)
{
    struct ldt_http_msg *m = &p->msg;
    uint32_t sp = (uint32_t)stop16(b, 0x20);
    size_t t = (size_t)__builtin_ctz(sp | 0x10000u), e, len, k;
    enum ldt_http_method meth;

    /* A method name_at() knows is uppercase letters only, so the bytes are checked too. */
    if (t < 3 || t > 7 || b[t] != ' ' || (meth = method_at(b, t)) == LDT_HTTP_M_OTHER)
        return 0;
    e = stop_scan(b, t + 1, n, 0x20);
    if (e == t + 1 || e + 11 > n || b[e] != ' ' || !is_http1x(b + e + 1) || b[e + 9] != '\r' ||
        b[e + 10] != '\n')
        return 0;
    len = e - t - 1;
    k = len < LDT_HTTP_PATH_MAX ? len : LDT_HTTP_PATH_MAX;
    copy_fixed(m->path, LDT_HTTP_PATH_MAX, b + t + 1, k, n - t - 1);
    if (k < LDT_HTTP_PATH_MAX)
        m->path[k] = '\0';
    m->path_len = (uint16_t)k;
    if (len > k)
        m->flags |= LDT_HTTP_F_PATH_TRUNC;
    m->method = (uint8_t)meth;
    m->minor = (uint8_t)(b[e + 8] - '0');
    m->reqline_len = (uint32_t)e + 11;
    p->sub = SUB_H_START;
    return e + 11;
}

/* A status line from b[0] (n >= 16) ending in CRLF, its reason phrase without HTAB: returns the
 * offset past its CRLF, or 0 when it is left to feed_head(). */
static size_t fast_status_line(struct ldt_http_parser *p, const unsigned char *b, size_t n)
{
    size_t e = 12;

    if (!is_http1x(b) || b[8] != ' ' || !is_digit(b[9]) || !is_digit(b[10]) || !is_digit(b[11]))
        return 0;
    unsigned st = (b[9] - '0') * 100u + (b[10] - '0') * 10u + (b[11] - '0');
    if (st < 100)
        return 0;
    if (b[12] == ' ')
        e = stop_scan(b, 13, n, 0x1f); /* the reason phrase */
    if (e + 1 >= n || b[e] != '\r' || b[e + 1] != '\n')
        return 0;
    p->msg.minor = (uint8_t)(b[7] - '0');
    p->msg.status = (uint16_t)st;
    p->msg.reqline_len = (uint32_t)e + 2;
    p->sub = SUB_H_START;
    return e + 2;
}

/* The stop mask (stop16, values) of the 32 bytes at s and the K_NAME mask of the first 16. */
static inline void line32(const unsigned char *s, uint32_t *bad, uint32_t *stop)
{
    line16(s, bad, stop);
    *stop |= stop16(s + 16, 0x1f) << 16;
}

/* plain_line() for a line that starts in the last 32 bytes of the buffer (n >= 16): the name from
 * the 16 bytes at b[j] (or those that end at b[n], shifted), the end of the line from those and
 * the 16 that end at b[n], which together cover the rest of the buffer. */
static inline size_t plain_tail(const unsigned char *b, size_t j, size_t n, size_t *c)
{
    uint32_t bad, stop;
    size_t cl;

    if (j + 16 <= n) {
        size_t o = n - 16 - j; /* where the last 16 bytes start, from b[j]: 0 to 15 */
        line16(b + j, &bad, &stop);
        stop |= stop16(b + n - 16, 0x1f) << o;
        bad |= 0x10000u;
    } else {
        size_t sh = j - (n - 16);
        line16(b + n - 16, &bad, &stop);
        bad = (bad >> sh) | (1u << (16 - sh)); /* from the end of the buffer: no name byte */
        stop >>= sh;
    }
    cl = (size_t)__builtin_ctz(bad);
    if (cl == 0 || j + cl >= n || b[j + cl] != ':' || stop == 0)
        return 0; /* not a plain line, or not all of it in the buffer */
    *c = j + cl;
    size_t e = j + (size_t)__builtin_ctz(stop);
    if (e + 1 >= n || load16(b + e) != load16("\r\n"))
        return 0;
    return e;
}

/* One plain header line at b[j] (j + 2 < n, n >= 16): returns the offset of the CR that ends it
 * and sets *c to its colon, or returns 0 when it is not plain (or is the blank line). The name
 * is checked in the first 16 bytes, or 32 for a long one (so b[j + 32] is the furthest the colon
 * is looked for); the value's end is found in the first 32, or scanned for. */
static inline size_t plain_line(const unsigned char *b, size_t j, size_t n, size_t *c)
{
    uint32_t bad, stop;
    size_t cl, e;

    if (UNLIKELY(j + 32 > n))
        return plain_tail(b, j, n, c);
    line32(b + j, &bad, &stop);
    cl = (size_t)__builtin_ctz(bad | 0x10000u);
    if (UNLIKELY(cl == 16)) { /* a long name (Transfer-Encoding, X-Forwarded-Proto ...) */
        uint32_t bad2, stop2;
        line16(b + j + 16, &bad2, &stop2);
        cl += (size_t)__builtin_ctz(bad2 | 0x10000u);
        if (cl == 32)
            return 0; /* b[j + 32] may be past the buffer */
    }
    if (b[j + cl] != ':' || cl == 0)
        return 0; /* the blank line (CR is no name byte), or a line for feed_head() */
    *c = j + cl;
    e = stop ? j + (size_t)__builtin_ctz(stop) : stop_scan(b, j + 32, n, 0x1f);
    if (e + 1 >= n || load16(b + e) != load16("\r\n"))
        return 0;
    return e;
}

/* Plain lines from b[j] that the tracer keeps nothing of are skipped: returns the offset of the
 * first line that is not one; when that is a plain line to keep, *id names it, *c is its colon
 * and *e its CR (else *e is 0). No call inside, so the byte-class constants stay in registers. */
static size_t skip_lines(const unsigned char *b, size_t j, size_t n, int *id, size_t *c, size_t *e)
{
    while (j + 2 < n) {
        size_t cr = plain_line(b, j, n, c);
        if (cr == 0)
            break;
        if (((name_lens[b[j]] >> (*c - j)) & 1) &&
            (*id = name_id((const char *)b + j, *c - j)) != H_NONE) {
            *e = cr;
            return j;
        }
        j = cr + 2;
    }
    *e = 0;
    return j;
}

/* The plain header lines from b[j] (n >= 16, p->pos 0), and the blank line: returns the offset of
 * the first line not taken, or past the blank line with *rc 1 (EV_HEADERS); *rc -1 when a kept
 * value makes the block invalid. */
static size_t fast_headers(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n,
                           int *rc)
{
    size_t c, e;
    int id;

    for (;;) {
        j = skip_lines(b, j, n, &id, &c, &e);
        if (e == 0)
            break;
        j = e + 2;
        if ((*rc = header_keep(p, b, id, c, e, n)) < 0)
            return j;
    }
    if (j + 2 <= n && b[j] == '\r' && b[j + 1] == '\n') {
        p->msg.hdr_len = (uint32_t)j;
        *rc = headers_end(p);
        return j + 2;
    }
    return j;
}

/* What ldt_http_feed() returns, r, once the bytes it consumed are counted in p->msg_bytes. */
static inline ssize_t counted(struct ldt_http_parser *p, ssize_t r)
{
    if (r > 0)
        p->msg_bytes += (uint64_t)r;
    return r;
}

/* The first bytes of a message, at b[len] (p->pos 0, p->msg_bytes 0): whole lines here, the rest
 * in feed_head(). Returns what ldt_http_feed() does, the bytes consumed already counted. */
static __attribute__((noinline)) ssize_t feed_start(struct ldt_http_parser *p,
                                                    const unsigned char *b, size_t len)
{
    size_t n = len < LDT_HTTP_HDR_CAP ? len : LDT_HTTP_HDR_CAP, j;
    int rc = 0;
    ssize_t r;

    if (p->dir == LDT_HTTP_REQUEST) {
        p->sub = SUB_RQ_LEAD;
        j = len < 16 ? 0 : fast_request_line(p, b, n);
    } else {
        p->sub = SUB_ST_VERSION;
        j = len < 16 ? 0 : fast_status_line(p, b, n);
    }
    if (j == 0)
        return counted(p, feed_head(p, b, len));
    j = fast_headers(p, b, j, n, &rc);
    p->pos = (uint32_t)j;
    if (rc > 0) {
        p->msg_bytes = j;
        return (ssize_t)j;
    }
    if (rc < 0)
        return counted(p, fail(p, PASS_INVALID, len));
    r = feed_head(p, b + j, len - j);
    return counted(p, r < 0 ? r : (ssize_t)j + r);
}

/* One fast step from state p->sub at b[j..n): returns the new j, or j itself when the next byte
 * needs head_byte (an event, an error, or a rare case). *rc becomes 1 when the header block ended
 * (EV_HEADERS), -1 when it is invalid. */
static size_t head_step(struct ldt_http_parser *p, const unsigned char *b, size_t j, size_t n,
                        int *rc)
{
    size_t k;

    switch (p->sub) {
    case SUB_RQ_LEAD:
        return b[j] >= 'A' && b[j] <= 'Z' ? request_line(p, b, j, n) : j;
    case SUB_H_START:
        if ((k = header_lines(p, b, j, n, rc)) != j || *rc)
            return k;
        if (!(cls[b[j]] & C_TCHAR))
            return j;
        p->name[0] = (char)lower(b[j]);
        p->tok = 1;
        p->sub = SUB_H_NAME;
        return j + 1;
    case SUB_H_NAME:
        j += run_name(p, b + j, n - j);
        if (j < n && b[j] == ':') {
            header_name(p);
            p->sub = SUB_H_OWS;
            return j + 1;
        }
        return j;
    case SUB_H_OWS:
        while (j < n && is_ows(b[j]))
            j++;
        if (j < n && (cls[b[j]] & C_FV)) {
            value_start(p, p->pos + (uint32_t)j);
            p->sub = SUB_H_VALUE;
        }
        return j;
    case SUB_H_VALUE:
        return value_run(p, b, j, n);
    case SUB_RQ_TARGET:
        return j + run_target(p, b + j, n - j);
    case SUB_RQ_VERSION:
        return version_run(p, b, j, n);
    case SUB_ST_VERSION:
        if ((k = status_line(p, b, j, n)) != j)
            return k;
        return status_run(p, b, j, n);
    case SUB_ST_REASON:
        return j + fv_span(b + j, n - j);
    default:
        return j;
    }
}

/* Runs of ordinary bytes, and whole lines, are taken here rather than one head_byte call per
 * byte. Returns how many of b[n] were taken, never past the header cap; *rc as head_step. */
static size_t head_run(struct ldt_http_parser *p, const unsigned char *b, size_t n, int *rc)
{
    size_t lim = LDT_HTTP_HDR_CAP - p->pos;
    size_t j = 0;

    if (n > lim)
        n = lim;
    while (j < n) {
        size_t k = head_step(p, b, j, n, rc);
        int stop = k == j || *rc != 0;
        j = k;
        if (stop)
            break;
    }
    p->pos += (uint32_t)j;
    return j;
}

static ssize_t feed_head(struct ldt_http_parser *p, const unsigned char *b, size_t len)
{
    size_t i = 0;
    int rc = 0;

    while (i < len) {
        i += head_run(p, b + i, len - i, &rc);
        if (rc < 0)
            return fail(p, PASS_INVALID, len);
        if (rc > 0)
            return (ssize_t)i;
        if (i == len)
            break;
        if (UNLIKELY(p->pos >= LDT_HTTP_HDR_CAP))
            return fail(p, PASS_CAP, len);
        int r = head_byte(p, b[i++]);
        if (r < 0)
            return fail(p, PASS_INVALID, len);
        if (r > 0)
            return (ssize_t)i;
    }
    return (ssize_t)len;
}

/* ---- chunked bodies (RFC 9112 7.1) ---- */

/* One framing byte of a chunked body. Returns 0 to go on, 1 when the message ended, -1 when the
 * framing is invalid, -2 when a line or the trailers passed their bound. */
static int chunk_byte(struct ldt_http_parser *p, unsigned c)
{
    int v;

    switch (p->sub) {
    case SUB_C_SIZE:
        if ((v = hexval(c)) < 0)
            return -1;
        p->remaining = (uint64_t)v;
        p->tok = 1;
        p->sub = SUB_C_SIZE_MORE;
        return 0;
    case SUB_C_SIZE_MORE:
        if ((v = hexval(c)) >= 0) {
            if (p->remaining >> 56)
                return -1; /* would overflow 64 bits */
            p->remaining = p->remaining * 16 + (uint64_t)v;
            p->tok++;
            return 0;
        }
        if (c == ';' || is_ows(c)) {
            p->sub = SUB_C_EXT;
            return 0;
        }
        if (c != '\r' && c != '\n')
            return -1;
        /* fall through - the end of the size line */
    case SUB_C_EXT:
        if (c == '\r') {
            p->sub = SUB_C_SIZE_LF;
            return 0;
        }
        if (c == '\n')
            break;
        if (!(cls[c] & C_FV))
            return -1;
        return ++p->tok > CHUNK_LINE_MAX ? -2 : 0;
    case SUB_C_SIZE_LF:
        if (c != '\n')
            return -1;
        break;
    case SUB_C_DATA_CR:
        if (c == '\r') {
            p->sub = SUB_C_DATA_LF;
            return 0;
        }
        /* fall through - a bare LF after the data is accepted */
    case SUB_C_DATA_LF:
        if (c != '\n')
            return -1;
        p->tok = 0;
        p->sub = SUB_C_SIZE;
        return 0;
    case SUB_C_TRAILER:
        if (c == '\r') {
            p->sub = SUB_C_END_LF;
            return 0;
        }
        if (c == '\n')
            return 1;
        p->sub = SUB_C_TRAILER_LINE;
        /* fall through */
    case SUB_C_TRAILER_LINE:
        if (++p->tok > LDT_HTTP_HDR_CAP)
            return -2;
        if (c == '\r')
            p->sub = SUB_C_TRAILER_LF;
        else if (c == '\n')
            p->sub = SUB_C_TRAILER;
        else if (!(cls[c] & C_FV))
            return -1;
        return 0;
    case SUB_C_TRAILER_LF:
        if (c != '\n')
            return -1;
        p->sub = SUB_C_TRAILER;
        return 0;
    case SUB_C_END_LF:
        return c == '\n' ? 1 : -1;
    default:
        return -1;
    }
    /* The size line ended: data follows, or after the last chunk the trailer section. */
    p->tok = 0;
    p->sub = p->remaining ? SUB_C_DATA : SUB_C_TRAILER;
    return 0;
}

static ssize_t feed_chunked(struct ldt_http_parser *p, const unsigned char *b, size_t len)
{
    size_t i = 0;

    while (i < len) {
        if (p->sub == SUB_C_DATA) {
            /* Chunk data is counted, never scanned. */
            uint64_t k = len - i < p->remaining ? len - i : p->remaining;
            i += (size_t)k;
            p->remaining -= k;
            if (p->remaining)
                break;
            p->sub = SUB_C_DATA_CR;
            continue;
        }
        int r = chunk_byte(p, b[i++]);
        if (r < 0)
            return fail(p, r == -2 ? PASS_CAP : PASS_INVALID, len);
        if (r > 0) {
            finish(p);
            return (ssize_t)i;
        }
    }
    return (ssize_t)i;
}

static ssize_t feed_body(struct ldt_http_parser *p, const unsigned char *b, size_t len)
{
    uint64_t k;

    switch (p->sub) {
    case SUB_B_DONE:
        finish(p);
        return 0;
    case SUB_B_CLOSE:
        return (ssize_t)len;
    case SUB_B_CL:
        /* O(1): the body is counted, not scanned. */
        k = len < p->remaining ? len : p->remaining;
        p->remaining -= k;
        if (!p->remaining)
            finish(p);
        return (ssize_t)k;
    default:
        return feed_chunked(p, b, len);
    }
}

ssize_t ldt_http_feed(struct ldt_http_parser *p, const char *buf, size_t len)
{
    const unsigned char *b = (const unsigned char *)buf;
    ssize_t n;

    p->ev = LDT_HTTP_EV_NONE;
    /* In the order the shim's calls meet them: a message's first bytes, then the call that ends
     * it (the body-less message first: nothing to count). */
    if (p->state == LDT_HTTP_S_START) {
        if (len == 0)
            return 0;
        start_message(p);
        return feed_start(p, b, len); /* which counts what it consumed in p->msg_bytes */
    } else if (p->state == LDT_HTTP_S_BODY) {
        if (p->sub == SUB_B_DONE) {
            finish_inline(p);
            return 0;
        }
        if (len == 0)
            return 0; /* no body state moves without a byte (in SUB_B_CL p->remaining > 0) */
        n = feed_body(p, b, len);
    } else if (p->state == LDT_HTTP_S_HEAD) {
        n = feed_head(p, b, len);
    } else {
        return (ssize_t)len;
    }
    if (n > 0)
        p->msg_bytes += (uint64_t)n;
    return n;
}

ssize_t ldt_http_skip(struct ldt_http_parser *p, size_t n)
{
    uint64_t k = n;

    p->ev = LDT_HTTP_EV_NONE;
    if (p->state == LDT_HTTP_S_PASS || n == 0)
        return (ssize_t)n;
    if (p->state == LDT_HTTP_S_BODY && p->sub == SUB_B_CLOSE) {
        p->msg_bytes += k;
        return (ssize_t)k;
    }
    if (p->state == LDT_HTTP_S_BODY && p->sub == SUB_B_CL) {
        k = n < p->remaining ? n : p->remaining;
        p->remaining -= k;
        p->msg_bytes += k;
        if (!p->remaining)
            finish(p);
        return (ssize_t)k;
    }
    if (p->state == LDT_HTTP_S_BODY && p->sub == SUB_C_DATA && k <= p->remaining) {
        /* sendfile of chunk data (nginx writes the chunk framing itself and sendfiles the data). */
        p->remaining -= k;
        p->msg_bytes += k;
        if (!p->remaining)
            p->sub = SUB_C_DATA_CR;
        return (ssize_t)k;
    }
    /* Headers or chunk framing went by unseen: the stream cannot be followed any more. */
    p->connect = 0;
    return fail(p, PASS_INVALID, 0);
}

int ldt_http_eof(struct ldt_http_parser *p)
{
    p->ev = LDT_HTTP_EV_NONE;
    switch (p->state) {
    case LDT_HTTP_S_START:
    case LDT_HTTP_S_PASS:
        return 1;
    case LDT_HTTP_S_BODY:
        if (p->sub != SUB_B_CLOSE && p->sub != SUB_B_DONE)
            return 0;
        finish(p);
        return 1;
    default:
        /* Only empty lines between requests: nothing was cut short. */
        return p->sub == SUB_RQ_LEAD ? 1 : 0;
    }
}
