/* ring_int.h - private geometry and atomics helpers shared by shm.c (segments) and ring.c (rings).
 *
 * Rules for src/ring: the producer side (ldt_ring_*, ldt_seg_create) makes no malloc and no stdio
 * call; every access to a field another process writes goes through the LDT__LOAD/LDT__STORE macros
 * below, never a plain load; the reader computes every address from its own validated geometry.
 */
#ifndef LDTRACE_RING_INT_H
#define LDTRACE_RING_INT_H

#include <stdint.h>

#include "ldtrace/record.h"
#include "ldtrace/ring.h"

#define LDT__LOAD(p, mo) __atomic_load_n((p), __ATOMIC_##mo)
#define LDT__STORE(p, v, mo) __atomic_store_n((p), (v), __ATOMIC_##mo)
#define LDT__ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

typedef uint64_t __attribute__((may_alias)) ldt__u64a;

/* The producer's cached copy of its ring's tail (ldt_ring_hdr.tail_cache, on the producer's cache
 * line; the reader never reads it). Only the thread that owns the ring writes it, so a signal handler pushing to another ring
 * cannot disturb it, and it survives a release/claim. It is a value once loaded from tail and tail
 * only grows, so it is never ahead of the real tail: trusting it only under-estimates the room. */
static inline ldt__u64a *ldt__tail_cache(struct ldt_ring_hdr *rh)
{
    return (ldt__u64a *)(void *)&rh->tail_cache;
}

/* Bytes from one ring header to the next for `cap` slots. */
static inline uint64_t ldt__ring_stride(uint64_t cap)
{
    return sizeof(struct ldt_ring_hdr) + cap * LDT_SLOT_SIZE;
}

/* Total segment size for the geometry (64-bit: no overflow for any value the limits allow). */
static inline uint64_t ldt__seg_size(uint64_t nrings, uint64_t cap)
{
    return LDT_SEG_HDR_SIZE + nrings * ldt__ring_stride(cap);
}

/* Ring i's control block inside a mapping at `base`. */
static inline struct ldt_ring_hdr *ldt__ring_at(void *base, uint32_t stride, unsigned i)
{
    return (struct ldt_ring_hdr *)((char *)base + LDT_SEG_HDR_SIZE + (uint64_t)i * stride);
}

/* The slot that holds position pos of a ring with cap (a power of two) slots. */
static inline struct ldt_slot *ldt__slot_at(struct ldt_ring_hdr *rh, uint64_t pos, uint32_t cap)
{
    return (struct ldt_slot *)(rh + 1) + (pos & (cap - 1));
}

#endif
