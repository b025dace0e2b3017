/* cmd_html.c - `ldtrace html`: spans -> one self-contained HTML page (trace list + waterfall).
 *
 * The page carries its data as JSON in a <script type="application/json"> element, with every '<',
 * '>' and '&' written as a \u escape so no span name can close the element, and the page's script
 * only ever puts data into the document with textContent, never as markup. No network access: the
 * file works offline and can be attached to a bug report.
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
    json_object_set_new(o, "code", json_integer(sp->http_code));
    json_object_set_new(o, "error", json_boolean(ldt__span_is_error(sp)));
    json_object_set_new(o, "start_ms", jms_rel(sp->start_ns - t0));
    json_object_set_new(o, "dur_ms", jms_rel(sp->end_ns - sp->start_ns));
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

static const char page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<title>ldtrace</title>\n<style>\n"
    "body{font:13px/1.4 system-ui,sans-serif;margin:0;display:flex;height:100vh;color:#222}\n"
    "#list{width:34%;overflow:auto;border-right:1px solid #ddd}\n"
    "#main{flex:1;overflow:auto;padding:8px 12px}\n"
    ".tr{padding:6px 10px;border-bottom:1px solid #eee;cursor:pointer}\n"
    ".tr:hover,.tr.sel{background:#eef4ff}\n.tr .id{font-family:monospace;color:#888}\n"
    ".err{color:#c00;font-weight:600}\n"
    ".row{display:flex;align-items:center;height:22px;border-bottom:1px solid #f3f3f3;"
    "cursor:pointer}\n.row:hover{background:#fafafa}\n"
    ".lab{width:40%;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}\n"
    ".svc{color:#06c;font-weight:600;margin-right:4px}\n"
    ".num{width:90px;text-align:right;font-family:monospace;padding-right:8px}\n"
    ".lane{flex:1;position:relative;height:12px}\n"
    ".bar{position:absolute;height:12px;min-width:2px;background:#4a90d9;border-radius:2px}\n"
    ".bar.client{background:#9cc3ea}.bar.bad{background:#d9534f}\n"
    "pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}\n"
    "h2{font-size:15px;margin:4px 0 8px}\n"
    "</style>\n</head>\n<body>\n<div id=\"list\"></div>\n<div id=\"main\"></div>\n"
    "<script id=\"data\" type=\"application/json\">";

static const char page_tail[] =
    "</script>\n<script>\n"
    "'use strict';\n"
    "const D=JSON.parse(document.getElementById('data').textContent);\n"
    "function el(tag,cls,text){const e=document.createElement(tag);if(cls)e.className=cls;"
    "if(text!==undefined)e.textContent=text;return e;}\n"
    "function label(s){let n=s.name||s.method||'?';if(s.path&&n.indexOf(s.path)<0)n+=' '+s.path;"
    "return (s.kind===3?'\\u2192 ':'')+n;}\n"
    "function order(t){const "
    "by={},kids={},roots=[];t.spans.forEach(s=>{by[s.id]=s;kids[s.id]=[];});\n"
    " t.spans.forEach(s=>{if(s.parent&&by[s.parent]&&s.parent!==s.id)kids[s.parent].push(s);"
    "else roots.push(s);});\n"
    " const out=[],seen={};const walk=(s,d)=>{if(seen[s.id])return;seen[s.id]=1;"
    "out.push([s,d]);kids[s.id].forEach(c=>walk(c,d+1));};\n"
    " roots.forEach(r=>walk(r,0));t.spans.forEach(s=>{if(!seen[s.id])walk(s,0);});return out;}\n"
    "function show(i){const t=D.traces[i],m=document.getElementById('main');m.textContent='';\n"
    " document.querySelectorAll('.tr').forEach((e,k)=>e.classList.toggle('sel',k===i));\n"
    " m.appendChild(el('h2',null,'Trace '+t.id));\n"
    " m.appendChild(el('div',null,t.spans.length+' spans, '+t.errors+' errors, '+"
    "t.dur_ms.toFixed(2)+' ms, '+t.start));\n"
    " const det=el('pre');const total=Math.max(t.dur_ms,0.001);\n"
    " order(t).forEach(([s,d])=>{const r=el('div','row');const lab=el('div','lab');\n"
    "  lab.style.paddingLeft=(d*14)+'px';if(s.error)lab.appendChild(el('span','err','! '));\n"
    "  if(s.parent&&!t.spans.some(x=>x.id===s.parent))lab.appendChild(el('span',null,'? '));\n"
    "  lab.appendChild(el('span','svc',s.service));lab.appendChild(el('span',null,label(s)));\n"
    "  r.appendChild(lab);r.appendChild(el('div','num'+(s.error?' "
    "err':''),s.code?String(s.code):''));\n"
    "  r.appendChild(el('div','num',s.dur_ms.toFixed(2)+' ms'));\n"
    "  const lane=el('div','lane'),b=el('div','bar'+(s.kind===3?' client':'')+(s.error?' "
    "bad':''));\n"
    "  b.style.left=(100*s.start_ms/total)+'%';b.style.width=(100*s.dur_ms/total)+'%';\n"
    "  lane.appendChild(b);r.appendChild(lane);\n"
    "  r.onclick=()=>{det.textContent=JSON.stringify(s,null,2);};m.appendChild(r);});\n"
    " m.appendChild(det);}\n"
    "const L=document.getElementById('list');\n"
    "D.traces.forEach((t,i)=>{const e=el('div','tr');\n"
    " e.appendChild(el('div','id',t.id));\n"
    " const n=t.root_name+(t.root_path&&t.root_name.indexOf(t.root_path)<0?' '+t.root_path:'');\n"
    " const h=el('div');if(t.errors)h.appendChild(el('span','err','! '));\n"
    " h.appendChild(el('span','svc',t.root_service));h.appendChild(el('span',null,n));"
    "e.appendChild(h);\n"
    " e.appendChild(el('div',null,t.spans.length+' spans \\u00b7 '+t.dur_ms.toFixed(2)+' ms "
    "\\u00b7 '"
    "+t.start));\n"
    " e.onclick=()=>show(i);L.appendChild(e);});\n"
    "if(D.traces.length)show(D.initial||0);\n"
    "</script>\n</body>\n</html>\n";

int ldt__html_write(FILE *out, const struct ldt__spans *s, const struct ldt__traces *t, int initial)
{
    json_t *root = json_object(), *traces = json_array();
    for (size_t i = 0; i < t->n; i++)
        json_array_append_new(traces, trace_json(s, &t->v[i]));
    json_object_set_new(root, "traces", traces);
    json_object_set_new(root, "initial", json_integer(initial > 0 ? initial : 0));
    char *js = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(root);
    if (!js)
        return -ENOMEM;
    fputs(page_head, out);
    put_safe_json(out, js);
    fputs(page_tail, out);
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
