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
 * laid out in layers by call depth, error-origin services highlighted). It fits 1280x800.
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

/* ---- the page: style and script (written here as C strings; no '</' occurs in either) ---- */

static const char page_css[] =
    "*{box-sizing:border-box}\n"
    "body{margin:0;height:100vh;display:grid;grid-template-columns:250px minmax(0,1fr) 370px;grid-"
    "template-rows:40px auto minmax(0,1fr);font:13px/1.45 system-ui,-apple-system,\"Segoe UI\",Rob"
    "oto,sans-serif;color:#1f2328;background:#f3f5f8}\n"
    "header{grid-column:1/4;display:flex;align-items:center;gap:16px;padding:0 14px;background:#1f"
    "2937;color:#e5e7eb}\n"
    "header b{font-size:15px;color:#fff;letter-spacing:.5px}\n"
    "header .sum{color:#9ca3af}\n"
    "#list{grid-row:2/4;overflow:auto;background:#fff;border-right:1px solid #d8dee4}\n"
    "#graph{grid-column:2/4;padding:10px 14px 0}\n"
    "#graph .card{margin:0}\n"
    "#main{overflow:auto;padding:10px 14px}\n"
    "#det{overflow:auto;background:#fff;border:1px solid #d8dee4;border-radius:6px;margin:10px 14p"
    "x 10px 0;padding:10px 14px}\n"
    ".tr{padding:7px 10px 7px 12px;border-bottom:1px solid #eef0f3;border-left:3px solid transpare"
    "nt;cursor:pointer}\n"
    ".tr.bad{border-left-color:#dc2626}\n"
    ".tr:hover{background:#f6f8fa}.tr.sel{background:#e8f0fe}\n"
    ".tr .id{font:11px ui-monospace,monospace;color:#8b949e}\n"
    ".tr .meta{color:#57606a;font-size:12px}\n"
    ".err{color:#dc2626;font-weight:700}\n"
    ".svc{font-weight:600;margin-right:5px}\n"
    ".card{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:8px 12px 10px;margin"
    "-bottom:12px}\n"
    "h2{font-size:15px;margin:0 0 2px;font-weight:600}\n"
    "h2 code{font-size:13px;color:#57606a}\n"
    "h3{font-size:12px;text-transform:uppercase;letter-spacing:.6px;color:#57606a;margin:0 0 6px}"
    "\n"
    "h4{font-size:13px;margin:10px 0 4px}\n"
    ".sub{color:#57606a;margin-bottom:8px}\n"
    "h4+table{margin-bottom:2px}\n"
    "svg.graph{display:block;max-width:100%;max-height:250px;margin:0 auto}\n"
    ".node rect.box{fill:#fff;stroke-width:1.5}\n"
    ".node.bad rect.box{fill:#fff7f7}\n"
    ".node.origin rect.box{fill:#fee2e2;stroke:#dc2626;stroke-width:2.5}\n"
    ".node text{font-size:12px;fill:#1f2328}\n"
    ".node text.name{font-weight:700;font-size:13px}\n"
    ".node text.st{fill:#57606a;font-size:11px}\n"
    ".node text.e{fill:#dc2626;font-size:11px;font-weight:600}\n"
    ".node text.badge{fill:#fff;font-size:10px;font-weight:700}\n"
    ".node rect.badge{fill:#dc2626}\n"
    ".edge{fill:none;stroke:#8b949e;stroke-width:1.5}\n"
    "#graph .dim{opacity:.3}\n"
    ".edge.bad{stroke:#dc2626}\n"
    ".elab{font-size:11px;fill:#57606a;paint-order:stroke;stroke:#fff;stroke-width:4px;stroke-line"
    "join:round}\n"
    ".elab.bad{fill:#dc2626}\n"
    ".row{display:flex;align-items:center;height:24px;border-bottom:1px solid #f0f2f4;cursor:point"
    "er}\n"
    ".row:hover{background:#f6f8fa}.row.sel{background:#e8f0fe}\n"
    ".row.e{background:#fff5f5}.row.e.sel{background:#fde2e2}\n"
    ".axis{cursor:default;color:#8b949e;font-size:11px;border-bottom:1px solid #d8dee4}\n"
    ".axis:hover{background:none}\n"
    ".lab{width:38%;min-width:150px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;padd"
    "ing-right:6px}\n"
    ".num{width:44px;text-align:right;font:12px ui-monospace,monospace}\n"
    ".dur{width:78px;text-align:right;font:12px ui-monospace,monospace;padding-right:10px}\n"
    ".lane{flex:1;position:relative;height:100%;background:repeating-linear-gradient(90deg,transpa"
    "rent 0,transparent calc(33.333% - 1px),#eef0f3 calc(33.333% - 1px),#eef0f3 33.333%)}\n"
    ".tick{position:absolute;top:4px;white-space:nowrap}\n"
    ".bar{position:absolute;top:6px;height:12px;min-width:2px;border-radius:2px;background:#2563eb"
    "}\n"
    ".bar.client{background:#93c5fd}.bar.bad{background:#dc2626}.bar.client.bad{background:#fca5a5"
    "}\n"
    ".card .top{display:flex;align-items:baseline;justify-content:space-between}\n"
    ".card .top .legend{margin:0}\n"
    ".legend{margin-top:8px;color:#57606a;font-size:12px;display:flex;gap:16px}\n"
    ".legend i{display:inline-block;width:14px;height:9px;border-radius:2px;margin-right:5px;verti"
    "cal-align:0}\n"
    "table{border-collapse:collapse;width:100%;margin-bottom:6px}\n"
    "td{border-top:1px solid #eef0f3;padding:3px 6px 3px 0;vertical-align:top;overflow-wrap:anywhe"
    "re}\n"
    "td.k{color:#57606a;width:56%;font-size:12px;word-break:normal;overflow-wrap:anywhere}\n"
    "td.v{font:12px ui-monospace,monospace}\n"
    ".pill{display:inline-block;padding:0 7px;border-radius:9px;font-size:11px;font-weight:700;col"
    "or:#fff;background:#dc2626;margin-left:6px;vertical-align:1px}\n"
    ".pill.ok{background:#16a34a}\n"
    "ol.stack{list-style:none;margin:4px 0 8px;padding:6px 8px;background:#f6f8fa;border-radius:4p"
    "x;font:11.5px/1.6 ui-monospace,monospace}\n"
    "ol.stack{overflow-x:auto}\n"
    "ol.stack li{white-space:pre}\n"
    ".none{color:#8b949e}\n";

static const char page_js[] =
    "'use strict';\n"
    "const D=JSON.parse(document.getElementById('data').textContent);\n"
    "const NS='http://www.w3.org/2000/svg';\n"
    "const KINDS=['unspecified','internal','server','client','producer','consumer'];\n"
    "function el(tag,cls,text){const e=document.createElement(tag);if(cls)e.className=cls;if(text!"
    "==undefined)e.textContent=text;return e;}\n"
    "function sv(tag,at,parent){const e=document.createElementNS(NS,tag);for(const k in at)e.setAt"
    "tribute(k,at[k]);if(parent)parent.appendChild(e);return e;}\n"
    "function hue(s){let h=7;for(let i=0;i<s.length;i++)h=(h*31+s.charCodeAt(i))>>>0;return h%360;"
    "}\n"
    "/* Service colours: distinct and never red (red means an error), in the graph's order. */\n"
    "const PAL=['#2563eb','#7c3aed','#0e7490','#047857','#a21caf','#4338ca','#0f766e','#6d28d9','#"
    "0369a1','#4d7c0f'],CI={};\n"
    "D.graph.nodes.forEach((n,i)=>{CI[n.name]=PAL[i%PAL.length];});\n"
    "function color(s){return CI[s]||PAL[hue(s)%PAL.length];}\n"
    "function fms(v){return v>=1000?(v/1000).toFixed(2)+' s':v>=100?v.toFixed(0)+' ms':v>=10?v.toF"
    "ixed(1)+' ms':v.toFixed(2)+' ms';}\n"
    "function pct(e,n){return n?Math.round(100*e/n)+'%':'0%';}\n"
    "function label(s){let n=s.name||s.method||'?';if(s.path&&n.indexOf(s.path)<0)n+=' '+s.path;re"
    "turn (s.kind===3?'\\u2192 ':'')+n;}\n"
    "function order(t){const by={},kids={},roots=[];t.spans.forEach(s=>{by[s.id]=s;kids[s.id]=[];}"
    ");\n"
    " t.spans.forEach(s=>{if(s.parent&&by[s.parent]&&s.parent!==s.id)kids[s.parent].push(s);else r"
    "oots.push(s);});\n"
    " const out=[],seen={};const walk=(s,d)=>{if(seen[s.id])return;seen[s.id]=1;out.push([s,d]);ki"
    "ds[s.id].forEach(c=>walk(c,d+1));};\n"
    " roots.forEach(r=>walk(r,0));t.spans.forEach(s=>{if(!seen[s.id])walk(s,0);});return [out,kids"
    "];}\n"
    "/* The service graph: layers by call depth from the services nobody calls. */\n"
    "function layout(G){const idx={},inc=G.nodes.map(()=>0),out=G.nodes.map(()=>[]);G.nodes.forEac"
    "h((n,i)=>{idx[n.name]=i;});\n"
    " G.edges.forEach(e=>{const a=idx[e.from],b=idx[e.to];if(a!==b){inc[b]++;out[a].push(b);}});\n"
    " const dep=G.nodes.map(()=>-1),q=[];G.nodes.forEach((n,i)=>{if(!inc[i]){dep[i]=0;q.push(i);}}"
    ");\n"
    " for(let r=0;r<G.nodes.length;r++){for(let k=0;k<q.length;k++)out[q[k]].forEach(j=>{if(dep[j]"
    "<0){dep[j]=dep[q[k]]+1;q.push(j);}});\n"
    "  const left=dep.indexOf(-1);if(left<0)break;dep[left]=0;q.push(left);}\n"
    " const layers=[];dep.forEach((d,i)=>{(layers[d]=layers[d]||[]).push(i);});return [idx,dep,lay"
    "ers];}\n"
    "function graph(){const G=D.graph,card=el('div','card'),top=el('div','top');top.appendChild(el"
    "('h3',null,'Service graph \\u00b7 every trace, the shown one highlighted'));card.appendChild("
    "top);\n"
    " if(!G.nodes.length){card.appendChild(el('div','none','no services'));return card;}\n"
    " const [idx,dep,layers]=layout(G),W=150,H=56,CX=240,RY=70,rows=Math.max(...layers.map(l=>l.le"
    "ngth));\n"
    " /* Room above for calls of a service to itself, below for calls back to an earlier layer. */"
    "\n"
    " const self=G.edges.some(e=>e.from===e.to),back=G.edges.some(e=>e.from!==e.to&&dep[idx[e.to]]"
    "<=dep[idx[e.from]]);\n"
    " const top0=self?30:0,width=(layers.length-1)*CX+W+40,height=rows*RY+18+top0+(back?50:0),pos="
    "[];\n"
    " layers.forEach((l,d)=>l.forEach((i,k)=>{pos[i]={x:12+d*CX,y:top0+9+(rows-l.length)*RY/2+k*RY"
    "+(RY-H)/2};}));\n"
    " const svg=sv('svg',{class:'graph',width:width,height:height,viewBox:'0 0 '+width+' '+height,"
    "role:'img'});\n"
    " const defs=sv('defs',{},svg);['#8b949e','#dc2626'].forEach((c,k)=>{const m=sv('marker',{id:'"
    "arr'+k,viewBox:'0 0 10 10',refX:9,refY:5,markerWidth:7,markerHeight:7,orient:'auto'},defs);sv"
    "('path',{d:'M0,0L10,5L0,10z',fill:c},m);});\n"
    " G.edges.forEach(e=>{const a=pos[idx[e.from]],b=pos[idx[e.to]],bad=e.errors>0;let d,lx,ly;\n"
    "  if(a===b){d='M'+(a.x+W-30)+','+a.y+' C'+(a.x+W-30)+','+(a.y-30)+' '+(a.x+W+20)+','+(a.y-10)"
    "+' '+(a.x+W)+','+(a.y+12);lx=a.x+W;ly=a.y-14;}\n"
    "  else if(b.x>a.x){const x1=a.x+W,y1=a.y+H/2,x2=b.x,y2=b.y+H/2;d='M'+x1+','+y1+' C'+(x1+50)+'"
    ",'+y1+' '+(x2-50)+','+y2+' '+x2+','+y2;lx=(x1+x2)/2;ly=(y1+y2)/2;}\n"
    "  else{const x1=a.x+W/2,y1=a.y+H,x2=b.x+W/2,y2=b.y+H;d='M'+x1+','+y1+' C'+x1+','+(y1+40)+' '+"
    "x2+','+(y2+40)+' '+x2+','+y2;lx=(x1+x2)/2;ly=Math.max(y1,y2)+26;}\n"
    "  const p=sv('path',{class:'edge'+(bad?' bad':''),d:d,'marker-end':'url(#arr'+(bad?1:0)+')','"
    "data-from':e.from,'data-to':e.to},svg);\n"
    "  sv('title',{},p).textContent=e.from+' \\u2192 '+e.to;\n"
    "  const t=sv('text',{class:'elab'+(bad?' bad':''),x:lx,y:ly-4,'text-anchor':'middle','data-fr"
    "om':e.from,'data-to':e.to},svg);\n"
    "  t.textContent=e.count+'\\u00d7 \\u00b7 '+fms(e.p50_ms);\n"
    "  if(bad){const t2=sv('text',{class:'elab bad',x:lx,y:ly+10,'text-anchor':'middle','data-from"
    "':e.from,'data-to':e.to},svg);t2.textContent=pct(e.errors,e.count)+' err';}});\n"
    " G.nodes.forEach((n,i)=>{const p=pos[i],g=sv('g',{class:'node'+(n.errors?' bad':'')+(n.origin"
    "?' origin':''),'data-service':n.name,transform:'translate('+p.x+','+p.y+')'},svg);\n"
    "  sv('title',{},g).textContent=n.name+(n.origin?' (where errors start)':'');\n"
    "  sv('rect',{class:'box',width:W,height:H,rx:6,stroke:color(n.name)},g);\n"
    "  sv('rect',{x:0,y:0,width:5,height:H,rx:2,fill:color(n.name)},g);\n"
    "  sv('text',{class:'name',x:12,y:18},g).textContent=n.name.length>17?n.name.slice(0,16)+'\\u2"
    "026':n.name;\n"
    "  sv('text',{class:'st',x:12,y:34},g).textContent=n.count?n.count+' req \\u00b7 p50 '+fms(n.p"
    "50_ms):'not traced';\n"
    "  if(n.errors)sv('text',{class:'e',x:12,y:49},g).textContent=n.errors+' error'+(n.errors>1?'s"
    "':'')+' ('+pct(n.errors,n.count)+')';\n"
    "  if(n.origin){sv('rect',{class:'badge',x:W-52,y:-8,width:48,height:16,rx:8},g);sv('text',{cl"
    "ass:'badge',x:W-28,y:4,'text-anchor':'middle'},g).textContent='ORIGIN';}});\n"
    " card.appendChild(svg);const lg=el('div','legend');top.appendChild(lg);\n"
    " [['#fee2e2','error origin'],['#dc2626','calls with errors'],['#8b949e','calls: count \\u00b7"
    " median \\u00b7 error rate']].forEach(([c,t])=>{const s=el('span');const i=el('i');i.style.ba"
    "ckground=c;if(c==='#fee2e2')i.style.border='1.5px solid #dc2626';s.appendChild(i);s.appendChi"
    "ld(document.createTextNode(t));lg.appendChild(s);});\n"
    " return card;}\n"
    "function kv(tbl,k,v){const r=el('tr');r.appendChild(el('td','k',k));const c=el('td','v');if(v"
    " instanceof Node)c.appendChild(v);else c.textContent=v;r.appendChild(c);tbl.appendChild(r);}"
    "\n"
    "function stack(text){const o=el('ol','stack');text.split(/\\r?\\n/).filter(f=>f.trim()).forEa"
    "ch(f=>o.appendChild(el('li',null,f)));return o;}\n"
    "function details(s){const d=document.getElementById('det');d.textContent='';\n"
    " const h=el('h2');const n=el('span','svc',s.service);n.style.color=color(s.service);h.appendC"
    "hild(n);h.appendChild(document.createTextNode(label(s)));\n"
    " h.appendChild(el('span',s.error?'pill':'pill ok',s.error?'ERROR':'OK'));d.appendChild(h);\n"
    " d.appendChild(el('div','sub',[KINDS[s.kind]||'kind '+s.kind,'status '+(['unset','ok','error'"
    "][s.status]||'?')].concat(s.code?['HTTP '+s.code]:[]).join(' \\u00b7 ')+' \\u00b7 '+fms(s.dur"
    "_ms)+' from +'+fms(s.start_ms)));\n"
    " const t=el('table');kv(t,'span id',s.id);kv(t,'parent id',s.parent||'(root)');if(s.peer)kv(t"
    ",'peer',s.peer);d.appendChild(t);\n"
    " if(s.exception){const x=el('div','err','\\u26a0 '+s.exception);x.style.margin='4px 0 8px';d."
    "appendChild(x);}\n"
    " const ev=el('h3',null,'Events');ev.style.marginTop='12px';d.appendChild(ev);\n"
    " if(!(s.events||[]).length)d.appendChild(el('div','none','none'));\n"
    " (s.events||[]).forEach(e=>{d.appendChild(el('h4',e.name==='exception'?'err':null,e.name+' at"
    " +'+fms(s.start_ms+e.t_ns/1e6)));\n"
    "  const et=el('table');let st=null;e.attrs.forEach(([k,v])=>{if(k==='exception.stacktrace')st"
    "=v;else kv(et,k,v);});\n"
    "  d.appendChild(et);if(st!==null){d.appendChild(el('div','sub','exception.stacktrace'));d.app"
    "endChild(stack(st));}});\n"
    " const ah=el('h3',null,'Attributes');ah.style.marginTop='12px';d.appendChild(ah);const a=el('"
    "table');(s.attrs||[]).forEach(([k,v])=>kv(a,k,v));\n"
    " d.appendChild((s.attrs||[]).length?a:el('div','none','none'));}\n"
    "function origin(rows,kids){let best=null,bd=-1;rows.forEach(([s,d])=>{if(s.error&&!kids[s.id]"
    ".some(c=>c.error)&&d>bd){best=s;bd=d;}});return best;}\n"
    "function waterfall(t){const card=el('div','card');card.appendChild(el('h3',null,'Waterfall'))"
    ";\n"
    " const total=Math.max(t.dur_ms,0.001),[rows,kids]=order(t),ids={};t.spans.forEach(s=>{ids[s.i"
    "d]=1;});\n"
    " const ax=el('div','row axis');ax.appendChild(el('div','lab','service / span'));ax.appendChil"
    "d(el('div','num','code'));ax.appendChild(el('div','dur','duration'));\n"
    " const al=el('div','lane');[0,1/3,2/3,1].forEach(f=>{const k=el('span','tick',f?fms(total*f):"
    "'0');k.style.left=(100*f)+'%';if(f===1)k.style.transform='translateX(-100%)';else if(f)k.styl"
    "e.transform='translateX(-50%)';al.appendChild(k);});\n"
    " ax.appendChild(al);card.appendChild(ax);const rowOf={};\n"
    " rows.forEach(([s,d])=>{const r=el('div','row'+(s.error?' e':''));const lab=el('div','lab');"
    "\n"
    "  lab.style.paddingLeft=(4+d*14)+'px';if(s.error)lab.appendChild(el('span','err','! '));\n"
    "  if(s.parent&&!ids[s.parent])lab.appendChild(el('span',null,'? '));\n"
    "  const n=el('span','svc',s.service);n.style.color=color(s.service);lab.appendChild(n);lab.ap"
    "pendChild(el('span',null,label(s)));\n"
    "  lab.title=s.service+' '+label(s);r.appendChild(lab);\n"
    "  r.appendChild(el('div','num'+(s.code>=400?' err':''),s.code?String(s.code):''));r.appendChi"
    "ld(el('div','dur',fms(s.dur_ms)));\n"
    "  const lane=el('div','lane'),b=el('div','bar'+(s.kind===3?' client':'')+(s.error?' bad':''))"
    ";\n"
    "  b.dataset.spanId=s.id;b.style.left=(100*s.start_ms/total)+'%';b.style.width=(100*s.dur_ms/t"
    "otal)+'%';\n"
    "  lane.appendChild(b);r.appendChild(lane);r.onclick=()=>select(r,s);card.appendChild(r);rowOf"
    "[s.id]=r;});\n"
    " const lg=el('div','legend');[['#2563eb','server / internal'],['#93c5fd','\\u2192 client call"
    "'],['#dc2626','error']].forEach(([c,x])=>{const s=el('span');const i=el('i');i.style.backgrou"
    "nd=c;s.appendChild(i);s.appendChild(document.createTextNode(x));lg.appendChild(s);});\n"
    " lg.appendChild(el('span',null,'? parent not in file \\u00b7 click a span for details'));card"
    ".appendChild(lg);\n"
    " const o=origin(rows,kids)||(rows.length?rows[0][0]:null);return [card,o?rowOf[o.id]:null,o];"
    "}\n"
    "/* Dim the services (and their calls) that the shown trace does not touch. */\n"
    "function focus(t){const in_={};t.spans.forEach(s=>{in_[s.service]=1;});\n"
    " document.querySelectorAll('#graph [data-service]').forEach(g=>g.classList.toggle('dim',!in_["
    "g.dataset.service]));\n"
    " document.querySelectorAll('#graph [data-from]').forEach(e=>e.classList.toggle('dim',!in_[e.d"
    "ataset.from]||!in_[e.dataset.to]));}\n"
    "function select(r,s){document.querySelectorAll('.row.sel').forEach(x=>x.classList.remove('sel"
    "'));r.classList.add('sel');details(s);}\n"
    "document.getElementById('graph').appendChild(graph());\n"
    "function rootName(t){return t.root_name+(t.root_path&&t.root_name.indexOf(t.root_path)<0?' '+"
    "t.root_path:'');}\n"
    "function show(i){const t=D.traces[i],m=document.getElementById('main');m.textContent='';\n"
    " document.querySelectorAll('.tr').forEach((e,k)=>e.classList.toggle('sel',k===i));\n"
    " const h=el('h2');if(t.errors)h.appendChild(el('span','err','! '));h.appendChild(document.cre"
    "ateTextNode(t.root_service+' '+rootName(t)+' '));h.appendChild(el('code',null,t.id));m.append"
    "Child(h);\n"
    " m.appendChild(el('div','sub',t.spans.length+' spans \\u00b7 '+t.errors+' errors \\u00b7 '+fm"
    "s(t.dur_ms)+' \\u00b7 '+t.start));\n"
    " const [card,row,sp]=waterfall(t);m.appendChild(card);focus(t);if(row)select(row,sp);}\n"
    "const L=document.getElementById('list');\n"
    "D.traces.forEach((t,i)=>{const e=el('div','tr'+(t.errors?' bad':''));\n"
    " const n=rootName(t);\n"
    " const h=el('div');if(t.errors)h.appendChild(el('span','err','! '));const sv2=el('span','svc'"
    ",t.root_service);sv2.style.color=color(t.root_service);h.appendChild(sv2);h.appendChild(el('s"
    "pan',null,n));e.appendChild(h);\n"
    " e.appendChild(el('div','meta',t.spans.length+' spans \\u00b7 '+fms(t.dur_ms)+(t.errors?' \\u"
    "00b7 '+t.errors+' errors':'')));\n"
    " e.appendChild(el('div','id',t.id));e.onclick=()=>show(i);L.appendChild(e);});\n"
    "const nsp=D.traces.reduce((a,t)=>a+t.spans.length,0);\n"
    "document.getElementById('sum').textContent=D.traces.length+' traces \\u00b7 '+nsp+' spans \\u"
    "00b7 '+D.graph.nodes.length+' services';\n"
    "if(D.traces.length)show(D.initial||0);else document.getElementById('main').textContent='No tr"
    "aces in this file.';\n";


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
    fputs(page_css, out);
    fputs(page_body, out);
    put_safe_json(out, js);
    fputs("</script>\n<script>\n", out);
    fputs(page_js, out);
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
