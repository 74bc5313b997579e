// The sse-tasks demo page: start tasks, watch them live over ONE EventSource.
//
// It uses the hub's browser module (../sse-tasks.js): first paint from GET tasks, then
// the global stream from the list's cursor with the tasks' output on it, `reset`
// handled, back-off when the stream is refused. What a task wrote before the page
// subscribed (a reload half way through a generation) is replayed from its own stream,
// so each output box shows the whole text once. All URLs the page itself uses are
// relative, so it works wherever the hub is mounted.

import { followTasks, isTerminal } from "../sse-tasks.js";

/** @type {Map<string, {task: any, row: HTMLElement}>} */
const entries = new Map();

const $ = (selector, root = document) => root.querySelector(selector);
const list = $("#tasks");
const template = $("#task-template");

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

function apply(task) {
  let entry = entries.get(task.id);
  if (!entry) {
    const row = template.content.firstElementChild.cloneNode(true);
    row.dataset.id = task.id;
    $(".task-cancel", row).addEventListener("click", () => cancelTask(task.id));
    entry = { task, row };
    entries.set(task.id, entry);
    insertRow(entry);
  } else {
    // Announce endings, not every progress step (a live list would be far too chatty).
    if (isTerminal(task) && !isTerminal(entry.task)) {
      $("#announcer").textContent = `${task.name} ${task.id} ${task.state}`;
    }
    entry.task = task;
  }
  render(entry);
  $("#empty").hidden = entries.size > 0;
}

/** One chunk of a task's output: text into its output box, log lines into its log. */
function showOutput(chunk) {
  const entry = entries.get(chunk.id);
  if (!entry) return; // not listed (older than the first paint's limit)
  if (chunk.kind === "output") {
    const box = $(".task-output", entry.row);
    box.append(chunk.text);
    box.hidden = false;
  } else {
    const line = document.createElement("li");
    line.className = `level-${chunk.level || "info"}`;
    line.textContent = chunk.text;
    const log = $(".task-log", entry.row);
    log.append(line);
    log.hidden = false;
  }
}

function clearAll() {
  entries.clear();
  list.replaceChildren();
  $("#empty").hidden = false;
}

// --- the stream ------------------------------------------------------------------

function showStatus(state, retryIn) {
  if (state === "live") setConnection("live", "Live");
  else if (state === "reconnecting") setConnection("reconnecting", "Reconnecting…");
  else if (state === "offline") setConnection("offline", `Offline — retrying in ${Math.round(retryIn / 1000)} s`);
}

followTasks({
  output: true,
  onUpdate: apply,
  onOutput: showOutput,
  // The server could not resume: drop everything; the current snapshots follow.
  onReset: clearAll,
  onStatus: showStatus,
});

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
    if (!entries.has(task.id)) apply(task); // the stream brings every change after this
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

