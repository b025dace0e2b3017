/* export_file.c - the file exporter: appends each OTLP JSON line to a file with one write() per
 * line (the OpenTelemetry Collector file exporter format, readable by `ldtrace view`). */
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

static int file_export(struct ldt__exporter *e, const char *line, size_t len)
{
    return write_all(e->fd, line, len);
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
