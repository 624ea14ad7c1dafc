// conan-rag's search page: searches POST /v1/retrieve once per query and sorts the hits into
// "kept" and "cut" by the threshold slider on the client (no new search while it moves), so a
// person sees what each cosine threshold would keep. Hits arrive in the mode's order; the score
// compared with the threshold is the true cosine in every mode, as RetrievalOptions.threshold.
// The URL carries the search (?q=...&mode=hybrid&k=5&threshold=0.4): a link reproduces it.
"use strict";

const $ = (id) => document.getElementById(id);
const OFF = -1; // the slider's lowest value keeps every hit: no threshold
let hits = [];
let sweep = null;
let searched = null; // the last search's query, mode and k (the URL carries them)

function headers() {
  const key = sessionStorage.getItem("conan-rag-key") || $("api-key").value;
  const sent = { "Content-Type": "application/json" };
  if (key) sent.Authorization = "Bearer " + key;
  return sent;
}

async function call(path, body) {
  const init = body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) };
  const answer = await fetch(path, init);
  const data = await answer.json().catch(() => ({}));
  if (answer.status === 401) {
    $("key-label").hidden = false;
    sessionStorage.removeItem("conan-rag-key");
  }
  if (!answer.ok) {
    const message = (data.error && data.error.message) || answer.statusText;
    throw new Error(answer.status + ": " + message);
  }
  return data;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function threshold() {
  return Number($("threshold").value);
}

function fixed(value) {
  return value === null || value === undefined ? "-" : Number(value).toFixed(4);
}

function hitItem(hit) {
  const item = document.createElement("li");
  item.className = "hit";
  item.dataset.id = hit.id;
  item.dataset.score = String(hit.score);
  const scores = document.createElement("div");
  scores.className = "scores";
  let line = "cosine " + fixed(hit.score);
  if (hit.lexical_score !== null) line += " · bm25 " + fixed(hit.lexical_score);
  if (hit.fused_score !== null) line += " · fused " + fixed(hit.fused_score);
  scores.textContent = line;
  const source = document.createElement("div");
  source.className = "source";
  const meta = hit.metadata || {};
  source.textContent = (meta.source || meta.doc_id || hit.id) +
    (meta.title ? " — " + meta.title : "");
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = hit.text;
  item.append(scores, source, text);
  return item;
}

function remember() {
  if (!searched) return;
  const params = new URLSearchParams(searched);
  if (threshold() > OFF) params.set("threshold", threshold());
  history.replaceState(null, "", "?" + params);
}

function render() {
  remember();
  const t = threshold();
  $("threshold-value").textContent = t <= OFF ? "off" : t.toFixed(2);
  const kept = [], cut = [];
  for (const hit of hits) (t <= OFF || hit.score >= t ? kept : cut).push(hitItem(hit));
  $("kept").replaceChildren(...kept);
  $("cut").replaceChildren(...cut);
  $("kept-count").textContent = hits.length ? "(" + kept.length + ")" : "";
  $("cut-count").textContent = hits.length ? "(" + cut.length + ")" : "";
  drawSweep();
}

async function search(event) {
  if (event) event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return say("Type a question first.", true);
  const options = { k: Number($("k").value), retrieval: $("mode").value };
  searched = { q: query, mode: options.retrieval, k: options.k };
  say("Searching…");
  try {
    const started = performance.now();
    const answer = await call("v1/retrieve", { query: query, options: options });
    hits = answer.data[0].hits;
    const ms = Math.round(performance.now() - started);
    say(hits.length + " hits (" + options.retrieval + ", k=" + options.k + ") in " + ms + " ms");
  } catch (error) {
    hits = [];
    say(error.message, true);
  }
  render();
}

function svgNode(name, attributes) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function drawSweep() {
  if (!sweep || !sweep.length) return;
  $("sweep-box").hidden = false;
  const box = { left: 40, right: 470, top: 10, bottom: 230 };
  const ts = sweep.map((row) => row.threshold);
  const lo = Math.min(...ts), hi = Math.max(...ts);
  const x = (t) => box.left + (hi > lo ? (t - lo) / (hi - lo) : 0.5) * (box.right - box.left);
  const y = (v) => box.bottom - v * (box.bottom - box.top);
  const nodes = [svgNode("rect", { x: box.left, y: box.top, width: box.right - box.left,
    height: box.bottom - box.top, fill: "none", stroke: "#d5dbe1" })];
  for (const [name, color] of [["precision", "#0b57d0"], ["recall", "#b3261e"], ["f1", "#188038"]]) {
    const points = sweep.filter((row) => row[name] !== null)
      .map((row) => x(row.threshold).toFixed(1) + "," + y(row[name]).toFixed(1));
    nodes.push(svgNode("polyline", { points: points.join(" "), fill: "none", stroke: color,
      "stroke-width": 2, "data-metric": name }));
  }
  const labels = [[x(lo), 250, "start", lo.toFixed(2)], [x(hi), 250, "end", hi.toFixed(2)],
    [(box.left + box.right) / 2, 250, "middle", "cosine threshold"],
    [box.left - 6, box.bottom + 4, "end", "0"], [box.left - 6, box.top + 8, "end", "1"]];
  for (const [lx, ly, anchor, text] of labels) {
    const label = svgNode("text", { x: lx, y: ly, "text-anchor": anchor, "font-size": 12 });
    label.textContent = text;
    nodes.push(label);
  }
  const t = threshold();
  if (t > OFF && t >= lo && t <= hi) {
    nodes.push(svgNode("line", { id: "sweep-threshold", x1: x(t), x2: x(t), y1: box.top,
      y2: box.bottom, stroke: "#1d232a", "stroke-dasharray": "4 3" }));
  }
  $("sweep").replaceChildren(...nodes);
}

async function describe() {
  try {
    const entry = (await call("v1/collections")).data[0];
    $("collection").textContent = "Collection " + entry.name + ": " +
      entry.chunks.toLocaleString() + " chunks, model " + entry.model_id;
    sweep = entry.sweep ? entry.sweep.rows : null;
    if (entry.sweep) {
      const about = entry.sweep;
      $("sweep-about").textContent = [about.dataset, about.split, about.mode, about.retrieval,
        about.model].filter(Boolean).join(", ");
    }
    drawSweep();
  } catch (error) {
    $("collection").textContent = "No collection: " + error.message;
  }
}

function start() {
  const params = new URLSearchParams(location.search);
  if (params.has("q")) $("query").value = params.get("q");
  if (params.has("mode")) $("mode").value = params.get("mode");
  if (params.has("k")) $("k").value = params.get("k");
  if (params.has("threshold")) $("threshold").value = params.get("threshold");
  $("search-form").addEventListener("submit", search);
  $("threshold").addEventListener("input", render);
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("conan-rag-key", $("api-key").value);
    describe();
  });
  render();
  describe().then(() => { if ($("query").value.trim()) search(); });
}

start();
