/* errno_probe.c - prints the return value and errno of many failing and succeeding I/O calls.
 *
 * Usage: errno_probe. Exercises a bad fd, a closed socket, a refused connect (blocking and not), a
 * non-blocking receive with no data, a peer that closed or shut down, a regular file, a pipe and
 * socketpairs, through read, write, send, recv, readv, writev, sendmsg, recvmsg, sendto, recvfrom,
 * sendfile, accept and connect. Before each call errno is set to 7777, so a call that succeeds must
 * leave exactly that behind. One line per call: "label ret=R errno=E"; descriptors print as "fd" so
 * the output does not depend on numbering. Run with and without the shim, the output must be
 * identical. Exit status 0. On stderr: "shim=loaded" or "shim=absent".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define BAD_FD 987

static void report(const char *label, long r, int e, int is_fd)
{
    if (is_fd && r >= 0)
        printf("%-28s ret=fd errno=%d\n", label, e);
    else
        printf("%-28s ret=%ld errno=%d%s%s\n", label, r, e, r < 0 ? " " : "",
               r < 0 ? strerror(e) : "");
}

#define CALL(label, expr)                                                                          \
    do {                                                                                           \
        errno = 7777;                                                                              \
        long r_ = (long)(expr);                                                                    \
        report(label, r_, errno, 0);                                                               \
    } while (0)

#define CALLFD(label, var, expr)                                                                   \
    do {                                                                                           \
        errno = 7777;                                                                              \
        var = (expr);                                                                              \
        report(label, var, errno, 1);                                                              \
    } while (0)

static char buf[4096];
static struct iovec iov = {buf, 16};
static struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

static struct sockaddr_in loop_addr(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sa;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = loop_addr(0);
    socklen_t sl = sizeof(sa);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

static void bad_fd(void)
{
    struct sockaddr_in sa = loop_addr(1);
    CALL("bad.read", read(BAD_FD, buf, 16));
    CALL("bad.write", write(BAD_FD, buf, 16));
    CALL("bad.send", send(BAD_FD, buf, 16, 0));
    CALL("bad.recv", recv(BAD_FD, buf, 16, 0));
    CALL("bad.readv", readv(BAD_FD, &iov, 1));
    CALL("bad.writev", writev(BAD_FD, &iov, 1));
    CALL("bad.sendmsg", sendmsg(BAD_FD, &msg, 0));
    CALL("bad.recvmsg", recvmsg(BAD_FD, &msg, 0));
    CALL("bad.sendto", sendto(BAD_FD, buf, 16, 0, NULL, 0));
    CALL("bad.recvfrom", recvfrom(BAD_FD, buf, 16, 0, NULL, NULL));
    CALL("bad.connect", connect(BAD_FD, (struct sockaddr *)&sa, sizeof(sa)));
    CALL("bad.accept", accept(BAD_FD, NULL, NULL));
    CALL("bad.accept4", accept4(BAD_FD, NULL, NULL, SOCK_CLOEXEC));
    CALL("bad.shutdown", shutdown(BAD_FD, SHUT_RDWR));
    CALL("bad.close", close(BAD_FD));
    CALL("bad.close_neg", close(-1));
}

static void closed_and_refused(void)
{
    int s, port = free_port();
    struct sockaddr_in sa = loop_addr(port);
    CALLFD("closed.socket", s, socket(AF_INET, SOCK_STREAM, 0));
    CALL("closed.close", close(s));
    CALL("closed.send", send(s, buf, 16, MSG_NOSIGNAL));
    CALL("closed.recv", recv(s, buf, 16, 0));
    CALL("closed.close_again", close(s));
    CALLFD("refused.socket", s, socket(AF_INET, SOCK_STREAM, 0));
    CALL("refused.connect", connect(s, (struct sockaddr *)&sa, sizeof(sa)));
    CALL("refused.send", send(s, buf, 16, MSG_NOSIGNAL));
    CALL("refused.recv", recv(s, buf, 16, 0));
    CALL("refused.close", close(s));
    CALLFD("refused_nb.socket", s, socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    CALL("refused_nb.connect", connect(s, (struct sockaddr *)&sa, sizeof(sa)));
    struct pollfd p = {.fd = s, .events = POLLOUT};
    CALL("refused_nb.poll", poll(&p, 1, 5000));
    int err = 0;
    socklen_t el = sizeof(err);
    CALL("refused_nb.getsockopt", getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el));
    printf("%-28s so_error=%d\n", "refused_nb.so_error", err);
    CALL("refused_nb.close", close(s));
    CALLFD("unconnected.socket", s, socket(AF_INET, SOCK_STREAM, 0));
    CALL("unconnected.send", send(s, buf, 16, MSG_NOSIGNAL));
    CALL("unconnected.recv_dontwait", recv(s, buf, 16, MSG_DONTWAIT));
    CALL("unconnected.accept", accept(s, NULL, NULL));
    CALL("unconnected.close", close(s));
}

/* A connected TCP pair on 127.0.0.1: *cli and *srv. */
static void tcp_pair(int *cli, int *srv)
{
    int lsn;
    struct sockaddr_in sa = loop_addr(0);
    socklen_t sl = sizeof(sa);
    CALLFD("tcp.listen_socket", lsn, socket(AF_INET, SOCK_STREAM, 0));
    CALL("tcp.bind", bind(lsn, (struct sockaddr *)&sa, sizeof(sa)));
    CALL("tcp.listen", listen(lsn, 4));
    getsockname(lsn, (struct sockaddr *)&sa, &sl);
    CALLFD("tcp.socket", *cli, socket(AF_INET, SOCK_STREAM, 0));
    CALL("tcp.connect", connect(*cli, (struct sockaddr *)&sa, sizeof(sa)));
    CALLFD("tcp.accept", *srv, accept(lsn, NULL, NULL));
    CALL("tcp.listen_read", read(lsn, buf, 16));
    CALL("tcp.listen_close", close(lsn));
}

static void tcp(void)
{
    int cli, srv;
    tcp_pair(&cli, &srv);
    CALL("tcp.recv_dontwait", recv(srv, buf, 16, MSG_DONTWAIT));
    CALL("tcp.fcntl_nonblock", fcntl(srv, F_SETFL, O_NONBLOCK));
    CALL("tcp.read_eagain", read(srv, buf, 16));
    CALL("tcp.recv_eagain", recv(srv, buf, 16, 0));
    CALL("tcp.readv_eagain", readv(srv, &iov, 1));
    CALL("tcp.recvmsg_eagain", recvmsg(srv, &msg, 0));
    CALL("tcp.recvfrom_eagain", recvfrom(srv, buf, 16, 0, NULL, NULL));
    CALL("tcp.send", send(cli, "\x01\x02binary\x00hello", 14, 0));
    CALL("tcp.write", write(cli, "\xffmore", 5));
    usleep(20000);
    CALL("tcp.read", read(srv, buf, sizeof(buf)));
    CALL("tcp.read_zero_len", read(srv, buf, 0));
    int f = open("/proc/self/exe", O_RDONLY);
    CALL("tcp.sendfile", sendfile(cli, f, NULL, 100));
    CALL("tcp.sendfile_bad_in", sendfile(cli, BAD_FD, NULL, 100));
    CALL("tcp.sendfile_bad_out", sendfile(BAD_FD, f, NULL, 100));
    close(f);
    usleep(20000);
    CALL("tcp.recv_sendfile", recv(srv, buf, sizeof(buf), 0));
    CALL("tcp.shutdown_wr", shutdown(cli, SHUT_WR));
    CALL("tcp.write_after_shutdown", send(cli, "x", 1, MSG_NOSIGNAL));
    usleep(20000);
    CALL("tcp.read_eof", read(srv, buf, sizeof(buf)));
    CALL("tcp.recv_eof", recv(srv, buf, sizeof(buf), 0));
    CALL("tcp.cli_close", close(cli));
    usleep(20000);
    CALL("tcp.send_to_closed_peer", send(srv, "abc", 3, MSG_NOSIGNAL));
    usleep(20000);
    CALL("tcp.send_after_rst", send(srv, "abc", 3, MSG_NOSIGNAL));
    CALL("tcp.srv_close", close(srv));
}

static void regular_file(void)
{
    char path[] = "/tmp/ldt-errno-probe-XXXXXX";
    int fd, ro, dir;
    CALLFD("file.mkstemp", fd, mkstemp(path));
    CALL("file.write", write(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27));
    CALL("file.writev", writev(fd, &iov, 1));
    CALL("file.lseek", lseek(fd, 0, SEEK_SET));
    CALL("file.read", read(fd, buf, sizeof(buf)));
    CALL("file.read_eof", read(fd, buf, sizeof(buf)));
    CALL("file.send", send(fd, buf, 4, 0));
    CALL("file.recv", recv(fd, buf, 4, 0));
    volatile int bad_cnt = -1;
    CALL("file.readv_einval", readv(fd, &iov, bad_cnt));
    CALL("file.close", close(fd));
    CALLFD("file.open_ro", ro, open(path, O_RDONLY));
    CALL("file.write_ro", write(ro, "x", 1));
    CALL("file.read_ro", read(ro, buf, 4));
    CALL("file.close_ro", close(ro));
    CALLFD("file.open_dir", dir, open("/tmp", O_RDONLY | O_DIRECTORY));
    CALL("file.read_dir", read(dir, buf, 4));
    CALL("file.close_dir", close(dir));
    CALL("file.unlink", unlink(path));
}

static void pipe_and_pairs(void)
{
    int p[2], sp[2], dg[2];
    CALL("pipe.pipe2", pipe2(p, O_NONBLOCK));
    CALL("pipe.read_empty", read(p[0], buf, 16));
    CALL("pipe.write_http", write(p[1], "GET / HTTP/1.1\r\n\r\n", 18));
    CALL("pipe.read", read(p[0], buf, sizeof(buf)));
    printf("%-28s %.14s\n", "pipe.bytes", buf);
    CALL("pipe.write_read_end", write(p[0], "x", 1));
    CALL("pipe.send", send(p[1], "x", 1, 0));
    CALL("pipe.close_w", close(p[1]));
    CALL("pipe.read_eof", read(p[0], buf, 16));
    CALL("pipe.close_r", close(p[0]));
    CALL("pair.socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, sp));
    CALL("pair.recv_dontwait", recv(sp[0], buf, 16, MSG_DONTWAIT));
    CALL("pair.send", send(sp[1], "\x00ping\x00", 6, 0));
    CALL("pair.writev", writev(sp[1], &iov, 1));
    CALL("pair.recv", recv(sp[0], buf, 6, 0));
    CALL("pair.readv", readv(sp[0], &iov, 1));
    CALL("pair.close1", close(sp[1]));
    CALL("pair.read_eof", read(sp[0], buf, 16));
    CALL("pair.write_closed", send(sp[0], "x", 1, MSG_NOSIGNAL));
    CALL("pair.close0", close(sp[0]));
    CALL("dgram.socketpair", socketpair(AF_UNIX, SOCK_DGRAM, 0, dg));
    CALL("dgram.send", send(dg[0], "datagram", 8, 0));
    CALL("dgram.recv_short", recv(dg[1], buf, 4, 0));
    CALL("dgram.recv_empty", recv(dg[1], buf, 4, MSG_DONTWAIT));
    CALL("dgram.sendmsg", sendmsg(dg[0], &msg, 0));
    CALL("dgram.recvmsg", recvmsg(dg[1], &msg, 0));
    CALL("dgram.close0", close(dg[0]));
    CALL("dgram.close1", close(dg[1]));
}

/* On stderr (stdout must not differ between runs): whether libldtrace.so is mapped here. */
static void report_shim(void)
{
    char line[1024];
    int found = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    while (f && !found && fgets(line, sizeof(line), f))
        found = strstr(line, "/libldtrace.so") != NULL;
    if (f)
        fclose(f);
    fprintf(stderr, "shim=%s\n", found ? "loaded" : "absent");
}

int main(void)
{
    report_shim();
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    memset(buf, 'a', sizeof(buf));
    bad_fd();
    closed_and_refused();
    tcp();
    regular_file();
    pipe_and_pairs();
    return 0;
}
