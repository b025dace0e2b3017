/* test_matrix_lib.c - helpers for the matrix and process-tree integration tests (see
 * test_matrix_lib.h). */
#include "test_matrix_lib.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int mx_failures;

int mx_asan(void)
{
    const char *first = getenv("ITEST_PRELOAD_FIRST");
    return first && *first;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void mx_rmrf(const char *dir)
{
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int write_nginx_conf(const char *prefix, int port, int upstream, const char *extra)
{
    char path[ITEST_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/nginx.conf", prefix);
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f,
            "user root;\nworker_processes 1;\nevents { worker_connections 512; }\n"
            "http {\n  access_log off;\n"
            "  client_body_temp_path %s/client_temp;\n  proxy_temp_path %s/proxy_temp;\n"
            "  fastcgi_temp_path %s/fastcgi_temp;\n  uwsgi_temp_path %s/uwsgi_temp;\n"
            "  scgi_temp_path %s/scgi_temp;\n"
            "  upstream up { server 127.0.0.1:%d; keepalive 8; }\n"
            "  server {\n    listen 127.0.0.1:%d;\n    keepalive_requests 10000;\n"
            "    location /static/ { root %s; sendfile on; }\n"
            "    location / { proxy_pass http://up; proxy_http_version 1.1;\n"
            "      proxy_set_header Connection \"\"; %s }\n  }\n}\n",
            prefix, prefix, prefix, prefix, prefix, upstream, port, prefix, extra ? extra : "");
    return fclose(f) == 0 ? 0 : -errno;
}

pid_t mx_nginx_start(struct mx_nginx *n, const struct itest_env *e, int port, int upstream)
{
    return mx_nginx_start_with(n, e, port, upstream, NULL);
}

pid_t mx_nginx_start_with(struct mx_nginx *n, const struct itest_env *e, int port, int upstream,
                          const char *extra)
{
    n->pid = -1;
    int rc = itest_mkdtemp(n->prefix);
    if (rc < 0 || (rc = write_nginx_conf(n->prefix, port, upstream, extra)) < 0)
        return rc;
    char globals[ITEST_PATH_MAX * 3], err[ITEST_PATH_MAX + 32];
    snprintf(globals, sizeof(globals), "daemon off; pid %s/nginx.pid; error_log %s/error.log;",
             n->prefix, n->prefix);
    snprintf(err, sizeof(err), "%s/stderr", n->prefix);
    char *argv[] = {MX_NGINX, "-p", n->prefix, "-c", "nginx.conf", "-g", globals, NULL};
    n->pid = itest_start_server(e, argv, port, err);
    return n->pid;
}

void mx_nginx_stop(struct mx_nginx *n)
{
    if (n->pid > 0) {
        /* SIGQUIT: graceful shutdown, the worker finishes and exits before the master. */
        kill(n->pid, SIGQUIT);
        if (itest_wait(n->pid, 5000) == -ETIMEDOUT)
            fprintf(stderr, "mx: nginx did not quit in 5 s\n");
    }
    n->pid = -1;
    mx_rmrf(n->prefix);
}

static long resource_pid(json_t *rs)
{
    size_t i;
    json_t *kv;
    json_array_foreach(json_object_get(json_object_get(rs, "resource"), "attributes"), i, kv)
    {
        if (strcmp(json_string_value(json_object_get(kv, "key")) ?: "", "process.pid") != 0)
            continue;
        json_t *v = json_object_get(json_object_get(kv, "value"), "intValue");
        return json_is_string(v) ? strtol(json_string_value(v), NULL, 10) : json_integer_value(v);
    }
    return -1;
}

static void pids_of_request(json_t *map, json_t *req)
{
    size_t i, j, k;
    json_t *rs, *sc, *sp;
    json_array_foreach(json_object_get(req, "resourceSpans"), i, rs)
    {
        long pid = resource_pid(rs);
        json_array_foreach(json_object_get(rs, "scopeSpans"), j, sc)
        {
            json_array_foreach(json_object_get(sc, "spans"), k, sp)
            {
                char id[17];
                snprintf(id, sizeof(id), "%s",
                         json_string_value(json_object_get(sp, "spanId")) ?: "");
                for (char *p = id; *p; p++)
                    *p = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
                json_object_set_new(map, id, json_integer(pid));
            }
        }
    }
}

json_t *mx_span_pids(const char *path)
{
    json_t *map = json_object();
    char *text = itest_slurp(path, NULL);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        else
            next = line + strlen(line);
        json_t *req = json_loads(line, 0, NULL);
        if (req)
            pids_of_request(map, req);
        json_decref(req);
    }
    free(text);
    return map;
}

long mx_pid(json_t *pids, const struct itest_span *s)
{
    json_t *v = json_object_get(pids, s->span_id);
    return v ? (long)json_integer_value(v) : -1;
}

size_t mx_distinct_pids(const struct itest_spans *sp, json_t *pids, const char *service)
{
    json_t *seen = json_object();
    for (size_t i = 0; i < sp->n; i++) {
        if (service && strcmp(sp->v[i].service, service) != 0)
            continue;
        char key[32];
        snprintf(key, sizeof(key), "%ld", mx_pid(pids, &sp->v[i]));
        json_object_set_new(seen, key, json_true());
    }
    size_t n = json_object_size(seen);
    json_decref(seen);
    return n;
}

static int is_trace_header(json_t *h)
{
    const char *name = json_string_value(json_array_get(h, 0)) ?: "";
    return strcasecmp(name, "traceparent") == 0 || strcasecmp(name, "tracestate") == 0;
}

/* Calls fn on each JSON line of body; stops and returns -1 at a line that does not parse. */
static int each_line(const char *body, void (*fn)(json_t *, void *), void *arg)
{
    int n = 0;
    char *copy = strdup(body);
    for (char *line = copy, *next; line && *line; line = next, n++) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        else
            next = line + strlen(line);
        json_t *j = json_loads(line, 0, NULL);
        if (!j) {
            free(copy);
            return -1;
        }
        fn(j, arg);
        json_decref(j);
    }
    free(copy);
    return n;
}

struct canon {
    char *out;
    size_t len;
};

static void canon_line(json_t *j, void *arg)
{
    struct canon *c = arg;
    json_object_del(j, "client_port");
    json_t *hs = json_object_get(j, "headers");
    for (size_t i = json_array_size(hs); i-- > 0;)
        if (is_trace_header(json_array_get(hs, i)))
            json_array_remove(hs, i);
    char *s = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    size_t l = strlen(s);
    c->out = realloc(c->out, c->len + l + 2);
    memcpy(c->out + c->len, s, l);
    c->len += l;
    c->out[c->len++] = '\n';
    c->out[c->len] = '\0';
    free(s);
}

char *mx_canonical(const char *body)
{
    struct canon c = {calloc(1, 1), 0};
    if (each_line(body, canon_line, &c) < 0) {
        free(c.out);
        return NULL;
    }
    return c.out;
}

struct hcount {
    const char *name;
    int min, max, lines;
};

static void count_line(json_t *j, void *arg)
{
    struct hcount *h = arg;
    size_t i;
    json_t *kv;
    int n = 0;
    json_array_foreach(json_object_get(j, "headers"), i, kv) n +=
        strcasecmp(json_string_value(json_array_get(kv, 0)) ?: "", h->name) == 0;
    h->min = h->lines == 0 || n < h->min ? n : h->min;
    h->max = n > h->max ? n : h->max;
    h->lines++;
}

int mx_header_counts(const char *body, const char *name, int *min, int *max)
{
    struct hcount h = {name, 0, 0, 0};
    int rc = each_line(body, count_line, &h);
    *min = h.min;
    *max = h.max;
    return rc < 0 ? -1 : h.lines;
}

const struct itest_span *mx_one(const struct itest_spans *sp, int kind, const char *service,
                                const char *path)
{
    if (itest_count(sp, kind, service, "url.path", path) != 1)
        return NULL;
    return itest_find(sp, kind, service, "url.path", path);
}

void mx_conc_trace(char *out, unsigned c, unsigned i)
{
    snprintf(out, 33, "c0c0%04x%08x0000000000000001", c & 0xffffu, i);
}

/* One request of mx_accuracy. */
static void accuracy_one(const struct itest_spans *sp, const char *proxy, const char *upstream,
                         const char *path, const char *trace, struct mx_accuracy *a)
{
    const struct itest_span *srv = mx_one(sp, ITEST_SERVER, proxy, path);
    const struct itest_span *cli = mx_one(sp, ITEST_CLIENT, proxy, path);
    const struct itest_span *up = mx_one(sp, ITEST_SERVER, upstream, path);
    a->total++;
    if ((cli && strcmp(cli->trace_id, trace) != 0) || (up && strcmp(up->trace_id, trace) != 0)) {
        a->wrong_trace++;
        fprintf(stderr, "mx: %s: wrong trace: client %s, upstream %s, expected %s\n", path,
                cli ? cli->trace_id : "-", up ? up->trace_id : "-", trace);
    } else if (!srv || !cli || !up) {
        a->missing++;
        fprintf(stderr, "mx: %s: missing span: server %d client %d upstream %d\n", path, !!srv,
                !!cli, !!up);
    } else if (strcmp(cli->parent_id, srv->span_id) == 0 && strcmp(srv->trace_id, trace) == 0 &&
               strcmp(up->parent_id, cli->span_id) == 0) {
        a->right++;
    } else {
        fprintf(stderr, "mx: %s: wrong parent %s (server span %s)\n", path, cli->parent_id,
                srv->span_id);
    }
}

void mx_accuracy(const struct itest_spans *sp, const char *proxy, const char *upstream,
                 const char *prefix, int nconn, int nreq, struct mx_accuracy *a)
{
    memset(a, 0, sizeof(*a));
    for (int c = 0; c < nconn; c++) {
        for (int i = 0; i < nreq; i++) {
            char path[128], trace[33];
            snprintf(path, sizeof(path), "/%s/%d/%d", prefix, c, i);
            mx_conc_trace(trace, (unsigned)c, (unsigned)i);
            accuracy_one(sp, proxy, upstream, path, trace, a);
        }
    }
}
