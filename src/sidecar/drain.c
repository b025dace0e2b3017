/* drain.c - the sidecar's reading side: discover segment files in the directory, validate them,
 * read every ring, assemble error stacks, batch spans per process and hand full lines to the
 * exporter; finish (drain, skip torn slots, unlink) the segments of producers that are gone.
 *
 * Delivery: every ring is read at a cursor of our own (ldt_seg_read_at) and its shared tail moves
 * past a batch's records only after the exporter took the batch's line, so records not yet
 * delivered stay in the ring, where a failing exporter (disk full, collector down) or a restarted
 * ldtraced finds them again. With the file exporter, a write-ahead journal (journal.c) covers a
 * crash between the write and the tail store: exactly once. A record stays in the ring only as long
 * as its batch is not flushed: a batch is flushed at batch_max spans, batch_bytes bytes, when any
 * of its rings is half full of undelivered records, or flush_ms after its first span. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "sidecar/sidecar.h"

#define YOUNG_NS 1000000000ull /* a rejected file this fresh may still be under construction */
#define TRIM_KEEP (64 * 1024)  /* batch buffer kept by a process that only trickles spans */
#define BACKOFF_FIRST_MS 100   /* after a failed export; doubled up to BACKOFF_MAX_MS */
#define BACKOFF_MAX_MS 5000

/* Adaptive polling: the longest sleep while rings are quiet (--poll-ms is the shortest); a sleep
 * lasts at most 1/POLL_SAFETY of the time a ring needs to fill at its rate; a ring's rate estimate
 * falls to its measure over RATE_DECAY_NS; a new segment's rings are assumed at RATE_FRESH spans/s
 * (as fast as a producer goes) until measured, which takes about 0.3 s. */
#define POLL_MAX_MS 20
#define POLL_SAFETY 8
#define RATE_DECAY_NS 100000000ull
#define RATE_FRESH 1000000ull
#define RECENT_NS 20000000ull /* a directory changed this recently is scanned again */

struct seg {
    struct ldt_seg_reader r;
    struct ldt__batch batch;
    struct ldt__stack **stacks; /* per ring, allocated on its first stack record */
    uint64_t *pos;              /* per ring: our read cursor */
    uint64_t *tail;             /* per ring: the shared tail as we last stored it */
    uint64_t *stack_pos;        /* per ring: where the stack being assembled began */
    uint64_t *target;           /* per ring: scratch, the tails a flush moves to */
    uint64_t *rate;             /* per ring: records/s, fast up, decaying down (poll interval) */
    int full;                   /* a ring is half full of undelivered records: flush soon */
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
    uint64_t last_pass;   /* monotonic ns of the previous pass (rate estimates) */
    uint64_t sleep_ns;    /* what the last pass advises to sleep (0: more is waiting) */
    struct ldt__stats st; /* totals of closed segments, plus the counters kept here */
    int scanned;
    int use_journal, recovered;
    struct ldt__journal journal;
    struct timespec dir_mtime; /* the directory's mtime when it was last scanned: a pass that
                                * sees it changed rescans at once (a new producer's ring is read
                                * then, not at the next rescan: at 1M spans/s 8192 slots last
                                * 8 ms) */
    int failing;               /* the last export failed */
    unsigned backoff_ms;       /* next delay after a failure */
    uint64_t retry_at;         /* monotonic ns: no reading before (records stay in the rings) */
    uint64_t fail_count;       /* lines that failed in the current failing stretch */
    uint64_t drops_said;       /* producers' drops already reported */
    uint64_t drops_next;       /* monotonic ns: next drop report allowed */
    uint32_t limit;            /* spans a batch may hold now: halved by each failure (a disk with a
                                * little room left takes smaller lines), doubled back by successes */
    char errwhat[1200];        /* "<call> <object>" of the last failure */
};

static void recover(struct ldt__drain *d);

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

/* Where ring i's tail may move: past everything read, except a stack still being assembled (its
 * parts are read again with their span if we stop here). */
static uint64_t target_of(const struct seg *s, unsigned i)
{
    const struct ldt__stack *st = s->stacks[i];
    return st && st->nparts ? s->stack_pos[i] : s->pos[i];
}

static void commit_tails(struct seg *s)
{
    for (unsigned i = 0; i < s->r.nrings; i++) {
        if (s->target[i] != s->tail[i]) {
            /* The ring refuses a tail past the producer's published head (a record read between
             * its commit and its head store): then keep the old one and try again next pass,
             * rather than believe the slots were freed (a producer waiting for tail == head
             * would wait forever). */
            ldt_seg_release(&s->r, i, s->target[i]);
            if (ldt_seg_tail(&s->r, i) == s->target[i])
                s->tail[i] = s->target[i];
        }
    }
    s->full = 0;
}

/* The batch was not delivered: forget it and read its records again from the tails, after a
 * backoff (the exporter may ask for a later time, e.g. a Retry-After). */
static int export_failed(struct ldt__drain *d, struct seg *s, int rc)
{
    uint64_t now = ldt_clock_mono_ns();
    for (unsigned i = 0; i < s->r.nrings; i++) {
        s->pos[i] = s->tail[i];
        if (s->stacks[i])
            s->stacks[i]->nparts = s->stacks[i]->next = 0;
    }
    s->full = 0;
    d->st.write_errors++;
    d->fail_count++;
    uint32_t n = s->batch.nspans ? s->batch.nspans : d->limit;
    if (rc == -ENOSPC || rc == -EFBIG || rc == -EDQUOT)
        d->limit = n / 2 > 16 ? n / 2 : 16;
    d->failing = 1;
    unsigned b = d->backoff_ms ? d->backoff_ms : BACKOFF_FIRST_MS;
    d->retry_at = now + (uint64_t)(b / 2 + (unsigned)random() % (b / 2 + 1)) * 1000000u;
    if (d->o.exp->retry_at > d->retry_at)
        d->retry_at = d->o.exp->retry_at;
    d->backoff_ms = b * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : b * 2;
    ldt__batch_reset(&s->batch);
    return failed(d, rc, d->o.exp->ops->verb, d->o.exp->target);
}

static void export_ok(struct ldt__drain *d)
{
    d->limit = d->limit > d->o.batch_max / 2 ? d->o.batch_max : d->limit * 2;
    if (d->failing)
        fprintf(stderr, "ldtraced: %s %s: working again (%llu attempts had failed; no span lost)\n",
                d->o.exp->ops->verb, d->o.exp->target, (unsigned long long)d->fail_count);
    d->failing = 0;
    d->fail_count = 0;
    d->backoff_ms = 0;
}

/* Journal the line before it is written (file exporter): where it goes and the tails it moves. */
static int journal_line(struct ldt__drain *d, struct seg *s, const char *line, size_t len)
{
    uint64_t off;
    int rc = d->o.exp->ops->position(d->o.exp, &off);
    if (rc == 0)
        rc = ldt__journal_open(&d->journal, d->o.dir);
    if (rc == 0)
        rc = ldt__journal_begin(&d->journal, &s->r, s->target, d->o.exp->target, off, line, len);
    return rc;
}

static int flush_seg(struct ldt__drain *d, struct seg *s)
{
    for (unsigned i = 0; i < s->r.nrings; i++)
        s->target[i] = target_of(s, i);
    uint32_t n = s->batch.nspans;
    if (n == 0) {
        commit_tails(s); /* only rejected or torn records were read: nothing to deliver */
        return 0;
    }
    size_t len;
    const char *line = ldt__batch_finish(&s->batch, &len);
    if (!line)
        return -ENOMEM;
    int rc = d->use_journal ? journal_line(d, s, line, len) : 0;
    if (rc < 0) {
        export_failed(d, s, rc);
        return failed(d, rc, "write", d->journal.path[0] ? d->journal.path : d->o.dir);
    }
    rc = d->o.exp->ops->export_line(d->o.exp, line, len, n);
    if (rc < 0) {
        if (d->use_journal)
            ldt__journal_end(&d->journal);
        return export_failed(d, s, rc);
    }
    commit_tails(s);
    if (d->use_journal)
        ldt__journal_end(&d->journal);
    ldt__batch_reset(&s->batch);
    d->st.spans += n;
    export_ok(d);
    return 0;
}

static int on_stack(struct ldt__drain *d, struct seg *s, unsigned ring, const void *rec)
{
    if (!s->stacks[ring]) {
        s->stacks[ring] = calloc(1, sizeof(struct ldt__stack));
        if (!s->stacks[ring])
            return -ENOMEM;
    }
    if (((const struct ldt_stack_rec *)rec)->part == 0)
        s->stack_pos[ring] = s->pos[ring] - 1; /* a stack (re)starts at this record */
    /* A part out of place follows parts the producer dropped on a full ring (counted there) when
     * the segment has drops; otherwise the record itself is bad. */
    if (!ldt__stack_feed(s->stacks[ring], rec)) {
        if (ldt_seg_dropped(&s->r))
            d->st.orphan_parts++;
        else
            d->st.bad_records++;
    }
    return 0;
}

static int on_span(struct ldt__drain *d, struct seg *s, unsigned ring, const void *rec)
{
    const struct ldt_span_rec *sp = rec;
    const struct ldt__stack *st = s->stacks[ring] ? ldt__stack_take(s->stacks[ring], sp) : NULL;
    if (ldt__batch_add(&s->batch, sp, st) < 0)
        return -ENOMEM;
    if (s->batch.nspans >= d->limit || s->batch.buf.len >= d->o.batch_bytes || s->full)
        return flush_seg(d, s);
    return 0;
}

/* Read up to budget records from one ring. Returns records read or a negative errno (a failed
 * flush: the cursors went back to the tails, stop reading). */
static int drain_ring(struct ldt__drain *d, struct seg *s, unsigned ring, unsigned budget)
{
    union {
        uint8_t b[LDT_REC_SIZE];
        struct ldt_span_rec span;
        struct ldt_stack_rec stack;
    } rec;
    int n = 0;
    unsigned half = s->r.ring_cap / 2;
    while ((unsigned)n < budget) {
        int rc = ldt_seg_read_at(&s->r, ring, &s->pos[ring], rec.b);
        if (rc == 0)
            break;
        n++;
        if (rc < 0)
            continue; /* rejected by the reader's validation, counted in r.bad_records */
        /* Undelivered records hold the producer's room: past half a ring, deliver soon. */
        if (s->pos[ring] - s->tail[ring] >= half)
            s->full = 1;
        rc = rec.b[0] == LDT_REC_STACK ? on_stack(d, s, ring, rec.b) : on_span(d, s, ring, rec.b);
        if (rc < 0)
            return rc;
    }
    return n;
}

/* Fold n records read from ring i over dt ns into its rate: a higher measure is taken at once, a
 * lower one only as the old estimate decays (RATE_DECAY_NS), so a pause in a burst is not trusted.
 */
static void update_rate(struct seg *s, unsigned i, unsigned n, uint64_t dt)
{
    uint64_t now_rate = dt ? (uint64_t)n * 1000000000u / dt : 0, r = s->rate[i];
    if (dt >= RATE_DECAY_NS)
        r = now_rate;
    else
        r -= (uint64_t)((double)r * (double)dt / (double)RATE_DECAY_NS);
    s->rate[i] = now_rate > r ? now_rate : r;
}

/* Read every ring of s (up to budget records each). dt > 0: the time since the last pass, for the
 * rate estimates; a ring read up to its budget means more is waiting (d->sleep_ns = 0). */
static int drain_seg(struct ldt__drain *d, struct seg *s, unsigned budget, uint64_t dt, int *err)
{
    int total = 0;
    for (unsigned i = 0; i < s->r.nrings; i++) {
        int n = drain_ring(d, s, i, budget);
        if (n < 0) {
            *err = n;
            break;
        }
        if (dt)
            update_rate(s, i, (unsigned)n, dt);
        if ((unsigned)n >= budget)
            d->sleep_ns = 0;
        total += n;
    }
    return total;
}

/* The longest sleep after which no ring of s is fuller than 1/POLL_SAFETY of its free room at its
 * present rate (the room: slots not holding records we read but did not deliver yet). */
static uint64_t seg_sleep_ns(const struct seg *s, uint64_t max)
{
    for (unsigned i = 0; i < s->r.nrings; i++) {
        uint64_t held = s->pos[i] - s->tail[i];
        uint64_t room = held < s->r.ring_cap ? s->r.ring_cap - held : 0;
        if (s->rate[i] && room * 1000000000u / POLL_SAFETY / s->rate[i] < max)
            max = room * 1000000000u / POLL_SAFETY / s->rate[i];
    }
    return max;
}

static void seg_free(struct seg *s)
{
    for (unsigned i = 0; s->stacks && i < s->r.nrings; i++)
        free(s->stacks[i]);
    free(s->stacks);
    free(s->pos);
    ldt__batch_free(&s->batch);
    ldt_seg_close(&s->r);
    free(s);
}

/* The producer is gone: read everything, step over slots it reserved but never committed, flush,
 * unlink the file and close. Torn slots are skipped only here, where no writer can finish them.
 * Returns 1 when s was finished and freed (an unlink failure goes to *err), or a negative errno
 * when its last batch could not be delivered: s is kept, to be finished on a later pass. */
static int finish_seg(struct ldt__drain *d, struct seg *s, int *err)
{
    for (unsigned i = 0; i < s->r.nrings; i++) {
        for (;;) {
            int n = drain_ring(d, s, i, s->r.ring_cap);
            if (n < 0)
                return n;
            if (n == 0 && ldt_seg_skip_torn_at(&s->r, i, &s->pos[i]) == 0)
                break;
        }
    }
    int rc = flush_seg(d, s);
    if (rc < 0)
        return rc;
    d->st.dropped += ldt_seg_dropped(&s->r);
    d->st.bad_records += s->r.bad_records;
    d->st.torn += s->r.torn;
    if (unlink(s->r.path) < 0 && errno != ENOENT)
        *err = failed(d, -errno, "unlink", s->r.path);
    seg_free(s);
    return 1;
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
    s->pos = calloc(5 * (size_t)s->r.nrings, sizeof(uint64_t));
    if (!s->stacks || !s->pos || ldt__batch_init(&s->batch, s->r.hdr) < 0) {
        seg_free(s);
        return -ENOMEM;
    }
    s->tail = s->pos + s->r.nrings;
    s->stack_pos = s->tail + s->r.nrings;
    s->target = s->stack_pos + s->r.nrings;
    s->rate = s->target + s->r.nrings;
    for (unsigned i = 0; i < s->r.nrings; i++) {
        s->pos[i] = s->tail[i] = ldt_seg_tail(&s->r, i);
        s->rate[i] = RATE_FRESH; /* unknown yet: poll fast until measured */
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

/* A "<pid>.<nonce>.new" file is a segment being created (the producer renames it to .ring once its
 * header is published). One whose producer died in that window is removed here, once it is a few
 * seconds old and its pid is gone; it holds no record. */
static void remove_stale_new(const char *path, const char *name, const struct stat *st)
{
    size_t n = strlen(name);
    char *end;
    long pid = strtol(name, &end, 10);
    if (n < 5 || strcmp(name + n - 4, ".new") != 0 || *end != '.' || pid <= 0 ||
        !S_ISREG(st->st_mode) || st->st_uid != geteuid() || time(NULL) - st->st_mtime < 5)
        return;
    if (kill((pid_t)pid, 0) < 0 && errno == ESRCH)
        unlink(path);
}

static int scan_entry(struct ldt__drain *d, const char *name)
{
    char path[512];
    struct stat st;
    if (strlen(d->o.dir) + strlen(name) + 2 > sizeof(path))
        return 0;
    strcpy(path, d->o.dir);
    strcat(path, "/");
    strcat(path, name);
    if (!ends_with_ring(name)) {
        if (name[0] != '.' && lstat(path, &st) == 0)
            remove_stale_new(path, name, &st);
        return 0;
    }
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
    struct stat st; /* before reading: a change during the scan shows as a change next pass */
    if (fstat(dirfd(dir), &st) == 0)
        d->dir_mtime = st.st_mtim;
    if (!d->recovered)
        recover(d);
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
        int rc = finish_seg(d, d->segs[i], &err);
        if (rc < 0)
            return rc; /* the exporter is failing: try again after the backoff */
        d->segs[i] = d->segs[--d->nsegs];
    }
    return err;
}

/* Finish what a crashed ldtraced left in the journal, once, before the first segment is read. */
static void recover(struct ldt__drain *d)
{
    d->recovered = 1;
    if (!d->use_journal)
        return;
    int rc = ldt__journal_open(&d->journal, d->o.dir);
    if (rc == 0)
        rc = ldt__journal_recover(&d->journal);
    if (rc < 0) {
        fprintf(stderr, "ldtraced: journal %s: %s (a crash may now duplicate a batch)\n",
                d->journal.path, strerror(-rc));
        d->use_journal = 0;
        return;
    }
    static const char *const what[] = {"", "its line was written, tails moved",
                                       "its line was incomplete, cut off; records read again",
                                       "the output changed; records read again"};
    if (rc > 0) {
        d->st.recovered++;
        fprintf(stderr, "ldtraced: recovered the journal of an interrupted export: %s\n", what[rc]);
    }
}

struct ldt__drain *ldt__drain_new(const struct ldt__drain_opts *o)
{
    struct ldt__drain *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->o = *o;
    if (!d->o.batch_max)
        d->o.batch_max = 4096;
    /* A file takes a small line as cheaply as a big one: 256 KiB lines stay in the cache between
     * encoding, hashing and write(), and free ring slots sooner. A collector wants few requests. */
    if (!d->o.batch_bytes)
        d->o.batch_bytes = o->exp->ops->position ? 256u << 10 : 4u << 20;
    if (!d->o.rescan_ms)
        d->o.rescan_ms = 100;
    d->limit = d->o.batch_max;
    if (!d->o.flush_ms)
        d->o.flush_ms = 200;
    d->journal.fd = -1;
    d->use_journal = d->o.exp->ops->position && !d->o.no_journal;
    return d;
}

/* Did the directory change since the last scan (an entry created, renamed or removed)? Also yes
 * while its mtime is recent: two changes within one timestamp tick look like one. */
static int dir_changed(const struct ldt__drain *d)
{
    struct stat st;
    if (stat(d->o.dir, &st) < 0)
        return 0; /* gone or not there yet: the periodic rescan handles it */
    if (st.st_mtim.tv_sec != d->dir_mtime.tv_sec || st.st_mtim.tv_nsec != d->dir_mtime.tv_nsec)
        return 1;
    uint64_t m = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    return ldt_clock_wall_ns() < m + RECENT_NS;
}

/* Say when producers dropped spans (full rings), without being asked: at once on start, then at
 * most every 10 s while the count grows. */
static void report_drops(struct ldt__drain *d, uint64_t now)
{
    struct ldt__stats st;
    if (now < d->drops_next)
        return;
    ldt__drain_stats(d, &st);
    if (st.dropped <= d->drops_said)
        return;
    fprintf(stderr, "ldtraced: producers dropped %llu spans (rings full%s), %llu in all\n",
            (unsigned long long)(st.dropped - d->drops_said),
            d->drops_said ? "" : ": no sidecar drained them in time",
            (unsigned long long)st.dropped);
    d->drops_said = st.dropped;
    d->drops_next = now + 10000000000ull;
}

static int rescan(struct ldt__drain *d, uint64_t now)
{
    int err = 0, rc;
    d->scanned = 1;
    d->last_scan = now;
    if ((rc = scan(d)) < 0)
        err = rc;
    report_drops(d, now);
    if (now >= d->retry_at && (rc = reap(d)) < 0)
        err = rc;
    return err;
}

/* Flush a batch that is due, or move the tails past records that made no span. */
static int flush_due(struct ldt__drain *d, struct seg *s, uint64_t now)
{
    if (!s->batch.nspans)
        return flush_seg(d, s);
    /* first_ns may be later than now: the span came in during this pass. */
    uint64_t age = now > s->batch.first_ns ? now - s->batch.first_ns : 0;
    if (!s->full && age < (uint64_t)d->o.flush_ms * 1000000u)
        return 0;
    int rc = flush_seg(d, s);
    /* A timer flush means a slow producer: give back what a past burst grew (up to ~4 MB per
     * process), instead of holding it for every quiet process. */
    ldt__batch_trim(&s->batch, TRIM_KEEP);
    return rc;
}

static uint64_t poll_max_ns(const struct ldt__drain *d)
{
    unsigned ms = d->o.poll_max_ms ? d->o.poll_max_ms : POLL_MAX_MS;
    return (uint64_t)(ms > d->o.poll_ms ? ms : d->o.poll_ms) * 1000000u;
}

/* A ring that fills within a few poll periods is read again at once while it yields records (a
 * 1 ms sleep often lasts several ms on a loaded machine); otherwise sleep at least poll_ms. */
static void bound_sleep(struct ldt__drain *d, int total)
{
    uint64_t min = (uint64_t)d->o.poll_ms * 1000000u;
    if (total > 0 && d->sleep_ns < 2 * min)
        d->sleep_ns = 0;
    else if (d->sleep_ns < min)
        d->sleep_ns = min;
}

int ldt__drain_pass(struct ldt__drain *d)
{
    uint64_t now = ldt_clock_mono_ns();
    int err = 0, rc;
    if (!d->scanned || now - d->last_scan >= (uint64_t)d->o.rescan_ms * 1000000u || dir_changed(d))
        err = rescan(d, now);
    if (d->o.exp->ops->flush && (rc = d->o.exp->ops->flush(d->o.exp)) < 0)
        err = failed(d, rc, d->o.exp->ops->verb, d->o.exp->target);
    if (now < d->retry_at) {
        d->sleep_ns = (uint64_t)d->o.poll_ms * 1000000u;
        return err; /* the exporter failed: the records wait in the rings */
    }
    int total = 0;
    uint64_t dt = d->last_pass && now > d->last_pass ? now - d->last_pass : 0;
    d->last_pass = now;
    d->sleep_ns = poll_max_ns(d);
    for (size_t i = 0; i < d->nsegs && now >= d->retry_at; i++) {
        struct seg *s = d->segs[i];
        total += drain_seg(d, s, s->r.ring_cap, dt, &err);
        if (now >= d->retry_at && (rc = flush_due(d, s, now)) < 0)
            err = rc;
        if (d->sleep_ns)
            d->sleep_ns = seg_sleep_ns(s, d->sleep_ns);
    }
    bound_sleep(d, total);
    return err < 0 ? err : total;
}

uint64_t ldt__drain_sleep_ns(const struct ldt__drain *d)
{
    return d->sleep_ns;
}

int ldt__drain_all(struct ldt__drain *d)
{
    int err = scan(d), rc;
    d->scanned = 1;
    d->last_scan = ldt_clock_mono_ns();
    d->retry_at = 0; /* one more try, now */
    for (size_t i = 0; i < d->nsegs; i++)
        drain_seg(d, d->segs[i], d->segs[i]->r.ring_cap, 0, &err);
    if ((rc = reap(d)) < 0)
        err = rc;
    for (size_t i = 0; i < d->nsegs; i++)
        if ((rc = flush_seg(d, d->segs[i])) < 0)
            err = rc;
    if (d->o.exp->ops->flush && (rc = d->o.exp->ops->flush(d->o.exp)) < 0)
        err = failed(d, rc, d->o.exp->ops->verb, d->o.exp->target);
    return err;
}

int ldt__drain_failing(const struct ldt__drain *d)
{
    return d->failing;
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
        flush_seg(d, d->segs[i]);
        seg_free(d->segs[i]);
    }
    ldt__journal_close(&d->journal);
    free(d->segs);
    free(d->rej);
    free(d);
}
