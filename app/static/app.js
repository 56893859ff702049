// rowstream's page: the dataset list, a dataset's preview, filters and exports.
// Plain JavaScript, no framework and no build step. Every value from the data is inserted
// with textContent, never as HTML. The token lives in sessionStorage only; downloads use
// signed links (POST /links), so no token is ever put in a URL.
"use strict";

const TOKEN_KEY = "rowstream.token";
const PREVIEW_ROWS = 100;
//: The export buttons: format parameter, label, file extension, whether rows are lines.
const EXPORTS = [
  { format: "csv", label: "CSV", ext: "csv", lines: true },
  { format: "ndjson", label: "NDJSON", ext: "ndjson", lines: true },
  { format: "json", label: "JSON", ext: "json", lines: false },
  { format: "arrow", label: "Arrow", ext: "arrows", lines: false },
  { format: "parquet", label: "Parquet", ext: "parquet", lines: false },
];
//: Names Python cannot take as keyword arguments (the snippet passes those in **{…}).
const PYTHON_KEYWORDS = new Set(["False", "None", "True", "and", "as", "assert", "async",
  "await", "break", "class", "continue", "def", "del", "elif", "else", "except", "finally",
  "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or",
  "pass", "raise", "return", "try", "while", "with", "yield"]);
const OPERATOR_LABELS = {
  eq: "=", ne: "≠", gt: ">", gte: "≥", lt: "<", lte: "≤",
  in: "is one of (a,b,c)", isnull: "is null", prefix: "starts with",
};

const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function show(section) {
  for (const id of ["signin", "list", "dataset"]) $(id).hidden = id !== section;
  $("sign-out").hidden = section === "signin";
}

function say(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

class ApiError extends Error {}

// A request with the token; a problem+json answer becomes an ApiError with its detail.
async function api(path, { method = "GET", body = null, accept = "application/json", extra = {} } = {}) {
  const headers = { Authorization: `Bearer ${token()}`, Accept: accept, ...extra };
  if (body !== null) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === null ? null : JSON.stringify(body) });
  if (response.ok) return response;
  let detail = `${response.status} ${response.statusText}`;
  try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    show("signin");
    say(`Please sign in again: ${detail}`);
  }
  throw new ApiError(detail);
}

// --- the list ------------------------------------------------------------------------

async function showList() {
  const listing = await (await api("/datasets")).json();
  const body = $("datasets").querySelector("tbody");
  body.replaceChildren();
  for (const dataset of listing.datasets) {
    const row = el("tr");
    const name = el("td");
    name.append(el("a", { href: `/ui/datasets/${encodeURIComponent(dataset.name)}` }, dataset.name));
    row.append(name, el("td", {}, dataset.description || ""),
      el("td", {}, dataset.columns.map((c) => c.name).join(", ")),
      el("td", { class: "num" }, dataset.estimated_rows === null ? "?" : dataset.estimated_rows.toLocaleString("en")));
    body.append(row);
  }
  show("list");
  document.title = "Datasets · rowstream";
}

// --- a dataset -----------------------------------------------------------------------

const state = { dataset: null, rows: [], query: null, done: false, controller: null };

function inputFor(column, operator) {
  if (operator === "isnull" || (column.kind === "boolean" && operator !== "in")) {
    const select = el("select", { class: "value", "aria-label": `${column.name} value` });
    select.append(el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
    return select;
  }
  const types = { integer: "number", float: "text", numeric: "text", date: "date" };
  const input = el("input", { class: "value", type: operator === "in" ? "text" : (types[column.kind] || "text"),
    "aria-label": `${column.name} value` });
  if (column.kind === "timestamptz" || column.kind === "timestamp") {
    input.placeholder = "2024-01-31T12:00:00Z or 2024-01-31";
    input.title = "RFC 3339 (without an offset: UTC), or a date: its midnight in UTC";
  }
  if (operator === "in") input.placeholder = "a,b,c";
  return input;
}

function addFilterRow() {
  const dataset = state.dataset;
  const row = el("div", { class: "filter" });
  const column = el("select", { class: "column", "aria-label": "Filter column" });
  for (const name of dataset.filters) column.append(el("option", { value: name }, name));
  const operator = el("select", { class: "operator", "aria-label": "Filter operator" });
  const remove = el("button", { type: "button", class: "secondary", "aria-label": "Remove this filter" }, "Remove");
  let value = null;
  const refresh = () => {
    const chosen = dataset.columns.find((c) => c.name === column.value);
    const previous = operator.value;
    operator.replaceChildren();
    for (const op of dataset.operators[column.value]) operator.append(el("option", { value: op }, OPERATOR_LABELS[op] || op));
    if ([...operator.options].some((o) => o.value === previous)) operator.value = previous;
    const next = inputFor(chosen, operator.value);
    if (value) value.replaceWith(next); else row.insertBefore(next, remove);
    value = next;
  };
  column.addEventListener("change", refresh);
  operator.addEventListener("change", () => {
    const chosen = dataset.columns.find((c) => c.name === column.value);
    const next = inputFor(chosen, operator.value);
    value.replaceWith(next);
    value = next;
  });
  remove.addEventListener("click", () => row.remove());
  row.append(column, operator, remove);
  $("filters").querySelector(".rows").append(row);
  refresh();
  column.focus();
}

// The selection as query parameters (without format, limit or after).
function selection() {
  const dataset = state.dataset;
  const params = new URLSearchParams();
  const chosen = [...$("fields").querySelectorAll("input:checked")].map((i) => i.value);
  if (chosen.length === 0) throw new ApiError("choose at least one column");
  if (chosen.length !== dataset.columns.length) params.set("fields", chosen.join(","));
  for (const input of $("params").querySelectorAll("input")) params.set(input.name, input.value);
  for (const row of $("filters").querySelectorAll(".filter")) {
    const column = row.querySelector(".column").value;
    const operator = row.querySelector(".operator").value;
    const value = row.querySelector(".value").value;
    params.append(operator === "eq" ? column : `${column}__${operator}`, value);
  }
  return { params, fields: chosen };
}

async function showDataset(name) {
  const listing = await (await api("/datasets")).json();
  const dataset = listing.datasets.find((d) => d.name === name);
  if (!dataset) throw new ApiError(`no dataset ${JSON.stringify(name)} here (or not yours to read)`);
  state.dataset = dataset;
  document.title = `${dataset.name} · rowstream`;
  $("ds-name").textContent = dataset.name;
  $("ds-description").textContent = dataset.description || "";
  const columns = $("ds-columns").querySelector("tbody");
  columns.replaceChildren();
  const fields = $("fields").querySelector(".choices");
  fields.replaceChildren();
  for (const column of dataset.columns) {
    const row = el("tr");
    row.append(el("td", {}, column.name), el("td", {}, column.type),
      el("td", {}, column.nullable ? "yes" : "no"), el("td", {}, dataset.key.includes(column.name) ? "yes" : ""));
    columns.append(row);
    const label = el("label");
    const box = el("input", { type: "checkbox", value: column.name });
    box.checked = true;
    label.append(box, document.createTextNode(` ${column.name}`));
    fields.append(label);
  }
  const params = $("params");
  params.hidden = dataset.params.length === 0;
  params.querySelector(".rows").replaceChildren();
  for (const param of dataset.params) {
    const row = el("div");
    const id = `param-${param.name}`;
    row.append(el("label", { for: id }, `${param.name} (${param.type})`),
      el("input", { id, name: param.name, required: "", type: param.type === "date" ? "date" : "text" }));
    params.querySelector(".rows").append(row);
  }
  $("add-filter").hidden = dataset.filters.length === 0;
  const buttons = $("export-buttons");
  buttons.replaceChildren();
  for (const spec of EXPORTS) {
    const button = el("button", { type: "button", "data-format": spec.format }, `Download ${spec.label}`);
    button.addEventListener("click", () => exportAs(spec).catch((e) => finishExport(`Export failed: ${e.message}`, true)));
    buttons.append(button);
  }
  show("dataset");
  if (dataset.params.length === 0) await preview();
  else $("preview-status").textContent = "Fill in the parameters, then Apply.";
}

function renderRows(rows, fields, append) {
  const table = $("preview");
  if (!append) {
    const head = el("tr");
    for (const name of fields) head.append(el("th", { scope: "col" }, name));
    table.querySelector("thead").replaceChildren(head);
    table.querySelector("tbody").replaceChildren();
  }
  const body = table.querySelector("tbody");
  for (const row of rows) {
    const tr = el("tr");
    for (const name of fields) {
      const value = row[name];
      if (value === null || value === undefined) tr.append(el("td", { class: "null" }, "NULL"));
      else {
        const text = typeof value === "object" ? JSON.stringify(value) : String(value);
        tr.append(el("td", { title: text }, text));  // cut to one line: the whole on hover
      }
    }
    body.append(tr);
  }
}

// The first rows of the selection, from the standard route; "Load more" continues after
// the last row's key (keyset paging, never OFFSET).
async function preview(append = false) {
  const dataset = state.dataset;
  const { params, fields } = selection();
  const key = dataset.key;
  if (!append) { state.rows = []; state.query = { params, fields }; }
  const query = new URLSearchParams(state.query.params);
  // the key travels with the preview, shown or not, so that "Load more" can continue after it
  if (query.has("fields")) query.set("fields", [...new Set([...state.query.fields, ...key])].join(","));
  query.set("limit", String(PREVIEW_ROWS));
  if (append && key.length) query.set("after", JSON.stringify(key.map((k) => state.rows[state.rows.length - 1][k])));
  $("preview-status").textContent = "Loading…";
  const response = await api(`/datasets/${encodeURIComponent(dataset.name)}?${query}`);
  if (!append) estimate().catch(() => showEstimate(null));  // beside the preview
  const rows = await response.json();
  state.rows.push(...rows);
  renderRows(rows, state.query.fields, append);
  state.done = rows.length < PREVIEW_ROWS;
  $("more").hidden = state.done || key.length === 0;
  $("preview-status").textContent = `${state.rows.length.toLocaleString("en")} rows shown` +
    (state.done ? " (all of them)." : key.length ? "." : "; this dataset has no key, so it cannot be paged.");
  showCode();
}

function streamPath(format, params) {
  const query = new URLSearchParams(params);
  query.set("format", format);
  // CSV from this page is opened in spreadsheets: always the formula-safe form (CSV_SAFE)
  if (format === "csv") query.set("csv_safe", "1");
  return `/datasets/${encodeURIComponent(state.dataset.name)}/stream?${query}`;
}

function shellQuote(text) { return `'${text.replace(/'/g, "'\\''")}'`; }

function showCode() {
  const { params } = state.query;
  const origin = window.location.origin;
  const name = state.dataset.name;
  $("code-curl").textContent =
    `curl -sN -H "Authorization: Bearer $ROWSTREAM_TOKEN" ${shellQuote(origin + streamPath("csv", params))} -o ${shellQuote(name + ".csv")}`;
  $("code-fetch").textContent =
    `rowstream fetch ${shellQuote(origin + streamPath("ndjson", params))} -o ${shellQuote(name + ".ndjson")}`;
  // keyword arguments as a person writes them (a name Python cannot take goes in **{…})
  const plain = [], odd = {};
  for (const [key, value] of params.entries()) {
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key) && !PYTHON_KEYWORDS.has(key) && !["name", "self"].includes(key)) plain.push(`${key}=${JSON.stringify(value)}`);
    else odd[key] = value;
  }
  if (Object.keys(odd).length) plain.push(`**${JSON.stringify(odd)}`);
  $("code-python").textContent = [
    "import os",
    "from rowstream.client import Client",
    `client = Client(${JSON.stringify(origin)}, os.environ["ROWSTREAM_TOKEN"])`,
    `frame = client.to_pandas(${[JSON.stringify(name), ...plain].join(", ")})`,
  ].join("\n");
}

// How many rows the selection matches: the planner's estimate (a HEAD of the selection,
// without the preview's limit of 100), the exact count (a HEAD with Prefer: count=exact,
// which reads the selection) on request.
async function estimate() {
  const query = new URLSearchParams(state.query.params);
  const asked = query.toString();
  const response = await api(`/datasets/${encodeURIComponent(state.dataset.name)}/stream?${query}`, { method: "HEAD" });
  if (new URLSearchParams(state.query.params).toString() !== asked) return;  // changed since
  showEstimate(response.headers.get("X-Total-Count-Estimate"));
}

function showEstimate(estimate) {
  $("count-text").textContent = estimate === null ? "" :
    `About ${Number(estimate).toLocaleString("en")} rows match (the planner's estimate). `;
  $("count-exact").hidden = estimate === null;
}

async function countExactly() {
  const query = new URLSearchParams(state.query.params);
  $("count-text").textContent = "Counting… ";
  const response = await api(`/datasets/${encodeURIComponent(state.dataset.name)}/stream?${query}`,
    { method: "HEAD", extra: { Prefer: "count=exact" } });
  const counted = response.headers.get("X-Total-Count");
  if (counted === null) throw new ApiError("the server sent no count");
  $("count-text").textContent = `${Number(counted).toLocaleString("en")} rows match (counted). `;
  $("count-exact").hidden = true;
}

// --- exports -------------------------------------------------------------------------

function finishExport(text, failed) {
  const status = $("export-status");
  status.textContent = text;
  status.className = failed ? "error" : "ok";
  $("cancel").disabled = true;
  $("cancel").hidden = true;  // nothing left to cancel
  for (const button of $("export-buttons").querySelectorAll("button")) button.disabled = false;
  state.controller = null;
}

function megabytes(bytes) { return `${(bytes / 1e6).toFixed(1)} MB`; }

// Download the selection: a signed link for it, read with fetch so that progress shows and
// Cancel really closes the connection (the server then cancels the query). A body that
// ends without the stream's proper end is reported as failed and nothing is saved.
async function exportAs(spec) {
  const { params } = selection();
  for (const button of $("export-buttons").querySelectorAll("button")) button.disabled = true;
  $("export").hidden = false;
  $("cancel").disabled = false;
  $("cancel").hidden = false;
  const status = $("export-status");
  status.className = "";
  status.textContent = "Starting…";
  const progress = $("export-progress");
  progress.removeAttribute("value");
  const link = await (await api("/links", { method: "POST", body: { url: streamPath(spec.format, params), ttl_seconds: 900 } })).json();
  const controller = new AbortController();
  state.controller = controller;
  let response;
  try {
    // the planner's estimate: an exact count would read the whole selection before the first byte
    // the link's path and query, on this page's own origin (the signature covers no origin)
    const signed = new URL(link.url);
    response = await fetch(signed.pathname + signed.search, { signal: controller.signal });
  } catch (error) {
    if (controller.signal.aborted) return finishExport("Cancelled: nothing was saved.", false);
    throw error;
  }
  if (!response.ok) {
    let detail = `${response.status}`;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    return finishExport(`Export refused: ${detail}`, true);
  }
  const total = Number(response.headers.get("X-Total-Count") || response.headers.get("X-Total-Count-Estimate") || 0);
  const reader = response.body.getReader();
  const chunks = [];
  let bytes = 0;
  let lines = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      bytes += value.length;
      if (spec.lines) for (const byte of value) if (byte === 10) lines += 1;
      const rows = spec.format === "csv" ? Math.max(lines - 1, 0) : lines;
      if (spec.lines && total) {
        progress.max = total;
        progress.value = Math.min(rows, total);
        status.textContent = `${rows.toLocaleString("en")} of about ${total.toLocaleString("en")} rows, ${megabytes(bytes)}`;
      } else {
        status.textContent = `${megabytes(bytes)} received (about ${total.toLocaleString("en")} rows)`;
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return finishExport(`Cancelled after ${megabytes(bytes)}: nothing was saved.`, false);
    return finishExport(`The export failed midway after ${megabytes(bytes)}; the download is incomplete and was not saved. Try again, or resume with rowstream fetch.`, true);
  }
  const rows = spec.format === "csv" ? Math.max(lines - 1, 0) : lines;
  if (spec.lines && response.headers.get("X-Total-Count") && rows !== total) {
    return finishExport(`The export ended after ${rows} of ${total} rows; it was not saved.`, true);
  }
  const blob = new Blob(chunks, { type: response.headers.get("Content-Type") || "application/octet-stream" });
  const url = URL.createObjectURL(blob);
  const anchor = el("a", { href: url, download: `${state.dataset.name}.${spec.ext}` });
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  progress.max = 1;
  progress.value = 1;
  finishExport(`Done: ${spec.lines ? `${rows.toLocaleString("en")} rows, ` : ""}${megabytes(bytes)} saved as ${state.dataset.name}.${spec.ext}.`, false);
}

// --- start -----------------------------------------------------------------------------

async function route() {
  say("");
  if (!token()) { show("signin"); $("token").focus(); return; }
  const match = window.location.pathname.match(/^\/ui\/datasets\/([^/]+)$/);
  if (match) await showDataset(decodeURIComponent(match[1]));
  else await showList();
}

function guard(action) {
  return (event) => {
    if (event) event.preventDefault();
    Promise.resolve().then(action).catch((error) => say(error.message));
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", guard(async () => {
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    await route();
  }));
  $("sign-out").addEventListener("click", guard(() => {
    sessionStorage.removeItem(TOKEN_KEY);
    return route();
  }));
  $("add-filter").addEventListener("click", guard(addFilterRow));
  $("selection").addEventListener("submit", guard(() => preview(false)));
  $("more").addEventListener("click", guard(() => preview(true)));
  $("count-exact").addEventListener("click", guard(countExactly));
  $("cancel").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  guard(route)();
});
