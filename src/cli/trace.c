/* trace.c - the CLI's OTLP JSON loader: ExportTraceServiceRequest lines -> spans -> traces.
 *
 * JSON is read with jansson (Debian libjansson-dev): a small, well-kept C library with a simple DOM
 * API and strict parsing, so a malformed line is rejected as a whole instead of half-read; no
 * streaming is needed because every line is one self-contained request. The input is treated as
 * untrusted: ids are validated, numbers range-checked, and control characters removed from every
 * string we keep.
 */
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#define MAX_LINE_BYTES (64u << 20) /* a line bigger than this is skipped (and counted) */

/* Copy a string, replacing C0 controls and DEL by '?' so nothing we print can steer the terminal.
 */
static char *dup_clean(const char *s)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        return NULL;
    for (char *p = d; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return d;
}

/* Keep only the first line of s (in place). */
static void first_line(char *s)
{
    if (s)
        s[strcspn(s, "\r\n")] = '\0';
}

/* Store a hex id of exactly 2*bytes digits, lower-cased. Returns 0, or -EINVAL. */
static int parse_hex_id(const char *in, size_t bytes, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = in ? strlen(in) : 0;
    if (len != 2 * bytes)
        return -EINVAL;
    int nonzero = 0;
    for (size_t i = 0; i < len; i++) {
        const char *p = strchr(hex, in[i] | 0x20);
        if (!p || !*p)
            return -EINVAL;
        out[i] = *p;
        nonzero |= *p != '0';
    }
    out[len] = '\0';
    return nonzero ? 0 : -EINVAL; /* W3C: an all-zero id is invalid */
}

/* Read an OTLP int64/uint64 field: a decimal string (the OTLP JSON rule) or a JSON integer. Returns
 * 0, or -EINVAL / -ERANGE for anything else, including values past 2^64-1 and negative ones. */
static int json_u64(const json_t *j, uint64_t *out)
{
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v < 0)
            return -ERANGE;
        *out = (uint64_t)v;
        return 0;
    }
    const char *s = json_string_value(j);
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end)
        return -EINVAL;
    *out = v;
    return 0;
}

/* An AnyValue as text: stringValue, intValue (string or number), boolValue or doubleValue. */
static const char *any_text(const json_t *val, char *buf, size_t cap)
{
    const json_t *v;
    if ((v = json_object_get(val, "stringValue")) && json_is_string(v))
        return json_string_value(v);
    if ((v = json_object_get(val, "intValue"))) {
        if (json_is_string(v))
            return json_string_value(v);
        if (json_is_integer(v)) {
            snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
            return buf;
        }
    }
    if ((v = json_object_get(val, "boolValue")) && json_is_boolean(v))
        return json_is_true(v) ? "true" : "false";
    if ((v = json_object_get(val, "doubleValue")) && json_is_number(v)) {
        snprintf(buf, cap, "%g", json_number_value(v));
        return buf;
    }
    return NULL;
}

/* The value of attribute `key` in a KeyValue array, as text (NULL when absent). */
static const char *attr_text(const json_t *attrs, const char *key, char *buf, size_t cap)
{
    size_t i;
    const json_t *kv;
    json_array_foreach(attrs, i, kv)
    {
        const char *k = json_string_value(json_object_get(kv, "key"));
        if (k && strcmp(k, key) == 0)
            return any_text(json_object_get(kv, "value"), buf, cap);
    }
    return NULL;
}

/* A KeyValue array as [[key, text], ...]; values without a text form (arrays, maps) as compact
 * JSON. Returns a new reference, or NULL when attrs is not an array or memory ran out. */
static json_t *attr_pairs(const json_t *attrs)
{
    json_t *out = json_is_array(attrs) ? json_array() : NULL;
    size_t i;
    const json_t *kv;
    char buf[32];
    json_array_foreach(attrs, i, kv)
    {
        const char *k = json_string_value(json_object_get(kv, "key"));
        const json_t *val = json_object_get(kv, "value");
        const char *v = any_text(val, buf, sizeof(buf));
        char *dump = v || !val ? NULL : json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
        if (k && out)
            json_array_append_new(out, json_pack("[ss]", k, v ? v : dump ? dump : ""));
        free(dump);
    }
    return out;
}

/* The events as [{"name", "t_ns" (from the span's start), "attrs"}]. NULL when there are none. */
static json_t *event_list(const json_t *events, uint64_t start_ns)
{
    json_t *out = json_array_size(events) ? json_array() : NULL;
    size_t i;
    const json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *name = json_string_value(json_object_get(ev, "name"));
        uint64_t t = start_ns, d;
        if (json_u64(json_object_get(ev, "timeUnixNano"), &t) < 0)
            t = start_ns;
        d = t >= start_ns ? t - start_ns : start_ns - t;
        d = d > INT64_MAX ? INT64_MAX : d;
        json_t *attrs = attr_pairs(json_object_get(ev, "attributes"));
        json_t *e = json_pack("{sssIso}", "name", name ? name : "", "t_ns",
                              (json_int_t)(t >= start_ns ? (int64_t)d : -(int64_t)d), "attrs",
                              attrs ? attrs : json_array());
        if (out && e)
            json_array_append_new(out, e);
    }
    return out;
}

/* kind as an integer or as the enum's name ("SPAN_KIND_SERVER"); anything else is UNSPECIFIED. */
static int parse_kind(const json_t *j)
{
    static const char *const names[] = {"SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL",
                                        "SPAN_KIND_SERVER",      "SPAN_KIND_CLIENT",
                                        "SPAN_KIND_PRODUCER",    "SPAN_KIND_CONSUMER"};
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        return v >= 0 && v <= LDT__KIND_CONSUMER ? (int)v : LDT__KIND_UNSPECIFIED;
    }
    const char *s = json_string_value(j);
    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0)
            return (int)i;
    return LDT__KIND_UNSPECIFIED;
}

/* status.code as an integer or as the enum's name; anything else is UNSET. */
static int parse_status(const json_t *status)
{
    const json_t *c = json_object_get(status, "code");
    if (json_is_integer(c)) {
        json_int_t v = json_integer_value(c);
        return v >= 0 && v <= 2 ? (int)v : 0;
    }
    const char *s = json_string_value(c);
    if (s && strcmp(s, "STATUS_CODE_ERROR") == 0)
        return 2;
    if (s && strcmp(s, "STATUS_CODE_OK") == 0)
        return 1;
    return 0;
}

/* The first "exception" event: a one-line summary and the stack trace. Returns 0 or -ENOMEM. */
static int parse_exception(struct ldt__span *sp, const json_t *events)
{
    size_t i;
    const json_t *ev;
    char b1[32], b2[32], b3[32];
    json_array_foreach(events, i, ev)
    {
        const char *name = json_string_value(json_object_get(ev, "name"));
        if (!name || strcmp(name, "exception") != 0)
            continue;
        const json_t *attrs = json_object_get(ev, "attributes");
        const char *type = attr_text(attrs, "exception.type", b1, sizeof(b1));
        const char *msg = attr_text(attrs, "exception.message", b2, sizeof(b2));
        const char *stack = attr_text(attrs, "exception.stacktrace", b3, sizeof(b3));
        char sum[512];
        snprintf(sum, sizeof(sum), "%s%s%s", type ? type : "", type && msg ? ": " : "",
                 msg ? msg : "");
        sp->exception = dup_clean(sum[0] ? sum : stack ? stack : "exception");
        sp->stacktrace = stack ? strdup(stack) : NULL;
        if (!sp->exception || (stack && !sp->stacktrace))
            return -ENOMEM;
        first_line(sp->exception);
        return 0;
    }
    return 0;
}

/* Fill the HTTP attributes of a span. Returns 0 or -ENOMEM. */
static int parse_http_attrs(struct ldt__span *sp, const json_t *attrs)
{
    char nb[32], pb[32], cb[32];
    const char *method = attr_text(attrs, "http.request.method", nb, sizeof(nb));
    const char *path = attr_text(attrs, "url.path", pb, sizeof(pb));
    const char *code = attr_text(attrs, "http.response.status_code", cb, sizeof(cb));
    if (!code)
        code = attr_text(attrs, "http.status_code", cb, sizeof(cb)); /* pre-1.21 convention */
    if (code) {
        char *end;
        long v = strtol(code, &end, 10);
        sp->http_code = (*end == '\0' && v > 0 && v < 1000) ? (int)v : 0;
    }
    sp->method = dup_clean(method);
    sp->path = dup_clean(path);
    if ((method && !sp->method) || (path && !sp->path))
        return -ENOMEM;
    char ab[64], portb[32];
    const char *addr = attr_text(attrs, "server.address", ab, sizeof(ab));
    const char *port = attr_text(attrs, "server.port", portb, sizeof(portb));
    if (addr && sp->kind == LDT__KIND_CLIENT) {
        char peer[320];
        snprintf(peer, sizeof(peer), "%s%s%s", addr, port ? ":" : "", port ? port : "");
        if (!(sp->peer = dup_clean(peer)))
            return -ENOMEM;
    }
    return 0;
}

static void span_free(struct ldt__span *sp)
{
    free(sp->service);
    free(sp->name);
    free(sp->method);
    free(sp->path);
    free(sp->peer);
    free(sp->exception);
    free(sp->stacktrace);
    json_decref(sp->attrs);
    json_decref(sp->events);
    memset(sp, 0, sizeof(*sp));
}

/* Ids and times; returns -EINVAL when the span is unusable. */
static int parse_ids_times(struct ldt__span *sp, const json_t *js)
{
    if (parse_hex_id(json_string_value(json_object_get(js, "traceId")), 16, sp->trace_id) < 0 ||
        parse_hex_id(json_string_value(json_object_get(js, "spanId")), 8, sp->span_id) < 0)
        return -EINVAL;
    const char *parent = json_string_value(json_object_get(js, "parentSpanId"));
    if (parent && *parent && parse_hex_id(parent, 8, sp->parent_id) < 0)
        return -EINVAL;
    if (json_u64(json_object_get(js, "startTimeUnixNano"), &sp->start_ns) < 0)
        return -EINVAL;
    if (json_u64(json_object_get(js, "endTimeUnixNano"), &sp->end_ns) < 0)
        sp->end_ns = sp->start_ns; /* an unfinished span: draw it as an instant */
    if (sp->end_ns < sp->start_ns)
        sp->end_ns = sp->start_ns;
    return 0;
}

/* Parse one span object into sp. Returns 0, -EINVAL (skip it) or -ENOMEM. */
static int parse_span(struct ldt__span *sp, const json_t *js, const char *service)
{
    memset(sp, 0, sizeof(*sp));
    if (!json_is_object(js) || parse_ids_times(sp, js) < 0)
        return -EINVAL;
    sp->kind = parse_kind(json_object_get(js, "kind"));
    sp->status = parse_status(json_object_get(js, "status"));
    const char *name = json_string_value(json_object_get(js, "name"));
    sp->name = dup_clean(name ? name : "");
    sp->service = dup_clean(service);
    int rc = (!sp->name || !sp->service) ? -ENOMEM : 0;
    if (rc == 0)
        rc = parse_http_attrs(sp, json_object_get(js, "attributes"));
    if (rc == 0)
        rc = parse_exception(sp, json_object_get(js, "events"));
    if (rc == 0) {
        sp->attrs = attr_pairs(json_object_get(js, "attributes"));
        sp->events = event_list(json_object_get(js, "events"), sp->start_ns);
    }
    if (rc < 0)
        span_free(sp);
    return rc;
}

static int spans_push(struct ldt__spans *s, const struct ldt__span *sp)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        struct ldt__span *v = realloc(s->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = *sp;
    return 0;
}

/* Append the spans of one ScopeSpans array. Returns spans added or -ENOMEM. */
static int add_scope_spans(struct ldt__spans *s, const json_t *scopes, const char *service)
{
    int added = 0;
    size_t i, k;
    const json_t *scope, *js;
    json_array_foreach(scopes, i, scope)
    {
        json_array_foreach(json_object_get(scope, "spans"), k, js)
        {
            struct ldt__span sp;
            int rc = parse_span(&sp, js, service);
            if (rc == -ENOMEM)
                return rc;
            if (rc < 0) {
                s->bad_spans++;
                continue;
            }
            if (spans_push(s, &sp) < 0) {
                span_free(&sp);
                return -ENOMEM;
            }
            added++;
        }
    }
    return added;
}

/* Append the spans of one ResourceSpans object. Returns spans added or -ENOMEM. */
static int add_resource_spans(struct ldt__spans *s, const json_t *rs)
{
    char buf[32];
    const json_t *attrs = json_object_get(json_object_get(rs, "resource"), "attributes");
    const char *service = attr_text(attrs, "service.name", buf, sizeof(buf));
    const json_t *scopes = json_object_get(rs, "scopeSpans");
    if (!scopes) /* the name used before OTLP 0.15 */
        scopes = json_object_get(rs, "instrumentationLibrarySpans");
    return add_scope_spans(s, scopes, service && *service ? service : "unknown_service");
}

int ldt__spans_parse_line(struct ldt__spans *s, const char *line, size_t len)
{
    json_error_t err;
    json_t *root = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
    const json_t *rss = json_object_get(root, "resourceSpans");
    if (!json_is_array(rss)) {
        json_decref(root);
        return -EINVAL;
    }
    int total = 0;
    size_t i;
    const json_t *rs;
    json_array_foreach(rss, i, rs)
    {
        int rc = add_resource_spans(s, rs);
        if (rc < 0) {
            json_decref(root);
            return rc;
        }
        total += rc;
    }
    json_decref(root);
    return total;
}

/* True when a line holds only white space. */
static int blank(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return 0;
    return 1;
}

int ldt__spans_load_stream(struct ldt__spans *s, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int total = 0, rc = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        if (blank(line, (size_t)n))
            continue;
        s->lines++;
        rc = (size_t)n > MAX_LINE_BYTES ? -EINVAL : ldt__spans_parse_line(s, line, (size_t)n);
        if (rc == -ENOMEM)
            break;
        if (rc < 0)
            s->bad_lines++;
        else
            total += rc;
        rc = 0;
    }
    if (rc == 0 && ferror(f))
        rc = -EIO;
    free(line);
    return rc < 0 ? rc : total;
}

int ldt__spans_load_file(struct ldt__spans *s, const char *path)
{
    if (strcmp(path, "-") == 0)
        return ldt__spans_load_stream(s, stdin);
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    int rc = ldt__spans_load_stream(s, f);
    fclose(f);
    return rc;
}

int ldt__span_is_error(const struct ldt__span *sp)
{
    return sp->status == 2 || sp->exception != NULL;
}

void ldt__spans_free(struct ldt__spans *s)
{
    for (size_t i = 0; i < s->n; i++)
        span_free(&s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* ---- grouping into traces ---- */

/* qsort context: qsort has none, and the CLI is single-threaded. */
static const struct ldt__spans *sort_spans;

/* Order span indices by trace id, then start time, then span id (a total, deterministic order). */
static int cmp_by_trace(const void *a, const void *b)
{
    const struct ldt__span *x = &sort_spans->v[*(const size_t *)a];
    const struct ldt__span *y = &sort_spans->v[*(const size_t *)b];
    int c = strcmp(x->trace_id, y->trace_id);
    if (c)
        return c;
    if (x->start_ns != y->start_ns)
        return x->start_ns < y->start_ns ? -1 : 1;
    c = strcmp(x->span_id, y->span_id);
    if (c)
        return c;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

/* Newest first; equal start times by trace id so the order is stable. */
static int cmp_trace_newest(const void *a, const void *b)
{
    const struct ldt__trace *x = a, *y = b;
    if (x->start_ns != y->start_ns)
        return x->start_ns > y->start_ns ? -1 : 1;
    return strcmp(x->trace_id, y->trace_id);
}

/* Order span indices by span id, then start time, then position. */
static int cmp_by_id(const void *a, const void *b)
{
    const struct ldt__span *x = &sort_spans->v[*(const size_t *)a];
    const struct ldt__span *y = &sort_spans->v[*(const size_t *)b];
    int c = strcmp(x->span_id, y->span_id);
    if (c)
        return c;
    if (x->start_ns != y->start_ns)
        return x->start_ns < y->start_ns ? -1 : 1;
    return *(const size_t *)a < *(const size_t *)b ? -1 : (*(const size_t *)a > *(const size_t *)b);
}

size_t ldt__trace_lookup(const struct ldt__spans *s, const struct ldt__trace *t, const char *id)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->v[t->by_id[mid]].span_id, id);
        if (c == 0)
            return t->by_id[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

/* Build by_id and drop repeated span ids (keeping the earliest). Returns 0 or -ENOMEM. */
static int trace_index(const struct ldt__spans *s, struct ldt__trace *t)
{
    if (!(t->by_id = malloc(t->n * sizeof(*t->by_id))))
        return -ENOMEM;
    memcpy(t->by_id, t->idx, t->n * sizeof(*t->idx));
    sort_spans = s;
    qsort(t->by_id, t->n, sizeof(*t->by_id), cmp_by_id);
    size_t uniq = 0;
    for (size_t i = 0; i < t->n; i++)
        if (uniq == 0 || strcmp(s->v[t->by_id[uniq - 1]].span_id, s->v[t->by_id[i]].span_id))
            t->by_id[uniq++] = t->by_id[i];
    size_t n = t->n, keep = 0;
    t->n = uniq;
    for (size_t i = 0; i < n; i++)
        if (ldt__trace_lookup(s, t, s->v[t->idx[i]].span_id) == t->idx[i])
            t->idx[keep++] = t->idx[i];
    return 0;
}

/* Fill the summary fields. The root is the earliest span without a parent, else the earliest whose
 * parent is not in the file, else (a cycle) the earliest span. */
static void trace_summarise(const struct ldt__spans *s, struct ldt__trace *t)
{
    size_t orphan = SIZE_MAX;
    t->trace_id = s->v[t->idx[0]].trace_id;
    t->start_ns = UINT64_MAX;
    t->root = SIZE_MAX;
    for (size_t i = 0; i < t->n; i++) {
        const struct ldt__span *sp = &s->v[t->idx[i]];
        t->start_ns = sp->start_ns < t->start_ns ? sp->start_ns : t->start_ns;
        t->end_ns = sp->end_ns > t->end_ns ? sp->end_ns : t->end_ns;
        t->errors += ldt__span_is_error(sp) ? 1 : 0;
        if (!sp->parent_id[0] && t->root == SIZE_MAX)
            t->root = t->idx[i];
        else if (sp->parent_id[0] && orphan == SIZE_MAX &&
                 ldt__trace_lookup(s, t, sp->parent_id) == SIZE_MAX)
            orphan = t->idx[i];
    }
    if (t->root == SIZE_MAX)
        t->root = orphan != SIZE_MAX ? orphan : t->idx[0];
}

int ldt__traces_build(const struct ldt__spans *s, struct ldt__traces *out)
{
    memset(out, 0, sizeof(*out));
    if (s->n == 0)
        return 0;
    size_t *all = malloc(s->n * sizeof(*all));
    out->v = calloc(s->n, sizeof(*out->v));
    if (!all || !out->v) {
        free(all);
        free(out->v);
        out->v = NULL;
        return -ENOMEM;
    }
    for (size_t i = 0; i < s->n; i++)
        all[i] = i;
    sort_spans = s;
    qsort(all, s->n, sizeof(*all), cmp_by_trace);
    for (size_t i = 0; i < s->n;) {
        size_t j = i;
        while (j < s->n && strcmp(s->v[all[j]].trace_id, s->v[all[i]].trace_id) == 0)
            j++;
        struct ldt__trace *t = &out->v[out->n++];
        if (!(t->idx = malloc((j - i) * sizeof(*t->idx)))) {
            free(all);
            ldt__traces_free(out);
            return -ENOMEM;
        }
        memcpy(t->idx, all + i, (j - i) * sizeof(*t->idx));
        t->n = j - i;
        if (trace_index(s, t) < 0) {
            free(all);
            ldt__traces_free(out);
            return -ENOMEM;
        }
        trace_summarise(s, t);
        i = j;
    }
    free(all);
    qsort(out->v, out->n, sizeof(*out->v), cmp_trace_newest);
    return 0;
}

int ldt__traces_find(const struct ldt__traces *t, const char *id)
{
    size_t len = id ? strlen(id) : 0;
    if (len == 0)
        return -EINVAL;
    int found = -ENOENT;
    for (size_t i = 0; i < t->n; i++) {
        if (strncasecmp(t->v[i].trace_id, id, len) != 0)
            continue;
        if (strlen(t->v[i].trace_id) == len)
            return (int)i; /* an exact match wins over longer ids sharing the prefix */
        found = found == -ENOENT ? (int)i : -EEXIST;
    }
    return found;
}

void ldt__traces_free(struct ldt__traces *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->v[i].idx);
        free(t->v[i].by_id);
    }
    free(t->v);
    memset(t, 0, sizeof(*t));
}
