/* test_ring.c - unit tests of src/ring: segment files, wait-free rings, hostile-input reader. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ldtrace/ring.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED_BUILD 1
#endif
#endif
#ifndef SANITIZED_BUILD
#define SANITIZED_BUILD 0
#endif

/* ------------------------------------------------------------------------------------------------
 * Fixtures and helpers
 * ---------------------------------------------------------------------------------------------- */

static char tmpdir[64];

static void setup_dir(void)
{
    strcpy(tmpdir, "/tmp/ldt-ring-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
}

static void teardown_dir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(tmpdir);
}

/* Scale for sanitizer builds, where every memory access costs several times more. */
static long scaled(long n)
{
    if (SANITIZED_BUILD || getenv("LDT_SANITIZED"))
        return n / 10;
    return n;
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

/* A span record that carries (thread, seq) and a checksum of all its other bytes in io_ns. */
static void fill_rec(struct ldt_span_rec *r, uint32_t thread, uint64_t seq)
{
    memset(r, 0, sizeof(*r));
    r->type = LDT_REC_SPAN;
    r->kind = 1 + seq % 3;
    r->status = seq % 3;
    r->bytes_in = thread;
    r->bytes_out = seq;
    r->start_ns = seq * 7919 + thread;
    for (int i = 0; i < 16; i++)
        r->trace_id[i] = (uint8_t)(seq >> (i % 8 * 8)) ^ (uint8_t)thread;
    r->path_len = (uint8_t)(seq % (LDT_SPAN_PATH_MAX + 1));
    for (int i = 0; i < LDT_SPAN_PATH_MAX; i++)
        r->path[i] = (char)('a' + (seq + (uint64_t)i) % 26);
    r->host_len = LDT_SPAN_HOST_MAX;
    memset(r->host, 'h', sizeof(r->host));
    r->io_ns = fnv((const uint8_t *)r, sizeof(*r));
}

static int rec_ok(const uint8_t *buf, uint32_t *thread, uint64_t *seq)
{
    struct ldt_span_rec r;
    memcpy(&r, buf, sizeof(r));
    uint64_t sum = r.io_ns;
    r.io_ns = 0;
    *thread = (uint32_t)r.bytes_in;
    *seq = r.bytes_out;
    return r.type == LDT_REC_SPAN && fnv((const uint8_t *)&r, sizeof(r)) == sum;
}

static void seg_path(const struct ldt_seg *s, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%u.%016llx.ring", tmpdir, s->hdr->pid,
             (unsigned long long)s->hdr->nonce);
}

static void make_seg(struct ldt_seg *s, uint32_t nrings, uint32_t cap)
{
    struct ldt_seg_params p = {.nrings = nrings, .ring_cap = cap, .service_name = "svc",
                               .exe_name = "test_ring", .host_name = "host",
                               .command_args = "a\0b", .args_len = 4, .resource = "k=v"};
    int rc = ldt_seg_create(tmpdir, &p, s);
    cr_assert_eq(rc, 0, "ldt_seg_create: %s", strerror(-rc));
}

static void open_seg(const struct ldt_seg *s, struct ldt_seg_reader *r)
{
    char path[512], why[128];
    seg_path(s, path, sizeof(path));
    int rc = ldt_seg_open(path, r, why, sizeof(why));
    cr_assert_eq(rc, 0, "ldt_seg_open: %d %s", rc, why);
}

static struct ldt_ring_hdr *ring_hdr(struct ldt_seg_hdr *h, unsigned i)
{
    return (struct ldt_ring_hdr *)((char *)h + LDT_SEG_HDR_SIZE + (size_t)i * h->ring_stride);
}

/* One timeout for every suite: Criterion 2.4.1's parallel runner leaks 48 bytes (an LSan failure
 * under ASan) when suites have different ones. */
TestSuite(ring_push, .init = setup_dir, .fini = teardown_dir, .timeout = 60);
TestSuite(ring_seg, .init = setup_dir, .fini = teardown_dir, .timeout = 60);
TestSuite(ring_reader, .init = setup_dir, .fini = teardown_dir, .timeout = 60);

/* ------------------------------------------------------------------------------------------------
 * Segment creation
 * ---------------------------------------------------------------------------------------------- */

Test(ring_seg, create_fills_header_and_file_is_private)
{
    struct ldt_seg s;
    struct stat st;
    char path[512];
    make_seg(&s, 4, 5);
    seg_path(&s, path, sizeof(path));
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600);
    cr_assert_eq((uint64_t)st.st_size, s.hdr->seg_size);
    cr_assert_eq(s.hdr->magic, LDT_SEG_MAGIC);
    cr_assert_eq(s.hdr->ring_cap, 8, "5 rounds up to 8");
    cr_assert_eq(s.hdr->nrings, 4);
    cr_assert_eq(s.hdr->pid, (uint32_t)getpid());
    cr_assert_eq(s.hdr->proc_start_ticks, ldt_proc_start_ticks(getpid()));
    cr_assert_neq(s.hdr->proc_start_ticks, 0);
    cr_assert_str_eq(s.hdr->service_name, "svc");
    cr_assert_eq(s.hdr->args_len, 4);
    cr_assert_eq(memcmp(s.hdr->command_args, "a\0b", 4), 0);
    cr_assert_str_eq(s.hdr->resource, "k=v");
    cr_assert_eq(s.hdr->resource_len, 3);
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    cr_assert_eq(n, 1, "only the .ring file: the temporary name is gone");
    ldt_seg_unmap(&s);
    cr_assert_null(s.hdr);
}

Test(ring_seg, create_makes_missing_dir_0700)
{
    struct ldt_seg s;
    struct stat st;
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/sub", tmpdir);
    cr_assert_eq(ldt_seg_create(sub, NULL, &s), 0);
    cr_assert_eq(stat(sub, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0700);
    cr_assert_eq(s.hdr->nrings, LDT_SEG_DEFAULT_RINGS);
    cr_assert_eq(s.hdr->ring_cap, LDT_SEG_DEFAULT_SLOTS);
    char path[512];
    snprintf(path, sizeof(path), "%s/%u.%016llx.ring", sub, s.hdr->pid,
             (unsigned long long)s.hdr->nonce);
    ldt_seg_unmap(&s);
    unlink(path);
    rmdir(sub);
}

Test(ring_seg, create_refuses_open_dir_and_bad_geometry)
{
    struct ldt_seg s;
    struct ldt_seg_params one = {.nrings = 1}, huge = {.ring_cap = LDT_SEG_MAX_SLOTS + 1};
    chmod(tmpdir, 0755);
    cr_assert_eq(ldt_seg_create(tmpdir, NULL, &s), -EPERM);
    chmod(tmpdir, 0700);
    cr_assert_eq(ldt_seg_create(tmpdir, &one, &s), -EINVAL);
    cr_assert_eq(ldt_seg_create(tmpdir, &huge, &s), -EINVAL);
    cr_assert_null(s.hdr);
    DIR *d = opendir(tmpdir);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    cr_assert_eq(n, 0, "a failed create leaves nothing behind");
}

Test(ring_seg, create_refuses_symlinked_dir)
{
    struct ldt_seg s;
    char link[128];
    snprintf(link, sizeof(link), "%s/link", tmpdir);
    cr_assert_eq(symlink(tmpdir, link), 0);
    cr_assert_lt(ldt_seg_create(link, NULL, &s), 0);
}

Test(ring_seg, alive_follows_exit_flag_and_pid)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    make_seg(&s, 2, 2);
    open_seg(&s, &r);
    cr_assert_eq(ldt_seg_alive(&r), 1);
    ldt_seg_mark_exited(&s);
    cr_assert_eq(ldt_seg_alive(&r), 0);
    ldt_seg_close(&r);
}

Test(ring_seg, dead_producer_is_not_alive)
{
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct ldt_seg s;
        char c = ldt_seg_create(tmpdir, &(struct ldt_seg_params){.nrings = 2, .ring_cap = 2},
                                &s) == 0;
        (void)!write(pfd[1], &c, 1);
        _exit(0);
    }
    char c = 0;
    cr_assert_eq(read(pfd[0], &c, 1), 1);
    cr_assert_eq(c, 1);
    waitpid(pid, NULL, 0);
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char path[512], why[128];
    while ((e = readdir(d)) && e->d_name[0] == '.')
        ;
    cr_assert_not_null(e);
    snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
    closedir(d);
    struct ldt_seg_reader r;
    cr_assert_eq(ldt_seg_open(path, &r, why, sizeof(why)), 0, "%s", why);
    cr_assert_eq(r.pid, (uint32_t)pid);
    cr_assert_eq(ldt_seg_alive(&r), 0);
    ldt_seg_close(&r);
}

/* ------------------------------------------------------------------------------------------------
 * Single-threaded ring behaviour
 * ---------------------------------------------------------------------------------------------- */

Test(ring_push, empty_ring_reads_nothing)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    uint8_t out[LDT_REC_SIZE];
    make_seg(&s, 3, 4);
    open_seg(&s, &r);
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(ldt_seg_read(&r, i, out), 0);
    cr_assert_eq(ldt_seg_read(&r, 3, out), -EINVAL);
    cr_assert_eq(ldt_seg_skip_torn(&r, 0), 0);
    ldt_seg_close(&r);
}

Test(ring_push, push_rejects_bad_ring_and_length)
{
    struct ldt_seg s;
    uint8_t rec[LDT_REC_SIZE + 1] = {LDT_REC_SPAN};
    make_seg(&s, 2, 4);
    cr_assert_eq(ldt_ring_push(&s, 2, rec, 8), -EINVAL);
    cr_assert_eq(ldt_ring_push(&s, 0, rec, LDT_REC_SIZE + 1), -EINVAL);
    cr_assert_eq(ldt_ring_push(&s, 0, rec, LDT_REC_SIZE), 0);
}

Test(ring_push, wraps_around_many_laps_in_order)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    struct ldt_span_rec rec;
    uint8_t out[LDT_REC_SIZE];
    uint64_t next_push = 0, next_read = 0;
    make_seg(&s, 2, 8);
    open_seg(&s, &r);
    srand(42);
    while (next_read < 8 * 1000) {
        int burst = rand() % 9;
        for (int i = 0; i < burst; i++) {
            fill_rec(&rec, 1, next_push);
            if (ldt_ring_push(&s, 0, &rec, sizeof(rec)) == 0)
                next_push++;
        }
        for (int i = rand() % 9; i > 0 && ldt_seg_read(&r, 0, out) == 1; i--) {
            uint32_t th;
            uint64_t seq;
            cr_assert(rec_ok(out, &th, &seq));
            cr_assert_eq(seq, next_read++);
        }
    }
    struct ldt_ring_hdr *rh = ring_hdr(s.hdr, 0);
    cr_assert_eq(rh->pushed, next_push);
    cr_assert_eq(rh->pushed, next_read + (rh->head - rh->tail));
    ldt_seg_close(&r);
}

Test(ring_push, full_ring_drops_and_counts_exactly)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    struct ldt_span_rec rec;
    uint8_t out[LDT_REC_SIZE];
    uint64_t attempts = 0, consumed = 0, failed = 0;
    make_seg(&s, 2, 16);
    open_seg(&s, &r);
    for (int i = 0; i < 100; i++, attempts++)
        failed += ldt_ring_push(&s, 0, &rec, 8) == -ENOSPC;
    cr_assert_eq(failed, 100 - 16);
    srand(7);
    for (int round = 0; round < 5000; round++) {
        for (int i = rand() % 20; i > 0; i--, attempts++) {
            fill_rec(&rec, 0, attempts);
            failed += ldt_ring_push(&s, round & 1, &rec, sizeof(rec)) == -ENOSPC;
        }
        for (int i = rand() % 20; i > 0; i--)
            consumed += ldt_seg_read(&r, rand() & 1, out) != 0;
    }
    for (unsigned ring = 0; ring < 2; ring++)
        while (ldt_seg_read(&r, ring, out) != 0)
            consumed++;
    uint64_t pushed = ring_hdr(s.hdr, 0)->pushed + ring_hdr(s.hdr, 1)->pushed;
    cr_assert_eq(pushed, consumed);
    cr_assert_eq(attempts, consumed + failed);
    cr_assert_eq(ldt_seg_dropped(&r), failed);
    cr_assert_gt(failed, 100);
    ldt_seg_close(&r);
}

Test(ring_push, reserve_commit_zero_copy)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    uint8_t out[LDT_REC_SIZE];
    uint64_t pos;
    make_seg(&s, 2, 2);
    open_seg(&s, &r);
    for (unsigned ring = 0; ring < 2; ring++) {
        struct ldt_span_rec *rec = ldt_ring_reserve(&s, ring, &pos);
        cr_assert_not_null(rec);
        fill_rec(rec, ring, 5);
        cr_assert_eq(ldt_seg_read(&r, ring, out), 0, "not visible before commit");
        ldt_ring_commit(&s, ring, pos);
        cr_assert_eq(ldt_seg_read(&r, ring, out), 1);
        uint32_t th;
        uint64_t seq;
        cr_assert(rec_ok(out, &th, &seq));
        cr_assert_eq(th, ring);
    }
    ldt_seg_close(&r);
}

/* A shared-ring slot reserved and never committed blocks the ring until the reader skips it; the
 * records committed after it are then read, and the torn slot is never read as data. */
Test(ring_push, torn_slot_on_shared_ring_is_skipped_not_read)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    struct ldt_span_rec good;
    uint8_t out[LDT_REC_SIZE];
    uint64_t pos;
    make_seg(&s, 2, 4);
    open_seg(&s, &r);
    struct ldt_span_rec *torn = ldt_ring_reserve(&s, 1, &pos);
    cr_assert_not_null(torn);
    fill_rec(torn, 7, 7); /* complete bytes, but never committed */
    fill_rec(&good, 1, 2);
    cr_assert_eq(ldt_ring_push(&s, 1, &good, sizeof(good)), 0);
    cr_assert_eq(ldt_seg_read(&r, 1, out), 0, "position 0 is not committed");
    cr_assert_eq(ldt_seg_skip_torn(&r, 1), 1);
    cr_assert_eq(ldt_seg_read(&r, 1, out), 1);
    cr_assert_eq(memcmp(out, &good, sizeof(good)), 0);
    cr_assert_eq(ldt_seg_skip_torn(&r, 1), 0, "nothing more to skip");
    cr_assert_eq(r.torn, 1);
    cr_assert_eq(ring_hdr(s.hdr, 1)->torn, 1);
    /* A per-thread ring moves head only at commit: an uncommitted slot there is not skippable. */
    cr_assert_not_null(ldt_ring_reserve(&s, 0, &pos));
    cr_assert_eq(ldt_seg_skip_torn(&r, 0), 0);
    ldt_seg_close(&r);
}

Test(ring_push, claim_gives_each_thread_its_ring_then_the_shared_one)
{
    struct ldt_seg s;
    make_seg(&s, 4, 2);
    unsigned a = ldt_ring_claim(&s, 101), b = ldt_ring_claim(&s, 102), c = ldt_ring_claim(&s, 103);
    cr_assert(a < 3 && b < 3 && c < 3 && a != b && b != c && a != c);
    cr_assert_eq(ldt_ring_claim(&s, 104), 3);
    cr_assert_eq(s.hdr->claim_fails, 1);
    ldt_ring_release(&s, b);
    cr_assert_eq(ldt_ring_claim(&s, 105), b);
    ldt_ring_release(&s, 3); /* the shared ring cannot be released */
    cr_assert_eq(ldt_ring_claim(&s, 106), 3);
    ldt_ring_release(&s, a);
    cr_assert_eq(ldt_ring_claim(&s, 0), 3, "tid 0 cannot own a ring");
    cr_assert_eq(s.hdr->claim_fails, 3);
}

/* ------------------------------------------------------------------------------------------------
 * Concurrent producers against a concurrent reader
 * ---------------------------------------------------------------------------------------------- */

struct producer {
    struct ldt_seg *seg;
    uint32_t id;
    long n;
    uint8_t *dropped;   /* dropped[i] = 1: push i returned -ENOSPC */
    uint8_t *seen;      /* seen[i] = 1: the reader got record i */
    uint64_t next_seen; /* the sequence the reader expects next from this thread */
    long ndropped;
    unsigned ring;
};

struct stress {
    struct ldt_seg seg;
    struct ldt_seg_reader rd;
    struct producer prod[8];
    int nprod;
    int done;
    long read, bad;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    struct ldt_span_rec rec;
    p->ring = ldt_ring_claim(p->seg, p->id);
    for (long i = 0; i < p->n; i++) {
        fill_rec(&rec, p->id, (uint64_t)i);
        if (ldt_ring_push(p->seg, p->ring, &rec, sizeof(rec)) == -ENOSPC) {
            p->dropped[i] = 1;
            p->ndropped++;
        }
    }
    return NULL;
}

/* Check one record: valid checksum, a known thread, its next sequence or later, never seen. */
static void consume(struct stress *st, const uint8_t *out)
{
    uint32_t th;
    uint64_t seq;
    if (!rec_ok(out, &th, &seq) || th == 0 || th > (uint32_t)st->nprod) {
        st->bad++;
        return;
    }
    struct producer *p = &st->prod[th - 1];
    if (seq >= (uint64_t)p->n || seq < p->next_seen || p->seen[seq]) {
        st->bad++;
        return;
    }
    p->seen[seq] = 1;
    p->next_seen = seq + 1;
    st->read++;
}

static void *read_all(void *arg)
{
    struct stress *st = arg;
    uint8_t out[LDT_REC_SIZE];
    for (;;) {
        int got = 0, finished = __atomic_load_n(&st->done, __ATOMIC_ACQUIRE);
        for (unsigned ring = 0; ring < st->rd.nrings; ring++)
            for (int k = 0; k < 64 && ldt_seg_read(&st->rd, ring, out) == 1; k++, got++)
                consume(st, out);
        if (!got && finished)
            return NULL;
    }
}

static void check_stress(struct stress *st)
{
    long total_dropped = 0;
    cr_assert_eq(st->bad, 0, "%ld records out of order, duplicated or corrupt", st->bad);
    for (int t = 0; t < st->nprod; t++) {
        struct producer *p = &st->prod[t];
        for (long i = 0; i < p->n; i++)
            cr_assert_eq(p->seen[i] + p->dropped[i], 1, "thread %d record %ld: seen %d dropped %d",
                         t + 1, i, p->seen[i], p->dropped[i]);
        total_dropped += p->ndropped;
    }
    cr_assert_eq(ldt_seg_dropped(&st->rd), (uint64_t)total_dropped);
    cr_assert_gt(st->read, 0);
}

static void run_stress(int nprod, uint32_t nrings, uint32_t cap, long n)
{
    static struct stress st;
    pthread_t th[8], reader;
    memset(&st, 0, sizeof(st));
    st.nprod = nprod;
    make_seg(&st.seg, nrings, cap);
    open_seg(&st.seg, &st.rd);
    for (int t = 0; t < nprod; t++) {
        st.prod[t] = (struct producer){.seg = &st.seg, .id = (uint32_t)t + 1, .n = n,
                                       .dropped = calloc((size_t)n, 1),
                                       .seen = calloc((size_t)n, 1)};
        cr_assert(st.prod[t].dropped && st.prod[t].seen);
    }
    pthread_create(&reader, NULL, read_all, &st);
    for (int t = 0; t < nprod; t++)
        pthread_create(&th[t], NULL, produce, &st.prod[t]);
    for (int t = 0; t < nprod; t++)
        pthread_join(th[t], NULL);
    __atomic_store_n(&st.done, 1, __ATOMIC_RELEASE);
    pthread_join(reader, NULL);
    check_stress(&st);
    cr_log_info("%d threads x %ld: read %ld dropped %llu", nprod, n, st.read,
                (unsigned long long)ldt_seg_dropped(&st.rd));
    for (int t = 0; t < nprod; t++) {
        free(st.prod[t].dropped);
        free(st.prod[t].seen);
    }
    ldt_seg_close(&st.rd);
}

Test(ring_push, four_producers_own_rings_every_record_checked)
{
    run_stress(4, 5, 4096, scaled(1000000));
}

Test(ring_push, six_threads_three_rings_share_the_last_ring)
{
    run_stress(6, 3, 1024, scaled(300000));
}

/* ------------------------------------------------------------------------------------------------
 * A producer process killed with SIGKILL mid-stream
 * ---------------------------------------------------------------------------------------------- */

/* The first thread pushes by copy; the others write in place (reserve, fill, commit) and take a
 * short nap now and then between reserve and commit, so a kill often finds a slot reserved and half
 * written. Sequences stay dense (a full ring retries the same i) so the parent can check order. */
static void *child_producer(void *arg)
{
    struct producer *p = arg;
    struct ldt_span_rec rec;
    uint64_t pos;
    unsigned ring = ldt_ring_claim(p->seg, p->id);
    for (uint64_t i = 0;; i++) {
        if (p->id == 1) {
            fill_rec(&rec, p->id, i);
            i -= ldt_ring_push(p->seg, ring, &rec, sizeof(rec)) == -ENOSPC;
            continue;
        }
        struct ldt_span_rec *slot = ldt_ring_reserve(p->seg, ring, &pos);
        if (!slot) {
            i--;
            continue;
        }
        fill_rec(slot, p->id, i);
        if (i % 64 == 0) {
            memset(slot->path, '#', 10); /* half-written: the checksum no longer matches */
            usleep(50);
            fill_rec(slot, p->id, i);
        }
        ldt_ring_commit(p->seg, ring, pos);
    }
    return NULL;
}

/* The child: one thread on its own ring and two on the shared ring, pushing until killed. */
static void child_main(void)
{
    static struct ldt_seg seg;
    static struct producer p[3];
    pthread_t th[3];
    if (ldt_seg_create(tmpdir, &(struct ldt_seg_params){.nrings = 2, .ring_cap = 256}, &seg) < 0)
        _exit(1);
    for (int t = 0; t < 3; t++) {
        p[t] = (struct producer){.seg = &seg, .id = (uint32_t)t + 1};
        pthread_create(&th[t], NULL, child_producer, &p[t]);
    }
    pthread_join(th[0], NULL);
    _exit(0);
}

static int open_child_seg(struct ldt_seg_reader *r)
{
    char path[512], why[128];
    for (int tries = 0; tries < 5000; tries++) {
        DIR *d = opendir(tmpdir);
        struct dirent *e;
        while ((e = readdir(d)) && e->d_name[0] == '.')
            ;
        if (e)
            snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
        closedir(d);
        if (e && ldt_seg_open(path, r, why, sizeof(why)) == 0)
            return 0;
        usleep(1000);
    }
    return -1;
}

/* Read what is committed; once the producer is dead, also skip torn slots as the sidecar does
 * (never while it lives: a slot reserved by a running thread is about to be committed). */
static void drain(struct ldt_seg_reader *r, int dead, uint64_t next[4], long *read, long *bad)
{
    uint8_t out[LDT_REC_SIZE];
    for (unsigned ring = 0; ring < r->nrings; ring++) {
        for (;;) {
            int rc = ldt_seg_read(r, ring, out);
            uint32_t th;
            uint64_t seq;
            if (rc == 0 && dead && ldt_seg_skip_torn(r, ring) == 1)
                continue;
            if (rc == 0)
                break;
            if (rc != 1 || !rec_ok(out, &th, &seq) || th < 1 || th > 3 || seq != next[th]) {
                (*bad)++;
                continue;
            }
            next[th]++;
            __atomic_add_fetch(read, 1, __ATOMIC_RELAXED); /* polled by kill_round */
        }
    }
}

struct live_reader {
    struct ldt_seg_reader *r;
    uint64_t next[4];
    long read, bad;
    int stop;
};

static void *read_live(void *arg)
{
    struct live_reader *lr = arg;
    while (!__atomic_load_n(&lr->stop, __ATOMIC_ACQUIRE))
        drain(lr->r, 0, lr->next, &lr->read, &lr->bad);
    return NULL;
}

/* One child: read while it writes, SIGKILL it after `ms`, then drain what it left. Returns torn. */
static uint64_t kill_round(int ms)
{
    struct ldt_seg_reader r;
    struct live_reader lr = {.r = &r};
    pthread_t th;
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        child_main();
    cr_assert_eq(open_child_seg(&r), 0);
    pthread_create(&th, NULL, read_live, &lr);
    /* The kill lands `ms` after the producer's first record is read, not after the segment exists:
     * under heavy load a child may not run for tens of ms, and a kill before its first push proves
     * nothing (seen once: read 0, every tail at its head). Bounded: 10 s. */
    for (int i = 0; i < 10000 && __atomic_load_n(&lr.read, __ATOMIC_RELAXED) == 0; i++)
        usleep(1000);
    usleep((useconds_t)ms * 1000);
    cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "the producer died on its own");
    kill(pid, SIGKILL); /* while the reader keeps the rings moving, so the threads are writing */
    waitpid(pid, NULL, 0);
    __atomic_store_n(&lr.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    cr_assert_eq(ldt_seg_alive(&r), 0);
    drain(&r, 1, lr.next, &lr.read, &lr.bad);
    cr_assert_eq(lr.bad, 0, "%ld records torn, out of order or corrupt", lr.bad);
    uint64_t pushed = 0;
    for (unsigned i = 0; i < r.nrings; i++) {
        struct ldt_ring_hdr *rh = ring_hdr((struct ldt_seg_hdr *)r.base, i);
        cr_assert_geq(rh->tail, rh->head, "ring %u: committed records left unread", i);
        pushed += rh->pushed;
    }
    /* pushed++ follows the commit, so a kill between the two leaves pushed one short per thread. */
    struct ldt_ring_hdr *h0 = ring_hdr((struct ldt_seg_hdr *)r.base, 0);
    struct ldt_ring_hdr *h1 = ring_hdr((struct ldt_seg_hdr *)r.base, 1);
    cr_assert_geq((uint64_t)lr.read, pushed,
                  "read %ld < pushed %llu (torn %llu; head/tail/pushed ring0 %llu/%llu/%llu, "
                  "ring1 %llu/%llu/%llu)",
                  lr.read, (unsigned long long)pushed, (unsigned long long)r.torn,
                  (unsigned long long)h0->head, (unsigned long long)h0->tail,
                  (unsigned long long)h0->pushed, (unsigned long long)h1->head,
                  (unsigned long long)h1->tail, (unsigned long long)h1->pushed);
    cr_assert_leq((uint64_t)lr.read, pushed + 3);
    cr_assert_leq(r.torn, 2, "only the two shared-ring threads can leave a torn slot");
    cr_assert_gt(lr.read, 0);
    cr_log_info("killed after %d ms: read %ld, torn %llu", ms, lr.read,
                (unsigned long long)r.torn);
    uint64_t torn = r.torn;
    unlink(r.path); /* as the sidecar does: the next round finds only its own segment */
    ldt_seg_close(&r);
    return torn;
}

Test(ring_push, killed_producer_leaves_only_valid_records)
{
    uint64_t torn = 0;
    for (int round = 0; round < 8; round++)
        torn += kill_round(10 + 13 * round);
    cr_log_info("torn slots skipped over all rounds: %llu", (unsigned long long)torn);
}

/* ------------------------------------------------------------------------------------------------
 * Hostile segments: every one is rejected with an error, never a crash
 * ---------------------------------------------------------------------------------------------- */

/* Create a valid segment, let `mutate` damage it, and return what ldt_seg_open says. */
static int open_mutated(void (*mutate)(struct ldt_seg_hdr *h, const char *path))
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    char path[512], why[128];
    make_seg(&s, 3, 8);
    seg_path(&s, path, sizeof(path));
    mutate(s.hdr, path);
    int rc = ldt_seg_open(path, &r, why, sizeof(why));
    if (rc == 0)
        ldt_seg_close(&r);
    else
        cr_assert_neq(why[0], '\0', "a failure explains itself");
    cr_log_info("%s: %d %s", path, rc, why);
    ldt_seg_unmap(&s);
    return rc;
}

static void m_cap3(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->ring_cap = 3;
}

static void m_cap_lies(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->ring_cap = 16;
    h->ring_stride = 128 + 16 * 256;
    h->seg_size = LDT_SEG_HDR_SIZE + 3ull * h->ring_stride;
}

static void m_seg_size(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->seg_size += 256;
}

static void m_stride(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->ring_stride -= 256;
}

static void m_nrings1(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->nrings = 1;
}

static void m_nrings_big(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->nrings = LDT_SEG_MAX_RINGS + 1;
}

static void m_truncate(struct ldt_seg_hdr *h, const char *p)
{
    (void)h;
    cr_assert_eq(truncate(p, LDT_SEG_HDR_SIZE + 100), 0);
}

static void m_short(struct ldt_seg_hdr *h, const char *p)
{
    (void)h;
    cr_assert_eq(truncate(p, 100), 0);
}

static void m_magic(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->magic ^= 1;
}

static void m_version(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->version = 2;
}

static void m_slot(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->slot_size = 128;
}

static void m_service(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    memset(h->service_name, 'A', sizeof(h->service_name));
}

static void m_host(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    memset(h->host_name, 'A', sizeof(h->host_name));
}

static void m_args_len(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->args_len = LDT_SEG_ARGS_MAX + 1;
}

static void m_resource_len(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->resource_len = 5000;
}

static void m_resource_nul(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    memset(h->resource, 'r', sizeof(h->resource));
    h->resource_len = LDT_SEG_RESOURCE_MAX - 1;
}

static void m_mode(struct ldt_seg_hdr *h, const char *p)
{
    (void)h;
    cr_assert_eq(chmod(p, 0644), 0);
}

static void m_mode_exec(struct ldt_seg_hdr *h, const char *p)
{
    (void)h;
    cr_assert_eq(chmod(p, 0700), 0);
}

static void m_symlink(struct ldt_seg_hdr *h, const char *p)
{
    char real[600];
    (void)h;
    snprintf(real, sizeof(real), "%s.real", p);
    cr_assert_eq(rename(p, real), 0);
    cr_assert_eq(symlink(real, p), 0);
}

static void m_fifo(struct ldt_seg_hdr *h, const char *p)
{
    (void)h;
    cr_assert_eq(unlink(p), 0);
    cr_assert_eq(mkfifo(p, 0600), 0);
}

static void m_unpublished(struct ldt_seg_hdr *h, const char *p)
{
    (void)p;
    h->magic = 0;
}

/* Criterion re-executes the binary for each worker, so parameters are indexes, not pointers. */
static const struct bad_seg {
    void (*mutate)(struct ldt_seg_hdr *h, const char *path);
    int want;
} bad_segs[] = {
    {m_cap3, -EINVAL},         {m_cap_lies, -EINVAL}, {m_seg_size, -EINVAL},
    {m_stride, -EINVAL},       {m_nrings1, -EINVAL},  {m_nrings_big, -EINVAL},
    {m_truncate, -EINVAL},     {m_short, -EAGAIN},    {m_magic, -EINVAL},
    {m_version, -EINVAL},      {m_slot, -EINVAL},     {m_service, -EINVAL},
    {m_host, -EINVAL},         {m_args_len, -EINVAL}, {m_resource_len, -EINVAL},
    {m_resource_nul, -EINVAL}, {m_mode, -EPERM},      {m_mode_exec, -EPERM},
    {m_symlink, -ELOOP},       {m_fifo, -EINVAL},     {m_unpublished, -EAGAIN},
};

ParameterizedTestParameters(ring_reader, rejects_bad_segment)
{
    static int idx[sizeof(bad_segs) / sizeof(bad_segs[0])];
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++)
        idx[i] = (int)i;
    return cr_make_param_array(int, idx, sizeof(idx) / sizeof(idx[0]));
}

ParameterizedTest(int *i, ring_reader, rejects_bad_segment)
{
    cr_assert_eq(open_mutated(bad_segs[*i].mutate), bad_segs[*i].want, "case %d", *i);
}

static void m_chown(struct ldt_seg_hdr *h, const char *p)
{
    (void)h;
    cr_assert_eq(chown(p, 65534, 65534), 0, "chown: %s", strerror(errno));
}

Test(ring_reader, rejects_file_owned_by_another_user)
{
    if (geteuid() != 0)
        cr_skip_test("chown to another uid needs root");
    cr_assert_eq(open_mutated(m_chown), -EPERM);
}

Test(ring_reader, rejects_missing_file)
{
    struct ldt_seg_reader r;
    char why[128], path[128];
    snprintf(path, sizeof(path), "%s/nope.ring", tmpdir);
    cr_assert_eq(ldt_seg_open(path, &r, why, sizeof(why)), -ENOENT);
    cr_assert_eq(r.fd, -1);
}

/* Random bytes with the right size and mode: always refused. */
Test(ring_reader, rejects_random_bytes)
{
    char path[128], why[128];
    static uint8_t buf[LDT_SEG_HDR_SIZE + 3 * (128 + 8 * 256)];
    snprintf(path, sizeof(path), "%s/1.0.ring", tmpdir);
    srand(1);
    for (int i = 0; i < 200; i++) {
        for (size_t k = 0; k < sizeof(buf); k++)
            buf[k] = (uint8_t)rand();
        int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
        cr_assert_eq(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
        close(fd);
        struct ldt_seg_reader r;
        cr_assert_eq(ldt_seg_open(path, &r, why, sizeof(why)), -EINVAL);
    }
}

/* A valid header with one random field scrambled: refused, or accepted and then read safely. */
Test(ring_reader, survives_scrambled_header_fields)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    char path[512], why[128];
    uint8_t out[LDT_REC_SIZE];
    make_seg(&s, 3, 8);
    seg_path(&s, path, sizeof(path));
    struct ldt_seg_hdr good = *s.hdr;
    srand(3);
    for (int i = 0; i < 2000; i++) {
        *s.hdr = good;
        size_t off = (size_t)rand() % 136; /* the fixed fields before the strings */
        ((uint8_t *)s.hdr)[off] = (uint8_t)rand();
        if (ldt_seg_open(path, &r, why, sizeof(why)) < 0)
            continue;
        for (unsigned ring = 0; ring < r.nrings; ring++)
            while (ldt_seg_read(&r, ring, out) != 0)
                ;
        ldt_seg_close(&r);
    }
    ldt_seg_unmap(&s);
}

/* A producer that scribbles on the cursors cannot make the reader step outside the mapping. */
Test(ring_reader, hostile_cursors_stay_in_bounds)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    uint8_t out[LDT_REC_SIZE];
    make_seg(&s, 2, 4);
    open_seg(&s, &r);
    struct ldt_ring_hdr *rh = ring_hdr(s.hdr, 0);
    rh->tail = UINT64_MAX - 1;
    rh->head = 3;
    for (int i = 0; i < 10; i++) {
        ldt_seg_read(&r, 0, out);
        ldt_seg_skip_torn(&r, 0);
    }
    rh->tail = 5;
    rh->head = 5 + (1u << 30);
    cr_assert_eq(ldt_seg_skip_torn(&r, 0), 0, "head further than a ring ahead is refused");
    ldt_seg_close(&r);
}

/* ------------------------------------------------------------------------------------------------
 * Record validation
 * ---------------------------------------------------------------------------------------------- */

struct bad_rec {
    int field; /* what to damage */
    int value;
};

enum { F_TYPE, F_KIND, F_STATUS, F_PATH, F_HOST, F_PEER_FAM, F_LOCAL_FAM, F_PART, F_NPARTS, F_LEN };

static void damage(uint8_t rec[LDT_REC_SIZE], const struct bad_rec *c)
{
    struct ldt_span_rec *sp = (struct ldt_span_rec *)rec;
    struct ldt_stack_rec *st = (struct ldt_stack_rec *)rec;
    fill_rec(sp, 1, 1);
    if (c->field >= F_PART) {
        memset(st, 0, sizeof(*st));
        *st = (struct ldt_stack_rec){.type = LDT_REC_STACK, .part = 0, .nparts = 1, .len = 4};
    }
    switch (c->field) {
    case F_TYPE: sp->type = (uint8_t)c->value; break;
    case F_KIND: sp->kind = (uint8_t)c->value; break;
    case F_STATUS: sp->status = (uint8_t)c->value; break;
    case F_PATH: sp->path_len = (uint8_t)c->value; break;
    case F_HOST: sp->host_len = (uint8_t)c->value; break;
    case F_PEER_FAM: sp->peer_family = (uint8_t)c->value; break;
    case F_LOCAL_FAM: sp->local_family = (uint8_t)c->value; break;
    case F_PART: st->part = (uint8_t)c->value; break;
    case F_NPARTS: st->nparts = (uint8_t)c->value; st->part = 0; break;
    case F_LEN: st->len = (uint16_t)c->value; break;
    }
}

ParameterizedTestParameters(ring_reader, rejects_bad_record_and_goes_on)
{
    static struct bad_rec cases[] = {
        {F_TYPE, 0},      {F_TYPE, 3},     {F_TYPE, 255},       {F_KIND, 0},
        {F_KIND, 4},      {F_STATUS, 3},   {F_PATH, 81},        {F_PATH, 255},
        {F_HOST, 39},     {F_PEER_FAM, 4}, {F_LOCAL_FAM, 200},  {F_PART, 1},
        {F_NPARTS, 0},    {F_NPARTS, 17},  {F_LEN, 217},        {F_LEN, 65535},
    };
    return cr_make_param_array(struct bad_rec, cases, sizeof(cases) / sizeof(cases[0]));
}

ParameterizedTest(struct bad_rec *c, ring_reader, rejects_bad_record_and_goes_on)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    struct ldt_span_rec good;
    uint8_t bad[LDT_REC_SIZE], out[LDT_REC_SIZE];
    make_seg(&s, 2, 8);
    open_seg(&s, &r);
    damage(bad, c);
    fill_rec(&good, 2, 9);
    cr_assert_eq(ldt_ring_push(&s, 0, bad, sizeof(bad)), 0);
    cr_assert_eq(ldt_ring_push(&s, 0, &good, sizeof(good)), 0);
    cr_assert_eq(ldt_seg_read(&r, 0, out), -EBADMSG);
    cr_assert_eq(r.bad_records, 1);
    cr_assert_eq(ldt_seg_read(&r, 0, out), 1, "the reader goes on after a bad record");
    cr_assert_eq(memcmp(out, &good, sizeof(good)), 0);
    cr_assert_eq(ldt_seg_read(&r, 0, out), 0);
    ldt_seg_close(&r);
}

Test(ring_reader, accepts_limits_of_valid_records)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    struct ldt_span_rec sp;
    struct ldt_stack_rec st = {.type = LDT_REC_STACK, .part = 15, .nparts = 16,
                               .len = LDT_STACK_TEXT_MAX};
    uint8_t out[LDT_REC_SIZE];
    make_seg(&s, 2, 8);
    open_seg(&s, &r);
    fill_rec(&sp, 1, 1);
    sp.kind = LDT_SPAN_CLIENT;
    sp.status = LDT_STATUS_ERROR;
    sp.path_len = LDT_SPAN_PATH_MAX;
    sp.host_len = LDT_SPAN_HOST_MAX;
    sp.peer_family = LDT_AF_UNIX;
    sp.local_family = LDT_AF_INET6;
    cr_assert_eq(ldt_ring_push(&s, 0, &sp, sizeof(sp)), 0);
    cr_assert_eq(ldt_ring_push(&s, 0, &st, sizeof(st)), 0);
    cr_assert_eq(ldt_seg_read(&r, 0, out), 1);
    cr_assert_eq(ldt_seg_read(&r, 0, out), 1);
    cr_assert_eq(r.bad_records, 0);
    ldt_seg_close(&r);
}

/* A slot whose seq does not match its position (a producer writing where it should not) is not read
 * as valid data. */
Test(ring_reader, slot_with_wrong_seq_is_not_read)
{
    struct ldt_seg s;
    struct ldt_seg_reader r;
    struct ldt_span_rec sp;
    uint8_t out[LDT_REC_SIZE];
    make_seg(&s, 2, 4);
    open_seg(&s, &r);
    fill_rec(&sp, 1, 1);
    cr_assert_eq(ldt_ring_push(&s, 0, &sp, sizeof(sp)), 0);
    struct ldt_slot *slot = (struct ldt_slot *)(ring_hdr(s.hdr, 0) + 1);
    slot->seq = 5; /* a later lap's value */
    cr_assert_eq(ldt_seg_read(&r, 0, out), 0);
    slot->seq = 1;
    cr_assert_eq(ldt_seg_read(&r, 0, out), 1);
    ldt_seg_close(&r);
}

/* ------------------------------------------------------------------------------------------------
 * ldtrace-emit (tests/tools/emit.c) writes exactly what its header documents
 * ---------------------------------------------------------------------------------------------- */

static uint64_t emix(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static void ebe64(uint8_t *out, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        out[k] = (uint8_t)(v >> (56 - 8 * k));
}

static void espan_id(uint64_t p, uint64_t t, uint64_t i, uint8_t out[8])
{
    uint64_t v = emix((p << 48 | t << 32 | i) ^ UINT64_C(0x3333333333333333));
    ebe64(out, v ? v : 1);
}

/* The span record the documented derivation gives for (p, t, i), built independently of emit.c. */
static void expected_span(struct ldt_span_rec *r, uint64_t p, uint64_t t, uint64_t i)
{
    uint64_t g = i / 4, gk = p << 48 | t << 32 | g;
    memset(r, 0, sizeof(*r));
    r->type = LDT_REC_SPAN;
    ebe64(r->trace_id, emix(gk ^ UINT64_C(0x1111111111111111)));
    ebe64(r->trace_id + 8, emix(gk ^ UINT64_C(0x2222222222222222)));
    espan_id(p, t, i, r->span_id);
    if (i % 4)
        espan_id(p, t, g * 4, r->parent_id);
    r->kind = (uint8_t)(1 + i % 3);
    r->trace_flags = 1;
    r->method = (uint8_t)(1 + i % 9);
    r->status_code = (uint16_t)(200 + i % 400);
    r->status = r->status_code >= 500 ? LDT_STATUS_ERROR : 0;
    r->flags = r->status_code >= 500 && i % 5 == 0 ? LDT_SPAN_F_STACK : 0;
    r->start_ns = UINT64_C(1700000000000000000) + p * UINT64_C(1000000000000) +
                  t * UINT64_C(1000000000) + i * 1000;
    r->dur_ns = 1000 * (1 + i % 997);
    r->bytes_in = 100 + i;
    r->bytes_out = 200 + 2 * i;
    r->io_ns = 10 * i;
    r->io_calls = (uint32_t)(i % 16);
    r->err = i % 13 == 0 ? 104 : 0;
    r->peer_family = r->local_family = LDT_AF_INET;
    memcpy(r->peer_addr, "\x7f\0\0\x01", 4);
    memcpy(r->local_addr, "\x7f\0\0\x01", 4);
    r->peer_port = (uint16_t)(1000 + t);
    r->local_port = (uint16_t)(20000 + p);
    r->path_len = (uint8_t)snprintf(r->path, sizeof(r->path), "/emit/%llu/%llu/%llu",
                                    (unsigned long long)p, (unsigned long long)t,
                                    (unsigned long long)i);
    r->host_len = (uint8_t)snprintf(r->host, sizeof(r->host), "emit-host-%llu",
                                    (unsigned long long)p);
}

/* Run ldtrace-emit with args and return its stdout in out[cap]; returns its exit status. */
static int run_emit(const char *const *args, char *out, size_t cap)
{
    int pfd[2], status;
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        execv(args[0], (char *const *)args);
        _exit(127);
    }
    close(pfd[1]);
    ssize_t n, len = 0;
    while ((n = read(pfd[0], out + len, cap - 1 - (size_t)len)) > 0)
        len += n;
    out[len] = '\0';
    close(pfd[0]);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Check one ring of one emit process: each thread's stacks then span, in order, every field. A ring
 * may carry several threads one after another (a thread gives its ring back when it ends). */
static long check_emit_ring(struct ldt_seg_reader *r, unsigned ring, uint64_t p, long next[3],
                            unsigned *partp)
{
    uint8_t out[LDT_REC_SIZE];
    struct ldt_span_rec want;
    long n = 0;
    unsigned part = *partp;
    while (ldt_seg_read(r, ring, out) == 1) {
        if (out[0] == LDT_REC_STACK) {
            cr_assert_eq(((struct ldt_stack_rec *)out)->part, part++, "stack parts in order");
            continue;
        }
        const struct ldt_span_rec *sp = (const struct ldt_span_rec *)out;
        unsigned long long pp, t, i;
        cr_assert_eq(sscanf(sp->path, "/emit/%llu/%llu/%llu", &pp, &t, &i), 3);
        cr_assert(pp == p && t < 3 && (long)i == next[t], "ring %u: span %llu/%llu/%llu, "
                  "expected thread %llu's span %ld", ring, pp, t, i, t, t < 3 ? next[t] : -1);
        expected_span(&want, p, t, i);
        cr_assert_eq(memcmp(sp, &want, sizeof(want)), 0, "span %llu/%llu/%llu differs", pp, t, i);
        cr_assert_eq(part, want.flags & LDT_SPAN_F_STACK ? 1 + (unsigned)(i % 3) : 0u);
        part = 0;
        next[t]++;
        n++;
    }
    *partp = part; /* a span's stack records may have been read in an earlier call */
    return n;
}

Test(ring_emit, every_field_follows_the_documented_derivation, .init = setup_dir,
     .fini = teardown_dir, .timeout = 60)
{
    const char *root = getenv("LDT_BUILD_ROOT");
    char bin[512], out[256], path[600], why[128];
    if (!root)
        cr_skip_test("LDT_BUILD_ROOT not set (run under meson test)");
    snprintf(bin, sizeof(bin), "%s/tests/tools/ldtrace-emit", root);
    const char *args[] = {bin, "--dir", tmpdir, "--spans", "700", "--threads", "3", "--procs",
                          "2", "--service", "svc", NULL};
    cr_assert_eq(run_emit(args, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "emitted 4200 dropped 0\n");
    DIR *d = opendir(tmpdir);
    long total = 0;
    int segs = 0;
    for (struct dirent *e; (e = readdir(d));) {
        struct ldt_seg_reader r;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", tmpdir, e->d_name);
        cr_assert_eq(ldt_seg_open(path, &r, why, sizeof(why)), 0, "%s", why);
        unsigned p;
        cr_assert_eq(sscanf(r.hdr->resource, "emit.proc=%u", &p), 1);
        cr_assert_str_eq(r.hdr->service_name, "svc");
        cr_assert_eq(ldt_seg_alive(&r), 0, "emit marks its segment exited");
        long next[3] = {0, 0, 0};
        unsigned part[4] = {0};
        for (unsigned ring = 0; ring < r.nrings; ring++)
            total += check_emit_ring(&r, ring, p, next, &part[ring]);
        cr_assert(next[0] == 700 && next[1] == 700 && next[2] == 700);
        cr_assert_eq(r.bad_records, 0);
        ldt_seg_close(&r);
        segs++;
    }
    closedir(d);
    cr_assert_eq(segs, 2);
    cr_assert_eq(total, 4200);
}

/* --retry and --wait-drain: with a reader draining, nothing is dropped and emit exits 0 once the
 * rings are empty (the segment holds far fewer slots than the spans pushed through it). */
static pid_t emit_pgid;

static void teardown_emit(void)
{
    if (emit_pgid > 0)
        kill(-emit_pgid, SIGKILL); /* a failed assertion must not leave emit retrying forever */
    teardown_dir();
}

Test(ring_emit, retry_and_wait_drain_lose_nothing, .init = setup_dir, .fini = teardown_emit,
     .timeout = 60)
{
    const char *root = getenv("LDT_BUILD_ROOT");
    char bin[512];
    if (!root)
        cr_skip_test("LDT_BUILD_ROOT not set (run under meson test)");
    snprintf(bin, sizeof(bin), "%s/tests/tools/ldtrace-emit", root);
    const char *args[] = {bin,  "--dir",   tmpdir, "--spans", "3000",    "--threads",    "2",
                          "--procs", "1",  "--slots", "64",   "--retry", "--wait-drain", NULL};
    int status;
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execv(bin, (char *const *)args);
        _exit(127);
    }
    emit_pgid = pid;
    struct ldt_seg_reader r;
    while (open_child_seg(&r) < 0)
        cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "emit exited before creating its segment");
    long next[3] = {0, 0, 0}, total = 0;
    unsigned part[4] = {0};
    cr_assert_eq(r.nrings, 3);
    while (waitpid(pid, &status, WNOHANG) == 0)
        for (unsigned ring = 0; ring < r.nrings; ring++)
            total += check_emit_ring(&r, ring, 0, next, &part[ring]);
    emit_pgid = 0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "emit status %d", status);
    for (unsigned ring = 0; ring < r.nrings; ring++)
        total += check_emit_ring(&r, ring, 0, next, &part[ring]);
    cr_assert_eq(total, 6000, "every span arrives (ring.dropped counts the retried attempts)");
    cr_assert_eq(ldt_seg_alive(&r), 0);
    ldt_seg_close(&r);
}
