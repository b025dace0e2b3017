/* fake_ssl_sendfile.c - a stand-in for OpenSSL's SSL_sendfile: test_ssl_sendfile's success path.
 *
 * Why a fake: SSL_sendfile works only on a connection with kernel TLS, and this machine's kernel
 * has none (no "tls" in /proc/sys/net/ipv4/tcp_available_ulp), so the real one always fails here.
 * This library is preloaded AFTER the shim (LD_PRELOAD="libldtrace.so fake_ssl_sendfile.so"): the
 * app's SSL_sendfile binds to the shim's wrapper, whose lookup of the real function (dlsym
 * RTLD_NEXT) finds this one. It sends up to 16 KiB of the file range per call, as kTLS sendfile may
 * send less than asked, by pread and libssl's own SSL_write (dlsym RTLD_NEXT from here: past the
 * shim), so the plaintext bypasses the shim's SSL_* hooks as kTLS file bytes would; only its
 * wrapper of SSL_sendfile can account them. With FAKE_SSL_SENDFILE_GLOBAL=1 the SSL_write is looked
 * up in the global scope instead, which under the shim is the shim's own hook: it must pass that
 * nested call through (ldt__depth), or the bytes would be counted twice. With
 * FAKE_SSL_SENDFILE_EINTR=1 every third call sends nothing and fails as an interrupted sendfile
 * would (-1, errno EINTR). Returns the bytes sent, or -1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#define FAKE_CHUNK 16384

__attribute__((visibility("default"))) ssize_t SSL_sendfile(void *ssl, int fd, off_t off,
                                                            size_t size, int flags)
{
    const char *g = getenv("FAKE_SSL_SENDFILE_GLOBAL");
    void *h = g && *g == '1' ? RTLD_DEFAULT : RTLD_NEXT;
    int (*wr)(void *, const void *, int) =
        (int (*)(void *, const void *, int))dlsym(h, "SSL_write");
    const char *intr = getenv("FAKE_SSL_SENDFILE_EINTR");
    static int calls;
    char buf[FAKE_CHUNK];
    (void)flags;
    if (intr && *intr == '1' && ++calls % 3 == 0) {
        errno = EINTR;
        return -1;
    }
    if (!wr)
        return -1;
    ssize_t n = pread(fd, buf, size < sizeof buf ? size : sizeof buf, off);
    if (n <= 0)
        return n;
    int w = wr(ssl, buf, (int)n);
    return w > 0 ? w : -1;
}
