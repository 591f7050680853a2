// The Activity page: reads /api/v1/activity and /api/v1/generations with the key from session
// storage (never a URL or a cookie), draws the charts as SVG, offers the shown rows as CSV.
"use strict";
const STORE = "gateway.apiKey";
const PERIODS = {hour: ["minute", 3600], day: ["hour", 86400], month: ["day", 30 * 86400],
                 year: ["month", 365 * 86400]};
const $ = (id) => document.getElementById(id);

function key() { return sessionStorage.getItem(STORE) || ""; }

function query() {
  const period = document.querySelector("input[name=period]:checked").value;
  const [granularity, span] = PERIODS[period];
  const to = new Date();
  const from = new Date(to.getTime() - span * 1000);
  const q = new URLSearchParams({granularity, from: from.toISOString(), to: to.toISOString()});
  for (const [name, id] of [["model", "f-model"], ["provider", "f-provider"], ["key", "f-key"]]) {
    const value = $(id).value.trim();
    if (value) q.set(name, value);
  }
  return q;
}

async function api(path) {
  const resp = await fetch(path, {headers: {Authorization: "Bearer " + key()}});
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { message = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return resp;
}

function bars(svg, values, labels, format) {
  const width = 600, height = 140, pad = 18;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(...values, 0);
  const step = values.length ? (width - 2) / values.length : 0;
  const parts = [];
  values.forEach((v, i) => {
    const h = max > 0 ? (v / max) * (height - pad - 4) : 0;
    parts.push(`<rect x="${1 + i * step}" y="${height - pad - h}" width="${Math.max(step - 1, 1)}"` +
               ` height="${h}"><title>${labels[i]}: ${format(v)}</title></rect>`);
  });
  parts.push(`<text x="2" y="${height - 4}">${labels[0] || ""}</text>`);
  parts.push(`<text x="${width - 2}" y="${height - 4}" text-anchor="end">` +
             `${labels[labels.length - 1] || ""}</text>`);
  parts.push(`<text x="2" y="10">max ${format(max)}</text>`);
  svg.innerHTML = parts.join("");
  svg.setAttribute("aria-label", `${values.length} buckets, highest ${format(max)}`);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}

async function refresh() {
  $("error").textContent = "";
  try {
    const q = query();
    const activity = (await (await api("/api/v1/activity?" + q)).json()).data;
    const t = activity.totals;
    $("t-spend").textContent = "$" + t.spend;
    $("t-requests").textContent = t.requests;
    $("t-prompt").textContent = t.prompt_tokens;
    $("t-completion").textContent = t.completion_tokens;
    $("t-reasoning").textContent = t.reasoning_tokens;
    const labels = activity.buckets.map((b) => b.start.slice(0, 16).replace("T", " "));
    bars($("c-spend"), activity.buckets.map((b) => Number(b.spend)), labels, (v) => "$" + v);
    bars($("c-tokens"), activity.buckets.map((b) => b.prompt_tokens + b.completion_tokens), labels, String);
    bars($("c-requests"), activity.buckets.map((b) => b.requests), labels, String);
    q.set("limit", "50");
    const recent = (await (await api("/api/v1/generations?" + q)).json()).data;
    $("recent").querySelector("tbody").innerHTML = recent.map((g) => {
      const status = g.cancelled ? '<span class="cancelled">cancelled</span>'
        : g.status >= 400 ? `<span class="failed">${g.status}</span>` : escapeHtml(g.finish_reason || g.status);
      return `<tr><td>${escapeHtml(g.created_at.slice(0, 19).replace("T", " "))}</td>` +
        `<td>${escapeHtml(g.model)}</td><td>${escapeHtml(g.provider_name)}</td>` +
        `<td class="num">${g.tokens_prompt + g.tokens_completion}</td>` +
        `<td class="num">${escapeHtml(g.total_cost_usd)}</td><td class="num">${g.latency} ms</td>` +
        `<td>${status}</td></tr>`;
    }).join("");
  } catch (err) {
    $("error").textContent = "Could not load activity: " + err.message;
  }
}

async function loadFilters() {
  const models = (await (await fetch("/api/v1/models")).json()).data;
  const providers = new Set();
  for (const m of models) {
    $("f-model").insertAdjacentHTML("beforeend",
      `<option value="${escapeHtml(m.id)}">${escapeHtml(m.id)}</option>`);
    for (const p of m.providers) providers.add(p);
  }
  for (const p of [...providers].sort()) {
    $("f-provider").insertAdjacentHTML("beforeend",
      `<option value="${escapeHtml(p)}">${escapeHtml(p)}</option>`);
  }
}

async function download() {
  try {
    const blob = await (await api("/api/v1/activity.csv?" + query())).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "activity.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
  } catch (err) {
    $("error").textContent = "Could not download: " + err.message;
  }
}

function show() {
  $("main").hidden = !key();
  if (key()) refresh();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(STORE, $("api-key").value.trim());
  $("api-key").value = "";
  show();
});
$("forget").addEventListener("click", () => { sessionStorage.removeItem(STORE); show(); });
$("filters").addEventListener("change", refresh);
$("download").addEventListener("click", download);
loadFilters().then(show);
