/* log.c - async-signal-safe diagnostics: a tiny formatter, one write(2) per line to LDTRACE_LOG. */
#include "common/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LOG_LINE_MAX 1024
#define LOG_FD_MIN 100

/* -1: logging off. Raw syscalls throughout, so the shim's own write/close hooks never see our fd
 * and no libc lock is involved (signal handlers may log). */
static atomic_int g_log_fd = -1;

/* ---- formatter ---- */

struct sink {
    char *buf;
    size_t cap; /* including room for the NUL */
    size_t len;
};

static void put_c(struct sink *s, char c)
{
    if (s->len + 1 < s->cap)
        s->buf[s->len++] = c;
}

static void put_s(struct sink *s, const char *str)
{
    if (str == NULL)
        str = "(null)";
    while (*str)
        put_c(s, *str++);
}

static void put_u(struct sink *s, unsigned long long v, unsigned base)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n > 0)
        put_c(s, tmp[--n]);
}

static void put_d(struct sink *s, long long v)
{
    if (v < 0) {
        put_c(s, '-');
        put_u(s, 0 - (unsigned long long)v, 10);
    } else {
        put_u(s, (unsigned long long)v, 10);
    }
}

enum len_mod { LM_INT, LM_LONG, LM_LLONG, LM_SIZE };

/* One conversion after '%' and its length modifier. Returns 0 when c is not supported. */
static int convert(struct sink *s, char c, enum len_mod lm, va_list *ap)
{
    if (c == 'd' || c == 'i') {
        long long v = lm == LM_INT    ? va_arg(*ap, int)
                      : lm == LM_LONG ? va_arg(*ap, long)
                      : lm == LM_SIZE ? va_arg(*ap, ssize_t)
                                      : va_arg(*ap, long long);
        put_d(s, v);
    } else if (c == 'u' || c == 'x') {
        unsigned long long v = lm == LM_INT    ? va_arg(*ap, unsigned)
                               : lm == LM_LONG ? va_arg(*ap, unsigned long)
                               : lm == LM_SIZE ? va_arg(*ap, size_t)
                                               : va_arg(*ap, unsigned long long);
        put_u(s, v, c == 'x' ? 16 : 10);
    } else if (c == 's' && lm == LM_INT) {
        put_s(s, va_arg(*ap, const char *));
    } else if (c == 'p' && lm == LM_INT) {
        put_s(s, "0x");
        put_u(s, (uintptr_t)va_arg(*ap, void *), 16);
    } else if (c == 'c' && lm == LM_INT) {
        put_c(s, (char)va_arg(*ap, int));
    } else {
        return 0;
    }
    return 1;
}

/* The subset: %s %d %i %u %x %c %p %% with the length modifiers l, ll and z. An unsupported
 * conversion is copied out literally, and stops the formatting (its argument type is unknown). */
static void vfmt(struct sink *s, const char *fmt, va_list *ap)
{
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put_c(s, *p);
            continue;
        }
        const char *start = p++;
        enum len_mod lm = LM_INT;
        if (*p == 'z') {
            lm = LM_SIZE;
            p++;
        } else if (*p == 'l') {
            lm = p[1] == 'l' ? LM_LLONG : LM_LONG;
            p += lm == LM_LLONG ? 2 : 1;
        }
        if (*p == '%' && lm == LM_INT) {
            put_c(s, '%');
        } else if (*p == '\0' || !convert(s, *p, lm, ap)) {
            put_s(s, start);
            return;
        }
    }
}

size_t ldt_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    struct sink s = {buf, cap, 0};
    va_list ap;
    va_start(ap, fmt);
    vfmt(&s, fmt, &ap);
    va_end(ap);
    if (cap > 0)
        buf[s.len] = '\0';
    return s.len;
}

/* ---- the log file ---- */

/* Opens the file and moves it to a descriptor >= LOG_FD_MIN when the limit allows: apps dup2()
 * onto low numbers (3, 4, ...) they believe free, and our lines must never land in their files. */
static int open_log(const char *path)
{
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                          0600);
    if (fd < 0 || fd >= LOG_FD_MIN)
        return fd < 0 ? -1 : fd;
    int high = (int)syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, LOG_FD_MIN);
    if (high < 0)
        return fd;
    syscall(SYS_close, fd);
    return high;
}

void ldt_log_open(const char *path)
{
    int saved = errno;
    int fd = (path != NULL && path[0] != '\0') ? open_log(path) : -1;
    int old = atomic_load(&g_log_fd);
    /* Reopening replaces the file under the same number (dup3 is atomic), so a thread logging at
     * this moment writes to the old or the new file, never to a recycled descriptor. */
    if (fd >= 0 && old >= 0 && syscall(SYS_dup3, fd, old, O_CLOEXEC) == old) {
        syscall(SYS_close, fd);
    } else {
        old = atomic_exchange(&g_log_fd, fd);
        if (old >= 0)
            syscall(SYS_close, old);
    }
    errno = saved;
}

int ldt_log_fd(void)
{
    return atomic_load_explicit(&g_log_fd, memory_order_relaxed);
}

void ldt_log(const char *fmt, ...)
{
    int fd = atomic_load_explicit(&g_log_fd, memory_order_relaxed);
    if (fd < 0)
        return;
    int saved = errno;
    char line[LOG_LINE_MAX];
    /* Leave one byte for the newline: a truncated line still ends the record. */
    struct sink s = {line, sizeof(line) - 1, 0};
    put_s(&s, "ldtrace[");
    put_d(&s, (long long)syscall(SYS_getpid));
    put_s(&s, "]: ");
    va_list ap;
    va_start(ap, fmt);
    vfmt(&s, fmt, &ap);
    va_end(ap);
    line[s.len++] = '\n';
    /* One write per line: with O_APPEND, lines from several threads and processes never mix. */
    syscall(SYS_write, fd, line, s.len);
    errno = saved;
}
