/* export_file.c - the file exporter: appends each OTLP JSON line to a file with one write() per
 * line (the OpenTelemetry Collector file exporter format, readable by `ldtrace view`). A line that
 * cannot be written whole (disk full, I/O error) is cut off again, so the file only ever holds
 * whole lines and the drain loop can try the same records later. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "sidecar/sidecar.h"

/* Write all of buf, resuming after partial writes and EINTR. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int file_position(struct ldt__exporter *e, uint64_t *off)
{
    off_t o = lseek(e->fd, 0, SEEK_END);
    if (o < 0)
        return -errno;
    *off = (uint64_t)o;
    return 0;
}

static int file_export(struct ldt__exporter *e, const char *line, size_t len, uint32_t nspans)
{
    (void)nspans;
    uint64_t off = 0;
    int rc = file_position(e, &off);
    if (rc == 0 && (rc = write_all(e->fd, line, len)) < 0) {
        /* O_APPEND: we are the only writer, so the partial line starts at off. Shrinking a file
         * needs no space, even on a full disk. */
        while (ftruncate(e->fd, (off_t)off) < 0 && errno == EINTR)
            ;
    }
    return rc;
}

static int file_flush(struct ldt__exporter *e)
{
    (void)e;
    return 0; /* every line already went out with write(); durability is the kernel's business */
}

static void file_close(struct ldt__exporter *e)
{
    if (e->fd >= 0)
        close(e->fd);
    e->fd = -1;
}

static const struct ldt__exporter_ops file_ops = {
    .name = "file",
    .verb = "write",
    .export_line = file_export,
    .flush = file_flush,
    .position = file_position,
    .close = file_close,
};

int ldt__export_file_open(struct ldt__exporter *e, const char *path)
{
    memset(e, 0, sizeof(*e));
    e->fd = -1;
    strncpy(e->target, path, sizeof(e->target) - 1);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    e->fd = fd;
    e->ops = &file_ops;
    return 0;
}
