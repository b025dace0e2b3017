/* ring.h - create, write and read the shared-memory segments that carry span records out of a process.
 *
 * Written by: the shim (producer side: ldt_seg_create, ldt_ring_claim, ldt_ring_push ...).
 * Read by:    ldtraced (reader side: ldt_seg_open, ldt_seg_read ...), which trusts nothing in the file.
 *
 * The layout and the slot protocol are in record.h. Errors are negative errno values. Producer-side
 * functions make no syscall, take no lock and never wait, except ldt_seg_create/ldt_seg_destroy.
 */
#ifndef LDTRACE_RING_H
#define LDTRACE_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ldtrace/record.h"

/* ------------------------------------------------------------------------------------------------
 * Producer side
 * ---------------------------------------------------------------------------------------------- */

/* What the producer puts into a new segment's header. Strings may be NULL (left empty); longer strings
 * are truncated to their fields. */
struct ldt_seg_params {
    uint32_t nrings;            /* 0: LDT_SEG_DEFAULT_RINGS; at least 2 (one per-thread + the shared) */
    uint32_t ring_cap;          /* 0: LDT_SEG_DEFAULT_SLOTS; rounded up to a power of two */
    const char *service_name;
    const char *exe_name;
    const char *host_name;
    const char *command_args;   /* argv joined with NUL bytes */
    size_t args_len;
    const char *resource;       /* OTEL_RESOURCE_ATTRIBUTES, raw */
};

/* A mapped segment as the producer holds it. */
struct ldt_seg {
    struct ldt_seg_hdr *hdr;    /* the mapping; NULL when not created */
    size_t size;
};

/* Create the directory `dir` if needed (0700; an existing one must be a directory owned by this uid
 * with no group/other access, else -EPERM), then create "<pid>.<nonce>.ring" in it with
 * O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode 0600, size it, fill the header, mmap it MAP_SHARED and close
 * the fd (so the app has no fd of ours). Returns 0 or a negative errno; on failure nothing is left behind.
 * Not signal-safe; call it outside the app's hot path (the shim calls it once per process image).
 * Preserves nothing: callers save errno. */
int ldt_seg_create(const char *dir, const struct ldt_seg_params *p, struct ldt_seg *out);

/* Mark the segment exited (LDT_SEG_F_EXITED) so the reader can finish it without waiting for the pid to
 * go; the mapping stays valid. Async-signal-safe. */
void ldt_seg_mark_exited(struct ldt_seg *s);

/* Unmap (does not unlink: the reader removes drained segments). */
void ldt_seg_unmap(struct ldt_seg *s);

/* Claim a free per-thread ring for the calling thread (tid > 0). Returns its index, or the shared
 * ring's index (nrings - 1) when none is free (counted in hdr->claim_fails). Lock-free, no syscall. */
unsigned ldt_ring_claim(struct ldt_seg *s, uint32_t tid);

/* Give a claimed ring back (thread exit). Does nothing for the shared ring. */
void ldt_ring_release(struct ldt_seg *s, unsigned ring);

/* Push one record of len <= LDT_REC_SIZE bytes onto ring `ring`: copy, then commit. Returns 0, or
 * -ENOSPC when the ring is full (the record is dropped and counted), or -EINVAL for a bad ring/len.
 * Wait-free for a claimed ring (its single producer), lock-free with bounded retries for the shared
 * ring. No syscall; async-signal-safe only on a ring the signal handler's thread does not own. */
int ldt_ring_push(struct ldt_seg *s, unsigned ring, const void *rec, size_t len);

/* Zero-copy form of push: reserve a slot (NULL when full: dropped and counted), fill the returned
 * LDT_REC_SIZE bytes, then commit with the returned position. */
void *ldt_ring_reserve(struct ldt_seg *s, unsigned ring, uint64_t *pos);
void ldt_ring_commit(struct ldt_seg *s, unsigned ring, uint64_t pos);

/* ------------------------------------------------------------------------------------------------
 * Reader side (ldtraced). Nothing here trusts the segment's contents.
 * ---------------------------------------------------------------------------------------------- */

struct ldt_seg_reader {
    int fd;                       /* kept open: it pins the file we validated */
    void *base;                   /* read-write mapping (the reader stores tail cursors) */
    size_t size;                  /* file size at open */
    const struct ldt_seg_hdr *hdr;
    uint32_t nrings, ring_cap, ring_stride, pid; /* validated copies: never re-read from the file */
    uint64_t proc_start_ticks;
    dev_t dev;
    ino_t ino;
    uint64_t bad_records;         /* records rejected by validation (skipped) */
    uint64_t torn;                /* uncommitted slots skipped once the producer was gone or stalled */
    char path[512];
};

/* Open and validate the segment at `path`: a regular file (O_NOFOLLOW), owned by our uid, mode exactly
 * 0600, magic, version, header and slot sizes, nrings/ring_cap in range and a power of two, seg_size
 * equal to the computed size and to the file size, strings terminated. On failure returns a negative
 * errno (-EINVAL for bad contents, -EPERM for owner/mode, -ELOOP for a symlink ...) and writes a
 * one-line reason into why[whylen]. */
int ldt_seg_open(const char *path, struct ldt_seg_reader *r, char *why, size_t whylen);

/* Copy the next committed record of ring `ring` into out[LDT_REC_SIZE] and advance that ring's tail.
 * Returns 1 for a record that passed validation (type known, lengths within bounds), 0 when the ring
 * has nothing committed, or a negative errno for a record that failed validation (it is skipped,
 * counted in r->bad_records, and the caller may go on reading). */
int ldt_seg_read(struct ldt_seg_reader *r, unsigned ring, uint8_t out[LDT_REC_SIZE]);

/* Skip a slot that was reserved but never committed while later ones are (a producer that died
 * mid-write). Call only when ldt_seg_alive() says the producer is gone, or the slot has stalled.
 * Returns 1 if it skipped one, 0 if there was nothing to skip. */
int ldt_seg_skip_torn(struct ldt_seg_reader *r, unsigned ring);

/* Delivery-driven reading: the reader keeps its own position per ring and frees slots only once what
 * it read from them is delivered, so a reader that crashes leaves undelivered records in the ring.
 * ldt_seg_tail: the ring's shared tail (where a new reader starts). ldt_seg_read_at /
 * ldt_seg_skip_torn_at: as ldt_seg_read / ldt_seg_skip_torn, at *pos (advanced), without moving the
 * shared tail. ldt_seg_release: move the shared tail to `tail` (only forward, at most one lap, never past
 * the producer's published head), which frees the slots before it for the producer. */
uint64_t ldt_seg_tail(const struct ldt_seg_reader *r, unsigned ring);
int ldt_seg_read_at(struct ldt_seg_reader *r, unsigned ring, uint64_t *pos,
                    uint8_t out[LDT_REC_SIZE]);
int ldt_seg_skip_torn_at(struct ldt_seg_reader *r, unsigned ring, uint64_t *pos);
void ldt_seg_release(struct ldt_seg_reader *r, unsigned ring, uint64_t tail);

/* 1 while the producer process (same pid and same start ticks) is alive and has not marked the segment
 * exited, 0 otherwise. */
int ldt_seg_alive(const struct ldt_seg_reader *r);

/* Sum of the producers' drop counters over all rings. */
uint64_t ldt_seg_dropped(const struct ldt_seg_reader *r);

/* Unmap and close. Does not unlink. */
void ldt_seg_close(struct ldt_seg_reader *r);

/* Field 22 (starttime, in clock ticks) of /proc/<pid>/stat, or 0 if it cannot be read. */
uint64_t ldt_proc_start_ticks(pid_t pid);

#endif
