/* real.c - the table of real libc symbols (dlsym RTLD_NEXT) that every hook passes through to.
 *
 * Each entry starts as a lazy trampoline, so a hook called by another library's constructor before
 * ours ran still reaches libc. A symbol dlsym cannot find, or that resolves to our own hook (a
 * broken link order), becomes a stub failing with ENOSYS: the shim never exits or aborts the host.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdint.h>

#include "shim/shim.h"

/* Stubs for missing symbols: fail like an unsupported call. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define LDT__X(ret, name, params, args) \
    static ret nosys_##name params \
    { \
        errno = ENOSYS; \
        return (ret)-1; \
    }
LDT_REAL_SYMS(LDT__X)
#undef LDT__X
#pragma GCC diagnostic pop

/* Where this library is mapped: a dlsym result inside it is one of our own hooks (a broken link
 * order), which must count as missing or every call would recurse forever. Found once (one dladdr
 * and one walk of the program headers); dladdr per symbol would cost ~50k instructions each. */
static uintptr_t self_lo, self_hi;

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t base = (uintptr_t)arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        lo = a < lo ? a : lo;
        hi = a + ph->p_memsz > hi ? a + ph->p_memsz : hi;
    }
    if (lo > base || base >= hi)
        return 0;
    self_lo = lo;
    self_hi = hi;
    return 1;
}

static int is_ours(void *p)
{
    if (!self_hi) {
        Dl_info self;
        if (dladdr((void *)is_ours, &self))
            dl_iterate_phdr(find_self, (void *)(uintptr_t)is_ours);
    }
    return (uintptr_t)p >= self_lo && (uintptr_t)p < self_hi;
}

static void *resolve_one(const char *name, void *stub)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p || is_ours(p))
        return stub;
    return p;
}

void ldt__real_resolve(void)
{
#define LDT__X(ret, name, params, args) \
    __atomic_store_n(&ldt_real.name, \
                     (ret(*) params)resolve_one(#name, (void *)nosys_##name), \
                     __ATOMIC_RELEASE);
    LDT_REAL_SYMS(LDT__X)
#undef LDT__X
}

/* Lazy trampolines: resolve everything, then make the call through the resolved entry. */
#define LDT__X(ret, name, params, args) \
    static ret lazy_##name params \
    { \
        int saved = errno; \
        ldt__real_resolve(); \
        errno = saved; \
        return ldt_real.name args; \
    }
LDT_REAL_SYMS(LDT__X)
#undef LDT__X

struct ldt_real_syms ldt_real = {
#define LDT__X(ret, name, params, args) .name = lazy_##name,
    LDT_REAL_SYMS(LDT__X)
#undef LDT__X
};
