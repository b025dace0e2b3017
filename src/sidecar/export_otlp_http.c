/* export_otlp_http.c - the OTLP/HTTP exporter: POSTs each ExportTraceServiceRequest line as
 * application/json to the collector's /v1/traces with libcurl, retrying with backoff on connection
 * failures and on 429/502/503/504. There is no on-disk spool yet: a request that still fails after
 * the retries is dropped and reported (the drain loop counts it in write_errors). */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar/sidecar.h"

#define HTTP_ATTEMPTS 5
#define HTTP_FIRST_BACKOFF_MS 100 /* doubled after every failed attempt: 100 .. 1600 ms */
#define HTTP_TIMEOUT_MS 10000

struct http_impl {
    CURL *curl;
    struct curl_slist *headers;
    char url[512]; /* as long as struct ldt__exporter.target */
};

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

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
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
    default:
        return -EIO;
    }
}

/* One POST. Returns 0 with the HTTP status in *code, or a negative errno for a transport error. */
static int post(struct http_impl *h, const char *body, size_t len, long *code)
{
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    CURLcode c = curl_easy_perform(h->curl);
    if (c != CURLE_OK)
        return curl_errno(c);
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, code);
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int http_export(struct ldt__exporter *e, const char *line, size_t len)
{
    struct http_impl *h = e->impl;
    if (len && line[len - 1] == '\n')
        len--;
    unsigned backoff = HTTP_FIRST_BACKOFF_MS;
    for (int attempt = 1;; attempt++) {
        long code = 0;
        int rc = post(h, line, len, &code);
        if (rc == 0 && code >= 200 && code < 300)
            return 0;
        /* OTLP/HTTP specification, "Retryable Response Codes": 429, 502, 503, 504. */
        int retry = rc < 0 || code == 429 || code == 502 || code == 503 || code == 504;
        if (!retry || attempt == HTTP_ATTEMPTS)
            return rc < 0 ? rc : -EPROTO;
        sleep_ms(backoff);
        backoff *= 2;
    }
}

static int http_flush(struct ldt__exporter *e)
{
    (void)e;
    return 0; /* every line is sent when it is exported */
}

static void http_close(struct ldt__exporter *e)
{
    struct http_impl *h = e->impl;
    if (!h)
        return;
    curl_slist_free_all(h->headers);
    curl_easy_cleanup(h->curl);
    free(h);
    e->impl = NULL;
}

static const struct ldt__exporter_ops http_ops = {
    .name = "otlp-http",
    .verb = "POST",
    .export_line = http_export,
    .flush = http_flush,
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

int ldt__export_http_open(struct ldt__exporter *e, const char *url)
{
    memset(e, 0, sizeof(*e));
    e->fd = -1;
    strncpy(e->target, url, sizeof(e->target) - 1);
    struct http_impl *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    int rc = ldt__otlp_url(url, h->url, sizeof(h->url));
    if (rc == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        rc = -EIO;
    if (rc == 0 && !(h->curl = curl_easy_init()))
        rc = -ENOMEM;
    if (rc == 0)
        rc = add_headers(h);
    e->impl = h;
    if (rc < 0) {
        http_close(e);
        return rc;
    }
    snprintf(e->target, sizeof(e->target), "%s", h->url);
    curl_easy_setopt(h->curl, CURLOPT_URL, h->url);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers);
    curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)HTTP_TIMEOUT_MS);
    curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, discard);
    e->ops = &http_ops;
    return 0;
}
