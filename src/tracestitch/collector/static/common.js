// Shared helpers of the tracestitch viewer. Every value from a run reaches the page through
// textContent or a DOM property, never through HTML parsing, so data can never become markup.
"use strict";

const TS = (() => {
  // The API key (when the collector requires one) comes from the URL fragment, which browsers
  // never send to servers or put in Referer headers, and is kept for this tab only.
  const hashKey = new URLSearchParams(location.hash.slice(1)).get("key");
  if (hashKey) {
    sessionStorage.setItem("tracestitch-key", hashKey);
    history.replaceState(null, "", location.pathname + location.search);
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const NEEDS_KEY = "This collector needs its API key: open the page with #key=YOUR_KEY";
  const REJECTED = "This collector rejected the API key: open the page with #key=ITS_KEY";

  function unauthorised() {
    return new Error(sessionStorage.getItem("tracestitch-key") ? REJECTED : NEEDS_KEY);
  }

  function authHeaders(headers) {
    const key = sessionStorage.getItem("tracestitch-key");
    if (key) headers["x-api-key"] = key;
    return headers;
  }

  async function getJSON(path) {
    const resp = await fetch(path, { headers: authHeaders({ accept: "application/json" }) });
    if (resp.status === 401) throw unauthorised();
    if (!resp.ok) {
      let detail = resp.statusText;
      try { detail = (await resp.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(`${resp.status}: ${detail}`);
    }
    return resp.json();
  }

  // Attachments sit behind the API key, which a plain link click never sends. So: fetch with
  // the key, then hand the browser a blob: URL typed application/octet-stream with a `download`
  // name, so the bytes are saved as a file and never rendered (as HTML or anything else) here.
  async function download(path, filename) {
    const resp = await fetch(path, { headers: authHeaders({ accept: "application/octet-stream" }) });
    if (resp.status === 401) throw unauthorised();
    if (!resp.ok) throw new Error(`${resp.status}: ${resp.statusText || "download failed"}`);
    saveBlob(new Blob([await resp.arrayBuffer()], { type: "application/octet-stream" }), filename);
  }

  // Hands the browser bytes to save under ``filename`` (never to render).
  function saveBlob(blob, filename) {
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: filename.replace(/[\\/]/g, "_") || "attachment" });
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    // Revoked later, not at once: the browser reads the blob after click() returns.
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  function ms(value) {
    if (typeof value !== "number" || !isFinite(value)) return "—";
    if (value >= 1000) return (value / 1000).toFixed(2) + " s";
    return (value >= 10 ? value.toFixed(0) : value.toFixed(1)) + " ms";
  }

  function when(us) {
    if (typeof us !== "number") return "—";
    const d = new Date(us / 1000);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // A service's colour comes from a hash of its name alone (FNV-1a to a hue), so it keeps its
  // colour on every page: the list, each trace, the services view.
  function serviceColour(service) {
    let hash = 2166136261;
    for (let i = 0; i < service.length; i++) hash = Math.imul(hash ^ service.charCodeAt(i), 16777619);
    return `hsl(${(hash >>> 0) % 360}, 55%, 48%)`;
  }

  function serviceColours(services) {
    const map = new Map();
    for (const s of [...new Set(services.filter(Boolean))].sort()) map.set(s, serviceColour(s));
    return map;
  }

  function statusBadge(status) {
    // The API's own words (success, error, pending), as the CLI prints them.
    return el("span", { class: `badge status-${status}`, text: String(status) });
  }

  function serviceChip(service, colours) {
    const chip = el("span", { class: "chip", text: service });
    chip.style.borderColor = colours.get(service) || "#888";
    const dot = el("span", { class: "dot" });
    dot.style.background = colours.get(service) || "#888";
    chip.prepend(dot);
    return chip;
  }

  // Collapsible JSON built from <details> elements: collapsing needs no script, values are text.
  function jsonTree(value, label, depth = 0) {
    const isObj = value !== null && typeof value === "object";
    if (!isObj) {
      const row = el("div", { class: "json-row" });
      if (label !== undefined) row.append(el("span", { class: "json-key", text: label + ": " }));
      const type = value === null ? "null" : typeof value;
      const shown = type === "string" ? JSON.stringify(value) : String(value);
      row.append(el("span", { class: `json-${type}`, text: shown }));
      return row;
    }
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    const open = Array.isArray(value) ? "[" : "{";
    const close = Array.isArray(value) ? "]" : "}";
    const details = el("details", { class: "json-node", open: depth < 2 ? "" : undefined });
    const summary = el("summary");
    if (label !== undefined) summary.append(el("span", { class: "json-key", text: label + ": " }));
    summary.append(el("span", { class: "json-brace", text: `${open} ${entries.length} ${close}` }));
    details.append(summary);
    const body = el("div", { class: "json-children" });
    for (const [k, v] of entries.slice(0, 500)) body.append(jsonTree(v, k, depth + 1));
    if (entries.length > 500) body.append(el("div", { class: "muted", text: `… ${entries.length - 500} more` }));
    details.append(body);
    return details;
  }

  return { el, getJSON, download, saveBlob, ms, when, serviceColour, serviceColours, statusBadge, serviceChip, jsonTree };
})();
