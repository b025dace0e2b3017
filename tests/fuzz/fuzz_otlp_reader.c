/* fuzz_otlp_reader.c - libFuzzer target: the CLI's OTLP JSON loader and everything drawn from what
 * it loads (trace grouping, waterfall, analysis, HTML) survive any file and never hand a control
 * byte or a malformed id to the terminal. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static FILE *devnull;

static int is_hex(const char *s, size_t n)
{
    if (strlen(s) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* Strings are documented as safe to print: no C0 control byte, no DEL. */
static void check_text(const char *s)
{
    if (!s)
        return;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            abort();
}

static void check_span(const struct ldt__span *sp)
{
    if (!is_hex(sp->trace_id, 32) || !is_hex(sp->span_id, 16))
        abort();
    if (sp->parent_id[0] && !is_hex(sp->parent_id, 16))
        abort();
    if (sp->end_ns < sp->start_ns || !sp->service)
        abort();
    check_text(sp->service);
    check_text(sp->name);
    check_text(sp->method);
    check_text(sp->path);
    check_text(sp->peer);
    check_text(sp->exception);
}

static void check_traces(const struct ldt__spans *s, const struct ldt__traces *t)
{
    size_t total = 0;
    for (size_t i = 0; i < t->n; i++) {
        const struct ldt__trace *tr = &t->v[i];
        if (tr->n == 0 || tr->root >= s->n)
            abort();
        for (size_t j = 0; j < tr->n; j++) {
            if (tr->idx[j] >= s->n || strcmp(s->v[tr->idx[j]].trace_id, tr->trace_id) != 0)
                abort();
            size_t k = ldt__trace_lookup(s, tr, s->v[tr->idx[j]].span_id);
            if (k == SIZE_MAX || strcmp(s->v[k].span_id, s->v[tr->idx[j]].span_id) != 0)
                abort();
        }
        if (ldt__traces_find(t, tr->trace_id) < 0)
            abort();
        total += tr->n;
    }
    if (total > s->n)
        abort();
}

static void draw(const struct ldt__spans *s, const struct ldt__traces *t, uint8_t opt)
{
    struct ldt__view_opts vo = {.width = 20 + opt % 140, .color = opt & 1, .unicode = opt & 2};
    struct ldt__analysis a;
    ldt__view_list(devnull, s, t, &vo);
    if (t->n == 0)
        return;
    int which = (int)(opt % t->n);
    ldt__view_trace(devnull, s, &t->v[which], &vo);
    memset(&a, 0, sizeof a);
    if (ldt__analyze(s, t, opt & 4 ? which : -1, &a) == 0) {
        static const char *const fmt[] = {"text", "json", "dot", "mermaid"};
        ldt__analysis_print(devnull, &a, fmt[(opt >> 3) & 3]);
    }
    ldt__analysis_free(&a);
    if (opt & 0x20)
        ldt__html_write(devnull, s, t, which);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ldt__spans s;
    struct ldt__traces t;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    if (size < 1 || size > 65536)
        return 0;
    /* The last byte chooses the drawing options; the rest is the file, cut into lines. */
    uint8_t opt = data[size - 1];
    size_t n = size - 1;
    memset(&s, 0, sizeof s);
    for (size_t at = 0; at < n;) {
        const uint8_t *nl = memchr(data + at, '\n', n - at);
        size_t l = nl ? (size_t)(nl - (data + at)) : n - at;
        char *line = malloc(l ? l : 1); /* exact size, no NUL: ASan sees any over-read */
        memcpy(line, data + at, l);
        ldt__spans_parse_line(&s, line, l);
        free(line);
        at += l + 1;
    }
    for (size_t i = 0; i < s.n; i++)
        check_span(&s.v[i]);
    memset(&t, 0, sizeof t);
    if (ldt__traces_build(&s, &t) == 0) {
        check_traces(&s, &t);
        draw(&s, &t, opt);
        ldt__traces_free(&t);
    }
    ldt__spans_free(&s);
    return 0;
}
