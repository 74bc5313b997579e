// The operations page (served at <mount>/dashboard): the hub's own GET /tasks and /events
// through the browser module. Per event: O(1) bookkeeping and a flag; the DOM is
// updated at most once per animation frame, and only the visible table rows exist.
import { followTask, followTasks, isTerminal, resolve } from "./sse-tasks.js";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled"];
const ROW = 32; // px, as .row's height in dashboard.css
const HOUR = 60;
const $ = (id) => document.getElementById(id);

const tasks = new Map(); // id -> snapshot
let order = []; // ids, oldest first (the table shows it reversed)
let sorted = true;
const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
const minutes = new Map(); // epoch minute -> {ok, bad, qSum, qN, rSum, rN}
const counted = new Set(); // ids already in the per-minute figures
const names = new Set();
let view = []; // the filtered ids, newest first
let fresh = []; // ids to put in front of view at the next paint (oldest first)
let dirty = { counts: true, rows: true, view: true, charts: true, detail: false, names: false, older: true };
let frame = 0;
let chartsDrawn = -Infinity;
let chartTimer = 0;
let selected = null; // id of the task in the detail view
let detailFollower = null;
let follower = null;
const filter = { state: "", name: "", tag: "", id: "" };

// At most ~10 paints a second from the streams (a person cannot read faster, and at
// 100 changes/s each paint would otherwise redo every visible row); input paints at once.
const MIN_GAP = 100; // ms
let painted = -Infinity;
let waiting = 0;

function schedule(urgent = false) {
  if (frame) return;
  const wait = MIN_GAP - (performance.now() - painted);
  if (urgent || wait <= 0) {
    clearTimeout(waiting);
    waiting = 0;
    frame = requestAnimationFrame(paint);
  } else if (!waiting) {
    waiting = setTimeout(() => {
      waiting = 0;
      schedule(true);
    }, wait);
  }
}

function minuteOf(iso) {
  return Math.floor(Date.parse(iso) / 60000);
}

function account(task) {
  if (!isTerminal(task) || counted.has(task.id) || !task.finished_at) return;
  counted.add(task.id);
  const m = minuteOf(task.finished_at);
  let b = minutes.get(m);
  if (!b) minutes.set(m, (b = { ok: 0, bad: 0, qSum: 0, qN: 0, rSum: 0, rN: 0 }));
  if (task.state === "failed") b.bad++;
  else if (task.state === "succeeded") b.ok++;
  if (task.started_at) {
    const start = Date.parse(task.started_at);
    b.qSum += (start - Date.parse(task.created_at)) / 1000;
    b.qN++;
    b.rSum += (Date.parse(task.finished_at) - start) / 1000;
    b.rN++;
  }
  dirty.charts = true;
}

function onUpdate(task) {
  const before = tasks.get(task.id);
  if (before) {
    counts[before.state]--;
  } else {
    const last = order.length ? tasks.get(order[order.length - 1]) : null;
    if (last && last.created_at > task.created_at) sorted = false;
    order.push(task.id);
    if (sorted && !dirty.view && matches(task)) fresh.push(task.id); // O(1): prepended at paint
    else if (!sorted || matches(task)) dirty.view = true;
    if (!names.has(task.name)) {
      names.add(task.name);
      dirty.names = true;
    }
  }
  tasks.set(task.id, task);
  counts[task.state] = (counts[task.state] || 0) + 1;
  account(task);
  if (filter.state && before && before.state !== task.state) dirty.view = true;
  dirty.counts = dirty.rows = true;
  if (task.id === selected) dirty.detail = true;
  schedule();
}

function onReset() {
  exhausted = false;
  tasks.clear();
  order = [];
  sorted = true;
  for (const s of STATES) counts[s] = 0;
  minutes.clear();
  counted.clear();
  dirty = { counts: true, rows: true, view: true, charts: true, detail: true, names: false, older: true };
  schedule();
}

function onStatus(state) {
  if (state === "live") {
    dirty.older = true;
    schedule();
  }
  const el = $("status");
  el.dataset.state = state;
  el.textContent = state;
}

function onError(error) {
  if (error.fatal) onStatus(`stopped (${error.status ?? "error"})`);
}

const PAGE = 1000; // GET /tasks's largest page
let exhausted = false; // every older page is loaded

async function loadOlder() {
  const button = $("older");
  button.disabled = true;
  if (!sorted) {
    computeView();
    dirty.rows = true;
  }
  const oldest = order.length ? order[0] : null;
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (oldest) query.set("before", oldest);
  if (filter.tag) query.set("tag", filter.tag);
  try {
    const response = await fetch(resolve(`tasks?${query}`));
    if (!response.ok) return;
    const page = (await response.json()).tasks;
    for (const task of page) if (!tasks.has(task.id)) onUpdate(task);
    exhausted = page.length < PAGE;
  } finally {
    button.hidden = exhausted;
    button.disabled = false;
  }
}

function start() {
  if (follower) follower.close();
  onReset();
  const query = filter.tag ? { tag: filter.tag } : undefined;
  follower = followTasks({ limit: 1000, query, onUpdate, onReset, onStatus, onError });
}

// -- painting, once per frame ---------------------------------------------------------

function paint() {
  frame = 0;
  painted = performance.now();
  if (dirty.older) {
    $("older").hidden = exhausted || tasks.size < PAGE;
    dirty.older = false;
  }
  if (dirty.counts) {
    for (const s of STATES) $(`count-${s}`).textContent = counts[s];
    $("count-all").textContent = tasks.size;
    dirty.counts = false;
  }
  if (dirty.names) {
    const list = $("names");
    list.replaceChildren(...[...names].sort().map((n) => Object.assign(document.createElement("option"), { value: n })));
    dirty.names = false;
  }
  if (dirty.view) {
    computeView();
    dirty.view = false;
    dirty.rows = true;
  } else if (fresh.length) {
    view = fresh.reverse().concat(view);
    viewChanged();
    dirty.rows = true;
  }
  fresh = [];
  if (dirty.rows) {
    renderRows();
    dirty.rows = false;
  }
  if (dirty.charts) {
    const now = performance.now();
    if (now - chartsDrawn >= 1000) { // per-minute figures: once a second is plenty
      if (minutes.size) chartsDrawn = now; // the first figures are drawn at once
      drawCharts();
      dirty.charts = false;
    } else if (!chartTimer) {
      chartTimer = setTimeout(() => { chartTimer = 0; schedule(); }, 1000 - (now - chartsDrawn));
    }
  }
  if (dirty.detail) {
    renderDetail();
    dirty.detail = false;
  }
}

function computeView() {
  if (!sorted) {
    order.sort((a, b) => {
      const x = tasks.get(a).created_at, y = tasks.get(b).created_at;
      return x < y ? -1 : x > y ? 1 : 0;
    });
    sorted = true;
  }
  const out = [];
  for (let i = order.length - 1; i >= 0; i--) {
    const t = tasks.get(order[i]);
    if (matches(t)) out.push(t.id);
  }
  view = out;
  viewChanged();
}

function matches(t) {
  const { state, name, id } = filter;
  return !(state && t.state !== state) && !(name && t.name !== name) && !(id && !t.id.includes(id));
}

function viewChanged() {
  $("spacer").style.height = `${view.length * ROW}px`;
  $("table").setAttribute("aria-rowcount", String(view.length + 1));
  $("shown").textContent = `${view.length} shown`;
}

const pool = [];

function rowElement(i) {
  let row = pool[i];
  if (!row) {
    row = document.createElement("div");
    row.className = "row";
    row.setAttribute("role", "row");
    row.innerHTML =
      '<span role="cell"><span class="st"></span></span><span role="cell"></span>' +
      '<span role="cell" class="mono"></span><span role="cell" class="p"><span class="bar-p"><i></i></span></span>' +
      '<span role="cell" class="m"></span><span role="cell" class="t"></span><span role="cell" class="c"></span>';
    pool[i] = row;
  }
  return row;
}

function renderRows() {
  const viewport = $("viewport");
  const first = Math.max(0, Math.floor(viewport.scrollTop / ROW) - 5);
  const count = Math.min(view.length - first, Math.ceil(viewport.clientHeight / ROW) + 10);
  const rows = $("rows");
  rows.style.transform = `translateY(${first * ROW}px)`;
  for (let i = 0; i < Math.max(count, 0); i++) {
    const t = tasks.get(view[first + i]);
    const row = rowElement(i);
    if (row.parentNode !== rows) rows.appendChild(row);
    if (row._task === t) continue; // the same snapshot: nothing changed
    row._task = t;
    const c = row.children;
    row.dataset.id = t.id;
    row.setAttribute("aria-rowindex", String(first + i + 2));
    row.setAttribute("aria-selected", String(t.id === selected));
    c[0].firstChild.className = `st ${t.state}`;
    c[0].firstChild.textContent = t.state;
    c[1].textContent = t.name;
    c[1].title = t.name;
    c[2].textContent = t.id;
    c[3].firstChild.firstChild.style.width = `${Math.round((t.progress ?? (t.state === "succeeded" ? 1 : 0)) * 100)}%`;
    c[4].textContent = t.message ?? (t.error ? t.error.message : "");
    c[4].title = c[4].textContent;
    c[5].textContent = Array.isArray(t.tags) ? t.tags.join(", ") : "";
    c[6].textContent = new Date(t.created_at).toLocaleTimeString();
  }
  for (let i = Math.max(count, 0); i < pool.length; i++) {
    if (pool[i].parentNode) {
      pool[i].remove();
      pool[i]._task = null;
    }
  }
}

function drawBars(canvas, series, colours) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600, h = canvas.clientHeight || 120;
  if (canvas.width !== w * dpr) { canvas.width = w * dpr; canvas.height = h * dpr; }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  let max = 0;
  for (const s of series) for (const v of s) max = Math.max(max, v);
  const top = max || 1, slot = (w - 36) / HOUR, bar = Math.max(1, slot / series.length - 1);
  g.fillStyle = "#5d6778";
  g.font = "10px system-ui, sans-serif";
  g.fillText(max ? (max >= 10 ? Math.round(max) : max.toFixed(1)) : "0", 0, 10);
  g.fillText("-60 min", 36, h - 1);
  g.fillText("now", w - 20, h - 1);
  series.forEach((s, k) => {
    g.fillStyle = colours[k];
    for (let i = 0; i < HOUR; i++) {
      if (!s[i]) continue;
      const bh = (s[i] / top) * (h - 16);
      g.fillRect(36 + i * slot + k * (bar + 1), h - 12 - bh, bar, bh);
    }
  });
}

function drawCharts() {
  const now = Math.floor(Date.now() / 60000);
  const ok = new Array(HOUR).fill(0), bad = new Array(HOUR).fill(0);
  const q = new Array(HOUR).fill(0), r = new Array(HOUR).fill(0);
  let sumOk = 0, sumBad = 0;
  for (let i = 0; i < HOUR; i++) {
    const b = minutes.get(now - HOUR + 1 + i);
    if (!b) continue;
    ok[i] = b.ok; bad[i] = b.bad; sumOk += b.ok; sumBad += b.bad;
    q[i] = b.qN ? b.qSum / b.qN : 0;
    r[i] = b.rN ? b.rSum / b.rN : 0;
  }
  const css = getComputedStyle(document.documentElement);
  const col = (n) => css.getPropertyValue(n).trim();
  const done = $("chart-done"), times = $("chart-times");
  drawBars(done, [ok, bad], [col("--succeeded"), col("--failed")]);
  drawBars(times, [q, r], [col("--queued"), col("--running")]);
  done.setAttribute("aria-label", `Last hour: ${sumOk} succeeded, ${sumBad} failed`);
}

// -- the detail view --------------------------------------------------------------------

function fact(dl, term, value) {
  const dt = document.createElement("dt"), dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value ?? "—";
  dl.append(dt, dd);
}

function seconds(a, b) {
  return a && b ? `${((Date.parse(b) - Date.parse(a)) / 1000).toFixed(2)} s` : "—";
}

function renderDetail() {
  const panel = $("detail");
  const t = selected && tasks.get(selected);
  if (!t) return;
  panel.hidden = false;
  $("d-title").textContent = `${t.name} · ${t.id}`;
  const dl = $("d-facts");
  dl.replaceChildren();
  fact(dl, "state", t.state);
  fact(dl, "progress", t.progress == null ? null : `${Math.round(t.progress * 100)} %`);
  fact(dl, "message", t.message);
  fact(dl, "owner", t.owner);
  fact(dl, "created", t.created_at);
  fact(dl, "started", t.started_at);
  fact(dl, "finished", t.finished_at);
  fact(dl, "queue → start", seconds(t.created_at, t.started_at));
  fact(dl, "run", seconds(t.started_at, t.finished_at));
  const tags = $("d-tags");
  tags.replaceChildren(...(Array.isArray(t.tags) ? t.tags : []).map((tag) => Object.assign(document.createElement("span"), { className: "tag", textContent: String(tag) })));
  $("d-metadata").textContent = t.metadata != null ? JSON.stringify(t.metadata, null, 2) : "—";
  $("d-result").textContent = t.error ? `${t.error.type}: ${t.error.message}` : t.result != null ? JSON.stringify(t.result, null, 2) : "—";
  $("d-cancel").disabled = isTerminal(t);
}

function openDetail(id) {
  if (detailFollower) detailFollower.close();
  selected = id;
  const t = tasks.get(id);
  const out = $("d-output");
  out.replaceChildren();
  for (const row of pool) if (row._task) row.setAttribute("aria-selected", String(row._task.id === id));
  dirty.detail = true;
  schedule(true);
  const events = t.links?.events ?? `tasks/${encodeURIComponent(id)}/events`;
  detailFollower = followTask(resolve(events), {
    onUpdate(task) {
      if (!tasks.has(task.id)) onUpdate(task); // the hub-wide stream carries its changes
    },
    onOutput(chunk) {
      const span = document.createElement("span");
      if (chunk.kind === "log") {
        span.className = "log";
        span.textContent = `[${chunk.level ?? "log"}] ${chunk.text}`;
      } else {
        span.textContent = chunk.text;
      }
      out.appendChild(span);
    },
    onReset: () => out.replaceChildren(),
  });
}

async function cancelSelected() {
  const t = selected && tasks.get(selected);
  if (!t) return;
  const button = $("d-cancel");
  button.disabled = true;
  const response = await fetch(resolve(t.links?.self ?? `tasks/${encodeURIComponent(t.id)}`), { method: "DELETE" });
  if (response.ok) onUpdate(await response.json());
  else button.disabled = isTerminal(t);
}

// -- wiring -----------------------------------------------------------------------------

$("rows").addEventListener("click", (event) => {
  const row = event.target.closest(".row");
  if (row && row.dataset.id) openDetail(row.dataset.id);
});
$("viewport").addEventListener("scroll", () => { dirty.rows = true; schedule(true); }, { passive: true });
$("d-close").addEventListener("click", () => {
  if (detailFollower) detailFollower.close();
  detailFollower = null;
  selected = null;
  $("detail").hidden = true;
});
$("d-cancel").addEventListener("click", cancelSelected);
$("older").addEventListener("click", loadOlder);
for (const key of ["state", "name", "id"]) {
  $(`f-${key}`).addEventListener("input", (event) => {
    filter[key] = event.target.value.trim();
    dirty.view = true;
    schedule(true);
  });
}
$("f-tag").addEventListener("change", (event) => {
  filter.tag = event.target.value.trim();
  start();
});
$("filters").addEventListener("submit", (event) => event.preventDefault());
setInterval(() => { dirty.charts = true; schedule(); }, 30000); // the window moves on
window.addEventListener("resize", () => { dirty.rows = dirty.charts = true; schedule(); });
start();
