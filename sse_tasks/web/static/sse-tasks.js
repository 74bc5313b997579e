// sse-tasks in the browser: follow one task, or every task a page shows, over
// Server-Sent Events. An ES module with no dependency and no build step, served by the
// hub at <mount>/sse-tasks.js; its types are in sse-tasks.d.ts next to it.
//
//   import { followTask, followTasks } from "https://hub.example/jobs/sse-tasks.js";
//
// Every URL given to this module is resolved against the hub that served it (derived
// from import.meta.url), not against the page: a snapshot's links ("/jobs/tasks/<id>/
// events") therefore work from a page on another origin, once the hub allows that
// origin by CORS (TaskHub(cors_origins=[...])). An absolute URL is used as it is.

/** The hub's base URL (its mount point, ending in "/"): where this module was served. */
export const hubUrl = new URL(".", import.meta.url).href;

const STATE_EVENTS = [
  "task.queued",
  "task.running",
  "task.progress",
  "task.succeeded",
  "task.failed",
  "task.cancelled",
];
const OUTPUT_EVENT = "task.output";
const RANK = { queued: 0, running: 1, succeeded: 2, failed: 2, cancelled: 2 };
const MIN_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;
const FATAL = new Set([400, 401, 403, 404, 410]); // retrying cannot help

/** True once a task's state can never change again. */
export function isTerminal(task) {
  return RANK[task.state] === 2;
}

/** `url` resolved against the hub (absolute URLs are kept as they are). */
export function resolve(url, base = hubUrl) {
  return new URL(String(url), base);
}

function withQuery(url, params) {
  const result = new URL(url);
  for (const [name, value] of Object.entries(params)) {
    if (value === null || value === undefined) result.searchParams.delete(name);
    else if (Array.isArray(value)) {
      result.searchParams.delete(name);
      for (const item of value) result.searchParams.append(name, String(item));
    } else result.searchParams.set(name, String(value));
  }
  return result;
}

function call(callback, ...args) {
  if (typeof callback === "function") callback(...args);
}

/** Error objects handed to onError: `status` (HTTP, or null for a network failure), `fatal`. */
function streamError(message, status, fatal, retryIn) {
  const error = new Error(message);
  error.status = status;
  error.fatal = fatal;
  error.retryIn = retryIn;
  return error;
}

/** An answer's Retry-After in milliseconds (whole seconds only; an HTTP date is ignored), or null. */
function retryAfter(response) {
  const header = response.headers.get("Retry-After");
  return header !== null && /^\d+$/.test(header.trim()) ? Number(header.trim()) * 1000 : null;
}

/**
 * Why a stream was refused: EventSource does not tell, so ask once more with fetch and
 * read the answer's status and Retry-After (the stream it may open is dropped at once).
 */
async function probe(url, credentials) {
  const controller = new AbortController();
  try {
    const response = await fetch(url, {
      headers: { Accept: "text/event-stream" },
      credentials: credentials ? "include" : "same-origin",
      cache: "no-store",
      signal: controller.signal,
    });
    return { status: response.status, retryAfterMs: retryAfter(response) };
  } catch {
    return { status: null, retryAfterMs: null }; // network failure, or refused by CORS
  } finally {
    controller.abort();
  }
}

/**
 * An EventSource on `target`, wired the same way for both ways of following: state
 * events to onState, output chunks to onChunk, `reset` to onReset; "live" once it opens
 * (and the back-off starts over), "reconnecting" while the browser retries by itself
 * (sending Last-Event-ID). When the browser gives up (a refused stream) it is closed and
 * onRefused(target) is told; EventSource does not say why (see probe).
 */
function openSource(target, { withCredentials, retry, isClosed, onStatus, onState, onChunk, onReset, onRefused }) {
  const source = new EventSource(target, { withCredentials });
  for (const type of STATE_EVENTS) source.addEventListener(type, onState);
  source.addEventListener(OUTPUT_EVENT, onChunk);
  source.addEventListener("reset", onReset);
  source.addEventListener("open", () => {
    retry.reset();
    call(onStatus, "live");
  });
  source.addEventListener("error", () => {
    if (isClosed()) return;
    if (source.readyState !== EventSource.CLOSED) {
      call(onStatus, "reconnecting");
      return;
    }
    source.close();
    onRefused(target);
  });
  return source;
}

/** Exponential back-off, 1 s → 30 s with jitter; reset by `reset()` once a stream opens. */
function backoff() {
  let next = MIN_RETRY_MS;
  return {
    delay(retryAfterMs) {
      const jittered = next * (0.75 + Math.random() / 2);
      next = Math.min(next * 2, MAX_RETRY_MS);
      return retryAfterMs === null || retryAfterMs === undefined ? jittered : Math.max(retryAfterMs, 0);
    },
    reset() {
      next = MIN_RETRY_MS;
    },
  };
}

/**
 * Follow one task on its own stream (a snapshot's `links.events`).
 *
 * onUpdate(task): the snapshot, then every change. onOutput(chunk): each output or log
 * chunk ({id, seq, kind, level?, text}) once and in order, the retained ones first.
 * onReset(): the server could not resume; drop the output shown, it restarts at seq 0.
 * onDone(task): the terminal snapshot; the stream is closed. onError(error): a refused
 * stream (error.status, error.fatal; retried after error.retryIn ms unless fatal).
 * onStatus(state, retryInMs?): "connecting" | "live" | "reconnecting" | "offline" | "closed".
 */
export function followTask(eventsUrl, options = {}) {
  const url = resolve(eventsUrl);
  const { onUpdate, onOutput, onReset, onDone, onError, onStatus, withCredentials = false } = options;
  const retry = backoff();
  let source = null;
  let timer = null;
  let closed = false;
  let lastEventId = null;
  let nextSeq = 0;

  function finish(task) {
    close();
    call(onDone, task);
  }

  function onState(event) {
    if (closed) return;
    if (event.lastEventId) lastEventId = event.lastEventId;
    const task = JSON.parse(event.data);
    call(onUpdate, task);
    // The server ends the stream after the terminal event; close so that the browser
    // does not reconnect (it would only be told 204 No Content).
    if (isTerminal(task)) finish(task);
  }

  function onChunk(event) {
    if (closed) return;
    if (event.lastEventId) lastEventId = event.lastEventId;
    const chunk = JSON.parse(event.data);
    if (chunk.seq < nextSeq) return; // had it already
    nextSeq = chunk.seq + 1;
    call(onOutput, chunk);
  }

  function onResetEvent() {
    if (closed) return;
    nextSeq = 0;
    call(onReset);
  }

  function open() {
    timer = null;
    if (closed) return;
    const target = lastEventId ? withQuery(url, { last_event_id: lastEventId }) : url;
    source = openSource(target, {
      withCredentials,
      retry,
      isClosed: () => closed,
      onStatus,
      onState,
      onChunk,
      onReset: onResetEvent,
      onRefused: refused,
    });
  }

  async function refused(target) {
    const { status, retryAfterMs } = await probe(target, withCredentials);
    if (closed) return;
    if (status === 204) {
      // At or past the terminal event already: take the final snapshot and stop.
      try {
        const response = await fetch(url.href.replace(/\/events(\?.*)?$/, ""), {
          credentials: withCredentials ? "include" : "same-origin",
          headers: { Accept: "application/json" },
        });
        if (response.ok) {
          const task = await response.json();
          call(onUpdate, task);
          if (isTerminal(task)) {
            finish(task);
            return;
          }
        }
      } catch {
        // fall through to a retry
      }
    }
    if (status !== null && FATAL.has(status)) {
      close();
      call(onError, streamError(`${url} answered ${status}`, status, true, null));
      return;
    }
    const delay = retry.delay(retryAfterMs);
    const reason = status === null ? "could not be reached" : `answered ${status}`;
    call(onStatus, "offline", delay);
    call(onError, streamError(`${url} ${reason}`, status, false, delay));
    if (!closed) timer = setTimeout(open, delay);
  }

  function close() {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    if (source) source.close();
    call(onStatus, "closed");
  }

  call(onStatus, "connecting");
  open();
  return { close };
}

/**
 * Follow every task a page shows, on one connection.
 *
 * First paint from GET <hub>/tasks (onUpdate for each listed task), then
 * <hub>/events?last_event_id=<cursor>, so nothing that happened in between is missed.
 * onUpdate(task) is only told news: a task never goes back to an earlier state, a
 * terminal task never changes. With `output: true` the stream carries output too, and
 * onOutput(chunk) gets each task's chunks once and in order from seq 0 (what a task
 * wrote before the page subscribed is replayed from its own stream, which is closed
 * again as soon as it has caught up). onReset(): the server could not resume; drop
 * every task and output shown: the current snapshots follow. `tags: ["user:42"]`
 * follows only the tasks carrying every one of those tags (with a tag token in
 * `query: {token}`, a page follows exactly its tag's tasks).
 */
export function followTasks(hub, options) {
  if (options === undefined && hub !== null && typeof hub === "object" && !(hub instanceof URL)) {
    options = hub;
    hub = undefined;
  }
  options = options || {};
  const base = resolve(hub === undefined || hub === null ? hubUrl : hub);
  if (!base.pathname.endsWith("/")) base.pathname += "/";
  base.search = "";
  base.hash = "";
  const {
    onUpdate,
    onOutput,
    onReset,
    onError,
    onStatus,
    output = false,
    limit = 200,
    tags = [],
    query = {},
    withCredentials = false,
  } = options;
  const credentials = withCredentials ? "include" : "same-origin";
  // tags: only tasks carrying every one (?tag=, repeated), on the list and the stream.
  const tagQuery = tags.length ? { tag: [...tags] } : {};
  const retry = backoff();
  /** @type {Map<string, {task: any, eventId: string | null, fromList: boolean}>} */
  const entries = new Map();
  /** @type {Map<string, {next: number, target: number, pending: Map<number, any>, backfill: any}>} */
  const outputs = new Map();
  let source = null;
  let timer = null;
  let closed = false;
  let painted = false;
  let resumeFrom = null;

  function isStale(entry, task, eventId) {
    const current = entry.task;
    if (eventId && entry.eventId === eventId) return true;
    if (isTerminal(current)) return true;
    if (RANK[task.state] < RANK[current.state]) return true;
    return entry.fromList && task.state === current.state && (task.progress ?? -1) < (current.progress ?? -1);
  }

  function apply(task, eventId, fromList) {
    const entry = entries.get(task.id);
    if (entry) {
      if (isStale(entry, task, eventId)) return;
      entry.task = task;
      entry.eventId = eventId;
      entry.fromList = entry.fromList && fromList;
    } else {
      entries.set(task.id, { task, eventId, fromList });
    }
    call(onUpdate, task);
    if (output && (task.output_chunks ?? 0) > 0) {
      const state = outputOf(task.id);
      state.target = Math.max(state.target, task.output_chunks);
      if (state.next < state.target) startBackfill(task, state);
    }
  }

  // --- output: in order from seq 0, the missing start replayed from the task's stream --

  function outputOf(taskId) {
    let state = outputs.get(taskId);
    if (!state) {
      state = { next: 0, target: 0, pending: new Map(), backfill: null };
      outputs.set(taskId, state);
    }
    return state;
  }

  function deliver(chunk) {
    const state = outputOf(chunk.id);
    if (chunk.seq < state.next || state.pending.has(chunk.seq)) return;
    if (chunk.seq === state.next) {
      emit(state, chunk);
      while (state.pending.has(state.next)) {
        const held = state.pending.get(state.next);
        state.pending.delete(state.next);
        emit(state, held);
      }
    } else {
      // Written before this page subscribed: held until the replay fills the gap.
      state.pending.set(chunk.seq, chunk);
      state.target = Math.max(state.target, chunk.seq);
      const entry = entries.get(chunk.id);
      startBackfill(entry ? entry.task : { id: chunk.id }, state);
    }
    if (state.backfill && state.pending.size === 0 && state.next >= state.target) {
      state.backfill.close(); // caught up: the global stream brings the rest
      state.backfill = null;
    }
  }

  function emit(state, chunk) {
    state.next = chunk.seq + 1;
    call(onOutput, chunk);
  }

  function startBackfill(task, state) {
    if (state.backfill || closed) return;
    const events = task.links && task.links.events ? task.links.events : `tasks/${encodeURIComponent(task.id)}/events`;
    state.backfill = followTask(resolve(events, base), {
      withCredentials,
      onOutput: (chunk) => {
        if (outputs.get(task.id) === state) deliver(chunk);
      },
      onDone: () => {
        if (state.backfill) skipGap(state);
      },
      onError: (error) => {
        call(onError, error);
        if (error.fatal) skipGap(state); // gone: show what there is
      },
    });
  }

  function skipGap(state) {
    state.backfill = null;
    const held = [...state.pending.keys()].sort((a, b) => a - b);
    if (held.length) {
      state.next = held[0];
      deliver(state.pending.get(held[0]));
    }
  }

  function dropAll() {
    for (const state of outputs.values()) if (state.backfill) state.backfill.close();
    outputs.clear();
    entries.clear();
  }

  // --- the stream ----------------------------------------------------------------

  function onState(event) {
    if (closed) return;
    if (event.lastEventId) resumeFrom = event.lastEventId;
    apply(JSON.parse(event.data), event.lastEventId || null, false);
  }

  function onChunk(event) {
    if (closed) return;
    if (event.lastEventId) resumeFrom = event.lastEventId;
    deliver(JSON.parse(event.data));
  }

  function onResetEvent() {
    if (closed) return;
    dropAll();
    call(onReset);
  }

  function streamUrl() {
    const params = { ...query, ...tagQuery, last_event_id: resumeFrom, output: output ? 1 : null };
    return withQuery(new URL("events", base), params);
  }

  function connect() {
    timer = null;
    if (closed) return;
    source = openSource(streamUrl(), {
      withCredentials,
      retry,
      isClosed: () => closed,
      onStatus,
      onState,
      onChunk,
      onReset: onResetEvent,
      onRefused: refused,
    });
  }

  async function refused(target) {
    const { status, retryAfterMs } = await probe(target, withCredentials);
    if (closed) return;
    later(connect, streamError(`${target} ${status === null ? "could not be reached" : `answered ${status}`}`, status, false, null), retryAfterMs);
  }

  function later(action, error, retryAfterMs = null) {
    const delay = retry.delay(retryAfterMs);
    error.retryIn = delay;
    call(onStatus, "offline", delay);
    call(onError, error);
    timer = setTimeout(action, delay);
  }

  async function paint() {
    timer = null;
    if (closed) return;
    const url = withQuery(new URL("tasks", base), { ...query, ...tagQuery, limit });
    let body;
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials });
      if (!response.ok) {
        const error = streamError(`${url} answered ${response.status}`, response.status, false, null);
        if (!closed) later(paint, error, retryAfter(response));
        return;
      }
      body = await response.json();
    } catch {
      if (!closed) later(paint, streamError(`${url} could not be reached`, null, false, null));
      return;
    }
    if (closed) return;
    if (painted) {
      dropAll();
      call(onReset);
    }
    painted = true;
    for (const task of body.tasks) apply(task, null, true);
    resumeFrom = body.cursor;
    connect();
  }

  function close() {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    if (source) source.close();
    for (const state of outputs.values()) if (state.backfill) state.backfill.close();
    call(onStatus, "closed");
  }

  call(onStatus, "connecting");
  paint();
  return { close };
}
