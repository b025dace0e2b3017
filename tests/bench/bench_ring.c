/* bench_ring.c - bench_ring: cost of one 256-byte slot push (ldt_ring_push) and loss at 1M spans/s.
 *
 * Usage: bench_ring [--runs N] [--dir DIR]     push-cost figures, one "name value" line each
 *        bench_ring --loss [--seconds S] [--rate R] [--dir DIR]
 *
 * Push-cost figures: the median ns per push over all timed batches of N runs (default 11) and of
 * each thread; a run is 64 batches of ring_cap (LDT_SEG_DEFAULT_SLOTS) pushes of a full LDT_REC_SIZE record into a
 * slot of LDT_SLOT_SIZE bytes, after one warm-up run that faults the pages in:
 *   ring_push_1t_ns         one thread on its own ring; no concurrent reader: between two timed
 *                           batches the bench frees the ring by moving tail to head (not timed)
 *   ring_push_2t_ns         two threads at once, each on its own ring, same scheme (both threads)
 *   ring_push_1t_reader_chase_ns
 *                           one thread on its own ring while a reader thread spins on it with
 *                           ldt_seg_read right behind the producer: the worst case, each slot's
 *                           first cache line moves between the cores while it is written (the
 *                           sidecar polls every few ms instead, and drains in bursts). A batch
 *                           starts once the reader has emptied the ring (the wait is not timed),
 *                           so nothing is dropped: ring_push_1t_reader_chase_drop_ratio says so
 *   ring_push_shared_2t_ns  two threads on the shared multi-producer ring (CAS reservation), no
 *                           reader
 * --loss: one producer thread pushes R spans/s (default 1,000,000) for S seconds (default 3) while
 * a reader thread drains every ring, then sleeps 1 ms; prints pushed, dropped, read and the loss
 * ratio. The ring has the shim's default size (LDT_SEG_DEFAULT_SLOTS, 8 ms at 1M/s): a loss means
 * the reader was kept off a core that long.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "ldtrace/ring.h"

#define BATCHES 64
#define MAX_RUNS 101

struct bench {
    struct ldt_seg seg;
    struct ldt_seg_reader rd;
    int runs;
    int reader_on, stop;
    pthread_barrier_t bar;
};

struct worker {
    struct bench *b;
    unsigned ring;
    int free_between; /* 1: move tail to head between batches (no reader); 0: wait for the reader */
    double ns[MAX_RUNS * BATCHES]; /* ns per push of each timed batch */
};

static struct ldt_ring_hdr *ring_hdr(struct ldt_seg *s, unsigned i)
{
    return (struct ldt_ring_hdr *)((char *)s->hdr + LDT_SEG_HDR_SIZE +
                                   (size_t)i * s->hdr->ring_stride);
}

/* Act as an instant reader: release every slot of the ring (as ldt_seg_read's tail store does). */
static void free_ring(struct ldt_seg *s, unsigned ring)
{
    struct ldt_ring_hdr *rh = ring_hdr(s, ring);
    __atomic_store_n(&rh->tail, __atomic_load_n(&rh->head, __ATOMIC_ACQUIRE), __ATOMIC_RELEASE);
}

/* Wait (untimed) until the concurrent reader has consumed the ring. */
static void wait_drained(struct ldt_seg *s, unsigned ring)
{
    struct ldt_ring_hdr *rh = ring_hdr(s, ring);
    uint64_t head = __atomic_load_n(&rh->head, __ATOMIC_RELAXED);
    while (__atomic_load_n(&rh->tail, __ATOMIC_ACQUIRE) != head)
        ;
}

/* One run: BATCHES batches of cap pushes; the ns per push of each batch goes to out[BATCHES]. */
static void one_run(struct worker *w, const struct ldt_span_rec *rec, double *out)
{
    struct ldt_seg *s = &w->b->seg;
    uint32_t cap = s->hdr->ring_cap;
    for (int b = 0; b < BATCHES; b++) {
        if (w->free_between)
            free_ring(s, w->ring);
        else
            wait_drained(s, w->ring);
        uint64_t t0 = ldt_clock_mono_ns();
        for (uint32_t i = 0; i < cap; i++)
            ldt_ring_push(s, w->ring, rec, sizeof(*rec));
        out[b] = (double)(ldt_clock_mono_ns() - t0) / cap;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct ldt_span_rec rec; /* the content does not matter to the cost */
    memset(&rec, 0x5a, sizeof(rec));
    rec.type = LDT_REC_SPAN;
    rec.kind = LDT_SPAN_SERVER;
    rec.status = 0;
    rec.path_len = 10;
    rec.host_len = 10;
    rec.peer_family = rec.local_family = LDT_AF_INET;
    one_run(w, &rec, w->ns); /* warm-up: page faults, caches */
    for (int r = 0; r < w->b->runs; r++) {
        pthread_barrier_wait(&w->b->bar);
        one_run(w, &rec, w->ns + r * BATCHES);
    }
    return NULL;
}

static void *reader_main(void *arg)
{
    struct bench *b = arg;
    uint8_t out[LDT_REC_SIZE];
    while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE))
        for (unsigned ring = 0; ring < b->rd.nrings; ring++)
            while (ldt_seg_read(&b->rd, ring, out) == 1)
                ;
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Run nthreads workers on the given rings; returns the median ns per push over every timed batch
 * of every run and thread (a batch in which a thread was preempted is an outlier, not the rule). */
static double measure(struct bench *b, int nthreads, const unsigned *rings, int free_between)
{
    pthread_t th[2], rd;
    static struct worker w[2];
    static double all[2 * MAX_RUNS * BATCHES];
    int n = 0;
    pthread_barrier_init(&b->bar, NULL, (unsigned)nthreads);
    b->stop = 0;
    if (b->reader_on)
        pthread_create(&rd, NULL, reader_main, b);
    for (int t = 0; t < nthreads; t++) {
        w[t] = (struct worker){.b = b, .ring = rings[t], .free_between = free_between};
        pthread_create(&th[t], NULL, worker_main, &w[t]);
    }
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    __atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
    if (b->reader_on)
        pthread_join(rd, NULL);
    pthread_barrier_destroy(&b->bar);
    for (int t = 0; t < nthreads; t++)
        for (int k = 0; k < b->runs * BATCHES; k++)
            all[n++] = w[t].ns[k];
    return median(all, n);
}

static int open_bench(struct bench *b, const char *dir)
{
    char path[512], why[160];
    struct ldt_seg_params p = {.nrings = 4, .ring_cap = LDT_SEG_DEFAULT_SLOTS,
                              .service_name = "bench_ring"};
    int rc = ldt_seg_create(dir, &p, &b->seg);
    if (rc < 0) {
        fprintf(stderr, "bench_ring: create segment in %s: %s\n", dir, strerror(-rc));
        return rc;
    }
    snprintf(path, sizeof(path), "%s/%u.%016llx.ring", dir, b->seg.hdr->pid,
             (unsigned long long)b->seg.hdr->nonce);
    rc = ldt_seg_open(path, &b->rd, why, sizeof(why));
    unlink(path); /* the mapping and the reader's fd keep it alive */
    if (rc < 0)
        fprintf(stderr, "bench_ring: open %s: %s\n", path, why);
    return rc;
}

static void bench_push(struct bench *b)
{
    static const unsigned own1[] = {0}, own2[] = {1, 2}, own3[] = {0}, shared[] = {3, 3};
    printf("ring_push_1t_ns %.1f\n", measure(b, 1, own1, 1));
    printf("ring_push_2t_ns %.1f\n", measure(b, 2, own2, 1));
    struct ldt_ring_hdr *rh = ring_hdr(&b->seg, own3[0]);
    uint64_t d0 = rh->dropped, p0 = rh->pushed;
    free_ring(&b->seg, own3[0]); /* before the reader starts: it owns tail from then on */
    b->reader_on = 1;
    printf("ring_push_1t_reader_chase_ns %.1f\n", measure(b, 1, own3, 0));
    b->reader_on = 0;
    uint64_t d = rh->dropped - d0, p = rh->pushed - p0;
    printf("ring_push_1t_reader_chase_drop_ratio %.4f\n", (double)d / (double)(d + p));
    printf("ring_push_shared_2t_ns %.1f\n", measure(b, 2, shared, 1));
}

struct loss {
    struct bench *b;
    double rate, seconds;
    uint64_t pushed, dropped, read;
};

static void *loss_reader(void *arg)
{
    struct loss *l = arg;
    uint8_t out[LDT_REC_SIZE];
    struct timespec ms = {0, 1000000};
    for (int last = 0; !last;) {
        last = __atomic_load_n(&l->b->stop, __ATOMIC_ACQUIRE);
        for (unsigned ring = 0; ring < l->b->rd.nrings; ring++)
            while (ldt_seg_read(&l->b->rd, ring, out) == 1)
                l->read++;
        if (!last)
            nanosleep(&ms, NULL);
    }
    return NULL;
}

/* Push at a steady rate: catch up to the due count, then sleep 100 us. */
static void loss_produce(struct loss *l)
{
    struct ldt_span_rec rec = {.type = LDT_REC_SPAN, .kind = LDT_SPAN_CLIENT};
    struct timespec nap = {0, 100000};
    uint64_t t0 = ldt_clock_mono_ns(), total = (uint64_t)(l->rate * l->seconds), i = 0;
    while (i < total) {
        uint64_t due = (uint64_t)((double)(ldt_clock_mono_ns() - t0) * l->rate / 1e9);
        for (; i < due && i < total; i++) {
            rec.start_ns = i;
            if (ldt_ring_push(&l->b->seg, 0, &rec, sizeof(rec)) == 0)
                l->pushed++;
            else
                l->dropped++;
        }
        nanosleep(&nap, NULL);
    }
}

static void bench_loss(struct bench *b, double rate, double seconds)
{
    struct loss l = {.b = b, .rate = rate, .seconds = seconds};
    pthread_t rd;
    b->stop = 0;
    pthread_create(&rd, NULL, loss_reader, &l);
    loss_produce(&l);
    __atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
    pthread_join(rd, NULL);
    printf("ring_loss_rate_per_s %.0f\n", rate);
    printf("ring_loss_pushed %llu\n", (unsigned long long)l.pushed);
    printf("ring_loss_dropped %llu\n", (unsigned long long)l.dropped);
    printf("ring_loss_read %llu\n", (unsigned long long)l.read);
    printf("ring_loss_ratio %.6f\n", (double)l.dropped / (double)(l.pushed + l.dropped));
}

int main(int argc, char **argv)
{
    static struct bench b;
    char dir[64] = "/tmp/bench-ring-XXXXXX";
    const char *usedir = NULL;
    int loss = 0;
    double rate = 1e6, seconds = 3;
    b.runs = 11;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--loss"))
            loss = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            b.runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rate") && i + 1 < argc)
            rate = atof(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            usedir = argv[++i];
        else {
            fprintf(stderr, "usage: bench_ring [--runs N] [--dir DIR] | --loss [--rate R] "
                            "[--seconds S] [--dir DIR]\n");
            return 64;
        }
    }
    if (b.runs < 1 || b.runs > MAX_RUNS)
        b.runs = 11;
    if (!usedir && !(usedir = mkdtemp(dir)))
        return perror("bench_ring: mkdtemp"), 1;
    if (open_bench(&b, usedir) < 0)
        return 1;
    if (loss)
        bench_loss(&b, rate, seconds);
    else
        bench_push(&b);
    ldt_seg_close(&b.rd);
    ldt_seg_unmap(&b.seg);
    if (usedir == dir)
        rmdir(dir);
    return 0;
}
