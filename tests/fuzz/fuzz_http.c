/* fuzz_http.c - libFuzzer target: the HTTP/1.x sniffer never over-reads, keeps its bounds, and
 * reports the same messages however the stream is cut into reads (whole, at up to 8 points, and
 * one byte per read: the whole-block path against the byte-wise machine). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ldtrace/http.h"

/* A running digest of everything the parser reported (events and the kept fields). */
struct digest {
    uint64_t h;
    uint64_t events;
};

static void mix(struct digest *d, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        d->h = (d->h ^ b[i]) * 0x100000001b3ull;
}

static void check_and_mix(const struct ldt_http_parser *p, struct digest *d)
{
    const struct ldt_http_msg *m = &p->msg;

    d->events++;
    mix(d, &p->ev, 1);
    if (p->ev != LDT_HTTP_EV_HEADERS)
        return;
    if (m->path_len > LDT_HTTP_PATH_MAX || m->host_len > LDT_HTTP_HOST_MAX ||
        m->tp_len > LDT_HTTP_TP_MAX || m->ts_len > LDT_HTTP_TS_MAX || m->_pad != 0)
        abort();
    if (m->reqline_len > m->hdr_len || m->hdr_len >= p->pos || p->pos > LDT_HTTP_HDR_CAP)
        abort();
    if (m->tp_len && m->tp_off + m->tp_len > m->hdr_len)
        abort();
    mix(d, &m->method, 1);
    mix(d, &m->minor, 1);
    mix(d, &m->reqline_len, 4);
    mix(d, &p->pos, 4);
    mix(d, &p->msg_bytes, 8);
    mix(d, &p->remaining, 8);
    mix(d, &m->status, 2);
    mix(d, &m->flags, 2);
    mix(d, &m->content_length, 8);
    mix(d, &m->hdr_len, 4);
    mix(d, &m->tp_off, 4);
    mix(d, m->path, m->path_len);
    mix(d, m->host, m->host_len);
    mix(d, m->tp, m->tp_len);
    mix(d, m->ts, m->ts_len);
}

/* Feed one read from buf[n], calling again after every event. */
static void feed_buf(struct ldt_http_parser *p, struct digest *d, const char *buf, size_t n,
                     const char *heads)
{
    size_t off = 0;

    for (;;) {
        ssize_t r = ldt_http_feed(p, buf + off, n - off);
        if (r < 0) {
            if (r != LDT_HTTP_INVALID || p->state != LDT_HTTP_S_PASS)
                abort();
            mix(d, "X", 1);
            break;
        }
        if ((size_t)r > n - off)
            abort();
        off += (size_t)r;
        if (p->ev == LDT_HTTP_EV_NONE) {
            if (off != n)
                abort(); /* stopped early without an event */
            break;
        }
        check_and_mix(p, d);
        if (p->ev == LDT_HTTP_EV_DONE && p->dir == LDT_HTTP_RESPONSE && p->msg.status >= 200)
            ldt_http_expect(p, heads[p->messages % 4] == 'H'   ? LDT_HTTP_M_HEAD
                               : heads[p->messages % 4] == 'C' ? LDT_HTTP_M_CONNECT
                                                               : LDT_HTTP_M_GET);
    }
}

/* Feed one read, copied into a buffer of exactly its size so that ASan sees any over-read. */
static void feed(struct ldt_http_parser *p, struct digest *d, const uint8_t *data, size_t n,
                 const char *heads)
{
    char *buf = malloc(n ? n : 1);

    memcpy(buf, data, n);
    feed_buf(p, d, buf, n, heads);
    free(buf);
}

/* Run the stream whole, then cut at up to 8 points taken from the input itself; the digests must
 * match. */
static void run(enum ldt_http_dir dir, const uint8_t *data, size_t size, const uint8_t *cuts,
                size_t ncuts, const char *heads)
{
    struct ldt_http_parser p;
    struct digest whole = {0xcbf29ce484222325ull, 0}, split = whole;

    ldt_http_init(&p, dir);
    feed(&p, &whole, data, size, heads);
    mix(&whole, "E", 1);
    whole.h ^= (uint64_t)ldt_http_eof(&p);

    ldt_http_init(&p, dir);
    size_t from = 0;
    for (size_t i = 0; i < ncuts; i++) {
        size_t to = from + cuts[i] % (size - from + 1);
        feed(&p, &split, data + from, to - from, heads);
        from = to;
    }
    feed(&p, &split, data + from, size - from, heads);
    mix(&split, "E", 1);
    split.h ^= (uint64_t)ldt_http_eof(&p);
    if (whole.h != split.h || whole.events != split.events)
        abort();

    /* One byte per read: the byte-wise machine alone, against the whole-block path. */
    struct digest bytes = {0xcbf29ce484222325ull, 0};
    ldt_http_init(&p, dir);
    char *one = malloc(1);
    for (size_t i = 0; i < size; i++) {
        one[0] = (char)data[i];
        feed_buf(&p, &bytes, one, 1, heads);
    }
    free(one);
    mix(&bytes, "E", 1);
    bytes.h ^= (uint64_t)ldt_http_eof(&p);
    if (whole.h != bytes.h || whole.events != bytes.events)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const heads[] = {"GGGG", "HGGG", "CGGG", "GHGC"};
    uint8_t cuts[8];
    size_t ncuts;

    if (size < 2)
        return 0;
    /* The last byte says how many cut points come before it and which request methods the
     * responses answer; the cut points are the bytes before it; the rest, from the start, is the
     * stream (so a recorded capture is a good seed as it is). */
    ncuts = (size_t)(data[size - 1] & 7) + 1;
    if (size < 1 + ncuts)
        return 0;
    size_t n = size - 1 - ncuts;
    memcpy(cuts, data + n, ncuts);
    const char *h = heads[(data[size - 1] >> 3) & 3];
    run(LDT_HTTP_REQUEST, data, n, cuts, ncuts, h);
    run(LDT_HTTP_RESPONSE, data, n, cuts, ncuts, h);
    (void)ldt_http_classify((const char *)data, n);
    return 0;
}
