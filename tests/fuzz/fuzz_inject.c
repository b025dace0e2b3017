/* fuzz_inject.c - libFuzzer target: the injector keeps the app's byte stream intact and its counts
 * honest whatever the kernel takes (any partial write, EAGAIN, 0), in the pure core and through the
 * planner of a client connection fed arbitrary request bytes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shim/shim.h"

/* ---- the fake kernel: its answers come from the input ------------------------------------------
 */

#define WIRE_MAX 65536

struct kernel {
    const uint8_t *ans; /* one byte per call: low 7 bits how much, 0 or 0x80: EAGAIN */
    size_t nans, at;
    char wire[WIRE_MAX];
    size_t n;
    int calls; /* calls in the current app write */
};

static ssize_t fake_sendv(void *ctx, const struct iovec *iov, int cnt)
{
    struct kernel *k = ctx;
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    uint8_t a = k->at < k->nans ? k->ans[k->at++] : 0x7f;
    /* After the answers run out, or after a few calls in one write, the kernel takes everything,
     * so the app always finishes. */
    if (k->calls++ > 4)
        a = 0x7f;
    if ((a & 0x80) || (a == 0 && total > 0)) { /* a stream socket that takes nothing says so */
        errno = EAGAIN;
        return -1;
    }
    size_t budget = a == 0x7f ? total : (size_t)a;
    size_t took = 0;
    for (int i = 0; i < cnt && took < budget; i++) {
        size_t n = iov[i].iov_len < budget - took ? iov[i].iov_len : budget - took;
        if (k->n + n > WIRE_MAX)
            abort();
        memcpy(k->wire + k->n, iov[i].iov_base, n);
        k->n += n;
        took += n;
    }
    return (ssize_t)took;
}

/* ---- mode 0: the pure core with arbitrary edits --------------------------------------------- */

/* Split app[from, to) into at most 16 iovecs of lengths taken from seg (0: one iovec). */
static int split(struct iovec *v, const char *app, size_t from, size_t to, uint8_t seg)
{
    int cnt = 0;
    size_t step = seg ? seg : to - from;
    while (from < to && cnt < 16) {
        size_t l = to - from < step || cnt == 15 ? to - from : step;
        v[cnt++] = (struct iovec){(void *)(app + from), l};
        from += l;
    }
    return cnt;
}

static void check_core(struct kernel *k, const char *app, size_t len, const struct ldt__edit *ed,
                       int ned, uint8_t seg, const char *want, size_t wl)
{
    char pend[LDT__INJ_MAX];
    uint16_t po = 0, pl = 0;
    size_t off = 0;
    int done = 0, rounds = 0;
    while (off < len) {
        struct iovec v[16];
        struct ldt__edit e2[LDT__EDITS_MAX];
        int cnt = split(v, app, off, len, seg), ne = 0, placed = -1;
        for (int i = done; i < ned; i++)
            e2[ne++] = (struct ldt__edit){ed[i].off - off, ed[i].del, ed[i].ins_len, ed[i].ins};
        k->calls = 0;
        ssize_t r = ldt__inject_sendv(pend, &po, &pl, v, cnt, e2, ne, fake_sendv, k, &placed);
        if (placed < 0 || placed > ne || pl > LDT__INJ_MAX || po + pl > LDT__INJ_MAX)
            abort();
        done += placed;
        if (++rounds > 100000)
            abort(); /* no progress */
        if (r < 0) {
            if (errno != EAGAIN)
                abort();
            continue;
        }
        if (r == 0 || (size_t)r > len - off)
            abort(); /* 0 for a non-empty write, or more than the app's bytes */
        off += (size_t)r;
        /* An edit the app's count has moved past is on the wire or owed: it must be placed. */
        for (int i = done; i < ned; i++)
            if (ed[i].off < off && ed[i].off + ed[i].del <= off)
                abort();
    }
    if (pl != 0 || done != ned || k->n != wl || memcmp(k->wire, want, wl) != 0)
        abort();
}

/* Input: [nedits][seg][per edit: off byte, kind byte]... then app bytes, then kernel answers
 * after a 0xff 0x00 separator (if present). */
static void mode_core(const uint8_t *d, size_t n)
{
    static const char ins[] = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"
                              "-01\r\n";
    static const char rep[] = "0123456789abcdef";
    if (n < 2)
        return;
    int want_ed = d[0] % (LDT__EDITS_MAX + 1);
    uint8_t seg = d[1];
    d += 2, n -= 2;
    if (n < (size_t)want_ed * 2)
        return;
    const uint8_t *eb = d;
    d += want_ed * 2, n -= (size_t)want_ed * 2;
    const uint8_t *sep = memmem(d, n, "\xff\x00", 2);
    size_t len = sep ? (size_t)(sep - d) : n;
    struct kernel *k = calloc(1, sizeof *k);
    k->ans = sep ? sep + 2 : NULL;
    k->nans = sep ? n - len - 2 : 0;
    /* Edits sorted by offset, not overlapping, each followed by at least one app byte. */
    struct ldt__edit ed[LDT__EDITS_MAX];
    int ned = 0;
    size_t at = 0;
    for (int i = 0; i < want_ed && len > 0; i++) {
        size_t off = at + eb[2 * i] % (len - at + 1);
        int replace = eb[2 * i + 1] & 1;
        uint32_t del = replace ? 16 : 0;
        if (off + del >= len)
            break; /* the planner always has app bytes after an edit (at least the blank line) */
        uint32_t il = replace ? 16 : 1 + eb[2 * i + 1] % (uint32_t)(sizeof ins - 1);
        ed[ned++] = (struct ldt__edit){off, del, il, replace ? rep : ins};
        at = off + del;
    }
    /* The oracle: the app's stream with every edit applied. */
    char *want = malloc(len + (size_t)ned * sizeof ins + 1);
    size_t wl = 0, from = 0;
    for (int i = 0; i < ned; i++) {
        memcpy(want + wl, d + from, ed[i].off - from);
        wl += ed[i].off - from;
        memcpy(want + wl, ed[i].ins, ed[i].ins_len);
        wl += ed[i].ins_len;
        from = ed[i].off + ed[i].del;
    }
    memcpy(want + wl, d + from, len - from);
    wl += len - from;
    char *app = malloc(len ? len : 1); /* exact size: ASan sees any over-read */
    memcpy(app, d, len);
    check_core(k, app, len, ed, ned, seg, want, wl);
    free(app);
    free(want);
    free(k);
}

/* ---- mode 1: arbitrary request bytes through a client connection ---------------------------- */

static void sink(const void *rec, size_t len)
{
    (void)rec;
    (void)len;
}

/* Is w[0..70) one of our lines, "traceparent: 00-<32 hex>-<16 hex>-<2 hex>\r\n"? */
static int our_line(const char *w)
{
    static const char shape[] =
        "traceparent: 00-################################-################-##\r\n";
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        int hex = (w[i] >= '0' && w[i] <= '9') || (w[i] >= 'a' && w[i] <= 'f');
        if (shape[i] == '#' ? !hex : w[i] != shape[i])
            return 0;
    }
    return 1;
}

/* The wire must be the app's stream with only whole lines of ours added, each at the start of a
 * line of the app's (after a "\n"): nothing inside a line, nothing else. No forwarded traceparent
 * can be replaced here (this process serves nothing), so there is no other edit. */
static int wire_ok(const char *app, size_t an, const char *w, size_t wn)
{
    size_t i = 0, j = 0;
    while (i < wn) {
        if (wn - i >= 70 && our_line(w + i) && (an - j < 70 || memcmp(app + j, w + i, 70) != 0)) {
            if (j == 0 || app[j - 1] != '\n')
                return 0;
            i += 70;
            continue;
        }
        if (j == an || w[i] != app[j])
            return 0;
        i++;
        j++;
    }
    return j == an;
}

static void mode_client(const uint8_t *d, size_t n)
{
    static struct ldt__fd fde;
    if (n < 1)
        return;
    uint8_t seg = d[0];
    d++, n--;
    const uint8_t *sep = memmem(d, n, "\xff\x00", 2);
    size_t len = sep ? (size_t)(sep - d) : n;
    struct kernel *k = calloc(1, sizeof *k);
    k->ans = sep ? sep + 2 : NULL;
    k->nans = sep ? n - len - 2 : 0;
    char *app = malloc(len ? len : 1);
    memcpy(app, d, len);
    memset(&fde, 0, sizeof fde);
    atomic_store(&fde.kind, LDT__FD_SOCK);
    struct ldt__conn *c = ldt__sniff_attach(-1, &fde, LDT__ROLE_CLIENT);
    if (!c)
        abort();
    size_t off = 0;
    int rounds = 0;
    while (off < len) {
        struct iovec v[16];
        int cnt = split(v, app, off, len, seg);
        size_t tot = 0;
        for (int i = 0; i < cnt; i++)
            tot += v[i].iov_len;
        k->calls = 0;
        ssize_t r = ldt__client_send(c, v, cnt, fake_sendv, k);
        if (++rounds > 100000 || c->pend_len > LDT__INJ_MAX)
            abort();
        if (r < 0) {
            if (errno != EAGAIN)
                abort();
            continue;
        }
        if (r == 0 || (size_t)r > tot)
            abort();
        off += (size_t)r;
    }
    if (!wire_ok(app, len, k->wire, k->n))
        abort();
    ldt__sniff_close(c, &fde);
    ldt__conn_free(c);
    free(app);
    free(k);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    memset(&ldt__cfg, 0, sizeof ldt__cfg);
    ldt__cfg.sampler = LDT_SAMPLER_PARENT_RATIO;
    ldt__cfg.ratio = 1.0;
    ldt__span_sink = sink;
    ldt_id_seed();
    return 0;
}

/* The first byte picks the mode: even the pure core, odd a client connection. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    if (data[0] & 1)
        mode_client(data + 1, size - 1);
    else
        mode_core(data + 1, size - 1);
    return 0;
}
