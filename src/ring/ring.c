/* ring.c - per-thread rings in a segment: wait-free push (shim), validating reader (ldtraced). */
#include <errno.h>
#include <string.h>

#include "common/common.h"
#include "ring/ring_int.h"

/* Bounded CAS attempts on the shared ring's head before the record is dropped (never wait). */
#define SHARED_RETRIES 64

/* ------------------------------------------------------------------------------------------------
 * Producer side. The producer trusts its own header (it wrote it); nothing here makes a syscall.
 * ---------------------------------------------------------------------------------------------- */

unsigned ldt_ring_claim(struct ldt_seg *s, uint32_t tid)
{
    struct ldt_seg_hdr *h = s->hdr;
    unsigned last = h->nrings - 1;
    /* Start at a tid-dependent ring so threads created together do not all race for ring 0. */
    unsigned start = (unsigned)(tid * 2654435761u) % last;
    /* tid 0 marks a free ring, so a caller without a tid cannot own one: it gets the shared ring. */
    for (unsigned k = 0; tid != 0 && k < last; k++) {
        unsigned i = (start + k) % last;
        struct ldt_ring_hdr *rh = ldt__ring_at(h, h->ring_stride, i);
        uint32_t free_owner = 0;
        if (LDT__LOAD(&rh->owner, RELAXED) != 0)
            continue;
        /* Acquire pairs with the release in ldt_ring_release: we see the previous owner's head. */
        if (__atomic_compare_exchange_n(&rh->owner, &free_owner, tid, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
            return i;
    }
    LDT__ADD(&h->claim_fails, 1);
    return last;
}

void ldt_ring_release(struct ldt_seg *s, unsigned ring)
{
    struct ldt_seg_hdr *h = s->hdr;
    if (!h || ring >= h->nrings - 1)
        return;
    /* Release: the next owner (acquire CAS in ldt_ring_claim) sees every head store we made. */
    LDT__STORE(&ldt__ring_at(h, h->ring_stride, ring)->owner, 0, RELEASE);
}

/* Single-producer reservation: only the owning thread moves head, so a plain check suffices. The
 * producer reads the reader's tail line only when the ring looks full by its cached copy of tail
 * (ring_int.h), about once a lap instead of on every push. */
static struct ldt_slot *reserve_single(struct ldt_ring_hdr *rh, uint32_t cap, uint64_t *pos)
{
    ldt__u64a *cached = ldt__tail_cache(rh);
    uint64_t head = LDT__LOAD(&rh->head, RELAXED);
    if (LDT_UNLIKELY(head - *cached >= cap)) {
        /* Acquire pairs with the reader's release store of tail: its copy-out of the slot we are
         * about to overwrite has finished. */
        uint64_t tail = LDT__LOAD(&rh->tail, ACQUIRE);
        *cached = tail;
        if (head - tail >= cap) {
            /* Only this thread writes dropped on its own ring: no locked instruction needed. */
            LDT__STORE(&rh->dropped, LDT__LOAD(&rh->dropped, RELAXED) + 1, RELAXED);
            return NULL;
        }
    }
    *pos = head;
    return ldt__slot_at(rh, head, cap);
}

/* Multi-producer reservation on the shared ring: claim a position with a CAS on head. */
static struct ldt_slot *reserve_shared(struct ldt_ring_hdr *rh, uint32_t cap, uint64_t *pos)
{
    uint64_t head = LDT__LOAD(&rh->head, RELAXED);
    for (int tries = 0; tries < SHARED_RETRIES; tries++) {
        uint64_t tail = LDT__LOAD(&rh->tail, ACQUIRE); /* pairs with the reader's release */
        if (head - tail >= cap)
            break;
        /* tail only grows, so head - tail < cap still holds if the CAS succeeds on this head. */
        if (__atomic_compare_exchange_n(&rh->head, &head, head + 1, 1, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
            *pos = head;
            return ldt__slot_at(rh, head, cap);
        }
    }
    LDT__ADD(&rh->dropped, 1);
    return NULL;
}

void *ldt_ring_reserve(struct ldt_seg *s, unsigned ring, uint64_t *pos)
{
    struct ldt_seg_hdr *h = s->hdr;
    if (LDT_UNLIKELY(!h || ring >= h->nrings))
        return NULL;
    struct ldt_ring_hdr *rh = ldt__ring_at(h, h->ring_stride, ring);
    struct ldt_slot *slot = ring == h->nrings - 1 ? reserve_shared(rh, h->ring_cap, pos)
                                                  : reserve_single(rh, h->ring_cap, pos);
    return slot ? slot->rec : NULL;
}

void ldt_ring_commit(struct ldt_seg *s, unsigned ring, uint64_t pos)
{
    struct ldt_seg_hdr *h = s->hdr;
    struct ldt_ring_hdr *rh = ldt__ring_at(h, h->ring_stride, ring);
    /* Release: the record bytes are visible before the reader's acquire sees seq == pos + 1. */
    LDT__STORE(&ldt__slot_at(rh, pos, h->ring_cap)->seq, pos + 1, RELEASE);
    if (ring == h->nrings - 1) {
        LDT__ADD(&rh->pushed, 1); /* head already moved with the CAS in reserve_shared */
        return;
    }
    LDT__STORE(&rh->head, pos + 1, RELEASE);
    LDT__STORE(&rh->pushed, LDT__LOAD(&rh->pushed, RELAXED) + 1, RELAXED);
}

/* A whole record (LDT_REC_SIZE bytes, a span's size) copied in fixed 16-byte moves: no call. */
typedef uint64_t ldt__v16 __attribute__((vector_size(16), aligned(1), may_alias));

static inline void copy_rec(uint8_t *dst, const void *rec)
{
    _Static_assert(LDT_REC_SIZE % 8 == 0 && LDT_REC_SIZE >= 16, "record size");
    _Static_assert(LDT_REC_SIZE <= 256, "copy_rec covers 256 bytes");
    const char *src = rec;
#define C16(i) \
    if ((i) + 16 <= LDT_REC_SIZE) \
        *(ldt__v16 *)(void *)(dst + (i)) = *(const ldt__v16 *)(const void *)(src + (i));
    C16(0) C16(16) C16(32) C16(48) C16(64) C16(80) C16(96) C16(112) C16(128) C16(144) C16(160)
    C16(176) C16(192) C16(208) C16(224) C16(240)
#undef C16
    if (LDT_REC_SIZE % 16) /* the last 16 bytes again, overlapping */
        *(ldt__v16 *)(void *)(dst + LDT_REC_SIZE - 16) =
            *(const ldt__v16 *)(const void *)(src + LDT_REC_SIZE - 16);
}

int ldt_ring_push(struct ldt_seg *s, unsigned ring, const void *rec, size_t len)
{
    uint64_t pos;
    struct ldt_seg_hdr *h = s->hdr;
    if (LDT_UNLIKELY(len > LDT_REC_SIZE || !h || ring >= h->nrings))
        return -EINVAL;
    /* A claimed ring (the usual push): reserve and commit of its single producer, inline. */
    int own = ring != h->nrings - 1;
    struct ldt_ring_hdr *rh = ldt__ring_at(h, h->ring_stride, ring);
    struct ldt_slot *slot =
        own ? reserve_single(rh, h->ring_cap, &pos) : reserve_shared(rh, h->ring_cap, &pos);
    if (LDT_UNLIKELY(!slot))
        return -ENOSPC;
    uint8_t *dst = slot->rec;
    if (LDT_LIKELY(len == LDT_REC_SIZE)) {
        copy_rec(dst, rec);
    } else {
        memcpy(dst, rec, len);
        memset(dst + len, 0, LDT_REC_SIZE - len); /* no stale bytes from an earlier lap */
    }
    if (LDT_LIKELY(own)) {
        /* Release: the record bytes are visible before the reader's acquire sees seq. */
        LDT__STORE(&slot->seq, pos + 1, RELEASE);
        LDT__STORE(&rh->head, pos + 1, RELEASE);
        LDT__STORE(&rh->pushed, LDT__LOAD(&rh->pushed, RELAXED) + 1, RELAXED);
        return 0;
    }
    ldt_ring_commit(s, ring, pos);
    return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Reader side. Addresses come only from the reader's validated geometry; the record is validated
 * after it has been copied out, so the producer cannot change it between check and use.
 * ---------------------------------------------------------------------------------------------- */

static int valid_family(uint8_t f)
{
    return f <= LDT_AF_UNIX;
}

static int valid_span(const struct ldt_span_rec *sp)
{
    return sp->kind >= LDT_SPAN_INTERNAL && sp->kind <= LDT_SPAN_CLIENT &&
           sp->status <= LDT_STATUS_ERROR && sp->path_len <= LDT_SPAN_PATH_MAX &&
           sp->host_len <= LDT_SPAN_HOST_MAX && valid_family(sp->peer_family) &&
           valid_family(sp->local_family);
}

static int valid_stack(const struct ldt_stack_rec *st)
{
    return st->part < st->nparts && st->nparts <= LDT_STACK_MAX_PARTS &&
           st->len <= LDT_STACK_TEXT_MAX;
}

static int valid_record(const uint8_t rec[LDT_REC_SIZE])
{
    struct ldt_span_rec sp;
    struct ldt_stack_rec st;
    switch (rec[0]) {
    case LDT_REC_SPAN:
        memcpy(&sp, rec, sizeof(sp)); /* out[] need not be aligned */
        return valid_span(&sp);
    case LDT_REC_STACK:
        memcpy(&st, rec, sizeof(st));
        return valid_stack(&st);
    default:
        return 0;
    }
}

uint64_t ldt_seg_tail(const struct ldt_seg_reader *r, unsigned ring)
{
    if (!r->base || ring >= r->nrings)
        return 0;
    return LDT__LOAD(&ldt__ring_at(r->base, r->ring_stride, ring)->tail, ACQUIRE);
}

int ldt_seg_read_at(struct ldt_seg_reader *r, unsigned ring, uint64_t *pos,
                    uint8_t out[LDT_REC_SIZE])
{
    if (!r->base || ring >= r->nrings)
        return -EINVAL;
    struct ldt_ring_hdr *rh = ldt__ring_at(r->base, r->ring_stride, ring);
    uint64_t t = *pos;
    struct ldt_slot *slot = ldt__slot_at(rh, t, r->ring_cap);
    /* Acquire pairs with the producer's release store of seq: the record bytes are complete. The
     * producer cannot reuse this slot while we copy it: the shared tail is at or before t. */
    if (LDT__LOAD(&slot->seq, ACQUIRE) != t + 1)
        return 0;
    memcpy(out, slot->rec, LDT_REC_SIZE);
    /* Defence against a misbehaving producer: the slot must not have been rewritten during the copy
     * (the fence orders the copy's loads before the second seq load). */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    int ok = LDT__LOAD(&slot->seq, RELAXED) == t + 1 && valid_record(out);
    *pos = t + 1;
    if (!ok) {
        r->bad_records++;
        return -EBADMSG;
    }
    return 1;
}

int ldt_seg_skip_torn_at(struct ldt_seg_reader *r, unsigned ring, uint64_t *pos)
{
    if (!r->base || ring >= r->nrings)
        return 0;
    struct ldt_ring_hdr *rh = ldt__ring_at(r->base, r->ring_stride, ring);
    uint64_t t = *pos;
    uint64_t head = LDT__LOAD(&rh->head, ACQUIRE);
    /* head - t is unsigned: a head behind t (hostile) wraps to a huge value and is refused. */
    if (head == t || head - t > r->ring_cap)
        return 0;
    if (LDT__LOAD(&ldt__slot_at(rh, t, r->ring_cap)->seq, ACQUIRE) == t + 1)
        return 0; /* committed after all: read it */
    *pos = t + 1;
    r->torn++;
    return 1;
}

void ldt_seg_release(struct ldt_seg_reader *r, unsigned ring, uint64_t tail)
{
    if (!r->base || ring >= r->nrings)
        return;
    struct ldt_ring_hdr *rh = ldt__ring_at(r->base, r->ring_stride, ring);
    uint64_t old = LDT__LOAD(&rh->tail, RELAXED);
    uint64_t head = LDT__LOAD(&rh->head, ACQUIRE);
    /* The tail only grows (the producer caches it as a lower bound), by at most one lap, and never
     * past what the producer has published (a hostile head cannot pull it anywhere). A single
     * producer publishes head just after the slot's seq, so a record read a moment ago may still be
     * ahead of head: then the tail waits for the next release. Release pairs with the producer's
     * acquire load of tail: our copies out of the slots before it are done before it reuses them. */
    if (tail > old && tail - old <= r->ring_cap && head - tail <= r->ring_cap)
        LDT__STORE(&rh->tail, tail, RELEASE);
}

int ldt_seg_read(struct ldt_seg_reader *r, unsigned ring, uint8_t out[LDT_REC_SIZE])
{
    uint64_t t = ldt_seg_tail(r, ring);
    int rc = ldt_seg_read_at(r, ring, &t, out);
    /* Past the slot just read, at once (it was committed, whatever head says yet). Release pairs
     * with the producer's acquire load of tail: the copy-out is done before it reuses the slot. */
    if (rc != 0 && rc != -EINVAL)
        LDT__STORE(&ldt__ring_at(r->base, r->ring_stride, ring)->tail, t, RELEASE);
    return rc;
}

int ldt_seg_skip_torn(struct ldt_seg_reader *r, unsigned ring)
{
    uint64_t t = ldt_seg_tail(r, ring);
    if (!ldt_seg_skip_torn_at(r, ring, &t))
        return 0;
    struct ldt_ring_hdr *rh = ldt__ring_at(r->base, r->ring_stride, ring);
    LDT__STORE(&rh->torn, LDT__LOAD(&rh->torn, RELAXED) + 1, RELAXED);
    LDT__STORE(&rh->tail, t, RELEASE);
    return 1;
}
