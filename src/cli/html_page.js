/* html_page.js - the script of `ldtrace html`'s page: reads the JSON in #data and draws the trace
 * list, the service graph (inline SVG), the waterfall and the span details. Embedded into
 * cmd_html.c at build time (embed.py). It only ever puts data into the document with textContent
 * and setAttribute, never as markup, and fetches nothing.
 */
'use strict';
const D = JSON.parse(document.getElementById('data').textContent);
const NS = 'http://www.w3.org/2000/svg';
const KINDS = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'];
/* An HTML element with a class and text (text only ever as textContent). */
function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
}
/* An SVG element with attributes, appended to parent. */
function sv(tag, at, parent) {
    const e = document.createElementNS(NS, tag);
    for (const k in at) e.setAttribute(k, at[k]);
    if (parent) parent.appendChild(e);
    return e;
}
function hue(s) {
    let h = 7;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    return h % 360;
}
/* Service colours: distinct and never red (red means an error), in the graph's order. */
const PAL = [
        '#2563eb',
        '#7c3aed',
        '#0e7490',
        '#047857',
        '#a21caf',
        '#4338ca',
        '#0f766e',
        '#6d28d9',
        '#0369a1',
        '#4d7c0f',
    ],
    CI = {};
D.graph.nodes.forEach((n, i) => {
    CI[n.name] = PAL[i % PAL.length];
});
function color(s) {
    return CI[s] || PAL[hue(s) % PAL.length];
}
/* Milliseconds as short text: 0.42 ms, 12.0 ms, 150 ms, 1.20 s. */
function fms(v) {
    return v >= 1000
        ? (v / 1000).toFixed(2) + ' s'
        : v >= 100
          ? v.toFixed(0) + ' ms'
          : v >= 10
            ? v.toFixed(1) + ' ms'
            : v.toFixed(2) + ' ms';
}
function pct(e, n) {
    return n ? Math.round((100 * e) / n) + '%' : '0%';
}
/* What a span did: its name, the path when the name lacks it, an arrow for client calls. */
function label(s) {
    let n = s.name || s.method || '?';
    if (s.path && n.indexOf(s.path) < 0) n += ' ' + s.path;
    return (s.kind === 3 ? '\u2192 ' : '') + n;
}
/* The spans of trace t depth first from the roots (spans whose parent is not in the file count as
 * roots; a cycle is drawn once): [[span, depth], ...] and the children of each span id. */
function order(t) {
    const by = {},
        kids = {},
        roots = [];
    t.spans.forEach(s => {
        by[s.id] = s;
        kids[s.id] = [];
    });
    t.spans.forEach(s => {
        if (s.parent && by[s.parent] && s.parent !== s.id) kids[s.parent].push(s);
        else roots.push(s);
    });
    const out = [],
        seen = {};
    const walk = (s, d) => {
        if (seen[s.id]) return;
        seen[s.id] = 1;
        out.push([s, d]);
        kids[s.id].forEach(c => walk(c, d + 1));
    };
    roots.forEach(r => walk(r, 0));
    t.spans.forEach(s => {
        if (!seen[s.id]) walk(s, 0);
    });
    return [out, kids];
}
/* The service graph: layers by call depth from the services nobody calls. */
function layout(G) {
    const idx = {},
        inc = G.nodes.map(() => 0),
        out = G.nodes.map(() => []);
    G.nodes.forEach((n, i) => {
        idx[n.name] = i;
    });
    G.edges.forEach(e => {
        const a = idx[e.from],
            b = idx[e.to];
        if (a !== b) {
            inc[b]++;
            out[a].push(b);
        }
    });
    const dep = G.nodes.map(() => -1),
        q = [];
    G.nodes.forEach((n, i) => {
        if (!inc[i]) {
            dep[i] = 0;
            q.push(i);
        }
    });
    for (let r = 0; r < G.nodes.length; r++) {
        for (let k = 0; k < q.length; k++)
            out[q[k]].forEach(j => {
                if (dep[j] < 0) {
                    dep[j] = dep[q[k]] + 1;
                    q.push(j);
                }
            });
        const left = dep.indexOf(-1);
        if (left < 0) break;
        dep[left] = 0;
        q.push(left);
    }
    const layers = [];
    dep.forEach((d, i) => {
        (layers[d] = layers[d] || []).push(i);
    });
    return [idx, dep, layers];
}
/* The service graph card: nodes are services (requests, median, errors; ORIGIN where a failing
 * trace's error started), edges the observed calls (count, median, error rate). */
function graph() {
    const G = D.graph,
        card = el('div', 'card'),
        top = el('div', 'top');
    top.appendChild(el('h3', null, 'Service graph \u00b7 every trace, the shown one highlighted'));
    card.appendChild(top);
    if (!G.nodes.length) {
        card.appendChild(el('div', 'none', 'no services'));
        return card;
    }
    const [idx, dep, layers] = layout(G),
        W = 150,
        H = 56,
        CX = 240,
        RY = 70,
        rows = Math.max(...layers.map(l => l.length));
    /* Room above for calls of a service to itself, below for calls back to an earlier layer. */
    const self = G.edges.some(e => e.from === e.to),
        back = G.edges.some(e => e.from !== e.to && dep[idx[e.to]] <= dep[idx[e.from]]);
    const top0 = self ? 30 : 0,
        width = (layers.length - 1) * CX + W + 40,
        height = rows * RY + 18 + top0 + (back ? 50 : 0),
        pos = [];
    layers.forEach((l, d) =>
        l.forEach((i, k) => {
            pos[i] = {
                x: 12 + d * CX,
                y: top0 + 9 + ((rows - l.length) * RY) / 2 + k * RY + (RY - H) / 2,
            };
        }),
    );
    const svg = sv('svg', {
        class: 'graph',
        width: width,
        height: height,
        viewBox: '0 0 ' + width + ' ' + height,
        role: 'img',
    });
    const defs = sv('defs', {}, svg);
    ['#8b949e', '#dc2626'].forEach((c, k) => {
        const m = sv(
            'marker',
            {
                id: 'arr' + k,
                viewBox: '0 0 10 10',
                refX: 9,
                refY: 5,
                markerWidth: 7,
                markerHeight: 7,
                orient: 'auto',
            },
            defs,
        );
        sv('path', { d: 'M0,0L10,5L0,10z', fill: c }, m);
    });
    G.edges.forEach(e => {
        const a = pos[idx[e.from]],
            b = pos[idx[e.to]],
            bad = e.errors > 0;
        let d, lx, ly;
        if (a === b) {
            d =
                'M' +
                (a.x + W - 30) +
                ',' +
                a.y +
                ' C' +
                (a.x + W - 30) +
                ',' +
                (a.y - 30) +
                ' ' +
                (a.x + W + 20) +
                ',' +
                (a.y - 10) +
                ' ' +
                (a.x + W) +
                ',' +
                (a.y + 12);
            lx = a.x + W;
            ly = a.y - 14;
        } else if (b.x > a.x) {
            const x1 = a.x + W,
                y1 = a.y + H / 2,
                x2 = b.x,
                y2 = b.y + H / 2;
            d =
                'M' +
                x1 +
                ',' +
                y1 +
                ' C' +
                (x1 + 50) +
                ',' +
                y1 +
                ' ' +
                (x2 - 50) +
                ',' +
                y2 +
                ' ' +
                x2 +
                ',' +
                y2;
            lx = (x1 + x2) / 2;
            ly = (y1 + y2) / 2;
        } else {
            const x1 = a.x + W / 2,
                y1 = a.y + H,
                x2 = b.x + W / 2,
                y2 = b.y + H;
            d =
                'M' +
                x1 +
                ',' +
                y1 +
                ' C' +
                x1 +
                ',' +
                (y1 + 40) +
                ' ' +
                x2 +
                ',' +
                (y2 + 40) +
                ' ' +
                x2 +
                ',' +
                y2;
            lx = (x1 + x2) / 2;
            ly = Math.max(y1, y2) + 26;
        }
        const p = sv(
            'path',
            {
                class: 'edge' + (bad ? ' bad' : ''),
                d: d,
                'marker-end': 'url(#arr' + (bad ? 1 : 0) + ')',
                'data-from': e.from,
                'data-to': e.to,
            },
            svg,
        );
        sv('title', {}, p).textContent = e.from + ' \u2192 ' + e.to;
        const t = sv(
            'text',
            {
                class: 'elab' + (bad ? ' bad' : ''),
                x: lx,
                y: ly - 4,
                'text-anchor': 'middle',
                'data-from': e.from,
                'data-to': e.to,
            },
            svg,
        );
        t.textContent = e.count + '\u00d7 \u00b7 ' + fms(e.p50_ms);
        if (bad) {
            const t2 = sv(
                'text',
                {
                    class: 'elab bad',
                    x: lx,
                    y: ly + 10,
                    'text-anchor': 'middle',
                    'data-from': e.from,
                    'data-to': e.to,
                },
                svg,
            );
            t2.textContent = pct(e.errors, e.count) + ' err';
        }
    });
    G.nodes.forEach((n, i) => {
        const p = pos[i],
            g = sv(
                'g',
                {
                    class: 'node' + (n.errors ? ' bad' : '') + (n.origin ? ' origin' : ''),
                    'data-service': n.name,
                    transform: 'translate(' + p.x + ',' + p.y + ')',
                },
                svg,
            );
        sv('title', {}, g).textContent = n.name + (n.origin ? ' (where errors start)' : '');
        sv('rect', { class: 'box', width: W, height: H, rx: 6, stroke: color(n.name) }, g);
        sv('rect', { x: 0, y: 0, width: 5, height: H, rx: 2, fill: color(n.name) }, g);
        sv('text', { class: 'name', x: 12, y: 18 }, g).textContent =
            n.name.length > 17 ? n.name.slice(0, 16) + '\u2026' : n.name;
        sv('text', { class: 'st', x: 12, y: 34 }, g).textContent = n.count
            ? n.count + ' req \u00b7 p50 ' + fms(n.p50_ms)
            : 'not traced';
        if (n.errors)
            sv('text', { class: 'e', x: 12, y: 49 }, g).textContent =
                n.errors +
                ' error' +
                (n.errors > 1 ? 's' : '') +
                ' (' +
                pct(n.errors, n.count) +
                ')';
        if (n.origin) {
            sv('rect', { class: 'badge', x: W - 52, y: -8, width: 48, height: 16, rx: 8 }, g);
            sv(
                'text',
                { class: 'badge', x: W - 28, y: 4, 'text-anchor': 'middle' },
                g,
            ).textContent = 'ORIGIN';
        }
    });
    card.appendChild(svg);
    const lg = el('div', 'legend');
    top.appendChild(lg);
    [
        ['#fee2e2', 'error origin'],
        ['#dc2626', 'calls with errors'],
        ['#8b949e', 'calls: count \u00b7 median \u00b7 error rate'],
    ].forEach(([c, t]) => {
        const s = el('span');
        const i = el('i');
        i.style.background = c;
        if (c === '#fee2e2') i.style.border = '1.5px solid #dc2626';
        s.appendChild(i);
        s.appendChild(document.createTextNode(t));
        lg.appendChild(s);
    });
    return card;
}
/* One key / value row. */
function kv(tbl, k, v) {
    const r = el('tr');
    r.appendChild(el('td', 'k', k));
    const c = el('td', 'v');
    if (v instanceof Node) c.appendChild(v);
    else c.textContent = v;
    r.appendChild(c);
    tbl.appendChild(r);
}
/* An exception.stacktrace, one frame per line. */
function stack(text) {
    const o = el('ol', 'stack');
    text.split(/\r?\n/)
        .filter(f => f.trim())
        .forEach(f => o.appendChild(el('li', null, f)));
    return o;
}
/* The details panel of span s: summary, exception, events (with the stack), attributes. */
function details(s) {
    const d = document.getElementById('det');
    d.textContent = '';
    const h = el('h2');
    const n = el('span', 'svc', s.service);
    n.style.color = color(s.service);
    h.appendChild(n);
    h.appendChild(document.createTextNode(label(s)));
    h.appendChild(el('span', s.error ? 'pill' : 'pill ok', s.error ? 'ERROR' : 'OK'));
    d.appendChild(h);
    d.appendChild(
        el(
            'div',
            'sub',
            [
                KINDS[s.kind] || 'kind ' + s.kind,
                'status ' + (['unset', 'ok', 'error'][s.status] || '?'),
            ]
                .concat(s.code ? ['HTTP ' + s.code] : [])
                .join(' \u00b7 ') +
                ' \u00b7 ' +
                fms(s.dur_ms) +
                ' from +' +
                fms(s.start_ms),
        ),
    );
    const t = el('table');
    kv(t, 'span id', s.id);
    kv(t, 'parent id', s.parent || '(root)');
    if (s.peer) kv(t, 'peer', s.peer);
    d.appendChild(t);
    if (s.exception) {
        const x = el('div', 'err', '\u26a0 ' + s.exception);
        x.style.margin = '4px 0 8px';
        d.appendChild(x);
    }
    const ev = el('h3', null, 'Events');
    ev.style.marginTop = '12px';
    d.appendChild(ev);
    if (!(s.events || []).length) d.appendChild(el('div', 'none', 'none'));
    (s.events || []).forEach(e => {
        d.appendChild(
            el(
                'h4',
                e.name === 'exception' ? 'err' : null,
                e.name + ' at +' + fms(s.start_ms + e.t_ns / 1e6),
            ),
        );
        const et = el('table');
        let st = null;
        e.attrs.forEach(([k, v]) => {
            if (k === 'exception.stacktrace') st = v;
            else kv(et, k, v);
        });
        d.appendChild(et);
        if (st !== null) {
            d.appendChild(el('div', 'sub', 'exception.stacktrace'));
            d.appendChild(stack(st));
        }
    });
    const ah = el('h3', null, 'Attributes');
    ah.style.marginTop = '12px';
    d.appendChild(ah);
    const a = el('table');
    (s.attrs || []).forEach(([k, v]) => kv(a, k, v));
    d.appendChild((s.attrs || []).length ? a : el('div', 'none', 'none'));
}
/* The deepest error span without a failing child: where the error started. */
function origin(rows, kids) {
    let best = null,
        bd = -1;
    rows.forEach(([s, d]) => {
        if (s.error && !kids[s.id].some(c => c.error) && d > bd) {
            best = s;
            bd = d;
        }
    });
    return best;
}
/* The waterfall card of trace t (one .bar with data-span-id per span) and the row to select
 * first: the error origin, else the root. */
function waterfall(t) {
    const card = el('div', 'card');
    card.appendChild(el('h3', null, 'Waterfall'));
    const total = Math.max(t.dur_ms, 0.001),
        [rows, kids] = order(t),
        ids = {};
    t.spans.forEach(s => {
        ids[s.id] = 1;
    });
    const ax = el('div', 'row axis');
    ax.appendChild(el('div', 'lab', 'service / span'));
    ax.appendChild(el('div', 'num', 'code'));
    ax.appendChild(el('div', 'dur', 'duration'));
    const al = el('div', 'lane');
    [0, 1 / 3, 2 / 3, 1].forEach(f => {
        const k = el('span', 'tick', f ? fms(total * f) : '0');
        k.style.left = 100 * f + '%';
        if (f === 1) k.style.transform = 'translateX(-100%)';
        else if (f) k.style.transform = 'translateX(-50%)';
        al.appendChild(k);
    });
    ax.appendChild(al);
    card.appendChild(ax);
    const rowOf = {};
    rows.forEach(([s, d]) => {
        const r = el('div', 'row' + (s.error ? ' e' : ''));
        const lab = el('div', 'lab');
        lab.style.paddingLeft = 4 + d * 14 + 'px';
        if (s.error) lab.appendChild(el('span', 'err', '! '));
        if (s.parent && !ids[s.parent]) lab.appendChild(el('span', null, '? '));
        const n = el('span', 'svc', s.service);
        n.style.color = color(s.service);
        lab.appendChild(n);
        lab.appendChild(el('span', null, label(s)));
        lab.title = s.service + ' ' + label(s);
        r.appendChild(lab);
        r.appendChild(
            el('div', 'num' + (s.code >= 400 ? ' err' : ''), s.code ? String(s.code) : ''),
        );
        r.appendChild(el('div', 'dur', fms(s.dur_ms)));
        const lane = el('div', 'lane'),
            b = el('div', 'bar' + (s.kind === 3 ? ' client' : '') + (s.error ? ' bad' : ''));
        b.dataset.spanId = s.id;
        b.style.left = (100 * s.start_ms) / total + '%';
        b.style.width = (100 * s.dur_ms) / total + '%';
        lane.appendChild(b);
        r.appendChild(lane);
        r.onclick = () => select(r, s);
        card.appendChild(r);
        rowOf[s.id] = r;
    });
    const lg = el('div', 'legend');
    [
        ['#2563eb', 'server / internal'],
        ['#93c5fd', '\u2192 client call'],
        ['#dc2626', 'error'],
    ].forEach(([c, x]) => {
        const s = el('span');
        const i = el('i');
        i.style.background = c;
        s.appendChild(i);
        s.appendChild(document.createTextNode(x));
        lg.appendChild(s);
    });
    lg.appendChild(el('span', null, '? parent not in file \u00b7 click a span for details'));
    card.appendChild(lg);
    const o = origin(rows, kids) || (rows.length ? rows[0][0] : null);
    return [card, o ? rowOf[o.id] : null, o];
}
/* Dim the services (and their calls) that the shown trace does not touch. */
function focus(t) {
    const in_ = {};
    t.spans.forEach(s => {
        in_[s.service] = 1;
    });
    document
        .querySelectorAll('#graph [data-service]')
        .forEach(g => g.classList.toggle('dim', !in_[g.dataset.service]));
    document
        .querySelectorAll('#graph [data-from]')
        .forEach(e => e.classList.toggle('dim', !in_[e.dataset.from] || !in_[e.dataset.to]));
}
function select(r, s) {
    document.querySelectorAll('.row.sel').forEach(x => x.classList.remove('sel'));
    r.classList.add('sel');
    details(s);
}
document.getElementById('graph').appendChild(graph());
function rootName(t) {
    return (
        t.root_name + (t.root_path && t.root_name.indexOf(t.root_path) < 0 ? ' ' + t.root_path : '')
    );
}
/* Show trace i: title, waterfall, graph emphasis and the details of its first span of interest. */
function show(i) {
    const t = D.traces[i],
        m = document.getElementById('main');
    m.textContent = '';
    document.querySelectorAll('.tr').forEach((e, k) => e.classList.toggle('sel', k === i));
    const h = el('h2');
    if (t.errors) h.appendChild(el('span', 'err', '! '));
    h.appendChild(document.createTextNode(t.root_service + ' ' + rootName(t) + ' '));
    h.appendChild(el('code', null, t.id));
    m.appendChild(h);
    m.appendChild(
        el(
            'div',
            'sub',
            t.spans.length +
                ' spans \u00b7 ' +
                t.errors +
                ' errors \u00b7 ' +
                fms(t.dur_ms) +
                ' \u00b7 ' +
                t.start,
        ),
    );
    const [card, row, sp] = waterfall(t);
    m.appendChild(card);
    focus(t);
    if (row) select(row, sp);
}
const L = document.getElementById('list');
D.traces.forEach((t, i) => {
    const e = el('div', 'tr' + (t.errors ? ' bad' : ''));
    const n = rootName(t);
    const h = el('div');
    if (t.errors) h.appendChild(el('span', 'err', '! '));
    const sv2 = el('span', 'svc', t.root_service);
    sv2.style.color = color(t.root_service);
    h.appendChild(sv2);
    h.appendChild(el('span', null, n));
    e.appendChild(h);
    e.appendChild(
        el(
            'div',
            'meta',
            t.spans.length +
                ' spans \u00b7 ' +
                fms(t.dur_ms) +
                (t.errors ? ' \u00b7 ' + t.errors + ' errors' : ''),
        ),
    );
    e.appendChild(el('div', 'id', t.id));
    e.onclick = () => show(i);
    L.appendChild(e);
});
const nsp = D.traces.reduce((a, t) => a + t.spans.length, 0);
document.getElementById('sum').textContent =
    D.traces.length +
    ' traces \u00b7 ' +
    nsp +
    ' spans \u00b7 ' +
    D.graph.nodes.length +
    ' services';
if (D.traces.length) show(D.initial || 0);
else document.getElementById('main').textContent = 'No traces in this file.';
