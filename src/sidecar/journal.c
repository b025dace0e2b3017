/* journal.c - the write-ahead journal that makes the file exporter exactly-once across a crash of
 * ldtraced: before a line is appended, where it goes and which ring tails it moves; on start, the
 * next ldtraced either applies those tails (the line is all there) or cuts the partial line off.
 *
 * One entry at a time, at offset 0 of DIR/.ldtraced.journal (next to the segments, so a restart on
 * another output file still finds it; the entry names its own output). The entry is written with
 * one pwrite and checked by a hash, so a torn entry reads as no entry. No fsync: the journal guards
 * against a crash of the process (SIGKILL, OOM), whose page-cache writes survive it.
 *
 * Whether the line is all there is told by the file's size (we are its only writer, and a killed
 * write leaves the size where its copy stopped); the hash of the line's first and last 4 KiB (and
 * its length) then tells a file that someone else changed. Hashing only those keeps the journal's
 * cost per line constant instead of a pass over every byte written. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "sidecar/sidecar.h"

#define JMAGIC UINT64_C(0x324c4e524a54444c) /* "LDTJRNL2": the line hash samples */
#define SAMPLE 4096u                        /* bytes hashed at each end of a line */

/* The entry as stored (host byte order: the journal never leaves this machine). */
struct jentry {
    uint64_t magic;
    uint64_t check; /* XXH3 of everything after this field, tails included */
    uint64_t nonce; /* the segment's header nonce */
    uint64_t off;   /* the line's offset in out */
    uint64_t len;   /* its length */
    uint64_t hash;  /* line_hash() of the line */
    uint32_t nrings;
    uint32_t _pad;
    char seg[512];
    char out[512];
    uint64_t tails[];
};

#define JMAX (sizeof(struct jentry) + LDT_SEG_MAX_RINGS * sizeof(uint64_t))

static size_t entry_size(uint32_t nrings)
{
    return sizeof(struct jentry) + (size_t)nrings * sizeof(uint64_t);
}

/* XXH3 of the first and last SAMPLE bytes of a line (all of it when shorter), seeded with len.
 * head and tail may be the same buffer (a short line). */
static uint64_t line_hash(const char *head, const char *tail, size_t len)
{
    if (len <= 2 * SAMPLE)
        return XXH3_64bits_withSeed(head, len, len);
    uint64_t h = XXH3_64bits_withSeed(head, SAMPLE, len);
    return XXH3_64bits_withSeed(tail, SAMPLE, h);
}

static uint64_t entry_check(const struct jentry *e)
{
    const char *p = (const char *)e + 16;
    return XXH3_64bits(p, entry_size(e->nrings) - 16);
}

int ldt__journal_open(struct ldt__journal *j, const char *dir)
{
    if (j->fd >= 0)
        return 0;
    snprintf(j->path, sizeof(j->path), "%s/.ldtraced.journal", dir);
    j->fd = open(j->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (j->fd < 0)
        return -errno;
    if (!j->buf && !(j->buf = calloc(1, JMAX))) {
        close(j->fd);
        j->fd = -1;
        return -ENOMEM;
    }
    return 0;
}

static int pwrite_all(int fd, const void *p, size_t n, off_t off)
{
    ssize_t w = pwrite(fd, p, n, off);
    if (w < 0)
        return -errno;
    return (size_t)w == n ? 0 : -ENOSPC;
}

int ldt__journal_begin(struct ldt__journal *j, const struct ldt_seg_reader *r,
                       const uint64_t *tails, const char *out, uint64_t off, const char *line,
                       size_t len)
{
    struct jentry *e = j->buf;
    memset(e, 0, sizeof(*e));
    e->magic = JMAGIC;
    e->nonce = r->hdr->nonce;
    e->off = off;
    e->len = len;
    e->hash = line_hash(line, len > 2 * SAMPLE ? line + len - SAMPLE : line, len);
    e->nrings = r->nrings;
    snprintf(e->seg, sizeof(e->seg), "%s", r->path);
    snprintf(e->out, sizeof(e->out), "%s", out);
    memcpy(e->tails, tails, (size_t)r->nrings * sizeof(uint64_t));
    e->check = entry_check(e);
    return pwrite_all(j->fd, e, entry_size(e->nrings), 0);
}

int ldt__journal_end(struct ldt__journal *j)
{
    uint64_t zero = 0;
    return pwrite_all(j->fd, &zero, sizeof(zero), 0);
}

void ldt__journal_close(struct ldt__journal *j)
{
    if (j->fd >= 0)
        close(j->fd);
    j->fd = -1;
    free(j->buf);
    j->buf = NULL;
}

/* line_hash() of what the output holds where e's line should be (~hash on a read error). */
static uint64_t line_sampled(int fd, const struct jentry *e)
{
    char buf[2 * SAMPLE];
    size_t n = e->len > 2 * SAMPLE ? SAMPLE : (size_t)e->len;
    if (pread(fd, buf, n, (off_t)e->off) != (ssize_t)n)
        return ~e->hash;
    if (e->len <= 2 * SAMPLE)
        return line_hash(buf, buf, e->len);
    if (pread(fd, buf + SAMPLE, SAMPLE, (off_t)(e->off + e->len - SAMPLE)) != (ssize_t)SAMPLE)
        return ~e->hash;
    return line_hash(buf, buf + SAMPLE, e->len);
}

/* Is the whole line of e in its output file? 1 yes, 0 no (a partial line was cut off), -1 the
 * file does not hold what the entry says (changed under us: neither apply nor cut). */
static int line_present(const struct jentry *e)
{
    int fd = open(e->out, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int rc = -1;
    if ((uint64_t)st.st_size < e->off + e->len) {
        rc = 0;
        if ((uint64_t)st.st_size > e->off && ftruncate(fd, (off_t)e->off) < 0)
            rc = -1;
    } else if (line_sampled(fd, e) == e->hash) {
        rc = 1;
    }
    close(fd);
    return rc;
}

static void apply_tails(const struct jentry *e)
{
    struct ldt_seg_reader r;
    char why[128];
    if (ldt_seg_open(e->seg, &r, why, sizeof(why)) < 0)
        return; /* gone: it was finished, so its lines were all delivered */
    if (r.hdr->nonce == e->nonce && r.nrings == e->nrings)
        for (unsigned i = 0; i < r.nrings; i++)
            ldt_seg_release(&r, i, e->tails[i]);
    ldt_seg_close(&r);
}

int ldt__journal_recover(struct ldt__journal *j)
{
    struct jentry *e = j->buf;
    ssize_t n = pread(j->fd, e, JMAX, 0);
    if (n < (ssize_t)sizeof(*e) || e->magic != JMAGIC || e->nrings > LDT_SEG_MAX_RINGS ||
        (size_t)n < entry_size(e->nrings) || entry_check(e) != e->check)
        return 0;
    e->seg[sizeof(e->seg) - 1] = e->out[sizeof(e->out) - 1] = '\0';
    int present = line_present(e);
    if (present == 1)
        apply_tails(e);
    int rc = ldt__journal_end(j);
    if (rc < 0)
        return rc;
    return present == 1 ? 1 : present == 0 ? 2 : 3;
}
