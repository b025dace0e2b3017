/* cmd_html.c - `ldtrace html`: spans -> one self-contained HTML page (list, graph, waterfall).
 *
 * The page carries its data as JSON in a <script type="application/json"> element, with every '<',
 * '>' and '&' written as a \u escape so no span name can close the element, and the page's script
 * only ever puts data into the document with textContent, never as markup. No network access: no
 * fonts, scripts or images are fetched, so the file works offline and can be attached to a bug
 * report. The script draws, for the selected trace, a waterfall (one element of class "bar" with
 * data-span-id per span) and the span details on click (attributes, events, the exception's stack
 * one frame per line); and, for the whole file, the service graph as an inline SVG (one <g
 * class="node" data-service=...> per service, edges with count, median latency and error rate,
 * laid out in layers by call depth, error-origin services highlighted). It fits 1280x800. The
 * style and the script are html_page.css and html_page.js, made C strings by embed.py.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

static json_t *jms_rel(uint64_t ns)
{
    return json_real(round((double)ns / 1e3) / 1e3);
}

static void set_str(json_t *o, const char *key, const char *v)
{
    if (v)
        json_object_set_new(o, key, json_string(v));
}

static json_t *span_json(const struct ldt__span *sp, uint64_t t0)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(sp->span_id));
    json_object_set_new(o, "parent", json_string(sp->parent_id));
    json_object_set_new(o, "service", json_string(sp->service));
    json_object_set_new(o, "name", json_string(sp->name ? sp->name : ""));
    set_str(o, "method", sp->method);
    set_str(o, "path", sp->path);
    set_str(o, "peer", sp->peer);
    set_str(o, "exception", sp->exception);
    set_str(o, "stack", sp->stacktrace);
    json_object_set_new(o, "kind", json_integer(sp->kind));
    json_object_set_new(o, "status", json_integer(sp->status));
    json_object_set_new(o, "code", json_integer(sp->http_code));
    json_object_set_new(o, "error", json_boolean(ldt__span_is_error(sp)));
    json_object_set_new(o, "start_ms", jms_rel(sp->start_ns - t0));
    json_object_set_new(o, "dur_ms", jms_rel(sp->end_ns - sp->start_ns));
    json_object_set_new(o, "attrs", sp->attrs ? json_incref(sp->attrs) : json_array());
    json_object_set_new(o, "events", sp->events ? json_incref(sp->events) : json_array());
    return o;
}

static json_t *trace_json(const struct ldt__spans *s, const struct ldt__trace *t)
{
    char start[40];
    time_t sec = (time_t)(t->start_ns / 1000000000u);
    struct tm tm;
    if (!gmtime_r(&sec, &tm) || !strftime(start, sizeof(start), "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(start, sizeof(start), "?");
    const struct ldt__span *r = &s->v[t->root];
    json_t *o = json_object(), *spans = json_array();
    json_object_set_new(o, "id", json_string(t->trace_id));
    json_object_set_new(o, "root_service", json_string(r->service));
    json_object_set_new(o, "root_name", json_string(r->name ? r->name : ""));
    set_str(o, "root_path", r->path);
    json_object_set_new(o, "start", json_string(start));
    json_object_set_new(o, "dur_ms", jms_rel(t->end_ns - t->start_ns));
    json_object_set_new(o, "errors", json_integer((json_int_t)t->errors));
    for (size_t i = 0; i < t->n; i++)
        json_array_append_new(spans, span_json(&s->v[t->idx[i]], t->start_ns));
    json_object_set_new(o, "spans", spans);
    return o;
}

/* ---- the service graph ---- */

/* The node of service `name`, added (with no traffic) when it is not there yet. `index` maps names
 * to positions in `nodes`. Returns a borrowed reference. */
static json_t *graph_node(json_t *nodes, json_t *index, const char *name)
{
    json_t *at = json_object_get(index, name);
    if (at)
        return json_array_get(nodes, (size_t)json_integer_value(at));
    json_object_set_new(index, name, json_integer((json_int_t)json_array_size(nodes)));
    json_array_append_new(nodes, json_pack("{sssisisfsb}", "name", name, "count", 0, "errors", 0,
                                           "p50_ms", 0.0, "origin", 0));
    return json_array_get(nodes, json_array_size(nodes) - 1);
}

static void graph_counts(json_t *o, const struct ldt__stat *st)
{
    json_object_set_new(o, "count", json_integer((json_int_t)st->count));
    json_object_set_new(o, "errors", json_integer((json_int_t)st->errors));
    json_object_set_new(o, "p50_ms", jms_rel(st->p50));
}

/* {"nodes": [{name, count, errors, p50_ms, origin}], "edges": [{from, to, count, errors, p50_ms}]}
 * over every trace: services are the analysis' entry-span services plus both ends of every call,
 * and `origin` marks services where a failing trace's error started. NULL when memory ran out. */
static json_t *graph_json(const struct ldt__spans *s, const struct ldt__traces *t)
{
    struct ldt__analysis a;
    memset(&a, 0, sizeof(a));
    if (ldt__analyze(s, t, -1, &a) < 0)
        return NULL;
    json_t *nodes = json_array(), *index = json_object(), *edges = json_array();
    for (size_t i = 0; i < a.nsvc; i++)
        graph_counts(graph_node(nodes, index, a.svc[i].to), &a.svc[i]);
    for (size_t i = 0; i < a.nedge; i++) {
        graph_node(nodes, index, a.edge[i].from);
        graph_node(nodes, index, a.edge[i].to);
        json_t *e = json_pack("{ssss}", "from", a.edge[i].from, "to", a.edge[i].to);
        graph_counts(e, &a.edge[i]);
        json_array_append_new(edges, e);
    }
    for (size_t i = 0; i < a.norigin; i++)
        json_object_set_new(graph_node(nodes, index, a.origin[i].origin->service), "origin",
                            json_true());
    ldt__analysis_free(&a);
    json_decref(index);
    return json_pack("{soso}", "nodes", nodes, "edges", edges);
}

/* Write JSON text with '<', '>' and '&' escaped (they only occur inside strings in JSON). */
static void put_safe_json(FILE *out, const char *js)
{
    for (; *js; js++) {
        if (*js == '<')
            fputs("\\u003c", out);
        else if (*js == '>')
            fputs("\\u003e", out);
        else if (*js == '&')
            fputs("\\u0026", out);
        else
            fputc(*js, out);
    }
}

/* ---- the page: html_page.css and html_page.js, embedded at build time by embed.py ---- */

#include "html_page.h"

static const char page_body[] =
    "</style>\n</head>\n<body>\n"
    "<header><b>ldtrace</b><span class=\"sum\" id=\"sum\"></span></header>\n"
    "<nav id=\"list\"></nav>\n<section id=\"graph\"></section>\n<main id=\"main\"></main>\n"
    "<aside id=\"det\"></aside>\n"
    "<script id=\"data\" type=\"application/json\">";

int ldt__html_write(FILE *out, const struct ldt__spans *s, const struct ldt__traces *t, int initial)
{
    json_t *root = json_object(), *traces = json_array(), *graph = graph_json(s, t);
    if (!graph) {
        json_decref(root);
        json_decref(traces);
        return -ENOMEM;
    }
    for (size_t i = 0; i < t->n; i++)
        json_array_append_new(traces, trace_json(s, &t->v[i]));
    json_object_set_new(root, "traces", traces);
    json_object_set_new(root, "initial", json_integer(initial > 0 ? initial : 0));
    json_object_set_new(root, "graph", graph);
    char *js = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(root);
    if (!js)
        return -ENOMEM;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width\">\n"
          "<title>ldtrace</title>\n<style>\n",
          out);
    fputs(html_page_css, out);
    fputs(page_body, out);
    put_safe_json(out, js);
    fputs("</script>\n<script>\n", out);
    fputs(html_page_js, out);
    fputs("</script>\n</body>\n</html>\n", out);
    free(js);
    return ferror(out) ? -EIO : 0;
}

/* Write the page and close (or flush) the stream. Returns the exit status. */
static int write_page(FILE *out, const char *outp, const struct ldt__spans *s,
                      const struct ldt__traces *t, int which)
{
    int rc = ldt__html_write(out, s, t, which);
    int cerr = out != stdout ? fclose(out) : fflush(out);
    if (rc == 0 && cerr)
        rc = -errno;
    if (rc < 0)
        fprintf(stderr, "ldtrace: html: write %s: %s\n", outp ? outp : "stdout", strerror(-rc));
    return rc < 0;
}

/* Options into *outp and *trace. Returns -1 to go on, else the exit status. */
static int html_parse(int argc, char **argv, const char **outp, const char **trace)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"trace", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    static const char usage[] = "usage: ldtrace html FILE [-o OUT.html] [--trace ID]\n";
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "o:t:h", opts, NULL)) != -1) {
        if (ch == 'o')
            *outp = optarg;
        else if (ch == 't')
            *trace = optarg;
        else
            break;
    }
    if (ch == 'h') {
        fputs(usage, stdout);
        return 0;
    }
    if (ch != -1 || optind != argc - 1) {
        fputs(usage, stderr);
        return 2;
    }
    return -1;
}

int ldt__html_main(int argc, char **argv)
{
    const char *outp = NULL, *trace = NULL;
    int early = html_parse(argc, argv, &outp, &trace);
    if (early >= 0)
        return early;
    const char *file = argv[optind];
    struct ldt__spans s = {0};
    struct ldt__traces t = {0};
    int rc = ldt__spans_load_file(&s, file), which = 0, status = 1;
    FILE *out = NULL;
    if (rc < 0)
        fprintf(stderr, "ldtrace: html: read %s: %s\n", file, strerror(-rc));
    else if ((rc = ldt__traces_build(&s, &t)) < 0)
        fprintf(stderr, "ldtrace: html: %s: %s\n", file, strerror(-rc));
    else if (trace && (which = ldt__traces_find(&t, trace)) < 0)
        fprintf(stderr, "ldtrace: html: trace %s in %s: %s\n", trace, file,
                which == -EEXIST ? "ambiguous prefix" : "not found");
    else if (!(out = outp && strcmp(outp, "-") ? fopen(outp, "we") : stdout))
        fprintf(stderr, "ldtrace: html: open %s: %s\n", outp, strerror(errno));
    else
        status = write_page(out, outp, &s, &t, which);
    if (status == 0 && outp && strcmp(outp, "-"))
        fprintf(stderr, "ldtrace: html: %zu traces -> %s\n", t.n, outp);
    ldt__traces_free(&t);
    ldt__spans_free(&s);
    return status;
}
