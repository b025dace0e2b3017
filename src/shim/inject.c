/* inject.c - put traceparent/tracestate header lines into the requests the app sends.
 *
 * Sits between the send hooks and the real writev/sendmsg: plan (where do our lines go in these app
 * bytes?), send (one real vectored call carrying the app's bytes and ours), and account (which of
 * the app's bytes went out, what of ours is still owed).
 *
 * Where the lines go. A request line "GET / HTTP/1.1\r\n" is followed by header lines and a blank
 * line. We add "traceparent: 00-<trace>-<span>-<flags>\r\n" (and "tracestate: ...\r\n" when the
 * parent had one) right after the request line when the whole header block ends inside the current
 * write: only then do we know whether the app sends a traceparent of its own. When the header block
 * is split over several writes we cannot know that yet, so we wait for the write that holds the
 * blank line and insert the lines just before it. Either way there is never a second traceparent
 * line.
 *
 * An app-made traceparent (an SDK) is left exactly as it is. A forwarded one, equal byte for byte
 * to the traceparent of an inbound request this process is serving (a proxy), gets its 16-hex
 * parent-id replaced by our client span's id: same length, trace id, flags and tracestate
 * untouched.
 *
 * The app is told how many of ITS bytes went out. Bytes of ours the kernel did not take are kept in
 * conn->pend and go out first on the next send, before any further app byte, so the stream on the
 * wire is always the app's stream with our lines at the planned places.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "shim/shim.h"

_Atomic uint64_t ldt__inject_missed;

#define OUT_MAX 128 /* output iovecs per real call; more app segments: a partial write */

/* ---- the pure core: send app bytes with edits, account the result ---------------------------- */

struct cursor {
    const struct iovec *iov;
    int cnt;
    int i;
    size_t off;
};

/* Append the next len app bytes as iovecs; -1 when out[] is full. */
static int put_app(struct iovec *out, int n, struct cursor *c, size_t len)
{
    while (len > 0 && c->i < c->cnt) {
        size_t avail = c->iov[c->i].iov_len - c->off;
        if (avail == 0) {
            c->i++;
            c->off = 0;
            continue;
        }
        size_t k = avail < len ? avail : len;
        if (n >= OUT_MAX)
            return -1;
        out[n].iov_base = (char *)c->iov[c->i].iov_base + c->off;
        out[n].iov_len = k;
        n++;
        c->off += k;
        len -= k;
    }
    return n;
}

static void skip_app(struct cursor *c, size_t len)
{
    while (len > 0 && c->i < c->cnt) {
        size_t avail = c->iov[c->i].iov_len - c->off;
        size_t k = avail < len ? avail : len;
        c->off += k;
        len -= k;
        if (c->off == c->iov[c->i].iov_len) {
            c->i++;
            c->off = 0;
        }
    }
}

/* The wire image of one call: [owed bytes of ours][app .. edit .. app .. edit .. app]. */
static int build(struct iovec *out, const char *pend, size_t pn, const struct iovec *iov, int cnt,
                 size_t len, const struct ldt__edit *ed, int ned)
{
    struct cursor c = {iov, cnt, 0, 0};
    size_t at = 0;
    int n = 0;
    if (pn)
        out[n++] = (struct iovec){(void *)pend, pn};
    for (int i = 0; i < ned; i++) {
        n = put_app(out, n, &c, ed[i].off - at);
        if (n < 0 || n >= OUT_MAX)
            return -1;
        out[n++] = (struct iovec){(void *)ed[i].ins, ed[i].ins_len};
        skip_app(&c, ed[i].del);
        at = ed[i].off + ed[i].del;
    }
    return put_app(out, n, &c, len - at);
}

/* The kernel took k bytes of the wire image: how many app bytes is that? Our bytes cut short go to
 * pend. An edit whose place was reached is placed (counted in *placed) even when none of its bytes
 * went yet: they are then all owed, and the app is told it sent everything before that place. */
static size_t account(size_t k, char *pend, uint16_t *po, uint16_t *pl, size_t len,
                      const struct ldt__edit *ed, int ned, int *placed)
{
    if (k < *pl) {
        *po = (uint16_t)(*po + k);
        *pl = (uint16_t)(*pl - k);
        return 0;
    }
    k -= *pl;
    *po = *pl = 0;
    size_t cur = 0;
    for (int i = 0; i < ned; i++) {
        size_t seg = ed[i].off - cur;
        if (k < seg)
            return cur + k;
        k -= seg;
        cur = ed[i].off;
        (*placed)++;
        if (k < ed[i].ins_len) {
            memcpy(pend, ed[i].ins + k, ed[i].ins_len - k);
            *pl = (uint16_t)(ed[i].ins_len - k);
            return cur + ed[i].del; /* a replaced range counts as the app's, owed or not */
        }
        k -= ed[i].ins_len;
        cur += ed[i].del;
    }
    return cur + (k < len - cur ? k : len - cur);
}

/* Fewer app segments when the wire image would not fit OUT_MAX iovecs; edits past the cut wait. */
static size_t fit(const struct iovec *iov, int *cnt, const struct ldt__edit *ed, int *ned)
{
    int room = OUT_MAX - 1 - 2 * *ned;
    if (*cnt > room)
        *cnt = room > 1 ? room : 1;
    size_t len = 0;
    for (int i = 0; i < *cnt; i++)
        len += iov[i].iov_len;
    while (*ned > 0 && ed[*ned - 1].off + ed[*ned - 1].del > len)
        (*ned)--;
    return len;
}

ssize_t ldt__inject_sendv(char *pend, uint16_t *pend_off, uint16_t *pend_len,
                          const struct iovec *iov, int cnt, const struct ldt__edit *ed, int ned,
                          ldt__sendv_fn fn, void *ctx, int *placed)
{
    struct iovec out[OUT_MAX];
    int zeros = 0;
    *placed = 0;
    if (ned == 0 && *pend_len == 0)
        return fn(ctx, iov, cnt);
    if (cnt == 1 && ned == 1 && *pend_len == 0 && ed[0].off + ed[0].del <= iov[0].iov_len) {
        /* The usual case, one buffer and one edit: the wire image is three pieces. */
        const char *b = iov[0].iov_base;
        size_t len = iov[0].iov_len, at = ed[0].off + ed[0].del;
        struct iovec o3[3] = {{(void *)b, ed[0].off},
                              {(void *)ed[0].ins, ed[0].ins_len},
                              {(void *)(b + at), len - at}};
        ssize_t k = fn(ctx, o3, 3);
        if (k < 0)
            return -1;
        if ((size_t)k == len - ed[0].del + ed[0].ins_len) {
            *placed = 1; /* all went: what account() says for it */
            return (ssize_t)len;
        }
        size_t a = account((size_t)k, pend, pend_off, pend_len, len, ed, 1, placed);
        if (a > 0)
            return (ssize_t)a;
        zeros = k == 0; /* only our bytes went: on to the general loop (calls again) */
    }
    size_t len = fit(iov, &cnt, ed, &ned);
    if (len == 0)
        return fn(ctx, iov, cnt);
    for (;;) {
        int n = build(out, pend + *pend_off, *pend_len, iov, cnt, len, ed + *placed, ned - *placed);
        if (n < 0)
            n = 0;
        ssize_t k = fn(ctx, out, n);
        if (k < 0)
            return -1;
        int more = 0;
        size_t a =
            account((size_t)k, pend, pend_off, pend_len, len, ed + *placed, ned - *placed, &more);
        *placed += more;
        if (a > 0)
            return (ssize_t)a;
        /* Only our bytes went: call again so the app never sees 0 for a non-zero write. A kernel
         * taking nothing twice is reported as it is. */
        if (k == 0 && ++zeros >= 2)
            return 0;
    }
}

/* ---- planning: where our lines go in this write ---------------------------------------------- */

#define STEPS_MAX 8

struct plan {
    struct ldt__edit ed[LDT__EDITS_MAX];
    struct ldt__span *sp[LDT__EDITS_MAX];
    char rep[LDT__EDITS_MAX][16];
    int ned;
    /* The parse, for ldt__sniff_replay_out: its steps (nsteps -1: not replayable) and final state
     * (only when fin is set: the send path). */
    int nsteps;
    struct ldt__feed_step step[STEPS_MAX];
    struct ldt_http_parser *fin;
};

static struct ldt__span *cli_slot(struct ldt__conn *c, unsigned i)
{
    return &c->cli[(c->cli_head + i) % LDT__CLI_MAX];
}

/* The span of the i-th request from the head, created when the app starts writing it. */
static struct ldt__span *cli_get(struct ldt__conn *c, unsigned i)
{
    if (i < c->cli_n)
        return cli_slot(c, i);
    if (i != c->cli_n || c->cli_n == LDT__CLI_MAX) {
        ldt__count_untracked();
        return NULL;
    }
    struct ldt__span *s = cli_slot(c, c->cli_n++);
    ldt__span_client_begin(s, c);
    return s;
}

static void missed(struct ldt__span *s)
{
    s->injected = 1;
    atomic_fetch_add_explicit(&ldt__inject_missed, 1, memory_order_relaxed);
}

/* The headers of the request carried by span s end in this write; the message started at offset
 * start of this write (negative: in an earlier write). Decide its edit, if any. */
static void decide(struct plan *pl, struct ldt__conn *c, struct ldt__span *s,
                   const struct ldt_http_msg *m, long long start)
{
    ldt__span_client_headers(s, c, m);
    if (s->injected || pl->ned == LDT__EDITS_MAX)
        return;
    struct ldt__edit *e = &pl->ed[pl->ned];
    if (m->tp_len) {
        long long at = start + (long long)m->tp_off + 36; /* "00-" 32 hex "-": the parent-id */
        if (s->rec.flags & LDT_SPAN_F_APP_TP) {
            s->injected = 1; /* the app's own: not ours to touch */
            return;
        }
        if (at < 0 || m->tp_len != LDT_TP_LEN)
            return missed(s);
        ldt_hex_encode(s->rec.span_id, 8, pl->rep[pl->ned]);
        *e = (struct ldt__edit){(size_t)at, 16, 16, pl->rep[pl->ned]};
    } else {
        long long at = start + (long long)m->reqline_len;
        if (at < 0)
            at = start + (long long)m->hdr_len; /* the blank line: see the top of this file */
        /* Our lines, made now into the conn's blk (shared by this write's requests). */
        size_t need = 15u + LDT_TP_LEN + (c->wts_len ? 14u + c->wts_len : 0);
        if (at < 0 || c->blk_used + need > LDT__INJ_MAX)
            return missed(s);
        char *b = c->blk + c->blk_used;
        size_t n = ldt__span_block(s, c->wts, c->wts_len, b);
        c->blk_used = (uint16_t)(c->blk_used + n);
        *e = (struct ldt__edit){(size_t)at, 0, (uint32_t)n, b};
    }
    pl->sp[pl->ned++] = s;
}

/* A scratch copy of the out-parser. Between messages (the usual state of a write's first byte)
 * the kept strings of the last message are dead: the next byte starts a message and clears them
 * (the parser's strings are valid up to their lengths only), so the copy stops before them instead
 * of moving the whole struct. */
static void scratch_copy(struct ldt_http_parser *sc, const struct ldt_http_parser *p)
{
    if (p->state != LDT_HTTP_S_START) {
        *sc = *p;
        return;
    }
    memcpy(sc, p, offsetof(struct ldt_http_parser, msg.path));
    sc->msg.path_len = sc->msg.host_len = sc->msg.tp_len = sc->msg.ts_len = 0;
    sc->msg.path[0] = sc->msg.host[0] = sc->msg.tp[0] = sc->msg.ts[0] = '\0';
}

static void log_step(struct plan *pl, ssize_t r, uint8_t ev, const struct ldt__span *s)
{
    if (pl->nsteps < 0)
        return;
    if (pl->nsteps == STEPS_MAX || (ev == LDT_HTTP_EV_HEADERS && !s)) {
        pl->nsteps = -1;
        return;
    }
    pl->step[pl->nsteps++] = (struct ldt__feed_step){(uint32_t)r, ev};
}

/* Run a copy of the out-parser over the app's bytes to find each request's header block. */
static void plan(struct ldt__conn *c, const struct iovec *iov, int cnt, struct plan *pl)
{
    struct ldt_http_parser own;
    struct ldt_http_parser *psc = pl->fin ? pl->fin : &own;
#define sc (*psc)
    scratch_copy(&sc, &c->out);
    /* Replayable: one buffer (feed's loop then makes the very same calls) and every request's
     * span known. */
    pl->nsteps = pl->fin && cnt == 1 ? 0 : -1;
    long long pos = 0, start = -(long long)c->out_sent;
    unsigned k = c->cli_out;
    int at_start = c->out_sent == 0;
    struct ldt__span *s = at_start ? NULL : cli_get(c, k);
    pl->ned = 0;
    c->blk_used = 0; /* the lines of an earlier write are on the wire or in pend by now */
    for (int i = 0; i < cnt; i++) {
        const char *b = iov[i].iov_base;
        size_t l = iov[i].iov_len;
        while (l > 0 || sc.ev == LDT_HTTP_EV_HEADERS) {
            if (at_start && l > 0) {
                s = cli_get(c, k);
                start = pos;
                at_start = 0;
            }
            ssize_t r = ldt_http_feed(&sc, b, l);
            if (r < 0) {
                pl->nsteps = -1;
                return;
            }
            log_step(pl, r, sc.ev, s);
            b += r;
            l -= (size_t)r;
            pos += r;
            if (sc.ev == LDT_HTTP_EV_HEADERS && s)
                decide(pl, c, s, &sc.msg, start);
            else if (sc.ev == LDT_HTTP_EV_DONE) {
                k++;
                at_start = 1;
            } else if (r == 0)
                break;
        }
    }
#undef sc
}

ssize_t ldt__client_send(struct ldt__conn *c, const struct iovec *iov, int cnt, ldt__sendv_fn fn,
                         void *ctx)
{
    struct plan pl;
    struct ldt_http_parser fin;
    int placed = 0;
    pl.fin = &fin;
    pl.nsteps = -1;
    ldt__conn_lock(c);
    if (c->dead)
        pl.ned = 0;
    else
        plan(c, iov, cnt, &pl);
    ldt__conn_unlock(c);
    ssize_t n = ldt__inject_sendv(c->pend, &c->pend_off, &c->pend_len, iov, cnt, pl.ed, pl.ned, fn,
                                  ctx, &placed);
    int err = errno;
    ldt__conn_lock(c);
    for (int i = 0; i < placed; i++) {
        pl.sp[i]->injected = 1;
        pl.sp[i]->rec.flags |= pl.ed[i].del ? LDT_SPAN_F_REPLACED : LDT_SPAN_F_INJECTED;
    }
    /* All of the one buffer went: the out-parser takes the planner's parse instead of a second. */
    if (n > 0 && !c->dead && pl.nsteps >= 0 && (size_t)n == iov[0].iov_len)
        ldt__sniff_replay_out(c, &fin, pl.step, pl.nsteps);
    else if (n > 0 && !c->dead)
        ldt__sniff_feed_out(c, iov, cnt, (size_t)n);
    ldt__conn_unlock(c);
    errno = err;
    return n;
}

int ldt__client_plan(struct ldt__conn *c, const struct iovec *iov, int cnt, struct ldt__edit *ed,
                     struct ldt__span **sp, char *rep)
{
    struct plan pl;
    pl.fin = NULL;
    ldt__conn_lock(c);
    if (c->dead)
        pl.ned = 0;
    else
        plan(c, iov, cnt, &pl);
    ldt__conn_unlock(c);
    for (int i = 0; i < pl.ned; i++) {
        ed[i] = pl.ed[i];
        sp[i] = pl.sp[i];
        if (pl.ed[i].ins == pl.rep[i]) {
            memcpy(rep + 16 * i, pl.rep[i], 16);
            ed[i].ins = rep + 16 * i;
        }
    }
    return pl.ned;
}

void ldt__client_sent(struct ldt__conn *c, const struct ldt__edit *ed, struct ldt__span **sp,
                      int placed, const struct iovec *iov, int cnt, ssize_t n)
{
    ldt__conn_lock(c);
    for (int i = 0; i < placed; i++) {
        sp[i]->injected = 1;
        sp[i]->rec.flags |= ed[i].del ? LDT_SPAN_F_REPLACED : LDT_SPAN_F_INJECTED;
    }
    if (n > 0 && !c->dead)
        ldt__sniff_feed_out(c, iov, cnt, (size_t)n);
    ldt__conn_unlock(c);
}
