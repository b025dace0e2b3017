/* span.c - span lifecycle: ids, parents, sampling, status rules, and the push into this thread's
 * ring.
 *
 * Sits between the sniffer (which says when a request starts and ends) and ring/ring.c. Also keeps
 * the in-process context: a registry of the server spans this process is serving (so a client span
 * written on another thread, or a forwarded traceparent, can find its parent) and a small
 * per-thread stack of the server spans opened on that thread.
 *
 * The parent of a CLIENT span (and of CONNECT/DNS spans): the rule, first match wins.
 *   0. The request carries the exact traceparent of a request this process is serving (a proxy
 *      forwarding it): that request (inject.c, ldt__ctx_served). Certain.
 *   1. The socket was connected while rule 2 or 3 named a request: that request, for the first
 *      request written on the socket (an event loop connects in the handler that read the inbound
 *      request, and writes once the connect completed, many events later).
 *   2. This thread has exactly one inbound request open: that one (thread-per-request servers;
 *      an event loop with one request in flight).
 *   3. Several are open on this thread (an event loop under concurrency): the newest, but only if
 *      it is still the thread's latest news - no HTTP bytes were read on another connection since
 *      its headers completed - so the write belongs to the callback that read it (nginx and node
 *      write a reused upstream connection right in the handler).
 *   4. Otherwise the evidence is ambiguous (a request queued for a free upstream socket, written
 *      when another request's response arrived): when the request line is known, the one open
 *      inbound request in the process with the same url.path, if exactly one (proxies forward
 *      the path); else no parent at all (a new root), never a guess between several.
 *   5. No request open on this thread: the only request open in the whole process, if exactly one
 *      (a server that reads on one thread and calls out from another).
 * Measured on tests/integration/test_matrix_eventloop (16 keep-alive clients): see the report.
 */
#include <errno.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "ldtrace/ring.h"
#include "shim/shim.h"

void (*ldt__span_sink)(const void *rec, size_t len);

/* ---- the serving registry ------------------------------------------------------------------- */

#define REG_SLOTS 512
#define REG_BUSY UINT64_MAX /* a slot being filled */

struct reg_slot {
    _Atomic uint64_t serial;      /* 0 free, REG_BUSY being written, else the owner's serial */
    const struct ldt__span *span; /* the server span itself: its url.path for rule 4 */
    struct ldt__ctx ctx;          /* the server span as a parent */
    uint8_t tp_len;
    char tp[LDT_TP_LEN]; /* the inbound traceparent exactly as received (v00, 55 chars) */
};

static struct reg_slot reg[REG_SLOTS];
static _Atomic uint64_t reg_serial;
static _Atomic uint32_t reg_hint;
static _Atomic int reg_open; /* server spans open in the process (registered) */

/* Claim a slot and publish the server span s in it, as a parent (its tracestate ts[ts_len], and
 * the inbound traceparent tp[tp_len] when exact). Returns the slot or -1 when the registry is full.
 * The context is written in place: no copy of a whole ldt__ctx on the hot path. */
static int reg_add(const struct ldt__span *s, const char *ts, uint16_t ts_len, const char *tp,
                   size_t tp_len, uint64_t *serial)
{
    uint32_t start = atomic_fetch_add_explicit(&reg_hint, 1, memory_order_relaxed);
    for (uint32_t i = 0; i < REG_SLOTS; i++) {
        struct reg_slot *r = &reg[(start + i) % REG_SLOTS];
        uint64_t expect = 0;
        if (!atomic_compare_exchange_strong_explicit(&r->serial, &expect, REG_BUSY,
                                                     memory_order_acquire, memory_order_relaxed))
            continue;
        memcpy(r->ctx.trace_id, s->rec.trace_id, 16);
        memcpy(r->ctx.span_id, s->rec.span_id, 8);
        r->ctx.flags = s->rec.trace_flags;
        r->ctx.sampled = s->sampled;
        r->ctx.valid = 1;
        r->ctx.remote = 0;
        r->ctx.ts_len = ts_len;
        if (ts_len)
            memcpy(r->ctx.ts, ts, ts_len);
        r->ctx.ts[ts_len] = '\0';
        r->span = s;
        r->tp_len = tp_len == LDT_TP_LEN ? LDT_TP_LEN : 0;
        if (r->tp_len)
            memcpy(r->tp, tp, LDT_TP_LEN);
        *serial = atomic_fetch_add_explicit(&reg_serial, 1, memory_order_relaxed) + 1;
        /* Release pairs with the acquire in reg_copy: the contents before the serial. */
        atomic_store_explicit(&r->serial, *serial, memory_order_release);
        atomic_fetch_add_explicit(&reg_open, 1, memory_order_relaxed);
        return (int)((start + i) % REG_SLOTS);
    }
    return -1;
}

static void reg_del(int slot, uint64_t serial)
{
    uint64_t expect = serial;
    if (slot >= 0 && slot < REG_SLOTS &&
        atomic_compare_exchange_strong_explicit(&reg[slot].serial, &expect, 0, memory_order_release,
                                                memory_order_relaxed))
        atomic_fetch_sub_explicit(&reg_open, 1, memory_order_relaxed);
}

/* Copy slot's context if it still belongs to serial (a seqlock on the serial: a slot reused while
 * we copied shows a different serial afterwards, since serials never repeat). */
static int reg_copy(int slot, uint64_t serial, struct ldt__ctx *out)
{
    struct reg_slot *r = &reg[slot];
    if (atomic_load_explicit(&r->serial, memory_order_acquire) != serial)
        return 0;
    memcpy(out, &r->ctx, sizeof *out);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&r->serial, memory_order_relaxed) != serial)
        return 0;
    out->ts_len = out->ts_len > LDT_TS_MAX ? 0 : out->ts_len;
    return 1;
}

int ldt__ctx_served(const char *tp, size_t len, struct ldt__ctx *out)
{
    if (len != LDT_TP_LEN)
        return 0;
    for (int i = 0; i < REG_SLOTS; i++) {
        uint64_t s = atomic_load_explicit(&reg[i].serial, memory_order_acquire);
        if (s == 0 || s == REG_BUSY || reg[i].tp_len != LDT_TP_LEN)
            continue;
        if (memcmp(reg[i].tp, tp, LDT_TP_LEN) == 0 && reg_copy(i, s, out))
            return 1;
    }
    return 0;
}

/* ---- an app that traces itself --------------------------------------------------------------- */

/* Set once the app has shown it makes its own trace context (an OpenTelemetry SDK): from then on the
 * shim records no span and injects nothing in this process, so the app's tracer stays in charge and
 * no span is reported twice. Read on every span begin (relaxed: a late reader records one more). */
static _Atomic int app_traces;

/* The app continued a trace this process is serving with a client context of its own (not the
 * inbound header, which rule 0 forwards): an SDK made that client span, and a server span for the
 * inbound request too, and exports both. Ours would repeat them: from here on nothing is pushed
 * (ldt__span_emit), including the spans of this request that are still open. What ended before
 * this moment was pushed already: the first request's spans may appear twice when the app's first
 * outbound call comes after its first responses. */
static void yield_to_app_tracer(struct ldt__span *client)
{
    atomic_store_explicit(&app_traces, 1, memory_order_relaxed);
    client->sampled = 0;
    ldt_log("the app sends its own trace context (an OpenTelemetry SDK?): recording stops here");
}

/* 1 when some open served request belongs to this trace. */
static int serving_trace(const uint8_t trace_id[16])
{
    for (int i = 0; i < REG_SLOTS; i++) {
        struct ldt__ctx c;
        uint64_t s = atomic_load_explicit(&reg[i].serial, memory_order_acquire);
        if (s != 0 && s != REG_BUSY && reg_copy(i, s, &c) && memcmp(c.trace_id, trace_id, 16) == 0)
            return 1;
    }
    return 0;
}

/* ---- the per-thread stack of open server spans ---------------------------------------------- */

#define STACK_MAX 8

struct stack_ent {
    int slot;
    uint64_t serial;
};

static __thread struct stack_ent tstack[STACK_MAX] __attribute__((tls_model("initial-exec")));
static __thread int tstack_n __attribute__((tls_model("initial-exec")));
/* Rule 3's evidence: the serial of the newest request begun on this thread, its connection, and
 * whether HTTP bytes were read on another connection since. */
static __thread uint64_t t_newest __attribute__((tls_model("initial-exec")));
static __thread const struct ldt__conn *t_newest_conn __attribute__((tls_model("initial-exec")));
static __thread uint8_t t_other_read __attribute__((tls_model("initial-exec")));
/* The last ldt__ctx_current found several requests open and named none (rule 4 may apply). */
static __thread uint8_t t_ambiguous __attribute__((tls_model("initial-exec")));

void ldt__ctx_note_read(const struct ldt__conn *c)
{
    if (c != t_newest_conn)
        t_other_read = 1;
}

/* The newest entry is the innermost span (thread-per-request) or the most recent inbound request
 * read on this thread (event loops). Full: the oldest entry is forgotten. */
static void stack_push(int slot, uint64_t serial)
{
    if (tstack_n == STACK_MAX) {
        memmove(&tstack[0], &tstack[1], (STACK_MAX - 1) * sizeof tstack[0]);
        tstack_n--;
    }
    tstack[tstack_n++] = (struct stack_ent){slot, serial};
}

/* No request open on this thread (a server that reads on one thread and calls out from another):
 * when the whole process serves exactly one request, that one is the parent without any doubt. */
static int only_open(struct ldt__ctx *out)
{
    if (atomic_load_explicit(&reg_open, memory_order_relaxed) != 1)
        return 0;
    for (int i = 0; i < REG_SLOTS; i++) {
        uint64_t s = atomic_load_explicit(&reg[i].serial, memory_order_acquire);
        if (s != 0 && s != REG_BUSY)
            return reg_copy(i, s, out);
    }
    return 0;
}

/* Is an entry below the top still open? */
static int others_open(void)
{
    for (int i = tstack_n - 2; i >= 0; i--)
        if (atomic_load_explicit(&reg[tstack[i].slot].serial, memory_order_relaxed) ==
            tstack[i].serial)
            return 1;
    return 0;
}

/* Rules 2, 3 and 5 (top of this file); *ref names the registry entry found. */
static int current(struct ldt__ctx *out, struct stack_ent *ref)
{
    t_ambiguous = 0;
    /* Entries whose span ended (on any thread) fail reg_copy and are popped on the way down. */
    while (tstack_n > 0) {
        struct stack_ent *t = &tstack[tstack_n - 1];
        if (reg_copy(t->slot, t->serial, out)) {
            if (others_open() && (t->serial != t_newest || t_other_read)) {
                t_ambiguous = 1;
                return 0;
            }
            *ref = *t;
            return 1;
        }
        tstack_n--;
    }
    ref->slot = -1;
    return only_open(out);
}

int ldt__ctx_current(struct ldt__ctx *out)
{
    struct stack_ent ref;
    return current(out, &ref);
}

void ldt__ctx_bind(struct ldt__conn *c)
{
    struct ldt__ctx p;
    struct stack_ent ref;
    c->bound = 0;
    if (current(&p, &ref) && ref.slot >= 0) {
        c->bound = 1;
        c->bind_slot = (int16_t)ref.slot;
        c->bind_serial = ref.serial;
    }
}

/* Rule 4: the one open request in the process whose url.path is path[n]; 0 when none or several.
 * The path is read from the server span itself (conns are never unmapped), then the slot's serial
 * is checked again: a span that ended and was reused meanwhile does not count. */
static int by_path(const char *path, size_t n, struct ldt__ctx *out)
{
    int found = -1;
    uint64_t fs = 0;
    for (int i = 0; i < REG_SLOTS; i++) {
        uint64_t s = atomic_load_explicit(&reg[i].serial, memory_order_acquire);
        const struct ldt__span *sp = reg[i].span;
        if (s == 0 || s == REG_BUSY || !sp || sp->rec.path_len != n ||
            memcmp(sp->rec.path, path, n) != 0)
            continue;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&reg[i].serial, memory_order_relaxed) != s)
            continue;
        if (found >= 0)
            return 0;
        found = i;
        fs = s;
    }
    return found >= 0 && reg_copy(found, fs, out);
}

/* ---- sampling -------------------------------------------------------------------------------- */

/* The trace id's right-most 7 bytes as a number: random for our own ids (W3C Level 2). */
static uint64_t low56(const uint8_t id[16])
{
    uint64_t v = 0;
    for (int i = 9; i < 16; i++)
        v = (v << 8) | id[i];
    return v;
}

static int ratio_says(const uint8_t trace_id[16])
{
    if (ldt__cfg.ratio >= 1.0)
        return 1;
    if (ldt__cfg.ratio <= 0.0)
        return 0;
    return low56(trace_id) < ldt__cfg.ratio_bound;
}

/* The default sampler with ratio 1 decided inline; everything else in ldt__sample. */
static inline int sample(const struct ldt__ctx *parent, const uint8_t trace_id[16])
{
    if (LDT_LIKELY(ldt__cfg.sampler == LDT_SAMPLER_PARENT_RATIO && ldt__cfg.ratio >= 1.0))
        return parent && parent->valid ? (parent->flags & LDT_TC_FLAG_SAMPLED) != 0 : 1;
    return ldt__sample(parent, trace_id);
}

int ldt__sample(const struct ldt__ctx *parent, const uint8_t trace_id[16])
{
    int has = parent && parent->valid;
    switch (ldt__cfg.sampler) {
    case LDT_SAMPLER_ALWAYS_ON:
        return 1;
    case LDT_SAMPLER_ALWAYS_OFF:
        return 0;
    case LDT_SAMPLER_RATIO:
        return ratio_says(trace_id);
    case LDT_SAMPLER_PARENT_OFF:
        return has ? (parent->flags & LDT_TC_FLAG_SAMPLED) != 0 : 0;
    case LDT_SAMPLER_PARENT_RATIO:
    default:
        return has ? (parent->flags & LDT_TC_FLAG_SAMPLED) != 0 : ratio_says(trace_id);
    }
}

/* ---- clocks ---------------------------------------------------------------------------------- */

/* wall = mono + off. Refreshed when a second has passed since the last read, so a step of the wall
 * clock (settimeofday, NTP) shows within a second; between refreshes NTP slewing moves the two
 * clocks apart by microseconds at most. Racing refreshers each store a valid pair. */
static _Atomic int64_t wall_off;
static _Atomic uint64_t wall_at; /* mono time of the last refresh, 0: never */

static inline __attribute__((always_inline)) uint64_t wall_of(uint64_t mono)
{
    uint64_t at = atomic_load_explicit(&wall_at, memory_order_relaxed);
    /* Signed: a time read before the last refresh (another thread's) is no reason to refresh. */
    if (LDT_UNLIKELY(at == 0 || (int64_t)(mono - at) > 1000000000)) {
        uint64_t w = ldt_clock_wall_ns(), m = ldt_clock_mono_ns();
        atomic_store_explicit(&wall_off, (int64_t)(w - m), memory_order_relaxed);
        atomic_store_explicit(&wall_at, m, memory_order_relaxed);
    }
    return mono + (uint64_t)atomic_load_explicit(&wall_off, memory_order_relaxed);
}

uint64_t ldt__wall_of(uint64_t mono)
{
    return wall_of(mono);
}

/* ---- span construction ----------------------------------------------------------------------- */

/* Zero a record in 16-byte stores: for its 248 bytes the compiler's memset is a rep stos that
 * steps 31 times. */
typedef uint64_t ldt__v16 __attribute__((vector_size(16), aligned(1), may_alias));

static inline void rec_zero(struct ldt_span_rec *r)
{
    _Static_assert(sizeof *r % 8 == 0 && sizeof *r >= 16, "record size");
    const ldt__v16 z = {0, 0};
    char *p = (char *)r;
#define Z16(i) \
    if ((i) + 16 <= sizeof *r) \
        *(ldt__v16 *)(void *)(p + (i)) = z;
    Z16(0) Z16(16) Z16(32) Z16(48) Z16(64) Z16(80) Z16(96) Z16(112) Z16(128) Z16(144) Z16(160)
    Z16(176) Z16(192) Z16(208) Z16(224) Z16(240) Z16(256) Z16(272) Z16(288) Z16(304)
#undef Z16
    _Static_assert(sizeof *r <= 320, "rec_zero covers 320 bytes");
    if (sizeof *r % 16)
        *(ldt__v16 *)(void *)(p + sizeof *r - 16) = z;
}

void ldt__span_begin(struct ldt__span *s, enum ldt_span_kind kind, const struct ldt__ctx *parent)
{
    rec_zero(&s->rec);
    s->rec.type = LDT_REC_SPAN;
    s->rec.kind = (uint8_t)kind;
    s->rec.op = LDT_OP_HTTP;
    s->reg = -1;
    s->serial = 0;
    if (parent && parent->valid) {
        memcpy(s->rec.trace_id, parent->trace_id, 16);
        memcpy(s->rec.parent_id, parent->span_id, 8);
        s->rec.trace_flags = parent->flags & LDT_TC_FLAGS_KNOWN;
        ldt_id_span(s->rec.span_id);
    } else {
        ldt_id_trace_span(s->rec.trace_id, s->rec.span_id);
        s->rec.trace_flags = LDT_TC_FLAG_RANDOM;
    }
    s->sampled = (uint8_t)sample(parent, s->rec.trace_id) &&
                 !atomic_load_explicit(&app_traces, memory_order_relaxed);
    s->rec.trace_flags = (uint8_t)((s->rec.trace_flags & ~LDT_TC_FLAG_SAMPLED) |
                                   (s->sampled ? LDT_TC_FLAG_SAMPLED : 0));
    /* Inside a hook the span starts when its real call returned, or (a client span begun before
     * its send) when the send was entered: one clock read per call. */
    s->start_mono = ldt__io_end ? ldt__io_end : ldt__io_start ? ldt__io_start : ldt_clock_mono_ns();
    s->rec.start_ns = wall_of(s->start_mono);
}

/* The first '?' of a kept request target p[n] (n <= LDT_HTTP_PATH_MAX), or NULL: 16-byte loads
 * inside the message's path buffer, no call (a libc memchr costs ~35 instructions on a 6-byte
 * path). */
static inline const char *path_query(const char *p, size_t n)
{
#ifdef __SSE2__
    _Static_assert(LDT_HTTP_PATH_MAX % 16 == 0, "whole 16-byte loads inside path[]");
    const __m128i qv = _mm_set1_epi8('?');
    if (n > LDT_HTTP_PATH_MAX)
        n = LDT_HTTP_PATH_MAX;
    for (size_t i = 0; i < n; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        unsigned mk = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, qv));
        if (n - i < 16)
            mk &= (1u << (n - i)) - 1u;
        if (mk)
            return p + i + __builtin_ctz(mk);
    }
    return NULL;
#else
    return memchr(p, '?', n);
#endif
}

/* url.path: the target without its query unless LDTRACE_CAPTURE_QUERY, bounded. */
static void set_path(struct ldt_span_rec *r, const struct ldt_http_msg *m)
{
    size_t n = m->path_len;
    const char *q = path_query(m->path, n);
    if (q && !ldt__cfg.capture_query)
        n = (size_t)(q - m->path);
    else if (q)
        r->flags |= LDT_SPAN_F_QUERY;
    if ((m->flags & LDT_HTTP_F_PATH_TRUNC) && !(q && !ldt__cfg.capture_query))
        r->flags |= LDT_SPAN_F_PATH_TRUNC;
    if (n > LDT_SPAN_PATH_MAX) {
        n = LDT_SPAN_PATH_MAX;
        r->flags |= LDT_SPAN_F_PATH_TRUNC;
    }
    memcpy(r->path, m->path, n);
    r->path_len = (uint8_t)n;
}

static void set_host(struct ldt_span_rec *r, const char *h, size_t n, int trunc)
{
    if (n > LDT_SPAN_HOST_MAX) {
        n = LDT_SPAN_HOST_MAX;
        trunc = 1;
    }
    memcpy(r->host, h, n);
    r->host_len = (uint8_t)n;
    if (trunc)
        r->flags |= LDT_SPAN_F_HOST_TRUNC;
}

static void set_request(struct ldt_span_rec *r, const struct ldt_http_msg *m)
{
    r->method = m->method;
    set_path(r, m);
    if (m->flags & LDT_HTTP_F_HTTP10)
        r->flags |= LDT_SPAN_F_HTTP10;
}

/* Parent of an inbound request: its valid traceparent (tracestate kept only if valid). */
static void inbound_parent(const struct ldt_http_msg *m, struct ldt__ctx *p)
{
    struct ldt_tc tc;
    p->valid = 0;
    p->ts_len = 0;
    if (!m->tp_len || (m->flags & (LDT_HTTP_F_TP_MULTI | LDT_HTTP_F_TP_TRUNC)) ||
        ldt_tc_parse(m->tp, m->tp_len, &tc) != 0)
        return;
    memcpy(p->trace_id, tc.trace_id, 16);
    memcpy(p->span_id, tc.span_id, 8);
    p->flags = tc.flags;
    p->valid = 1;
    p->remote = 1;
    if (m->ts_len && !(m->flags & LDT_HTTP_F_TS_TRUNC)) {
        int n = ldt_ts_normalize(m->ts, m->ts_len, p->ts, sizeof p->ts);
        p->ts_len = n > 0 ? (uint16_t)n : 0;
    }
}

void ldt__span_server_begin(struct ldt__span *s, struct ldt__conn *c, const struct ldt_http_msg *m)
{
    struct ldt__ctx p;
    inbound_parent(m, &p);
    ldt__span_begin(s, LDT_SPAN_SERVER, &p);
    if (p.valid)
        s->rec.flags |= LDT_SPAN_F_PARENT_REMOTE;
    set_request(&s->rec, m);
    /* Only an exact v00 value can be matched by a forwarding proxy (it re-sends it verbatim). */
    s->reg = (int16_t)reg_add(s, p.ts, p.ts_len, m->tp, p.valid ? m->tp_len : 0, &s->serial);
    if (s->reg >= 0) {
        stack_push(s->reg, s->serial);
        t_newest = s->serial;
        t_newest_conn = c;
        t_other_read = 0;
    }
}

#ifdef __SSE2__
/* 16 lowercase hex digits for 8 bytes: nibbles interleaved and turned to ASCII in one register. */
static inline void hex8(const uint8_t *in, char *out)
{
    __m128i x = _mm_loadl_epi64((const __m128i *)(const void *)in);
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i nib = _mm_unpacklo_epi8(_mm_and_si128(_mm_srli_epi16(x, 4), m), _mm_and_si128(x, m));
    __m128i letter = _mm_and_si128(_mm_cmpgt_epi8(nib, _mm_set1_epi8(9)),
                                   _mm_set1_epi8('a' - '0' - 10));
    __m128i asc = _mm_add_epi8(_mm_add_epi8(nib, _mm_set1_epi8('0')), letter);
    _mm_storeu_si128((__m128i *)(void *)out, asc);
}

/* The traceparent value of s (LDT_TP_LEN characters, as ldt_tc_format writes them) at out. */
static void format_tp(const struct ldt__span *s, char *out)
{
    static const char hex[] = "0123456789abcdef";
    uint8_t f = s->rec.trace_flags & LDT_TC_FLAGS_KNOWN;
    memcpy(out, "00-", 3);
    hex8(s->rec.trace_id, out + 3);
    hex8(s->rec.trace_id + 8, out + 19);
    out[35] = '-';
    hex8(s->rec.span_id, out + 36);
    out[52] = '-';
    out[53] = hex[f >> 4];
    out[54] = hex[f & 15];
}
#else
static void format_tp(const struct ldt__span *s, char *out)
{
    struct ldt_tc tc;
    char tp[LDT_TP_LEN + 1];
    memcpy(tc.trace_id, s->rec.trace_id, 16);
    memcpy(tc.span_id, s->rec.span_id, 8);
    tc.flags = s->rec.trace_flags;
    tc.version = 0;
    ldt_tc_format(&tc, tp);
    memcpy(out, tp, LDT_TP_LEN);
}
#endif

size_t ldt__span_block(const struct ldt__span *s, const char *ts, size_t ts_len, char *out)
{
    size_t n = 0;
    memcpy(out + n, "traceparent: ", 13);
    n += 13;
    format_tp(s, out + n);
    n += LDT_TP_LEN;
    memcpy(out + n, "\r\n", 2);
    n += 2;
    if (ts_len && ts_len <= LDT_TS_MAX) {
        memcpy(out + n, "tracestate: ", 12);
        n += 12;
        memcpy(out + n, ts, ts_len);
        n += ts_len;
        memcpy(out + n, "\r\n", 2);
        n += 2;
    }
    return n;
}

/* The tracestate the lines of c's request being written will carry: its parent's. */
static void keep_ts(struct ldt__conn *c, const struct ldt__ctx *parent)
{
    if (!c)
        return;
    c->wts_len = 0;
    if (parent && parent->valid && parent->ts_len && parent->ts_len <= LDT_TS_MAX) {
        memcpy(c->wts, parent->ts, parent->ts_len);
        c->wts_len = parent->ts_len;
    }
}

void ldt__span_client_begin(struct ldt__span *s, struct ldt__conn *c)
{
    struct ldt__ctx p;
    int have = 0;
    s->guess = 0;
    if (c && c->bound) { /* rule 1 */
        c->bound = 0;
        have = reg_copy(c->bind_slot, c->bind_serial, &p);
    }
    if (!have) {
        have = ldt__ctx_current(&p);
        s->guess = !have && t_ambiguous;
    }
    ldt__span_begin(s, LDT_SPAN_CLIENT, have ? &p : NULL);
    keep_ts(c, have ? &p : NULL);
    s->injected = atomic_load_explicit(&app_traces, memory_order_relaxed) != 0; /* passive */
    s->started = 0;
    s->done_req = 0;
    s->hdrs = 0;
}

/* Rule 4: a client span begun without a certain parent takes the one open request with its path
 * (its lines are not placed yet: they are made under the new parent). */
static __attribute__((noinline)) void adopt_by_path(struct ldt__span *s, struct ldt__conn *c)
{
    struct ldt__ctx p;
    if (!by_path(s->rec.path, s->rec.path_len, &p))
        return;
    memcpy(s->rec.trace_id, p.trace_id, 16);
    memcpy(s->rec.parent_id, p.span_id, 8);
    s->sampled = (uint8_t)ldt__sample(&p, s->rec.trace_id);
    s->rec.trace_flags = (uint8_t)((p.flags & LDT_TC_FLAGS_KNOWN & ~LDT_TC_FLAG_SAMPLED) |
                                   (s->sampled ? LDT_TC_FLAG_SAMPLED : 0));
    keep_ts(c, &p);
}

static void client_app_tp(struct ldt__span *s, const struct ldt_http_msg *m);

void ldt__span_client_headers(struct ldt__span *s, struct ldt__conn *c,
                              const struct ldt_http_msg *m)
{
    if (s->hdrs)
        return;
    s->hdrs = 1;
    set_request(&s->rec, m);
    set_host(&s->rec, m->host, m->host_len, (m->flags & LDT_HTTP_F_HOST_TRUNC) != 0);
    if (LDT_UNLIKELY(s->guess) && !s->injected && !m->tp_len)
        adopt_by_path(s, c);
    s->guess = 0;
    if (LDT_UNLIKELY(m->tp_len) && !s->injected)
        client_app_tp(s, m);
}

/* The request being written carries a traceparent of the app's (rules 0 and "the app traces
 * itself"): out of line, with the big locals it needs. */
static __attribute__((noinline)) void client_app_tp(struct ldt__span *s,
                                                    const struct ldt_http_msg *m)
{
    struct ldt__ctx p;
    struct ldt_tc tc;
    if (ldt__ctx_served(m->tp, m->tp_len, &p)) {
        /* A proxy forwarding the inbound header: that request is the parent, our id replaces its
         * parent-id on the wire; trace id and flags are the forwarded ones. */
        memcpy(s->rec.trace_id, p.trace_id, 16);
        memcpy(s->rec.parent_id, p.span_id, 8);
        s->rec.trace_flags = p.flags;
        s->sampled = p.sampled;
        s->rec.flags &= (uint16_t)~LDT_SPAN_F_APP_TP;
        return;
    }
    s->rec.flags |= LDT_SPAN_F_APP_TP;
    if (ldt_tc_parse(m->tp, m->tp_len, &tc) != 0)
        return;
    if (serving_trace(tc.trace_id)) {
        yield_to_app_tracer(s);
        return;
    }
    /* The app made this context on its own (curl -H traceparent, a hand-made header): nobody else
     * records this client span, so ours is it, with the app's ids. */
    if (memcmp(s->rec.trace_id, tc.trace_id, 16) != 0)
        memset(s->rec.parent_id, 0, 8);
    memcpy(s->rec.trace_id, tc.trace_id, 16);
    memcpy(s->rec.span_id, tc.span_id, 8);
    s->rec.trace_flags = tc.flags;
    s->sampled = (tc.flags & LDT_TC_FLAG_SAMPLED) != 0;
}

/* The addresses come from the fd entry the conn belongs to (they outlive the conn: fdtab.c). */
static void fill_addrs(struct ldt_span_rec *r, const struct ldt__conn *c)
{
    const struct ldt__fd *e = c->owner;
    size_t n;
    if (!e)
        return;
    r->peer_family = e->peer_family;
    r->local_family = e->local_family;
    r->peer_port = e->peer_port;
    r->local_port = e->local_port;
    memset(r->peer_addr, 0, 16);
    if (e->peer_family == LDT_AF_INET)
        memcpy(r->peer_addr, e->peer4, 4);
    else if (e->addrs & LDT__ADDRS_PEER6)
        memcpy(r->peer_addr, ldt__fd_peer6(e), 16);
    const char *b = ldt__name_get(e->local_ref, &n);
    /* A name's bytes past its length are zero (ldt__name_get): 16 fixed bytes copy the address
     * (4 or 16 bytes) with its zero padding. */
    _Static_assert(LDT_SPAN_HOST_MAX >= 16, "names hold 16 bytes");
    if (b)
        memcpy(r->local_addr, b, 16);
    else
        memset(r->local_addr, 0, 16);
    if (r->kind == LDT_SPAN_SERVER && e->unix_ref && !r->host_len &&
        (b = ldt__name_get(e->unix_ref, &n)) != NULL)
        set_host(r, b, n, 0);
}

/* Status: server ERROR on 5xx or a response cut short; client ERROR on 4xx/5xx or a failed call. */
static void set_status(const struct ldt__span *s, struct ldt_span_rec *r)
{
    int bad = r->kind == LDT_SPAN_SERVER ? r->status_code >= 500 : r->status_code >= 400;
    if (r->kind == LDT_SPAN_SERVER && (r->flags & LDT_SPAN_F_CONN_DIED) && s->started)
        bad = 1;
    if (r->kind != LDT_SPAN_SERVER && (r->err || (r->flags & LDT_SPAN_F_CONN_DIED)))
        bad = 1;
    r->status = bad ? LDT_STATUS_ERROR : LDT_STATUS_UNSET;
}

void ldt__span_finish(struct ldt__span *s, struct ldt__conn *c)
{
    /* A server span ends when the call completing its response was entered; anything else when
     * the current call returned (a client span: the response's last byte was read). */
    uint64_t end = s->rec.kind == LDT_SPAN_SERVER && ldt__io_start ? ldt__io_start
                   : ldt__io_end                                   ? ldt__io_end
                                                                   : ldt_clock_mono_ns();
    s->rec.dur_ns = end > s->start_mono ? end - s->start_mono : 0;
    if (c)
        fill_addrs(&s->rec, c);
    set_status(s, &s->rec);
    if (s->reg >= 0) {
        reg_del(s->reg, s->serial);
        /* Ended on the thread that opened it (thread-per-request): pop it now rather than lazily,
         * so the stack stays short and pushes never shift it. */
        if (tstack_n > 0 && tstack[tstack_n - 1].slot == s->reg &&
            tstack[tstack_n - 1].serial == s->serial)
            tstack_n--;
        s->reg = -1;
    }
}

void ldt__span_emit(struct ldt__span *s)
{
    if (!s->sampled || atomic_load_explicit(&app_traces, memory_order_relaxed))
        return;
    if ((s->rec.flags & LDT_SPAN_F_STACK) && ldt__stack_ready(s->rec.span_id))
        ldt__stack_emit(s->rec.trace_id, s->rec.span_id);
    else
        s->rec.flags &= (uint16_t)~LDT_SPAN_F_STACK;
    ldt__emit(&s->rec, sizeof s->rec);
}

void ldt__span_end(struct ldt__span *s, struct ldt__conn *c)
{
    ldt__span_finish(s, c);
    ldt__span_emit(s);
}

void ldt__conn_connect_done(struct ldt__conn *c, struct ldt__conn *addrs)
{
    ldt__span_finish(&c->conn_span, addrs);
    c->connect_pending = 1;
}

void ldt__conn_flush_connect(struct ldt__conn *c)
{
    if (!c->connect_pending)
        return;
    c->connect_pending = 0;
    ldt__span_emit(&c->conn_span);
}

void ldt__span_internal(const struct ldt__ctx *parent, enum ldt_span_op op, uint64_t start_wall,
                        uint64_t dur, int err, const char *host, size_t host_len)
{
    struct ldt__span s;
    ldt__span_begin(&s, LDT_SPAN_INTERNAL, parent);
    s.rec.op = (uint8_t)op;
    s.rec.start_ns = start_wall;
    s.rec.dur_ns = dur;
    s.rec.err = err;
    if (host && host_len)
        set_host(&s.rec, host, host_len, 0);
    s.rec.status = err ? LDT_STATUS_ERROR : LDT_STATUS_UNSET;
    if (!s.sampled)
        return;
    if (op == LDT_OP_CONNECT && ldt__stack_worthy(err)) {
        ldt__stack_capture(s.rec.span_id);
        s.rec.flags |= LDT_SPAN_F_STACK;
        ldt__stack_emit(s.rec.trace_id, s.rec.span_id);
    }
    ldt__emit(&s.rec, sizeof s.rec);
}

/* ---- the segment and this thread's ring ------------------------------------------------------ */

enum { SEG_NONE = 0, SEG_CREATING, SEG_READY, SEG_FAILED };

static struct ldt_seg seg;
static _Atomic int seg_state;
static _Atomic uint32_t seg_gen = 1; /* bumped in a fork child: thread rings belong to a gen */
static pthread_key_t ring_key;
static int ring_key_ok;

static __thread int tring __attribute__((tls_model("initial-exec"))) = -1;
static __thread uint32_t tring_gen __attribute__((tls_model("initial-exec")));

static void seg_create(void)
{
    struct utsname u;
    struct ldt_seg_params p = {0};
    p.nrings = ldt__cfg.rings;
    p.ring_cap = ldt__cfg.ring_slots;
    p.service_name = ldt__cfg.service_name;
    p.exe_name = ldt__cfg.exe_name;
    p.host_name = uname(&u) == 0 ? u.nodename : "";
    p.command_args = ldt__cfg.args;
    p.args_len = ldt__cfg.args_len;
    p.resource = ldt__cfg.resource;
    int rc = ldt_seg_create(ldt__cfg.dir, &p, &seg);
    if (rc < 0)
        ldt_log("segment in %s: %s", ldt__cfg.dir, strerror(-rc));
    atomic_store_explicit(&seg_state, rc < 0 ? SEG_FAILED : SEG_READY, memory_order_release);
}

/* Create the segment once; a thread racing the creator waits for it (a few syscalls, once). */
static int seg_ready(void)
{
    int st = atomic_load_explicit(&seg_state, memory_order_acquire);
    if (LDT_LIKELY(st == SEG_READY))
        return 1;
    if (st == SEG_FAILED)
        return 0;
    int expect = SEG_NONE;
    if (atomic_compare_exchange_strong(&seg_state, &expect, SEG_CREATING))
        seg_create();
    while ((st = atomic_load_explicit(&seg_state, memory_order_acquire)) == SEG_CREATING)
        sched_yield();
    return st == SEG_READY;
}

static void ring_release(void *arg)
{
    (void)arg;
    if (tring >= 0 && tring_gen == atomic_load(&seg_gen) && seg.hdr)
        ldt_ring_release(&seg, (unsigned)tring);
    tring = -1;
}

static int my_ring(void)
{
    uint32_t g = atomic_load_explicit(&seg_gen, memory_order_relaxed);
    if (LDT_LIKELY(tring >= 0 && tring_gen == g))
        return tring;
    tring = (int)ldt_ring_claim(&seg, (uint32_t)syscall(SYS_gettid));
    tring_gen = g;
    if (ring_key_ok)
        pthread_setspecific(ring_key, (void *)1);
    return tring;
}

/* ldt__emit before this thread's ring is ready (segment to make, ring to claim): out of line, so
 * the usual push below keeps no frame. */
static __attribute__((noinline)) void emit_slow(const void *rec, size_t len)
{
    int saved = errno;
    if (seg_ready())
        ldt_ring_push(&seg, (unsigned)my_ring(), rec, len);
    errno = saved;
}

void ldt__emit(const void *rec, size_t len)
{
    if (ldt__span_sink) {
        ldt__span_sink(rec, len);
        return;
    }
    /* The usual case: segment made and this thread's ring claimed; a push makes no call that
     * could touch errno. */
    if (LDT_LIKELY(atomic_load_explicit(&seg_state, memory_order_acquire) == SEG_READY &&
                   tring >= 0 &&
                   tring_gen == atomic_load_explicit(&seg_gen, memory_order_relaxed))) {
        ldt_ring_push(&seg, (unsigned)tring, rec, len);
        return;
    }
    emit_slow(rec, len);
}

void ldt__count_reject(void)
{
    if (atomic_load_explicit(&seg_state, memory_order_acquire) == SEG_READY)
        __atomic_fetch_add(&seg.hdr->sniff_rejects, 1, __ATOMIC_RELAXED);
}

void ldt__count_untracked(void)
{
    if (atomic_load_explicit(&seg_state, memory_order_acquire) == SEG_READY)
        __atomic_fetch_add(&seg.hdr->untracked_conns, 1, __ATOMIC_RELAXED);
}

void ldt__span_init(void)
{
    ring_key_ok = pthread_key_create(&ring_key, ring_release) == 0;
}

void ldt__span_atfork_child(void)
{
    /* The parent's segment stays the parent's: drop our view of it; a new one comes lazily. */
    if (atomic_load(&seg_state) == SEG_READY)
        ldt_seg_unmap(&seg);
    memset(&seg, 0, sizeof seg);
    atomic_store(&seg_state, SEG_NONE);
    atomic_fetch_add(&seg_gen, 1);
    tring = -1;
    ldt_id_reseed();
}

void ldt__seg_prepare(void)
{
    int saved = errno;
    seg_ready();
    errno = saved;
}

void ldt__seg_exec_mark(int on)
{
    if (atomic_load_explicit(&seg_state, memory_order_acquire) != SEG_READY)
        return;
    /* A vfork child (or a raw clone) shares our memory, so `seg` is its parent's segment: that
     * image does not go away with this exec. Only the producer itself marks its segment. */
    if (seg.hdr->pid != (uint32_t)getpid())
        return;
    if (on)
        ldt_seg_mark_exited(&seg);
    else
        __atomic_fetch_and(&seg.hdr->flags, ~(uint32_t)LDT_SEG_F_EXITED, __ATOMIC_RELEASE);
}

void ldt__span_atexit(void)
{
    if (atomic_load(&seg_state) == SEG_READY)
        ldt_seg_mark_exited(&seg);
}
