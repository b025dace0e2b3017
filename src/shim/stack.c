/* stack.c - the app's call stack at an error (libunwind), as LDT_REC_STACK parts before the span.
 *
 * Only on error paths: a server writing a 5xx status line, a refused or timed-out connect. The
 * stack is captured where the app is (inside its write or connect), formatted at once into a
 * per-thread buffer, and pushed right before the span record when that span ends on the same
 * thread; a span that ends on another thread goes without its stack (LDT_SPAN_F_STACK cleared).
 */
#define UNW_LOCAL_ONLY
#include <dlfcn.h>
#include <libunwind.h>
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

/* One frame: "module+0xoffset symbol+0xoff\n" (symbol when libunwind or dladdr knows it). */
static void frame(unw_cursor_t *cur, uint64_t ip, const Dl_info *di, char *out, size_t cap,
                  size_t *n)
{
    const char *mod = di->dli_fname ? strrchr(di->dli_fname, '/') : NULL;
    mod = mod ? mod + 1 : di->dli_fname ? di->dli_fname : "?";
    put(out, cap, n, mod, strlen(mod));
    put(out, cap, n, "+", 1);
    put_hex(out, cap, n, ip - (uint64_t)(uintptr_t)di->dli_fbase);
    char sym[128];
    unw_word_t off = 0;
    if (unw_get_proc_name(cur, sym, sizeof sym, &off) == 0) {
        put(out, cap, n, " ", 1);
        put(out, cap, n, sym, strnlen(sym, sizeof sym));
        put(out, cap, n, "+", 1);
        put_hex(out, cap, n, (uint64_t)off);
    }
    put(out, cap, n, "\n", 1);
}

size_t ldt__stack_text(char *out, size_t cap)
{
    unw_context_t ctx;
    unw_cursor_t cur;
    Dl_info self, di;
    size_t n = 0;
    if (unw_getcontext(&ctx) != 0 || unw_init_local(&cur, &ctx) != 0)
        return 0;
    dladdr((void *)ldt__stack_text, &self);
    for (int depth = 0; depth < MAX_FRAMES && unw_step(&cur) > 0 && n < cap;) {
        unw_word_t ip = 0;
        unw_get_reg(&cur, UNW_REG_IP, &ip);
        if (!ip || !dladdr((void *)(uintptr_t)(ip - 1), &di))
            continue;
        if (di.dli_fbase == self.dli_fbase)
            continue; /* our own frames are not the app's story */
        frame(&cur, (uint64_t)ip, &di, out, cap, &n);
        depth++;
    }
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
