// polyfuse web panel: plain JavaScript, no build step. Reads the OpenAI-format SSE stream of
// POST /v1/chat/completions; progress arrives as SSE comment lines ": polyfuse {json}".
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "polyfuse.serverKey";
const COLORS = ["#3056d3", "#12b76a", "#f79009", "#7a5af8", "#ee46bc", "#0ba5ec", "#667085", "#b42318"];
let config = null;
let controller = null;
let members = {};

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadConfig() {
  const response = await fetch("/v1/fusion/config", { headers: headers() });
  if (response.status === 401) {
    $("auth").hidden = false;
    showError("This server needs a key: enter it below, then press Fuse.");
    return;
  }
  const body = await response.json();
  if (!response.ok) { showError(body.error ? body.error.message : "could not load the configuration"); return; }
  config = body;
  fill($("preset"), Object.keys(config.presets), config.default_preset);
  fill($("mode"), config.modes);
  fill($("judge"), ["(none)", ...config.models]);
  fill($("judge-method"), ["(preset)", ...(config.judge_methods || [])], "(preset)");
  const pool = $("pool");
  pool.textContent = "";
  for (const model of config.models) {
    const label = el("label");
    const box = el("input");
    box.type = "checkbox";
    box.value = model;
    label.append(box, " " + model);
    pool.append(label);
  }
  applyPreset();
}

function fill(select, values, selected) {
  select.textContent = "";
  for (const v of values) {
    const option = el("option", null, v);
    option.value = v;
    select.append(option);
  }
  if (selected !== undefined) select.value = selected;
}

function applyPreset() {
  const preset = config.presets[$("preset").value];
  if (!preset) return;
  $("mode").value = preset.mode;
  $("judge").value = preset.judge || "(none)";
  const wanted = new Set(preset.pool.map((m) => m.replace(/#\d+$/, "")));
  for (const box of $("pool").querySelectorAll("input")) box.checked = wanted.has(box.value);
  $("pool-extra").value = preset.pool.filter((m) => !config.models.includes(m.replace(/#\d+$/, ""))).join(",");
}

function chosenPool() {
  const pool = [...$("pool").querySelectorAll("input:checked")].map((b) => b.value);
  for (const extra of $("pool-extra").value.split(",")) if (extra.trim()) pool.push(extra.trim());
  return pool;
}

function resetView() {
  members = {};
  $("members").textContent = "";
  $("answer").textContent = "";
  $("totals").textContent = "";
  $("scores").tBodies[0].textContent = "";
  $("consensus").textContent = "";
  $("contradictions").textContent = "";
  $("verdict-method").textContent = "";
  $("verdict-notes").textContent = "";
  $("analysis-view").hidden = true;
  $("split").textContent = "";
  $("agreement-fill").style.width = "0";
  $("agreement-text").textContent = "";
  $("judge-status").textContent = "";
  $("verdict").hidden = true;
  $("answer-section").hidden = true;
  $("members-section").hidden = true;
  showError("");
}

function column(id, model) {
  if (members[id]) return members[id];
  const card = el("article", "member");
  card.dataset.member = id;
  const parts = {
    card,
    name: el("div", "name", id),
    model: el("div", "model", model || ""),
    state: el("div", "state", "waiting"),
    text: el("div", "text"),
    reason: el("div", "reason"),
    stats: el("div", "stats"),
  };
  card.append(parts.name, parts.model, parts.state, parts.text, parts.reason, parts.stats);
  $("members").append(card);
  $("members-section").hidden = false;
  members[id] = parts;
  return parts;
}

function money(cost) {
  return cost === null || cost === undefined ? "cost n/a" : "$" + Number(cost).toFixed(6);
}

function finishColumn(c) {
  const col = column(c.member, c.model);
  col.card.classList.toggle("failed", c.status !== "ok");
  col.state.className = "state " + (c.status === "ok" ? "ok" : "failed");
  col.state.textContent = c.status === "ok" ? `ok (round ${c.round})` : c.status;
  if (c.status === "ok") { col.text.textContent = c.text; col.reason.textContent = ""; }
  else col.reason.textContent = c.error || c.status;
  const tokens = c.usage ? `${c.usage.prompt_tokens}+${c.usage.completion_tokens} tokens` : "";
  col.stats.textContent = `${c.latency.toFixed(2)} s · ${tokens} · ${money(c.cost)}`;
}

function showVerdict(v, measured) {
  $("verdict").hidden = false;
  for (const id in members) members[id].card.classList.toggle("chosen", id === v.choice);
  const agreement = measured !== undefined ? measured : v.agreement;
  $("agreement-fill").style.width = Math.round(agreement * 100) + "%";
  let text = `agreement ${Math.round(agreement * 100)}%`;
  if (v.judge && !v.judge_failed) text += ` · judge's estimate ${Math.round(v.agreement * 100)}%`;
  if (v.skipped) text += " · judge skipped: the pool agreed";
  if (v.judge_failed) text += ` · judge failed (${v.failure_reason}); fell back to the vote`;
  if (!v.judge) text += " · no judge (vote)";
  $("agreement-text").textContent = text;
  showMethod(v);
  const probability = v.method && v.method !== "json" && v.method !== "vote";
  const body = $("scores").tBodies[0];
  body.textContent = "";
  const split = $("split");
  split.textContent = "";
  const total = v.scores.reduce((s, x) => s + Math.max(0, x.score), 0);
  v.scores.forEach((s, i) => {
    const row = el("tr");
    const score = probability ? `p=${s.score.toFixed(2)}` : String(s.score);
    row.append(el("td", null, `${s.label} = ${s.member}`), el("td", null, score), el("td", null, s.reason));
    body.append(row);
    if (total > 0) {
      const part = el("span", null, s.member);
      part.style.width = (100 * Math.max(0, s.score) / total) + "%";
      part.style.background = COLORS[i % COLORS.length];
      part.title = `${s.member}: ${s.score}`;
      split.append(part);
    }
  });
  $("scores").hidden = v.scores.length === 0;
  fillList($("consensus"), v.consensus);
  fillList($("contradictions"), v.contradictions);
  showAnalysis(v.analysis);
}

// How the verdict was reached (method, confidence) and what it says about itself: a fallback to the JSON
// verdict, a written answer that was rejected, repairs that kept it coherent.
function showMethod(v) {
  let text = "";
  if (v.judge && v.method) text = `chosen by ${v.method}`;
  if (v.confidence !== null && v.confidence !== undefined) text += ` · confidence ${Math.round(v.confidence * 100)}%`;
  if (v.choice && v.judge) text += ` · chose ${v.choice}`;
  $("verdict-method").textContent = text;
  const notes = $("verdict-notes");
  notes.textContent = "";
  if (v.method_note) notes.append(el("li", "method-note", v.method_note));
  if (v.writer_rejected) {
    notes.append(el("li", "writer-rejected",
      `writer rejected: the written answer "${v.rejected_answer || ""}" did not agree with ${v.choice}; ` +
      "the chosen candidate was returned"));
  }
  for (const n of v.notes || []) if (!v.writer_rejected || !n.endsWith("the chosen candidate was returned")) notes.append(el("li", "repair", n));
}

function showAnalysis(a) {
  $("analysis-view").hidden = !a;
  if (!a) return;
  if (a.consensus.length) fillList($("consensus"), a.consensus);
  const box = $("analysis-contradictions");
  box.textContent = "";
  for (const c of a.contradictions) {
    const wrap = el("div", "stance");
    wrap.append(el("p", null, c.point));
    const table = el("table");
    const tbody = el("tbody");
    for (const [member, stance] of Object.entries(c.stances)) {
      const row = el("tr");
      row.append(el("td", null, member), el("td", null, stance));
      tbody.append(row);
    }
    table.append(tbody);
    wrap.append(table);
    box.append(wrap);
  }
  if (!a.contradictions.length) box.append(el("p", "muted", "—"));
  fillList($("analysis-coverage"), a.partial_coverage.map((c) => `${c.point} (${c.members.join(", ") || "?"})`));
  const insights = [];
  for (const [member, points] of Object.entries(a.unique_insights)) for (const p of points) insights.push(`${member}: ${p}`);
  fillList($("analysis-insights"), insights);
  fillList($("analysis-blind-spots"), a.blind_spots);
}

function fillList(list, items) {
  list.textContent = "";
  for (const item of items.length ? items : ["—"]) list.append(el("li", null, item));
}

function onProgress(e) {
  switch (e.type) {
    case "run_started":
      for (const [id, model] of Object.entries(e.data.members)) column(id, model);
      if (e.data.judge) $("judge-status").textContent = `judge ${e.data.judge}`;
      break;
    case "member_started": {
      const col = column(e.member, e.model);
      col.state.className = "state running";
      col.state.textContent = `running (round ${e.round})…`;
      if (e.round > 0) col.text.textContent = "";
      break;
    }
    case "member_delta":
      column(e.member).text.textContent += e.text;
      break;
    case "member_finished":
    case "member_failed":
    case "candidate_checked":
      finishColumn(e.candidate);
      break;
    case "judge_started":
      $("verdict").hidden = false;
      $("judge-status").textContent = `judging with ${e.model} (attempt ${e.data.attempt})…`;
      break;
    case "judge_finished":
      $("judge-status").textContent = e.data.ok ? `judge ${e.model}` : `judge ${e.model} failed: ${e.data.error}`;
      break;
    case "verdict":
      showVerdict(e.verdict);
      break;
    case "answer_reset":
      $("answer").textContent = "";
      break;
  }
}

function onChunk(chunk) {
  if (chunk.error) { showError(chunk.error.message); return; }
  const choice = chunk.choices && chunk.choices[0];
  if (choice && choice.delta && choice.delta.content) {
    $("answer-section").hidden = false;
    $("answer").textContent += choice.delta.content;
  }
  if (chunk.fusion) {
    const f = chunk.fusion;
    showVerdict(f.verdict, f.agreement);
    for (const c of f.candidates) finishColumn(c);
    for (const failed of f.failed_models) {
      const col = column(failed.member, failed.model);
      if (!col.reason.textContent) { col.reason.textContent = failed.reason; col.card.classList.add("failed"); }
    }
    const u = chunk.usage;
    $("totals").textContent = `${u.total_tokens} tokens · ${money(u.cost)} · wall ${f.wall_time.toFixed(2)} s · ` +
      `overhead ${(f.overhead * 1000).toFixed(1)} ms`;
    $("answer-section").hidden = false;
  }
}

function handleBlock(block) {
  for (const line of block.split("\n")) {
    if (line.startsWith(": polyfuse ")) onProgress(JSON.parse(line.slice(11)));
    else if (line.startsWith("data: ") && line !== "data: [DONE]") onChunk(JSON.parse(line.slice(6)));
  }
}

async function run(event) {
  event.preventDefault();
  const key = $("server-key").value.trim();
  if (key) localStorage.setItem(KEY, key);
  if (!config) { await loadConfig(); if (!config) return; }
  resetView();
  const judge = $("judge").value;
  const maxTokens = parseInt($("max-tokens").value, 10);
  const body = {
    model: "polyfuse/" + $("preset").value,
    messages: [{ role: "user", content: $("prompt").value }],
    stream: true,
    fusion: { pool: chosenPool(), mode: $("mode").value, judge: judge === "(none)" ? null : judge, progress: "full" },
  };
  const method = $("judge-method").value;
  if (method && method !== "(preset)") body.fusion.judge_method = method;
  if ($("analysis").checked) body.fusion.analysis = true;
  if (maxTokens > 0) body.max_tokens = maxTokens;
  controller = new AbortController();
  $("run").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "running…";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => null);
      showError(err && err.error ? `${response.status}: ${err.error.message}` : `HTTP ${response.status}`);
      if (response.status === 401) $("auth").hidden = false;
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        handleBlock(buffer.slice(0, cut));
        buffer = buffer.slice(cut + 2);
      }
    }
    $("status").textContent = "done";
  } catch (err) {
    if (err.name === "AbortError") $("status").textContent = "stopped";
    else showError(String(err));
  } finally {
    $("run").disabled = false;
    $("stop").disabled = true;
    if ($("status").textContent === "running…") $("status").textContent = "";
  }
}

$("ask").addEventListener("submit", run);
$("stop").addEventListener("click", () => controller && controller.abort());
$("preset").addEventListener("change", applyPreset);
loadConfig().catch((err) => showError(String(err)));
