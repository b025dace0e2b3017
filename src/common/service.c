/* service.c - a service name from a command line: the program, or the script an interpreter runs */
#include "common/common.h"

#include <string.h>

/* How an interpreter's command line is read: which options carry program text (no script then),
 * which take an argument (attached "-Ilib" or the next word "-I lib"), which take only an attached
 * one ("perl -l" alone is a flag), which name the script or a module. Long options (--x) take no
 * separate argument unless listed. This follows each interpreter's own option parser closely
 * enough for service names, not exactly. */
struct interp {
    const char *name;          /* base name, optionally followed by a version: python3.11 */
    const char *code;          /* -c, -e: the program is on the command line */
    const char *witharg;
    const char *attached;
    const char *script;        /* php -f FILE */
    const char *module;        /* python -m MOD (kept whole: "http.server") */
    const char *const *long_arg;
    const char *const *long_code;
};

static const char *const node_long_arg[] = {"--require", "--import", "--loader",
    "--experimental-loader", "--conditions", "--title", "--env-file", "--input-type", NULL};
static const char *const node_long_code[] = {"--eval", "--print", NULL};
static const char *const python_long_arg[] = {"--check-hash-based-pycs", NULL};
static const char *const none[] = {NULL};

static const struct interp interps[] = {
    {"python", "c", "WX", "", "", "m", python_long_arg, none},
    {"pypy", "c", "WX", "", "", "m", python_long_arg, none},
    {"node", "ep", "rC", "", "", "", node_long_arg, node_long_code},
    {"nodejs", "ep", "rC", "", "", "", node_long_arg, node_long_code},
    {"ruby", "e", "IrCE", "0xTWKFl", "", "", none, none},
    {"perl", "eE", "I", "MmlixFCDd0", "", "", none, none},
    {"php", "r", "dctzS", "", "f", "", none, none},
};

/* java options that take the next word as their argument. */
static const char *const java_arg[] = {"-cp", "-classpath", "--class-path", "-p", "--module-path",
    "--upgrade-module-path", "--add-modules", "--add-opens", "--add-exports", "--add-reads",
    "--patch-module", "--limit-modules", "--enable-native-access", NULL};

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void put(char *out, size_t cap, const char *s, size_t n)
{
    if (cap == 0)
        return;
    if (n > cap - 1)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* A script's name: base name without its last extension ("/x/y/svc.py" -> "svc"). */
static void put_script(char *out, size_t cap, const char *path)
{
    const char *b = base_name(path);
    const char *dot = strrchr(b, '.');
    put(out, cap, b, (dot && dot != b) ? (size_t)(dot - b) : strlen(b));
}

static int in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return 1;
    return 0;
}

/* "python3.11" matches "python": the name, then only digits and dots. */
static const struct interp *find_interp(const char *prog)
{
    for (size_t i = 0; i < LDT_ARRAY_LEN(interps); i++) {
        size_t n = strlen(interps[i].name);
        if (strncmp(prog, interps[i].name, n) == 0 &&
            strspn(prog + n, "0123456789.") == strlen(prog + n))
            return &interps[i];
    }
    return NULL;
}

enum found { F_NONE, F_CODE, F_SCRIPT, F_MODULE };

/* One short-option cluster "-uBm" at argv[*i]. Returns what it names (in *val) or F_NONE. */
static enum found short_opts(const struct interp *ip, char *const *argv, int argc, int *i,
                             const char **val)
{
    for (const char *p = argv[*i] + 1; *p; p++) {
        const char *rest = p[1] ? p + 1 : (*i + 1 < argc ? argv[*i + 1] : NULL);
        int next = p[1] == '\0';
        if (strchr(ip->code, *p))
            return F_CODE;
        if (strchr(ip->attached, *p))
            return F_NONE;
        int is_mod = ip->module[0] && *p == ip->module[0];
        int is_scr = ip->script[0] && *p == ip->script[0];
        if (!is_mod && !is_scr && !strchr(ip->witharg, *p))
            continue;
        *i += next;
        if (rest == NULL)
            return F_NONE;
        *val = rest;
        return is_mod ? F_MODULE : is_scr ? F_SCRIPT : F_NONE;
    }
    return F_NONE;
}

/* Walks an interpreter's options up to the script. */
static enum found scan_interp(const struct interp *ip, char *const *argv, int argc,
                              const char **val)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            *val = i + 1 < argc ? argv[i + 1] : NULL;
            return *val ? F_SCRIPT : F_NONE;
        }
        if (a[0] != '-') {
            *val = a;
            return F_SCRIPT;
        }
        if (a[1] == '\0')
            return F_CODE; /* "-": the program comes from stdin */
        if (a[1] == '-') {
            if (in_list(ip->long_code, a))
                return F_CODE;
            i += in_list(ip->long_arg, a);
            continue;
        }
        enum found f = short_opts(ip, argv, argc, &i, val);
        if (f != F_NONE)
            return f;
    }
    return F_NONE;
}

/* java: "-jar x.jar" -> x, "-m mod/cls" -> cls, "com.x.Main" -> com.x.Main, "App.java" -> App. */
static int java_name(char *const *argv, int argc, char *out, size_t cap)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 < argc && strcmp(a, "-jar") == 0) {
            put_script(out, cap, argv[i + 1]);
            return 1;
        }
        if (i + 1 < argc && (strcmp(a, "-m") == 0 || strcmp(a, "--module") == 0)) {
            const char *slash = strchr(argv[i + 1], '/');
            put(out, cap, slash ? slash + 1 : argv[i + 1], strlen(slash ? slash + 1 : argv[i + 1]));
            return 1;
        }
        if (a[0] != '-') {
            size_t n = strlen(a);
            if (n > 5 && strcmp(a + n - 5, ".java") == 0)
                put_script(out, cap, a);
            else
                put(out, cap, a, n);
            return 1;
        }
        i += in_list(java_arg, a);
    }
    return 0;
}

void ldt_config_service_from_argv(char *const *argv, int argc, char *out, size_t cap)
{
    if (argc < 1 || argv[0] == NULL || argv[0][0] == '\0') {
        put(out, cap, "unknown_service", 15);
        return;
    }
    const char *prog = base_name(argv[0]);
    if (prog[0] == '-' && prog[1] != '\0')
        prog++; /* a login shell: "-bash" */
    put(out, cap, prog, strlen(prog)); /* the default, also for an interpreter without a script */
    if (strcmp(prog, "java") == 0) {
        java_name(argv, argc, out, cap);
        return;
    }
    const struct interp *ip = find_interp(prog);
    const char *val = NULL;
    enum found f = ip ? scan_interp(ip, argv, argc, &val) : F_NONE;
    if (f == F_MODULE)
        put(out, cap, val, strlen(val));
    else if (f == F_SCRIPT && base_name(val)[0] != '\0')
        put_script(out, cap, val);
}
