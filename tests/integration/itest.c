/* itest.c - integration test helpers: child processes, ports, ldtraced runs, OTLP JSON spans. */
#include "itest.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- paths ---- */

static char *path_buf(void)
{
    static char bufs[8][ITEST_PATH_MAX];
    static unsigned next;
    return bufs[next++ % 8];
}

static char *rooted(const char *var, const char *fallback, const char *rel)
{
    const char *root = getenv(var);
    char *out = path_buf();
    snprintf(out, ITEST_PATH_MAX, "%s/%s", root && *root ? root : fallback, rel);
    return out;
}

char *itest_src(const char *rel)
{
    return rooted("LDT_SOURCE_ROOT", ".", rel);
}

char *itest_build(const char *rel)
{
    return rooted("LDT_BUILD_ROOT", ".", rel);
}

int itest_mkdtemp(char *out)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(out, ITEST_PATH_MAX, "%s/ldt-itest-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(out))
        return -errno;
    return 0;
}

void itest_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[ITEST_PATH_MAX * 2];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int itest_count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    int n = 0;
    struct dirent *de;
    size_t sl = suffix ? strlen(suffix) : 0;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (sl && (l < sl || strcmp(de->d_name + l - sl, suffix) != 0))
            continue;
        n++;
    }
    closedir(d);
    return n;
}

char *itest_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* ---- environment ---- */

static int is_tracing_var(const char *kv)
{
    return strncmp(kv, "LD_PRELOAD=", 11) == 0 || strncmp(kv, "LDTRACE_", 8) == 0 ||
           strncmp(kv, "OTEL_", 5) == 0;
}

static void env_push(struct itest_env *e, char *kv)
{
    if (e->n + 2 > e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->vars = realloc(e->vars, e->cap * sizeof(*e->vars));
        if (!e->vars)
            abort();
    }
    e->vars[e->n++] = kv;
    e->vars[e->n] = NULL;
}

void itest_env_init(struct itest_env *e)
{
    memset(e, 0, sizeof(*e));
    for (char **p = environ; *p; p++)
        if (!is_tracing_var(*p))
            env_push(e, strdup(*p));
    if (!e->vars)
        env_push(e, strdup("ITEST=1"));
}

void itest_env_set(struct itest_env *e, const char *name, const char *value)
{
    size_t nl = strlen(name);
    char *kv = malloc(nl + strlen(value) + 2);
    if (!kv)
        abort();
    sprintf(kv, "%s=%s", name, value);
    for (size_t i = 0; i < e->n; i++) {
        if (strncmp(e->vars[i], name, nl) == 0 && e->vars[i][nl] == '=') {
            free(e->vars[i]);
            e->vars[i] = kv;
            return;
        }
    }
    env_push(e, kv);
}

/* In a sanitizer build the shim itself is instrumented, so the sanitizer runtime must be the first
 * object in the child's link map: meson passes its path in ITEST_PRELOAD_FIRST. Leak checking is
 * off in children (python and curl are not ours to fix). */
int itest_env_trace(struct itest_env *e, const char *dir, const char *service)
{
    const char *first = getenv("ITEST_PRELOAD_FIRST");
    char preload[ITEST_PATH_MAX * 2];
    const char *shim = itest_build("src/shim/libldtrace.so");
    if (first && *first) {
        snprintf(preload, sizeof(preload), "%s %s", first, shim);
        itest_env_set(e, "ASAN_OPTIONS", "detect_leaks=0:verify_asan_link_order=0");
    } else {
        snprintf(preload, sizeof(preload), "%s", shim);
    }
    itest_env_set(e, "LD_PRELOAD", preload);
    itest_env_set(e, "LDTRACE_DIR", dir);
    if (service)
        itest_env_set(e, "OTEL_SERVICE_NAME", service);
    return access(shim, R_OK) == 0 ? 0 : -ENOENT;
}

void itest_env_free(struct itest_env *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->vars[i]);
    free(e->vars);
    memset(e, 0, sizeof(*e));
}

/* ---- processes ---- */

static int open_out(const char *path)
{
    if (!path)
        return open("/dev/null", O_WRONLY | O_CLOEXEC);
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

/* Between fork and exec only async-signal-safe calls: the test process may have threads. */
static void child_exec(const struct itest_env *e, char *const argv[], int in, int out, int err)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(126);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    execve(argv[0], argv, e->vars);
    _exit(127);
}

pid_t itest_spawn_io(const struct itest_env *e, char *const argv[], const char *out_path,
                     const char *err_path)
{
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = open_out(out_path);
    int same = out_path && err_path && strcmp(out_path, err_path) == 0;
    int err = same ? fcntl(out, F_DUPFD_CLOEXEC, 0) : open_out(err_path);
    pid_t pid = -EIO;
    if (in >= 0 && out >= 0 && err >= 0) {
        pid = fork();
        if (pid == 0)
            child_exec(e, argv, in, out, err);
        if (pid < 0)
            pid = -errno;
    }
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (err >= 0)
        close(err);
    return pid;
}

pid_t itest_spawn(const struct itest_env *e, char *const argv[], const char *out_path)
{
    return itest_spawn_io(e, argv, out_path, NULL);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int decode_status(int st)
{
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return -EIO;
}

int itest_wait(pid_t pid, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return decode_status(st);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (now_ms() >= end)
            break;
        usleep(2000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -ETIMEDOUT;
}

int itest_stop(pid_t pid)
{
    if (pid <= 0)
        return -EINVAL;
    kill(pid, SIGTERM);
    return itest_wait(pid, 2000);
}

int itest_has_shim(pid_t pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, "/libldtrace.so") != NULL;
    fclose(f);
    return found;
}

void itest_settle(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int itest_run(const struct itest_env *e, char *const argv[], const char *out_path, int timeout_ms)
{
    pid_t pid = itest_spawn(e, argv, out_path);
    if (pid < 0)
        return (int)pid;
    return itest_wait(pid, timeout_ms);
}

int itest_make_cert(const char *cert, const char *key)
{
    struct itest_env plain;
    itest_env_init(&plain);
    char *argv[] = {"/usr/bin/openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    (char *)key,
                    "-out",
                    (char *)cert,
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    NULL};
    int rc = itest_run(&plain, argv, NULL, 20000);
    itest_env_free(&plain);
    return rc;
}

pid_t itest_start_server(const struct itest_env *e, char *const argv[], int port,
                         const char *err_path)
{
    pid_t pid = itest_spawn_io(e, argv, err_path, err_path);
    if (pid < 0)
        return pid;
    int rc = itest_wait_port(port, 10000);
    if (rc < 0) {
        fprintf(stderr, "itest: %s did not listen on 127.0.0.1:%d\n", argv[0], port);
        itest_stop(pid);
        return rc;
    }
    return pid;
}

void itest_get_argv(char **argv, const char *const headers[], const char *const urls[])
{
    const char *first = getenv("ITEST_PRELOAD_FIRST");
    size_t n = 0;
    if (first && *first) {
        argv[n++] = ITEST_PYTHON;
        argv[n++] = itest_src("tests/integration/py/client.py");
    } else {
        static char *const curl[] = {ITEST_CURL, "-s", "-S", "--max-time", "10"};
        for (size_t i = 0; i < 5; i++)
            argv[n++] = curl[i];
    }
    for (size_t i = 0; headers && headers[i]; i++) {
        argv[n++] = "-H";
        argv[n++] = (char *)headers[i];
    }
    for (size_t i = 0; urls[i]; i++)
        argv[n++] = (char *)urls[i];
    argv[n] = NULL;
}

/* ---- network ---- */

static void loopback(struct sockaddr_in *sa, int port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* Bind 127.0.0.1:port (0: any) and return the port bound, or -errno. */
static int try_bind(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    loopback(&sa, port);
    int rc = -EADDRINUSE;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        rc = ntohs(sa.sin_port);
    close(fd);
    return rc;
}

/* Ports below the kernel's ephemeral range: a port handed out there cannot be taken in the meantime
 * by some other test's outgoing connection, which is what bind(port 0) would risk. */
int itest_free_port(void)
{
    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2)
            lo = 32768;
        fclose(f);
    }
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() * 2654435761u ^ (unsigned)now_ms();
    for (int i = 0; lo > 12000 && i < 64; i++) {
        int port = 10000 + (int)(rand_r(&seed) % (unsigned)(lo - 11000));
        if (try_bind(port) == port)
            return port;
    }
    return try_bind(0);
}

int itest_wait_port(int port, int timeout_ms)
{
    long long end = now_ms() + timeout_ms;
    struct sockaddr_in sa;
    loopback(&sa, port);
    do {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
        close(fd);
        if (rc == 0)
            return 0;
        usleep(10000);
    } while (now_ms() < end);
    return -ETIMEDOUT;
}

/* ---- ldtraced ---- */

int itest_drain(const char *dir, const char *out)
{
    struct itest_env e;
    itest_env_init(&e);
    char *argv[8] = {itest_build("src/sidecar/ldtraced"), "--dir", (char *)dir, "--once"};
    argv[4] = "--out";
    argv[5] = (char *)out;
    char err[ITEST_PATH_MAX + 16];
    snprintf(err, sizeof(err), "%s.stderr", out);
    pid_t pid = itest_spawn_io(&e, argv, NULL, err);
    int rc = pid < 0 ? (int)pid : itest_wait(pid, 20000);
    itest_env_free(&e);
    if (rc != 0 || getenv("ITEST_VERBOSE")) {
        char *msg = itest_slurp(err, NULL);
        fprintf(stderr, "itest: ldtraced --dir %s --once: status %d: %s\n", dir, rc,
                msg ? msg : "");
        free(msg);
    }
    unlink(err);
    return rc;
}

struct itest_spans *itest_drain_load(const char *dir)
{
    char out[ITEST_PATH_MAX + 16];
    snprintf(out, sizeof(out), "%s/spans.json", dir);
    if (itest_drain(dir, out) != 0)
        return NULL;
    return itest_load_spans(out);
}

/* ---- OTLP JSON ---- */

/* An AnyValue ({"stringValue": ..} / {"intValue": "12"} / ...) as a plain JSON value (new ref). */
static json_t *any_value(json_t *v)
{
    json_t *x;
    if ((x = json_object_get(v, "stringValue")) != NULL)
        return json_incref(x);
    if ((x = json_object_get(v, "intValue")) != NULL) {
        if (json_is_string(x))
            return json_integer(strtoll(json_string_value(x), NULL, 10));
        return json_incref(x);
    }
    if ((x = json_object_get(v, "boolValue")) != NULL)
        return json_incref(x);
    if ((x = json_object_get(v, "doubleValue")) != NULL)
        return json_incref(x);
    return json_null();
}

/* attributes: [{"key": k, "value": AnyValue}] -> {k: value} (new ref). */
static json_t *attr_object(json_t *arr)
{
    json_t *obj = json_object();
    size_t i;
    json_t *kv;
    json_array_foreach(arr, i, kv)
    {
        const char *k = json_string_value(json_object_get(kv, "key"));
        if (k)
            json_object_set_new(obj, k, any_value(json_object_get(kv, "value")));
    }
    return obj;
}

static void copy_str(char *dst, size_t cap, json_t *v)
{
    const char *s = json_string_value(v);
    snprintf(dst, cap, "%s", s ? s : "");
    for (char *p = dst; *p; p++)
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
}

/* Span.kind / Status.code as an integer, or as the enum name some encoders write. */
static int enum_value(json_t *v, const char *const names[], int n)
{
    if (json_is_integer(v))
        return (int)json_integer_value(v);
    const char *s = json_string_value(v);
    for (int i = 0; s && i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return 0;
}

static const char *const kind_names[] = {"SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL",
                                         "SPAN_KIND_SERVER",      "SPAN_KIND_CLIENT",
                                         "SPAN_KIND_PRODUCER",    "SPAN_KIND_CONSUMER"};
static const char *const code_names[] = {"STATUS_CODE_UNSET", "STATUS_CODE_OK",
                                         "STATUS_CODE_ERROR"};

static void load_span(struct itest_span *s, json_t *js, const char *service)
{
    memset(s, 0, sizeof(*s));
    copy_str(s->trace_id, sizeof(s->trace_id), json_object_get(js, "traceId"));
    copy_str(s->span_id, sizeof(s->span_id), json_object_get(js, "spanId"));
    copy_str(s->parent_id, sizeof(s->parent_id), json_object_get(js, "parentSpanId"));
    if (strspn(s->parent_id, "0") == strlen(s->parent_id))
        s->parent_id[0] = '\0';
    snprintf(s->name, sizeof(s->name), "%s", json_string_value(json_object_get(js, "name")) ?: "");
    snprintf(s->service, sizeof(s->service), "%s", service ? service : "");
    s->kind = enum_value(json_object_get(js, "kind"), kind_names, 6);
    s->status = enum_value(json_object_get(json_object_get(js, "status"), "code"), code_names, 3);
    s->attrs = attr_object(json_object_get(js, "attributes"));
}

static void push_span(struct itest_spans *ss, json_t *js, const char *service)
{
    struct itest_span *nv = realloc(ss->v, (ss->n + 1) * sizeof(*nv));
    if (!nv)
        abort();
    ss->v = nv;
    load_span(&ss->v[ss->n++], js, service);
}

/* One ExportTraceServiceRequest: resourceSpans[].scopeSpans[].spans[]. */
static void load_request(struct itest_spans *ss, json_t *req)
{
    size_t i, j, k;
    json_t *rs, *sc, *sp;
    json_array_foreach(json_object_get(req, "resourceSpans"), i, rs)
    {
        json_t *rattr = attr_object(json_object_get(json_object_get(rs, "resource"), "attributes"));
        const char *service = json_string_value(json_object_get(rattr, "service.name"));
        json_array_foreach(json_object_get(rs, "scopeSpans"), j, sc)
        {
            json_array_foreach(json_object_get(sc, "spans"), k, sp)
            {
                push_span(ss, sp, service);
            }
        }
        json_decref(rattr);
    }
}

struct itest_spans *itest_load_spans(const char *path)
{
    struct itest_spans *ss = calloc(1, sizeof(*ss));
    size_t len = 0;
    char *text = itest_slurp(path, &len);
    if (!ss || !text)
        return ss;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strspn(line, " \t\r") == strlen(line))
            continue;
        json_error_t jerr;
        json_t *req = json_loads(line, 0, &jerr);
        if (!req || !json_is_object(req)) {
            fprintf(stderr, "itest: %s line %zu: %s\n", path, ss->lines + 1, jerr.text);
            json_decref(req);
            itest_spans_free(ss);
            free(text);
            return NULL;
        }
        ss->lines++;
        load_request(ss, req);
        json_decref(req);
    }
    free(text);
    return ss;
}

void itest_spans_free(struct itest_spans *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        json_decref(s->v[i].attrs);
    free(s->v);
    free(s);
}

/* ---- queries ---- */

const char *itest_attr_str(const struct itest_span *s, const char *key)
{
    return json_string_value(json_object_get(s->attrs, key));
}

long long itest_attr_int(const struct itest_span *s, const char *key, long long dflt)
{
    json_t *v = json_object_get(s->attrs, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v)) {
        char *end;
        long long x = strtoll(json_string_value(v), &end, 10);
        if (end != json_string_value(v) && *end == '\0')
            return x;
    }
    return dflt;
}

/* The attribute as text: strings as they are, numbers and booleans printed. */
static int attr_equals(const struct itest_span *s, const char *key, const char *value)
{
    json_t *v = json_object_get(s->attrs, key);
    char buf[64];
    if (json_is_string(v))
        return strcmp(json_string_value(v), value) == 0;
    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
        return strcmp(buf, value) == 0;
    }
    if (json_is_boolean(v))
        return strcmp(json_is_true(v) ? "true" : "false", value) == 0;
    return 0;
}

static int matches(const struct itest_span *sp, int kind, const char *service, const char *key,
                   const char *value)
{
    if (kind && sp->kind != kind)
        return 0;
    if (service && strcmp(sp->service, service) != 0)
        return 0;
    if (key && !value)
        return json_object_get(sp->attrs, key) != NULL;
    if (key && !attr_equals(sp, key, value))
        return 0;
    return 1;
}

const struct itest_span *itest_find(const struct itest_spans *s, int kind, const char *service,
                                    const char *key, const char *value)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (matches(&s->v[i], kind, service, key, value))
            return &s->v[i];
    return NULL;
}

size_t itest_count(const struct itest_spans *s, int kind, const char *service, const char *key,
                   const char *value)
{
    size_t n = 0;
    for (size_t i = 0; s && i < s->n; i++)
        n += (size_t)matches(&s->v[i], kind, service, key, value);
    return n;
}

const struct itest_span *itest_by_id(const struct itest_spans *s, const char *span_id)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->v[i].span_id, span_id) == 0)
            return &s->v[i];
    return NULL;
}

size_t itest_duplicates(const struct itest_spans *s)
{
    size_t dup = 0;
    for (size_t i = 0; s && i < s->n; i++)
        for (size_t j = i + 1; j < s->n; j++)
            if (strcmp(s->v[i].span_id, s->v[j].span_id) == 0) {
                dup++;
                break;
            }
    return dup;
}

void itest_dump(const struct itest_spans *s)
{
    for (size_t i = 0; s && i < s->n; i++) {
        const struct itest_span *sp = &s->v[i];
        char *attrs = json_dumps(sp->attrs, JSON_COMPACT | JSON_SORT_KEYS);
        fprintf(stderr, "span %zu: svc=%s kind=%d name=%s trace=%s id=%s parent=%s status=%d %s\n",
                i, sp->service, sp->kind, sp->name, sp->trace_id, sp->span_id, sp->parent_id,
                sp->status, attrs ? attrs : "");
        free(attrs);
    }
}
