/* fuzz_ring_reader.c - libFuzzer target: the sidecar's segment reader over arbitrary file contents.
 * The first byte picks raw bytes (header validation) or a valid header with fuzzed rings (record
 * validation); either way the reader must reject or read without crashing or reading out of bounds. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ldtrace/ring.h"

#define RINGS 2u
#define SLOTS 4u

static char path[64];

static size_t valid_layout(uint8_t *buf, size_t cap, const uint8_t *data, size_t size)
{
    size_t stride = sizeof(struct ldt_ring_hdr) + SLOTS * LDT_SLOT_SIZE;
    size_t total = LDT_SEG_HDR_SIZE + RINGS * stride;
    if (total > cap)
        return 0;
    memset(buf, 0, total);
    struct ldt_seg_hdr *h = (struct ldt_seg_hdr *)buf;
    h->magic = LDT_SEG_MAGIC;
    h->version = LDT_SEG_VERSION;
    h->hdr_size = LDT_SEG_HDR_SIZE;
    h->seg_size = total;
    h->nrings = RINGS;
    h->ring_cap = SLOTS;
    h->slot_size = LDT_SLOT_SIZE;
    h->ring_stride = (uint32_t)stride;
    h->pid = (uint32_t)getpid();
    size_t body = total - LDT_SEG_HDR_SIZE;
    memcpy(buf + LDT_SEG_HDR_SIZE, data, size < body ? size : body);
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[LDT_SEG_HDR_SIZE + RINGS * (128 + SLOTS * LDT_SLOT_SIZE) + 4096];
    if (size < 1)
        return 0;
    size_t n;
    if (data[0] & 1) {
        n = valid_layout(buf, sizeof(buf), data + 1, size - 1);
    } else {
        n = size - 1 < sizeof(buf) ? size - 1 : sizeof(buf);
        memcpy(buf, data + 1, n);
    }
    if (!path[0])
        snprintf(path, sizeof(path), "/tmp/ldt-fuzz-ring-%d.ring", (int)getpid());
    unlink(path);
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    if (write(fd, buf, n) != (ssize_t)n) {
        close(fd);
        return 0;
    }
    close(fd);
    struct ldt_seg_reader r;
    char why[256];
    if (ldt_seg_open(path, &r, why, sizeof(why)) == 0) {
        uint8_t rec[LDT_REC_SIZE];
        for (unsigned ring = 0; ring < r.nrings; ring++)
            for (int i = 0; i < 64 && ldt_seg_read(&r, ring, rec) != 0; i++)
                ;
        (void)ldt_seg_dropped(&r);
        ldt_seg_close(&r);
    }
    unlink(path);
    return 0;
}
