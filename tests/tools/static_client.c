/* static_client.c - a tiny HTTP/1.1 client linked statically (-static), to show what LD_PRELOAD
 * cannot reach: it makes its socket calls through the libc copy inside the binary, so the shim
 * never sees them.
 *
 * Also built dynamically as dyn_client: the control that the shim does trace, and the program a
 * test makes setuid root (glibc then ignores LD_PRELOAD).
 *
 * Usage: static_client [--uring] PORT PATH. Sends "GET PATH" to 127.0.0.1:PORT with Connection:
 * close and writes the whole response (status line, headers, body) to stdout. With --uring,
 * connect, send and recv are io_uring operations (raw syscalls, no liburing), which no libc wrapper
 * sees either. Exit status 0 for a 200 answer, 1 otherwise, 3 when io_uring is not available.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A one-entry-at-a-time io_uring: submit one operation, wait for its completion. */
struct uring {
    int fd;
    unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
};

static struct uring ring;
static int use_uring;

static void *map_ring(size_t len, off_t off)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring.fd, off);
    return p == MAP_FAILED ? NULL : p;
}

static int uring_init(void)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    ring.fd = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (ring.fd < 0)
        return -1;
    char *sq = map_ring(p.sq_off.array + p.sq_entries * sizeof(unsigned), IORING_OFF_SQ_RING);
    char *cq =
        map_ring(p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), IORING_OFF_CQ_RING);
    ring.sqes = map_ring(p.sq_entries * sizeof(struct io_uring_sqe), IORING_OFF_SQES);
    if (!sq || !cq || !ring.sqes)
        return -1;
    ring.sq_tail = (unsigned *)(sq + p.sq_off.tail);
    ring.sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    ring.sq_array = (unsigned *)(sq + p.sq_off.array);
    ring.cq_head = (unsigned *)(cq + p.cq_off.head);
    ring.cq_tail = (unsigned *)(cq + p.cq_off.tail);
    ring.cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
}

/* Submit op and wait for it: the operation's result (>= 0, or -errno). */
static int uring_do(const struct io_uring_sqe *op)
{
    unsigned tail = *ring.sq_tail, idx = tail & *ring.sq_mask;
    ring.sqes[idx] = *op;
    ring.sq_array[idx] = idx;
    __atomic_store_n(ring.sq_tail, tail + 1,
                     __ATOMIC_RELEASE); /* pairs with the kernel's acquire */
    if (syscall(__NR_io_uring_enter, ring.fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
        return -errno;
    unsigned head = *ring.cq_head;
    if (head == __atomic_load_n(ring.cq_tail, __ATOMIC_ACQUIRE))
        return -EAGAIN;
    int res = ring.cqes[head & *ring.cq_mask].res;
    __atomic_store_n(ring.cq_head, head + 1, __ATOMIC_RELEASE);
    return res;
}

static int do_connect(int fd, const struct sockaddr_in *a)
{
    if (!use_uring)
        return connect(fd, (const struct sockaddr *)a, sizeof(*a));
    struct io_uring_sqe op = {.opcode = IORING_OP_CONNECT, .fd = fd};
    op.addr = (unsigned long)a;
    op.off = sizeof(*a);
    return uring_do(&op) == 0 ? 0 : -1;
}

/* send (out != 0) or recv through libc or io_uring. */
static ssize_t do_io(int fd, void *buf, size_t len, int out)
{
    if (!use_uring)
        return out ? send(fd, buf, len, 0) : recv(fd, buf, len, 0);
    struct io_uring_sqe op = {.opcode = out ? IORING_OP_SEND : IORING_OP_RECV, .fd = fd};
    op.addr = (unsigned long)buf;
    op.len = (unsigned)len;
    return uring_do(&op);
}

static int get(int port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || do_connect(fd, &a) != 0)
        return -1;
    char req[1200];
    int l = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    if (do_io(fd, req, (size_t)l, 1) != l)
        return -1;
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = do_io(fd, buf + n, cap - 1 - n, 0)) > 0)
        n += (size_t)r;
    close(fd);
    buf[n] = '\0';
    return (int)n;
}

int main(int argc, char **argv)
{
    static char buf[1 << 16];
    use_uring = argc == 4 && strcmp(argv[1], "--uring") == 0;
    argv += use_uring;
    argc -= use_uring;
    if (argc != 3) {
        fprintf(stderr, "usage: static_client [--uring] PORT PATH\n");
        return 2;
    }
    if (use_uring && uring_init() != 0) {
        perror("static_client: io_uring");
        return 3;
    }
    int n = get(atoi(argv[1]), argv[2], buf, sizeof(buf));
    if (n < 0) {
        perror("static_client");
        return 1;
    }
    fwrite(buf, 1, (size_t)n, stdout);
    return strncmp(buf, "HTTP/1.1 200", 12) == 0 ? 0 : 1;
}
