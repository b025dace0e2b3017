/* prefork_server.c - test server for process trees: listen, fork 3 children that accept and serve,
 * each request calling an upstream (GET the same path) before answering.
 *
 * Usage: prefork_server PORT UPSTREAM_PORT. The answer (Connection: close) is one line
 * "pid=<serving pid> upstream=<upstream status> bytes=<upstream body length>". The parent only
 * waits; SIGTERM to it stops the children too. No tracing code: it is traced only through
 * LD_PRELOAD.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proctree_http.h"

#define NCHILD 3

static void child_loop(int lfd, int upstream)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        pt_serve(c, c, upstream);
        shutdown(c, SHUT_WR);
        close(c);
    }
}

static pid_t kids[NCHILD];

static void on_term(int sig)
{
    (void)sig;
    for (int i = 0; i < NCHILD; i++)
        kill(kids[i], SIGTERM);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: prefork_server PORT UPSTREAM_PORT\n");
        return 2;
    }
    int lfd = pt_listen_on("prefork_server", atoi(argv[1])), upstream = atoi(argv[2]);
    signal(SIGTERM, on_term);
    for (int i = 0; i < NCHILD; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            signal(SIGTERM, SIG_DFL);
            child_loop(lfd, upstream);
        }
    }
    for (;;)
        pause();
}
