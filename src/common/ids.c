/* ids.c - trace and span ids: seeded once from getrandom, then SplitMix64 over per-thread counters
 * (XXH3 only mixes the fallback seed). */
#include "common/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#define XXH_INLINE_ALL /* static copies: nothing of xxhash is exported from the shim */
#include <xxhash.h>

/* The process seed. Written by ldt_id_seed/ldt_id_reseed only (start-up, fork child); read with
 * relaxed atomics on every id, which compile to plain loads. */
static uint64_t g_seed[2];
static atomic_int g_seeded;
static atomic_int g_atfork_done;
static atomic_uint_fast64_t g_thread_seq; /* hands out per-thread identities */

/* initial-exec: the shim is preloaded, so its TLS lives in the static block and each access is
 * one %fs-relative instruction, with no __tls_get_addr call. */
#define LDT_TLS __thread __attribute__((tls_model("initial-exec")))
static LDT_TLS uint64_t t_thread; /* 0 until the thread's first id */
static LDT_TLS uint64_t t_counter;

/* Fallback when getrandom fails (seccomp, very old kernel): everything that differs between
 * processes and runs, hashed. The previous seed is included, so a fork child's new seed differs
 * from its parent's even if the clocks did not move. */
static void seed_fallback(uint64_t s[2])
{
    struct timespec rt, mono;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    uint64_t in[8] = {
        g_seed[0], g_seed[1], (uint64_t)syscall(SYS_getpid), (uint64_t)syscall(SYS_gettid),
        (uint64_t)rt.tv_sec ^ (uint64_t)rt.tv_nsec << 20, (uint64_t)mono.tv_nsec,
        (uint64_t)(uintptr_t)&rt, (uint64_t)(uintptr_t)&seed_fallback,
    };
    XXH128_hash_t h = XXH3_128bits(in, sizeof(in));
    s[0] = h.low64;
    s[1] = h.high64;
}

static void seed_now(void)
{
    uint64_t s[2];
    if (getrandom(s, sizeof(s), GRND_NONBLOCK) != (ssize_t)sizeof(s))
        seed_fallback(s);
    __atomic_store_n(&g_seed[0], s[0], __ATOMIC_RELAXED);
    __atomic_store_n(&g_seed[1], s[1], __ATOMIC_RELAXED);
    atomic_store_explicit(&g_seeded, 1, memory_order_release);
}

static void atfork_child(void)
{
    ldt_id_reseed();
}

void ldt_id_seed(void)
{
    int saved = errno;
    seed_now();
    /* Registered once, even if the shim seeds again: every fork child reseeds before anything in it
     * can make an id, so parent and child never walk the same sequence. */
    if (!atomic_exchange(&g_atfork_done, 1))
        pthread_atfork(NULL, NULL, atfork_child);
    errno = saved;
}

void ldt_id_reseed(void)
{
    int saved = errno;
    seed_now();
    errno = saved;
}

static void __attribute__((noinline)) thread_init(void)
{
    if (!atomic_load_explicit(&g_seeded, memory_order_acquire))
        ldt_id_seed();
    t_thread = atomic_fetch_add_explicit(&g_thread_seq, 1, memory_order_relaxed) + 1;
}

/* SplitMix64's output function: a bijection on 64 bits with full avalanche. */
static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The thread's next position in its own SplitMix64 stream: the counter times the golden gamma,
 * offset by the thread's identity (an odd multiple, so two threads' streams start far apart). The
 * process seed is added by the callers, and a fork child reseeds, so parent and child never walk
 * the same sequence. The counter step is an atomic add on a thread-local: a signal handler that
 * makes an id in the middle of ours still gets a different count. */
static inline uint64_t next_input(void)
{
    if (LDT_UNLIKELY(t_thread == 0))
        thread_init();
    uint64_t ctr = __atomic_add_fetch(&t_counter, 1, __ATOMIC_RELAXED);
    return ctr * 0x9E3779B97F4A7C15ull + t_thread * 0xD1B54A32D192ED03ull;
}

static void id_again(uint8_t *out, int len);

void ldt_id_trace(uint8_t out[16])
{
    uint64_t v = next_input();
    uint64_t hi = mix64(v + __atomic_load_n(&g_seed[1], __ATOMIC_RELAXED));
    uint64_t lo = mix64(v ^ __atomic_load_n(&g_seed[0], __ATOMIC_RELAXED));
    if (LDT_UNLIKELY((hi | lo) == 0)) {
        id_again(out, 16); /* all zero is invalid: the next count */
        return;
    }
    /* Big-endian order, so the trace id's right-most 7 bytes (the W3C random part and what the
     * ratio sampler reads) come from the well-mixed low word. */
    hi = __builtin_bswap64(hi);
    lo = __builtin_bswap64(lo);
    memcpy(out, &hi, 8);
    memcpy(out + 8, &lo, 8);
}

void ldt_id_span(uint8_t out[8])
{
    uint64_t h = mix64(next_input() + __atomic_load_n(&g_seed[0], __ATOMIC_RELAXED));
    if (LDT_UNLIKELY(h == 0)) {
        id_again(out, 8);
        return;
    }
    memcpy(out, &h, sizeof(h));
}

void ldt_id_trace_span(uint8_t trace[16], uint8_t span[8])
{
    /* Two counts taken at once: the trace id's, then the span id's (one golden gamma on). */
    if (LDT_UNLIKELY(t_thread == 0))
        thread_init();
    uint64_t ctr = __atomic_add_fetch(&t_counter, 2, __ATOMIC_RELAXED) - 1;
    uint64_t v = ctr * 0x9E3779B97F4A7C15ull + t_thread * 0xD1B54A32D192ED03ull;
    uint64_t s0 = __atomic_load_n(&g_seed[0], __ATOMIC_RELAXED);
    uint64_t hi = mix64(v + __atomic_load_n(&g_seed[1], __ATOMIC_RELAXED));
    uint64_t lo = mix64(v ^ s0);
    uint64_t h = mix64(v + 0x9E3779B97F4A7C15ull + s0);
    if (LDT_UNLIKELY((hi | lo) == 0 || h == 0)) {
        id_again(trace, 16); /* all zero is invalid: the next counts */
        id_again(span, 8);
        return;
    }
    hi = __builtin_bswap64(hi);
    lo = __builtin_bswap64(lo);
    memcpy(trace, &hi, 8);
    memcpy(trace + 8, &lo, 8);
    memcpy(span, &h, 8);
}

/* Out of line, so the common path keeps no loop (and no constants pinned in saved registers). */
static __attribute__((noinline, cold)) void id_again(uint8_t *out, int len)
{
    if (len == 16)
        ldt_id_trace(out);
    else
        ldt_id_span(out);
}
