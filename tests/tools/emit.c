/* emit.c - ldtrace-emit: deterministic synthetic spans through the real ring API, for tests.
 *
 * Usage: ldtrace-emit --dir DIR --spans N --threads T --procs P [--service NAME]
 *                     [--rate SPANS_PER_S] [--rings R] [--slots S] [--retry] [--wait-drain]
 *                     [--drain-timeout SECONDS]
 *
 * Forks P processes; each creates one segment in DIR (nrings = R, default T + 1 so every thread
 * owns a ring; slots S, default LDT_SEG_DEFAULT_SLOTS) and runs T threads that each claim a ring
 * (ldt_ring_claim with their tid), push N span records with ldt_ring_push and release the ring
 * (so a thread started later may reuse it: a ring can carry several threads' spans in turn).
 * --rate paces each thread to at most SPANS_PER_S spans a second. A full ring drops the record
 * (counted), or with --retry the thread sleeps 100 us and tries again until the push succeeds
 * (or the drain timeout passes: then it is dropped).
 * At the end each process marks its segment exited (after --wait-drain: once every ring has
 * tail == head, or exit status 2 after the drain timeout, default 30 s), and the parent prints
 * one line "emitted N dropped D" (span records over all processes; stack records are not
 * counted) and exits 0 (1 if a process failed).
 *
 * Derivation of every field, for process p (0..P-1), thread t (0..T-1), span i (0..N-1):
 *   mix(x)        = the splitmix64 finaliser: x += 0x9e3779b97f4a7c15;
 *                   x = (x ^ x >> 30) * 0xbf58476d1ce4e5b9; x = (x ^ x >> 27) * 0x94d049bb133111eb;
 *                   x ^ x >> 31
 *   key(p,t,i)    = p << 48 | t << 32 | i
 *   group g       = i / 4: spans 4g .. 4g+3 of a thread form one trace
 *   trace_id      = big-endian mix(key(p,t,g) ^ 0x1111111111111111) then
 *                   big-endian mix(key(p,t,g) ^ 0x2222222222222222)           (16 bytes)
 *   span_id       = big-endian mix(key(p,t,i) ^ 0x3333333333333333), 1 if that is 0
 *   parent_id     = all zero when i % 4 == 0 (the root), else span_id of (p, t, 4g)
 *   kind          = 1 + i % 3 (INTERNAL, SERVER, CLIENT)
 *   trace_flags   = 0x01; op = LDT_OP_HTTP; method = 1 + i % 9 (GET .. PATCH as in http.h)
 *   status_code   = 200 + i % 400; status = ERROR (2) when status_code >= 500, else UNSET (0)
 *   flags         = LDT_SPAN_F_STACK when the span has stack records (below), else 0
 *   start_ns      = 1700000000000000000 + p * 10^12 + t * 10^9 + i * 1000
 *   dur_ns        = 1000 * (1 + i % 997)
 *   bytes_in      = 100 + i; bytes_out = 200 + 2 * i; io_ns = 10 * i; io_calls = i % 16
 *   err           = 104 (ECONNRESET) when i % 13 == 0, else 0
 *   peer          = LDT_AF_INET 127.0.0.1, port 1000 + t
 *   local         = LDT_AF_INET 127.0.0.1, port 20000 + p
 *   path          = "/emit/<p>/<t>/<i>" (decimal); host = "emit-host-<p>"
 * Stack records: an error span with i % 5 == 0 is preceded, on the same ring, by nparts = 1 + i % 3
 * records (part 0 .. nparts-1) with its trace_id and span_id and text
 * "emit+0x<part> frame_<p>_<t>_<i>_<part>" (hex part, no newline).
 * Segment header: service.name NAME (default "emit") in every process, exe_name "ldtrace-emit",
 * host_name from gethostname(), command_args "ldtrace-emit\0--proc\0<p>" (args_len includes the
 * last NUL), resource "emit.proc=<p>".
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/common.h"
#include "ldtrace/http.h"
#include "ldtrace/ring.h"

struct emit_opts {
    const char *dir, *service;
    long spans, threads, procs, rings, slots;
    double rate;
    int retry, wait_drain;
    double drain_timeout;
};

struct emit_thread {
    const struct emit_opts *o;
    struct ldt_seg *seg;
    uint32_t proc, thread;
    long pushed, dropped;
};

static uint64_t mix(uint64_t x)
{
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static uint64_t key(uint64_t p, uint64_t t, uint64_t i)
{
    return p << 48 | t << 32 | i;
}

static void put_be64(uint8_t *out, uint64_t v)
{
    for (int k = 0; k < 8; k++)
        out[k] = (uint8_t)(v >> (56 - 8 * k));
}

static void span_id_of(uint64_t p, uint64_t t, uint64_t i, uint8_t out[8])
{
    uint64_t v = mix(key(p, t, i) ^ UINT64_C(0x3333333333333333));
    put_be64(out, v ? v : 1);
}

static void fill_ids(struct ldt_span_rec *r, uint32_t p, uint32_t t, uint64_t i)
{
    uint64_t g = i / 4;
    put_be64(r->trace_id, mix(key(p, t, g) ^ UINT64_C(0x1111111111111111)));
    put_be64(r->trace_id + 8, mix(key(p, t, g) ^ UINT64_C(0x2222222222222222)));
    span_id_of(p, t, i, r->span_id);
    if (i % 4)
        span_id_of(p, t, g * 4, r->parent_id);
}

static int has_stack(uint64_t i)
{
    return 200 + i % 400 >= 500 && i % 5 == 0;
}

static void fill_span(struct ldt_span_rec *r, uint32_t p, uint32_t t, uint64_t i)
{
    static const uint8_t lo[4] = {127, 0, 0, 1};
    memset(r, 0, sizeof(*r));
    r->type = LDT_REC_SPAN;
    fill_ids(r, p, t, i);
    r->kind = (uint8_t)(1 + i % 3);
    r->trace_flags = 0x01;
    r->op = LDT_OP_HTTP;
    r->method = (uint8_t)(LDT_HTTP_M_GET + i % 9);
    r->status_code = (uint16_t)(200 + i % 400);
    r->status = r->status_code >= 500 ? LDT_STATUS_ERROR : LDT_STATUS_UNSET;
    r->flags = has_stack(i) ? LDT_SPAN_F_STACK : 0;
    r->start_ns = UINT64_C(1700000000000000000) + p * UINT64_C(1000000000000) +
                  t * UINT64_C(1000000000) + i * 1000;
    r->dur_ns = 1000 * (1 + i % 997);
    r->bytes_in = 100 + i;
    r->bytes_out = 200 + 2 * i;
    r->io_ns = 10 * i;
    r->io_calls = (uint32_t)(i % 16);
    r->err = i % 13 == 0 ? ECONNRESET : 0;
    r->peer_family = r->local_family = LDT_AF_INET;
    memcpy(r->peer_addr, lo, 4);
    memcpy(r->local_addr, lo, 4);
    r->peer_port = (uint16_t)(1000 + t);
    r->local_port = (uint16_t)(20000 + p);
    r->path_len = (uint8_t)snprintf(r->path, sizeof(r->path), "/emit/%u/%u/%llu", p, t,
                                    (unsigned long long)i);
    r->host_len = (uint8_t)snprintf(r->host, sizeof(r->host), "emit-host-%u", p);
}

/* Push one record: with --retry, wait for room instead of dropping (for at most the drain timeout,
 * so emit cannot hang when no reader comes). Returns 0 or -ENOSPC. */
static int push(struct emit_thread *e, unsigned ring, const void *rec, size_t len)
{
    uint64_t deadline = 0;
    for (;;) {
        int rc = ldt_ring_push(e->seg, ring, rec, len);
        if (rc != -ENOSPC || !e->o->retry)
            return rc;
        if (!deadline)
            deadline = ldt_clock_mono_ns() + (uint64_t)(e->o->drain_timeout * 1e9);
        else if (ldt_clock_mono_ns() > deadline)
            return rc;
        usleep(100);
    }
}

static void push_stacks(struct emit_thread *e, unsigned ring, const struct ldt_span_rec *sp,
                        uint64_t i)
{
    unsigned nparts = 1 + (unsigned)(i % 3);
    for (unsigned part = 0; part < nparts; part++) {
        struct ldt_stack_rec st = {.type = LDT_REC_STACK, .part = (uint8_t)part,
                                   .nparts = (uint8_t)nparts};
        memcpy(st.trace_id, sp->trace_id, 16);
        memcpy(st.span_id, sp->span_id, 8);
        st.len = (uint16_t)snprintf(st.text, sizeof(st.text), "emit+0x%x frame_%u_%u_%llu_%u",
                                    part, e->proc, e->thread, (unsigned long long)i, part);
        push(e, ring, &st, sizeof(st));
    }
}

/* Sleep until span i is due under --rate. */
static void pace(const struct emit_opts *o, uint64_t t0, long i)
{
    if (o->rate <= 0)
        return;
    uint64_t due = t0 + (uint64_t)((double)i * 1e9 / o->rate), now = ldt_clock_mono_ns();
    if (due > now + 50000) {
        struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000u),
                              .tv_nsec = (long)((due - now) % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

static void *emit_thread_main(void *arg)
{
    struct emit_thread *e = arg;
    struct ldt_span_rec sp;
    unsigned ring = ldt_ring_claim(e->seg, (uint32_t)syscall(SYS_gettid));
    uint64_t t0 = ldt_clock_mono_ns();
    for (long i = 0; i < e->o->spans; i++) {
        pace(e->o, t0, i);
        fill_span(&sp, e->proc, e->thread, (uint64_t)i);
        if (sp.flags & LDT_SPAN_F_STACK)
            push_stacks(e, ring, &sp, (uint64_t)i);
        if (push(e, ring, &sp, sizeof(sp)) == 0)
            e->pushed++;
        else
            e->dropped++;
    }
    ldt_ring_release(e->seg, ring);
    return NULL;
}

/* Wait until the reader has consumed every ring (tail == head). Returns 0, or -ETIMEDOUT. */
static int wait_drained(struct ldt_seg *s, double timeout_s)
{
    uint64_t deadline = ldt_clock_mono_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        int busy = 0;
        for (unsigned i = 0; i < s->hdr->nrings; i++) {
            struct ldt_ring_hdr *rh =
                (struct ldt_ring_hdr *)((char *)s->hdr + LDT_SEG_HDR_SIZE +
                                        (size_t)i * s->hdr->ring_stride);
            busy |= __atomic_load_n(&rh->tail, __ATOMIC_ACQUIRE) !=
                    __atomic_load_n(&rh->head, __ATOMIC_ACQUIRE);
        }
        if (!busy)
            return 0;
        if (ldt_clock_mono_ns() > deadline)
            return -ETIMEDOUT;
        usleep(1000);
    }
}

/* One ring per thread plus the shared one, within the format's limit. */
static long default_rings(long threads)
{
    return threads < (long)LDT_SEG_MAX_RINGS ? threads + 1 : (long)LDT_SEG_MAX_RINGS;
}

static int create_seg(const struct emit_opts *o, uint32_t p, struct ldt_seg *seg)
{
    char host[LDT_SEG_HOST_MAX] = "", args[64], res[64];
    gethostname(host, sizeof(host) - 1);
    int n = snprintf(args, sizeof(args), "ldtrace-emit%c--proc%c%u", 0, 0, p);
    snprintf(res, sizeof(res), "emit.proc=%u", p);
    struct ldt_seg_params prm = {
        .nrings = (uint32_t)(o->rings ? o->rings : default_rings(o->threads)),
        .ring_cap = (uint32_t)o->slots,
        .service_name = o->service, .exe_name = "ldtrace-emit", .host_name = host,
        .command_args = args, .args_len = (size_t)n + 1, .resource = res};
    int rc = ldt_seg_create(o->dir, &prm, seg);
    if (rc < 0)
        fprintf(stderr, "ldtrace-emit: create segment in %s: %s\n", o->dir, strerror(-rc));
    return rc;
}

/* One process: a segment, T threads, then totals written to fd as "pushed dropped". */
static int run_proc(const struct emit_opts *o, uint32_t p, int fd)
{
    struct ldt_seg seg;
    if (create_seg(o, p, &seg) < 0)
        return 1;
    struct emit_thread *th = calloc((size_t)o->threads, sizeof(*th));
    pthread_t *tids = calloc((size_t)o->threads, sizeof(*tids));
    long pushed = 0, dropped = 0;
    for (long t = 0; t < o->threads; t++) {
        th[t] = (struct emit_thread){.o = o, .seg = &seg, .proc = p, .thread = (uint32_t)t};
        pthread_create(&tids[t], NULL, emit_thread_main, &th[t]);
    }
    for (long t = 0; t < o->threads; t++) {
        pthread_join(tids[t], NULL);
        pushed += th[t].pushed;
        dropped += th[t].dropped;
    }
    int rc = o->wait_drain ? wait_drained(&seg, o->drain_timeout) : 0;
    ldt_seg_mark_exited(&seg);
    dprintf(fd, "%ld %ld\n", pushed, dropped);
    if (rc < 0)
        fprintf(stderr, "ldtrace-emit: proc %u: rings not drained in %.0f s\n", p,
                o->drain_timeout);
    return rc < 0 ? 2 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: ldtrace-emit --dir DIR --spans N --threads T --procs P [--service NAME]\n"
            "       [--rate SPANS_PER_S] [--rings R] [--slots S] [--retry] [--wait-drain]\n"
            "       [--drain-timeout SECONDS]\n");
    exit(64);
}

static void parse(int argc, char **argv, struct emit_opts *o)
{
    static const struct option lo[] = {
        {"dir", 1, 0, 'd'},   {"spans", 1, 0, 'n'},      {"threads", 1, 0, 't'},
        {"procs", 1, 0, 'p'}, {"service", 1, 0, 's'},    {"rate", 1, 0, 'r'},
        {"rings", 1, 0, 'R'}, {"slots", 1, 0, 'S'},      {"retry", 0, 0, 'y'},
        {"wait-drain", 0, 0, 'w'}, {"drain-timeout", 1, 0, 'T'}, {0, 0, 0, 0}};
    *o = (struct emit_opts){.service = "emit", .spans = 1, .threads = 1, .procs = 1,
                            .drain_timeout = 30};
    for (int c; (c = getopt_long(argc, argv, "", lo, NULL)) != -1;) {
        switch (c) {
        case 'd': o->dir = optarg; break;
        case 'n': o->spans = atol(optarg); break;
        case 't': o->threads = atol(optarg); break;
        case 'p': o->procs = atol(optarg); break;
        case 's': o->service = optarg; break;
        case 'r': o->rate = atof(optarg); break;
        case 'R': o->rings = atol(optarg); break;
        case 'S': o->slots = atol(optarg); break;
        case 'y': o->retry = 1; break;
        case 'w': o->wait_drain = 1; break;
        case 'T': o->drain_timeout = atof(optarg); break;
        default: usage();
        }
    }
    if (!o->dir || o->spans < 0 || o->threads < 1 || o->threads > 65535 || o->procs < 1 ||
        o->procs > 65535 || o->spans > UINT32_MAX)
        usage();
}

int main(int argc, char **argv)
{
    struct emit_opts o;
    int pfd[2], status, fail = 0;
    long pushed = 0, dropped = 0, a, b;
    parse(argc, argv, &o);
    if (pipe(pfd) < 0)
        return perror("ldtrace-emit: pipe"), 1;
    for (long p = 0; p < o.procs; p++) {
        pid_t pid = fork();
        if (pid < 0)
            return perror("ldtrace-emit: fork"), 1;
        if (pid == 0) {
            close(pfd[0]);
            _exit(run_proc(&o, (uint32_t)p, pfd[1]));
        }
    }
    close(pfd[1]);
    FILE *in = fdopen(pfd[0], "r");
    while (fscanf(in, "%ld %ld", &a, &b) == 2)
        pushed += a, dropped += b;
    fclose(in);
    while (wait(&status) > 0)
        fail |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    printf("emitted %ld dropped %ld\n", pushed, dropped);
    return fail ? 1 : 0;
}
