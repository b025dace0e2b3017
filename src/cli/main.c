/* main.c - the `ldtrace` command line: run / stop / view / analyze / html / demo, in cmd_*.c. */
#include "cli.h"

#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: ldtrace COMMAND [ARGS]\n"
               "  run [--service NAME] [--out FILE | --otlp URL] [--dir DIR] -- CMD ARGS...\n"
               "                     run CMD under the tracer (starts a sidecar when none runs)\n"
               "  stop [--dir DIR]   drain and stop the sidecar of DIR\n"
               "  view FILE [--trace ID | --last] [--width N]\n"
               "                     list the traces in an OTLP JSON file, or draw one\n"
               "  analyze FILE [--trace ID] [--format text|json|dot|mermaid]\n"
               "                     critical path, bottleneck, latency, error origin, retries\n"
               "  html FILE [-o OUT.html] [--trace ID]\n"
               "                     write a self-contained HTML page (list, waterfall, service\n"
               "                     graph, span details)\n"
               "  demo               run the one-command demo (scripts/demo of the source tree)\n"
               "  version            print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0)
        return ldt__run_main(argc - 1, argv + 1);
    if (strcmp(cmd, "stop") == 0)
        return ldt__stop_main(argc - 1, argv + 1);
    if (strcmp(cmd, "view") == 0)
        return ldt__view_main(argc - 1, argv + 1);
    if (strcmp(cmd, "analyze") == 0)
        return ldt__analyze_main(argc - 1, argv + 1);
    if (strcmp(cmd, "html") == 0)
        return ldt__html_main(argc - 1, argv + 1);
    if (strcmp(cmd, "demo") == 0)
        return ldt__demo_main(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("ldtrace %s\n", LDT_VERSION_STRING);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "ldtrace: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
