/* stack.c - the app's call stack at an error (libunwind), as LDT_REC_STACK parts before the span.
 *
 * Only on error paths: a server writing a 5xx status line, a refused or timed-out connect. The
 * stack is captured where the app is (inside its write or connect), formatted at once into a
 * per-thread buffer, and pushed right before the span record when that span ends on the same
 * thread; a span that ends on another thread goes without its stack (LDT_SPAN_F_STACK cleared).
 * A capture costs ~8 us (unw_backtrace, cached module ranges, dladdr for the first 4 frames): it
 * runs inside the app's write. Names of static functions (not in the dynamic symbol table) are not
 * resolved; module+offset always is, and symbolises offline against the binary.
 */
#define UNW_LOCAL_ONLY
#include <dlfcn.h>
#include <libunwind.h>
#include <link.h>
#include <stdatomic.h>
#include <string.h>

#include "shim/shim.h"

#define MAX_FRAMES 32
#define TEXT_MAX (LDT_STACK_TEXT_MAX * LDT_STACK_MAX_PARTS)

static __thread char tbuf[TEXT_MAX] __attribute__((tls_model("initial-exec")));
static __thread uint16_t tlen __attribute__((tls_model("initial-exec")));
static __thread uint8_t tspan[8] __attribute__((tls_model("initial-exec")));

static void put(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
    if (*n + len > cap)
        len = cap - *n;
    memcpy(out + *n, s, len);
    *n += len;
}

static void put_hex(char *out, size_t cap, size_t *n, uint64_t v)
{
    char b[18];
    int i = 17;
    do {
        b[i--] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v && i > 1);
    b[i--] = 'x';
    b[i] = '0';
    put(out, cap, n, b + i, (size_t)(18 - i));
}

/* ---- modules: address ranges of the loaded objects, cached -----------------------------------
 * dladdr costs tens of thousands of instructions and unw_get_proc_name reads DWARF each time (the
 * old capture took ~0.5 ms); a table of PT_LOAD ranges, filled by one dl_iterate_phdr walk and
 * walked again only when an address falls outside every known range (a dlopen since), turns a
 * frame into "module+offset" in a few comparisons. Symbol names (dladdr: exported symbols only)
 * are looked up for the first SYM_FRAMES app frames only, so the cost stays bounded. */

#define MOD_MAX 256
#define SYM_FRAMES 4

struct mod {
    uintptr_t lo, hi, base;
    const char *name; /* dlpi_name: owned by the loader, valid while the object is loaded */
};

static struct mod mods[MOD_MAX];
static int nmods;
static atomic_flag mods_lock = ATOMIC_FLAG_INIT;

static int add_mod(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    for (int i = 0; i < info->dlpi_phnum && nmods < MOD_MAX; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        struct mod *m = &mods[nmods++];
        m->lo = info->dlpi_addr + ph->p_vaddr;
        m->hi = m->lo + ph->p_memsz;
        m->base = info->dlpi_addr;
        m->name = info->dlpi_name;
    }
    return 0;
}

static const struct mod *find_mod(uintptr_t ip)
{
    for (int i = 0; i < nmods; i++)
        if (ip >= mods[i].lo && ip < mods[i].hi)
            return &mods[i];
    return NULL;
}

/* The module holding ip, walking the loaded objects again once when it is not known yet. Caller
 * holds mods_lock. */
static const struct mod *lookup_mod(uintptr_t ip, int *walked)
{
    const struct mod *m = find_mod(ip);
    if (m || *walked)
        return m;
    *walked = 1;
    nmods = 0;
    dl_iterate_phdr(add_mod, NULL);
    return find_mod(ip);
}

static const char *mod_name(const struct mod *m)
{
    const char *n = m->name && *m->name ? m->name : NULL;
    if (!n)
        return ldt__cfg.exe_name[0] ? ldt__cfg.exe_name : "?"; /* the main program */
    const char *b = strrchr(n, '/');
    return b ? b + 1 : n;
}

/* One frame: "module+0xoffset symbol+0xoff\n" for return address ip (the symbol for the first
 * frames, when dladdr has it). */
static void frame(uintptr_t ip, const struct mod *m, int sym, char *out, size_t cap, size_t *n)
{
    const char *name = mod_name(m);
    put(out, cap, n, name, strlen(name));
    put(out, cap, n, "+", 1);
    put_hex(out, cap, n, (uint64_t)(ip - m->base));
    Dl_info di;
    if (sym && dladdr((void *)(ip - 1), &di) && di.dli_sname && di.dli_saddr) {
        put(out, cap, n, " ", 1);
        put(out, cap, n, di.dli_sname, strnlen(di.dli_sname, 128));
        put(out, cap, n, "+", 1);
        put_hex(out, cap, n, (uint64_t)(ip - (uintptr_t)di.dli_saddr));
    }
    put(out, cap, n, "\n", 1);
}

size_t ldt__stack_text(char *out, size_t cap)
{
    void *ips[MAX_FRAMES + 16];
    int got = unw_backtrace(ips, (int)LDT_ARRAY_LEN(ips));
    size_t n = 0;
    int walked = 0, depth = 0;
    while (atomic_flag_test_and_set_explicit(&mods_lock, memory_order_acquire))
        __builtin_ia32_pause();
    const struct mod *self = lookup_mod((uintptr_t)ldt__stack_text, &walked);
    for (int i = 0; i < got && depth < MAX_FRAMES && n < cap; i++) {
        /* A return address points after the call: ip - 1 is inside the calling instruction. */
        uintptr_t ip = (uintptr_t)ips[i];
        const struct mod *m = ip ? lookup_mod(ip - 1, &walked) : NULL;
        if (!m || (self && m->base == self->base))
            continue; /* our own frames are not the app's story */
        frame(ip, m, depth < SYM_FRAMES, out, cap, &n);
        depth++;
    }
    atomic_flag_clear_explicit(&mods_lock, memory_order_release);
    return n;
}

void ldt__stack_capture(const uint8_t span_id[8])
{
    tlen = (uint16_t)ldt__stack_text(tbuf, sizeof tbuf);
    memcpy(tspan, span_id, 8);
}

void ldt__stack_emit(const uint8_t trace_id[16], const uint8_t span_id[8])
{
    struct ldt_stack_rec r;
    if (!tlen || memcmp(tspan, span_id, 8) != 0)
        return;
    unsigned parts = (tlen + LDT_STACK_TEXT_MAX - 1u) / LDT_STACK_TEXT_MAX;
    for (unsigned i = 0; i < parts; i++) {
        memset(&r, 0, sizeof r);
        r.type = LDT_REC_STACK;
        r.part = (uint8_t)i;
        r.nparts = (uint8_t)parts;
        size_t off = (size_t)i * LDT_STACK_TEXT_MAX;
        r.len = (uint16_t)(tlen - off < LDT_STACK_TEXT_MAX ? tlen - off : LDT_STACK_TEXT_MAX);
        memcpy(r.trace_id, trace_id, 16);
        memcpy(r.span_id, span_id, 8);
        memcpy(r.text, tbuf + off, r.len);
        ldt__emit(&r, sizeof r);
    }
    tlen = 0;
}

int ldt__stack_ready(const uint8_t span_id[8])
{
    return tlen && memcmp(tspan, span_id, 8) == 0;
}
