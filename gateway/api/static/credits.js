// The Credits page: reads /api/v1/credits/summary and /purchases with the key from session
// storage (the Activity page's too), opens checkouts, refunds, and sets auto top-up. Every error
// shown is the API's own message.
"use strict";
const STORE = "gateway.apiKey";
const $ = (id) => document.getElementById(id);
const REASONS = {not_paid: "–", crypto: "never (crypto)", window_passed: "no: the refund window passed",
                 used_up: "no: used up", refunded: "refunded",
                 operator_credited: "ask the operator (credited by them)"};
let pollTimer = null;
let checkoutKey = null;  // one Idempotency-Key per purchase asked for: a second click is the same

function key() { return sessionStorage.getItem(STORE) || ""; }

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"}[c]));
}

async function api(path, options = {}) {
  const headers = {Authorization: "Bearer " + key(), ...(options.headers || {})};
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {...options, headers});
  let body = null;
  try { body = await resp.json(); } catch (e) { /* not JSON */ }
  if (!resp.ok) {
    const message = body && body.error ? body.error.message : resp.status + " " + resp.statusText;
    throw new Error(message);
  }
  return body;
}

function newKey() {
  return (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).slice(0, 64);
}

function money(text) { return "$" + text; }

function statusText(row) {
  if (row.status === "failed") return `failed (${escapeHtml(row.failure_reason || "failed")})`;
  if (row.status === "pending") {
    return row.checkout_url
      ? `pending · <a href="${escapeHtml(row.checkout_url)}" target="_blank" rel="noopener">pay</a>`
      : "pending";
  }
  if (row.status === "partially_refunded") return `partially refunded (${money(escapeHtml(row.refunded))})`;
  return escapeHtml(row.status) + (row.late ? " (paid late)" : "");
}

function refundableText(row) {
  if (row.not_refundable_reason === "refunded") return "no: " + money(escapeHtml(row.refunded)) + " refunded";
  if (row.not_refundable_reason) return escapeHtml(REASONS[row.not_refundable_reason] || row.not_refundable_reason);
  const until = row.refundable_until ? " until " + escapeHtml(row.refundable_until.slice(0, 16).replace("T", " ")) : "";
  return money(escapeHtml(row.refundable)) + until;
}

function renderRows(rows) {
  $("purchases").querySelector("tbody").innerHTML = rows.map((row) => {
    const action = row.not_refundable_reason === null && row.refundable !== "0.00"
      ? `<button type="button" class="refund" data-id="${escapeHtml(row.id)}" data-refundable="${escapeHtml(row.refundable)}"` +
        ` data-amount="${escapeHtml(row.amount)}" data-fee="${escapeHtml(row.fee)}">Refund</button>`
      : "";
    return `<tr data-id="${escapeHtml(row.id)}" data-checkout="${escapeHtml(row.checkout_id || "")}">` +
      `<td>${escapeHtml(row.created_at.slice(0, 19).replace("T", " "))}</td>` +
      `<td class="num">${money(escapeHtml(row.amount))}</td><td class="num">${money(escapeHtml(row.fee))}</td>` +
      `<td>${escapeHtml(row.method)}</td><td class="status ${escapeHtml(row.status)}">${statusText(row)}</td>` +
      `<td>${refundableText(row)}</td><td>${action}</td></tr>`;
  }).join("");
}

function renderSummary(s) {
  $("s-balance").textContent = money(s.balance);
  $("s-reserved").textContent = money(s.reserved);
  $("s-available").textContent = money(s.available);
  $("s-lifetime").textContent = money(s.lifetime_purchases);
  $("s-tier").textContent = s.tier;
  const free = s.free_model_daily_requests;
  $("s-free").textContent = !free ? "no daily limit"
    : free.remaining === null ? "unlimited" : `${free.remaining} of ${free.limit}`;
  const rules = s.purchase_rules;
  $("refund-rule").textContent = `Unused credits of a purchase are refundable within ` +
    `${rules.refund_window_hours} hours of it; the fee is never refunded, crypto purchases never.`;
  $("add-button").disabled = !s.checkout_available;
  if (!s.checkout_available) $("add-quote").textContent = "Adding credits here is not set up by the operator.";
  const topup = s.auto_topup;
  $("topup-state").textContent = !s.auto_topup_available ? "Auto top-up is not set up by the operator."
    : topup ? `On: when the balance falls below ${money(topup.threshold)}, buy ${money(topup.amount)}` +
      (topup.request_outstanding ? " (a purchase is on its way)." : ".")
    : "Off.";
  if (topup && document.activeElement !== $("topup-threshold") && document.activeElement !== $("topup-amount")) {
    $("topup-threshold").value = topup.threshold;
    $("topup-amount").value = topup.amount;
  }
}

async function refresh() {
  clearTimeout(pollTimer);
  try {
    const [summary, rows] = await Promise.all([api("/api/v1/credits/summary"), api("/api/v1/credits/purchases")]);
    renderSummary(summary.data);
    renderRows(rows.data);
    // A payment lands by the payment side's webhook: look again while one is on its way.
    const waiting = rows.data.some((r) => r.status === "pending" && r.checkout_url) ||
      (summary.data.auto_topup || {}).request_outstanding;
    pollTimer = setTimeout(refresh, waiting ? 1000 : 15000);
  } catch (err) {
    $("error").textContent = "Could not load credits: " + err.message;
  }
}

let quoteTimer = null;
function quote() {
  clearTimeout(quoteTimer);
  checkoutKey = null;
  quoteTimer = setTimeout(async () => {
    const q = new URLSearchParams({amount: $("add-amount").value.trim(), method: $("add-method").value});
    try {
      const answer = (await api("/api/v1/credits/quote?" + q)).data;
      $("add-quote").textContent = `Fee ${money(answer.fee)} · you pay ${money(answer.total_charged)}`;
    } catch (err) {
      $("add-quote").textContent = err.message;
    }
  }, 200);
}

async function addCredits(event) {
  event.preventDefault();
  $("error").textContent = "";
  checkoutKey = checkoutKey || newKey();
  try {
    const row = (await api("/api/v1/credits/checkout", {
      method: "POST", headers: {"Idempotency-Key": checkoutKey},
      body: JSON.stringify({amount: $("add-amount").value.trim(), method: $("add-method").value}),
    })).data;
    if (row.status !== "pending" || row.checkout_url) checkoutKey = null;  // else: ask again
    $("add-result").innerHTML = row.status !== "pending" ? `This purchase is ${escapeHtml(row.status)}.`
      : row.checkout_url ? `Pending: pay ${money(escapeHtml(row.total_charged))} at the ` +
        `<a href="${escapeHtml(row.checkout_url)}" target="_blank" rel="noopener">payment side</a>; ` +
        `the credits show here once it is paid.`
      : "Pending: the payment side has not said where to pay yet; try Add credits again.";
    await refresh();
  } catch (err) {
    $("error").textContent = "Could not add credits: " + err.message;
  }
}

async function refund(button) {
  const {id, refundable, amount, fee} = button.dataset;
  const question = `Refund ${money(refundable)} of this ${money(amount)} purchase?\n` +
    `The fee of ${money(fee)} is kept: fees are never refunded.`;
  if (!window.confirm(question)) return;
  $("error").textContent = "";
  button.disabled = true;
  try {
    const answer = (await api(`/api/v1/credits/purchases/${encodeURIComponent(id)}/refund`, {method: "POST"})).data;
    $("notice").textContent = answer.explanation;
  } catch (err) {
    $("error").textContent = "Could not refund: " + err.message;
  }
  await refresh();
}

async function saveTopup(body) {
  $("error").textContent = "";
  try {
    renderSummary((await api("/api/v1/credits/auto-topup", {method: "PUT", body: JSON.stringify(body)})).data);
  } catch (err) {
    $("error").textContent = "Could not change auto top-up: " + err.message;
  }
}

function show() {
  $("main").hidden = !key();
  if (key()) { refresh(); quote(); }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(STORE, $("api-key").value.trim());
  $("api-key").value = "";
  show();
});
$("forget").addEventListener("click", () => { sessionStorage.removeItem(STORE); show(); });
$("add-amount").addEventListener("input", quote);
$("add-method").addEventListener("change", quote);
$("add-form").addEventListener("submit", addCredits);
$("purchases").addEventListener("click", (event) => {
  const button = event.target.closest("button.refund");
  if (button) refund(button);
});
$("topup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveTopup({threshold: $("topup-threshold").value.trim(), amount: $("topup-amount").value.trim()});
});
$("topup-off").addEventListener("click", () => {
  $("topup-threshold").value = "";
  $("topup-amount").value = "";
  saveTopup(null);
});
show();
