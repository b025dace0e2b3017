/* preload.c - libldtrace.so's constructor, fork handlers and exit hook: the shim's life cycle.
 *
 * Until the constructor has run every hook passes straight through (ldt__mode INIT); with
 * OTEL_SDK_DISABLED=true they stay that way for good.
 */
#include <errno.h>
#include <pthread.h>

#include "shim/shim.h"

static void atfork_parent(void)
{
    /* Sockets open now are shared with the child: see ldt__sniff_close. */
    atomic_fetch_add_explicit(&ldt__fork_epoch, 1, memory_order_relaxed);
}

static void atfork_child(void)
{
    /* Both sides move on to a new epoch: see ldt__sniff_close. */
    atomic_fetch_add_explicit(&ldt__fork_epoch, 1, memory_order_relaxed);
    ldt__conn_atfork_child();
    ldt__span_atfork_child();
}

__attribute__((constructor)) static void ldt_preload_init(void)
{
    int saved = errno;
    ldt__real_resolve();
    ldt_config_load(&ldt__cfg);
    if (ldt__cfg.disabled) {
        ldt__mode = LDT__MODE_OFF;
        errno = saved;
        return;
    }
    ldt_log_open(ldt__cfg.log_path);
    ldt_id_seed();
    ldt__span_init();
    pthread_atfork(NULL, atfork_parent, atfork_child);
    __atomic_store_n(&ldt__mode, LDT__MODE_ON, __ATOMIC_RELEASE);
    errno = saved;
}

__attribute__((destructor)) static void ldt_preload_fini(void)
{
    int saved = errno;
    if (ldt__mode == LDT__MODE_ON)
        ldt__span_atexit();
    errno = saved;
}
