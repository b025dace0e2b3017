/* cmd_view.c - `ldtrace view`: OTLP JSON from ldtraced -> a trace list or a terminal waterfall.
 *
 * Each line is assembled in a growable buffer that counts display columns (escape sequences do not
 * count), so every row fits the requested width exactly whether or not colour is on, and trailing
 * blanks are trimmed so golden files stay stable.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MIN_WIDTH 24
#define MAX_WIDTH 4096

#define C_RESET "\033[0m"
#define C_RED "\033[31m"
#define C_BOLD "\033[1m"
#define C_DIM "\033[2m"
#define C_CYAN "\033[36m"

/* A line under construction. */
struct line {
    char *p;
    size_t len, cap;
    size_t cols; /* display columns so far */
    const struct ldt__view_opts *o;
    int failed; /* out of memory: the line is dropped */
};

static void line_raw(struct line *l, const char *s, size_t n)
{
    if (l->failed)
        return;
    if (l->len + n + 1 > l->cap) {
        size_t cap = (l->len + n + 1) * 2;
        char *p = realloc(l->p, cap);
        if (!p) {
            l->failed = 1;
            return;
        }
        l->p = p;
        l->cap = cap;
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
    l->p[l->len] = '\0';
}

/* An escape sequence: only when colour is on, and it takes no columns. */
static void line_color(struct line *l, const char *esc)
{
    if (l->o->color)
        line_raw(l, esc, strlen(esc));
}

size_t ldt__text_cols(const char *str)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)str; *p; p++)
        n += (*p & 0xc0) != 0x80;
    return n;
}

/* Bytes of s that make up its first `cols` code points. */
static size_t prefix_bytes(const char *s, size_t cols)
{
    size_t i = 0, n = 0;
    while (s[i]) {
        if (((unsigned char)s[i] & 0xc0) != 0x80 && n++ == cols)
            break;
        i++;
    }
    return i;
}

/* Append text truncated to `cols` columns (ending in an ellipsis when cut) and padded to exactly
 * `cols` when pad is set. Nothing goes past the line's width. Non-ASCII code points become '?' in
 * ASCII mode. */
static void line_text(struct line *l, const char *s, size_t cols, int pad)
{
    size_t width = (size_t)l->o->width, start = l->cols;
    size_t room = start < width ? width - start : 0;
    cols = cols < room ? cols : room;
    size_t have = ldt__text_cols(s);
    int cut = have > cols;
    size_t take = cut ? (cols ? cols - 1 : 0) : have;
    size_t bytes = prefix_bytes(s, take);
    if (l->o->unicode) {
        line_raw(l, s, bytes);
    } else {
        for (size_t i = 0; i < bytes; i++)
            if (((unsigned char)s[i] & 0xc0) != 0x80)
                line_raw(l, (unsigned char)s[i] < 0x80 ? &s[i] : "?", 1);
    }
    l->cols += take;
    if (cut && cols) {
        line_raw(l, l->o->unicode ? "\xe2\x80\xa6" : "~", l->o->unicode ? 3 : 1);
        l->cols++;
    }
    while (pad && l->cols < start + cols) {
        line_raw(l, " ", 1);
        l->cols++;
    }
}

/* Spaces up to column `col`. */
static void line_pad_to(struct line *l, size_t col)
{
    col = col < (size_t)l->o->width ? col : (size_t)l->o->width;
    while (l->cols < col) {
        line_raw(l, " ", 1);
        l->cols++;
    }
}

/* Write the line without trailing blanks (colour off) and start a new one. */
static int line_flush(struct line *l, FILE *out)
{
    int rc = 0;
    if (l->failed) {
        rc = -ENOMEM;
    } else {
        size_t n = l->len;
        while (n && l->p[n - 1] == ' ')
            n--;
        if ((n && fwrite(l->p, 1, n, out) != n) || fputc('\n', out) == EOF)
            rc = -EIO;
    }
    l->len = l->cols = 0;
    l->failed = 0;
    return rc;
}

/* "123.45ms" / "1234.5ms" / "123.4s": 1 or 2 decimals, at most 9 columns. */
static void fmt_dur(char *buf, size_t cap, uint64_t ns)
{
    double ms = (double)ns / 1e6;
    if (ms < 100.0)
        snprintf(buf, cap, "%.2fms", ms);
    else if (ms < 99999.95)
        snprintf(buf, cap, "%.1fms", ms);
    else
        snprintf(buf, cap, "%.1fs", ms / 1000.0);
}

/* "2026-11-28 09:00:00" (UTC, so output does not depend on the viewer's time zone). */
static void fmt_start(char *buf, size_t cap, uint64_t ns, int millis)
{
    time_t sec = (time_t)(ns / 1000000000u);
    struct tm tm;
    if (!gmtime_r(&sec, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M:%S", &tm)) {
        snprintf(buf, cap, "?");
        return;
    }
    if (millis)
        snprintf(buf + strlen(buf), cap - strlen(buf), ".%03u", (unsigned)(ns / 1000000u % 1000u));
}

/* The label of a span: "name", plus " path" when the name does not already show it; client calls
 * get an arrow in front. */
static void span_label(const struct ldt__span *sp, int unicode, char *buf, size_t cap)
{
    const char *arrow = sp->kind == LDT__KIND_CLIENT ? (unicode ? "\xe2\x86\x92 " : "-> ") : "";
    const char *name = sp->name && *sp->name ? sp->name : sp->method ? sp->method : "?";
    int with_path = sp->path && *sp->path && !strstr(name, sp->path);
    snprintf(buf, cap, "%s%s%s%s", arrow, name, with_path ? " " : "", with_path ? sp->path : "");
}

/* ---- the trace list ---- */

struct list_cols {
    size_t id, root; /* widths of the variable columns */
};

static struct list_cols list_layout(int width)
{
    /* "! " id "  " root "  " spans(5) "  " err(3) "  " dur(9) "  " start(19) */
    struct list_cols c;
    c.id = width >= 120 ? 32 : 12;
    int rest = width - (int)c.id - 2 - 2 - 5 - 2 - 3 - 2 - 9 - 2 - 19 - 2;
    c.root = rest > 4 ? (size_t)rest : 4;
    return c;
}

static void list_header(struct line *l, struct list_cols c)
{
    line_color(l, C_BOLD);
    line_text(l, "  TRACE", c.id + 2, 1);
    line_text(l, "  ROOT", c.root + 2, 1);
    line_text(l, "  SPANS  ERR   DURATION  START (UTC)", 36, 0);
    line_color(l, C_RESET);
}

static void list_row(struct line *l, const struct ldt__spans *s, const struct ldt__trace *t,
                     struct list_cols c)
{
    char label[512], root[600], dur[32], start[32], num[64];
    const struct ldt__span *r = &s->v[t->root];
    span_label(r, l->o->unicode, label, sizeof(label));
    snprintf(root, sizeof(root), "%s %s", r->service, label);
    if (t->errors)
        line_color(l, C_RED);
    line_text(l, t->errors ? "! " : "  ", 2, 1);
    line_color(l, t->errors ? C_RESET C_DIM : C_DIM);
    char id[33];
    snprintf(id, sizeof(id), "%.*s", (int)c.id, t->trace_id); /* a prefix, usable with --trace */
    line_text(l, id, c.id, 1);
    line_color(l, C_RESET);
    line_text(l, "  ", 2, 1);
    line_text(l, root, c.root, 1);
    fmt_dur(dur, sizeof(dur), t->end_ns - t->start_ns);
    fmt_start(start, sizeof(start), t->start_ns, 0);
    snprintf(num, sizeof(num), "  %5zu  %3zu  %9s  ", t->n, t->errors, dur);
    line_text(l, num, strlen(num), 1);
    line_text(l, start, 19, 0);
}

static struct ldt__view_opts clamp_opts(const struct ldt__view_opts *o)
{
    struct ldt__view_opts oo = *o;
    oo.width = oo.width < MIN_WIDTH ? MIN_WIDTH : oo.width > MAX_WIDTH ? MAX_WIDTH : oo.width;
    return oo;
}

int ldt__view_list(FILE *out, const struct ldt__spans *s, const struct ldt__traces *t,
                   const struct ldt__view_opts *o)
{
    struct ldt__view_opts oo = clamp_opts(o);
    struct line l = {.o = &oo};
    struct list_cols c = list_layout(oo.width);
    list_header(&l, c);
    int rc = line_flush(&l, out);
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        list_row(&l, s, &t->v[i], c);
        rc = line_flush(&l, out);
    }
    free(l.p);
    return rc;
}

/* ---- the waterfall ---- */

/* The span tree of one trace, in local positions 0..n-1 (the trace's start-time order). */
struct tree {
    size_t n;
    size_t *parent; /* SIZE_MAX: shown as a root */
    size_t *first, *next, *last_child;
    unsigned char *orphan; /* has a parent id that is not in the file (or a cycle) */
    unsigned char *seen;
};

/* Waterfall columns: "! " label(L) " " code(4) " " duration(9) " " bar(B). */
struct wf_cols {
    size_t label, bar;
    uint64_t t0, total;
};

static void tree_free(struct tree *tr)
{
    free(tr->parent);
    free(tr->first);
    free(tr->next);
    free(tr->last_child);
    free(tr->orphan);
    free(tr->seen);
}

/* Position of global span index g in t->idx (which is short; the trace is sorted by start). */
static size_t local_of(const struct ldt__trace *t, const size_t *order, size_t g)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) { /* order[] is t->idx's positions sorted by global index */
        size_t mid = lo + (hi - lo) / 2;
        if (t->idx[order[mid]] == g)
            return order[mid];
        if (t->idx[order[mid]] < g)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

static const struct ldt__trace *sort_trace;

static int cmp_global(const void *a, const void *b)
{
    size_t x = sort_trace->idx[*(const size_t *)a], y = sort_trace->idx[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* Link each span to its parent and its children (in start order). Returns 0 or -ENOMEM. */
static int tree_build(struct tree *tr, const struct ldt__spans *s, const struct ldt__trace *t)
{
    size_t n = t->n;
    memset(tr, 0, sizeof(*tr));
    tr->n = n;
    tr->parent = malloc(n * sizeof(size_t));
    tr->first = malloc(n * sizeof(size_t));
    tr->next = malloc(n * sizeof(size_t));
    tr->last_child = malloc(n * sizeof(size_t));
    tr->orphan = calloc(n, 1);
    tr->seen = calloc(n, 1);
    size_t *order = malloc(n * sizeof(size_t));
    if (!tr->parent || !tr->first || !tr->next || !tr->last_child || !tr->orphan || !tr->seen ||
        !order) {
        free(order);
        tree_free(tr);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        order[i] = i;
        tr->first[i] = tr->next[i] = tr->last_child[i] = SIZE_MAX;
    }
    sort_trace = t;
    qsort(order, n, sizeof(*order), cmp_global);
    for (size_t i = 0; i < n; i++) {
        const struct ldt__span *sp = &s->v[t->idx[i]];
        size_t g = sp->parent_id[0] ? ldt__trace_lookup(s, t, sp->parent_id) : SIZE_MAX;
        size_t p = g == SIZE_MAX ? SIZE_MAX : local_of(t, order, g);
        tr->parent[i] = p == i ? SIZE_MAX : p;
        tr->orphan[i] = sp->parent_id[0] && tr->parent[i] == SIZE_MAX;
        if (tr->parent[i] == SIZE_MAX)
            continue;
        if (tr->last_child[p] == SIZE_MAX)
            tr->first[p] = i;
        else
            tr->next[tr->last_child[p]] = i;
        tr->last_child[p] = i;
    }
    free(order);
    return 0;
}

/* Columns the label of span i needs: tree drawing (depth capped as wf_prefix caps it), the orphan
 * mark, the service and the name. */
static size_t label_need(const struct ldt__spans *s, const struct ldt__trace *t,
                         const struct tree *tr, size_t i, int unicode)
{
    char label[512];
    size_t d = 0;
    for (size_t p = tr->parent[i]; p != SIZE_MAX && d < 64; p = tr->parent[p])
        d++;
    const struct ldt__span *sp = &s->v[t->idx[i]];
    span_label(sp, unicode, label, sizeof(label));
    return 3 * d + (tr->orphan[i] ? 2 : 0) + ldt__text_cols(sp->service) + 1 +
           ldt__text_cols(label);
}

/* The label column takes what the widest label needs, within [1/3, 3/5] of the free width; the
 * time axis gets the rest, so wide terminals give the bars the extra room. */
static struct wf_cols wf_layout(const struct ldt__view_opts *o, const struct ldt__spans *s,
                                const struct ldt__trace *t, const struct tree *tr)
{
    struct wf_cols c;
    size_t rest = (size_t)o->width - 2 - 1 - 4 - 1 - 9 - 1, need = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t n = label_need(s, t, tr, i, o->unicode);
        need = n > need ? n : need;
    }
    size_t lo = rest / 3, hi = rest * 3 / 5;
    c.label = need < lo ? lo : need > hi ? hi : need;
    c.bar = rest - c.label;
    c.t0 = t->start_ns;
    c.total = t->end_ns > t->start_ns ? t->end_ns - t->start_ns : 1;
    return c;
}

static void wf_header(struct line *l, FILE *out, const struct ldt__spans *s,
                      const struct ldt__trace *t, struct wf_cols c)
{
    char label[512], buf[1024], dur[32], start[40];
    const struct ldt__span *r = &s->v[t->root];
    span_label(r, l->o->unicode, label, sizeof(label));
    fmt_dur(dur, sizeof(dur), t->end_ns - t->start_ns);
    fmt_start(start, sizeof(start), t->start_ns, 1);
    line_color(l, C_BOLD);
    snprintf(buf, sizeof(buf), "Trace %s", t->trace_id);
    line_text(l, buf, SIZE_MAX, 0);
    line_color(l, C_RESET);
    line_flush(l, out);
    snprintf(buf, sizeof(buf), "%s %s: %zu span%s, %zu error%s, %s, %s UTC", r->service, label,
             t->n, t->n == 1 ? "" : "s", t->errors, t->errors == 1 ? "" : "s", dur, start);
    line_text(l, buf, SIZE_MAX, 0);
    line_flush(l, out);
    line_flush(l, out);
    line_color(l, C_BOLD);
    line_text(l, "  SERVICE / SPAN", c.label + 2, 1);
    line_text(l, " CODE  DURATION ", 16, 1);
    size_t w = strlen(dur);
    line_text(l, "0", 1, 0);
    if (c.bar >= w + 2) {
        line_pad_to(l, l->cols + c.bar - 1 - w);
        line_text(l, dur, w, 0);
    }
    line_color(l, C_RESET);
    line_flush(l, out);
}

/* The tree drawing in front of a row at depth d ("│  " for open ancestors, then "├─ " or "└─ ").
 * For a detail line under the row, `detail` gives the column for the row's own children instead. */
static void wf_prefix(struct line *l, const unsigned char *last, size_t d, size_t maxcols,
                      int detail, int has_children)
{
    int u = l->o->unicode;
    size_t levels = maxcols / 3, from = d > levels ? d - levels + 1 : 1;
    for (size_t k = from; k < d; k++)
        line_text(l, last[k] ? "   " : (u ? "\xe2\x94\x82  " : "|  "), 3, 0);
    if (d == 0 && !detail)
        return;
    if (detail) {
        if (d >= from && d > 0)
            line_text(l, last[d] ? "   " : (u ? "\xe2\x94\x82  " : "|  "), 3, 0);
        line_text(l, has_children ? (u ? "\xe2\x94\x82  " : "|  ") : "   ", 3, 0);
        return;
    }
    if (last[d])
        line_text(l, u ? "\xe2\x94\x94\xe2\x94\x80 " : "`- ", 3, 0);
    else
        line_text(l, u ? "\xe2\x94\x9c\xe2\x94\x80 " : "|- ", 3, 0);
}

/* The time bar: cells [from, to) of c.bar, rounded outwards, at least one cell. */
static void wf_bar(struct line *l, const struct ldt__span *sp, struct wf_cols c, int err)
{
    unsigned __int128 a = (unsigned __int128)(sp->start_ns - c.t0) * c.bar;
    unsigned __int128 b = (unsigned __int128)(sp->end_ns - c.t0) * c.bar;
    size_t from = (size_t)(a / c.total), to = (size_t)((b + c.total - 1) / c.total);
    from = from < c.bar ? from : c.bar - 1;
    to = to > from ? (to < c.bar ? to : c.bar) : from + 1;
    int client = sp->kind == LDT__KIND_CLIENT;
    const char *cell =
        l->o->unicode ? (client ? "\xe2\x96\x92" : "\xe2\x96\x88") : (client ? "=" : "#");
    line_pad_to(l, l->cols + from);
    line_color(l, err ? C_RED : C_CYAN);
    for (size_t i = from; i < to && l->cols < (size_t)l->o->width; i++, l->cols++)
        line_raw(l, cell, strlen(cell));
    line_color(l, C_RESET);
}

static void wf_row(struct line *l, const struct ldt__spans *s, const struct ldt__span *sp,
                   const unsigned char *last, size_t d, int orphan, struct wf_cols c)
{
    char label[512], num[64], dur[32];
    int err = ldt__span_is_error(sp);
    size_t end = 2 + c.label;
    (void)s;
    line_color(l, err ? C_RED C_BOLD : "");
    line_text(l, err ? "! " : "  ", 2, 0);
    line_color(l, err ? C_RESET : "");
    wf_prefix(l, last, d, c.label / 2, 0, 0);
    if (orphan)
        line_text(l, "? ", end - l->cols, 0);
    line_color(l, C_CYAN);
    line_text(l, sp->service, end - l->cols, 0);
    line_color(l, C_RESET);
    span_label(sp, l->o->unicode, label, sizeof(label));
    line_text(l, " ", end - l->cols, 0);
    line_text(l, label, end - l->cols, 0);
    line_pad_to(l, end);
    fmt_dur(dur, sizeof(dur), sp->end_ns - sp->start_ns);
    if (sp->http_code)
        snprintf(num, sizeof(num), " %4d %9s ", sp->http_code, dur);
    else
        snprintf(num, sizeof(num), "      %9s ", dur);
    line_color(l, err && sp->http_code >= 400 ? C_RED : "");
    line_text(l, num, 16, 1);
    line_color(l, err && sp->http_code >= 400 ? C_RESET : "");
    wf_bar(l, sp, c, err);
}

/* The exception summary under an error row. */
static void wf_detail(struct line *l, const struct ldt__span *sp, const unsigned char *last,
                      size_t d, int has_children, struct wf_cols c)
{
    char buf[600];
    line_text(l, "  ", 2, 0);
    wf_prefix(l, last, d, c.label / 2, 1, has_children);
    snprintf(buf, sizeof(buf), "exception: %s", sp->exception);
    line_color(l, C_RED);
    line_text(l, buf, SIZE_MAX, 0);
    line_color(l, C_RESET);
}

#define STACK_FRAMES 4 /* frames of an exception's stack shown under its span */

/* Copy the frame starting at *p (up to the end of its line) into buf with control characters
 * replaced, and move *p to the next line. Returns 0 when there is no frame left. */
static int next_frame(const char **p, char *buf, size_t cap)
{
    const char *s = *p;
    while (*s == '\n' || *s == '\r' || *s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return 0;
    size_t n = strcspn(s, "\r\n");
    size_t k = n < cap - 1 ? n : cap - 1;
    for (size_t i = 0; i < k; i++)
        buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    buf[k] = '\0';
    *p = s + n;
    return 1;
}

/* One dimmed detail line under a span's row. Returns 0 or a negative errno. */
static int wf_dim_line(struct line *l, FILE *out, const char *text, const unsigned char *last,
                       size_t d, int has_children, struct wf_cols c)
{
    line_text(l, "  ", 2, 0);
    wf_prefix(l, last, d, c.label / 2, 1, has_children);
    line_color(l, C_DIM);
    line_text(l, text, SIZE_MAX, 0);
    line_color(l, C_RESET);
    return line_flush(l, out);
}

/* The first STACK_FRAMES frames of the exception's stack, one per line, and how many more there
 * are: the stack shows the code path that led to the error. Frames are printed as they are (the
 * shim names the nearest exported symbol). Returns 0 or a negative errno. */
static int wf_frames(struct line *l, FILE *out, const struct ldt__span *sp,
                     const unsigned char *last, size_t d, int has_children, struct wf_cols c)
{
    char frame[512], buf[600];
    const char *p = sp->stacktrace;
    size_t shown = 0, more = 0;
    int rc = 0;
    while (p && rc == 0 && next_frame(&p, frame, sizeof(frame))) {
        if (shown == STACK_FRAMES) {
            more++;
            continue;
        }
        shown++;
        snprintf(buf, sizeof(buf), "  at %s", frame);
        rc = wf_dim_line(l, out, buf, last, d, has_children, c);
    }
    if (more && rc == 0) {
        snprintf(buf, sizeof(buf), "  ... %zu more frame%s", more, more == 1 ? "" : "s");
        rc = wf_dim_line(l, out, buf, last, d, has_children, c);
    }
    return rc;
}

struct walk_item {
    size_t node, depth;
    int last; /* the last child of its parent (or the last root) */
};

/* Depth-first walk from one root, drawing each span once (a cycle cannot loop). stack[] has room
 * for n + 1 items: every span sits in one parent's child list, so it is pushed at most once as a
 * child. */
static int wf_walk(struct line *l, FILE *out, const struct ldt__spans *s,
                   const struct ldt__trace *t, struct tree *tr, size_t root, int is_last_root,
                   struct walk_item *stack, unsigned char *last, struct wf_cols c)
{
    size_t top = 0;
    int rc = 0;
    stack[top++] = (struct walk_item){root, 0, is_last_root};
    while (top && rc == 0) {
        struct walk_item it = stack[--top];
        if (tr->seen[it.node])
            continue;
        tr->seen[it.node] = 1;
        last[it.depth] = (unsigned char)it.last;
        const struct ldt__span *sp = &s->v[t->idx[it.node]];
        int orphan = tr->orphan[it.node] || (it.depth == 0 && tr->parent[it.node] != SIZE_MAX);
        wf_row(l, s, sp, last, it.depth, orphan, c);
        rc = line_flush(l, out);
        size_t nkids = 0;
        for (size_t k = tr->first[it.node]; k != SIZE_MAX; k = tr->next[k])
            nkids += !tr->seen[k];
        if (sp->exception && rc == 0) {
            wf_detail(l, sp, last, it.depth, nkids != 0, c);
            rc = line_flush(l, out);
            if (rc == 0)
                rc = wf_frames(l, out, sp, last, it.depth, nkids != 0, c);
        }
        /* Push the children in reverse so the earliest comes out first. */
        size_t pos = top + nkids;
        for (size_t k = tr->first[it.node]; k != SIZE_MAX; k = tr->next[k]) {
            if (tr->seen[k])
                continue;
            pos--;
            stack[pos] = (struct walk_item){k, it.depth + 1, pos == top};
        }
        top += nkids;
    }
    return rc;
}

static void wf_legend(struct line *l, FILE *out)
{
    int u = l->o->unicode;
    line_flush(l, out);
    line_color(l, C_DIM);
    line_text(l,
              u ? "! error   \xe2\x96\x88 server/internal   \xe2\x96\x92 \xe2\x86\x92 client call"
                  "   ? parent span not in file"
                : "! error   # server/internal   = -> client call   ? parent span not in file",
              SIZE_MAX, 0);
    line_color(l, C_RESET);
}

/* Draw every root (spans with no parent in the file, in start order), then anything a cycle hid. */
static int wf_body(struct line *l, FILE *out, const struct ldt__spans *s,
                   const struct ldt__trace *t, struct tree *tr, struct wf_cols c)
{
    struct walk_item *stack = malloc((t->n + 1) * sizeof(*stack));
    unsigned char *last = calloc(t->n + 1, 1);
    int rc = stack && last ? 0 : -ENOMEM;
    size_t lastroot = SIZE_MAX;
    for (size_t i = 0; i < t->n; i++)
        if (tr->parent[i] == SIZE_MAX)
            lastroot = i;
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (size_t i = 0; i < t->n && rc == 0; i++) {
            if (tr->seen[i] || (pass == 0 && tr->parent[i] != SIZE_MAX))
                continue;
            rc = wf_walk(l, out, s, t, tr, i, pass == 0 && i == lastroot, stack, last, c);
        }
    }
    free(stack);
    free(last);
    return rc;
}

int ldt__view_trace(FILE *out, const struct ldt__spans *s, const struct ldt__trace *t,
                    const struct ldt__view_opts *o)
{
    struct ldt__view_opts oo = clamp_opts(o);
    struct line l = {.o = &oo};
    struct tree tr;
    if (t->n == 0)
        return -EINVAL;
    int rc = tree_build(&tr, s, t);
    if (rc < 0)
        return rc;
    struct wf_cols c = wf_layout(&oo, s, t, &tr);
    wf_header(&l, out, s, t, c);
    rc = wf_body(&l, out, s, t, &tr, c);
    if (rc == 0) {
        wf_legend(&l, out);
        rc = line_flush(&l, out);
    }
    tree_free(&tr);
    free(l.p);
    return rc;
}

/* ---- the command ---- */

/* Columns: --width, else the terminal's (TIOCGWINSZ on stdout), else $COLUMNS, else 80. */
static int term_width(int fd)
{
    struct winsize ws;
    if (ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    const char *env = getenv("COLUMNS");
    int v = env ? atoi(env) : 0;
    return v > 0 ? v : 80;
}

/* Colour by default only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
static int want_color(void)
{
    const char *no = getenv("NO_COLOR");
    return isatty(STDOUT_FILENO) && !(no && *no);
}

static int use_unicode(void)
{
    setlocale(LC_CTYPE, "");
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "utf8") == 0);
}

static void view_usage(FILE *f)
{
    fprintf(f, "usage: ldtrace view FILE [--trace ID] [--last] [--width N] [--color|--no-color] "
               "[--ascii]\n"
               "  without --trace: list the traces in FILE, newest first\n"
               "  --trace ID   draw one trace as a waterfall (a unique id prefix is enough)\n"
               "  --last       draw the newest trace\n");
}

struct view_args {
    const char *file, *trace;
    int last, width, color, ascii;
};

static int view_parse(int argc, char **argv, struct view_args *a)
{
    static const struct option opts[] = {
        {"trace", required_argument, 0, 't'}, {"last", no_argument, 0, 'l'},
        {"width", required_argument, 0, 'w'}, {"color", no_argument, 0, 'c'},
        {"no-color", no_argument, 0, 'C'},    {"ascii", no_argument, 0, 'a'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    int ch;
    memset(a, 0, sizeof(*a));
    a->color = -1;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "t:lw:h", opts, NULL)) != -1) {
        switch (ch) {
        case 't':
            a->trace = optarg;
            break;
        case 'l':
            a->last = 1;
            break;
        case 'w':
            a->width = atoi(optarg);
            break;
        case 'c':
            a->color = 1;
            break;
        case 'C':
            a->color = 0;
            break;
        case 'a':
            a->ascii = 1;
            break;
        case 'h':
            view_usage(stdout);
            exit(0);
        default:
            return -EINVAL;
        }
    }
    if (optind != argc - 1)
        return -EINVAL;
    a->file = argv[optind];
    return 0;
}

/* Pick the trace to draw, or print why not. Returns its position or -1. */
static int view_pick(const struct ldt__traces *t, const struct view_args *a)
{
    if (a->last)
        return t->n ? 0 : -1;
    int i = ldt__traces_find(t, a->trace);
    if (i == -EEXIST)
        fprintf(stderr, "ldtrace: view: trace id prefix %s matches more than one trace\n",
                a->trace);
    else if (i < 0)
        fprintf(stderr, "ldtrace: view: no trace %s in %s\n", a->trace, a->file);
    return i < 0 ? -1 : i;
}

/* Group, then draw the list or the chosen trace. Returns the exit status. */
static int view_draw(const struct ldt__spans *s, struct ldt__traces *t, const struct view_args *a,
                     const struct ldt__view_opts *o)
{
    if (ldt__traces_build(s, t) < 0) {
        fprintf(stderr, "ldtrace: view: %s: out of memory\n", a->file);
        return 1;
    }
    if (!a->trace && !a->last)
        return ldt__view_list(stdout, s, t, o) < 0;
    if (t->n == 0) {
        fprintf(stderr, "ldtrace: view: no spans in %s\n", a->file);
        return 1;
    }
    int i = view_pick(t, a);
    return i < 0 || ldt__view_trace(stdout, s, &t->v[i], o) < 0;
}

int ldt__view_main(int argc, char **argv)
{
    struct view_args a;
    if (view_parse(argc, argv, &a) < 0) {
        view_usage(stderr);
        return 2;
    }
    struct ldt__spans s = {0};
    struct ldt__traces t = {0};
    int rc = ldt__spans_load_file(&s, a.file);
    if (rc < 0) {
        fprintf(stderr, "ldtrace: view: read %s: %s\n", a.file, strerror(-rc));
        ldt__spans_free(&s);
        return 1;
    }
    if (s.bad_lines || s.bad_spans)
        fprintf(stderr, "ldtrace: view: %s: skipped %zu malformed line%s and %zu span%s\n", a.file,
                s.bad_lines, s.bad_lines == 1 ? "" : "s", s.bad_spans, s.bad_spans == 1 ? "" : "s");
    struct ldt__view_opts o = {
        .width = a.width > 0 ? a.width : term_width(STDOUT_FILENO),
        .color = a.color >= 0 ? a.color : want_color(),
        .unicode = !a.ascii && use_unicode(),
    };
    int status = view_draw(&s, &t, &a, &o);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
    return status;
}
