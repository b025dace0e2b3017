/* bench.c - `ldtraced --bench-encode N`: how fast the OTLP JSON encoder turns span records into
 * lines written through the exporter (the sidecar's per-span cost, without the rings). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "ldtrace/http.h"
#include "sidecar/sidecar.h"

static void fake_hdr(struct ldt_seg_hdr *h)
{
    memset(h, 0, sizeof(*h));
    h->pid = 4242;
    h->nonce = 0x0123456789abcdefull;
    strcpy(h->service_name, "bench");
    strcpy(h->exe_name, "bench");
    strcpy(h->host_name, "localhost");
    memcpy(h->command_args, "bench\0--fast", 13);
    h->args_len = 13;
}

/* A realistic HTTP span; i varies the ids, kind, status and path length. */
static void fake_span(struct ldt_span_rec *s, uint64_t i)
{
    memset(s, 0, sizeof(*s));
    s->type = LDT_REC_SPAN;
    s->kind = i & 1 ? LDT_SPAN_CLIENT : LDT_SPAN_SERVER;
    s->status = i % 17 == 0 ? LDT_STATUS_ERROR : LDT_STATUS_UNSET;
    s->trace_flags = 3;
    s->method = LDT_HTTP_M_GET;
    for (int k = 0; k < 16; k++)
        s->trace_id[k] = (uint8_t)(i * 31 + (uint64_t)k * 7 + 1);
    for (int k = 0; k < 8; k++) {
        s->span_id[k] = (uint8_t)(i * 13 + (uint64_t)k + 1);
        s->parent_id[k] = i & 1 ? (uint8_t)(i + (uint64_t)k) : 0;
    }
    s->start_ns = 1700000000000000000ull + i * 1000;
    s->dur_ns = 50000 + i % 1000;
    s->bytes_in = 120 + i % 50;
    s->bytes_out = 900 + i % 300;
    s->io_ns = 8000;
    s->io_calls = 3;
    s->status_code = i % 17 == 0 ? 503 : 200;
    s->peer_port = (uint16_t)(40000 + i % 1000);
    s->local_port = 8080;
    s->peer_family = s->local_family = LDT_AF_INET;
    memcpy(s->peer_addr, "\x7f\0\0\x01", 4);
    memcpy(s->local_addr, "\x7f\0\0\x01", 4);
    s->path_len = (uint8_t)(8 + i % 24);
    memcpy(s->path, "/api/v1/orders/12345/items/67890", s->path_len);
    s->host_len = 14;
    memcpy(s->host, "localhost:8080", 14);
}

int ldt__bench_encode(unsigned long long n, struct ldt__exporter *e)
{
    enum { NREC = 1024 };
    static struct ldt_seg_hdr h;
    struct ldt_span_rec *recs = malloc(NREC * sizeof(*recs));
    struct ldt__batch bt;
    fake_hdr(&h);
    if (!recs || ldt__batch_init(&bt, &h) < 0) {
        fprintf(stderr, "ldtraced: malloc: Cannot allocate memory\n");
        return 1;
    }
    for (uint64_t i = 0; i < NREC; i++)
        fake_span(&recs[i], i);
    uint64_t bytes = 0, t0 = ldt_clock_mono_ns();
    for (unsigned long long i = 0; i < n; i++) {
        int rc = ldt__batch_add(&bt, &recs[i % NREC], NULL);
        if (rc == 0 && bt.nspans < 4096 && i + 1 < n)
            continue;
        size_t len;
        const char *line = ldt__batch_finish(&bt, &len);
        if (rc < 0 || !line || e->ops->export_line(e, line, len, bt.nspans) < 0) {
            fprintf(stderr, "ldtraced: write %s: failed\n", e->target);
            return 1;
        }
        bytes += len;
        ldt__batch_reset(&bt);
    }
    double s = (double)(ldt_clock_mono_ns() - t0) / 1e9;
    printf(
        "ldtraced: bench-encode: %llu spans in %.3f s: %.0f spans/s, %.1f MB/s, %.0f bytes/span\n",
        n, s, (double)n / s, (double)bytes / s / 1e6, (double)bytes / (double)n);
    ldt__batch_free(&bt);
    free(recs);
    return 0;
}
