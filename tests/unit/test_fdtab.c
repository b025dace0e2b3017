/* test_fdtab.c - the per-fd table: lazy chunks, probing once, reset on close and dup2 reuse,
 * threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shim/shim.h"

static void setup(void)
{
    memset(&ldt__cfg, 0, sizeof ldt__cfg);
    ldt__cfg.ratio = 1.0;
    ldt_id_seed();
}

static void sink(const void *rec, size_t len)
{
    (void)rec;
    (void)len;
}

Test(fdtab, entries_are_small)
{
    cr_assert_leq(sizeof(struct ldt__fd), 64); /* issue #9: <= 64 bytes per tracked fd */
}

Test(fdtab, out_of_range_fds_are_not_tracked)
{
    cr_assert_null(ldt__fd_get(-1));
    cr_assert_null(ldt__fd_get((int)(LDT__FD_CHUNK * LDT__FD_MAX_CHUNKS)));
    cr_assert_null(ldt__fd_peek(-5));
}

Test(fdtab, grows_lazily_across_chunks, .init = setup)
{
    int fds[] = {3, (int)LDT__FD_CHUNK - 1, (int)LDT__FD_CHUNK, 5 * (int)LDT__FD_CHUNK + 7,
                 1000000};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        cr_assert_null(ldt__fd_peek(fds[i] + (int)LDT__FD_CHUNK * 300), "unused chunk is unmapped");
        ldt__fd_set(fds[i], LDT__FD_SOCK, LDT__ORIG_SOCKET);
        struct ldt__fd *e = ldt__fd_peek(fds[i]);
        cr_assert_not_null(e);
        cr_assert_eq(atomic_load(&e->kind), LDT__FD_SOCK);
        cr_assert_eq(e->origin, LDT__ORIG_SOCKET);
    }
    /* Neighbours in the same chunk stay unknown. */
    cr_assert_eq(atomic_load(&ldt__fd_peek((int)LDT__FD_CHUNK + 1)->kind), LDT__FD_UNKNOWN);
}

Test(fdtab, probes_once_and_caches, .init = setup)
{
    int sv[2], p[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(pipe(p), 0);
    cr_assert_eq(atomic_load(&ldt__fd_get(sv[0])->kind), LDT__FD_SOCK);
    cr_assert_eq(atomic_load(&ldt__fd_get(p[0])->kind), LDT__FD_OTHER);
    /* The answer is cached: swap what the numbers are and the table still says the old thing. */
    close(p[0]);
    cr_assert_eq(dup2(sv[1], p[0]), p[0]);
    cr_assert_eq(atomic_load(&ldt__fd_get(p[0])->kind), LDT__FD_OTHER);
    /* Until it is reset (what the close and dup2 hooks do): then it is probed again. */
    ldt__fd_reset(p[0]);
    cr_assert_eq(atomic_load(&ldt__fd_peek(p[0])->kind), LDT__FD_UNKNOWN);
    cr_assert_eq(atomic_load(&ldt__fd_get(p[0])->kind), LDT__FD_SOCK);
    int dg = socket(AF_INET, SOCK_DGRAM, 0);
    cr_assert_eq(atomic_load(&ldt__fd_get(dg)->kind), LDT__FD_OTHER,
                 "datagram sockets are not traced");
}

Test(fdtab, reset_releases_the_connection_and_ends_its_spans, .init = setup)
{
    ldt__span_sink = sink;
    int fd = 77;
    ldt__fd_set(fd, LDT__FD_SOCK, LDT__ORIG_ACCEPTED);
    struct ldt__fd *e = ldt__fd_get(fd);
    const char req[] = "GET / HTTP/1.1\r\n\r\n";
    struct iovec v = {(void *)req, sizeof req - 1};
    ldt__sniff_io(fd, e, LDT__IN, &v, 1, (ssize_t)v.iov_len, 0, 1);
    cr_assert_eq(e->cls, LDT__CLS_HTTP);
    struct ldt__conn *c = e->conn;
    cr_assert_eq(c->srv_n, 1);
    ldt__fd_reset(fd);
    cr_assert_null(e->conn);
    cr_assert_eq(e->cls, LDT__CLS_NONE);
    cr_assert_eq(e->bytes_in, 0);
    cr_assert_eq(c->role, LDT__ROLE_NONE, "back in the pool");
    /* The pool hands it out again, zeroed. */
    struct ldt__conn *c2 = ldt__conn_alloc();
    cr_assert_eq(c2, c);
    cr_assert_eq(c2->srv_n, 0);
}

Test(fdtab, set_on_a_reused_number_forgets_the_old_socket, .init = setup)
{
    ldt__span_sink = sink;
    ldt__fd_set(90, LDT__FD_SOCK, LDT__ORIG_CONNECTED);
    struct ldt__fd *e = ldt__fd_get(90);
    e->bytes_out = 123;
    e->cls = LDT__CLS_PASS;
    ldt__fd_set(90, LDT__FD_SOCK, LDT__ORIG_ACCEPTED); /* accept() returned the number again */
    cr_assert_eq(e->bytes_out, 0);
    cr_assert_eq(e->cls, LDT__CLS_NONE);
    cr_assert_eq(e->origin, LDT__ORIG_ACCEPTED);
}

#define THREADS 8
#define PER 2000

static void *worker(void *arg)
{
    int base = (int)(intptr_t)arg;
    for (int i = 0; i < PER; i++) {
        int fd = 200000 + i * THREADS + base; /* all threads race into the same new chunks */
        ldt__fd_set(fd, LDT__FD_SOCK, LDT__ORIG_SOCKET);
        struct ldt__fd *e = ldt__fd_peek(fd);
        if (!e || atomic_load(&e->kind) != LDT__FD_SOCK)
            return (void *)1;
        e->bytes_in = (uint64_t)fd;
    }
    return NULL;
}

Test(fdtab, concurrent_threads_share_chunks, .init = setup)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
    for (int i = 0; i < THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        cr_assert_null(r);
    }
    for (int fd = 200000; fd < 200000 + THREADS * PER; fd++)
        cr_assert_eq(ldt__fd_peek(fd)->bytes_in, (uint64_t)fd, "fd %d lost its write", fd);
}

static void *pool_worker(void *arg)
{
    (void)arg;
    struct ldt__conn *mine[16];
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 16; i++) {
            mine[i] = ldt__conn_alloc();
            if (!mine[i])
                return (void *)1;
            mine[i]->err = (int)(intptr_t)&mine[i];
        }
        for (int i = 0; i < 16; i++) {
            if (mine[i]->err != (int)(intptr_t)&mine[i])
                return (void *)2; /* someone else got the same conn */
            ldt__conn_free(mine[i]);
        }
    }
    return NULL;
}

Test(fdtab, conn_pool_is_thread_safe, .init = setup)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, pool_worker, NULL);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        cr_assert_null(r);
    }
}

Test(fdtab, fork_child_releases_locks_held_by_vanished_threads, .init = setup)
{
    struct ldt__conn *c = ldt__conn_alloc();
    cr_assert_not_null(c);
    ldt__conn_lock(c); /* as if another thread were sniffing when fork() happened */
    ldt__conn_atfork_child();
    cr_assert_not(atomic_flag_test_and_set(&c->lock), "the child can take the lock");
    ldt__conn_unlock(c);
    ldt__conn_free(c);
}

/* ldt__skip: the hook's tail-call test. A socket classified PASS with nothing of ours on it costs
 * what a file costs; any other state of a traced socket goes to the traced part. */
Test(fdtab, skip_passes_files_and_classified_pass_sockets_only, .init = setup)
{
    int fd = 4001;
    int saved_mode = ldt__mode;
    ldt__mode = LDT__MODE_ON;
    ldt__fd_set(fd, LDT__FD_OTHER, LDT__ORIG_SOCKET);
    cr_assert_eq(ldt__skip(fd), 1, "a file or pipe is skipped");
    ldt__fd_set(fd, LDT__FD_SOCK, LDT__ORIG_SOCKET);
    struct ldt__fd *e = ldt__fd_peek(fd);
    cr_assert_eq(ldt__skip(fd), 0, "an unclassified socket is not");
    e->cls = LDT__CLS_HTTP;
    cr_assert_eq(ldt__skip(fd), 0, "an HTTP socket is not");
    e->cls = LDT__CLS_PASS;
    cr_assert_eq(ldt__skip(fd), 1, "a classified PASS socket is");
    struct ldt__conn dummy;
    e->conn = &dummy;
    cr_assert_eq(ldt__skip(fd), 0, "a PASS socket still carrying a conn is not");
    e->conn = NULL;
    ldt__depth = 1;
    cr_assert_eq(ldt__skip(fd + 1), 1, "nested calls are skipped");
    cr_assert_eq(ldt__nested_fd, fd + 1);
    ldt__depth = 0;
    ldt__fd_reset(fd);
    cr_assert_eq(ldt__skip(fd), 0, "a forgotten fd is probed again");
    ldt__mode = saved_mode;
}
