/* common.h - ids, clocks, configuration and signal-safe logging shared by the shim, sidecar and CLI.
 *
 * Rules for everything in src/common: no malloc and no stdio in anything the shim calls on a hot path
 * (ids, clocks, logging); configuration is read once at start-up into a plain struct.
 */
#ifndef LDTRACE_COMMON_H
#define LDTRACE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define LDT_LIKELY(x) __builtin_expect(!!(x), 1)
#define LDT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define LDT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define LDT_VERSION "0.1.0"

/* ---- clocks (vDSO clock_gettime: no syscall) ---- */

static inline uint64_t ldt_clock_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t ldt_clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- ids ---- */

/* Seed the id generator from getrandom() (falls back to time, pid and addresses if it fails). Called
 * once at start-up and again in a fork child (ldt_id_reseed), so parent and child never repeat an id.
 * Not thread-safe against concurrent id generation; call before threads exist or after fork. */
void ldt_id_seed(void);
void ldt_id_reseed(void);

/* Fill a 16-byte trace id / 8-byte span id: SplitMix64's output function (a 64-bit bijection with full
 * avalanche) over a per-thread counter offset by the thread's identity and the process's 128-bit
 * getrandom seed (XXH3 hashes the fallback seed when getrandom fails). Never all-zero, unique across
 * threads and processes with overwhelming probability. No syscall, no lock, async-signal-safe. The trace id's right-most 7 bytes
 * are random, so the W3C Level 2 random flag may be set. */
void ldt_id_trace(uint8_t out[16]);
void ldt_id_span(uint8_t out[8]);
/* Both ids of a new root span in one call: the same ids as ldt_id_trace then ldt_id_span. */
void ldt_id_trace_span(uint8_t trace[16], uint8_t span[8]);

/* ---- configuration ---- */

enum ldt_sampler {
    LDT_SAMPLER_PARENT_RATIO = 0,  /* parentbased_traceidratio (and the default parentbased_always_on) */
    LDT_SAMPLER_ALWAYS_ON,
    LDT_SAMPLER_ALWAYS_OFF,
    LDT_SAMPLER_RATIO,             /* traceidratio: the ratio decides even when there is a parent */
    LDT_SAMPLER_PARENT_OFF,        /* parentbased_always_off */
};

struct ldt_config {
    int disabled;                 /* OTEL_SDK_DISABLED=true: pure pass-through */
    enum ldt_sampler sampler;     /* OTEL_TRACES_SAMPLER */
    double ratio;                 /* OTEL_TRACES_SAMPLER_ARG, default 1.0, clamped to [0,1] */
    uint64_t ratio_bound;         /* ratio as a threshold on the trace id's low 56 bits */
    int capture_query;            /* LDTRACE_CAPTURE_QUERY=1 */
    int syscall_spans;            /* LDTRACE_SYSCALL_SPANS=1 */
    unsigned rings;               /* LDTRACE_RINGS (0: default) */
    unsigned ring_slots;          /* LDTRACE_RING_SLOTS (0: default) */
    char service_name[128];       /* OTEL_SERVICE_NAME, else derived from the command line */
    char exe_name[64];            /* base name of /proc/self/exe (or argv[0]) */
    char dir[256];                /* LDTRACE_DIR, else /dev/shm/ldtrace-<uid> */
    char log_path[256];           /* LDTRACE_LOG, empty: no diagnostics */
    char resource[2048];          /* OTEL_RESOURCE_ATTRIBUTES, raw */
    char args[1024];              /* argv joined with NUL bytes */
    size_t args_len;
};

/* Read the configuration from the environment and /proc/self/cmdline. No malloc (safe in a
 * constructor before the app's allocator is ready). */
void ldt_config_load(struct ldt_config *c);

/* The service name for a command line (argv, argc) per the rule: the program's base name, and for an
 * interpreter (python*, node, nodejs, java, ruby, perl, php*) the script or module it runs
 * ("python3 app.py" -> "app", "python3 -m http.server" -> "http.server", "java -jar x.jar" -> "x",
 * "node server.js" -> "server"). Writes a NUL-terminated name into out[cap]. */
void ldt_config_service_from_argv(char *const *argv, int argc, char *out, size_t cap);

/* The default segment directory for this uid: "/dev/shm/ldtrace-<uid>". */
void ldt_config_default_dir(char *out, size_t cap);

/* ---- logging (async-signal-safe: plain write(2), no stdio, no malloc) ---- */

/* Open the diagnostics file (O_APPEND|O_CLOEXEC, 0600). A NULL or empty path disables logging.
 * The descriptor is moved to 100 or above when possible; reopening keeps its number. Preserves
 * errno. Disabling while another thread logs is a race: call it at start-up. */
void ldt_log_open(const char *path);

/* Write "ldtrace[<pid>]: <msg>\n". Supports %s %d %u %lu %llu %x %zu %p, nothing else. Preserves errno. */
void ldt_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The log file's descriptor, or -1 when logging is off. Added for the shim: its close()/dup2() hooks
 * must leave this fd alone (and report EBADF to the app as if it were not open). Signal-safe. */
int ldt_log_fd(void);

/* Format into buf[cap] with the same subset; returns bytes written (excluding NUL). */
size_t ldt_fmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
