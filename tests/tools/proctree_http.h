/* proctree_http.h - the one-request HTTP server and upstream client shared by the process-tree test
 * servers (prefork_server, inetd_server, exec_worker). No tracing code: they are traced only through
 * LD_PRELOAD. */
#ifndef LDT_TOOLS_PROCTREE_HTTP_H
#define LDT_TOOLS_PROCTREE_HTTP_H

/* Listen on 127.0.0.1:port (backlog 64) or exit(1) with a message naming `who`. */
int pt_listen_on(const char *who, int port);

/* Serve one request: read it from in_fd, GET the same path from the upstream on 127.0.0.1, and write
 * to out_fd the answer (Connection: close) "pid=<this pid> upstream=<status> bytes=<body length>".
 * Returns 0, or -1 when the request could not be read or the answer not written. */
int pt_serve(int in_fd, int out_fd, int upstream);

#endif
