// Trace page: waterfall timeline + tree on the left, the selected run's detail on the right.
// The page is shareable: /traces/{trace_id}?run={run_id} opens with that run selected.
// Keys: ↑/↓ move, ←/→ collapse/expand (or go to parent/child), "/" searches run names.
// A trace with runs still open refreshes itself until every run has ended.
"use strict";

(() => {
  const { el, getJSON, download, saveBlob, ms, when, serviceColours, statusBadge, serviceChip, jsonTree } = TS;
  const traceId = decodeURIComponent(location.pathname.split("/").pop());
  const waterfall = document.getElementById("waterfall");
  const detail = document.getElementById("detail");
  const panel = document.querySelector(".waterfall-panel");
  const search = document.getElementById("run-search");
  const REFRESH_MS = 2000;
  const NAME_COL_KEY = "tracestitch-name-col";
  let doc = null;
  let colours = new Map();
  let t0 = 0;
  let span = 1;
  let selectedId = null;
  let shownDetail = "";
  const collapsed = new Set();
  // The collector's clock when the trace was read, and ours then: "now" for open runs is the
  // collector's time moved on by what our clock has seen since, so a skewed browser clock
  // cannot stretch or shrink the axis.
  let serverNowUs = 0;
  let fetchedAt = 0;

  function nowUs() { return serverNowUs + (Date.now() - fetchedAt) * 1000; }
  function pct(us) { return (100 * us) / span; }
  function isOpen(run) { return run.status === "pending" && run.end_us == null && run.start_us != null; }
  function runEnd(run) { return run.end_us ?? (isOpen(run) ? Math.max(nowUs(), run.start_us) : run.start_us); }
  function hasOpenRuns() { return doc.runs.some(isOpen); }

  // Tick steps of 1, 2 or 5 times a power of ten: labels that differ and read well.
  function niceStep(rough) {
    const power = Math.pow(10, Math.floor(Math.log10(Math.max(rough, 1))));
    for (const m of [1, 2, 5, 10]) if (m * power >= rough) return m * power;
    return 10 * power;
  }

  function tickLabel(us, step) {
    if (span >= 1e6) return `${(us / 1e6).toFixed(Math.max(0, -Math.floor(Math.log10(step / 1e6))))} s`;
    return `${(us / 1000).toFixed(Math.max(0, -Math.floor(Math.log10(step / 1000))))} ms`;
  }

  function renderSummary() {
    const s = doc.summary;
    const root = doc.runs.find((r) => r.id === doc.trace_id);
    const status = s.status || (root ? root.status : "pending");
    document.title = `tracestitch · ${s.name || traceId}`;
    const open = hasOpenRuns();
    const took = open ? `running for ${ms((nowUs() - t0) / 1000)}` : `duration ${ms(s.duration_ms)}`;
    const facts = el("div", { class: "facts" },
      statusBadge(status),
      el("span", { text: `${doc.runs.length} runs` }),
      el("span", { class: "trace-duration", text: took }),
      el("span", { text: `started ${when(s.start_us)}` }));
    if (open) facts.append(el("span", { class: "muted live-note", text: "refreshing until every run has ended" }));
    if (s.total_tokens != null) facts.append(el("span", { text: `tokens ${s.total_tokens} (${s.prompt_tokens ?? 0} in / ${s.completion_tokens ?? 0} out)` }));
    if (s.total_cost != null) facts.append(el("span", { text: `cost $${Number(s.total_cost).toFixed(4)}` }));
    if (s.orphan_count) facts.append(el("span", { class: "flag flag-orphan", text: `${s.orphan_count} orphan run(s)` }));
    if (s.parent_outside_count) facts.append(el("span", { class: "flag flag-outside", text: `${s.parent_outside_count} run(s) with a parent outside tracestitch` }));
    if (s.skewed_count) facts.append(el("span", { class: "flag flag-skew", text: `${s.skewed_count} run(s) before their parent (clock skew)` }));
    document.getElementById("summary").replaceChildren(
      el("h1", { text: s.name || "(root run missing)" }),
      el("div", { class: "muted mono", text: `trace ${doc.trace_id}` }),
      facts);
    const legend = document.getElementById("legend");
    legend.replaceChildren(...[...colours.keys()].map((svc) => serviceChip(svc, colours)));
    const errors = doc.runs.filter((r) => r.status === "error");
    for (const id of ["first-error", "deepest-error"]) document.getElementById(id).disabled = !errors.length;
  }

  function renderAxis() {
    const step = niceStep(span / 5);
    const ticks = [];
    for (let us = 0; us <= span + 1e-9 && ticks.length < 12; us += step) {
      const tick = el("span", { class: "tick", text: tickLabel(us, step) });
      tick.style.left = `${pct(us)}%`;
      ticks.push(tick);
    }
    const resizer = el("div", { class: "col-resizer", title: "drag to widen the names", role: "separator", "aria-orientation": "vertical" });
    resizer.addEventListener("pointerdown", startResize);
    document.getElementById("axis").replaceChildren(
      el("div", { class: "axis-label" }, resizer), el("div", { class: "axis-track" }, ...ticks));
  }

  function rowFor(run) {
    const label = el("div", { class: "row-label" });
    label.style.paddingLeft = `${0.2 + run.depth * 1.1}rem`;
    const hasChildren = run.child_run_ids && run.child_run_ids.length > 0;
    const toggle = el("button", {
      type: "button", class: "toggle", tabindex: "-1",
      "aria-label": "collapse or expand", hidden: hasChildren ? undefined : "",
      onclick: (e) => { e.stopPropagation(); setCollapsed(run.id, !collapsed.has(run.id)); },
    });
    const dot = el("span", { class: "dot" });
    dot.style.background = colours.get(run.service) || "#888";
    // The whole name on hover: the column may cut it ("GET 127.0.0.1:3534…").
    const name = run.name || "(patch only)";
    label.append(toggle, dot, el("span", { class: "run-name", text: name, title: name }));
    label.append(el("span", { class: "run-type muted", text: run.run_type || "" }));
    const usage = usageText(run);
    if (usage) label.append(el("span", { class: "run-meta muted", text: usage }));
    if (run.feedback && run.feedback.length) label.append(el("span", { class: "flag flag-feedback", text: `feedback ${run.feedback.length}`, title: run.feedback.map((f) => f.key).join(", ") }));
    if (run.status === "error") label.append(el("span", { class: "flag flag-error", text: "error" }));
    if (isOpen(run)) label.append(el("span", { class: "flag flag-running", text: "pending", title: "not ended yet" }));
    if (run.orphan) label.append(el("span", { class: "flag flag-orphan", text: "orphan", title: "its parent run never arrived" }));
    if (run.parent_outside) label.append(el("span", { class: "flag flag-outside", text: "parent outside tracestitch", title: "called through a service tracestitch does not see (OpenTelemetry)" }));
    if (run.skew_us) label.append(el("span", { class: "flag flag-skew", text: `skew −${ms(run.skew_us / 1000)}`, title: "starts before its parent: the machines' clocks disagree" }));

    const bar = el("div", { class: `bar status-${run.status}` });
    const start = (run.start_us ?? t0) - t0;
    const end = runEnd(run) - t0;
    bar.style.left = `${pct(start)}%`;
    bar.style.width = `${Math.max(pct(end - start), 0.4)}%`;
    bar.style.background = colours.get(run.service) || "#888";
    const took = isOpen(run) ? `running ${ms((nowUs() - run.start_us) / 1000)}` : ms(run.duration_ms);
    const barLabel = el("span", { class: "bar-label", text: took });
    barLabel.style.left = `${Math.min(pct(end), 100)}%`;
    const track = el("div", { class: "row-track" }, bar, barLabel);

    return el("div", {
      class: "wf-row", role: "treeitem", tabindex: "0", "aria-level": run.depth + 1,
      dataset: { runId: run.id, depth: String(run.depth) },
      onclick: () => select(run.id, true),
    }, label, track);
  }

  // "gpt-4o-mini · 450 tok · $0.0001" for a row: what an LLM call cost, at a glance.
  function usageText(run) {
    const parts = [];
    const model = run.run_type === "llm" ? LLM.model(run) : null;
    if (model) parts.push(String(model));
    if (run.total_tokens != null) parts.push(`${run.total_tokens} tok`);
    if (run.total_cost != null) parts.push(`$${Number(run.total_cost).toFixed(4)}`);
    return parts.join(" · ");
  }

  function renderRows() {
    waterfall.replaceChildren(...doc.runs.map(rowFor));
    applyCollapsed();
    markMatches();
  }

  // Hide every row under a collapsed one: one pass over the runs in tree (pre-order) order.
  function applyCollapsed() {
    let hideBelow = Infinity;
    doc.runs.forEach((run, i) => {
      const row = waterfall.children[i];
      if (run.depth <= hideBelow) hideBelow = Infinity;
      const hidden = run.depth > hideBelow;
      row.hidden = hidden;
      const isCollapsed = collapsed.has(run.id);
      row.classList.toggle("collapsed", isCollapsed);
      if (run.child_run_ids && run.child_run_ids.length) row.setAttribute("aria-expanded", String(!isCollapsed));
      if (!hidden && isCollapsed) hideBelow = run.depth;
    });
  }

  function setCollapsed(runId, value) {
    if (value) collapsed.add(runId); else collapsed.delete(runId);
    applyCollapsed();
  }

  function ancestors(run) {
    const byId = new Map(doc.runs.map((r) => [r.id, r]));
    const out = [];
    for (let p = byId.get(run.parent_run_id); p && !out.includes(p); p = byId.get(p.parent_run_id)) out.push(p);
    return out;
  }

  function reveal(run) {
    for (const a of ancestors(run)) collapsed.delete(a.id);
    applyCollapsed();
  }

  function rowOf(runId) { return waterfall.querySelector(`.wf-row[data-run-id="${CSS.escape(runId)}"]`); }

  function visibleRows() { return [...waterfall.children].filter((r) => !r.hidden); }

  // Keyboard navigation over the visible rows, like a file tree.
  function onKey(e) {
    if (e.target === search) {
      if (e.key === "Enter") { e.preventDefault(); nextMatch(e.shiftKey ? -1 : 1); }
      if (e.key === "Escape") { search.value = ""; markMatches(); search.blur(); }
      return;
    }
    if (e.target instanceof HTMLInputElement || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "/") { e.preventDefault(); search.focus(); search.select(); return; }
    if (!doc) return;
    const rows = visibleRows();
    const at = rows.findIndex((r) => r.dataset.runId === selectedId);
    const run = doc.runs.find((r) => r.id === selectedId);
    let target = null;
    if (e.key === "ArrowDown") target = rows[Math.min(at + 1, rows.length - 1)];
    else if (e.key === "ArrowUp") target = rows[Math.max(at - 1, 0)];
    else if (e.key === "Home") target = rows[0];
    else if (e.key === "End") target = rows[rows.length - 1];
    else if (e.key === "ArrowRight" && run) {
      if (collapsed.has(run.id)) setCollapsed(run.id, false);
      else if (run.child_run_ids && run.child_run_ids.length) target = rowOf(run.child_run_ids[0]);
    } else if (e.key === "ArrowLeft" && run) {
      if (run.child_run_ids && run.child_run_ids.length && !collapsed.has(run.id)) setCollapsed(run.id, true);
      else if (run.parent_run_id) target = rowOf(run.parent_run_id);
    } else return;
    e.preventDefault();
    if (target) select(target.dataset.runId, true);
  }

  function matches(run, text) {
    return (run.name || "").toLowerCase().includes(text) || (run.service || "").toLowerCase().includes(text);
  }

  function markMatches() {
    const text = search.value.trim().toLowerCase();
    let count = 0;
    doc.runs.forEach((run, i) => {
      const hit = Boolean(text) && matches(run, text);
      waterfall.children[i].classList.toggle("match", hit);
      if (hit) count++;
    });
    document.getElementById("search-count").textContent = text ? `${count} match${count === 1 ? "" : "es"}` : "";
    return count;
  }

  function nextMatch(direction) {
    const text = search.value.trim().toLowerCase();
    if (!text || !doc) return;
    const hits = doc.runs.filter((r) => matches(r, text));
    if (!hits.length) return;
    const at = hits.findIndex((r) => r.id === selectedId);
    // direction 0 (typing): stay on the selected run if it matches, else go to the first match.
    const next = direction === 0 ? hits[Math.max(at, 0)] : hits[(at + direction + hits.length) % hits.length];
    select(next.id, true, false);
  }

  function jumpToError(deepest) {
    const errors = doc.runs.filter((r) => r.status === "error");
    if (!errors.length) return;
    // The deepest error is usually the cause; ties go to the first in tree order.
    const target = deepest ? errors.reduce((a, b) => (b.depth > a.depth ? b : a)) : errors[0];
    select(target.id, true);
  }

  // The name column's width is dragged on the axis's handle and kept for the next page.
  function setNameColumn(px) {
    const width = Math.max(120, Math.min(px, panel.clientWidth - 160));
    panel.style.setProperty("--name-col", `${width}px`);
    return width;
  }

  function startResize(e) {
    e.preventDefault();
    const left = panel.getBoundingClientRect().left;
    const move = (ev) => setNameColumn(ev.clientX - left);
    const stop = (ev) => {
      document.removeEventListener("pointermove", move);
      document.removeEventListener("pointerup", stop);
      localStorage.setItem(NAME_COL_KEY, String(setNameColumn(ev.clientX - left)));
    };
    document.addEventListener("pointermove", move);
    document.addEventListener("pointerup", stop);
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

  function conversationSection(turns) {
    const list = el("ol", { class: "conversation" });
    for (const t of turns) {
      const item = el("li", { class: `turn turn-${String(t.role).replace(/[^a-z]/gi, "")}${t.output ? " turn-output" : ""}` },
        el("div", { class: "turn-role", text: t.role }),
        t.text ? el("div", { class: "turn-text", text: t.text }) : null);
      for (const call of t.calls || []) {
        const args = typeof call.args === "string" ? call.args : JSON.stringify(call.args ?? {});
        item.append(el("div", { class: "turn-call mono", text: `${call.name}(${args})` }));
      }
      list.append(item);
    }
    return section("Conversation", list);
  }

  // Copy and download: of one run (its JSON as the API gives it) and of the whole trace (the
  // export `tracestitch import` reads back).
  async function copyText(text, note) {
    try {
      await navigator.clipboard.writeText(text);
      note.textContent = "copied";
    } catch (err) {
      note.textContent = `could not copy: ${err.message || err}`;
    }
  }

  function runActions(run) {
    const note = el("span", { class: "muted action-note", role: "status" });
    const raw = el("pre", { class: "raw-json", hidden: "" });
    const json = () => JSON.stringify(run, null, 2);
    const toggle = el("button", { type: "button", class: "raw-toggle", text: "raw JSON", onclick: () => {
      raw.hidden = !raw.hidden;
      if (!raw.hidden && !raw.textContent) raw.textContent = json();
    } });
    const bar = el("div", { class: "detail-actions" }, toggle,
      el("button", { type: "button", class: "copy-run", text: "copy", onclick: () => copyText(json(), note) }),
      el("button", { type: "button", class: "download-run", text: "download", onclick: () => saveBlob(new Blob([json()], { type: "application/octet-stream" }), `run-${run.id}.json`) }),
      note);
    return [bar, raw];
  }

  function renderDetail(run) {
    const head = el("div", { class: "detail-head" },
      el("h2", { text: run.name || "(patch only)" }),
      el("div", { class: "facts" }, statusBadge(run.status),
        run.service ? serviceChip(run.service, colours) : null,
        el("span", { class: "muted", text: run.run_type || "" }),
        usageText(run) ? el("span", { class: "muted", text: usageText(run) }) : null));
    const parts = [head, ...runActions(run)];
    if (run.orphan) parts.push(el("p", { class: "flag flag-orphan", text: "Orphan: this run's parent never arrived at the collector." }));
    if (run.parent_outside) parts.push(el("p", { class: "flag flag-outside", text: "Parent outside tracestitch: this run was called through a service tracestitch does not see (an OpenTelemetry span)." }));
    if (run.skew_us) parts.push(el("p", { class: "flag flag-skew", text: `Starts ${ms(run.skew_us / 1000)} before its parent: the two machines' clocks disagree.` }));
    if (run.partial) parts.push(el("p", { class: "flag", text: "Only this run's update (patch) has arrived so far." }));
    if (run.error) parts.push(section("Error", el("pre", { class: "error-text", text: run.error })));
    parts.push(section("Timing", kv([
      ["start", run.start_time],
      ["end", run.end_time || "still running"],
      ["duration", isOpen(run) ? `running for ${ms((nowUs() - run.start_us) / 1000)}` : ms(run.duration_ms)],
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
    if (run.feedback && run.feedback.length) {
      parts.push(section(`Feedback (${run.feedback.length})`, el("ul", { class: "feedback" },
        ...run.feedback.map(feedbackItem))));
    }
    const turns = LLM.conversation(run);
    if (turns.length) parts.push(conversationSection(turns));
    parts.push(section("Inputs", jsonTree(run.inputs || {})));
    parts.push(section("Outputs", run.outputs == null ? el("p", { class: "muted", text: "none" }) : jsonTree(run.outputs)));
    const metadata = (run.extra && run.extra.metadata) || {};
    if (Object.keys(metadata).length) parts.push(section("Metadata", jsonTree(metadata)));
    if (run.tags && run.tags.length) parts.push(section("Tags", el("div", { class: "tags" }, ...run.tags.map((t) => el("span", { class: "tag", text: t })))));
    if (run.events && run.events.length) parts.push(section(`Events (${run.events.length})`, jsonTree(run.events)));
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

  function select(runId, push, focus = true) {
    const run = doc.runs.find((r) => r.id === runId) || doc.runs[0];
    if (!run) return;
    selectedId = run.id;
    reveal(run);
    for (const row of waterfall.children) row.classList.toggle("selected", row.dataset.runId === run.id);
    const row = rowOf(run.id);
    if (row) {
      row.scrollIntoView({ block: "nearest" });
      if (focus) row.focus({ preventScroll: true });
    }
    // A refresh re-renders the detail only when the run changed, so open JSON stays open.
    const shown = JSON.stringify(run) + (isOpen(run) ? "" : "ended");
    if (shown !== shownDetail) {
      shownDetail = shown;
      renderDetail(run);
    }
    if (push) history.replaceState(null, "", `${location.pathname}?run=${encodeURIComponent(run.id)}`);
  }

  async function load() {
    doc = await getJSON(`/api/traces/${encodeURIComponent(traceId)}`);
    serverNowUs = doc.now_us ?? Date.now() * 1000;
    fetchedAt = Date.now();
    colours = serviceColours(doc.runs.map((r) => r.service));
    const starts = doc.runs.map((r) => r.start_us).filter((v) => v != null);
    const ends = doc.runs.map(runEnd).filter((v) => v != null);
    t0 = Math.min(...starts);
    span = Math.max(Math.max(...ends) - t0, 1);
    renderSummary();
    renderAxis();
    renderRows();
  }

  async function refresh() {
    try {
      await load();
      select(selectedId, false, false);
    } catch (err) {
      // A failed refresh keeps what is shown; the next one tries again.
    }
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    if (hasOpenRuns()) setTimeout(refresh, REFRESH_MS);
    else document.body.dataset.complete = "true";
  }

  async function main() {
    const savedWidth = Number(localStorage.getItem(NAME_COL_KEY));
    if (savedWidth) panel.style.setProperty("--name-col", `${savedWidth}px`);
    try {
      await load();
    } catch (err) {
      document.getElementById("summary").replaceChildren(el("h1", { text: "Trace not available" }), el("p", { text: String(err.message || err) }));
      return;
    }
    const wanted = new URLSearchParams(location.search).get("run");
    select(wanted, false, false);
    document.addEventListener("keydown", onKey);
    search.addEventListener("input", () => { markMatches(); nextMatch(0); });
    document.getElementById("first-error").addEventListener("click", () => jumpToError(false));
    document.getElementById("deepest-error").addEventListener("click", () => jumpToError(true));
    const exportPath = `/api/traces/${encodeURIComponent(doc.trace_id)}/export`;
    const note = document.getElementById("trace-action-note");
    document.getElementById("copy-trace").addEventListener("click", () => {
      getJSON(exportPath).then((d) => copyText(JSON.stringify(d, null, 2), note), (err) => { note.textContent = String(err.message || err); });
    });
    document.getElementById("download-trace").addEventListener("click", () => {
      download(exportPath, `trace-${doc.trace_id}.json`).catch((err) => { note.textContent = String(err.message || err); });
    });
    document.body.dataset.loaded = "true";
    if (hasOpenRuns()) setTimeout(refresh, REFRESH_MS);
    else document.body.dataset.complete = "true";
  }

  main();
})();
