/* cmd_demo.c - `ldtrace demo`: runs the source tree's one-command demo (scripts/demo) in place.
 *
 * The source root is compiled in (LDT_SOURCE_ROOT, from src/cli/meson.build), so the command works
 * from any directory as long as the checkout the binary was built from is still there; an installed
 * ldtrace whose sources are gone says so in one line.
 */
#include "cli.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef LDT_SOURCE_ROOT
#define LDT_SOURCE_ROOT ""
#endif

int ldt__demo_script(const char *root, char *out, size_t cap)
{
    struct stat st;
    if (!root || !*root)
        return -ENOENT;
    int n = snprintf(out, cap, "%s/scripts/demo", root);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    if (stat(out, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || access(out, X_OK) < 0)
        return -ENOENT;
    return 0;
}

int ldt__demo_main(int argc, char **argv)
{
    char script[4096];
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: ldtrace demo\n"
               "  runs %s/scripts/demo: five services traced by the shim alone, their traces\n"
               "  drawn, analysed and written as an HTML page\n",
               *LDT_SOURCE_ROOT ? LDT_SOURCE_ROOT : "<source tree>");
        return 0;
    }
    int rc = ldt__demo_script(LDT_SOURCE_ROOT, script, sizeof(script));
    if (rc < 0) {
        fprintf(stderr,
                "ldtrace: demo: %s/scripts/demo: %s (the demo runs from the source tree "
                "ldtrace was built from)\n",
                LDT_SOURCE_ROOT, strerror(-rc));
        return 1;
    }
    fflush(stdout);
    argv[0] = script; /* extra arguments are passed on */
    execv(script, argv);
    fprintf(stderr, "ldtrace: demo: exec %s: %s\n", script, strerror(errno));
    return 1;
}
