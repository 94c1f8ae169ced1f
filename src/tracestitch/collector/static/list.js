// Trace list: newest first (or sorted by a column), filters in the URL (shareable), live refresh
// by polling.
"use strict";

(() => {
  const { el, getJSON, ms, when, serviceColours, statusBadge, serviceChip } = TS;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#traces tbody");
  const statusLine = document.getElementById("status-line");
  const live = document.getElementById("live");
  const custom = document.getElementById("custom-range");
  const PAGE = 50;
  const RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };
  let offset = 0;
  let sort = "start";
  let order = "desc";
  let timer = null;

  const params = new URLSearchParams(location.search);
  for (const input of form.elements) {
    if (input.name && params.has(input.name)) input.value = params.get(input.name);
  }
  offset = Number(params.get("offset")) || 0;
  sort = params.get("sort") || sort;
  order = params.get("order") || order;

  // The page's own state, as shown in the address bar.
  function pageQuery() {
    const q = new URLSearchParams();
    for (const input of form.elements) {
      if (!input.name || !input.value || input.disabled) continue;
      q.set(input.name, input.value);
    }
    if (sort !== "start" || order !== "desc") { q.set("sort", sort); q.set("order", order); }
    if (offset) q.set("offset", String(offset));
    return q;
  }

  // The API's query: a relative range becomes a start time, custom times become ISO-8601.
  function apiQuery(q) {
    const api = new URLSearchParams(q);
    const range = api.get("range");
    api.delete("range");
    api.delete("from");
    api.delete("to");
    if (RANGES[range]) api.set("start_gte", String(Date.now() / 1000 - RANGES[range]));
    if (range === "custom") {
      const from = form.elements.from.value;
      const to = form.elements.to.value;
      if (from) api.set("start_gte", new Date(from).toISOString());
      if (to) api.set("start_lte", new Date(to).toISOString());
    }
    return api;
  }

  function filtered(q) {
    return [...q.keys()].some((k) => !["offset", "sort", "order"].includes(k));
  }

  function row(t, colours) {
    const link = el("a", { href: `/traces/${encodeURIComponent(t.trace_id)}`, text: t.name || "(root missing)" });
    const services = el("td", { class: "services" });
    for (const s of t.services) services.append(serviceChip(s, colours));
    const runs = el("td", { class: "num" }, String(t.run_count));
    if (t.error_count) runs.append(el("span", { class: "errors", text: ` (${t.error_count} err)` }));
    return el("tr", { dataset: { traceId: t.trace_id } },
      el("td", { class: "muted", text: when(t.start_us) }),
      el("td", { class: "root-name" }, link),
      el("td", {}, statusBadge(t.status)),
      el("td", { class: "num", text: ms(t.duration_ms) }),
      runs,
      el("td", { class: "error-message", text: t.error || "", title: t.error || undefined }),
      services,
      el("td", { class: "num", text: t.total_tokens ?? "" }));
  }

  function renderSortMarks() {
    for (const th of document.querySelectorAll("#traces th[data-sort]")) {
      const active = th.dataset.sort === sort;
      th.setAttribute("aria-sort", active ? (order === "asc" ? "ascending" : "descending") : "none");
    }
  }

  // Each keystroke sends a request; answers can come back out of order, and only the last
  // request's may be shown.
  let latest = 0;

  async function load() {
    const mine = ++latest;
    custom.hidden = form.elements.range.value !== "custom";
    for (const input of custom.querySelectorAll("input")) input.disabled = custom.hidden;
    const q = pageQuery();
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    const api = apiQuery(q);
    api.set("limit", String(PAGE));
    renderSortMarks();
    try {
      const page = await getJSON(`/api/traces?${api}`);
      if (mine !== latest) return;  // a newer request was sent meanwhile: its answer wins
      const colours = serviceColours(page.traces.flatMap((t) => t.services));
      tbody.replaceChildren(...page.traces.map((t) => row(t, colours)));
      const end = offset + page.traces.length;
      statusLine.textContent = page.total
        ? `${offset + 1}–${end} of ${page.total} traces` + (live.checked ? " · live" : "")
        : filtered(q) ? "No traces match these filters."
        : "No traces yet. Point a LangSmith SDK or tracestitch exporter at this collector.";
      document.getElementById("prev").disabled = offset === 0;
      document.getElementById("next").disabled = page.next_offset === null;
      document.body.dataset.loaded = "true";
    } catch (err) {
      if (mine === latest) statusLine.textContent = String(err.message || err);
    }
  }

  function schedule() {
    clearInterval(timer);
    if (live.checked) timer = setInterval(load, 2000);
  }

  for (const th of document.querySelectorAll("#traces th[data-sort]")) {
    const button = el("button", { type: "button", class: "sort", text: th.textContent });
    button.addEventListener("click", () => {
      if (sort === th.dataset.sort) order = order === "desc" ? "asc" : "desc";
      else { sort = th.dataset.sort; order = th.dataset.sort === "name" ? "asc" : "desc"; }
      offset = 0;
      load();
    });
    th.replaceChildren(button);
  }
  form.addEventListener("input", () => { offset = 0; load(); });
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  live.addEventListener("change", () => { schedule(); load(); });
  document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  document.getElementById("next").addEventListener("click", () => { offset += PAGE; load(); });
  load();
  schedule();
})();
