/* cmd_analyze.c - `ldtrace analyze`: spans -> critical path, latency, error origin, retry storms.
 *
 * Printed as text, JSON, Graphviz dot or Mermaid. Self time and per-service and per-edge latency
 * (p50/p90/p99) come with it.
 *
 * Everything is computed from parentage and timestamps only. The critical path follows, from the
 * root's end backwards, the child that finished last before the current point (as Jaeger's critical
 * path does), so a span's time counts for its service only while none of its children on the path
 * runs. Time is attributed per trace and summed over the traces analysed.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define NONE SIZE_MAX
#define MAX_CP_DEPTH                                                                               \
    512 /* deeper chains are cut there (their rest counts as the span's own time) */

/* One trace's tree in local positions (the trace's start-time order). */
struct ttree {
    const struct ldt__spans *s;
    const struct ldt__trace *t;
    size_t *parent, *first, *next, *depth;
    unsigned char *seen;
};

static const struct ldt__span *SP(const struct ttree *tt, size_t i)
{
    return &tt->s->v[tt->t->idx[i]];
}

static uint64_t dur(const struct ldt__span *sp)
{
    return sp->end_ns - sp->start_ns;
}

/* ---- statistics ---- */

static struct ldt__stat *stat_get(struct ldt__stat **v, size_t *n, const char *from, const char *to)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i].to, to) == 0 &&
            (from ? (*v)[i].from && strcmp((*v)[i].from, from) == 0 : !(*v)[i].from))
            return &(*v)[i];
    struct ldt__stat *nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return NULL;
    *v = nv;
    struct ldt__stat *st = &nv[(*n)++];
    memset(st, 0, sizeof(*st));
    st->from = from ? strdup(from) : NULL;
    st->to = strdup(to);
    if (!st->to || (from && !st->from))
        return NULL;
    return st;
}

static int stat_add(struct ldt__stat *st, uint64_t ns, int err)
{
    if (st->ndurs == st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 16;
        uint64_t *d = realloc(st->durs, cap * sizeof(*d));
        if (!d)
            return -ENOMEM;
        st->durs = d;
        st->cap = cap;
    }
    st->durs[st->ndurs++] = ns;
    st->count++;
    st->errors += err ? 1 : 0;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[n]. */
static uint64_t pct(const uint64_t *v, size_t n, unsigned p)
{
    if (n == 0)
        return 0;
    size_t rank = (n * p + 99) / 100;
    return v[rank ? rank - 1 : 0];
}

static void stat_finish(struct ldt__stat *st)
{
    if (st->ndurs) /* durs is NULL for a service seen only in CLIENT spans */
        qsort(st->durs, st->ndurs, sizeof(*st->durs), cmp_u64);
    st->p50 = pct(st->durs, st->ndurs, 50);
    st->p90 = pct(st->durs, st->ndurs, 90);
    st->p99 = pct(st->durs, st->ndurs, 99);
}

/* ---- the tree of one trace ---- */

static void ttree_free(struct ttree *tt)
{
    free(tt->parent);
    free(tt->first);
    free(tt->next);
    free(tt->depth);
    free(tt->seen);
}

/* Depths by a walk from the roots (spans whose parent is not in the trace); a cycle keeps NONE. */
static void ttree_depths(struct ttree *tt, size_t *stack)
{
    size_t n = tt->t->n;
    for (size_t r = 0; r < n; r++) {
        if (tt->parent[r] != NONE)
            continue;
        size_t top = 0;
        tt->depth[r] = 0;
        stack[top++] = r;
        while (top) {
            size_t i = stack[--top];
            for (size_t k = tt->first[i]; k != NONE; k = tt->next[k]) {
                if (tt->depth[k] != NONE)
                    continue;
                tt->depth[k] = tt->depth[i] + 1;
                stack[top++] = k;
            }
        }
    }
}

/* Link parents and children; local_of maps a global span index to its local position. */
static int ttree_build(struct ttree *tt, const struct ldt__spans *s, const struct ldt__trace *t,
                       size_t *local_of)
{
    size_t n = t->n, *last = malloc(n * sizeof(size_t));
    memset(tt, 0, sizeof(*tt));
    tt->s = s;
    tt->t = t;
    tt->parent = malloc(n * sizeof(size_t));
    tt->first = malloc(n * sizeof(size_t));
    tt->next = malloc(n * sizeof(size_t));
    tt->depth = malloc(n * sizeof(size_t));
    tt->seen = calloc(n, 1);
    if (!last || !tt->parent || !tt->first || !tt->next || !tt->depth || !tt->seen) {
        free(last);
        ttree_free(tt);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        local_of[t->idx[i]] = i;
        tt->first[i] = tt->next[i] = last[i] = tt->depth[i] = NONE;
    }
    for (size_t i = 0; i < n; i++) {
        const struct ldt__span *sp = SP(tt, i);
        size_t g = sp->parent_id[0] ? ldt__trace_lookup(s, t, sp->parent_id) : NONE;
        size_t p = g == NONE ? NONE : local_of[g];
        tt->parent[i] = p == i ? NONE : p;
        if (tt->parent[i] == NONE)
            continue;
        if (last[p] == NONE)
            tt->first[p] = i;
        else
            tt->next[last[p]] = i;
        last[p] = i;
    }
    ttree_depths(tt, last); /* last[] is free again: reuse it as the walk's stack */
    free(last);
    return 0;
}

/* ---- self time and the critical path ---- */

/* Time in span i not covered by any child (children clipped to the span; they are in start order).
 */
static uint64_t self_time(const struct ttree *tt, size_t i)
{
    const struct ldt__span *sp = SP(tt, i);
    uint64_t covered = 0, cur = sp->start_ns;
    for (size_t k = tt->first[i]; k != NONE; k = tt->next[k]) {
        const struct ldt__span *c = SP(tt, k);
        uint64_t a = c->start_ns > cur ? c->start_ns : cur;
        uint64_t b = c->end_ns < sp->end_ns ? c->end_ns : sp->end_ns;
        if (b > a) {
            covered += b - a;
            cur = b;
        }
    }
    return dur(sp) - covered;
}

struct cp_ctx {
    struct ttree *tt;
    struct ldt__analysis *a;
    int record_path;
    int err;
};

static int add_crit(struct cp_ctx *cx, const struct ldt__span *sp, size_t pos, uint64_t ns)
{
    if (pos != NONE)
        cx->a->path_ns[pos] += ns;
    struct ldt__stat *st = stat_get(&cx->a->svc, &cx->a->nsvc, NULL, sp->service);
    if (!st)
        return cx->err = -ENOMEM;
    st->crit_ns += ns;
    return 0;
}

static const struct ttree *sort_tt; /* qsort has no context argument; the CLI is single-threaded */

/* Latest end first; equal ends in start order. */
static int cmp_end_desc(const void *x, const void *y)
{
    size_t i = *(const size_t *)x, k = *(const size_t *)y;
    uint64_t a = SP(sort_tt, i)->end_ns, b = SP(sort_tt, k)->end_ns;
    if (a != b)
        return a > b ? -1 : 1;
    return i < k ? -1 : i > k;
}

/* The children of i sorted by end, latest first, in a malloc'd array (NULL when there are none or
 * memory ran out: *n tells which). */
static size_t *kids_by_end(const struct ttree *tt, size_t i, size_t *n)
{
    *n = 0;
    for (size_t k = tt->first[i]; k != NONE; k = tt->next[k])
        (*n)++;
    size_t *v = *n ? malloc(*n * sizeof(*v)) : NULL;
    if (!v)
        return NULL;
    size_t m = 0;
    for (size_t k = tt->first[i]; k != NONE; k = tt->next[k])
        v[m++] = k;
    sort_tt = tt;
    qsort(v, m, sizeof(*v), cmp_end_desc);
    return v;
}

/* Walk span i's part of the critical path within [lo, hi]: from the end backwards, the child that
 * ends last before the cursor holds the path, then the cursor moves to that child's start. With the
 * children sorted by end, one pass finds them all (a child skipped once stays behind the cursor).
 */
static void cp_walk(struct cp_ctx *cx, size_t i, uint64_t lo, uint64_t hi, int depth)
{
    struct ttree *tt = cx->tt;
    const struct ldt__span *sp = SP(tt, i);
    uint64_t cursor = sp->end_ns < hi ? sp->end_ns : hi;
    lo = sp->start_ns > lo ? sp->start_ns : lo;
    tt->seen[i] = 1;
    size_t pos = NONE, nk;
    if (cx->record_path) {
        pos = cx->a->npath++;
        cx->a->path[pos] = sp;
        cx->a->path_ns[pos] = 0;
    }
    size_t *kids = kids_by_end(tt, i, &nk);
    if (nk && !kids)
        cx->err = -ENOMEM;
    for (size_t q = 0; kids && q < nk && depth < MAX_CP_DEPTH && cursor > lo; q++) {
        const struct ldt__span *c = SP(tt, kids[q]);
        if (tt->seen[kids[q]] || c->start_ns >= cursor)
            continue;
        uint64_t cend = c->end_ns < cursor ? c->end_ns : cursor;
        if (cend <= lo)
            break; /* the rest of [lo, cursor] is the span's own */
        add_crit(cx, sp, pos, cursor - cend);
        uint64_t cstart = c->start_ns > lo ? c->start_ns : lo;
        cp_walk(cx, kids[q], cstart, cend, depth + 1);
        cursor = cstart;
    }
    free(kids);
    if (cursor > lo)
        add_crit(cx, sp, pos, cursor - lo);
}

/* ---- per-trace findings ---- */

/* The service a CLIENT span called: its SERVER child's service, else its peer, else "?". */
static const char *callee(const struct ttree *tt, size_t i)
{
    for (size_t k = tt->first[i]; k != NONE; k = tt->next[k])
        if (SP(tt, k)->kind == LDT__KIND_SERVER)
            return SP(tt, k)->service;
    return SP(tt, i)->peer ? SP(tt, i)->peer : "?";
}

static int add_spans_stats(struct ldt__analysis *a, struct ttree *tt)
{
    for (size_t i = 0; i < tt->t->n; i++) {
        const struct ldt__span *sp = SP(tt, i);
        struct ldt__stat *st = stat_get(&a->svc, &a->nsvc, NULL, sp->service);
        if (!st)
            return -ENOMEM;
        st->self_ns += self_time(tt, i);
        int entry = sp->kind == LDT__KIND_SERVER || tt->parent[i] == NONE;
        if (entry && stat_add(st, dur(sp), ldt__span_is_error(sp)) < 0)
            return -ENOMEM;
        if (sp->kind != LDT__KIND_CLIENT)
            continue;
        struct ldt__stat *e = stat_get(&a->edge, &a->nedge, sp->service, callee(tt, i));
        if (!e || stat_add(e, dur(sp), ldt__span_is_error(sp)) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* The operation a CLIENT span performed, for grouping retries: "callee METHOD path". */
static void client_op(const struct ttree *tt, size_t i, char *buf, size_t cap)
{
    const struct ldt__span *sp = SP(tt, i);
    snprintf(buf, cap, "%s %s%s%s", callee(tt, i), sp->method ? sp->method : sp->name,
             sp->path ? " " : "", sp->path ? sp->path : "");
}

struct client_op {
    char *op;
    size_t i; /* local position */
};

static int cmp_op(const void *x, const void *y)
{
    const struct client_op *a = x, *b = y;
    int c = strcmp(a->op, b->op);
    return c ? c : (a->i > b->i) - (a->i < b->i);
}

static int push_retry(struct ldt__analysis *a, const struct ttree *tt, size_t parent,
                      const struct client_op *g, size_t n)
{
    struct ldt__retry *v = realloc(a->retry, (a->nretry + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    a->retry = v;
    size_t failed = 0;
    for (size_t k = 0; k < n; k++)
        failed += ldt__span_is_error(SP(tt, g[k].i)) ? 1 : 0;
    /* amplification holds the parent's local position until amplify() replaces it. */
    v[a->nretry] =
        (struct ldt__retry){tt->t->trace_id, SP(tt, parent), strdup(g[0].op), n, failed, parent};
    return v[a->nretry++].target ? 0 : -ENOMEM;
}

/* Group the CLIENT children of one parent by callee and operation (sorted, so a parent with many
 * calls costs n log n); groups of two or more are retries. gsize[] gets each member's group size.
 */
static int retries_of(struct ldt__analysis *a, const struct ttree *tt, size_t p, size_t *gsize,
                      struct client_op *ops)
{
    char buf[600];
    size_t n = 0;
    int rc = 0;
    for (size_t k = tt->first[p]; k != NONE && rc == 0; k = tt->next[k]) {
        if (SP(tt, k)->kind != LDT__KIND_CLIENT)
            continue;
        client_op(tt, k, buf, sizeof(buf));
        ops[n] = (struct client_op){strdup(buf), k};
        rc = ops[n++].op ? 0 : -ENOMEM;
    }
    if (rc == 0)
        qsort(ops, n, sizeof(*ops), cmp_op);
    for (size_t i = 0, j; i < n && rc == 0; i = j) {
        for (j = i; j < n && strcmp(ops[j].op, ops[i].op) == 0; j++)
            ;
        for (size_t k = i; k < j; k++)
            gsize[ops[k].i] = j - i;
        if (j - i >= 2)
            rc = push_retry(a, tt, p, ops + i, j - i);
    }
    for (size_t k = 0; k < n; k++)
        free(ops[k].op);
    return rc;
}

/* End-to-end amplification: a retried call under a retried caller multiplies. fac[i] is the
 * product of the group sizes on the path from the root down to span i, filled by a walk from the
 * roots (spans only reachable through a cycle count their own group alone). */
static void amplify(struct ldt__analysis *a, size_t first_retry, const struct ttree *tt,
                    const size_t *gsize, size_t *fac, size_t *stack)
{
    size_t n = tt->t->n;
    for (size_t i = 0; i < n; i++)
        fac[i] = gsize[i] ? gsize[i] : 1;
    for (size_t r = 0; r < n; r++) {
        if (tt->parent[r] != NONE)
            continue;
        size_t top = 0;
        stack[top++] = r;
        while (top) {
            size_t i = stack[--top];
            for (size_t k = tt->first[i]; k != NONE; k = tt->next[k]) {
                fac[k] = fac[i] * (gsize[k] ? gsize[k] : 1);
                stack[top++] = k;
            }
        }
    }
    for (size_t r = first_retry; r < a->nretry; r++)
        a->retry[r].amplification = a->retry[r].attempts * fac[a->retry[r].amplification];
}

static int add_retries(struct ldt__analysis *a, const struct ttree *tt)
{
    size_t n = tt->t->n, first = a->nretry;
    size_t *gsize = calloc(n, sizeof(size_t)), *fac = malloc(2 * n * sizeof(size_t));
    struct client_op *ops = malloc(n * sizeof(*ops));
    int rc = gsize && fac && ops ? 0 : -ENOMEM;
    for (size_t p = 0; p < n && rc == 0; p++)
        rc = retries_of(a, tt, p, gsize, ops);
    if (rc == 0)
        amplify(a, first, tt, gsize, fac, fac + n);
    free(gsize);
    free(fac);
    free(ops);
    return rc;
}

/* The deepest error span none of whose children failed (earliest on a tie). */
static int add_origin(struct ldt__analysis *a, const struct ttree *tt)
{
    size_t best = NONE;
    for (size_t i = 0; i < tt->t->n; i++) {
        if (!ldt__span_is_error(SP(tt, i)) || tt->depth[i] == NONE)
            continue;
        int failing_child = 0;
        for (size_t k = tt->first[i]; k != NONE && !failing_child; k = tt->next[k])
            failing_child = ldt__span_is_error(SP(tt, k));
        if (!failing_child && (best == NONE || tt->depth[i] > tt->depth[best]))
            best = i;
    }
    if (best == NONE)
        return 0;
    struct ldt__origin *v = realloc(a->origin, (a->norigin + 1) * sizeof(*v));
    if (!v)
        return -ENOMEM;
    a->origin = v;
    v[a->norigin++] = (struct ldt__origin){tt->t->trace_id, SP(tt, best), &tt->s->v[tt->t->root]};
    return 0;
}

static int analyze_trace(struct ldt__analysis *a, const struct ldt__spans *s,
                         const struct ldt__trace *t, size_t *local_of, int record_path)
{
    struct ttree tt;
    int rc = ttree_build(&tt, s, t, local_of);
    if (rc < 0)
        return rc;
    rc = add_spans_stats(a, &tt);
    if (rc == 0)
        rc = add_retries(a, &tt);
    if (rc == 0 && t->errors)
        rc = add_origin(a, &tt);
    if (rc == 0) {
        struct cp_ctx cx = {&tt, a, record_path, 0};
        size_t root = local_of[t->root];
        a->crit_total += dur(&s->v[t->root]);
        cp_walk(&cx, root, s->v[t->root].start_ns, s->v[t->root].end_ns, 0);
        rc = cx.err;
    }
    a->spans += t->n;
    a->traces++;
    ttree_free(&tt);
    return rc;
}

/* Put the critical path in start order (insertion sort: it is short and mostly ordered). */
static void path_sort(struct ldt__analysis *a)
{
    for (size_t i = 1; i < a->npath; i++) {
        for (size_t j = i; j > 0 && a->path[j - 1]->start_ns > a->path[j]->start_ns; j--) {
            const struct ldt__span *sp = a->path[j];
            uint64_t ns = a->path_ns[j];
            a->path[j] = a->path[j - 1];
            a->path_ns[j] = a->path_ns[j - 1];
            a->path[j - 1] = sp;
            a->path_ns[j - 1] = ns;
        }
    }
}

int ldt__analyze(const struct ldt__spans *s, const struct ldt__traces *t, int which,
                 struct ldt__analysis *a)
{
    memset(a, 0, sizeof(*a));
    size_t *local_of = malloc((s->n ? s->n : 1) * sizeof(size_t));
    if (!local_of)
        return -ENOMEM;
    if (which >= 0) {
        a->path = malloc((t->v[which].n + 1) * sizeof(*a->path));
        a->path_ns = malloc((t->v[which].n + 1) * sizeof(*a->path_ns));
        if (!a->path || !a->path_ns) {
            free(local_of);
            return -ENOMEM;
        }
    }
    int rc = 0;
    for (size_t i = 0; i < t->n && rc == 0; i++)
        if (which < 0 || (size_t)which == i)
            rc = analyze_trace(a, s, &t->v[i], local_of, which >= 0);
    free(local_of);
    path_sort(a);
    for (size_t i = 0; i < a->nsvc; i++)
        stat_finish(&a->svc[i]);
    for (size_t i = 0; i < a->nedge; i++)
        stat_finish(&a->edge[i]);
    return rc;
}

static void stats_free(struct ldt__stat *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].from);
        free(v[i].to);
        free(v[i].durs);
    }
    free(v);
}

void ldt__analysis_free(struct ldt__analysis *a)
{
    stats_free(a->svc, a->nsvc);
    stats_free(a->edge, a->nedge);
    for (size_t i = 0; i < a->nretry; i++)
        free(a->retry[i].target);
    free(a->retry);
    free(a->origin);
    free(a->path);
    free(a->path_ns);
    memset(a, 0, sizeof(*a));
}

/* ---- output ---- */

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static double rate(size_t errors, size_t count)
{
    return count ? 100.0 * (double)errors / (double)count : 0.0;
}

/* The service with the most critical-path time (the bottleneck); NULL when there are none. */
static const struct ldt__stat *bottleneck(const struct ldt__analysis *a)
{
    const struct ldt__stat *b = NULL;
    for (size_t i = 0; i < a->nsvc; i++)
        if (!b || a->svc[i].crit_ns > b->crit_ns)
            b = &a->svc[i];
    return b;
}

/* Services ordered by critical-path time, most first (ties by name). */
static int cmp_crit(const void *x, const void *y)
{
    const struct ldt__stat *a = *(const struct ldt__stat *const *)x;
    const struct ldt__stat *b = *(const struct ldt__stat *const *)y;
    if (a->crit_ns != b->crit_ns)
        return a->crit_ns > b->crit_ns ? -1 : 1;
    return strcmp(a->to, b->to);
}

static const struct ldt__stat **by_crit(const struct ldt__analysis *a)
{
    const struct ldt__stat **v = malloc((a->nsvc + 1) * sizeof(*v));
    for (size_t i = 0; v && i < a->nsvc; i++)
        v[i] = &a->svc[i];
    if (v)
        qsort(v, a->nsvc, sizeof(*v), cmp_crit);
    return v;
}

static void span_desc(const struct ldt__span *sp, char *buf, size_t cap)
{
    const char *name = sp->name && *sp->name ? sp->name : sp->method ? sp->method : "?";
    int with_path = sp->path && !strstr(name, sp->path);
    char code[16] = "";
    if (sp->http_code)
        snprintf(code, sizeof(code), " %d", sp->http_code);
    snprintf(buf, cap, "%s %s%s%s%s%s", sp->service, sp->kind == LDT__KIND_CLIENT ? "-> " : "",
             name, with_path ? " " : "", with_path ? sp->path : "", code);
}

static void text_time(FILE *out, const struct ldt__analysis *a, const struct ldt__stat **v)
{
    fprintf(out, "\nCritical path: time on it per service (self time in brackets)\n");
    for (size_t i = 0; i < a->nsvc; i++)
        fprintf(out, "  %-20s %10.2fms %5.1f%%  (%.2fms)%s\n", v[i]->to, ms(v[i]->crit_ns),
                rate((size_t)(v[i]->crit_ns / 1000), (size_t)(a->crit_total / 1000)),
                ms(v[i]->self_ns), i == 0 && v[i]->crit_ns ? "  <- bottleneck" : "");
    if (a->npath) {
        char d[600];
        fprintf(out, "\nCritical path of the trace (spans in start order, time each holds it)\n");
        for (size_t i = 0; i < a->npath; i++) {
            span_desc(a->path[i], d, sizeof(d));
            fprintf(out, "  %10.2fms  %s\n", ms(a->path_ns[i]), d);
        }
    }
}

static void text_stats(FILE *out, const char *title, const struct ldt__stat *v, size_t n)
{
    fprintf(out, "\n%-34s %6s %6s %6s %10s %10s %10s\n", title, "count", "errors", "err%", "p50",
            "p90", "p99");
    for (size_t i = 0; i < n; i++) {
        char name[300];
        snprintf(name, sizeof(name), "%s%s%s", v[i].from ? v[i].from : "", v[i].from ? " -> " : "",
                 v[i].to);
        fprintf(out, "  %-32s %6zu %6zu %5.1f%% %8.2fms %8.2fms %8.2fms\n", name, v[i].count,
                v[i].errors, rate(v[i].errors, v[i].count), ms(v[i].p50), ms(v[i].p90),
                ms(v[i].p99));
    }
}

/* The origin's stack (exception.stacktrace), one frame a line, indented, at most 16 frames. */
static void text_stack(FILE *out, const char *st)
{
    for (int n = 0; *st && n < 16; n++) {
        const char *nl = strchr(st, '\n');
        int len = nl ? (int)(nl - st) : (int)strlen(st);
        if (len > 0)
            fprintf(out, "      at %.*s\n", len > 200 ? 200 : len, st);
        st += len + (nl != NULL);
    }
}

static void text_findings(FILE *out, const struct ldt__analysis *a)
{
    char d1[600], d2[600];
    fprintf(out, "\nErrors: where they started -> where they surfaced\n");
    if (!a->norigin)
        fprintf(out, "  none\n");
    for (size_t i = 0; i < a->norigin; i++) {
        span_desc(a->origin[i].origin, d1, sizeof(d1));
        span_desc(a->origin[i].surfaced, d2, sizeof(d2));
        fprintf(out, "  %.12s  %s  ->  %s\n", a->origin[i].trace_id, d1, d2);
        const char *st = a->origin[i].origin->stacktrace;
        const char *prev = i ? a->origin[i - 1].origin->stacktrace : NULL;
        if (st && prev && strcmp(st, prev) == 0)
            fprintf(out, "      (same stack as above)\n");
        else if (st)
            text_stack(out, st);
    }
    fprintf(out, "\nRetry storms: repeated calls to one peer and operation under one parent\n");
    if (!a->nretry)
        fprintf(out, "  none\n");
    for (size_t i = 0; i < a->nretry; i++) {
        span_desc(a->retry[i].parent, d1, sizeof(d1));
        fprintf(out, "  %.12s  %s -> %s: %zu attempts (x%zu amplification", a->retry[i].trace_id,
                d1, a->retry[i].target, a->retry[i].attempts, a->retry[i].attempts);
        if (a->retry[i].amplification != a->retry[i].attempts)
            fprintf(out, ", x%zu end to end", a->retry[i].amplification);
        fprintf(out, "), %zu failed\n", a->retry[i].failed);
    }
}

static int print_text(FILE *out, const struct ldt__analysis *a)
{
    const struct ldt__stat **v = by_crit(a);
    if (!v)
        return -ENOMEM;
    fprintf(out, "%zu trace%s, %zu span%s", a->traces, a->traces == 1 ? "" : "s", a->spans,
            a->spans == 1 ? "" : "s");
    if (a->nsvc && v[0]->crit_ns)
        fprintf(out, "; bottleneck: %s (%.1f%% of the critical path)", v[0]->to,
                rate((size_t)(v[0]->crit_ns / 1000), (size_t)(a->crit_total / 1000)));
    fprintf(out, "\n");
    text_time(out, a, v);
    free(v);
    text_stats(out, "Services (entry spans)", a->svc, a->nsvc);
    text_stats(out, "Calls (client -> server)", a->edge, a->nedge);
    text_findings(out, a);
    return 0;
}

/* ---- JSON ---- */

static json_t *jms(uint64_t ns)
{
    return json_real(round((double)ns / 1e3) / 1e3);
}

static json_t *json_stat(const struct ldt__stat *st)
{
    json_t *o = json_object();
    if (st->from) {
        json_object_set_new(o, "from", json_string(st->from));
        json_object_set_new(o, "to", json_string(st->to));
    } else {
        json_object_set_new(o, "name", json_string(st->to));
    }
    json_object_set_new(o, "count", json_integer((json_int_t)st->count));
    json_object_set_new(o, "errors", json_integer((json_int_t)st->errors));
    json_object_set_new(o, "error_rate", json_real(round(rate(st->errors, st->count) * 10) / 1000));
    json_object_set_new(o, "p50_ms", jms(st->p50));
    json_object_set_new(o, "p90_ms", jms(st->p90));
    json_object_set_new(o, "p99_ms", jms(st->p99));
    if (!st->from) {
        json_object_set_new(o, "self_ms", jms(st->self_ns));
        json_object_set_new(o, "critical_ms", jms(st->crit_ns));
    }
    return o;
}

static json_t *json_span(const struct ldt__span *sp)
{
    json_t *o = json_object();
    json_object_set_new(o, "span_id", json_string(sp->span_id));
    json_object_set_new(o, "service", json_string(sp->service));
    json_object_set_new(o, "name", json_string(sp->name));
    if (sp->path)
        json_object_set_new(o, "url.path", json_string(sp->path));
    if (sp->http_code)
        json_object_set_new(o, "status_code", json_integer(sp->http_code));
    if (sp->stacktrace)
        json_object_set_new(o, "stacktrace", json_string(sp->stacktrace));
    return o;
}

static json_t *json_findings(const struct ldt__analysis *a, json_t *root)
{
    json_t *errs = json_array(), *retries = json_array();
    for (size_t i = 0; i < a->norigin; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "trace_id", json_string(a->origin[i].trace_id));
        json_object_set_new(o, "origin", json_span(a->origin[i].origin));
        json_object_set_new(o, "surfaced", json_span(a->origin[i].surfaced));
        json_array_append_new(errs, o);
    }
    for (size_t i = 0; i < a->nretry; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "trace_id", json_string(a->retry[i].trace_id));
        json_object_set_new(o, "parent", json_span(a->retry[i].parent));
        json_object_set_new(o, "target", json_string(a->retry[i].target));
        json_object_set_new(o, "attempts", json_integer((json_int_t)a->retry[i].attempts));
        json_object_set_new(o, "failed", json_integer((json_int_t)a->retry[i].failed));
        json_object_set_new(o, "amplification", json_integer((json_int_t)a->retry[i].attempts));
        json_object_set_new(o, "end_to_end_amplification",
                            json_integer((json_int_t)a->retry[i].amplification));
        json_array_append_new(retries, o);
    }
    json_object_set_new(root, "errors", errs);
    json_object_set_new(root, "retries", retries);
    return root;
}

static int print_json(FILE *out, const struct ldt__analysis *a)
{
    const struct ldt__stat *b = bottleneck(a);
    json_t *root = json_object(), *svc = json_array(), *edges = json_array();
    json_object_set_new(root, "traces", json_integer((json_int_t)a->traces));
    json_object_set_new(root, "spans", json_integer((json_int_t)a->spans));
    json_object_set_new(root, "bottleneck", b && b->crit_ns ? json_string(b->to) : json_null());
    json_object_set_new(root, "critical_total_ms", jms(a->crit_total));
    for (size_t i = 0; i < a->nsvc; i++)
        json_array_append_new(svc, json_stat(&a->svc[i]));
    for (size_t i = 0; i < a->nedge; i++)
        json_array_append_new(edges, json_stat(&a->edge[i]));
    json_object_set_new(root, "services", svc);
    json_object_set_new(root, "edges", edges);
    if (a->npath) {
        json_t *path = json_array();
        for (size_t i = 0; i < a->npath; i++) {
            json_t *o = json_span(a->path[i]);
            json_object_set_new(o, "critical_ms", jms(a->path_ns[i]));
            json_array_append_new(path, o);
        }
        json_object_set_new(root, "critical_path", path);
    }
    json_findings(a, root);
    int rc = json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(root);
    return rc == 0 && fputc('\n', out) != EOF ? 0 : -EIO;
}

/* ---- graphs ---- */

/* Is service `name` where an error started? */
static int is_origin(const struct ldt__analysis *a, const char *name)
{
    for (size_t i = 0; i < a->norigin; i++)
        if (strcmp(a->origin[i].origin->service, name) == 0)
            return 1;
    return 0;
}

/* Text inside a dot string (backslash and quote escaped). */
static void dot_text(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        fputc(*s, out);
    }
}

/* A quoted dot identifier. */
static void dot_id(FILE *out, const char *s)
{
    fputc('"', out);
    dot_text(out, s);
    fputc('"', out);
}

/* Every name used as a node: services, and edge targets that are not services (untraced peers). */
static int node_names(const struct ldt__analysis *a, const char ***out)
{
    const char **v = malloc((a->nsvc + a->nedge + 1) * sizeof(*v));
    size_t n = 0;
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < a->nsvc; i++)
        v[n++] = a->svc[i].to;
    for (size_t i = 0; i < a->nedge; i++) {
        size_t k = 0;
        while (k < n && strcmp(v[k], a->edge[i].to) != 0)
            k++;
        if (k == n)
            v[n++] = a->edge[i].to;
    }
    *out = v;
    return (int)n;
}

static const struct ldt__stat *svc_of(const struct ldt__analysis *a, const char *name)
{
    for (size_t i = 0; i < a->nsvc; i++)
        if (strcmp(a->svc[i].to, name) == 0)
            return &a->svc[i];
    return NULL;
}

static int print_dot(FILE *out, const struct ldt__analysis *a)
{
    const char **names;
    int n = node_names(a, &names);
    if (n < 0)
        return n;
    const struct ldt__stat *b = bottleneck(a);
    fprintf(out, "digraph ldtrace {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (int i = 0; i < n; i++) {
        const struct ldt__stat *st = svc_of(a, names[i]);
        fprintf(out, "  ");
        dot_id(out, names[i]);
        fprintf(out, " [label=\"");
        dot_text(out, names[i]);
        if (st)
            fprintf(out, "\\n%zu req, %.0f%% err, p99 %.2fms\"", st->count,
                    rate(st->errors, st->count), ms(st->p99));
        else
            fprintf(out, "\\n(not traced)\", style=\"rounded,dashed\"");
        if (st && b == st && st->crit_ns)
            fprintf(out, ", color=red, penwidth=3");
        if (is_origin(a, names[i]))
            fprintf(out, ", style=\"rounded,filled\", fillcolor=\"#ffd0d0\"");
        fprintf(out, "];\n");
    }
    for (size_t i = 0; i < a->nedge; i++) {
        const struct ldt__stat *e = &a->edge[i];
        fprintf(out, "  ");
        dot_id(out, e->from);
        fprintf(out, " -> ");
        dot_id(out, e->to);
        fprintf(out, " [label=\"%zu calls, %.0f%% err\\np99 %.2fms\"%s];\n", e->count,
                rate(e->errors, e->count), ms(e->p99), e->errors ? ", color=red" : "");
    }
    fprintf(out, "}\n");
    free(names);
    return 0;
}

/* Mermaid node ids: letters, digits and '_' only. */
static void mm_id(FILE *out, const char *s)
{
    fputs("s_", out);
    for (; *s; s++)
        fputc((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')
                  ? *s
                  : '_',
              out);
}

/* Mermaid label text: no quotes or brackets that would end it. */
static void mm_text(FILE *out, const char *s)
{
    for (; *s; s++)
        fputc(strchr("\"[]{}()|<>#", *s) ? '_' : *s, out);
}

/* Highlight the bottleneck and the services where errors started. */
static void mm_classes(FILE *out, const struct ldt__analysis *a, const char **names, int n)
{
    const struct ldt__stat *b = bottleneck(a);
    fprintf(out, "  classDef bottleneck stroke:#d00,stroke-width:3px\n"
                 "  classDef origin fill:#ffd0d0\n");
    for (int i = 0; i < n; i++) {
        const struct ldt__stat *st = svc_of(a, names[i]);
        if (st && st == b && st->crit_ns) {
            fprintf(out, "  class ");
            mm_id(out, names[i]);
            fprintf(out, " bottleneck\n");
        }
        if (is_origin(a, names[i])) {
            fprintf(out, "  class ");
            mm_id(out, names[i]);
            fprintf(out, " origin\n");
        }
    }
}

static int print_mermaid(FILE *out, const struct ldt__analysis *a)
{
    const char **names;
    int n = node_names(a, &names);
    if (n < 0)
        return n;
    fprintf(out, "flowchart LR\n");
    for (int i = 0; i < n; i++) {
        const struct ldt__stat *st = svc_of(a, names[i]);
        fprintf(out, "  ");
        mm_id(out, names[i]);
        fprintf(out, "[\"");
        mm_text(out, names[i]);
        if (st)
            fprintf(out, "<br/>%zu req, %.0f%% err, p99 %.2fms\"]\n", st->count,
                    rate(st->errors, st->count), ms(st->p99));
        else
            fprintf(out, "<br/>not traced\"]\n");
    }
    for (size_t i = 0; i < a->nedge; i++) {
        const struct ldt__stat *e = &a->edge[i];
        fprintf(out, "  ");
        mm_id(out, e->from);
        fprintf(out, " -->|\"%zu calls, %.0f%% err, p99 %.2fms\"| ", e->count,
                rate(e->errors, e->count), ms(e->p99));
        mm_id(out, e->to);
        fprintf(out, "\n");
    }
    mm_classes(out, a, names, n);
    free(names);
    return 0;
}

int ldt__analysis_print(FILE *out, const struct ldt__analysis *a, const char *format)
{
    int rc;
    if (strcmp(format, "text") == 0)
        rc = print_text(out, a);
    else if (strcmp(format, "json") == 0)
        rc = print_json(out, a);
    else if (strcmp(format, "dot") == 0)
        rc = print_dot(out, a);
    else if (strcmp(format, "mermaid") == 0)
        rc = print_mermaid(out, a);
    else
        return -EINVAL;
    return rc == 0 && ferror(out) ? -EIO : rc;
}

/* ---- the command ---- */

static void analyze_usage(FILE *f)
{
    fprintf(f, "usage: ldtrace analyze FILE [--trace ID] [--format text|json|dot|mermaid]\n"
               "  critical path and self time per service (the bottleneck), per service and per\n"
               "  call edge count, error rate and p50/p90/p99, error origin, retry storms\n");
}

static int known_format(const char *f)
{
    return !strcmp(f, "text") || !strcmp(f, "json") || !strcmp(f, "dot") || !strcmp(f, "mermaid");
}

/* Options into *trace and *format. Returns -1 to go on, else the exit status. */
static int analyze_parse(int argc, char **argv, const char **trace, const char **format)
{
    static const struct option opts[] = {{"trace", required_argument, 0, 't'},
                                         {"format", required_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "t:f:h", opts, NULL)) != -1) {
        if (ch == 't')
            *trace = optarg;
        else if (ch == 'f')
            *format = optarg;
        else
            break;
    }
    if (ch == 'h') {
        analyze_usage(stdout);
        return 0;
    }
    if (ch != -1 || optind != argc - 1 || !known_format(*format)) {
        analyze_usage(stderr);
        return 2;
    }
    return -1;
}

int ldt__analyze_main(int argc, char **argv)
{
    const char *trace = NULL, *format = "text";
    int early = analyze_parse(argc, argv, &trace, &format);
    if (early >= 0)
        return early;
    const char *file = argv[optind];
    struct ldt__spans s = {0};
    struct ldt__traces t = {0};
    struct ldt__analysis a = {0};
    int rc = ldt__spans_load_file(&s, file), status = 1, which = -1;
    if (rc < 0)
        fprintf(stderr, "ldtrace: analyze: read %s: %s\n", file, strerror(-rc));
    else if ((rc = ldt__traces_build(&s, &t)) < 0)
        fprintf(stderr, "ldtrace: analyze: %s: %s\n", file, strerror(-rc));
    else if (trace && (which = ldt__traces_find(&t, trace)) < 0)
        fprintf(stderr, "ldtrace: analyze: trace %s in %s: %s\n", trace, file,
                which == -EEXIST ? "ambiguous prefix" : "not found");
    else if ((rc = ldt__analyze(&s, &t, which, &a)) < 0)
        fprintf(stderr, "ldtrace: analyze: %s: %s\n", file, strerror(-rc));
    else
        status = ldt__analysis_print(stdout, &a, format) < 0;
    if (s.bad_lines || s.bad_spans)
        fprintf(stderr, "ldtrace: analyze: %s: skipped %zu malformed lines and %zu spans\n", file,
                s.bad_lines, s.bad_spans);
    ldt__analysis_free(&a);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
    return status;
}
