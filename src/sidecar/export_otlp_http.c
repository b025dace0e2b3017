/* export_otlp_http.c - the OTLP/HTTP exporter: POSTs each ExportTraceServiceRequest line as
 * application/json (gzip on request) to the collector's traces URL with libcurl, one request at a
 * time, and follows the OTLP retry rules; lines that must wait go to the on-disk spool (spool.c)
 * when there is one, else stay in the rings (the drain loop reads them again after the backoff). */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zlib.h>

#include "common/common.h"
#include "sidecar/sidecar.h"

#define BODY_KEEP 65536      /* response bytes kept for partialSuccess and error messages */
#define SPOOL_BUDGET_NS 50000000ull /* time one pass may spend sending spooled lines */
#define SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

enum outcome { SENT, DROPPED, RETRY };

struct http_impl {
    CURL *curl;
    struct curl_slist *headers;
    struct ldt__spool *spool;
    struct ldt__buf body;    /* the last response's body (bounded) */
    struct ldt__buf gz;      /* the compressed request */
    struct ldt__buf line;    /* a line read back from the spool */
    struct ldt__buf ca;      /* system bundle + extra CA file, as a blob */
    long retry_after_ms;     /* the last response's Retry-After, -1 when none */
    int gzip;
    int failing;             /* retrying since the last delivered line */
    unsigned backoff_ms, backoff_first, backoff_max;
    struct ldt__http_stats st;
    char url[512]; /* as long as struct ldt__exporter.target */
};

/* ---- URLs and settings ---- */

int ldt__otlp_url(const char *base, char *out, size_t cap)
{
    const char *scheme = strstr(base, "://");
    if (!scheme || scheme == base || strncmp(base, "http", 4) != 0)
        return -EINVAL;
    const char *path = strchr(scheme + 3, '/');
    size_t n = strlen(base);
    int has_path = path && path[1] != '\0';
    if (!has_path && path)
        n--; /* "http://h:4318/": drop the lone slash before appending */
    const char *suffix = has_path ? "" : "/v1/traces";
    if (n + strlen(suffix) + 1 > cap)
        return -ENAMETOOLONG;
    memcpy(out, base, n);
    strcpy(out + n, suffix);
    return 0;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* The signal-specific variable wins over the general one (OTLP exporter specification). */
static const char *env2(const char *traces, const char *general, const char **name)
{
    const char *v = env(traces);
    *name = v ? traces : general;
    return v ? v : env(general);
}

int ldt__otlp_env_url(char *out, size_t cap)
{
    const char *v = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if (v) { /* used as is */
        if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
            return -EINVAL;
        return snprintf(out, cap, "%s", v) < (int)cap ? 0 : -ENAMETOOLONG;
    }
    if (!(v = env("OTEL_EXPORTER_OTLP_ENDPOINT")))
        return 1;
    if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
        return -EINVAL;
    /* "v1/traces" relative to the base: appended after a '/' added when the URL ends without
     * one, whether it has a path or not. */
    size_t n = strlen(v);
    const char *sep = v[n - 1] == '/' ? "" : "/";
    return snprintf(out, cap, "%s%sv1/traces", v, sep) < (int)cap ? 0 : -ENAMETOOLONG;
}

static int env_ms(const char *traces, const char *general, unsigned *out, const char **bad)
{
    const char *v = env2(traces, general, bad);
    if (!v)
        return 0;
    char *end;
    unsigned long ms = strtoul(v, &end, 10);
    if (*end || v[0] == '-' || ms > 3600000)
        return -EINVAL;
    *out = ms ? (unsigned)ms : 10000; /* 0 is not a usable timeout: keep the default */
    return 0;
}

int ldt__http_opts_env(struct ldt__http_opts *o, const char **bad)
{
    o->timeout_ms = 10000;
    o->backoff_ms = o->backoff_ms ? o->backoff_ms : 100;
    o->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    if (!o->spool_max)
        o->spool_max = 256ull << 20;
    if (env_ms("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", &o->timeout_ms,
               bad) < 0)
        return -EINVAL;
    const char *v = env2("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION",
                         bad);
    if (v && strcmp(v, "gzip") != 0 && strcmp(v, "none") != 0)
        return -EINVAL;
    o->gzip = v && strcmp(v, "gzip") == 0;
    v = env2("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE", bad);
    if (v && !o->ca_file)
        o->ca_file = v;
    v = env2("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", bad);
    if (v && strcmp(v, "http/json") != 0)
        fprintf(stderr, "ldtraced: %s=%s: only http/json is implemented; sending http/json\n",
                *bad, v);
    *bad = NULL;
    return 0;
}

/* ---- one request ---- */

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct ldt__buf *b = ud;
    size_t len = size * n, take = len;
    if (b->len + take > BODY_KEEP)
        take = BODY_KEEP - b->len;
    if (take && ldt__buf_reserve(b, take + 1) == 0) {
        memcpy(b->p + b->len, p, take);
        b->len += take;
        b->p[b->len] = '\0';
    }
    return len;
}

/* Retry-After: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3). */
static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct http_impl *h = ud;
    size_t len = size * n;
    if (len > 12 && len < 200 && strncasecmp(p, "Retry-After:", 12) == 0) {
        char v[200];
        memcpy(v, p + 12, len - 12);
        v[len - 12] = '\0';
        char *end;
        long s = strtol(v, &end, 10);
        if (end != v && (*end == '\r' || *end == '\n' || *end == ' ' || !*end) && s >= 0) {
            h->retry_after_ms = s * 1000;
        } else {
            time_t t = curl_getdate(v, NULL);
            time_t now = time(NULL);
            if (t > 0)
                h->retry_after_ms = t > now ? (long)(t - now) * 1000 : 0;
        }
    }
    return len;
}

/* gzip (RFC 1952) of body into h->gz. */
static int deflate_body(struct http_impl *h, const char *body, size_t len)
{
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    size_t bound = deflateBound(&z, len);
    h->gz.len = 0;
    if (ldt__buf_reserve(&h->gz, bound) < 0) {
        deflateEnd(&z);
        return -ENOMEM;
    }
    z.next_in = (Bytef *)body;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)h->gz.p;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    h->gz.len = z.total_out;
    deflateEnd(&z);
    return rc == Z_STREAM_END ? 0 : -EIO;
}

static int curl_errno(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
        return -ECONNREFUSED;
    case CURLE_COULDNT_RESOLVE_HOST:
        return -EHOSTUNREACH;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
        return -EPROTO;
    default:
        return -EIO;
    }
}

/* One POST. Returns 0 with the HTTP status in *code, or a negative errno for a transport error. */
static int post(struct http_impl *h, const char *body, size_t len, long *code)
{
    if (h->gzip) {
        int rc = deflate_body(h, body, len);
        if (rc < 0)
            return rc;
        body = h->gz.p;
        len = h->gz.len;
    }
    h->body.len = 0;
    h->retry_after_ms = -1;
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    h->st.requests++;
    CURLcode c = curl_easy_perform(h->curl);
    if (c != CURLE_OK)
        return curl_errno(c);
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, code);
    return 0;
}

/* partialSuccess.rejectedSpans of a JSON ExportTraceServiceResponse (an int64: a string in the
 * canonical encoding, a number from some servers). 0 when absent. */
static uint64_t rejected_spans(const char *body)
{
    const char *p = body ? strstr(body, "\"rejectedSpans\"") : NULL;
    if (!p)
        return 0;
    p += strlen("\"rejectedSpans\"");
    while (*p == ' ' || *p == ':' || *p == '"' || *p == '\t')
        p++;
    return strtoull(p, NULL, 10);
}

static const char *body_text(struct http_impl *h)
{
    return h->body.len ? h->body.p : "(no body)";
}

static void schedule_retry(struct ldt__exporter *e, struct http_impl *h)
{
    unsigned b = h->backoff_ms ? h->backoff_ms : h->backoff_first;
    uint64_t ms = b / 2 + (unsigned)random() % (b / 2 + 1); /* jitter: [b/2, b] */
    if (h->retry_after_ms >= 0 && (uint64_t)h->retry_after_ms > ms)
        ms = (uint64_t)h->retry_after_ms; /* the server's word is a minimum */
    e->retry_at = ldt_clock_mono_ns() + ms * 1000000u;
    h->backoff_ms = b * 2 > h->backoff_max ? h->backoff_max : b * 2;
    h->st.retries++;
}

/* Send one line and classify the answer by the OTLP/HTTP rules. *err is the errno to report. */
static enum outcome send_line(struct ldt__exporter *e, const char *line, size_t len,
                              uint32_t nspans, int *err)
{
    struct http_impl *h = e->impl;
    long code = 0;
    int rc = post(h, line, len, &code);
    *err = rc;
    if (rc == 0 && code >= 200 && code < 300) {
        uint64_t rej = rejected_spans(h->body.p);
        if (rej) {
            h->st.rejected_spans += rej;
            fprintf(stderr, "ldtraced: POST %s: partial success, %llu of %u spans rejected: %s\n",
                    h->url, (unsigned long long)rej, nspans, body_text(h));
        }
        if (h->failing)
            fprintf(stderr, "ldtraced: POST %s: delivering again\n", h->url);
        h->failing = 0;
        h->backoff_ms = 0;
        return SENT;
    }
    /* OTLP/HTTP specification, "Retryable Response Codes": 429, 502, 503, 504. */
    if (rc < 0 || code == 429 || code == 502 || code == 503 || code == 504) {
        if (!h->failing && rc == 0)
            fprintf(stderr, "ldtraced: POST %s: HTTP %ld, retrying with backoff\n", h->url, code);
        h->failing = 1;
        *err = rc < 0 ? rc : code == 429 ? -EBUSY : -EAGAIN;
        schedule_retry(e, h);
        return RETRY;
    }
    h->st.rejected_lines++;
    h->st.rejected_spans += nspans;
    fprintf(stderr, "ldtraced: POST %s: HTTP %ld, not retried, %u spans dropped: %s\n", h->url,
            code, nspans, body_text(h));
    return DROPPED;
}

/* ---- the exporter ---- */

static int spool_line(struct http_impl *h, const char *line, size_t len, uint32_t nspans)
{
    int rc = ldt__spool_push(h->spool, line, len, nspans, &h->st.spool_dropped);
    if (rc == 0)
        h->st.spooled++;
    return rc;
}

static int http_export(struct ldt__exporter *e, const char *line, size_t len, uint32_t nspans)
{
    struct http_impl *h = e->impl;
    if (len && line[len - 1] == '\n')
        len--;
    /* Keep the order: while older lines wait in the spool or a retry is pending, queue. */
    int waiting = ldt_clock_mono_ns() < e->retry_at || ldt__spool_lines(h->spool) > 0;
    if (waiting)
        return h->spool ? spool_line(h, line, len, nspans) : -EAGAIN;
    int err;
    if (send_line(e, line, len, nspans, &err) != RETRY)
        return 0;
    return h->spool ? spool_line(h, line, len, nspans) : err;
}

/* Send spooled lines, oldest first, while the collector takes them (bounded time per pass). */
static int http_flush(struct ldt__exporter *e)
{
    struct http_impl *h = e->impl;
    uint64_t t0 = ldt_clock_mono_ns();
    while (ldt__spool_lines(h->spool) > 0 && ldt_clock_mono_ns() >= e->retry_at &&
           ldt_clock_mono_ns() - t0 < SPOOL_BUDGET_NS) {
        uint32_t n;
        int rc = ldt__spool_peek(h->spool, &h->line, &n);
        if (rc < 0) {
            ldt__spool_pop(h->spool); /* unreadable: count it lost rather than block the queue */
            h->st.spool_dropped += n;
            return rc;
        }
        if (send_line(e, h->line.p, h->line.len, n, &rc) == RETRY)
            return 0;
        ldt__spool_pop(h->spool);
    }
    return 0;
}

static void http_close(struct ldt__exporter *e)
{
    struct http_impl *h = e->impl;
    if (!h)
        return;
    curl_slist_free_all(h->headers);
    if (h->curl)
        curl_easy_cleanup(h->curl);
    ldt__spool_close(h->spool);
    ldt__buf_free(&h->body);
    ldt__buf_free(&h->gz);
    ldt__buf_free(&h->line);
    ldt__buf_free(&h->ca);
    free(h);
    e->impl = NULL;
}

void ldt__export_http_stats(const struct ldt__exporter *e, struct ldt__http_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!e->ops || strcmp(e->ops->name, "otlp-http") != 0 || !e->impl)
        return;
    const struct http_impl *h = e->impl;
    *out = h->st;
    out->spool_lines = ldt__spool_lines(h->spool);
}

static const struct ldt__exporter_ops http_ops = {
    .name = "otlp-http",
    .verb = "POST",
    .export_line = http_export,
    .flush = http_flush,
    .position = NULL,
    .close = http_close,
};

/* Content-Type, no "Expect: 100-continue" round trip, then OTEL_EXPORTER_OTLP_HEADERS and
 * OTEL_EXPORTER_OTLP_TRACES_HEADERS ("k=v,k=v", percent-decoded like the resource attributes). */
static int add_headers(struct http_impl *h)
{
    static const char *const envs[] = {"OTEL_EXPORTER_OTLP_HEADERS",
                                       "OTEL_EXPORTER_OTLP_TRACES_HEADERS"};
    h->headers = curl_slist_append(NULL, "Content-Type: application/json");
    h->headers = curl_slist_append(h->headers, "Expect:");
    if (h->gzip)
        h->headers = curl_slist_append(h->headers, "Content-Encoding: gzip");
    for (size_t i = 0; i < sizeof(envs) / sizeof(envs[0]); i++) {
        const char *v = getenv(envs[i]);
        struct ldt__kv *kv;
        int n = v ? ldt__res_parse(v, strlen(v), &kv) : 0;
        if (n < 0)
            return -EINVAL;
        for (int k = 0; k < n; k++) {
            char line[1024];
            if (strlen(kv[k].key) + strlen(kv[k].val) + 3 <= sizeof(line)) {
                strcpy(line, kv[k].key);
                strcat(line, ": ");
                strcat(line, kv[k].val);
                h->headers = curl_slist_append(h->headers, line);
            }
        }
        if (n > 0)
            ldt__kv_free(kv, n);
    }
    return h->headers ? 0 : -ENOMEM;
}

static int append_file(struct ldt__buf *b, const char *path, int must)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return must ? -errno : 0;
    char chunk[16384];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if ((rc = ldt__buf_reserve(b, n + 1)) == 0) {
            memcpy(b->p + b->len, chunk, n);
            b->len += n;
        }
    }
    fclose(f);
    return rc;
}

/* An extra CA file is added to the system store, not put in its place: both go in as one blob. */
static int set_ca(struct http_impl *h, const char *extra)
{
    if (!extra)
        return 0;
    int rc = append_file(&h->ca, SYSTEM_CA, 0);
    if (rc == 0 && h->ca.len && (rc = ldt__buf_reserve(&h->ca, 1)) == 0)
        h->ca.p[h->ca.len++] = '\n';
    if (rc == 0)
        rc = append_file(&h->ca, extra, 1);
    if (rc < 0)
        return rc;
    struct curl_blob blob = {.data = h->ca.p, .len = h->ca.len, .flags = CURL_BLOB_NOCOPY};
    return curl_easy_setopt(h->curl, CURLOPT_CAINFO_BLOB, &blob) == CURLE_OK ? 0 : -ENOTSUP;
}

static void set_options(struct http_impl *h, const struct ldt__http_opts *o)
{
    curl_easy_setopt(h->curl, CURLOPT_URL, h->url);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers);
    /* The exporter spec asks for a User-Agent naming the exporter, its language and version. */
    curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "OTel-OTLP-Exporter-C-ldtrace/" LDT_VERSION);
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &h->body);
    curl_easy_setopt(h->curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http,https");
}

int ldt__export_http_open(struct ldt__exporter *e, const struct ldt__http_opts *o)
{
    memset(e, 0, sizeof(*e));
    e->fd = -1;
    strncpy(e->target, o->url, sizeof(e->target) - 1);
    struct http_impl *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    e->impl = h;
    h->gzip = o->gzip;
    h->backoff_first = o->backoff_ms ? o->backoff_ms : 100;
    h->backoff_max = o->backoff_max_ms ? o->backoff_max_ms : 5000;
    int rc = ldt__otlp_url(o->url, h->url, sizeof(h->url));
    if (rc == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        rc = -EIO;
    if (rc == 0 && !(h->curl = curl_easy_init()))
        rc = -ENOMEM;
    if (rc == 0)
        rc = add_headers(h);
    if (rc == 0)
        rc = set_ca(h, o->ca_file);
    if (rc == 0 && o->spool_dir)
        rc = ldt__spool_open(o->spool_dir, o->spool_max ? o->spool_max : 256ull << 20, &h->spool);
    if (rc < 0) {
        http_close(e);
        return rc;
    }
    snprintf(e->target, sizeof(e->target), "%s", h->url);
    set_options(h, o);
    e->ops = &http_ops;
    return 0;
}
