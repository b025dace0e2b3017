/* config.c - start-up configuration from OTEL_* / LDTRACE_* variables and /proc/self/cmdline. */
#include "common/common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Everything here may run inside the shim's constructor, before the host's allocator is ready:
 * no malloc, no stdio. Files are read with raw syscalls so that the shim's own read/close hooks
 * are never entered from here. */

#define RATIO_ONE (UINT64_C(1) << 56)
#define ARGV_MAX 64

/* ---- small string helpers ---- */

static void copy_n(char *dst, size_t cap, const char *src, size_t n)
{
    if (cap == 0)
        return;
    if (n > cap - 1)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    copy_n(dst, cap, src, strlen(src));
}

static int lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* ASCII case-insensitive equality (strcasecmp consults the locale). */
static int ieq(const char *a, const char *b)
{
    while (*a && lower((unsigned char)*a) == lower((unsigned char)*b)) {
        a++;
        b++;
    }
    return *a == '\0' && *b == '\0';
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

/* OpenTelemetry booleans: only "true", in any case, is true. */
static int env_otel_true(const char *name)
{
    const char *v = env(name);
    return v && ieq(v, "true");
}

/* Our own switches are friendlier: 1, true, yes, on. */
static int env_flag(const char *name)
{
    const char *v = env(name);
    return v && (ieq(v, "1") || ieq(v, "true") || ieq(v, "yes") || ieq(v, "on"));
}

/* A decimal count up to 2^24; anything else (junk, overflow, negative) is 0: "use the default". */
static unsigned env_count(const char *name)
{
    const char *v = env(name);
    unsigned n = 0;
    if (v == NULL)
        return 0;
    for (; *v; v++) {
        if (*v < '0' || *v > '9' || n > (1u << 24) / 10)
            return 0;
        n = n * 10 + (unsigned)(*v - '0');
    }
    return n > (1u << 24) ? 0 : n;
}

/* ---- sampler ---- */

/* The exponent after 'e' or 'E' at *s: adds it to *exp and advances *s; -1 without digits. */
static int parse_exp(const char **sp, int *exp)
{
    const char *s = *sp + 1;
    int sign = 1, e = 0, digits = 0;
    if (*s == '+' || *s == '-')
        sign = (*s++ == '-') ? -1 : 1;
    for (; *s >= '0' && *s <= '9'; s++, digits++)
        if (e < 1000)
            e = e * 10 + (*s - '0');
    *exp += sign * e;
    *sp = s;
    return digits ? 0 : -1;
}

/* A decimal number with optional sign, fraction and exponent ("0.25", ".5", "1e-3", " 1 ").
 * Returns 0 and *out, or -1 for anything else. strtod is avoided: it may allocate. */
static int parse_ratio(const char *s, double *out)
{
    double m = 0, sign = 1;
    int digits = 0, exp = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '+' || *s == '-')
        sign = (*s++ == '-') ? -1 : 1;
    for (; *s >= '0' && *s <= '9'; s++, digits++)
        m = m * 10 + (*s - '0');
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++, digits++, exp--)
            m = m * 10 + (*s - '0');
    if (digits == 0 || ((*s == 'e' || *s == 'E') && parse_exp(&s, &exp) < 0))
        return -1;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s != '\0')
        return -1;
    for (; exp > 0 && m <= 1e300; exp--)
        m *= 10;
    for (; exp < 0 && m > 0; exp++)
        m /= 10;
    *out = sign * m;
    return 0;
}

/* OTEL_TRACES_SAMPLER_ARG: default 1.0 when absent or unparsable (as the OpenTelemetry SDKs do),
 * clamped to [0, 1]. */
static double env_ratio(void)
{
    const char *v = env("OTEL_TRACES_SAMPLER_ARG");
    double r;
    if (v == NULL || parse_ratio(v, &r) < 0 || r != r)
        return 1.0;
    return r < 0 ? 0 : r > 1 ? 1 : r;
}

/* The sampler and its ratio. The ratio is what decides a root span: always_on and
 * parentbased_always_on sample every root, always_off and parentbased_always_off none, and the
 * two ratio samplers use the argument. With no OTEL_TRACES_SAMPLER at all, the default is
 * parent-based and the argument (default 1.0) decides roots (DESIGN.md, "Sampling"). An unknown
 * name falls back to parentbased_always_on. */
static void load_sampler(struct ldt_config *c)
{
    const char *v = env("OTEL_TRACES_SAMPLER");
    double arg = env_ratio();
    c->sampler = LDT_SAMPLER_PARENT_RATIO;
    c->ratio = 1.0;
    if (v == NULL || ieq(v, "parentbased_traceidratio")) {
        c->ratio = arg;
    } else if (ieq(v, "traceidratio")) {
        c->sampler = LDT_SAMPLER_RATIO;
        c->ratio = arg;
    } else if (ieq(v, "always_on")) {
        c->sampler = LDT_SAMPLER_ALWAYS_ON;
    } else if (ieq(v, "always_off")) {
        c->sampler = LDT_SAMPLER_ALWAYS_OFF;
        c->ratio = 0;
    } else if (ieq(v, "parentbased_always_off")) {
        c->sampler = LDT_SAMPLER_PARENT_OFF;
        c->ratio = 0;
    }
    /* A trace is sampled when its id's low 56 bits, read big-endian, are below ratio_bound. */
    c->ratio_bound = c->ratio >= 1.0 ? RATIO_ONE : (uint64_t)(c->ratio * (double)RATIO_ONE);
}

/* ---- command line and service name ---- */

/* Reads up to cap bytes of a (proc) file with raw syscalls; returns the byte count, 0 on error. */
static size_t read_small_file(const char *path, char *buf, size_t cap)
{
    long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    if (fd < 0)
        return 0;
    while (len < cap) {
        long n = syscall(SYS_read, (int)fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    syscall(SYS_close, (int)fd);
    return len;
}

/* c->args: argv joined with NUL bytes, truncated so that the last byte is always a NUL. */
static void load_args(struct ldt_config *c)
{
    size_t n = read_small_file("/proc/self/cmdline", c->args, sizeof(c->args) - 1);
    if (n > 0 && c->args[n - 1] != '\0')
        c->args[n++] = '\0';
    c->args_len = n;
}

/* Splits c->args back into an argv array (pointers into c->args). */
static int split_args(struct ldt_config *c, char **argv, int max)
{
    int argc = 0;
    size_t i = 0;
    while (i < c->args_len && argc < max) {
        argv[argc++] = c->args + i;
        i += strlen(c->args + i) + 1;
    }
    return argc;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void load_exe(struct ldt_config *c, char **argv, int argc)
{
    char path[256];
    long n = syscall(SYS_readlink, "/proc/self/exe", path, sizeof(path) - 1);
    if (n > 0) {
        path[n] = '\0';
        copy_str(c->exe_name, sizeof(c->exe_name), base_name(path));
    } else if (argc > 0) {
        copy_str(c->exe_name, sizeof(c->exe_name), base_name(argv[0]));
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* Copies a W3C-baggage-style value, percent-decoded, trimmed of spaces. */
static void copy_decoded(char *out, size_t cap, const char *v, size_t n)
{
    size_t o = 0;
    while (n > 0 && v[0] == ' ')
        v++, n--;
    while (n > 0 && v[n - 1] == ' ')
        n--;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        int hi, lo;
        if (v[i] == '%' && i + 2 < n && (hi = hexval((unsigned char)v[i + 1])) >= 0 &&
            (lo = hexval((unsigned char)v[i + 2])) >= 0) {
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = v[i];
        }
    }
    if (cap > 0)
        out[o] = '\0';
}

/* service.name from OTEL_RESOURCE_ATTRIBUTES ("k=v,k=v"); returns 1 when found and non-empty. */
static int resource_service(const char *res, char *out, size_t cap)
{
    while (*res) {
        size_t n = strcspn(res, ",");
        const char *eq = memchr(res, '=', n);
        if (eq) {
            const char *k = res;
            size_t kn = (size_t)(eq - res);
            while (kn > 0 && *k == ' ')
                k++, kn--;
            while (kn > 0 && k[kn - 1] == ' ')
                kn--;
            if (kn == 12 && memcmp(k, "service.name", 12) == 0) {
                copy_decoded(out, cap, eq + 1, n - (size_t)(eq + 1 - res));
                return out[0] != '\0';
            }
        }
        res += n + (res[n] == ',');
    }
    return 0;
}

/* OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES (OpenTelemetry SDK
 * environment variable specification), which wins over the command line. */
static void load_service(struct ldt_config *c, char **argv, int argc)
{
    const char *v = env("OTEL_SERVICE_NAME");
    if (v)
        copy_str(c->service_name, sizeof(c->service_name), v);
    else if (!resource_service(c->resource, c->service_name, sizeof(c->service_name)))
        ldt_config_service_from_argv(argv, argc, c->service_name, sizeof(c->service_name));
}

void ldt_config_default_dir(char *out, size_t cap)
{
    ldt_fmt(out, cap, "/dev/shm/ldtrace-%u", (unsigned)getuid());
}

void ldt_config_load(struct ldt_config *c)
{
    char *argv[ARGV_MAX];
    const char *v;
    memset(c, 0, sizeof(*c));
    c->disabled = env_otel_true("OTEL_SDK_DISABLED");
    load_sampler(c);
    c->capture_query = env_flag("LDTRACE_CAPTURE_QUERY");
    c->syscall_spans = env_flag("LDTRACE_SYSCALL_SPANS");
    c->rings = env_count("LDTRACE_RINGS");
    c->ring_slots = env_count("LDTRACE_RING_SLOTS");
    if ((v = env("LDTRACE_DIR")) != NULL)
        copy_str(c->dir, sizeof(c->dir), v);
    else
        ldt_config_default_dir(c->dir, sizeof(c->dir));
    if ((v = env("LDTRACE_LOG")) != NULL)
        copy_str(c->log_path, sizeof(c->log_path), v);
    if ((v = env("OTEL_RESOURCE_ATTRIBUTES")) != NULL)
        copy_str(c->resource, sizeof(c->resource), v);
    load_args(c);
    int argc = split_args(c, argv, ARGV_MAX);
    load_exe(c, argv, argc);
    load_service(c, argv, argc);
}
