/* exec_worker.c - test server for process trees across exec: "serve" accepts, forks and execs this
 * binary again as a "worker" with the connection as fd 0 and 1; the worker reads the request from
 * fd 0, calls an upstream (GET the same path) and writes the answer to fd 1.
 *
 * Usage: exec_worker serve PORT UPSTREAM_PORT (exec_worker worker UPSTREAM_PORT is what it runs).
 * The answer (Connection: close) is one line "pid=<worker pid> upstream=<status> bytes=<upstream
 * body length>". No tracing code: it is traced only through LD_PRELOAD.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proctree_http.h"

/* The worker: the request on fd 0, the answer on fd 1 (both the accepted socket). */
static int worker(int upstream)
{
    if (pt_serve(0, 1, upstream) != 0)
        return 1;
    shutdown(1, SHUT_WR);
    return 0;
}

static void spawn_worker(int c, int lfd, const char *upstream)
{
    if (fork() != 0)
        return;
    dup2(c, 0);
    dup2(c, 1);
    close(c);
    close(lfd);
    execl("/proc/self/exe", "exec_worker", "worker", upstream, (char *)NULL);
    _exit(127);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "worker") == 0)
        return worker(atoi(argv[2]));
    if (argc != 4 || strcmp(argv[1], "serve") != 0) {
        fprintf(stderr, "usage: exec_worker serve PORT UPSTREAM_PORT\n");
        return 2;
    }
    int lfd = pt_listen_on("exec_worker", atoi(argv[2]));
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        spawn_worker(c, lfd, argv[3]);
        close(c);
    }
}
