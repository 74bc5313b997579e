// The sse-tasks demo page: start tasks, watch them live over ONE EventSource.
//
// First paint comes from GET tasks, whose `cursor` is the event log's position when the
// list was taken; the stream then starts at that cursor (`events?last_event_id=…`), so
// nothing that happens in between is missed. The browser resumes by itself with the
// Last-Event-ID header after a dropped connection; when the server refuses the stream
// (e.g. 503) EventSource gives up, so we back off and open a new one from the last id.
//
// Event ids are opaque: the server guarantees order and no duplicates within a stream
// and across resumes. What the page must reconcile is the list against the replay that
// follows it (the replay may start before the list was taken): a task never goes back
// to an earlier state, a terminal task never changes, and a task that only the list
// has shown never goes back in progress. All URLs are relative, so the page works
// wherever the hub is mounted.

const EVENT_TYPES = [
  "task.queued",
  "task.running",
  "task.progress",
  "task.succeeded",
  "task.failed",
  "task.cancelled",
];
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, cancelled: 2 };
const MIN_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;

/** @type {Map<string, {task: any, eventId: string | null, fromList: boolean, row: HTMLElement}>} */
const entries = new Map();
let source = null;
let resumeFrom = null; // the id to resume from when a new EventSource is needed
let retryMs = MIN_RETRY_MS;
let retryTimer = null;

const $ = (selector, root = document) => root.querySelector(selector);
const list = $("#tasks");
const template = $("#task-template");

function isTerminal(task) {
  return RANK[task.state] === 2;
}

function setConnection(state, text) {
  const el = $("#connection");
  el.dataset.state = state;
  el.textContent = text;
}

// --- rendering -------------------------------------------------------------------

function seconds(from, to) {
  if (!from) return null;
  const end = to ? Date.parse(to) : Date.now();
  return Math.max(0, (end - Date.parse(from)) / 1000);
}

function formatDuration(task) {
  const s = seconds(task.started_at || (isTerminal(task) ? task.created_at : null), task.finished_at);
  if (s === null) return "";
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function render(entry) {
  const { task, row } = entry;
  row.dataset.state = task.state;
  $(".task-name", row).textContent = task.name;
  $(".task-id", row).textContent = task.id;
  $(".task-state", row).textContent = task.state;
  $(".task-duration", row).textContent = formatDuration(task);

  const bar = $(".task-bar", row);
  let percent = task.progress === null || task.progress === undefined ? null : task.progress * 100;
  if (task.state === "succeeded") percent = 100;
  if (percent === null) {
    bar.removeAttribute("aria-valuenow"); // indeterminate
    bar.classList.toggle("indeterminate", task.state === "running");
    $(".task-fill", row).style.width = "0%";
    $(".task-percent", row).textContent = "";
  } else {
    const rounded = Math.round(percent);
    bar.setAttribute("aria-valuenow", String(rounded));
    bar.classList.remove("indeterminate");
    $(".task-fill", row).style.width = `${percent}%`;
    $(".task-percent", row).textContent = `${rounded} %`;
  }
  $(".task-message", row).textContent = task.message || "";

  const outcome = $(".task-outcome", row);
  if (task.state === "failed" && task.error) {
    outcome.textContent = `${task.error.type}: ${task.error.message}`;
    outcome.className = "task-outcome error";
  } else if (task.state === "succeeded") {
    outcome.textContent = `Result: ${JSON.stringify(task.result)}`;
    outcome.className = "task-outcome result";
  } else {
    outcome.textContent = "";
    outcome.className = "task-outcome";
  }
  const cancel = $(".task-cancel", row);
  cancel.hidden = isTerminal(task);
  cancel.setAttribute("aria-label", `Cancel ${task.name} ${task.id}`);
  bar.setAttribute("aria-label", `Progress of ${task.name} ${task.id}`);
}

function insertRow(entry) {
  // Newest first, by creation time.
  const created = entry.task.created_at;
  for (const other of list.children) {
    const otherEntry = entries.get(other.dataset.id);
    if (otherEntry && otherEntry.task.created_at < created) {
      list.insertBefore(entry.row, other);
      return;
    }
  }
  list.append(entry.row);
}

function apply(task, eventId, fromList) {
  let entry = entries.get(task.id);
  if (!entry) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.id = task.id;
    $(".task-cancel", row).addEventListener("click", () => cancelTask(task.id));
    entry = { task, eventId, fromList, row };
    entries.set(task.id, entry);
    insertRow(entry);
  } else {
    // Announce endings, not every progress step (a live list would be far too chatty).
    if (isTerminal(task) && !isTerminal(entry.task)) {
      $("#announcer").textContent = `${task.name} ${task.id} ${task.state}`;
    }
    entry.task = task;
    entry.eventId = eventId;
    entry.fromList = entry.fromList && fromList;
  }
  render(entry);
  $("#empty").hidden = entries.size > 0;
}

function clearAll() {
  entries.clear();
  list.replaceChildren();
  $("#empty").hidden = false;
}

/** True if `task` is older than what the page shows (or the same event again). */
function isStale(entry, task, eventId) {
  const current = entry.task;
  if (eventId && entry.eventId === eventId) return true;
  if (isTerminal(current)) return true;
  if (RANK[task.state] < RANK[current.state]) return true;
  if (entry.fromList && task.state === current.state && (task.progress ?? -1) < (current.progress ?? -1)) {
    return true;
  }
  return false;
}

// --- the stream ------------------------------------------------------------------

function onTaskEvent(event) {
  const task = JSON.parse(event.data);
  if (event.lastEventId) resumeFrom = event.lastEventId;
  const entry = entries.get(task.id);
  if (entry && isStale(entry, task, event.lastEventId)) return;
  apply(task, event.lastEventId || null, false);
}

function connect() {
  clearTimeout(retryTimer);
  const url = resumeFrom ? `events?last_event_id=${encodeURIComponent(resumeFrom)}` : "events";
  source = new EventSource(url);
  for (const type of EVENT_TYPES) source.addEventListener(type, onTaskEvent);
  // The server could not resume: drop everything; the current snapshots follow.
  source.addEventListener("reset", clearAll);
  source.addEventListener("open", () => {
    retryMs = MIN_RETRY_MS;
    setConnection("live", "Live");
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      source.close();
      retryLater(connect);
    } else {
      setConnection("reconnecting", "Reconnecting…");
    }
  });
}

function retryLater(action) {
  const delay = retryMs * (0.75 + Math.random() / 2);
  retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
  setConnection("offline", `Offline — retrying in ${Math.round(delay / 1000)} s`);
  retryTimer = setTimeout(action, delay);
}

async function start() {
  try {
    const response = await fetch("tasks?limit=200", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`GET tasks answered ${response.status}`);
    const body = await response.json();
    clearAll();
    for (const task of body.tasks) apply(task, null, true);
    resumeFrom = body.cursor;
  } catch (error) {
    retryLater(start);
    return;
  }
  connect();
}

// --- actions ---------------------------------------------------------------------

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error.message;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function showError(text) {
  const el = $("#form-error");
  el.textContent = text;
  el.hidden = !text;
}

async function submitTask(form) {
  const params = {};
  for (const input of form.querySelectorAll("input")) {
    if (input.value === "") continue;
    params[input.name] = input.type === "number" ? Number(input.value) : input.value;
  }
  showError("");
  try {
    const response = await fetch("tasks", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ name: form.dataset.task, params }),
    });
    if (!response.ok) {
      showError(`Could not start ${form.dataset.task}: ${await errorMessage(response)}`);
      return;
    }
    const task = await response.json();
    const entry = entries.get(task.id);
    if (!entry) apply(task, null, true);
  } catch (error) {
    showError(`Could not start ${form.dataset.task}: ${error.message}`);
  }
}

async function cancelTask(taskId) {
  showError("");
  try {
    const response = await fetch(`tasks/${encodeURIComponent(taskId)}`, {
      method: "DELETE",
      headers: { Accept: "application/json" },
    });
    // 409: it finished first; the stream brings its final state either way.
    if (!response.ok && response.status !== 409) {
      showError(`Could not cancel ${taskId}: ${await errorMessage(response)}`);
    }
  } catch (error) {
    showError(`Could not cancel ${taskId}: ${error.message}`);
  }
}

for (const form of document.querySelectorAll("form.start")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submitTask(form);
  });
}

// Durations of running tasks tick without waiting for an event.
setInterval(() => {
  for (const entry of entries.values()) {
    if (entry.task.state === "running") $(".task-duration", entry.row).textContent = formatDuration(entry.task);
  }
}, 500);

start();
