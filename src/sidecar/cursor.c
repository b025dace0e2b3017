/* cursor.c - the sidecar reads each ring at a cursor of its own and moves the shared tail only once
 * the records behind it are delivered (written out or spooled), so a crash of ldtraced leaves every
 * undelivered record in the ring for the next ldtraced to read.
 *
 * ldt_seg_read (ring.h) advances the shared tail as it copies a record out, which makes delivery at
 * most once. These functions follow the same slot protocol (record.h: seq = position + 1 once
 * committed) and the same validation, but at a position the caller keeps; ldt__cur_commit then
 * stores the tail. The geometry comes only from the reader's validated copies (r->nrings,
 * r->ring_cap, r->ring_stride), never from the file. */
#include <errno.h>
#include <string.h>

#include "sidecar/sidecar.h"

static struct ldt_ring_hdr *ring_at(const struct ldt_seg_reader *r, unsigned i)
{
    return (struct ldt_ring_hdr *)((char *)r->base + LDT_SEG_HDR_SIZE +
                                   (uint64_t)i * r->ring_stride);
}

static struct ldt_slot *slot_at(const struct ldt_seg_reader *r, struct ldt_ring_hdr *rh,
                                uint64_t pos)
{
    return (struct ldt_slot *)(rh + 1) + (pos & (r->ring_cap - 1));
}

/* The same checks as the ring reader's: a known type, lengths within their fields. */
static int valid_record(const uint8_t rec[LDT_REC_SIZE])
{
    struct ldt_span_rec sp;
    struct ldt_stack_rec st;
    switch (rec[0]) {
    case LDT_REC_SPAN:
        memcpy(&sp, rec, sizeof(sp));
        return sp.kind >= LDT_SPAN_INTERNAL && sp.kind <= LDT_SPAN_CLIENT &&
               sp.status <= LDT_STATUS_ERROR && sp.path_len <= LDT_SPAN_PATH_MAX &&
               sp.host_len <= LDT_SPAN_HOST_MAX && sp.peer_family <= LDT_AF_UNIX &&
               sp.local_family <= LDT_AF_UNIX;
    case LDT_REC_STACK:
        memcpy(&st, rec, sizeof(st));
        return st.part < st.nparts && st.nparts <= LDT_STACK_MAX_PARTS &&
               st.len <= LDT_STACK_TEXT_MAX;
    default:
        return 0;
    }
}

uint64_t ldt__cur_tail(const struct ldt_seg_reader *r, unsigned ring)
{
    /* Acquire: nothing of ours depends on it, but a concurrent ldtraced (not supported) would. */
    return __atomic_load_n(&ring_at(r, ring)->tail, __ATOMIC_ACQUIRE);
}

int ldt__cur_read(struct ldt_seg_reader *r, unsigned ring, uint64_t *pos,
                  uint8_t out[LDT_REC_SIZE])
{
    if (!r->base || ring >= r->nrings)
        return -EINVAL;
    struct ldt_ring_hdr *rh = ring_at(r, ring);
    uint64_t t = *pos;
    struct ldt_slot *slot = slot_at(r, rh, t);
    /* Acquire pairs with the producer's release store of seq: the record bytes are complete. The
     * producer cannot reuse this slot while we read it: the shared tail is at or before t. */
    if (__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) != t + 1)
        return 0;
    memcpy(out, slot->rec, LDT_REC_SIZE);
    __atomic_thread_fence(__ATOMIC_ACQUIRE); /* copy's loads before the second seq load */
    int ok = __atomic_load_n(&slot->seq, __ATOMIC_RELAXED) == t + 1 && valid_record(out);
    *pos = t + 1;
    if (!ok) {
        r->bad_records++;
        return -EBADMSG;
    }
    return 1;
}

int ldt__cur_skip_torn(struct ldt_seg_reader *r, unsigned ring, uint64_t *pos)
{
    if (!r->base || ring >= r->nrings)
        return 0;
    struct ldt_ring_hdr *rh = ring_at(r, ring);
    uint64_t t = *pos;
    uint64_t head = __atomic_load_n(&rh->head, __ATOMIC_ACQUIRE);
    /* head - t is unsigned: a head behind t (hostile) wraps to a huge value and is refused. */
    if (head == t || head - t > r->ring_cap)
        return 0;
    if (__atomic_load_n(&slot_at(r, rh, t)->seq, __ATOMIC_ACQUIRE) == t + 1)
        return 0; /* committed after all: read it */
    *pos = t + 1;
    r->torn++;
    return 1;
}

void ldt__cur_commit(struct ldt_seg_reader *r, unsigned ring, uint64_t tail)
{
    struct ldt_ring_hdr *rh = ring_at(r, ring);
    uint64_t old = __atomic_load_n(&rh->tail, __ATOMIC_RELAXED);
    /* The tail only grows (the producer caches it and trusts it as a lower bound), and never past
     * what the producer has reserved. Release pairs with the producer's acquire load of tail: our
     * copies out of the slots before it are done before it reuses them. */
    uint64_t head = __atomic_load_n(&rh->head, __ATOMIC_ACQUIRE);
    if (tail > old && tail - old <= r->ring_cap && head - tail <= r->ring_cap)
        __atomic_store_n(&rh->tail, tail, __ATOMIC_RELEASE);
}
