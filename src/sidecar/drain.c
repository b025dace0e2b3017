/* drain.c - the sidecar's reading side: discover segment files in the directory, validate them,
 * read every ring, assemble error stacks, batch spans per process and hand full lines to the
 * exporter; finish (drain, skip torn slots, unlink) the segments of producers that are gone.
 *
 * Delivery is at most once. ldt_seg_read advances a ring's tail as it copies the record out, and
 * the record then lives only in the in-memory batch until the batch is written (at most flush_ms or
 * batch_max spans later). If ldtraced crashes inside that window those spans are lost; they are
 * never exported twice, because the tail never goes back. Closing the window (advancing tails only
 * after the line was written, or spooling) is left to a later issue. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/common.h"
#include "sidecar/sidecar.h"

#define YOUNG_NS 1000000000ull /* a rejected file this fresh may still be under construction */
#define TRIM_KEEP (64 * 1024)  /* batch buffer kept by a process that only trickles spans */

struct seg {
    struct ldt_seg_reader r;
    struct ldt__batch batch;
    struct ldt__stack **stacks; /* per ring, allocated on its first stack record */
};

struct rejected {
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    int seen;
};

struct ldt__drain {
    struct ldt__drain_opts o;
    struct seg **segs;
    size_t nsegs, capsegs;
    struct rejected *rej;
    size_t nrej, caprej;
    uint64_t last_scan;
    struct ldt__stats st; /* totals of closed segments, plus the counters kept here */
    int scanned;
    char errwhat[600]; /* "<call> <object>" of the last failure */
};

static int failed(struct ldt__drain *d, int err, const char *call, const char *obj)
{
    snprintf(d->errwhat, sizeof(d->errwhat), "%s %s", call, obj);
    return err;
}

/* ---- stack assembly ---- */

int ldt__stack_feed(struct ldt__stack *st, const struct ldt_stack_rec *rec)
{
    size_t len = rec->len < LDT_STACK_TEXT_MAX ? rec->len : LDT_STACK_TEXT_MAX;
    int follows = rec->part == st->next && rec->part > 0 && rec->nparts == st->nparts &&
                  memcmp(rec->span_id, st->span_id, 8) == 0 &&
                  memcmp(rec->trace_id, st->trace_id, 16) == 0;
    if (!follows && rec->part != 0) {
        st->nparts = st->next = 0;
        st->len = 0;
        return 0;
    }
    int ok = follows || st->next == 0; /* a part 0 over an unfinished stack drops the old one */
    if (!follows) {
        memcpy(st->trace_id, rec->trace_id, 16);
        memcpy(st->span_id, rec->span_id, 8);
        st->nparts = rec->nparts;
        st->next = 0;
        st->len = 0;
    }
    if (st->nparts == 0 || st->nparts > LDT_STACK_MAX_PARTS || st->len + len > sizeof(st->text)) {
        st->nparts = st->next = 0;
        return 0;
    }
    memcpy(st->text + st->len, rec->text, len);
    st->len += (uint32_t)len;
    st->next++;
    return ok;
}

const struct ldt__stack *ldt__stack_take(struct ldt__stack *st, const struct ldt_span_rec *s)
{
    int match = (s->flags & LDT_SPAN_F_STACK) && st->nparts && st->next == st->nparts &&
                memcmp(s->span_id, st->span_id, 8) == 0 &&
                memcmp(s->trace_id, st->trace_id, 16) == 0;
    st->nparts = st->next = 0;
    return match ? st : NULL;
}

/* ---- segments ---- */

static int flush_seg(struct ldt__drain *d, struct seg *s)
{
    size_t len;
    const char *line = ldt__batch_finish(&s->batch, &len);
    if (!line)
        return 0;
    uint32_t n = s->batch.nspans;
    int rc = d->o.exp->ops->export_line(d->o.exp, line, len);
    ldt__batch_reset(&s->batch);
    if (rc < 0) {
        d->st.write_errors++;
        return failed(d, rc, d->o.exp->ops->verb, d->o.exp->target);
    }
    d->st.spans += n;
    return 0;
}

static int on_stack(struct ldt__drain *d, struct seg *s, unsigned ring, const void *rec)
{
    if (!s->stacks[ring]) {
        s->stacks[ring] = calloc(1, sizeof(struct ldt__stack));
        if (!s->stacks[ring])
            return -ENOMEM;
    }
    if (!ldt__stack_feed(s->stacks[ring], rec))
        d->st.bad_records++;
    return 0;
}

static int on_span(struct ldt__drain *d, struct seg *s, unsigned ring, const void *rec)
{
    const struct ldt_span_rec *sp = rec;
    const struct ldt__stack *st = s->stacks[ring] ? ldt__stack_take(s->stacks[ring], sp) : NULL;
    if (ldt__batch_add(&s->batch, sp, st) < 0)
        return -ENOMEM;
    if (s->batch.nspans >= d->o.batch_max)
        return flush_seg(d, s);
    return 0;
}

/* Read up to budget records from one ring. Returns records read or a negative errno. */
static int drain_ring(struct ldt__drain *d, struct seg *s, unsigned ring, unsigned budget)
{
    union {
        uint8_t b[LDT_REC_SIZE];
        struct ldt_span_rec span;
        struct ldt_stack_rec stack;
    } rec;
    int n = 0;
    while ((unsigned)n < budget) {
        int rc = ldt_seg_read(&s->r, ring, rec.b);
        if (rc == 0)
            break;
        n++;
        if (rc < 0)
            continue; /* rejected by the reader's validation, counted in r.bad_records */
        rc = rec.b[0] == LDT_REC_STACK ? on_stack(d, s, ring, rec.b) : on_span(d, s, ring, rec.b);
        if (rc < 0)
            return rc;
    }
    return n;
}

static int drain_seg(struct ldt__drain *d, struct seg *s, unsigned budget, int *err)
{
    int total = 0;
    for (unsigned i = 0; i < s->r.nrings; i++) {
        int n = drain_ring(d, s, i, budget);
        if (n < 0) {
            *err = n;
            continue;
        }
        total += n;
    }
    return total;
}

/* The producer is gone: read everything, step over slots it reserved but never committed, flush,
 * unlink the file and close. Torn slots are skipped only here, where no writer can finish them. */
static int finish_seg(struct ldt__drain *d, struct seg *s)
{
    int err = 0;
    for (unsigned i = 0; i < s->r.nrings; i++)
        while (drain_ring(d, s, i, s->r.ring_cap) > 0 || ldt_seg_skip_torn(&s->r, i) > 0)
            ;
    int rc = flush_seg(d, s);
    d->st.dropped += ldt_seg_dropped(&s->r);
    d->st.bad_records += s->r.bad_records;
    d->st.torn += s->r.torn;
    if (unlink(s->r.path) < 0 && errno != ENOENT)
        err = failed(d, -errno, "unlink", s->r.path);
    for (unsigned i = 0; i < s->r.nrings; i++)
        free(s->stacks[i]);
    free(s->stacks);
    ldt__batch_free(&s->batch);
    ldt_seg_close(&s->r);
    free(s);
    return rc < 0 ? rc : err;
}

static struct seg *find_seg(struct ldt__drain *d, dev_t dev, ino_t ino)
{
    for (size_t i = 0; i < d->nsegs; i++)
        if (d->segs[i]->r.dev == dev && d->segs[i]->r.ino == ino)
            return d->segs[i];
    return NULL;
}

static struct rejected *find_rej(struct ldt__drain *d, const struct stat *st)
{
    for (size_t i = 0; i < d->nrej; i++)
        if (d->rej[i].dev == st->st_dev && d->rej[i].ino == st->st_ino)
            return &d->rej[i];
    return NULL;
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? 2 * *cap : 16;
    void *p = realloc(*arr, c * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = c;
    return 0;
}

static int young(const struct stat *st)
{
    uint64_t m = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
    uint64_t now = ldt_clock_wall_ns();
    return now < m + YOUNG_NS;
}

/* Remember a rejected file so that it is reported once and not retried while unchanged. A file that
 * was modified less than a second ago is neither reported nor remembered: a producer may be between
 * creating it and publishing its header. */
static int reject(struct ldt__drain *d, const char *path, const struct stat *st,
                  struct rejected *rj, const char *why)
{
    if (young(st))
        return 0;
    if (!rj) {
        if (grow((void **)&d->rej, &d->caprej, d->nrej, sizeof(*d->rej)) < 0)
            return -ENOMEM;
        rj = &d->rej[d->nrej++];
    }
    *rj = (struct rejected){.dev = st->st_dev, .ino = st->st_ino, .mtime = st->st_mtim, .seen = 1};
    d->st.bad_segments++;
    fprintf(stderr, "ldtraced: segment %s rejected: %s\n", path, why);
    return 0;
}

static int open_seg(struct ldt__drain *d, const char *path, const struct stat *st,
                    struct rejected *rj)
{
    char why[256] = "";
    struct seg *s = calloc(1, sizeof(*s));
    if (!s || grow((void **)&d->segs, &d->capsegs, d->nsegs, sizeof(*d->segs)) < 0) {
        free(s);
        return -ENOMEM;
    }
    int rc = ldt_seg_open(path, &s->r, why, sizeof(why));
    if (rc < 0) {
        free(s);
        return reject(d, path, st, rj, why[0] ? why : strerror(-rc));
    }
    s->stacks = calloc(s->r.nrings, sizeof(*s->stacks));
    if (!s->stacks || ldt__batch_init(&s->batch, s->r.hdr) < 0) {
        free(s->stacks);
        ldt_seg_close(&s->r);
        free(s);
        return -ENOMEM;
    }
    if (rj)
        rj->seen = 0; /* it changed and is valid now: forget it */
    d->segs[d->nsegs++] = s;
    d->st.segments++;
    return 0;
}

static int ends_with_ring(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcmp(name + n - 5, ".ring") == 0;
}

static int scan_entry(struct ldt__drain *d, const char *name)
{
    char path[512];
    struct stat st;
    if (!ends_with_ring(name) || strlen(d->o.dir) + strlen(name) + 2 > sizeof(path))
        return 0;
    strcpy(path, d->o.dir);
    strcat(path, "/");
    strcat(path, name);
    if (lstat(path, &st) < 0 || find_seg(d, st.st_dev, st.st_ino))
        return 0;
    struct rejected *rj = find_rej(d, &st);
    if (rj && rj->mtime.tv_sec == st.st_mtim.tv_sec && rj->mtime.tv_nsec == st.st_mtim.tv_nsec) {
        rj->seen = 1;
        return 0;
    }
    return open_seg(d, path, &st, rj);
}

/* Rescan the directory. A missing directory is not an error: no producer has started yet. */
static int scan(struct ldt__drain *d)
{
    DIR *dir = opendir(d->o.dir);
    if (!dir)
        return errno == ENOENT ? 0 : failed(d, -errno, "opendir", d->o.dir);
    for (size_t i = 0; i < d->nrej; i++)
        d->rej[i].seen = 0;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(dir)))
        rc = scan_entry(d, de->d_name);
    closedir(dir);
    size_t k = 0; /* forget rejected files that are gone (or were replaced by valid ones) */
    for (size_t i = 0; i < d->nrej; i++)
        if (d->rej[i].seen)
            d->rej[k++] = d->rej[i];
    d->nrej = k;
    return rc;
}

/* Finish the segments whose producer is gone. */
static int reap(struct ldt__drain *d)
{
    int err = 0;
    for (size_t i = 0; i < d->nsegs;) {
        if (ldt_seg_alive(&d->segs[i]->r)) {
            i++;
            continue;
        }
        int rc = finish_seg(d, d->segs[i]);
        if (rc < 0)
            err = rc;
        d->segs[i] = d->segs[--d->nsegs];
    }
    return err;
}

struct ldt__drain *ldt__drain_new(const struct ldt__drain_opts *o)
{
    struct ldt__drain *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->o = *o;
    if (!d->o.batch_max)
        d->o.batch_max = 4096;
    if (!d->o.rescan_ms)
        d->o.rescan_ms = 100;
    if (!d->o.flush_ms)
        d->o.flush_ms = 200;
    return d;
}

int ldt__drain_pass(struct ldt__drain *d)
{
    uint64_t now = ldt_clock_mono_ns();
    int err = 0, rc;
    if (!d->scanned || now - d->last_scan >= (uint64_t)d->o.rescan_ms * 1000000u) {
        d->scanned = 1;
        d->last_scan = now;
        if ((rc = scan(d)) < 0)
            err = rc;
        if ((rc = reap(d)) < 0)
            err = rc;
    }
    int total = 0;
    for (size_t i = 0; i < d->nsegs; i++) {
        struct seg *s = d->segs[i];
        total += drain_seg(d, s, s->r.ring_cap, &err);
        if (s->batch.nspans && now - s->batch.first_ns >= (uint64_t)d->o.flush_ms * 1000000u) {
            if ((rc = flush_seg(d, s)) < 0)
                err = rc;
            /* A timer flush means a slow producer: give back what a past burst grew (up to
             * ~4 MB per process), instead of holding it for every quiet process. */
            ldt__batch_trim(&s->batch, TRIM_KEEP);
        }
    }
    return err < 0 ? err : total;
}

int ldt__drain_all(struct ldt__drain *d)
{
    int err = scan(d), rc;
    d->scanned = 1;
    d->last_scan = ldt_clock_mono_ns();
    for (size_t i = 0; i < d->nsegs; i++)
        drain_seg(d, d->segs[i], d->segs[i]->r.ring_cap, &err);
    if ((rc = reap(d)) < 0)
        err = rc;
    for (size_t i = 0; i < d->nsegs; i++)
        if ((rc = flush_seg(d, d->segs[i])) < 0)
            err = rc;
    return err;
}

const char *ldt__drain_errwhat(const struct ldt__drain *d)
{
    return d->errwhat;
}

size_t ldt__drain_open_segments(const struct ldt__drain *d)
{
    return d->nsegs;
}

void ldt__drain_stats(struct ldt__drain *d, struct ldt__stats *out)
{
    *out = d->st;
    for (size_t i = 0; i < d->nsegs; i++) {
        out->dropped += ldt_seg_dropped(&d->segs[i]->r);
        out->bad_records += d->segs[i]->r.bad_records;
        out->torn += d->segs[i]->r.torn;
    }
}

void ldt__drain_free(struct ldt__drain *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->nsegs; i++) {
        struct seg *s = d->segs[i];
        flush_seg(d, s);
        for (unsigned k = 0; k < s->r.nrings; k++)
            free(s->stacks[k]);
        free(s->stacks);
        ldt__batch_free(&s->batch);
        ldt_seg_close(&s->r);
        free(s);
    }
    free(d->segs);
    free(d->rej);
    free(d);
}
