/* inetd_server.c - test server for process trees in the inetd style: accept, fork, the parent
 * closes its copy of the connection, the child reads the request, calls an upstream (GET the same
 * path) and answers.
 *
 * Usage: inetd_server PORT UPSTREAM_PORT. The answer (Connection: close) is one line
 * "pid=<serving pid> upstream=<upstream status> bytes=<upstream body length>". The parent never
 * reads or writes a connection. No tracing code: it is traced only through LD_PRELOAD.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proctree_http.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: inetd_server PORT UPSTREAM_PORT\n");
        return 2;
    }
    int lfd = pt_listen_on("inetd_server", atoi(argv[1])), upstream = atoi(argv[2]);
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        if (fork() == 0) {
            close(lfd);
            pt_serve(c, c, upstream);
            shutdown(c, SHUT_WR);
            close(c);
            _exit(0);
        }
        close(c);
    }
}
