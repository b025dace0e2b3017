/* test_common.c - unit tests for src/common: ids, configuration, service names, signal-safe log. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"

/* ================================ ids ================================ */

#define N_THREADS 4
#define PER_THREAD 125000          /* 4 x 125k in threads + 250k in the parent + 250k in a child */
#define PER_PROC 250000
#define N_IDS (N_THREADS * PER_THREAD + 2 * PER_PROC)

struct id16 {
    uint8_t b[16];
};

struct gen_arg {
    uint64_t *spans;
    struct id16 *traces;
    size_t n;
};

static void *gen_ids(void *p)
{
    struct gen_arg *a = p;
    for (size_t i = 0; i < a->n; i++) {
        ldt_id_span((uint8_t *)&a->spans[i]);
        ldt_id_trace(a->traces[i].b);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int cmp_id16(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

static void *shared_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    return p;
}

/* Runs gen_ids in a forked child into shared memory (the child's ids must differ from the
 * parent's even though it inherits the same thread-local counter). */
static void gen_in_child(struct gen_arg *a)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        gen_ids(a);
        _exit(0);
    }
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void check_unique(uint64_t *spans, struct id16 *traces, size_t n)
{
    static const struct id16 zero;
    qsort(spans, n, sizeof(*spans), cmp_u64);
    qsort(traces, n, sizeof(*traces), cmp_id16);
    cr_assert_neq(spans[0], 0, "zero span id");
    cr_assert_neq(memcmp(&traces[0], &zero, 16), 0, "zero trace id");
    for (size_t i = 1; i < n; i++) {
        cr_assert_neq(spans[i], spans[i - 1], "duplicate span id at %zu", i);
        cr_assert_neq(memcmp(&traces[i], &traces[i - 1], 16), 0, "duplicate trace id at %zu", i);
    }
}

Test(ids, million_ids_threads_and_fork_unique_nonzero, .timeout = 60)
{
    uint64_t *spans = shared_alloc(N_IDS * sizeof(uint64_t));
    struct id16 *traces = shared_alloc(N_IDS * sizeof(struct id16));
    ldt_id_seed();
    pthread_t th[N_THREADS];
    struct gen_arg args[N_THREADS + 2];
    for (int t = 0; t < N_THREADS + 2; t++) {
        size_t off = t < N_THREADS ? (size_t)t * PER_THREAD
                                   : N_THREADS * PER_THREAD + (size_t)(t - N_THREADS) * PER_PROC;
        size_t n = t < N_THREADS ? PER_THREAD : PER_PROC;
        args[t] = (struct gen_arg){spans + off, traces + off, n};
    }
    for (int t = 0; t < N_THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, gen_ids, &args[t]), 0);
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);
    gen_in_child(&args[N_THREADS]);
    gen_ids(&args[N_THREADS + 1]); /* the parent, same thread and counter as the child had */
    check_unique(spans, traces, N_IDS);
    munmap(spans, N_IDS * sizeof(uint64_t));
    munmap(traces, N_IDS * sizeof(struct id16));
}

/* Parent and child both continue from the same thread-local counter right after fork: without the
 * atfork reseed they would produce the very same sequence. */
Test(ids, fork_child_does_not_repeat_parent)
{
    enum { N = 1000 };
    ldt_id_seed();
    uint8_t warm[8];
    ldt_id_span(warm);
    uint64_t *child = shared_alloc(N * sizeof(uint64_t));
    struct id16 *ctr = shared_alloc(N * sizeof(struct id16));
    struct gen_arg a = {child, ctr, N};
    gen_in_child(&a);
    uint64_t parent[N];
    for (int i = 0; i < N; i++)
        ldt_id_span((uint8_t *)&parent[i]);
    for (int i = 0; i < N; i++)
        cr_assert_neq(parent[i], child[i], "child repeated the parent's id #%d", i);
    munmap(child, N * sizeof(uint64_t));
    munmap(ctr, N * sizeof(struct id16));
}

/* "No syscall per id": a child in seccomp strict mode (only read, write, _exit and sigreturn
 * allowed; anything else is SIGKILL) makes ids and reports them over a pipe. */
Test(ids, no_syscall_per_id)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        uint8_t ids[64][16];
        ldt_id_span(ids[0]); /* the thread's first id may set things up; later ones may not */
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
            syscall(SYS_exit, 2);
        for (int i = 0; i < 64; i++) {
            ldt_id_trace(ids[i]);
            ldt_id_span(ids[i] + 8);
        }
        ssize_t w = write(fds[1], ids, sizeof(ids));
        syscall(SYS_exit, w == (ssize_t)sizeof(ids) ? 0 : 3);
    }
    close(fds[1]);
    uint8_t got[64][16];
    ssize_t n = read(fds[0], got, sizeof(got));
    close(fds[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st), "child killed by signal %d: an id made a syscall",
              WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    cr_assert_eq(WEXITSTATUS(st), 0);
    cr_assert_eq(n, (ssize_t)sizeof(got));
    cr_expect_neq(memcmp(got[0], got[1], 16), 0);
}

Test(ids, work_without_explicit_seed)
{
    uint8_t a[8], b[8], t[16];
    static const uint8_t z16[16];
    ldt_id_span(a);
    ldt_id_span(b);
    ldt_id_trace(t);
    cr_expect_neq(memcmp(a, z16, 8), 0);
    cr_expect_neq(memcmp(a, b, 8), 0);
    cr_expect_neq(memcmp(t, z16, 16), 0);
}

/* The one-call pair interleaved with the single ids: no id repeats, none is zero. */
Test(ids, trace_span_pair_is_unique_among_single_ids)
{
    enum { N = 20000 };
    static struct id16 tr[2 * N];
    static uint64_t sp[2 * N];
    static const uint8_t z16[16];
    for (int i = 0; i < N; i++) {
        ldt_id_trace_span(tr[2 * i].b, (uint8_t *)&sp[2 * i]);
        ldt_id_trace(tr[2 * i + 1].b);
        ldt_id_span((uint8_t *)&sp[2 * i + 1]);
        cr_assert_neq(memcmp(tr[2 * i].b, z16, 16), 0);
        cr_assert_neq(sp[2 * i], 0);
    }
    qsort(tr, 2 * N, sizeof tr[0], cmp_id16);
    qsort(sp, 2 * N, sizeof sp[0], cmp_u64);
    for (int i = 1; i < 2 * N; i++) {
        cr_assert_neq(memcmp(tr[i - 1].b, tr[i].b, 16), 0, "trace id repeated");
        cr_assert_neq(sp[i - 1], sp[i], "span id repeated");
    }
}

Test(ids, reseed_preserves_errno)
{
    errno = EIO;
    ldt_id_seed();
    cr_expect_eq(errno, EIO);
    ldt_id_reseed();
    cr_expect_eq(errno, EIO);
}

/* Reads the trace id's right-most 7 bytes big-endian, as a ratio sampler does. */
static uint64_t low56(const uint8_t t[16])
{
    uint64_t v = 0;
    for (int i = 9; i < 16; i++)
        v = (v << 8) | t[i];
    return v;
}

/* Every bit of span ids and of the trace id's random part is set about half of the time. */
Test(ids, bits_are_balanced)
{
    enum { N = 100000 };
    static unsigned span_ones[64], trace_ones[56];
    for (int i = 0; i < N; i++) {
        uint64_t s;
        uint8_t t[16];
        ldt_id_span((uint8_t *)&s);
        ldt_id_trace(t);
        uint64_t r = low56(t);
        for (int b = 0; b < 64; b++)
            span_ones[b] += (s >> b) & 1;
        for (int b = 0; b < 56; b++)
            trace_ones[b] += (r >> b) & 1;
    }
    /* sigma = sqrt(N)/2 = 158; 2000 is over 12 sigma. */
    for (int b = 0; b < 64; b++)
        cr_expect(span_ones[b] > N / 2 - 2000 && span_ones[b] < N / 2 + 2000, "span bit %d: %u", b,
                  span_ones[b]);
    for (int b = 0; b < 56; b++)
        cr_expect(trace_ones[b] > N / 2 - 2000 && trace_ones[b] < N / 2 + 2000,
                  "trace bit %d: %u", b, trace_ones[b]);
}

/* ============================ configuration ============================ */

static const char *const all_vars[] = {
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG", "LDTRACE_CAPTURE_QUERY", "LDTRACE_SYSCALL_SPANS", "LDTRACE_RINGS",
    "LDTRACE_RING_SLOTS", "LDTRACE_DIR", "LDTRACE_LOG",
};

static void clear_env(void)
{
    for (size_t i = 0; i < LDT_ARRAY_LEN(all_vars); i++)
        unsetenv(all_vars[i]);
}

static struct ldt_config cfg;

/* The base name of argv[0] as /proc/self/cmdline shows it, read here with stdio (a Criterion
 * worker renames itself, so this is not the executable's name). */
static const char *argv0_base(void)
{
    static char buf[512];
    FILE *f = fopen("/proc/self/cmdline", "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

static void load_with(const char *name, const char *value)
{
    clear_env();
    if (name)
        setenv(name, value, 1);
    ldt_config_load(&cfg);
}

Test(config, defaults)
{
    char dir[64];
    load_with(NULL, NULL);
    snprintf(dir, sizeof(dir), "/dev/shm/ldtrace-%u", (unsigned)getuid());
    cr_expect_eq(cfg.disabled, 0);
    cr_expect_eq(cfg.sampler, LDT_SAMPLER_PARENT_RATIO);
    cr_expect_eq(cfg.ratio, 1.0);
    cr_expect_eq(cfg.ratio_bound, UINT64_C(1) << 56);
    cr_expect_eq(cfg.capture_query, 0);
    cr_expect_eq(cfg.syscall_spans, 0);
    cr_expect_eq(cfg.rings, 0);
    cr_expect_eq(cfg.ring_slots, 0);
    cr_expect_str_eq(cfg.dir, dir);
    cr_expect_str_eq(cfg.log_path, "");
    cr_expect_str_eq(cfg.resource, "");
    cr_expect_str_eq(cfg.service_name, argv0_base());
    cr_expect_str_eq(cfg.exe_name, "test_common");
}

Test(config, default_dir)
{
    char dir[64], want[64];
    ldt_config_default_dir(dir, sizeof(dir));
    snprintf(want, sizeof(want), "/dev/shm/ldtrace-%u", (unsigned)getuid());
    cr_expect_str_eq(dir, want);
}

struct env_case {
    char name[32];
    char value[48];
    int disabled, capture_query, syscall_spans;
    unsigned rings, ring_slots;
};

static struct env_case env_cases[] = {
    {"OTEL_SDK_DISABLED", "true", 1, 0, 0, 0, 0},
    {"OTEL_SDK_DISABLED", "TRUE", 1, 0, 0, 0, 0},
    {"OTEL_SDK_DISABLED", "1", 0, 0, 0, 0, 0},   /* OpenTelemetry: only "true" is true */
    {"OTEL_SDK_DISABLED", "false", 0, 0, 0, 0, 0},
    {"OTEL_SDK_DISABLED", "", 0, 0, 0, 0, 0},
    {"LDTRACE_CAPTURE_QUERY", "1", 0, 1, 0, 0, 0},
    {"LDTRACE_CAPTURE_QUERY", "true", 0, 1, 0, 0, 0},
    {"LDTRACE_CAPTURE_QUERY", "0", 0, 0, 0, 0, 0},
    {"LDTRACE_SYSCALL_SPANS", "1", 0, 0, 1, 0, 0},
    {"LDTRACE_SYSCALL_SPANS", "no", 0, 0, 0, 0, 0},
    {"LDTRACE_RINGS", "8", 0, 0, 0, 8, 0},
    {"LDTRACE_RINGS", "x8", 0, 0, 0, 0, 0},
    {"LDTRACE_RINGS", "-1", 0, 0, 0, 0, 0},
    {"LDTRACE_RINGS", "99999999999999999999", 0, 0, 0, 0, 0},
    {"LDTRACE_RING_SLOTS", "4096", 0, 0, 0, 0, 4096},
    {"LDTRACE_RING_SLOTS", "16777216", 0, 0, 0, 0, 16777216},
    {"LDTRACE_RING_SLOTS", "16777217", 0, 0, 0, 0, 0},
};

ParameterizedTestParameters(config, env_switches)
{
    return cr_make_param_array(struct env_case, env_cases, LDT_ARRAY_LEN(env_cases));
}

ParameterizedTest(struct env_case *c, config, env_switches)
{
    load_with(c->name, c->value);
    cr_expect_eq(cfg.disabled, c->disabled, "%s=%s", c->name, c->value);
    cr_expect_eq(cfg.capture_query, c->capture_query, "%s=%s", c->name, c->value);
    cr_expect_eq(cfg.syscall_spans, c->syscall_spans, "%s=%s", c->name, c->value);
    cr_expect_eq(cfg.rings, c->rings, "%s=%s", c->name, c->value);
    cr_expect_eq(cfg.ring_slots, c->ring_slots, "%s=%s", c->name, c->value);
}

struct sampler_case {
    char sampler[40]; /* empty: unset */
    char arg[24];     /* empty: unset */
    enum ldt_sampler want;
    double ratio;
};

static struct sampler_case sampler_cases[] = {
    {"", "", LDT_SAMPLER_PARENT_RATIO, 1.0},
    {"", "0.25", LDT_SAMPLER_PARENT_RATIO, 0.25},
    {"always_on", "0.25", LDT_SAMPLER_ALWAYS_ON, 1.0},
    {"always_off", "", LDT_SAMPLER_ALWAYS_OFF, 0.0},
    {"traceidratio", "0.5", LDT_SAMPLER_RATIO, 0.5},
    {"traceidratio", "", LDT_SAMPLER_RATIO, 1.0},
    {"parentbased_always_on", "0.5", LDT_SAMPLER_PARENT_RATIO, 1.0},
    {"parentbased_always_off", "", LDT_SAMPLER_PARENT_OFF, 0.0},
    {"parentbased_traceidratio", "0.1", LDT_SAMPLER_PARENT_RATIO, 0.1},
    {"jaeger_remote", "0.1", LDT_SAMPLER_PARENT_RATIO, 1.0},
    {"bogus", "", LDT_SAMPLER_PARENT_RATIO, 1.0},
    {"traceidratio", "2", LDT_SAMPLER_RATIO, 1.0},
    {"traceidratio", "-0.5", LDT_SAMPLER_RATIO, 0.0},
    {"traceidratio", "abc", LDT_SAMPLER_RATIO, 1.0},
    {"traceidratio", "0.5x", LDT_SAMPLER_RATIO, 1.0},
    {"traceidratio", "nan", LDT_SAMPLER_RATIO, 1.0},
    {"traceidratio", ".5", LDT_SAMPLER_RATIO, 0.5},
    {"traceidratio", " 0.75 ", LDT_SAMPLER_RATIO, 0.75},
    {"traceidratio", "1e-1", LDT_SAMPLER_RATIO, 0.1},
    {"traceidratio", "25E-2", LDT_SAMPLER_RATIO, 0.25},
    {"traceidratio", "0", LDT_SAMPLER_RATIO, 0.0},
    {"traceidratio", "1e", LDT_SAMPLER_RATIO, 1.0},
};

ParameterizedTestParameters(config, sampler)
{
    return cr_make_param_array(struct sampler_case, sampler_cases, LDT_ARRAY_LEN(sampler_cases));
}

ParameterizedTest(struct sampler_case *c, config, sampler)
{
    clear_env();
    if (c->sampler[0])
        setenv("OTEL_TRACES_SAMPLER", c->sampler, 1);
    if (c->arg[0])
        setenv("OTEL_TRACES_SAMPLER_ARG", c->arg, 1);
    ldt_config_load(&cfg);
    cr_expect_eq(cfg.sampler, c->want, "%s/%s: sampler %d", c->sampler, c->arg, cfg.sampler);
    cr_expect(cfg.ratio > c->ratio - 1e-12 && cfg.ratio < c->ratio + 1e-12, "%s/%s: ratio %g",
              c->sampler, c->arg, cfg.ratio);
    double want_bound = c->ratio * (double)(UINT64_C(1) << 56);
    uint64_t want = (uint64_t)want_bound;
    cr_expect(cfg.ratio_bound + 1 >= want && cfg.ratio_bound <= want,
              "%s/%s: bound %llu", c->sampler, c->arg, (unsigned long long)cfg.ratio_bound);
}

/* The bound is exact where it matters: half of the 56-bit space at 0.5, and sampling by
 * "low 56 bits < bound" keeps about that share of generated trace ids. */
Test(config, ratio_bound_samples_generated_ids)
{
    enum { N = 100000 };
    load_with("OTEL_TRACES_SAMPLER_ARG", "0.5");
    cr_expect_eq(cfg.ratio_bound, UINT64_C(1) << 55);
    load_with("OTEL_TRACES_SAMPLER_ARG", "0.25");
    unsigned kept = 0;
    for (int i = 0; i < N; i++) {
        uint8_t t[16];
        ldt_id_trace(t);
        kept += low56(t) < cfg.ratio_bound;
    }
    /* sigma = sqrt(N * 0.25 * 0.75) = 137 */
    cr_expect(kept > N / 4 - 1500 && kept < N / 4 + 1500, "kept %u of %d at 0.25", kept, N);
}

Test(config, strings_copied)
{
    clear_env();
    setenv("LDTRACE_DIR", "/tmp/ldt-x", 1);
    setenv("LDTRACE_LOG", "/tmp/ldt-x/log", 1);
    setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev,team=core", 1);
    ldt_config_load(&cfg);
    cr_expect_str_eq(cfg.dir, "/tmp/ldt-x");
    cr_expect_str_eq(cfg.log_path, "/tmp/ldt-x/log");
    cr_expect_str_eq(cfg.resource, "deployment.environment=dev,team=core");
    cr_expect_str_eq(cfg.service_name, argv0_base());
}

Test(config, long_values_truncated)
{
    char big[4000];
    memset(big, 's', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    clear_env();
    setenv("OTEL_SERVICE_NAME", big, 1);
    setenv("LDTRACE_DIR", big, 1);
    setenv("OTEL_RESOURCE_ATTRIBUTES", big, 1);
    ldt_config_load(&cfg);
    cr_expect_eq(strlen(cfg.service_name), sizeof(cfg.service_name) - 1);
    cr_expect_eq(strlen(cfg.dir), sizeof(cfg.dir) - 1);
    cr_expect_eq(strlen(cfg.resource), sizeof(cfg.resource) - 1);
}

Test(config, service_name_precedence)
{
    clear_env();
    setenv("OTEL_RESOURCE_ATTRIBUTES", "team=core, service.name = checkout%20api ,x=y", 1);
    ldt_config_load(&cfg);
    cr_expect_str_eq(cfg.service_name, "checkout api", "from OTEL_RESOURCE_ATTRIBUTES");
    setenv("OTEL_SERVICE_NAME", "payments", 1);
    ldt_config_load(&cfg);
    cr_expect_str_eq(cfg.service_name, "payments", "OTEL_SERVICE_NAME wins");
    setenv("OTEL_SERVICE_NAME", "", 1);
    setenv("OTEL_RESOURCE_ATTRIBUTES", "service.namespace=shop", 1);
    ldt_config_load(&cfg);
    cr_expect_str_eq(cfg.service_name, argv0_base(), "derived from the command line");
}

/* args holds /proc/self/cmdline as the kernel gives it (read here with stdio for comparison). */
Test(config, args_from_proc_cmdline)
{
    char want[1024];
    FILE *f = fopen("/proc/self/cmdline", "r");
    cr_assert_not_null(f);
    size_t n = fread(want, 1, sizeof(want) - 1, f);
    fclose(f);
    load_with(NULL, NULL);
    cr_assert_gt(cfg.args_len, 0);
    cr_expect_eq(cfg.args_len, n);
    cr_expect_eq(memcmp(cfg.args, want, n), 0);
    cr_expect_eq(cfg.args[cfg.args_len - 1], '\0');
    cr_expect_str_eq(strrchr(cfg.args, '/') ? strrchr(cfg.args, '/') + 1 : cfg.args, argv0_base());
}

#if !defined(__SANITIZE_ADDRESS__)
/* Counts allocations while ldt_config_load runs: the shim calls it from its constructor, possibly
 * before the host's allocator is usable. (ASan owns malloc: this check is for the plain build.) */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static volatile int counting, allocs;

void *malloc(size_t n)
{
    allocs += counting;
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    allocs += counting;
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    allocs += counting;
    return __libc_realloc(p, n);
}

Test(config, load_does_not_allocate)
{
    clear_env();
    setenv("OTEL_TRACES_SAMPLER", "traceidratio", 1);
    setenv("OTEL_TRACES_SAMPLER_ARG", "0.125", 1);
    setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=a%2Fb", 1);
    counting = 1;
    void *volatile probe = malloc(16); /* proves the counter sees allocations */
    counting = 0;
    free(probe);
    cr_assert_eq(allocs, 1);
    allocs = 0;
    counting = 1;
    ldt_config_load(&cfg);
    counting = 0;
    cr_expect_eq(allocs, 0, "%d allocations", allocs);
    cr_expect_str_eq(cfg.service_name, "a/b");
}
#endif

/* ============================ service names ============================ */

struct svc_case {
    char argv[6][40];
    int argc;
    char want[40];
};

static struct svc_case svc_cases[] = {
    {{"python3", "app.py"}, 2, "app"},
    {{"python3", "-m", "http.server", "8000"}, 4, "http.server"},
    {{"python3", "-mhttp.server"}, 2, "http.server"},
    {{"python3", "-u", "/x/y/svc.py"}, 3, "svc"},
    {{"/usr/bin/python3.11", "-W", "ignore", "-X", "dev", "srv.py"}, 6, "srv"},
    {{"python3", "-c", "print(1)"}, 3, "python3"},
    {{"python3", "-uc", "print(1)"}, 3, "python3"},
    {{"python3"}, 1, "python3"},
    {{"python", "-", "x.py"}, 3, "python"},
    {{"python3", "--", "run.py"}, 3, "run"},
    {{"node", "server.js"}, 2, "server"},
    {{"node", "--inspect", "x.js"}, 3, "x"},
    {{"node", "--inspect=9229", "-r", "dotenv/config", "dist/index.mjs"}, 5, "index"},
    {{"node", "--require", "tracing.js", "app.js"}, 4, "app"},
    {{"node", "-e", "1"}, 3, "node"},
    {{"node"}, 1, "node"},
    {{"nodejs", "api"}, 2, "api"},
    {{"java", "-jar", "/a/b.jar"}, 3, "b"},
    {{"java", "-Xmx1g", "-cp", "lib/*", "com.x.Main", "arg"}, 6, "com.x.Main"},
    {{"java", "com.x.Main"}, 2, "com.x.Main"},
    {{"java", "-m", "com.shop/com.shop.App"}, 3, "com.shop.App"},
    {{"java", "Hello.java"}, 2, "Hello"},
    {{"java", "-version"}, 2, "java"},
    {{"perl", "x.pl"}, 2, "x"},
    {{"perl", "-w", "-Ilib", "-MData::Dumper", "bin/app.pl"}, 5, "app"},
    {{"perl", "-e", "print 1"}, 3, "perl"},
    {{"ruby", "x.rb"}, 2, "x"},
    {{"ruby", "-r", "json", "-W0", "srv.rb"}, 5, "srv"},
    {{"ruby", "-e", "p 1"}, 3, "ruby"},
    {{"php", "x.php"}, 2, "x"},
    {{"php8.2", "-d", "memory_limit=1G", "-f", "/var/www/index.php"}, 5, "index"},
    {{"php", "-S", "localhost:8000", "router.php"}, 4, "router"},
    {{"php", "-r", "echo 1;"}, 3, "php"},
    {{"/usr/bin/curl", "-s", "http://x/"}, 3, "curl"},
    {{"./gateway", "--port", "8080"}, 3, "gateway"},
    {{"nginx"}, 1, "nginx"},
    {{"-bash"}, 1, "bash"},
    {{"pythonista", "app.py"}, 2, "pythonista"},
    {{""}, 1, "unknown_service"},
    {{""}, 0, "unknown_service"},
};

ParameterizedTestParameters(service, from_argv)
{
    return cr_make_param_array(struct svc_case, svc_cases, LDT_ARRAY_LEN(svc_cases));
}

ParameterizedTest(struct svc_case *c, service, from_argv)
{
    char *argv[7] = {0};
    char out[128];
    for (int i = 0; i < c->argc; i++)
        argv[i] = c->argv[i];
    memset(out, 'X', sizeof(out));
    ldt_config_service_from_argv(argv, c->argc, out, sizeof(out));
    cr_expect_str_eq(out, c->want, "%s %s %s: got %s", c->argv[0], c->argv[1], c->argv[2], out);
}

Test(service, truncated_to_cap)
{
    char *argv[] = {"python3", "application.py"};
    char out[4];
    ldt_config_service_from_argv(argv, 2, out, sizeof(out));
    cr_expect_str_eq(out, "app");
    char *argv2[] = {"/usr/local/bin/verylongprogram"};
    ldt_config_service_from_argv(argv2, 1, out, sizeof(out));
    cr_expect_str_eq(out, "ver");
}

/* ================================ log ================================ */

static char log_path[64];

static void log_setup(void)
{
    snprintf(log_path, sizeof(log_path), "/tmp/ldt-test-log-XXXXXX");
    int fd = mkstemp(log_path);
    cr_assert_geq(fd, 0);
    close(fd);
    unlink(log_path);
}

static void log_teardown(void)
{
    ldt_log_open(NULL);
    unlink(log_path);
}

static size_t slurp(char *buf, size_t cap)
{
    int fd = open(log_path, O_RDONLY);
    cr_assert_geq(fd, 0);
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    cr_assert_geq(n, 0);
    buf[n] = '\0';
    return (size_t)n;
}

Test(log, writes_prefixed_line, .init = log_setup, .fini = log_teardown)
{
    char buf[512], want[512];
    int x;
    ldt_log_open(log_path);
    ldt_log("hello %s %d %u %lu %llu %x %zu %p", "world", -42, 42u, 4000000000ul, 1ull << 40,
            0xbeefu, (size_t)7, (void *)&x);
    slurp(buf, sizeof(buf));
    snprintf(want, sizeof(want),
             "ldtrace[%d]: hello world -42 42 4000000000 1099511627776 beef 7 %p\n", (int)getpid(),
             (void *)&x);
    cr_expect_str_eq(buf, want);
}

Test(log, appends_and_creates_0600, .init = log_setup, .fini = log_teardown)
{
    char buf[512], want[512];
    mode_t old = umask(0);
    ldt_log_open(log_path);
    umask(old);
    struct stat st;
    cr_assert_eq(stat(log_path, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0600);
    ldt_log("one");
    ldt_log_open(log_path); /* reopening keeps what is there */
    ldt_log("two");
    slurp(buf, sizeof(buf));
    snprintf(want, sizeof(want), "ldtrace[%d]: one\nldtrace[%d]: two\n", (int)getpid(),
             (int)getpid());
    cr_expect_str_eq(buf, want);
}

Test(log, preserves_errno, .init = log_setup, .fini = log_teardown)
{
    errno = EIO;
    ldt_log("not open");
    cr_expect_eq(errno, EIO);
    ldt_log_open("/nonexistent-dir/x/y.log");
    cr_expect_eq(errno, EIO, "a failed open does not leak its errno");
    cr_expect_eq(ldt_log_fd(), -1);
    ldt_log_open(log_path);
    errno = ENOTCONN;
    ldt_log("open %d", 1);
    cr_expect_eq(errno, ENOTCONN);
}

Test(log, fd_is_cloexec_and_closed_on_disable, .init = log_setup, .fini = log_teardown)
{
    ldt_log_open(log_path);
    int fd = ldt_log_fd();
    cr_assert_geq(fd, 0);
    cr_expect(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    ldt_log_open(NULL);
    cr_expect_eq(ldt_log_fd(), -1);
    cr_expect_eq(fcntl(fd, F_GETFD), -1, "fd closed");
    ldt_log("dropped");
    char buf[64];
    cr_expect_eq(slurp(buf, sizeof(buf)), 0);
}

Test(log, fd_kept_high_and_stable_on_reopen, .init = log_setup, .fini = log_teardown)
{
    char buf[256], want[256], other[80];
    ldt_log_open(log_path);
    int fd = ldt_log_fd();
    cr_expect_geq(fd, 100, "log fd %d is among the low numbers apps dup2 onto", fd);
    ldt_log("first");
    snprintf(other, sizeof(other), "%s.2", log_path);
    ldt_log_open(other);
    cr_expect_eq(ldt_log_fd(), fd, "reopen changed the descriptor");
    cr_expect(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    ldt_log("second");
    slurp(buf, sizeof(buf));
    snprintf(want, sizeof(want), "ldtrace[%d]: first\n", (int)getpid());
    cr_expect_str_eq(buf, want);
    int o = open(other, O_RDONLY);
    cr_assert_geq(o, 0);
    ssize_t n = read(o, buf, sizeof(buf) - 1);
    close(o);
    unlink(other);
    buf[n < 0 ? 0 : n] = '\0';
    snprintf(want, sizeof(want), "ldtrace[%d]: second\n", (int)getpid());
    cr_expect_str_eq(buf, want);
}

Test(log, long_line_truncated_with_newline, .init = log_setup, .fini = log_teardown)
{
    static char big[5000], buf[8192];
    memset(big, 'a', sizeof(big) - 1);
    ldt_log_open(log_path);
    ldt_log("%s", big);
    ldt_log("next");
    size_t n = slurp(buf, sizeof(buf));
    char *nl = strchr(buf, '\n');
    cr_assert_not_null(nl);
    cr_expect_eq(nl - buf + 1, 1023, "first line is %td bytes", nl - buf + 1);
    cr_expect_eq(strncmp(nl + 1, "ldtrace[", 8), 0);
    cr_expect_eq(buf[n - 1], '\n');
}

Test(log, fork_child_uses_its_pid, .init = log_setup, .fini = log_teardown)
{
    char buf[512], want[512];
    ldt_log_open(log_path);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        ldt_log("child");
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    slurp(buf, sizeof(buf));
    snprintf(want, sizeof(want), "ldtrace[%d]: child\n", (int)pid);
    cr_expect_str_eq(buf, want);
}

/* Every line must be whole: "ldtrace[pid]: <tag> <n> <40 x's>". */
static void check_lines(const char *buf, int want_lines)
{
    int lines = 0;
    for (const char *p = buf; *p; lines++) {
        const char *nl = strchr(p, '\n');
        cr_assert_not_null(nl, "unterminated line %d", lines);
        int pid, n, used = 0;
        char tag[8];
        int got = sscanf(p, "ldtrace[%d]: %7s %d %n", &pid, tag, &n, &used);
        cr_assert_eq(got, 3, "line %d", lines);
        cr_assert_eq(nl - (p + used), 40, "line %d mangled", lines);
        p = nl + 1;
    }
    cr_expect_eq(lines, want_lines);
}

#define XS "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

static void *log_thread(void *p)
{
    for (int i = 0; i < 500; i++)
        ldt_log("thread %d " XS, (int)(intptr_t)p * 1000 + i);
    return NULL;
}

Test(log, threads_never_interleave, .init = log_setup, .fini = log_teardown)
{
    static char buf[1 << 20];
    pthread_t th[4];
    ldt_log_open(log_path);
    for (intptr_t t = 0; t < 4; t++)
        pthread_create(&th[t], NULL, log_thread, (void *)t);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    slurp(buf, sizeof(buf));
    check_lines(buf, 2000);
}

static volatile sig_atomic_t sig_count;

static void on_alarm(int sig)
{
    (void)sig;
    int e = errno;
    errno = EAGAIN;
    ldt_log("signal %d " XS, (int)sig_count);
    if (errno != EAGAIN)
        abort();
    sig_count++;
    errno = e;
}

/* Logging from a signal handler that interrupts logging on the same thread neither deadlocks nor
 * tears a line (stdio would risk both). */
Test(log, signal_handler_may_log, .init = log_setup, .fini = log_teardown)
{
    static char buf[1 << 20];
    struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 200}, {0, 200}};
    ldt_log_open(log_path);
    setitimer(ITIMER_REAL, &it, NULL);
    int i = 0;
    for (; i < 20000 && sig_count < 50; i++)
        ldt_log("main %d " XS, i);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    cr_expect_gt(sig_count, 0, "no signal arrived");
    slurp(buf, sizeof(buf));
    check_lines(buf, i + (int)sig_count);
}

/* ================================ fmt ================================ */

Test(fmt, conversions)
{
    char buf[128];
    cr_expect_eq(ldt_fmt(buf, sizeof(buf), "%d|%d|%i", 0, -2147483647 - 1, 7), 15);
    cr_expect_str_eq(buf, "0|-2147483648|7");
    ldt_fmt(buf, sizeof(buf), "%lld|%llu", (long long)(-9223372036854775807LL - 1),
            18446744073709551615ULL);
    cr_expect_str_eq(buf, "-9223372036854775808|18446744073709551615");
    ldt_fmt(buf, sizeof(buf), "%ld|%lu|%lx|%zu|%zd", -5L, 5UL, 255UL, (size_t)123, (ssize_t)-3);
    cr_expect_str_eq(buf, "-5|5|ff|123|-3");
    const char *volatile null = NULL; /* volatile: keeps gcc from warning about %s with NULL */
    ldt_fmt(buf, sizeof(buf), "%x|%u|%c|%%|%s|%s", 0xdeadu, 0u, 'z', "str", null);
    cr_expect_str_eq(buf, "dead|0|z|%|str|(null)");
    ldt_fmt(buf, sizeof(buf), "%p", (void *)0x1234);
    cr_expect_str_eq(buf, "0x1234");
}

Test(fmt, unsupported_conversion_stops_literally)
{
    char buf[64];
    ldt_fmt(buf, sizeof(buf), "a %f b %d", 1.5, 3);
    cr_expect_str_eq(buf, "a %f b %d");
}

Test(fmt, truncates_to_cap)
{
    char buf[16];
    memset(buf, 'Q', sizeof(buf));
    cr_expect_eq(ldt_fmt(buf, 5, "hello %s", "world"), 4);
    cr_expect_str_eq(buf, "hell");
    cr_expect_eq(buf[5], 'Q', "nothing written past cap");
    cr_expect_eq(ldt_fmt(buf, 1, "abc"), 0);
    cr_expect_str_eq(buf, "");
    buf[0] = 'Q';
    cr_expect_eq(ldt_fmt(buf, 0, "abc"), 0);
    cr_expect_eq(buf[0], 'Q', "cap 0 writes nothing");
    cr_expect_eq(ldt_fmt(buf, 8, "%d", -1234567890), 7);
    cr_expect_str_eq(buf, "-123456");
}
