// Trace list: newest first, filters in the URL (shareable), live refresh by polling.
"use strict";

(() => {
  const { el, getJSON, ms, when, serviceColours, statusBadge, serviceChip } = TS;
  const form = document.getElementById("filters");
  const tbody = document.querySelector("#traces tbody");
  const statusLine = document.getElementById("status-line");
  const live = document.getElementById("live");
  const PAGE = 50;
  let offset = 0;
  let timer = null;

  const params = new URLSearchParams(location.search);
  for (const input of form.elements) {
    if (input.name && params.has(input.name)) input.value = params.get(input.name);
  }
  offset = Number(params.get("offset")) || 0;

  function query() {
    const q = new URLSearchParams();
    for (const input of form.elements) if (input.name && input.value) q.set(input.name, input.value);
    if (offset) q.set("offset", String(offset));
    return q;
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
      services,
      el("td", { class: "num", text: t.total_tokens ?? "" }));
  }

  async function load() {
    const q = query();
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    q.set("limit", String(PAGE));
    try {
      const page = await getJSON(`/api/traces?${q}`);
      const colours = serviceColours(page.traces.flatMap((t) => t.services));
      tbody.replaceChildren(...page.traces.map((t) => row(t, colours)));
      const end = offset + page.traces.length;
      statusLine.textContent = page.total
        ? `${offset + 1}–${end} of ${page.total} traces` + (live.checked ? " · live" : "")
        : "No traces yet. Point a LangSmith SDK or tracestitch exporter at this collector.";
      document.getElementById("prev").disabled = offset === 0;
      document.getElementById("next").disabled = page.next_offset === null;
    } catch (err) {
      statusLine.textContent = String(err.message || err);
    }
  }

  function schedule() {
    clearInterval(timer);
    if (live.checked) timer = setInterval(load, 2000);
  }

  form.addEventListener("input", () => { offset = 0; load(); });
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  live.addEventListener("change", () => { schedule(); load(); });
  document.getElementById("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
  document.getElementById("next").addEventListener("click", () => { offset += PAGE; load(); });
  load();
  schedule();
})();
