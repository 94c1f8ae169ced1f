// Services: per service and route, requests, rate, error rate and p50/p95 latency over a time
// range, and a map of who calls whom (GET /api/services). The range is kept in the URL.
"use strict";

(() => {
  const { el, getJSON, ms, serviceColour } = TS;
  const form = document.getElementById("filters");
  const statusLine = document.getElementById("status-line");
  const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };
  const SVG = "http://www.w3.org/2000/svg";

  const params = new URLSearchParams(location.search);
  for (const input of form.elements) {
    if (input.name && params.has(input.name)) input.value = params.get(input.name);
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function pct(x) { return `${(100 * x).toFixed(x && x < 0.1 ? 1 : 0)}%`; }

  function renderTable(routes) {
    const rows = routes.map((r) => {
      const chip = el("span", { class: "chip", text: r.service });
      chip.style.borderColor = serviceColour(r.service);
      const dot = el("span", { class: "dot" });
      dot.style.background = serviceColour(r.service);
      chip.prepend(dot);
      return el("tr", { dataset: { service: r.service, route: r.route } },
        el("td", {}, chip),
        el("td", { class: "mono route", text: r.route || "(unnamed)" }),
        el("td", { class: "num requests", text: String(r.requests) }),
        el("td", { class: "num rate", text: r.rate_per_s == null ? "—" : r.rate_per_s.toPrecision(3) }),
        el("td", { class: `num error-rate${r.errors ? " errors" : ""}`, text: pct(r.error_rate) }),
        el("td", { class: "num p50", text: ms(r.p50_ms) }),
        el("td", { class: "num p95", text: ms(r.p95_ms) }));
    });
    document.querySelector("#services tbody").replaceChildren(...rows);
  }

  // Columns by call depth (a service with no caller first), one box per service, an arrow per
  // caller → callee pair labelled with its calls.
  function renderMap(routes, edges) {
    const totals = new Map();
    for (const r of routes) {
      const t = totals.get(r.service) || { requests: 0, errors: 0 };
      t.requests += r.requests;
      t.errors += r.errors;
      totals.set(r.service, t);
    }
    for (const e of edges) for (const s of [e.caller, e.callee]) if (!totals.has(s)) totals.set(s, { requests: 0, errors: 0 });
    const names = [...totals.keys()].sort();
    const depth = new Map(names.map((n) => [n, 0]));
    // Longest path from a root, bounded by the number of services so a cycle cannot loop.
    for (let pass = 0; pass < names.length; pass++) {
      let changed = false;
      for (const e of edges) {
        if (e.caller !== e.callee && depth.get(e.callee) < depth.get(e.caller) + 1 && depth.get(e.caller) + 1 < names.length) {
          depth.set(e.callee, depth.get(e.caller) + 1);
          changed = true;
        }
      }
      if (!changed) break;
    }
    const columns = [];
    for (const n of names) (columns[depth.get(n)] ||= []).push(n);
    const W = 170, H = 48, GAPX = 110, GAPY = 26, PAD = 16;
    const pos = new Map();
    columns.forEach((col, c) => (col || []).forEach((n, i) => pos.set(n, { x: PAD + c * (W + GAPX), y: PAD + i * (H + GAPY) })));
    const width = PAD * 2 + columns.length * (W + GAPX) - GAPX;
    const height = PAD * 2 + Math.max(1, ...columns.map((c) => (c || []).length)) * (H + GAPY) - GAPY;
    const root = svg("svg", { width: Math.max(width, 200), height, viewBox: `0 0 ${Math.max(width, 200)} ${height}`, role: "img", "aria-label": "service map" });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#7a8090" }));
    defs.append(marker);
    root.append(defs);
    for (const e of edges) {
      const a = pos.get(e.caller), b = pos.get(e.callee);
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2;
      const mid = (x1 + x2) / 2;
      const g = svg("g", { class: `edge${e.errors ? " edge-errors" : ""}`, "data-caller": e.caller, "data-callee": e.callee });
      g.append(svg("path", { d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, fill: "none", stroke: e.errors ? "#c62828" : "#7a8090", "stroke-width": 1.5, "marker-end": "url(#arrow)" }));
      const label = `${e.calls} call${e.calls === 1 ? "" : "s"}` + (e.errors ? `, ${e.errors} failed` : "");
      g.append(svg("text", { x: mid, y: (y1 + y2) / 2 - 5, "text-anchor": "middle", class: "edge-label" }, label));
      root.append(g);
    }
    for (const n of names) {
      const p = pos.get(n), t = totals.get(n);
      const g = svg("g", { class: "node", "data-service": n, transform: `translate(${p.x} ${p.y})` });
      g.append(svg("rect", { width: W, height: H, rx: 8, fill: "#fff", stroke: serviceColour(n), "stroke-width": 2 }));
      g.append(svg("circle", { cx: 14, cy: 16, r: 5, fill: serviceColour(n) }));
      g.append(svg("text", { x: 26, y: 20, class: "node-name" }, n.length > 20 ? n.slice(0, 19) + "…" : n));
      g.append(svg("text", { x: 12, y: 38, class: "node-facts" }, `${t.requests} req · ${pct(t.requests ? t.errors / t.requests : 0)} err`));
      g.append(svg("title", {}, n));
      root.append(g);
    }
    document.getElementById("service-map").replaceChildren(names.length ? root : el("p", { class: "muted", text: "No service was called in this range." }));
  }

  // Each keystroke sends a request; answers can come back out of order, and only the last
  // request's may be shown.
  let latest = 0;

  async function load() {
    const mine = ++latest;
    const q = new URLSearchParams();
    for (const input of form.elements) if (input.name && input.value) q.set(input.name, input.value);
    history.replaceState(null, "", `/services?${q}`);
    const api = new URLSearchParams();
    const range = q.get("range");
    if (RANGES[range]) api.set("start_gte", String(Date.now() / 1000 - RANGES[range]));
    if (q.get("project")) api.set("project", q.get("project"));
    try {
      const doc = await getJSON(`/api/services?${api}`);
      if (mine !== latest) return;  // a newer request was sent meanwhile: its answer wins
      renderTable(doc.routes);
      renderMap(doc.routes, doc.edges);
      const services = new Set(doc.routes.map((r) => r.service)).size;
      statusLine.textContent = doc.routes.length
        ? `${services} service${services === 1 ? "" : "s"}, ${doc.routes.length} route${doc.routes.length === 1 ? "" : "s"}`
        : "No requests to a named service in this range.";
      document.body.dataset.loaded = "true";
    } catch (err) {
      if (mine === latest) statusLine.textContent = String(err.message || err);
    }
  }

  form.addEventListener("input", load);
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  load();
})();
