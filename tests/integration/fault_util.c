/* fault_util.c - raw HTTP client, load threads, demo services and ldtraced as children, /proc
 * figures for the fault, hostile-input and soak integration tests. */
#include "fault_util.h"

#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

double fu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void fu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int fu_asan(void)
{
    const char *f = getenv("ITEST_PRELOAD_FIRST");
    return f && *f;
}

/* ---- raw HTTP client ---- */

int fu_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {10, 0};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int fu_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static long content_length(const char *head)
{
    for (const char *p = head; (p = strchr(p, '\n')) != NULL;) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0)
            return strtol(p + 15, NULL, 10);
    }
    return 0;
}

int fu_read_response(int fd, char *out, size_t cap)
{
    char buf[65536];
    size_t n = 0;
    long need = -1;
    size_t hdr = 0;
    for (;;) {
        if (need >= 0 && n >= hdr + (size_t)need)
            break;
        if (n == sizeof(buf))
            return -EMSGSIZE;
        ssize_t r = recv(fd, buf + n, sizeof(buf) - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -EPIPE;
        n += (size_t)r;
        if (need < 0) {
            char *end = memmem(buf, n, "\r\n\r\n", 4);
            if (!end)
                continue;
            hdr = (size_t)(end - buf) + 4;
            buf[hdr - 1] = '\0';
            need = content_length(buf);
            buf[hdr - 1] = '\n';
        }
    }
    size_t k = n < cap - 1 ? n : cap - 1;
    memcpy(out, buf, k);
    out[k] = '\0';
    if (strncmp(buf, "HTTP/1.", 7) != 0 || n < 12)
        return -EPROTO;
    return atoi(buf + 9);
}

int fu_roundtrip(int fd, const char *req, size_t len, char *out, size_t cap)
{
    int rc = fu_send_all(fd, req, len);
    return rc < 0 ? rc : fu_read_response(fd, out, cap);
}

/* ---- load ---- */

static void *load_main(void *arg)
{
    struct fu_load *l = arg;
    int fd = -1;
    char req[512], resp[4096];
    while (!atomic_load(&l->stop)) {
        long i = atomic_fetch_add(&l->issued, 1);
        if (l->max > 0 && i >= l->max)
            break;
        if (fd < 0 && (fd = fu_connect(l->port)) < 0) {
            atomic_fetch_add(&l->failed, 1);
            fu_sleep_ms(5);
            continue;
        }
        char path[256];
        snprintf(path, sizeof(path), l->path_fmt, (int)(i % 100000) + 1);
        int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
        if (fu_roundtrip(fd, req, (size_t)n, resp, sizeof(resp)) > 0) {
            atomic_fetch_add(&l->done, 1);
            if (l->pace_us)
                usleep((useconds_t)l->pace_us);
        } else {
            atomic_fetch_add(&l->failed, 1);
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

void fu_load_start(struct fu_load *l)
{
    atomic_store(&l->done, 0);
    atomic_store(&l->failed, 0);
    atomic_store(&l->issued, 0);
    atomic_store(&l->stop, 0);
    cr_assert(l->nconn > 0 && l->nconn <= 64);
    for (int i = 0; i < l->nconn; i++)
        cr_assert(pthread_create(&l->th[i], NULL, load_main, l) == 0);
}

void fu_load_join(struct fu_load *l)
{
    atomic_store(&l->stop, 1);
    for (int i = 0; i < l->nconn; i++)
        pthread_join(l->th[i], NULL);
}

/* ---- children ---- */

pid_t fu_service(const char *name, const char *dir, int *port, const char *const extra[],
                 struct itest_env *env_or_null)
{
    struct itest_env own;
    struct itest_env *env = env_or_null;
    if (!env) {
        env = &own;
        itest_env_init(env);
        if (dir)
            cr_assert(itest_env_trace(env, dir, name) == 0, "the shim is not built");
    }
    char rel[64], portarg[16];
    snprintf(rel, sizeof(rel), "demo-services/%s", name);
    *port = itest_free_port();
    snprintf(portarg, sizeof(portarg), "%d", *port);
    char *argv[32] = {itest_build(rel), "--port", portarg, "--latency", "0", "--jitter", "0"};
    int n = 7;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    pid_t pid = itest_start_server(env, argv, *port, NULL);
    if (env == &own)
        itest_env_free(env);
    cr_assert(pid > 0, "%s did not start", name);
    return pid;
}

pid_t fu_sidecar(const char *dir, const char *out, const char *err_path)
{
    struct itest_env env;
    itest_env_init(&env);
    if (fu_asan())
        itest_env_set(&env, "ASAN_OPTIONS", "detect_leaks=0:quarantine_size_mb=16");
    char *argv[] = {itest_build("src/sidecar/ldtraced"),
                    "--dir",
                    (char *)dir,
                    "--out",
                    (char *)out,
                    "--poll-ms",
                    "2",
                    NULL};
    pid_t pid = itest_spawn_io(&env, argv, NULL, err_path);
    itest_env_free(&env);
    cr_assert(pid > 0, "ldtraced did not start");
    return pid;
}

/* ---- /proc and files ---- */

long fu_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

int fu_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

size_t fu_count_in_file(const char *path, const char *needle)
{
    size_t len, n = 0, nl = strlen(needle);
    char *s = itest_slurp(path, &len);
    if (!s)
        return 0;
    for (const char *p = s; (p = memmem(p, len - (size_t)(p - s), needle, nl)) != NULL; p += nl)
        n++;
    free(s);
    return n;
}

/* Span ids of SERVER spans of service in one ExportTraceServiceRequest; appended to *ids. */
static void request_ids(json_t *req, const char *service, char (**ids)[17], size_t *n, size_t *cap)
{
    size_t i, j, k, a;
    json_t *rs, *ss, *sp, *kv;
    json_array_foreach(json_object_get(req, "resourceSpans"), i, rs)
    {
        const char *svc = NULL;
        json_array_foreach(json_object_get(json_object_get(rs, "resource"), "attributes"), a, kv)
        {
            if (strcmp(json_string_value(json_object_get(kv, "key")) ?: "", "service.name") == 0)
                svc =
                    json_string_value(json_object_get(json_object_get(kv, "value"), "stringValue"));
        }
        if (service && (!svc || strcmp(svc, service) != 0))
            continue;
        json_array_foreach(json_object_get(rs, "scopeSpans"), j, ss)
        {
            json_array_foreach(json_object_get(ss, "spans"), k, sp)
            {
                json_t *kind = json_object_get(sp, "kind");
                if (!(json_integer_value(kind) == 2 ||
                      strcmp(json_string_value(kind) ?: "", "SPAN_KIND_SERVER") == 0))
                    continue;
                if (*n == *cap) {
                    *cap = *cap ? *cap * 2 : 1024;
                    *ids = realloc(*ids, *cap * sizeof(**ids));
                    cr_assert_not_null(*ids);
                }
                snprintf((*ids)[(*n)++], 17, "%s",
                         json_string_value(json_object_get(sp, "spanId")) ?: "");
            }
        }
    }
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(a, b, 17);
}

size_t fu_server_spans(const char *const files[], const char *service, size_t *dups,
                       size_t *bad_lines)
{
    char(*ids)[17] = NULL;
    size_t n = 0, cap = 0, bad = 0;
    for (int f = 0; files[f]; f++) {
        size_t len;
        char *text = itest_slurp(files[f], &len);
        for (char *line = text, *nl; line && line < text + len; line = nl + 1) {
            nl = memchr(line, '\n', len - (size_t)(line - text));
            if (!nl)
                nl = text + len;
            if (nl == line)
                continue;
            json_t *req = json_loadb(line, (size_t)(nl - line), 0, NULL);
            if (!req) {
                bad++;
                continue;
            }
            request_ids(req, service, &ids, &n, &cap);
            json_decref(req);
        }
        free(text);
    }
    if (n)
        qsort(ids, n, sizeof(*ids), cmp_id);
    *dups = 0;
    for (size_t i = 1; i < n; i++)
        *dups += memcmp(ids[i], ids[i - 1], 17) == 0;
    free(ids);
    if (bad_lines)
        *bad_lines = bad;
    return n;
}
