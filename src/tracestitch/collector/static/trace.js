// Trace page: waterfall timeline + tree on the left, the selected run's detail on the right.
// The page is shareable: /traces/{trace_id}?run={run_id} opens with that run selected.
"use strict";

(() => {
  const { el, getJSON, download, ms, when, serviceColours, statusBadge, serviceChip, jsonTree } = TS;
  const traceId = decodeURIComponent(location.pathname.split("/").pop());
  const waterfall = document.getElementById("waterfall");
  const detail = document.getElementById("detail");
  let doc = null;
  let colours = new Map();
  let t0 = 0;
  let span = 1;

  function pct(us) { return (100 * us) / span; }

  function renderSummary() {
    const s = doc.summary;
    const root = doc.runs.find((r) => r.id === doc.trace_id);
    document.title = `tracestitch · ${s.name || traceId}`;
    const facts = el("div", { class: "facts" },
      statusBadge(s.status || (root ? root.status : "pending")),
      el("span", { text: `${doc.runs.length} runs` }),
      el("span", { text: `duration ${ms(s.duration_ms)}` }),
      el("span", { text: `started ${when(s.start_us)}` }));
    if (s.total_tokens != null) facts.append(el("span", { text: `tokens ${s.total_tokens} (${s.prompt_tokens ?? 0} in / ${s.completion_tokens ?? 0} out)` }));
    if (s.total_cost != null) facts.append(el("span", { text: `cost $${Number(s.total_cost).toFixed(4)}` }));
    if (s.orphan_count) facts.append(el("span", { class: "flag flag-orphan", text: `${s.orphan_count} orphan run(s)` }));
    if (s.skewed_count) facts.append(el("span", { class: "flag flag-skew", text: `${s.skewed_count} run(s) before their parent (clock skew)` }));
    document.getElementById("summary").replaceChildren(
      el("h1", { text: s.name || "(root run missing)" }),
      el("div", { class: "muted mono", text: `trace ${doc.trace_id}` }),
      facts);
    const legend = document.getElementById("legend");
    legend.replaceChildren(...[...colours.keys()].map((svc) => serviceChip(svc, colours)));
  }

  function renderAxis() {
    const axis = document.getElementById("axis");
    const ticks = [];
    for (let i = 0; i <= 4; i++) {
      const tick = el("span", { class: "tick", text: ms((span * i) / 4 / 1000) });
      tick.style.left = `${i * 25}%`;
      ticks.push(tick);
    }
    axis.replaceChildren(el("div", { class: "axis-label" }), el("div", { class: "axis-track" }, ...ticks));
  }

  function renderRows() {
    const rows = doc.runs.map((run) => {
      const label = el("div", { class: "row-label" });
      label.style.paddingLeft = `${0.4 + run.depth * 1.1}rem`;
      const dot = el("span", { class: "dot" });
      dot.style.background = colours.get(run.service) || "#888";
      label.append(dot, el("span", { class: "run-name", text: run.name || "(patch only)" }));
      label.append(el("span", { class: "run-type muted", text: run.run_type || "" }));
      if (run.status === "error") label.append(el("span", { class: "flag flag-error", text: "error" }));
      if (run.orphan) label.append(el("span", { class: "flag flag-orphan", text: "orphan", title: "its parent run never arrived" }));
      if (run.skew_us) label.append(el("span", { class: "flag flag-skew", text: `skew −${ms(run.skew_us / 1000)}`, title: "starts before its parent: the machines' clocks disagree" }));

      const bar = el("div", { class: `bar status-${run.status}` });
      const start = (run.start_us ?? t0) - t0;
      const end = (run.end_us ?? t0 + span) - t0;
      bar.style.left = `${pct(start)}%`;
      bar.style.width = `${Math.max(pct(end - start), 0.4)}%`;
      bar.style.background = colours.get(run.service) || "#888";
      const track = el("div", { class: "row-track" }, bar,
        el("span", { class: "bar-label", text: ms(run.duration_ms) }));
      track.lastChild.style.left = `${Math.min(pct(end), 100)}%`;

      const row = el("div", {
        class: "wf-row", role: "treeitem", tabindex: "0", "aria-level": run.depth + 1,
        dataset: { runId: run.id, depth: String(run.depth) },
        onclick: () => select(run.id, true),
        onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(run.id, true); } },
      }, label, track);
      return row;
    });
    waterfall.replaceChildren(...rows);
  }

  function section(title, ...content) {
    return el("section", { class: "detail-section" }, el("h3", { text: title }), ...content);
  }

  function kv(pairs) {
    const table = el("table", { class: "kv" });
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === "") continue;
      table.append(el("tr", {}, el("th", { text: k }), el("td", { class: "mono", text: v })));
    }
    return table;
  }

  // A click downloads through fetch (which carries the API key), not by navigating the link.
  function attachmentItem(run, name, info) {
    const path = `/api/runs/${encodeURIComponent(run.id)}/attachments/${encodeURIComponent(name)}`;
    const problem = el("span", { class: "flag flag-error", hidden: "" });
    const link = el("a", {
      href: path, class: "attachment", text: name,
      onclick: (e) => {
        e.preventDefault();
        problem.hidden = true;
        download(path, name).catch((err) => {
          problem.textContent = String(err.message || err);
          problem.hidden = false;
        });
      },
    });
    return el("li", {}, link, ` ${info.content_type}, ${info.size} bytes `, problem);
  }

  // One feedback document (LangSmith's create_feedback): key, score or value, comment, source.
  function feedbackItem(item) {
    const shown = item.score != null ? String(item.score)
      : item.value != null ? (typeof item.value === "string" ? item.value : JSON.stringify(item.value))
      : "";
    const source = item.feedback_source && item.feedback_source.type;
    return el("li", { class: "feedback-item" },
      el("span", { class: "feedback-key", text: String(item.key) }),
      el("span", { class: "feedback-score mono", text: shown }),
      item.comment ? el("span", { class: "feedback-comment", text: String(item.comment) }) : null,
      el("span", { class: "muted", text: [source, item.created_at].filter(Boolean).join(" · ") }));
  }

  function renderDetail(run) {
    const head = el("div", { class: "detail-head" },
      el("h2", { text: run.name || "(patch only)" }),
      el("div", { class: "facts" }, statusBadge(run.status),
        run.service ? serviceChip(run.service, colours) : null,
        el("span", { class: "muted", text: run.run_type || "" })));
    const parts = [head];
    if (run.orphan) parts.push(el("p", { class: "flag flag-orphan", text: "Orphan: this run's parent never arrived at the collector." }));
    if (run.skew_us) parts.push(el("p", { class: "flag flag-skew", text: `Starts ${ms(run.skew_us / 1000)} before its parent: the two machines' clocks disagree.` }));
    if (run.partial) parts.push(el("p", { class: "flag", text: "Only this run's update (patch) has arrived so far." }));
    if (run.error) parts.push(section("Error", el("pre", { class: "error-text", text: run.error })));
    parts.push(section("Timing", kv([
      ["start", run.start_time],
      ["end", run.end_time || "still running"],
      ["duration", ms(run.duration_ms)],
      ["offset in trace", run.start_us != null ? ms((run.start_us - t0) / 1000) : null],
      ["first token", run.first_token_time],
    ])));
    if (run.total_tokens != null || run.total_cost != null) {
      parts.push(section("Usage", kv([
        ["prompt tokens", run.prompt_tokens], ["completion tokens", run.completion_tokens],
        ["total tokens", run.total_tokens],
        ["prompt cost", run.prompt_cost != null ? `$${run.prompt_cost}` : null],
        ["completion cost", run.completion_cost != null ? `$${run.completion_cost}` : null],
        ["total cost", run.total_cost != null ? `$${run.total_cost}` : null],
      ])));
    }
    parts.push(section("Inputs", jsonTree(run.inputs || {})));
    parts.push(section("Outputs", run.outputs == null ? el("p", { class: "muted", text: "none" }) : jsonTree(run.outputs)));
    const metadata = (run.extra && run.extra.metadata) || {};
    if (Object.keys(metadata).length) parts.push(section("Metadata", jsonTree(metadata)));
    if (run.tags && run.tags.length) parts.push(section("Tags", el("div", { class: "tags" }, ...run.tags.map((t) => el("span", { class: "tag", text: t })))));
    if (run.events && run.events.length) parts.push(section(`Events (${run.events.length})`, jsonTree(run.events)));
    if (run.feedback && run.feedback.length) {
      parts.push(section(`Feedback (${run.feedback.length})`, el("ul", { class: "feedback" },
        ...run.feedback.map(feedbackItem))));
    }
    const attachments = Object.entries(run.attachments || {});
    if (attachments.length) {
      parts.push(section("Attachments", el("ul", { class: "attachments" },
        ...attachments.map(([name, info]) => attachmentItem(run, name, info)))));
    }
    parts.push(section("Ids", kv([
      ["run", run.id], ["parent", run.parent_run_id], ["trace", run.trace_id],
      ["project", run.session_name], ["dotted order", run.dotted_order],
    ])));
    detail.replaceChildren(...parts);
  }

  function select(runId, push) {
    const run = doc.runs.find((r) => r.id === runId) || doc.runs[0];
    if (!run) return;
    for (const row of waterfall.children) row.classList.toggle("selected", row.dataset.runId === run.id);
    renderDetail(run);
    if (push) history.replaceState(null, "", `${location.pathname}?run=${encodeURIComponent(run.id)}`);
  }

  async function main() {
    try {
      doc = await getJSON(`/api/traces/${encodeURIComponent(traceId)}`);
    } catch (err) {
      document.getElementById("summary").replaceChildren(el("h1", { text: "Trace not available" }), el("p", { text: String(err.message || err) }));
      return;
    }
    colours = serviceColours(doc.runs.map((r) => r.service));
    const starts = doc.runs.map((r) => r.start_us).filter((v) => v != null);
    const ends = doc.runs.map((r) => r.end_us ?? r.start_us).filter((v) => v != null);
    t0 = Math.min(...starts);
    span = Math.max(Math.max(...ends) - t0, 1);
    renderSummary();
    renderAxis();
    renderRows();
    select(new URLSearchParams(location.search).get("run"), false);
    document.body.dataset.loaded = "true";
  }

  main();
})();
