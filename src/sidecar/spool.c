/* spool.c - the OTLP/HTTP exporter's on-disk queue while the collector is down: one file per line
 * ("<seq as 16 hex>-<spans>.json"), sent oldest first, capped in bytes (the oldest dropped and
 * counted past the cap), and picked up again by the next ldtraced after a restart. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sidecar/sidecar.h"

struct item {
    uint64_t seq;
    uint64_t size;
    uint32_t nspans;
};

struct ldt__spool {
    int dfd;
    struct item *q; /* q[head .. head+n) are queued, oldest first */
    size_t head, n, cap;
    uint64_t bytes, max, next_seq;
};

static void item_name(char *out, size_t cap, const struct item *it)
{
    snprintf(out, cap, "%016" PRIx64 "-%" PRIu32 ".json", it->seq, it->nspans);
}

static int q_append(struct ldt__spool *s, const struct item *it)
{
    if (s->head + s->n == s->cap) {
        if (s->head > 0) { /* slide the live part to the front before growing */
            memmove(s->q, s->q + s->head, s->n * sizeof(*s->q));
            s->head = 0;
        }
        if (s->n == s->cap) {
            size_t c = s->cap ? 2 * s->cap : 64;
            struct item *p = realloc(s->q, c * sizeof(*p));
            if (!p)
                return -ENOMEM;
            s->q = p;
            s->cap = c;
        }
    }
    s->q[s->head + s->n++] = *it;
    s->bytes += it->size;
    return 0;
}

static int by_seq(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Queue the lines a previous ldtraced left; delete its unfinished temporary files. */
static int resume(struct ldt__spool *s)
{
    DIR *dir = fdopendir(dup(s->dfd));
    if (!dir)
        return -errno;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(dir))) {
        struct item it = {0};
        struct stat st;
        char tail[8];
        if (strncmp(de->d_name, ".tmp-", 5) == 0) {
            unlinkat(s->dfd, de->d_name, 0);
            continue;
        }
        if (sscanf(de->d_name, "%16" SCNx64 "-%" SCNu32 "%7s", &it.seq, &it.nspans, tail) != 3 ||
            strcmp(tail, ".json") != 0 || fstatat(s->dfd, de->d_name, &st, 0) < 0 ||
            !S_ISREG(st.st_mode))
            continue;
        it.size = (uint64_t)st.st_size;
        rc = q_append(s, &it);
        if (it.seq >= s->next_seq)
            s->next_seq = it.seq + 1;
    }
    closedir(dir);
    if (s->n) /* an empty queue has no array yet: qsort's pointer must not be NULL */
        qsort(s->q + s->head, s->n, sizeof(*s->q), by_seq);
    return rc;
}

int ldt__spool_open(const char *dir, uint64_t max, struct ldt__spool **out)
{
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return -errno;
    struct ldt__spool *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->max = max;
    s->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = s->dfd < 0 ? -errno : resume(s);
    if (rc < 0) {
        ldt__spool_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void drop_oldest(struct ldt__spool *s, uint64_t *dropped)
{
    *dropped += s->q[s->head].nspans;
    ldt__spool_pop(s);
}

static int write_file(int dfd, const char *name, const char *line, size_t len)
{
    int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    int rc = 0;
    while (len && rc == 0) {
        ssize_t n = write(fd, line, len);
        if (n < 0 && errno != EINTR)
            rc = -errno;
        else if (n > 0) {
            line += n;
            len -= (size_t)n;
        }
    }
    close(fd);
    return rc;
}

int ldt__spool_push(struct ldt__spool *s, const char *line, size_t len, uint32_t nspans,
                    uint64_t *dropped)
{
    if (len > s->max) {
        *dropped += nspans; /* bigger than the whole spool: it can never be kept */
        return 0;
    }
    while (s->n && s->bytes + len > s->max)
        drop_oldest(s, dropped);
    struct item it = {.seq = s->next_seq, .size = len, .nspans = nspans};
    char tmp[80], name[64];
    item_name(name, sizeof(name), &it);
    snprintf(tmp, sizeof(tmp), ".tmp-%s", name);
    int rc = write_file(s->dfd, tmp, line, len);
    if (rc == 0 && renameat(s->dfd, tmp, s->dfd, name) < 0)
        rc = -errno;
    if (rc == 0 && (rc = q_append(s, &it)) < 0)
        unlinkat(s->dfd, name, 0);
    if (rc < 0) {
        unlinkat(s->dfd, tmp, 0);
        return rc;
    }
    s->next_seq++;
    return 0;
}

int ldt__spool_peek(struct ldt__spool *s, struct ldt__buf *b, uint32_t *nspans)
{
    if (!s->n)
        return 0;
    const struct item *it = &s->q[s->head];
    char name[64];
    item_name(name, sizeof(name), it);
    int fd = openat(s->dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    int rc = 0;
    b->len = 0;
    if (ldt__buf_reserve(b, it->size + 1) < 0)
        rc = -ENOMEM;
    while (rc == 0 && b->len < it->size) {
        ssize_t n = read(fd, b->p + b->len, it->size - b->len);
        if (n < 0 && errno != EINTR)
            rc = -errno;
        else if (n == 0)
            rc = -EIO; /* shorter than when queued */
        else if (n > 0)
            b->len += (size_t)n;
    }
    close(fd);
    *nspans = it->nspans;
    return rc < 0 ? rc : 1;
}

void ldt__spool_pop(struct ldt__spool *s)
{
    if (!s->n)
        return;
    const struct item *it = &s->q[s->head];
    char name[64];
    item_name(name, sizeof(name), it);
    unlinkat(s->dfd, name, 0);
    s->bytes -= it->size;
    s->head++;
    s->n--;
}

size_t ldt__spool_lines(const struct ldt__spool *s)
{
    return s ? s->n : 0;
}

uint64_t ldt__spool_bytes(const struct ldt__spool *s)
{
    return s ? s->bytes : 0;
}

void ldt__spool_close(struct ldt__spool *s)
{
    if (!s)
        return;
    if (s->dfd >= 0)
        close(s->dfd);
    free(s->q);
    free(s);
}
