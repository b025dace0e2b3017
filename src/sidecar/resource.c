/* resource.c - the OTLP Resource of one traced process: defaults from the segment header merged
 * with the OTEL_RESOURCE_ATTRIBUTES the producer recorded (parsed and percent-decoded here, in the
 * sidecar, so the shim never has to). Runs once per segment, so it may allocate. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "sidecar/sidecar.h"

enum attr_type { ATTR_STR, ATTR_INT, ATTR_ARGS };

struct attr {
    const char *key;
    enum attr_type type;
    const char *s; /* ATTR_STR, ATTR_ARGS (NUL-joined) */
    size_t slen;
    int64_t i; /* ATTR_INT */
};

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Trim spaces and tabs, then percent-decode s[0..n) into a new NUL-terminated string. */
static int decode(const char *s, size_t n, char **out)
{
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    char *d = malloc(n + 1), *o = d;
    if (!d)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            free(d);
            return -EINVAL;
        }
        *o++ = (char)(hi << 4 | lo);
        i += 2;
    }
    *o = '\0';
    *out = d;
    return (int)(o - d);
}

void ldt__kv_free(struct ldt__kv *kv, int n)
{
    for (int i = 0; kv && i < n; i++) {
        free(kv[i].key);
        free(kv[i].val);
    }
    free(kv);
}

static int parse_member(const char *m, size_t len, struct ldt__kv *kv)
{
    const char *eq = memchr(m, '=', len);
    if (!eq)
        return -EINVAL;
    int kl = decode(m, (size_t)(eq - m), &kv->key);
    if (kl < 0)
        return kl;
    int vl = decode(eq + 1, len - (size_t)(eq - m) - 1, &kv->val);
    if (vl < 0 || kl == 0) {
        free(kv->key);
        if (vl >= 0)
            free(kv->val);
        return vl < 0 ? vl : -EINVAL;
    }
    return 0;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t')
            return 0;
    return 1;
}

int ldt__res_parse(const char *s, size_t n, struct ldt__kv **out)
{
    int cnt = 0, cap = 0;
    struct ldt__kv *kv = NULL;
    *out = NULL;
    for (size_t pos = 0; pos <= n;) {
        const char *comma = memchr(s + pos, ',', n - pos);
        size_t len = comma ? (size_t)(comma - (s + pos)) : n - pos;
        if (!blank(s + pos, len)) {
            if (cnt == cap) {
                cap = cap ? 2 * cap : 8;
                struct ldt__kv *g = realloc(kv, (size_t)cap * sizeof(*kv));
                if (!g) {
                    ldt__kv_free(kv, cnt);
                    return -ENOMEM;
                }
                kv = g;
            }
            int rc = parse_member(s + pos, len, &kv[cnt]);
            if (rc < 0) {
                ldt__kv_free(kv, cnt);
                return rc;
            }
            cnt++;
        }
        pos += len + 1;
    }
    *out = kv;
    return cnt;
}

static size_t attr_bound(const struct attr *a)
{
    return strlen(a->key) * 6 + LDT__JSON_STR_MAX(a->slen) + a->slen * 32 + 96;
}

static char *encode_args(char *o, const char *s, size_t n)
{
    memcpy(o, "{\"arrayValue\":{\"values\":[", 25);
    o += 25;
    size_t pos = 0;
    int first = 1;
    while (pos < n) {
        const char *nul = memchr(s + pos, '\0', n - pos);
        size_t len = nul ? (size_t)(nul - (s + pos)) : n - pos;
        if (!first)
            *o++ = ',';
        first = 0;
        memcpy(o, "{\"stringValue\":", 15);
        o = ldt__json_str(o + 15, s + pos, len);
        *o++ = '}';
        pos += len + 1;
    }
    memcpy(o, "]}}", 3);
    return o + 3;
}

static char *encode_attr(char *o, const struct attr *a)
{
    memcpy(o, "{\"key\":", 7);
    o = ldt__json_str(o + 7, a->key, strlen(a->key));
    memcpy(o, ",\"value\":", 9);
    o += 9;
    if (a->type == ATTR_INT) {
        memcpy(o, "{\"intValue\":\"", 13);
        o = ldt__fmt_i64(o + 13, a->i);
        memcpy(o, "\"}", 2);
        o += 2;
    } else if (a->type == ATTR_ARGS) {
        o = encode_args(o, a->s, a->slen);
    } else {
        memcpy(o, "{\"stringValue\":", 15);
        o = ldt__json_str(o + 15, a->s, a->slen);
        *o++ = '}';
    }
    *o++ = '}';
    return o;
}

static void set_str(struct attr *a, const char *key, const char *s, size_t n)
{
    a->key = key;
    a->type = ATTR_STR;
    a->s = s;
    a->slen = n;
}

/* service.name: the segment's, else the OpenTelemetry default unknown_service:<executable>. */
static void service_name(const struct ldt_seg_hdr *h, struct attr *a, char *scratch)
{
    size_t svc = strnlen(h->service_name, sizeof(h->service_name));
    size_t exe = strnlen(h->exe_name, sizeof(h->exe_name));
    if (svc) {
        set_str(a, "service.name", h->service_name, svc);
        return;
    }
    memcpy(scratch, "unknown_service", 15);
    if (exe) {
        scratch[15] = ':';
        memcpy(scratch + 16, h->exe_name, exe);
    }
    set_str(a, "service.name", scratch, exe ? 16 + exe : 15);
}

/* The defaults from the header; scratch holds strings that have to be built. Returns the count. */
static int defaults(const struct ldt_seg_hdr *h, struct attr *a, char *scratch)
{
    int n = 0;
    size_t exe = strnlen(h->exe_name, sizeof(h->exe_name));
    size_t host = strnlen(h->host_name, sizeof(h->host_name));
    service_name(h, &a[n++], scratch + 64);
    char *o = ldt__fmt_u64(scratch, h->pid);
    *o++ = '-';
    uint8_t nonce[8];
    for (int i = 0; i < 8; i++)
        nonce[i] = (uint8_t)(h->nonce >> (56 - 8 * i));
    o = ldt__fmt_hex(o, nonce, 8);
    set_str(&a[n++], "service.instance.id", scratch, (size_t)(o - scratch));
    a[n++] = (struct attr){.key = "process.pid", .type = ATTR_INT, .i = h->pid};
    if (exe)
        set_str(&a[n++], "process.executable.name", h->exe_name, exe);
    size_t alen = h->args_len < LDT_SEG_ARGS_MAX ? h->args_len : LDT_SEG_ARGS_MAX;
    if (alen)
        a[n++] = (struct attr){
            .key = "process.command_args", .type = ATTR_ARGS, .s = h->command_args, .slen = alen};
    if (host)
        set_str(&a[n++], "host.name", h->host_name, host);
    set_str(&a[n++], "telemetry.sdk.name", "ldtrace", 7);
    set_str(&a[n++], "telemetry.sdk.version", LDT_VERSION, strlen(LDT_VERSION));
    return n;
}

/* Merge user attributes: same key replaces (service.name excepted), a new key is appended. */
static int merge(struct attr *a, int n, const struct ldt__kv *kv, int nkv)
{
    for (int k = 0; k < nkv; k++) {
        if (strcmp(kv[k].key, "service.name") == 0)
            continue;
        int i = 0;
        while (i < n && strcmp(a[i].key, kv[k].key) != 0)
            i++;
        set_str(&a[i], kv[k].key, kv[k].val, strlen(kv[k].val));
        if (i == n)
            n++;
    }
    return n;
}

/* Write {"attributes":[...]} for n attributes into b. */
static int encode_attrs(struct ldt__buf *b, const struct attr *a, int n)
{
    size_t bound = 32;
    for (int i = 0; i < n; i++)
        bound += attr_bound(&a[i]);
    if (ldt__buf_reserve(b, bound) < 0)
        return -ENOMEM;
    char *o = b->p + b->len;
    memcpy(o, "{\"attributes\":[", 15);
    o += 15;
    for (int i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        o = encode_attr(o, &a[i]);
    }
    memcpy(o, "]}", 2);
    b->len = (size_t)(o + 2 - b->p);
    return 0;
}

int ldt__res_encode(struct ldt__buf *b, const struct ldt_seg_hdr *h)
{
    char scratch[64 + 16 + LDT_SEG_EXE_MAX];
    struct ldt__kv *kv = NULL;
    size_t rlen = strnlen(h->resource, sizeof(h->resource));
    if (h->resource_len < rlen)
        rlen = h->resource_len;
    int nkv = ldt__res_parse(h->resource, rlen, &kv);
    if (nkv == -ENOMEM)
        return -ENOMEM;
    int discarded = nkv < 0;
    if (nkv < 0)
        nkv = 0;
    struct attr *a = calloc((size_t)nkv + 16, sizeof(*a));
    int rc = -ENOMEM;
    if (a)
        rc = encode_attrs(b, a, merge(a, defaults(h, a, scratch), kv, nkv));
    free(a);
    ldt__kv_free(kv, nkv);
    return rc < 0 ? rc : discarded;
}
