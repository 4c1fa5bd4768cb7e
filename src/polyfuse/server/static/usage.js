// polyfuse usage page (operators): GET /admin/usage, the same report as `polyfuse usage`.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "polyfuse.serverKey";  // shared with the panel

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function secs(value) {
  return value === null ? "-" : value.toFixed(3) + "s";
}

function accepted(r) {  // editor suggestions, per model only
  const shown = r.suggestions_shown;
  return shown ? `${r.suggestions_accepted}/${shown} (${Math.round((100 * r.suggestions_accepted) / shown)}%)` : "-";
}

async function load(event) {
  if (event) event.preventDefault();
  const key = $("server-key").value.trim();
  if (key) localStorage.setItem(KEY, key);
  const params = new URLSearchParams({ by: $("by").value });
  if ($("since").value.trim()) params.set("since", $("since").value.trim());
  if ($("until").value.trim()) params.set("until", $("until").value.trim());
  const headers = {};
  const stored = localStorage.getItem(KEY);
  if (stored) headers.Authorization = "Bearer " + stored;
  $("status").textContent = "loading…";
  const response = await fetch("/admin/usage?" + params.toString(), { headers });
  const body = await response.json();
  $("status").textContent = "";
  if (!response.ok) {
    $("error").textContent = body.error ? body.error.message : "could not load the usage report";
    $("error").hidden = false;
    return;
  }
  $("error").hidden = true;
  $("group-head").textContent = body.by;
  const rows = $("usage").querySelector("tbody");
  rows.replaceChildren();
  for (const r of body.rows) {
    const tr = document.createElement("tr");
    const name = r.label === r.group ? r.group : r.group + " " + r.label;
    const cost = "$" + r.cost.toFixed(6) + (r.cost_known ? "" : "+?");
    for (const v of [name, r.requests, r.ok, r.refused, r.failed, r.cached, r.prompt_tokens,
                     r.completion_tokens, cost, secs(r.p50), secs(r.p90), accepted(r)]) {
      tr.appendChild(cell(String(v)));
    }
    rows.appendChild(tr);
  }
  $("status").textContent = body.rows.length + " row(s)";
}

$("query").addEventListener("submit", load);
if (localStorage.getItem(KEY)) load();
