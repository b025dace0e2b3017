/* shm.c - shared-memory segment files: created by the shim, validated and mapped by ldtraced. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/common.h"
#include "ring/ring_int.h"

/* ------------------------------------------------------------------------------------------------
 * Small allocation-free helpers (the producer side runs inside the traced app).
 * ---------------------------------------------------------------------------------------------- */

/* Append the decimal digits of v at out; returns the pointer past them. */
static char *put_dec(char *out, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *out++ = tmp[--n];
    return out;
}

/* Append v as 16 lower-case hex digits. */
static char *put_hex64(char *out, uint64_t v)
{
    for (int i = 15; i >= 0; i--)
        *out++ = "0123456789abcdef"[(v >> (i * 4)) & 0xf];
    return out;
}

/* Copy a possibly NULL string into a field of cap bytes, truncated, always NUL-terminated. */
static void put_str(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/* 8 random bytes from getrandom(); if that fails, a mix of clocks and addresses (the name is also
 * protected by O_EXCL, so the nonce needs to be unlikely to repeat, not secret). */
static uint64_t make_nonce(void)
{
    uint64_t v = 0;
    if (syscall(SYS_getrandom, &v, sizeof(v), 1 /* GRND_NONBLOCK */) == (long)sizeof(v) && v)
        return v;
    v = ldt_clock_mono_ns() * UINT64_C(0x9e3779b97f4a7c15);
    v ^= ldt_clock_wall_ns() ^ (uint64_t)(uintptr_t)&v ^ ((uint64_t)getpid() << 32);
    return v ? v : 1;
}

uint64_t ldt_proc_start_ticks(pid_t pid)
{
    char path[48] = "/proc/", buf[1024];
    char *e = put_dec(path + 6, (uint64_t)pid);
    memcpy(e, "/stat", 6);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    /* The command name (field 2) may hold spaces and ')': fields resume after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    for (int field = 2; field < 22; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return 0;
    }
    uint64_t v = 0;
    for (p++; *p >= '0' && *p <= '9'; p++)
        v = v * 10 + (uint64_t)(*p - '0');
    return v;
}

/* ------------------------------------------------------------------------------------------------
 * Producer: create and publish a segment.
 * ---------------------------------------------------------------------------------------------- */

/* Create `dir` (0700) if missing and open it: it must be our directory, closed to group/other. */
static int open_dir(const char *dir)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    struct stat st;
    if (fstat(dfd, &st) < 0) {
        int err = -errno;
        close(dfd);
        return err;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077)) {
        close(dfd);
        return -EPERM;
    }
    return dfd;
}

/* Write "<pid>.<nonce><suffix>" into name[64]. */
static void seg_name(char name[64], uint64_t nonce, const char *suffix)
{
    char *e = put_dec(name, (uint64_t)getpid());
    *e++ = '.';
    e = put_hex64(e, nonce);
    memcpy(e, suffix, strlen(suffix) + 1);
}

/* Create "<pid>.<nonce>.new" in dfd, retrying on a (very unlikely) name clash. Returns the fd. The
 * file gets its ".ring" name only once its header is published (publish_file), so a reader that
 * lists "*.ring" never meets a half-made segment. */
static int create_file(int dfd, uint64_t *nonce, char name[64])
{
    for (int tries = 0; tries < 8; tries++) {
        *nonce = make_nonce();
        seg_name(name, *nonce, ".new");
        int fd = openat(dfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd >= 0 ? fd : -errno;
    }
    return -EEXIST;
}

/* Give the published file its final name: link (fails rather than replace an existing file), then
 * drop the temporary name. A file system without hard links gets a plain rename. */
static int publish_file(int dfd, const char *tmp, uint64_t nonce)
{
    char name[64];
    seg_name(name, nonce, ".ring");
    int err = linkat(dfd, tmp, dfd, name, 0) < 0 ? -errno : 0;
    if (err < 0 && err != -EEXIST)
        err = renameat(dfd, tmp, dfd, name) < 0 ? -errno : 0;
    unlinkat(dfd, tmp, 0); /* fails harmlessly after a rename */
    return err;
}

/* Normalise the requested geometry: defaults, power of two, limits. */
static int geometry(const struct ldt_seg_params *p, uint32_t *nrings, uint32_t *cap)
{
    uint64_t n = p && p->nrings ? p->nrings : LDT_SEG_DEFAULT_RINGS;
    uint64_t c = p && p->ring_cap ? p->ring_cap : LDT_SEG_DEFAULT_SLOTS;
    if (n < 2 || n > LDT_SEG_MAX_RINGS || c > LDT_SEG_MAX_SLOTS)
        return -EINVAL;
    uint64_t pow = 2;
    while (pow < c)
        pow <<= 1;
    *nrings = (uint32_t)n;
    *cap = (uint32_t)pow;
    return 0;
}

/* Fill all but the magic. The mapping is fresh zeroes, so counters and cursors start at 0. */
static void fill_hdr(struct ldt_seg_hdr *h, const struct ldt_seg_params *p, uint32_t nrings,
                     uint32_t cap, uint64_t nonce)
{
    h->version = LDT_SEG_VERSION;
    h->hdr_size = LDT_SEG_HDR_SIZE;
    h->seg_size = ldt__seg_size(nrings, cap);
    h->nrings = nrings;
    h->ring_cap = cap;
    h->slot_size = LDT_SLOT_SIZE;
    h->ring_stride = (uint32_t)ldt__ring_stride(cap);
    h->pid = (uint32_t)getpid();
    h->uid = (uint32_t)geteuid();
    h->start_wall_ns = ldt_clock_wall_ns();
    h->proc_start_ticks = ldt_proc_start_ticks(getpid());
    h->nonce = nonce;
    if (!p)
        return;
    put_str(h->service_name, sizeof(h->service_name), p->service_name);
    put_str(h->exe_name, sizeof(h->exe_name), p->exe_name);
    put_str(h->host_name, sizeof(h->host_name), p->host_name);
    if (p->command_args) {
        size_t n = p->args_len < LDT_SEG_ARGS_MAX ? p->args_len : LDT_SEG_ARGS_MAX;
        memcpy(h->command_args, p->command_args, n);
        h->args_len = (uint32_t)n;
    }
    put_str(h->resource, sizeof(h->resource), p->resource);
    h->resource_len = (uint32_t)strlen(h->resource);
}

/* Size and map the new file; on success the caller owns the mapping. */
static int size_and_map(int fd, uint64_t size, void **map)
{
    /* fchmod: the umask may have narrowed openat's mode; the reader wants exactly 0600. */
    if (fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)size) < 0)
        return -errno;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
        return -errno;
    *map = m;
    return 0;
}

/* Size, map, fill and publish the new file; returns 0 with the mapping in *map. */
static int build_file(int fd, const struct ldt_seg_params *p, uint32_t nrings, uint32_t cap,
                      uint64_t nonce, void **map)
{
    int err = size_and_map(fd, ldt__seg_size(nrings, cap), map);
    if (err < 0)
        return err;
    fill_hdr(*map, p, nrings, cap, nonce);
    /* Publish: pairs with the acquire fence after ldt_seg_open reads the magic, so a reader that
     * sees the magic sees the whole header. */
    LDT__STORE(&((struct ldt_seg_hdr *)*map)->magic, LDT_SEG_MAGIC, RELEASE);
    return 0;
}

int ldt_seg_create(const char *dir, const struct ldt_seg_params *p, struct ldt_seg *out)
{
    uint32_t nrings, cap;
    uint64_t nonce;
    char tmp[64];
    void *map = NULL;
    out->hdr = NULL;
    out->size = 0;
    int err = geometry(p, &nrings, &cap);
    if (err < 0)
        return err;
    int dfd = open_dir(dir);
    if (dfd < 0)
        return dfd;
    int fd = create_file(dfd, &nonce, tmp);
    err = fd < 0 ? fd : build_file(fd, p, nrings, cap, nonce, &map);
    if (fd >= 0)
        close(fd);
    if (err == 0)
        err = publish_file(dfd, tmp, nonce);
    else if (fd >= 0)
        unlinkat(dfd, tmp, 0);
    close(dfd);
    if (err < 0) {
        if (map)
            munmap(map, ldt__seg_size(nrings, cap));
        return err;
    }
    out->hdr = map;
    out->size = ldt__seg_size(nrings, cap);
    return 0;
}

void ldt_seg_mark_exited(struct ldt_seg *s)
{
    if (s && s->hdr)
        __atomic_fetch_or(&s->hdr->flags, LDT_SEG_F_EXITED, __ATOMIC_RELEASE);
}

void ldt_seg_unmap(struct ldt_seg *s)
{
    if (!s || !s->hdr)
        return;
    munmap(s->hdr, s->size);
    s->hdr = NULL;
    s->size = 0;
}

/* ------------------------------------------------------------------------------------------------
 * Reader: open and validate a segment somebody else wrote. Nothing in the file is trusted.
 * ---------------------------------------------------------------------------------------------- */

/* Write a reason into why[whylen] and return err. */
static int fail(char *why, size_t whylen, int err, const char *fmt, ...)
{
    if (why && whylen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, whylen, fmt, ap);
        va_end(ap);
    }
    return err;
}

/* The file itself: regular, ours, exactly 0600. */
static int check_file(const struct stat *st, char *why, size_t whylen)
{
    if (!S_ISREG(st->st_mode))
        return fail(why, whylen, -EINVAL, "not a regular file");
    if (st->st_uid != geteuid())
        return fail(why, whylen, -EPERM, "owned by uid %u, not %u", (unsigned)st->st_uid,
                    (unsigned)geteuid());
    if ((st->st_mode & 07777) != 0600)
        return fail(why, whylen, -EPERM, "mode %04o, not 0600", (unsigned)(st->st_mode & 07777));
    if ((uint64_t)st->st_size < LDT_SEG_HDR_SIZE)
        return fail(why, whylen, -EAGAIN, "size %lld: not published yet", (long long)st->st_size);
    return 0;
}

static int has_nul(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

/* The header's strings and lengths (h is a private copy, so it cannot change under us). */
static int check_strings(const struct ldt_seg_hdr *h, char *why, size_t whylen)
{
    if (!has_nul(h->service_name, sizeof(h->service_name)) ||
        !has_nul(h->exe_name, sizeof(h->exe_name)) || !has_nul(h->host_name, sizeof(h->host_name)))
        return fail(why, whylen, -EINVAL, "unterminated name string");
    if (h->args_len > LDT_SEG_ARGS_MAX)
        return fail(why, whylen, -EINVAL, "args_len %u out of range", h->args_len);
    if (h->resource_len >= LDT_SEG_RESOURCE_MAX || h->resource[h->resource_len] != '\0')
        return fail(why, whylen, -EINVAL, "resource_len %u out of range", h->resource_len);
    return 0;
}

/* The header's identity and geometry against the limits and the file size. */
static int check_hdr(const struct ldt_seg_hdr *h, uint64_t fsize, char *why, size_t whylen)
{
    if (h->magic == 0)
        return fail(why, whylen, -EAGAIN, "header not published yet");
    if (h->magic != LDT_SEG_MAGIC)
        return fail(why, whylen, -EINVAL, "bad magic");
    if (h->version != LDT_SEG_VERSION || h->hdr_size != LDT_SEG_HDR_SIZE ||
        h->slot_size != LDT_SLOT_SIZE)
        return fail(why, whylen, -EINVAL, "version %u / header %u / slot %u not supported",
                    h->version, h->hdr_size, h->slot_size);
    if (h->nrings < 2 || h->nrings > LDT_SEG_MAX_RINGS)
        return fail(why, whylen, -EINVAL, "nrings %u out of range", h->nrings);
    if (h->ring_cap < 2 || h->ring_cap > LDT_SEG_MAX_SLOTS || (h->ring_cap & (h->ring_cap - 1)))
        return fail(why, whylen, -EINVAL, "ring_cap %u not a power of two in range", h->ring_cap);
    if (h->ring_stride != ldt__ring_stride(h->ring_cap))
        return fail(why, whylen, -EINVAL, "ring_stride %u inconsistent", h->ring_stride);
    uint64_t want = ldt__seg_size(h->nrings, h->ring_cap);
    if (h->seg_size != want || fsize != want)
        return fail(why, whylen, -EINVAL, "seg_size %llu, file %llu, computed %llu",
                    (unsigned long long)h->seg_size, (unsigned long long)fsize,
                    (unsigned long long)want);
    if (h->pid == 0 || h->pid > INT32_MAX)
        return fail(why, whylen, -EINVAL, "pid %u out of range", h->pid);
    return check_strings(h, why, whylen);
}

/* Read and validate a private copy of the header, then map the file. */
static int validate_and_map(struct ldt_seg_reader *r, const struct stat *st, char *why,
                            size_t whylen)
{
    static __thread struct ldt_seg_hdr h; /* 4 KiB: kept off small thread stacks */
    uint64_t magic = 0;
    /* The magic first, on its own: once it is there, the rest of the header is complete and fixed.
     * The fence pairs with the release store of magic in ldt_seg_create. */
    if (pread(r->fd, &magic, sizeof(magic), 0) != (ssize_t)sizeof(magic) || magic == 0)
        return fail(why, whylen, -EAGAIN, "header not published yet");
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (pread(r->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
        return fail(why, whylen, -EAGAIN, "short header read");
    int err = check_hdr(&h, (uint64_t)st->st_size, why, whylen);
    if (err < 0)
        return err;
    void *m = mmap(NULL, h.seg_size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (m == MAP_FAILED)
        return fail(why, whylen, -errno, "mmap: %s", strerror(errno));
    r->base = m;
    r->size = h.seg_size;
    r->hdr = m;
    r->nrings = h.nrings;
    r->ring_cap = h.ring_cap;
    r->ring_stride = h.ring_stride;
    r->pid = h.pid;
    r->proc_start_ticks = h.proc_start_ticks;
    return 0;
}

int ldt_seg_open(const char *path, struct ldt_seg_reader *r, char *why, size_t whylen)
{
    struct stat st;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (why && whylen)
        why[0] = '\0';
    /* O_NONBLOCK: a FIFO planted in place of the file must not block the sidecar. */
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fail(why, whylen, -errno, "open: %s", strerror(errno));
    r->fd = fd;
    int err = fstat(fd, &st) < 0 ? fail(why, whylen, -errno, "fstat: %s", strerror(errno))
                                 : check_file(&st, why, whylen);
    if (err == 0)
        err = validate_and_map(r, &st, why, whylen);
    if (err < 0) {
        close(fd);
        r->fd = -1;
        return err;
    }
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    put_str(r->path, sizeof(r->path), path);
    return 0;
}

int ldt_seg_alive(const struct ldt_seg_reader *r)
{
    if (!r->hdr)
        return 0;
    if (LDT__LOAD(&r->hdr->flags, ACQUIRE) & LDT_SEG_F_EXITED)
        return 0;
    if (kill((pid_t)r->pid, 0) < 0 && errno == ESRCH)
        return 0;
    /* A reused pid has other start ticks. 0 means /proc could not tell: trust kill(). */
    uint64_t ticks = ldt_proc_start_ticks((pid_t)r->pid);
    if (ticks == 0 && r->proc_start_ticks == 0)
        return 1;
    return ticks == r->proc_start_ticks;
}

uint64_t ldt_seg_dropped(const struct ldt_seg_reader *r)
{
    uint64_t sum = 0;
    for (unsigned i = 0; r->base && i < r->nrings; i++)
        sum += LDT__LOAD(&ldt__ring_at(r->base, r->ring_stride, i)->dropped, RELAXED);
    return sum;
}

void ldt_seg_close(struct ldt_seg_reader *r)
{
    if (r->base)
        munmap(r->base, r->size);
    if (r->fd >= 0)
        close(r->fd);
    r->base = NULL;
    r->hdr = NULL;
    r->fd = -1;
}
