// Types of the sse-tasks browser module (sse-tasks.js, served by the hub at <mount>/sse-tasks.js).

export type TaskState = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** A task's full snapshot, as every state event carries it. */
export interface Task {
  id: string;
  name: string;
  state: TaskState;
  /** null, or a number in [0, 1] */
  progress: number | null;
  message: string | null;
  result: unknown;
  error: { type: string; message: string } | null;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** how many output chunks the task has kept (as of this snapshot) */
  output_chunks?: number;
  /** root-relative ("/jobs/tasks/<id>/events"): resolve against the hub, not the page */
  links?: { self: string; events: string; output: string };
  [extra: string]: unknown;
}

/** One chunk of a task's output (`task.output`); `seq` numbers a task's chunks from 0. */
export interface OutputChunk {
  id: string;
  seq: number;
  kind: "log" | "output";
  level?: string;
  text: string;
}

/** What onError is handed: a refused or unreachable stream. */
export interface StreamError extends Error {
  /** the HTTP status of the refusal, or null for a network failure (or CORS) */
  status: number | null;
  /** true when retrying cannot help (400, 401, 403, 404, 410): the follower has stopped */
  fatal: boolean;
  /** milliseconds until the next attempt (Retry-After when the hub sent one), or null */
  retryIn: number | null;
}

export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline" | "closed";

export interface Follower {
  /** Stop following: closes the stream(s) and cancels any pending retry. */
  close(): void;
}

export interface FollowTaskOptions {
  /** the snapshot, then every change */
  onUpdate?(task: Task): void;
  /** each chunk once and in order (the retained ones first, then live) */
  onOutput?(chunk: OutputChunk): void;
  /** the server could not resume: drop the output shown; it restarts at seq 0 */
  onReset?(): void;
  /** the terminal snapshot (after its onUpdate); the stream is closed */
  onDone?(task: Task): void;
  onError?(error: StreamError): void;
  /** `retryIn` (ms) with "offline" */
  onStatus?(state: ConnectionState, retryIn?: number): void;
  /** send cookies cross-origin (the hub needs cors_credentials=True) */
  withCredentials?: boolean;
}

export interface FollowTasksOptions {
  /** first paint (each listed task), then news only: never an older state */
  onUpdate?(task: Task): void;
  /** with `output: true`: each task's chunks once and in order from seq 0 */
  onOutput?(chunk: OutputChunk): void;
  /** drop every task and output shown; the current snapshots follow (onUpdate) */
  onReset?(): void;
  onError?(error: StreamError): void;
  onStatus?(state: ConnectionState, retryIn?: number): void;
  /** carry output on the stream (`/events?output=1`); default false */
  output?: boolean;
  /** how many tasks the first paint asks for (`GET /tasks?limit=`); default 200 */
  limit?: number;
  /** more query parameters for `GET /tasks` and `/events`, e.g. {name: "generate"} */
  query?: Record<string, string>;
  withCredentials?: boolean;
}

/** The hub's base URL (its mount point, ending in "/"): where this module was served from. */
export const hubUrl: string;

/** `url` resolved against the hub (or `base`); absolute URLs are kept. */
export function resolve(url: string | URL, base?: string | URL): URL;

export function isTerminal(task: Pick<Task, "state">): boolean;

/** Follow one task on its stream (`links.events`, resolved against the hub). */
export function followTask(eventsUrl: string | URL, options?: FollowTaskOptions): Follower;

/** Follow every task on one connection; `hub` defaults to the hub that served this module. */
export function followTasks(hub?: string | URL, options?: FollowTasksOptions): Follower;
export function followTasks(options: FollowTasksOptions): Follower;
