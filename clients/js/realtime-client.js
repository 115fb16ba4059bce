// Boundary Realtime JavaScript client.
//
// One ES module, no imports and no build step: it runs as is in browsers (the
// server serves this file at /client/realtime-client.js) and in Node 20+ (with
// `--experimental-websocket`, or with any WebSocket class passed as
// `options.WebSocket`). It speaks to the server over a WebSocket or, receiving
// only, over Server-Sent Events (`transport: "sse"`, or `"auto"` to fall back to
// SSE where WebSockets cannot open). docs/PROTOCOL.md is the wire contract it
// implements; README.md next to this file documents the API.
//
// Only standard web APIs are used (WebSocket, fetch with a streamed body,
// TextDecoder, AbortController, URL, setTimeout, Date), never a Node-only one.

/** Default options. Every one of them can be overridden in the constructor. */
export const DEFAULT_OPTIONS = Object.freeze({
  /** "websocket", "sse" (receive only, over Server-Sent Events) or "auto" (WebSocket, SSE where it cannot open). */
  transport: "websocket",
  /** The SSE endpoint; null: derived from the WebSocket URL (`/ws` → `/sse`). */
  sseUrl: null,
  /** Connect from the constructor. */
  autoConnect: true,
  /** Backoff: delay of the first retry (before jitter), ms. */
  initialDelay: 250,
  /** Backoff: growth factor per failed attempt. */
  factor: 2,
  /** Backoff: cap on the delay (before jitter), ms. */
  maxDelay: 10000,
  /** Backoff jitter: "equal" (delay in [d/2, d]), "full" ([0, d]) or "none". */
  jitter: "equal",
  /** A connection that stayed welcomed this long resets the backoff, ms. */
  stableAfter: 5000,
  /** Give up after this many consecutive failed attempts (Infinity: never). */
  maxReconnectAttempts: Infinity,
  /** After a `server-shutdown` notice or close 1001: reconnect after a uniform random delay in [0, shutdownJitter], ms. */
  shutdownJitter: 1000,
  /** Longest wait for a command's reply (subscribe, unsubscribe, publish, history, presence, ping, refresh), ms. */
  timeout: 10000,
  /** Longest wait from starting a connection attempt to the welcome frame, ms. */
  connectTimeout: 10000,
  /** Refresh the token this long before it expires at most, ms (see refreshDelay). */
  refreshMargin: 30000,
  /** Refresh tokens before expiry when `token` is a function. */
  refresh: true,
  /** Send an application ping this often while connected to detect dead links, ms (0: never). */
  heartbeatInterval: 30000,
  /** Subscribes sent at once after connecting (restores and queued ones); the rest are paced. */
  restoreBatch: 100,
  /** Pace of the remaining subscribes after the first batch, per second. */
  restoreRate: 80,
  /** Pause the paced subscribes this long after a `rate_limited` answer, ms. */
  rateLimitRetryDelay: 1000,
});

// Paced subscribes go out every this many ms.
const RESTORE_STEP_MS = 250;

// After a close as a slow consumer (3008) history topics catch up in `history`
// pages of this many publications before they are subscribed again: a replay
// larger than the server's outbound queue would close the connection again.
const CATCH_UP_PAGE = 100;
const SLOW_CONSUMER = 3008;

// `presenceAll` reads pages of this many connections (the server's largest).
const PRESENCE_PAGE = 1000;

/** Error with a stable `code`: a server error code (`forbidden`, `invalid_topic`,
 * `limit_exceeded`, `rate_limited`, ...) or a client one (`timeout`,
 * `not_connected`, `disconnected`, `closed`, `token`, `unsubscribed`,
 * `bad_frame`, `refresh_unsupported`, `unsupported_transport`). */
export class RealtimeError extends Error {
  constructor(code, message, extra) {
    super(message || code);
    this.name = "RealtimeError";
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

/**
 * Reconnect delay for a given number of consecutive failed attempts (0 for the
 * first retry): `min(maxDelay, initialDelay * factor ** attempt)`, then jittered.
 * Pure: `random` is injectable, so it can be tested without timers.
 * @param {number} attempt
 * @param {{initialDelay?: number, factor?: number, maxDelay?: number, jitter?: "equal"|"full"|"none"}} [options]
 * @param {() => number} [random] returns a number in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const initial = options.initialDelay ?? DEFAULT_OPTIONS.initialDelay;
  const factor = options.factor ?? DEFAULT_OPTIONS.factor;
  const max = options.maxDelay ?? DEFAULT_OPTIONS.maxDelay;
  const jitter = options.jitter ?? DEFAULT_OPTIONS.jitter;
  const n = Math.max(0, Math.floor(Number(attempt) || 0));
  // Computed in steps so a huge attempt number neither overflows nor loops long.
  let base = Math.min(initial, max);
  for (let i = 0; i < n && base < max; i++) base = Math.min(max, base * factor);
  const r = Math.min(Math.max(random(), 0), 1);
  switch (jitter) {
    case "none":
      return base;
    case "full":
      return r * base;
    case "equal":
      return base / 2 + (r * base) / 2;
    default:
      throw new RangeError(`unknown jitter ${JSON.stringify(jitter)}: use "equal", "full" or "none"`);
  }
}

/**
 * Counts consecutive failed attempts and hands out their delays.
 */
export class Backoff {
  constructor(options = {}, random = Math.random) {
    this.options = options;
    this.random = random;
    /** Failed attempts since the last reset. */
    this.attempt = 0;
  }
  /** The delay before the next attempt; counts one more failure. */
  next() {
    return backoffDelay(this.attempt++, this.options, this.random);
  }
  /** Back to the first, shortest delay. */
  reset() {
    this.attempt = 0;
  }
}

/**
 * Delay after a `server-shutdown` notice or close 1001: uniform in
 * [0, shutdownJitter] so a fleet of clients does not reconnect in one burst.
 */
export function shutdownDelay(options = {}, random = Math.random) {
  const jitter = options.shutdownJitter ?? DEFAULT_OPTIONS.shutdownJitter;
  return Math.min(Math.max(random(), 0), 1) * jitter;
}

/**
 * When to refresh a token, in ms from `now`: at `expiresAt - margin` where
 * `margin = min(refreshMargin, 20% of the time left)`, and never sooner than
 * 1 s from now, unless less than 1.1 s are left (then 100 ms before expiry, or
 * at 80% of the time left if that is later).
 * @param {number} expiresAtMs expiry, ms since the epoch
 * @param {number} nowMs
 * @param {{refreshMargin?: number}} [options]
 */
export function refreshDelay(expiresAtMs, nowMs, options = {}) {
  const maxMargin = options.refreshMargin ?? DEFAULT_OPTIONS.refreshMargin;
  const left = expiresAtMs - nowMs;
  if (!(left > 0)) return 0;
  const margin = Math.min(Math.max(maxMargin, 0), left * 0.2);
  return Math.max(left - margin, Math.min(1000, left - 100));
}

/**
 * What a close code means for reconnecting (docs/PROTOCOL.md, *Close codes*):
 * - `"terminal"`: do not reconnect (3500–3999, 4500–4999, 1007, 1008, 1009)
 * - `"shutdown"`: reconnect after a short random delay (1001)
 * - `"token"`: reconnect at once with a fresh token (3005)
 * - `"backoff"`: reconnect with backoff (anything else: 1000, 1006, 1011, 3000–3499, ...)
 * @param {number} code
 * @returns {"terminal"|"shutdown"|"token"|"backoff"}
 */
export function closeAction(code) {
  if (code === 1007 || code === 1008 || code === 1009) return "terminal";
  if ((code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999)) return "terminal";
  if (code === 1001) return "shutdown";
  if (code === 3005) return "token";
  return "backoff";
}

// Codes after which the next attempt starts at a longer delay even if the
// connection had been stable: the server is failing or this client overloaded it.
const BACKOFF_FLOOR_CODES = new Set([1011, 3008, 3013]);
const BACKOFF_FLOOR_ATTEMPT = 2;

// Reply type expected for each command.
const REPLY_TYPES = {
  subscribe: "subscribed",
  unsubscribe: "unsubscribed",
  publish: "published",
  history: "history",
  presence: "presence",
  presence_stats: "presence_stats",
  ping: "pong",
  refresh: "refreshed",
};

const REPLY_FRAME_TYPES = new Set([...Object.values(REPLY_TYPES), "error"]);

const EVENT_TYPES = new Set([
  "connecting",
  "connected",
  "disconnected",
  "error",
  "refreshed",
  "resubscribed",
  "missed",
  "join",
  "leave",
]);

// Frames the server itself sends on a topic: notices, never messages (a
// backend's message always carries a `timestamp`; these never do).
const TOPIC_NOTICES = new Set(["missed", "join", "leave"]);

const OPEN = 1;

function now() {
  return Date.now();
}

/** The error of a command an SSE stream cannot carry (it only receives). */
function unsupported(action) {
  return new RealtimeError(
    "unsupported_transport",
    `cannot ${action} over SSE: the stream only receives (use transport "websocket" for commands, or the HTTP API from a backend)`,
  );
}

function monotonic() {
  const perf = globalThis.performance;
  return perf && typeof perf.now === "function" ? perf.now() : Date.now();
}

function reportUncaught(error) {
  if (typeof globalThis.reportError === "function") {
    globalThis.reportError(error);
  } else if (globalThis.console) {
    globalThis.console.error(error);
  }
}

/** `{offset, epoch}` when `value` holds a history position (a non-negative
 * integer offset and a string epoch), else null. */
export function positionOf(value) {
  if (!value || typeof value !== "object") return null;
  const { offset, epoch } = value;
  if (!Number.isSafeInteger(offset) || offset < 0 || typeof epoch !== "string") return null;
  return { offset, epoch };
}

/**
 * Whether a topic message at `incoming` was already delivered to a subscription
 * standing at `last` (same epoch, offset not above). A message of another epoch
 * is never a duplicate: the topic's history was lost or reset.
 * @param {{offset: number, epoch: string} | null} last
 * @param {{offset: number, epoch: string}} incoming
 */
export function isDuplicate(last, incoming) {
  return Boolean(last) && incoming.epoch === last.epoch && incoming.offset <= last.offset;
}

/** Resolves `url` (absolute ws/wss/http/https, or relative to the page in a browser) to a ws:/wss: URL. */
function resolveUrl(url) {
  const base = globalThis.location && globalThis.location.href ? globalThis.location.href : undefined;
  const u = new URL(String(url), base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(`RealtimeClient: unsupported URL scheme ${u.protocol} (use ws:, wss:, http: or https:)`);
  }
  return u;
}

/**
 * The SSE endpoint for a client built with WebSocket URL `wsUrl` (a URL from
 * resolveUrl): `sseUrl` when given (ws:/wss: become http:/https:), else the
 * same URL over http(s) with a last path segment `ws` replaced by `sse`
 * (`wss://host/ws` → `https://host/sse`; a URL already ending in `/sse` is kept).
 * @returns {URL}
 */
export function sseEndpoint(wsUrl, sseUrl = null) {
  const base = globalThis.location && globalThis.location.href ? globalThis.location.href : undefined;
  const u = new URL(String(sseUrl ?? wsUrl), base);
  if (u.protocol === "ws:") u.protocol = "http:";
  else if (u.protocol === "wss:") u.protocol = "https:";
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new TypeError(`RealtimeClient: unsupported SSE URL scheme ${u.protocol} (use http:, https:, ws: or wss:)`);
  }
  if (sseUrl === null || sseUrl === undefined) {
    if (/\/ws$/.test(u.pathname)) u.pathname = u.pathname.replace(/\/ws$/, "/sse");
    else if (!/\/sse$/.test(u.pathname)) {
      throw new TypeError(
        `RealtimeClient: cannot derive the SSE endpoint from ${u.pathname} (the path does not end in /ws): pass options.sseUrl`,
      );
    }
  }
  return u;
}

/**
 * Reads a `text/event-stream` (the WHATWG "event stream interpretation"): feed
 * it decoded text in chunks of any size with `push`; it calls `onEvent({type,
 * data, lastEventId})` for every event (`type` is `"message"` unless an `event:`
 * field named another), `onComment(text)` for every comment line (the server's
 * `: ping`), and keeps the `retry:` value in `retry`. Lines end in LF, CRLF or
 * CR, a CRLF split across two chunks included (a line ends at its CR at once).
 * `stop()` (e.g. from a callback) drops whatever is still buffered.
 */
export class SseParser {
  constructor(onEvent, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    /** The last event ID buffer: the last `id:` field seen (without NUL). */
    this.lastEventId = "";
    /** The last valid `retry:` value, ms (null before any). */
    this.retry = null;
    this._buffer = "";
    this._data = [];
    this._type = "";
    this._skipLf = false;
    this._stopped = false;
  }

  /** Parses `text`; a line without its end waits for the next chunk. */
  push(text) {
    if (this._stopped || text === "") return;
    let buf = this._buffer + text;
    if (this._skipLf) {
      // The last chunk ended in CR: an LF right after it belongs to that CRLF.
      this._skipLf = false;
      if (buf.charCodeAt(0) === 10) buf = buf.slice(1);
    }
    let pos = 0;
    let lf = buf.indexOf("\n");
    let cr = buf.indexOf("\r");
    while (pos < buf.length && !this._stopped) {
      if (lf !== -1 && lf < pos) lf = buf.indexOf("\n", pos);
      if (cr !== -1 && cr < pos) cr = buf.indexOf("\r", pos);
      let end;
      let next;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        end = cr;
        if (cr === buf.length - 1) {
          this._skipLf = true;
          next = cr + 1;
        } else {
          next = buf.charCodeAt(cr + 1) === 10 ? cr + 2 : cr + 1;
        }
      } else if (lf !== -1) {
        end = lf;
        next = lf + 1;
      } else {
        break;
      }
      this._line(buf.slice(pos, end));
      pos = next;
    }
    this._buffer = this._stopped ? "" : buf.slice(pos);
  }

  /** Stops parsing: nothing buffered is delivered any more. */
  stop() {
    this._stopped = true;
    this._buffer = "";
    this._data = [];
  }

  _line(line) {
    if (line === "") {
      this._dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) {
      this.onComment(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case "data":
        this._data.push(value);
        break;
      case "event":
        this._type = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  _dispatch() {
    const data = this._data;
    const type = this._type;
    this._data = [];
    this._type = "";
    // As the format says: an event whose data is empty (none, or one empty line) is not dispatched.
    const joined = data.join("\n");
    if (joined === "") return;
    this.onEvent({ type: type || "message", data: joined, lastEventId: this.lastEventId });
  }
}

/**
 * The name of a topic in an SSE cursor: the 64-bit FNV-1a hash of its UTF-8
 * bytes, as 16 lowercase hex digits (docs/PROTOCOL.md, *SSE*).
 * @param {string} topic
 */
export function cursorKey(topic) {
  const MASK = 0xffffffffffffffffn;
  let hash = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(topic)) {
    hash = ((hash ^ BigInt(byte)) * 0x100000001b3n) & MASK;
  }
  return hash.toString(16).padStart(16, "0");
}

/**
 * The SSE cursor (the `Last-Event-ID` the server reads) naming the position of
 * each topic of `positions` (`[topic, {offset, epoch}]` pairs):
 * `r1,<key>:<offset>:<epoch>,…`, the epoch's bytes other than letters, digits
 * and `_.-` percent-encoded. The client writes it from the positions it has
 * delivered, so a stream resumes every topic exactly where its handlers are.
 * @param {Iterable<[string, {offset: number, epoch: string}]>} positions
 */
export function encodeCursor(positions) {
  let out = "r1";
  for (const [topic, position] of positions) {
    let epoch = "";
    for (const byte of new TextEncoder().encode(position.epoch)) {
      const c = String.fromCharCode(byte);
      epoch += /[A-Za-z0-9_.-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
    }
    out += `,${cursorKey(topic)}:${position.offset}:${epoch}`;
  }
  return out;
}

// The most `topic` parameters one SSE request may carry (the server's bound).
const SSE_MAX_TOPICS = 64;
// At most this much of a refused SSE request's body is parsed for its JSON error.
const SSE_REFUSAL_BODY_LIMIT = 16384;

/**
 * One SSE request (`GET /sse?token=…&topic=…&last_event_id=…`) read with
 * `fetch`: reports its events, its refusal (status and JSON body) or its end.
 * The client sets the callbacks; `close()` aborts it and silences them.
 */
class EventStream {
  /**
   * @param {typeof fetch} fetchFn
   * @param {URL} url
   * @param {string[]} topics the `topic` parameters it carries
   */
  constructor(fetchFn, url, topics) {
    this.url = url;
    this.topics = new Set(topics);
    /** Query topics whose `subscribed` frame has not arrived yet. */
    this.awaiting = new Set(topics);
    /** The welcome frame, once read. */
    this.welcome = null;
    /** When the last byte arrived (monotonic ms). */
    this.lastActivity = monotonic();
    this.closed = false;
    /** The token it was opened with. */
    this.token = null;
    /** Fires when its topics are not all confirmed in time (the client's). */
    this.timer = null;
    /** @type {((event: {type: string, data: string, lastEventId: string}) => void) | null} */
    this.onevent = null;
    /** @type {((status: number, body: any) => void) | null} */
    this.onrefused = null;
    /** @type {((error: any) => void) | null} the body ended (error null) or the request failed */
    this.onend = null;
    this._abort = typeof AbortController === "function" ? new AbortController() : null;
    this._reader = null;
    this._parser = new SseParser((event) => {
      if (!this.closed && this.onevent) this.onevent(event);
    });
    this._run(fetchFn);
  }

  /** Aborts the request; no callback runs after this. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.onevent = this.onrefused = this.onend = null;
    clearTimeout(this.timer);
    this._parser.stop();
    try {
      this._abort?.abort();
    } catch {
      // already aborted
    }
    if (this._reader) this._reader.cancel().catch(() => {});
  }

  async _run(fetchFn) {
    // Runs from the constructor: wait a microtask so that a fetch which throws
    // at once (instead of returning a rejected promise) ends the stream after
    // its owner has set onend, not silently before.
    await null;
    if (this.closed) return;
    let res;
    try {
      res = await fetchFn(this.url.href, {
        method: "GET",
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        signal: this._abort?.signal,
      });
    } catch (error) {
      this._end(error);
      return;
    }
    if (this.closed) {
      res.body?.cancel?.()?.catch(() => {});
      return;
    }
    const type = (res.headers?.get?.("content-type") ?? "").toLowerCase();
    if (res.status !== 200 || !type.startsWith("text/event-stream")) {
      let body = null;
      try {
        const text = await res.text();
        body = JSON.parse(text.slice(0, SSE_REFUSAL_BODY_LIMIT));
      } catch {
        // not JSON: the status says enough
      }
      if (this.closed) return;
      const onrefused = this.onrefused;
      this.close();
      if (onrefused) onrefused(res.status, body);
      return;
    }
    if (!res.body || typeof res.body.getReader !== "function") {
      this._end(new TypeError("the fetch implementation gives no streamed response body"));
      return;
    }
    const reader = res.body.getReader();
    this._reader = reader;
    const decoder = new TextDecoder();
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        this._end(error);
        return;
      }
      if (this.closed) return;
      if (chunk.done) {
        this._end(null);
        return;
      }
      this.lastActivity = monotonic();
      this._parser.push(decoder.decode(chunk.value, { stream: true }));
    }
  }

  _end(error) {
    if (this.closed) return;
    const onend = this.onend;
    this.close();
    if (onend) onend(error);
  }
}

/**
 * A connection to a Boundary Realtime server that reconnects by itself,
 * restores subscriptions and refreshes its token. See README.md.
 */
export class RealtimeClient {
  /**
   * @param {string | URL} url e.g. `wss://rt.example.com/ws`
   * @param {object} options see README.md and DEFAULT_OPTIONS
   */
  constructor(url, options = {}) {
    if (!options || typeof options !== "object") throw new TypeError("RealtimeClient: options must be an object");
    const mode = options.transport ?? DEFAULT_OPTIONS.transport;
    if (mode !== "websocket" && mode !== "sse" && mode !== "auto") {
      throw new TypeError(`RealtimeClient: unknown transport ${JSON.stringify(mode)}: use "websocket", "sse" or "auto"`);
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    const fetchFn = options.fetch ?? globalThis.fetch;
    const hasWebSocket = typeof WS === "function";
    const hasFetch = typeof fetchFn === "function";
    if (!hasWebSocket && (mode === "websocket" || (mode === "auto" && !hasFetch))) {
      throw new Error(
        "RealtimeClient: no WebSocket implementation available. In Node 20 run with " +
          "`node --experimental-websocket` (Node 22+ has it built in) or pass one: " +
          'new RealtimeClient(url, { WebSocket }); or receive over SSE: { transport: "sse" }',
      );
    }
    if (!hasFetch && mode === "sse") {
      throw new Error("RealtimeClient: transport \"sse\" needs fetch (standard in browsers and Node 18+) or options.fetch");
    }
    const token = options.token;
    if (typeof token !== "string" && typeof token !== "function") {
      throw new TypeError("RealtimeClient: options.token must be a string or a function returning one");
    }
    this._url = resolveUrl(url);
    this._sseUrl = mode === "websocket" ? null : sseEndpoint(this._url, options.sseUrl ?? null);
    this._WebSocket = hasWebSocket ? WS : null;
    this._fetch = hasFetch ? (...args) => fetchFn(...args) : null;
    this._token = token;
    this.options = { ...DEFAULT_OPTIONS };
    for (const [key, value] of Object.entries(options)) {
      if (key !== "WebSocket" && key !== "fetch" && key !== "token" && value !== undefined) this.options[key] = value;
    }
    // The transport of the current (or last) attempt; with "auto", `_decided` is
    // the one that got the first welcome, kept until close().
    this._mode = mode;
    this._using = null;
    this._decided = mode === "auto" ? null : mode;
    this._nextTransport = mode === "auto" ? (hasWebSocket ? "websocket" : "sse") : mode;
    this._attemptTransport = null; // set once an attempt opened its socket or stream, unset once the server answered over it
    // SSE: a token fetched for a refresh, a replacement stream being opened
    // (make before break), unsubscribes waiting for a stream without their topic.
    this._freshToken = null;
    this._next = null;
    this._reopenQueued = false;
    this._breakBeforeMake = false;
    this._reopeningAfterClose = false; // the last teardown closed the stream to reopen it
    this._unsubscribeWaiters = [];
    this._retryTimer = null; // SSE: reopens once topics that failed may be tried again
    const random = typeof options.random === "function" ? options.random : Math.random;
    this._random = random;
    this._backoff = new Backoff(this.options, random);

    /** @type {"disconnected"|"connecting"|"connected"} */
    this.state = "disconnected";
    /** The welcome frame's `connection_id`; null when not connected. */
    this.connectionId = null;
    /** The user id of the last welcome; null before the first. */
    this.userId = null;
    /** The roles of the last welcome. */
    this.roles = [];
    /** Token expiry (Unix seconds) from the welcome or the last refresh; null when unknown. */
    this.expiresAt = null;

    this._ws = null;
    this._wanted = false; // connect() called and neither close() nor a terminal close since
    this._generation = 0; // bumps on every attempt and every socket teardown
    this._nextRef = 1;
    this._pending = new Map(); // ref -> {expect, resolve, reject, timer}
    this._topics = new Map(); // topic -> {handlers:Set, active:bool, ref, waiters:[], timeout}
    this._restoreQueue = []; // topics whose subscribe waits for its turn (pacing)
    this._restoreTimer = null;
    this._handlers = new Map(); // message type -> Set
    this._listeners = new Map(); // event type -> Set of {fn, once}
    this._reconnectTimer = null;
    this._connectTimer = null;
    this._refreshTimer = null;
    this._heartbeatTimer = null;
    this._welcomedAt = 0;
    this._shutdownNotice = false;
    this._refreshUnsupported = false;
    this._catchUpNext = false; // the last connection closed as a slow consumer
    this._catchUp = false; // this connection restores history topics in pages first
    this._catchUpChain = Promise.resolve(); // one page at a time, for every topic

    // Connect on the next microtask, so listeners added right after the
    // constructor see the first `connecting` event.
    this._autoConnectPending = Boolean(this.options.autoConnect);
    if (this._autoConnectPending) {
      queueMicrotask(() => {
        if (this._autoConnectPending) this.connect();
      });
    }
  }

  // ---------------------------------------------------------------- public API

  /** Starts connecting; while waiting to reconnect, tries at once; a no-op while connecting or connected.
   * After that the client reconnects by itself until close() or a terminal close code. */
  connect() {
    this._autoConnectPending = false;
    this._wanted = true;
    if (this.state !== "disconnected") return;
    if (this._reconnectTimer) {
      // Waiting to reconnect: try now (e.g. the browser says it is online again).
      this._clearTimer("_reconnectTimer");
    } else {
      this._backoff.reset();
    }
    this._attempt();
  }

  /** Closes the connection for good: no reconnect, every timer cleared. Commands in flight are
   * rejected with `disconnected`, subscriptions never confirmed with `closed`. `connect()` may be
   * called again later; confirmed subscriptions are then restored. */
  close() {
    this._autoConnectPending = false;
    this._wanted = false;
    this._clearTimer("_reconnectTimer");
    if (this._mode === "auto") {
      // A later connect() starts a new session: WebSocket first again. Before
      // the teardown, whose disconnected listeners may call it already.
      this._decided = null;
      this._nextTransport = this._WebSocket ? "websocket" : "sse";
    }
    if (this._ws || this.state !== "disconnected") {
      this._teardown(1000, "client closed", { final: true, code: "closed", sendClose: true });
    } else {
      this._rejectQueued("closed", "the client was closed");
    }
  }

  /**
   * Subscribes `handler` to `topic`. Resolves once the server answered
   * `subscribed`, with the topic's position on a history topic; rejects with a
   * RealtimeError whose `code` is the server's error code, `timeout`, `closed`,
   * or `disconnected` (terminal close). While disconnected the subscription is
   * queued and sent once connected. `since` (a position kept from an earlier
   * visit) asks for every publication after it first. On a topic whose
   * namespace has `join_leave`, `onJoin` and `onLeave` get the server's join
   * and leave notices (never `handler`), as the client's `join` and `leave`
   * events do.
   * @param {string} topic
   * @param {(message: object) => void} handler
   * @param {{timeout?: number, since?: {offset: number, epoch: string}, onJoin?: (event: object) => void, onLeave?: (event: object) => void}} [options]
   * @returns {Promise<{topic: string, offset?: number, epoch?: string, recovered?: boolean, reason?: string}>}
   */
  subscribe(topic, handler, options = {}) {
    if (typeof topic !== "string" || topic === "") {
      return Promise.reject(new TypeError("subscribe: topic must be a non-empty string"));
    }
    if (typeof handler !== "function") {
      return Promise.reject(new TypeError("subscribe: handler must be a function"));
    }
    const since = options.since === undefined || options.since === null ? null : positionOf(options.since);
    if (options.since !== undefined && options.since !== null && !since) {
      return Promise.reject(new TypeError("subscribe: since must be {offset: a non-negative integer, epoch: a string}"));
    }
    for (const name of ["onJoin", "onLeave"]) {
      if (options[name] !== undefined && options[name] !== null && typeof options[name] !== "function") {
        return Promise.reject(new TypeError(`subscribe: ${name} must be a function`));
      }
    }
    const presence = options.onJoin || options.onLeave ? { onJoin: options.onJoin ?? null, onLeave: options.onLeave ?? null } : null;
    let entry = this._topics.get(topic);
    if (entry) {
      entry.handlers.add(handler);
      if (presence) entry.presence.set(handler, presence);
      if (entry.active) return Promise.resolve(this._subscription(topic, entry));
    } else {
      entry = {
        handlers: new Set([handler]),
        active: false,
        ref: null,
        waiters: [],
        timeout: undefined,
        // The last position delivered on a history topic (null: no history, or not known yet).
        position: null,
        // Where the first subscribe should resume from (options.since), until it is answered.
        since,
        // handler -> {onJoin, onLeave}: join/leave callbacks, removed with their handler.
        presence: new Map(presence ? [[handler, presence]] : []),
      };
      this._topics.set(topic, entry);
    }
    if (options.timeout !== undefined) entry.timeout = options.timeout;
    const promise = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject, handler }));
    if (this._using === "sse") {
      // The topic set of a stream is fixed: a stream with the new one replaces it.
      if (this.state === "connected") this._scheduleReopen();
    } else if (entry.ref === null && this.state === "connected") {
      // While earlier subscribes are being paced, wait for a turn behind them.
      if (this._restoreQueue.length > 0) {
        if (!this._restoreQueue.includes(topic)) this._restoreQueue.push(topic);
      } else {
        this._sendSubscribe(topic, entry, false);
      }
    }
    return promise;
  }

  /**
   * Removes `handler` from `topic` (every handler when omitted). When none
   * remain the topic is forgotten and, if connected, `unsubscribe` is sent.
   * @returns {Promise<void>} resolves on `unsubscribed` (at once when nothing had to be sent)
   */
  unsubscribe(topic, handler) {
    const entry = this._topics.get(topic);
    if (!entry) return Promise.resolve();
    if (handler !== undefined) {
      entry.handlers.delete(handler);
      entry.presence.delete(handler);
      if (entry.handlers.size > 0) return Promise.resolve();
    }
    this._topics.delete(topic);
    const wasSent = entry.active || entry.ref !== null;
    this._settleWaiters(entry, new RealtimeError("unsubscribed", `unsubscribed from ${topic} before the server answered`, { topic }));
    if (this._using === "sse") {
      if (this.state !== "connected") return Promise.resolve();
      this._scheduleReopen();
      // Resolves once no stream of this client carries the topic any more.
      if (!this._ws?.topics.has(topic) && !this._next?.topics.has(topic)) return Promise.resolve();
      return new Promise((resolve) => this._unsubscribeWaiters.push({ topic, resolve }));
    }
    if (!wasSent || this.state !== "connected") return Promise.resolve();
    return this._request({ action: "unsubscribe", topic }).then(
      () => undefined,
      (error) => {
        // The connection went away: nothing is left to undo on the server.
        if (error.code === "disconnected") return undefined;
        throw error;
      },
    );
  }

  /**
   * Publishes `message` (an object with a string `type`) on `topic`.
   * @returns {Promise<{type: "published", delivered: number, relayed: boolean}>}
   */
  publish(topic, message, options = {}) {
    return this._command({ action: "publish", topic, message }, options.timeout);
  }

  /**
   * Reads a history topic's publications after `since` (from the oldest held
   * without it), at most `limit` (the server caps it). Allowed to whoever may
   * subscribe to the topic; rejects with `no_history`, `forbidden`,
   * `history_unavailable`, or `not_connected` when not connected.
   * @param {string} topic
   * @param {{since?: {offset: number, epoch: string}, limit?: number, timeout?: number}} [options]
   * @returns {Promise<{type: "history", topic: string, publications: object[], offset: number, epoch: string, recovered?: boolean}>}
   */
  history(topic, options = {}) {
    if (typeof topic !== "string" || topic === "") {
      return Promise.reject(new TypeError("history: topic must be a non-empty string"));
    }
    const frame = { action: "history", topic };
    if (options.since !== undefined && options.since !== null) {
      const since = positionOf(options.since);
      if (!since) return Promise.reject(new TypeError("history: since must be {offset: a non-negative integer, epoch: a string}"));
      frame.since = since;
    }
    if (options.limit !== undefined && options.limit !== null) {
      if (!Number.isSafeInteger(options.limit) || options.limit < 0) {
        return Promise.reject(new TypeError("history: limit must be a non-negative integer"));
      }
      frame.limit = options.limit;
    }
    return this._command(frame, options.timeout).then((reply) => {
      const { ref: _ref, ...answer } = reply;
      return answer;
    });
  }

  /**
   * One page of a presence topic's members: who is connected to it, grouped by
   * user (sorted by user id, each user's connections by connection id). Pass
   * the answer's `cursor` back for the next page; it is null on the last one. A
   * user may continue on the next page. `degraded: true` means the server's
   * presence store was unreachable and the page lists only the members on the
   * node this client is connected to. Allowed to whoever may subscribe to the
   * topic (subscribing is not required); rejects with `no_presence`,
   * `forbidden`, `invalid_topic`, `bad_request` (a limit above the server's
   * 1000 or a cursor it did not give out), or `not_connected`.
   * @param {string} topic
   * @param {{limit?: number, cursor?: string | null, timeout?: number}} [options]
   * @returns {Promise<{topic: string, users: object[], cursor: string | null, degraded: boolean}>}
   */
  presence(topic, options = {}) {
    if (typeof topic !== "string" || topic === "") {
      return Promise.reject(new TypeError("presence: topic must be a non-empty string"));
    }
    const frame = { action: "presence", topic };
    if (options.limit !== undefined && options.limit !== null) {
      if (!Number.isSafeInteger(options.limit) || options.limit < 1) {
        return Promise.reject(new TypeError("presence: limit must be a positive integer"));
      }
      frame.limit = options.limit;
    }
    if (options.cursor !== undefined && options.cursor !== null) {
      if (typeof options.cursor !== "string" || options.cursor === "") {
        return Promise.reject(new TypeError("presence: cursor must be a string from an earlier answer"));
      }
      frame.cursor = options.cursor;
    }
    return this._command(frame, options.timeout).then((reply) => ({
      topic: reply.topic,
      users: Array.isArray(reply.users) ? reply.users : [],
      cursor: typeof reply.cursor === "string" ? reply.cursor : null,
      degraded: reply.degraded === true,
    }));
  }

  /**
   * Every member of a presence topic: reads `presence` pages (of `limit`,
   * 1000 by default) until the last, and joins a user split across two pages
   * into one entry. The pages are read one after the other, so under churn the
   * list is not one instant's (a member may be missing or already gone);
   * `degraded` is true when any page was.
   * @param {string} topic
   * @param {{limit?: number, timeout?: number}} [options] `timeout` per page
   * @returns {Promise<{topic: string, users: object[], degraded: boolean}>}
   */
  async presenceAll(topic, options = {}) {
    const limit = options.limit ?? PRESENCE_PAGE;
    const users = [];
    let degraded = false;
    let cursor = null;
    do {
      const page = await this.presence(topic, { limit, cursor, timeout: options.timeout });
      degraded = degraded || page.degraded;
      for (const user of page.users) {
        const last = users[users.length - 1];
        if (last && last.user_id === user.user_id) {
          last.connections.push(...user.connections);
        } else {
          users.push({ ...user, connections: [...user.connections] });
        }
      }
      if (page.cursor !== null && page.cursor === cursor) {
        throw new RealtimeError("bad_frame", `presence of ${topic}: the server handed back the same cursor`);
      }
      cursor = page.cursor;
    } while (cursor !== null);
    return { topic, users, degraded };
  }

  /**
   * A presence topic's counts: connections and distinct users, answered in
   * constant time however large the topic. `degraded` as for `presence`.
   * Rejects like `presence`.
   * @param {string} topic
   * @param {{timeout?: number}} [options]
   * @returns {Promise<{topic: string, connections: number, users: number, degraded: boolean}>}
   */
  presenceStats(topic, options = {}) {
    if (typeof topic !== "string" || topic === "") {
      return Promise.reject(new TypeError("presenceStats: topic must be a non-empty string"));
    }
    return this._command({ action: "presence_stats", topic }, options.timeout).then((reply) => ({
      topic: reply.topic,
      connections: reply.connections,
      users: reply.users,
      degraded: reply.degraded === true,
    }));
  }

  /**
   * The last position delivered on `topic`, a history topic this client keeps:
   * what the next resubscription resumes from. Null for other topics.
   * @returns {{offset: number, epoch: string} | null}
   */
  position(topic) {
    const position = this._topics.get(topic)?.position;
    return position ? { ...position } : null;
  }

  /**
   * Application-level round trip.
   * @returns {Promise<number>} round-trip time in ms
   */
  ping(options = {}) {
    const started = monotonic();
    return this._command({ action: "ping" }, options.timeout).then(() => monotonic() - started);
  }

  /**
   * Sends `refresh` now with `token`, or with a fresh one from the token
   * function. Resolves with the new expiry (Unix seconds).
   * @param {string} [token]
   * @returns {Promise<number>}
   */
  async refreshToken(token) {
    if (this._decided === "sse") throw unsupported("refresh");
    if (this.state !== "connected") throw new RealtimeError("not_connected", "not connected");
    const generation = this._generation;
    const fresh = token ?? (typeof this._token === "function" ? await this._token({ reason: "refresh" }) : this._token);
    if (generation !== this._generation || this.state !== "connected") {
      throw new RealtimeError("disconnected", "the connection closed while fetching a token");
    }
    const reply = await this._command({ action: "refresh", token: fresh });
    this._onRefreshed(reply);
    return reply.expires_at;
  }

  /**
   * Handles messages without a `topic` field by their `type` (`"*"`: every
   * message, topic messages included).
   * @returns {() => void} removes the handler
   */
  on(type, handler) {
    if (typeof handler !== "function") throw new TypeError("on: handler must be a function");
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => this.off(type, handler);
  }

  /** Removes a handler added with `on` (every handler of `type` when omitted). */
  off(type, handler) {
    const set = this._handlers.get(type);
    if (!set) return;
    if (handler === undefined) set.clear();
    else set.delete(handler);
    if (set.size === 0) this._handlers.delete(type);
  }

  /**
   * Listens to client events: `connecting`, `connected`, `disconnected`,
   * `error`, `refreshed`, `resubscribed`, `missed`, `join`, `leave`. The
   * listener gets a plain object with a `type` field.
   * @param {{once?: boolean}} [options]
   */
  addEventListener(type, listener, options = {}) {
    if (!EVENT_TYPES.has(type)) {
      throw new TypeError(`addEventListener: unknown event ${JSON.stringify(type)} (${[...EVENT_TYPES].join(", ")})`);
    }
    if (typeof listener !== "function") throw new TypeError("addEventListener: listener must be a function");
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    for (const l of set) if (l.fn === listener) return;
    set.add({ fn: listener, once: Boolean(options && options.once) });
  }

  /** Removes a listener added with addEventListener. */
  removeEventListener(type, listener) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const l of set) if (l.fn === listener) set.delete(l);
  }

  /** Topics currently kept (subscribed or waiting to be). */
  get topics() {
    return [...this._topics.keys()];
  }

  /** The transport of the current (or last) connection attempt, `"websocket"` or
   * `"sse"`; null before the first. With `transport: "auto"` it is the one chosen. */
  get transport() {
    return this._using;
  }

  // ------------------------------------------------------------- connecting

  async _attempt() {
    this._reconnectTimer = null;
    if (!this._wanted) return;
    const generation = ++this._generation;
    this._using = this._mode === "auto" ? (this._decided ?? this._nextTransport) : this._mode;
    this._setState("connecting");
    this._emit("connecting", { attempt: this._backoff.attempt, transport: this._using });
    if (generation !== this._generation) return; // a listener closed the client
    this._connectTimer = setTimeout(() => {
      this._connectTimer = null;
      if (generation !== this._generation) return;
      this._emit("error", { error: new RealtimeError("timeout", "no welcome within connectTimeout") });
      if (generation !== this._generation) return; // an error listener closed the client
      this._teardown(1006, "connect timeout", { sendClose: true });
    }, this.options.connectTimeout);

    let token;
    try {
      token = typeof this._token === "function" ? await this._token({ reason: "connect", attempt: this._backoff.attempt }) : this._token;
      if (typeof token !== "string" || token === "") throw new TypeError("the token function returned no string");
    } catch (err) {
      if (generation !== this._generation) return;
      const error = new RealtimeError("token", `token function failed: ${err && err.message ? err.message : err}`, { cause: err });
      this._emit("error", { error });
      // An error listener that closed the client (and maybe connected again)
      // ended this attempt already: tearing down now would end the new one.
      if (generation !== this._generation) return;
      this._teardown(0, "token function failed", {});
      return;
    }
    if (generation !== this._generation) return;

    if (this._using === "sse") {
      this._openStream(token);
      return;
    }
    const url = new URL(this._url.href);
    url.searchParams.set("token", token);
    let ws;
    this._attemptTransport = "websocket";
    try {
      ws = new this._WebSocket(url.href);
    } catch (err) {
      this._emit("error", { error: new RealtimeError("socket", `WebSocket failed: ${err && err.message ? err.message : err}`, { cause: err }) });
      if (generation !== this._generation) return; // an error listener closed the client
      this._teardown(1006, "WebSocket constructor failed", {});
      return;
    }
    this._ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._onFrame(event.data);
    };
    ws.onerror = () => {
      if (this._ws !== ws) return;
      // Some implementations (Node 20's) report a refused handshake with an error
      // and never a close event: before the socket opened, an error ends the attempt.
      if (!opened && ws.readyState !== OPEN) this._teardown(1006, "connection failed", { sendClose: true });
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      // A close frame on a socket that opened is the server's answer (3504, a
      // shutdown, ...): WebSockets get through, so "auto" does not fall back.
      if (opened && event.code !== 1005 && event.code !== 1006) this._attemptTransport = null;
      this._teardown(event.code || 1005, event.reason || "", {});
    };
  }

  /**
   * Ends the current socket (or attempt) and decides what comes next.
   * @param {number} code close code (as seen by this client)
   * @param {string} reason
   * @param {{final?: boolean, code?: string, sendClose?: boolean, clientCode?: number, reconnectNow?: boolean}} how
   */
  _teardown(code, reason, how) {
    const ws = this._ws;
    this._ws = null;
    this._generation++;
    if (this._next) {
      this._next.close();
      this._next = null;
    }
    if (ws instanceof EventStream) {
      ws.close();
    } else if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      if (how.sendClose) {
        try {
          if (how.final) ws.close(1000, "client closed");
          else if (how.clientCode) ws.close(how.clientCode, reason);
          else ws.close();
        } catch {
          // Already closing.
        }
      }
    }
    const wasConnected = this.state === "connected";
    const welcomedAt = this._welcomedAt;
    const transport = this._using;
    this._clearTimer("_connectTimer");
    this._clearTimer("_refreshTimer");
    this._clearTimer("_heartbeatTimer");
    this._clearTimer("_restoreTimer");
    this._clearTimer("_retryTimer");
    this._restoreQueue = [];
    this.connectionId = null;
    this._welcomedAt = 0;
    this._freshToken = null;
    // Nothing is carried by a stream any more.
    for (const waiter of this._unsubscribeWaiters.splice(0)) waiter.resolve();
    // A new connection tries every kept topic again, paused or not (the
    // retry timer that would have ended a pause is cleared above).
    for (const entry of this._topics.values()) {
      entry.stream = null;
      entry.retryAt = 0;
    }
    // "auto" before any welcome: an attempt that got none tries the other transport next.
    const attempted = this._attemptTransport;
    this._attemptTransport = null;
    // (Not after an SSE request refused for one of its topics: the stream got through.)
    if (!how.final && !how.reconnectNow && this._mode === "auto" && !this._decided && attempted && this._WebSocket && this._fetch) {
      this._nextTransport = attempted === "websocket" ? "sse" : "websocket";
    }

    // Pending commands fail; subscriptions in flight go back to the queue.
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new RealtimeError("disconnected", `connection closed (${code}${reason ? " " + reason : ""})`, { closeCode: code }));
    }
    for (const entry of this._topics.values()) entry.ref = null;
    if (code === SLOW_CONSUMER) this._catchUpNext = true;

    let willReconnect = false;
    let delay;
    if (how.final) {
      this._rejectQueued(how.code || "closed", "the client was closed");
    } else {
      let action = this._shutdownNotice ? "shutdown" : closeAction(code);
      // Right after closing its stream to reopen it, the server may not have
      // seen the old one go yet: a connection limit then is retried, once.
      if (code === 3504 && this._reopeningAfterClose) action = "backoff";
      if (action === "terminal" || !this._wanted) {
        this._wanted = false;
        this._rejectQueued("disconnected", `connection closed for good (${code}${reason ? " " + reason : ""})`);
      } else {
        willReconnect = true;
        if (welcomedAt && now() - welcomedAt >= this.options.stableAfter) this._backoff.reset();
        if (action === "shutdown") {
          this._backoff.reset();
          delay = shutdownDelay(this.options, this._random);
        } else if (action === "token" || how.reconnectNow) {
          delay = 0;
        } else {
          if (BACKOFF_FLOOR_CODES.has(code)) this._backoff.attempt = Math.max(this._backoff.attempt, BACKOFF_FLOOR_ATTEMPT);
          if (this._backoff.attempt >= this.options.maxReconnectAttempts) {
            willReconnect = false;
            this._wanted = false;
            this._rejectQueued("disconnected", "gave up reconnecting (maxReconnectAttempts)");
          } else {
            delay = this._backoff.next();
          }
        }
      }
    }
    this._shutdownNotice = false;
    this._reopeningAfterClose = code === 4002;
    this._setState("disconnected");
    if (willReconnect) {
      this._reconnectTimer = setTimeout(() => this._attempt(), delay);
    }
    const event = { code, reason, willReconnect, wasConnected, transport };
    if (willReconnect) event.delay = delay;
    if (how.status !== undefined) event.status = how.status;
    this._emit("disconnected", event);
  }

  /** The frame `data` holds (a JSON object), or null after an `error` event saying why not. */
  _parseFrame(data) {
    if (typeof data !== "string") {
      this._emit("error", { error: new RealtimeError("bad_frame", "binary frame from the server ignored") });
      return null;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this._emit("error", { error: new RealtimeError("bad_frame", "frame from the server is not JSON") });
      return null;
    }
    if (!frame || typeof frame !== "object" || Array.isArray(frame)) {
      this._emit("error", { error: new RealtimeError("bad_frame", "frame from the server is not an object") });
      return null;
    }
    return frame;
  }

  _onFrame(data) {
    const frame = this._parseFrame(data);
    if (!frame) return;
    const type = frame.type;
    if (this.state === "connecting") {
      if (type === "welcome") this._onWelcome(frame);
      return;
    }
    // Replies and error frames are the server's own frames: they never carry a
    // `timestamp`, while every message a backend sends does (the server adds it).
    if (REPLY_FRAME_TYPES.has(type) && !("timestamp" in frame)) {
      const pending = frame.ref !== undefined && frame.ref !== null ? this._pending.get(String(frame.ref)) : undefined;
      if (pending && (type === pending.expect || type === "error")) {
        this._pending.delete(String(frame.ref));
        clearTimeout(pending.timer);
        if (type === "error") {
          pending.reject(new RealtimeError(frame.code || "error", frame.message || frame.code || "error", { frame }));
        } else {
          // Before the next frame is read: a promise callback could run after
          // frames that follow this reply (a replay right behind `subscribed`).
          if (pending.onReply) pending.onReply(frame);
          pending.resolve(frame);
        }
      } else if (type === "error" && (frame.ref === undefined || frame.ref === null)) {
        // An error for a frame whose ref the server could not read.
        this._emit("error", { error: new RealtimeError(frame.code || "error", frame.message || "error frame", { frame }) });
      }
      // Otherwise a late reply to a command that already timed out: dropped.
      return;
    }
    this._deliver(frame);
  }

  /** A frame that is no reply: a notice (missed, join, leave) or a message. */
  _deliver(frame) {
    const type = frame.type;
    if (TOPIC_NOTICES.has(type) && !("timestamp" in frame) && typeof frame.topic === "string") {
      if (type === "missed") this._onMissed(frame);
      else this._onPresenceChange(type, frame);
      return;
    }
    if (type === "server-shutdown") this._shutdownNotice = true;
    this._dispatch(frame);
  }

  _dispatch(message) {
    if (typeof message.topic === "string") {
      const entry = this._topics.get(message.topic);
      if (entry) {
        // Only on topics the server answered with a position: elsewhere an
        // `offset` field is the application's own.
        const at = entry.position ? positionOf(message) : null;
        if (at) {
          // Defensive: the server merges replay and live by offset already.
          if (isDuplicate(entry.position, at)) return;
          entry.position = at;
        }
        for (const h of [...entry.handlers]) this._call(h, message);
      }
    } else {
      const set = this._handlers.get(message.type);
      if (set) for (const h of [...set]) this._call(h, message);
    }
    const all = this._handlers.get("*");
    if (all) for (const h of [...all]) this._call(h, message);
  }

  /** A `missed` notice: messages on the topic may not have reached this
   * connection; on a history topic delivery continues after its position. */
  _onMissed(frame) {
    const entry = this._topics.get(frame.topic);
    if (!entry) return;
    const at = positionOf(frame);
    if (at) entry.position = at;
    const event = { topic: frame.topic, reason: frame.reason };
    if (at) Object.assign(event, at);
    this._emit("missed", event);
  }

  /** A `join` or `leave` notice on a kept topic: to the subscription's
   * `onJoin`/`onLeave` callbacks, then to the client's listeners. */
  _onPresenceChange(type, frame) {
    const entry = this._topics.get(frame.topic);
    if (!entry) return;
    const event = { type, topic: frame.topic, userId: frame.user_id, connectionId: frame.connection_id };
    const name = type === "join" ? "onJoin" : "onLeave";
    for (const callbacks of [...entry.presence.values()]) {
      if (callbacks[name]) this._call(callbacks[name], event);
    }
    this._emit(type, event);
  }

  _onWelcome(frame) {
    this._clearTimer("_connectTimer");
    this.connectionId = frame.connection_id ?? null;
    this.userId = frame.user_id ?? null;
    this.roles = Array.isArray(frame.roles) ? frame.roles : [];
    this.expiresAt = typeof frame.expires_at === "number" ? frame.expires_at : null;
    this._welcomedAt = now();
    this._shutdownNotice = false;
    this._refreshUnsupported = false;
    this._decided = this._using;
    this._reopeningAfterClose = false;
    this._setState("connected");
    if (this._using === "sse") {
      // The stream subscribed its topics itself: their `subscribed` frames follow.
      this._ws.welcome = frame;
      this._catchUpNext = false;
      this._armStreamTimer(this._ws);
    } else {
      this._catchUp = this._catchUpNext;
      this._catchUpNext = false;
      this._catchUpChain = Promise.resolve();
      // Every kept topic again (and those queued while disconnected): a first
      // batch at once, the rest paced under the server's command rate limit.
      this._restoreQueue = [...this._topics.keys()];
      this._pumpSubscribes(this.options.restoreBatch);
    }
    this._scheduleRefresh();
    this._scheduleHeartbeat();
    this._emit("connected", {
      connectionId: this.connectionId,
      userId: this.userId,
      roles: this.roles,
      expiresAt: this.expiresAt,
      transport: this._using,
      welcome: frame,
    });
    // Topics subscribed while the stream was being opened need a stream with them.
    if (this._using === "sse" && this.state === "connected") this._scheduleReopen();
  }

  // ---------------------------------------------------------------- commands

  _command(frame, timeout) {
    if (this._decided === "sse") return Promise.reject(unsupported(frame.action));
    if (this.state !== "connected" || !this._ws) {
      return Promise.reject(new RealtimeError("not_connected", `cannot ${frame.action}: not connected`));
    }
    return this._request(frame, timeout);
  }

  _request(frame, timeout) {
    return this._send(frame, timeout).promise;
  }

  /** Sends a command with a fresh `ref`; the promise settles with its reply.
   * `onReply` runs synchronously when the reply is read. */
  _send(frame, timeout = this.options.timeout, onReply = null) {
    const ws = this._ws;
    if (!ws || this.state !== "connected") {
      return { ref: null, promise: Promise.reject(new RealtimeError("not_connected", `cannot ${frame.action}: not connected`)) };
    }
    const ref = String(this._nextRef++);
    const promise = new Promise((resolve, reject) => {
      const pending = { expect: REPLY_TYPES[frame.action], resolve, reject, timer: null, onReply };
      pending.timer = setTimeout(() => {
        if (this._pending.get(ref) !== pending) return;
        this._pending.delete(ref);
        reject(new RealtimeError("timeout", `no reply to ${frame.action} within ${timeout} ms`));
      }, timeout);
      this._pending.set(ref, pending);
      try {
        ws.send(JSON.stringify({ ...frame, ref }));
      } catch (err) {
        this._pending.delete(ref);
        clearTimeout(pending.timer);
        reject(new RealtimeError("not_connected", `send failed: ${err && err.message ? err.message : err}`));
      }
    });
    return { ref, promise };
  }

  /** Sends `subscribe` for a kept topic; `restore` marks a re-subscription after a reconnect.
   * A history topic resumes from its last delivered position (`since`). */
  _sendSubscribe(topic, entry, restore) {
    if (this.state !== "connected") return;
    const timeout = entry.timeout ?? this.options.timeout;
    const generation = this._generation;
    const since = entry.position ?? entry.since;
    const frame = { action: "subscribe", topic };
    if (since) frame.since = { offset: since.offset, epoch: since.epoch };
    // Taken when the reply is read, so the position is in place for the replay
    // frames right behind it, and the `resubscribed` event comes before them.
    const onReply = (reply) => {
      if (this._topics.get(topic) !== entry || entry.ref !== ref) return;
      entry.ref = null;
      entry.active = true;
      entry.since = null;
      const result = this._onSubscribed(topic, entry, reply, since, restore);
      this._settleWaiters(entry, null, result);
      if (restore) this._emit("resubscribed", result);
    };
    const { ref, promise: request } = this._send(frame, timeout, onReply);
    entry.ref = ref;
    request.then(
      () => {},
      (error) => {
        if (this._topics.get(topic) !== entry || entry.ref !== ref) return;
        entry.ref = null;
        if (error.code === "disconnected") return; // re-sent after the reconnect (or rejected if terminal)
        if (restore) {
          error.topic = topic;
          if (error.code === "rate_limited" || error.code === "history_unavailable") {
            // Kept and tried again after a pause of the whole paced queue:
            // the server's rate limit, or its history store, recovers by itself.
            if (error.code === "history_unavailable") this._emit("error", { error, topic });
            if (generation === this._generation) {
              this._restoreQueue.push(topic);
              this._clearTimer("_restoreTimer");
              this._restoreTimer = setTimeout(() => this._pumpSubscribes(this._paceBatch()), this.options.rateLimitRetryDelay);
            }
            return;
          }
          if (error.code === "timeout") {
            // Kept (restored on the next connection); the connection is probably going away.
            this._emit("error", { error, topic });
            return;
          }
          this._topics.delete(topic);
          this._emit("error", { error, topic });
          return;
        }
        // A first subscribe that failed: the topic is not kept.
        this._topics.delete(topic);
        error.topic = topic;
        if (error.code === "timeout" && this.state === "connected") {
          // The server may still carry it out late: undo it.
          this._request({ action: "unsubscribe", topic }).catch(() => {});
        }
        this._settleWaiters(entry, error);
      },
    );
  }

  /**
   * Takes the position from a `subscribed` reply and builds what the subscribe
   * resolves to (and a restore's `resubscribed` event carries).
   * @param {{offset: number, epoch: string} | null} since the position sent, if any
   * @param {boolean} restore whether this re-subscribes a topic after a reconnect
   */
  _onSubscribed(topic, entry, reply, since, restore) {
    const at = positionOf(reply);
    const result = { topic };
    if (at) Object.assign(result, at);
    if (since) {
      result.recovered = reply.recovered === true;
      if (!result.recovered) result.reason = typeof reply.reason === "string" ? reply.reason : "no_history";
    } else if (restore) {
      // A restore of a topic without history: whatever was published while
      // disconnected is gone, and the application has to know it.
      result.recovered = false;
      result.reason = "no_history";
    }
    if (!at) {
      entry.position = null;
    } else if (!(since && result.recovered)) {
      // Not recovered (or a first subscribe): delivery starts after the topic's
      // current position. Recovered: the replay moves the position on from
      // `since`, whatever the reply says the top is.
      entry.position = at;
    } else {
      entry.position = { offset: since.offset, epoch: since.epoch };
    }
    return result;
  }

  /** What a subscribe of an already confirmed topic resolves to: the topic and its position. */
  _subscription(topic, entry) {
    return entry.position ? { topic, ...entry.position } : { topic };
  }

  /** Sends up to `count` subscribes waiting in the queue; schedules the rest. */
  _pumpSubscribes(count) {
    this._restoreTimer = null;
    if (this.state !== "connected") return;
    let sent = 0;
    while (sent < count && this._restoreQueue.length > 0) {
      const topic = this._restoreQueue.shift();
      const entry = this._topics.get(topic);
      if (!entry || entry.ref !== null) continue; // forgotten, or already sent
      if (this._catchUp && entry.active && entry.position) this._queueCatchUp(topic, entry);
      else this._sendSubscribe(topic, entry, entry.active);
      sent++;
    }
    if (this._restoreQueue.length > 0 && !this._restoreTimer) {
      this._restoreTimer = setTimeout(() => this._pumpSubscribes(this._paceBatch()), RESTORE_STEP_MS);
    }
  }

  /**
   * Catches a history topic up in `history` pages, then subscribes with `since`
   * for the rest. Pages of every topic go one at a time, paced at restoreRate,
   * behind those queued before.
   */
  _queueCatchUp(topic, entry) {
    const token = `catch-up:${this._nextRef++}`;
    entry.ref = token; // in flight: neither the pump nor a new subscribe sends it meanwhile
    const generation = this._generation;
    const current = () => generation === this._generation && this._topics.get(topic) === entry && entry.ref === token;
    const pause = (ms) => new Promise((r) => setTimeout(r, ms));
    const step = 1000 / Math.max(1, this.options.restoreRate);
    this._catchUpChain = this._catchUpChain.then(async () => {
      while (current() && entry.position) {
        let page;
        try {
          page = await this._request({ action: "history", topic, since: { ...entry.position }, limit: CATCH_UP_PAGE });
        } catch (error) {
          if (error.code === "rate_limited" && current()) {
            await pause(this.options.rateLimitRetryDelay);
            continue;
          }
          break; // the subscribe below answers for it (and reports it)
        }
        if (!current()) return;
        // Not recoverable (trimmed, other epoch): the subscribe says so.
        if (page.recovered !== true || !Array.isArray(page.publications)) break;
        for (const message of page.publications) {
          if (message && typeof message === "object" && message.topic === topic) this._dispatch(message);
        }
        const top = positionOf(page);
        const behind = top && entry.position && top.epoch === entry.position.epoch ? top.offset - entry.position.offset : 0;
        if (page.publications.length === 0 || behind <= CATCH_UP_PAGE) break;
        await pause(step);
      }
      if (!current()) return;
      entry.ref = null;
      this._sendSubscribe(topic, entry, true);
      await pause(step);
    }).catch(reportUncaught);
  }

  _paceBatch() {
    return Math.max(1, Math.round((this.options.restoreRate * RESTORE_STEP_MS) / 1000));
  }

  _settleWaiters(entry, error, value) {
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const w of waiters) {
      if (error) w.reject(error);
      else w.resolve(value);
    }
  }

  /** Rejects every subscribe never confirmed by the server and forgets its topic. */
  _rejectQueued(code, message) {
    for (const [topic, entry] of [...this._topics]) {
      if (!entry.active) {
        this._topics.delete(topic);
        this._settleWaiters(entry, new RealtimeError(code, message, { topic }));
      }
    }
  }

  // ------------------------------------------------------------------- SSE

  /** Opens the connection attempt's stream with every kept topic and the last cursor. */
  _openStream(token) {
    const stream = this._newStream(token, this._streamTopics());
    this._ws = stream;
    this._attemptTransport = "sse";
  }

  /** A stream with `topics`, resuming from the last event id read, its callbacks set. */
  _newStream(token, topics) {
    const url = new URL(this._sseUrl.href);
    url.searchParams.set("token", token);
    for (const topic of topics) url.searchParams.append("topic", topic);
    // Each history topic resumes after the last position delivered here (or
    // from a first subscribe's `since`), exactly as a WebSocket `since`.
    const positions = [];
    for (const topic of topics) {
      const entry = this._topics.get(topic);
      const at = entry && (entry.position ?? entry.since);
      if (at) positions.push([topic, at]);
    }
    if (positions.length > 0) url.searchParams.set("last_event_id", encodeCursor(positions));
    const stream = new EventStream(this._fetch, url, topics);
    stream.token = token;
    stream.onevent = (event) => this._onStreamEvent(stream, event);
    stream.onrefused = (status, body) => this._onStreamRefused(stream, status, body);
    stream.onend = (error) => this._onStreamEnd(stream, error);
    return stream;
  }

  /** The kept topics a stream carries: the first SSE_MAX_TOPICS (later ones are
   * refused here), but none waiting to be tried again after an error. */
  _streamTopics() {
    const at = monotonic();
    const topics = [];
    for (const [topic, entry] of this._topics) {
      if (entry.retryAt && entry.retryAt > at) continue;
      entry.retryAt = 0;
      topics.push(topic);
    }
    if (topics.length <= SSE_MAX_TOPICS) return topics;
    for (const topic of topics.slice(SSE_MAX_TOPICS)) {
      this._refuseTopic(
        topic,
        new RealtimeError("limit_exceeded", `an SSE stream carries at most ${SSE_MAX_TOPICS} topics`, { topic }),
      );
    }
    return topics.slice(0, SSE_MAX_TOPICS);
  }

  /** Forgets `topic` because the server (or the stream's limit) refused it: its
   * pending subscribes reject with `error`; a confirmed one is an `error` event. */
  _refuseTopic(topic, error) {
    const entry = this._topics.get(topic);
    if (!entry) return;
    this._topics.delete(topic);
    const own = new RealtimeError(error.code, error.message, { ...error, topic });
    if (entry.active) this._emit("error", { error: own, topic });
    else this._settleWaiters(entry, own);
  }

  _onStreamEvent(stream, event) {
    if (event.type === "close") {
      this._onStreamClose(stream, event.data);
      return;
    }
    if (event.type !== "message") return; // no other event type is defined
    const frame = this._parseFrame(event.data);
    if (!frame) return;
    if (stream === this._ws && this.state === "connecting") {
      if (frame.type === "welcome") this._onWelcome(frame);
    } else if (stream === this._ws || stream === this._next) {
      this._onStreamFrame(stream, frame);
    }
  }

  /**
   * A frame of the connection's stream, or of the stream replacing it (make
   * before break). Each kept topic is delivered from one stream: the old one
   * until the new one's `subscribed` frame for it; frames without a kept topic
   * from the old one until the new one's welcome.
   */
  _onStreamFrame(stream, frame) {
    const type = frame.type;
    if (stream === this._next && !stream.welcome) {
      if (type === "welcome") {
        stream.welcome = frame;
        this._maybePromote(stream);
      }
      return;
    }
    if (REPLY_FRAME_TYPES.has(type) && !("timestamp" in frame)) {
      if (type === "subscribed" && typeof frame.topic === "string") this._onStreamSubscribed(stream, frame);
      else if (type === "error" && stream.awaiting.size > 0) this._onStreamTopicError(stream, frame);
      else if (type === "error" && this._ownsUnkept(stream)) {
        this._emit("error", { error: new RealtimeError(frame.code || "error", frame.message || "error frame", { frame }) });
      }
      return;
    }
    const topic = typeof frame.topic === "string" ? frame.topic : null;
    const entry = topic === null ? undefined : this._topics.get(topic);
    if (entry) {
      if (entry.stream !== stream) return;
    } else if (topic !== null && stream.topics.has(topic)) {
      return; // a topic this client let go of, until a stream without it takes over
    } else if (!this._ownsUnkept(stream)) {
      return;
    }
    this._deliver(frame);
  }

  /** Whether `stream` delivers the frames of no kept topic (direct sends, notices). */
  _ownsUnkept(stream) {
    const next = this._next;
    return next && next.welcome ? stream === next : stream === this._ws;
  }

  /** A stream's `subscribed` frame for one of its query topics. */
  _onStreamSubscribed(stream, frame) {
    const topic = frame.topic;
    if (!stream.awaiting.delete(topic)) return; // a server-side subscription, not one of ours
    const entry = this._topics.get(topic);
    if (entry && entry.stream !== stream) {
      // Carried on from the stream this one replaces (rather than restored
      // after a reconnect, or tried again after an error).
      const carried = stream === this._next && entry.stream === this._ws;
      entry.stream = stream;
      entry.ref = null;
      if (!entry.active) {
        // A first subscribe (its `since` was in the cursor).
        const since = entry.since;
        entry.active = true;
        entry.since = null;
        this._settleWaiters(entry, null, this._onSubscribed(topic, entry, frame, since, false));
      } else if (carried) {
        // Carried on by the new stream from the position delivered when it was
        // opened (what the old stream delivered since is dropped by position),
        // or the new stream says it could not.
        const at = positionOf(frame);
        if (at && entry.position && frame.recovered !== true) {
          entry.position = at;
          const reason = typeof frame.reason === "string" ? frame.reason : "no_history";
          this._emit("resubscribed", { topic, ...at, recovered: false, reason });
        }
      } else {
        // A restore: exactly as a WebSocket restore with `since`.
        this._emit("resubscribed", this._onSubscribed(topic, entry, frame, entry.position, true));
      }
    }
    if (stream === this._next) this._maybePromote(stream);
    else if (stream === this._ws && stream.awaiting.size === 0) this._scheduleReopen(); // changes made meanwhile
  }

  /**
   * An `error` frame while a stream is announcing its topics: the server could
   * not subscribe the next one (a history topic whose store is down:
   * `history_unavailable`). Topics are announced in the query's order, so it is
   * the first one still awaited. A first subscribe rejects with it; a kept topic
   * is an `error` event and is tried again on a stream opened
   * `rateLimitRetryDelay` later, as a WebSocket restore is.
   */
  _onStreamTopicError(stream, frame) {
    const topic = stream.awaiting.values().next().value;
    stream.awaiting.delete(topic);
    stream.topics.delete(topic);
    const code = frame.code || "error";
    const error = new RealtimeError(code, frame.message || code, { frame, topic });
    const entry = this._topics.get(topic);
    if (entry && entry.stream !== stream) {
      if (!entry.active) {
        this._topics.delete(topic);
        this._settleWaiters(entry, error);
      } else {
        this._emit("error", { error, topic });
        entry.retryAt = monotonic() + this.options.rateLimitRetryDelay;
        this._clearTimer("_retryTimer");
        this._retryTimer = setTimeout(() => {
          this._retryTimer = null;
          // Every pause has ended (the timer is rearmed at each error). Cleared
          // here rather than compared with the clock: a timer may fire a
          // fraction of a millisecond before monotonic() reaches retryAt.
          for (const kept of this._topics.values()) kept.retryAt = 0;
          this._scheduleReopen();
        }, this.options.rateLimitRetryDelay);
      }
    }
    if (stream === this._next) this._maybePromote(stream);
    else if (stream === this._ws && stream.awaiting.size === 0) this._scheduleReopen();
  }

  /** A stream that did not confirm each of its topics within the timeout: those are refused. */
  _armStreamTimer(stream) {
    clearTimeout(stream.timer);
    const timeout = this.options.timeout;
    stream.timer = setTimeout(() => {
      stream.timer = null;
      if (stream.closed || stream.awaiting.size === 0) return;
      if (stream === this._next) {
        this._next = null;
        stream.close();
        if (!stream.welcome) {
          // Nothing was taken from the old stream: it carries on without the new topics.
          this._keepFreshToken(stream);
          for (const topic of stream.topics) {
            const entry = this._topics.get(topic);
            if (entry && !entry.active) {
              this._refuseTopic(topic, new RealtimeError("timeout", `no subscribed frame for ${topic} within ${timeout} ms`));
            }
          }
          this._scheduleReopen();
          return;
        }
        this._teardown(1006, "the replacement stream did not confirm its topics", { sendClose: true });
        return;
      }
      if (stream !== this._ws) return;
      for (const topic of stream.awaiting) {
        this._refuseTopic(topic, new RealtimeError("timeout", `no subscribed frame for ${topic} within ${timeout} ms`));
      }
      // Awaited no more: the reopen waits for an empty set, and would otherwise
      // never replace this stream (later subscribes would never settle).
      stream.awaiting.clear();
      this._scheduleReopen();
    }, timeout);
  }

  /** Replaces the stream on the next microtask when the kept topics (or the token) changed. */
  _scheduleReopen() {
    if (this._reopenQueued) return;
    this._reopenQueued = true;
    queueMicrotask(() => {
      this._reopenQueued = false;
      this._reopen();
    });
  }

  /**
   * Opens a stream with the kept topics and the last cursor next to the current
   * one, which it replaces once it has confirmed every topic (make before
   * break). One at a time: changes made meanwhile are taken up after it.
   */
  _reopen() {
    const current = this._ws;
    if (this.state !== "connected" || this._using !== "sse" || !(current instanceof EventStream) || this._next) return;
    if (current.awaiting.size > 0) return; // taken up once it confirmed its own topics
    const wanted = this._streamTopics();
    // Carried and delivered by this stream: a topic unsubscribed and subscribed
    // again while the stream still carries it waits for a `subscribed` frame
    // this stream has already sent, so it needs a new stream as well.
    const same =
      wanted.length === current.topics.size &&
      wanted.every((t) => current.topics.has(t) && this._topics.get(t).stream === current);
    if (same && !this._freshToken) {
      this._settleUnsubscribes(current);
      return;
    }
    if (this._breakBeforeMake) {
      // The server allows this user one connection: close, then reopen.
      this._teardown(4002, "reopening the stream", { sendClose: true, reconnectNow: true });
      return;
    }
    const token = this._freshToken ?? current.token;
    this._freshToken = null;
    this._next = this._newStream(token, wanted);
    this._armStreamTimer(this._next);
  }

  /** The replacement stream confirmed every topic: it becomes the connection's. */
  _maybePromote(next) {
    if (next !== this._next || !next.welcome || next.awaiting.size > 0) return;
    const old = this._ws;
    this._next = null;
    clearTimeout(next.timer);
    this._ws = next;
    if (old instanceof EventStream) old.close();
    const welcome = next.welcome;
    this.connectionId = welcome.connection_id ?? null;
    this.userId = welcome.user_id ?? null;
    this.roles = Array.isArray(welcome.roles) ? welcome.roles : [];
    this.expiresAt = typeof welcome.expires_at === "number" ? welcome.expires_at : null;
    const refreshed = old && next.token !== old.token;
    this._settleUnsubscribes(next);
    this._scheduleRefresh();
    this._scheduleHeartbeat();
    this._emit("connected", {
      connectionId: this.connectionId,
      userId: this.userId,
      roles: this.roles,
      expiresAt: this.expiresAt,
      transport: "sse",
      reopened: true,
      welcome,
    });
    if (refreshed) this._emit("refreshed", { expiresAt: this.expiresAt });
    this._scheduleReopen();
  }

  /** A replacement stream given up before it took over: a fresh token it was
   * opened with goes to the next one (the old stream's token is about to expire). */
  _keepFreshToken(stream) {
    if (!this._freshToken && this._ws instanceof EventStream && stream.token !== this._ws.token) this._freshToken = stream.token;
  }

  /** Resolves the unsubscribes whose topic `stream` does not carry, or carries
   * only for a subscription made since (the unsubscribed one is gone then too). */
  _settleUnsubscribes(stream) {
    const waiting = this._unsubscribeWaiters;
    this._unsubscribeWaiters = [];
    for (const waiter of waiting) {
      const carried = stream.topics.has(waiter.topic) && this._topics.get(waiter.topic)?.stream !== stream;
      if (carried || this._next?.topics.has(waiter.topic)) this._unsubscribeWaiters.push(waiter);
      else waiter.resolve();
    }
  }

  /** `event: close`: the server's close code and reason, then the body ends. */
  _onStreamClose(stream, data) {
    let code = 1006;
    let reason = "";
    try {
      const frame = JSON.parse(data);
      if (Number.isInteger(frame.code)) code = frame.code;
      if (typeof frame.reason === "string") reason = frame.reason;
    } catch {
      // a close event without its JSON: an abnormal end
    }
    if (stream === this._next && code === 3504 && !this._breakBeforeMake) {
      // The user's connection limit leaves no room for a second stream: from
      // now on the stream is closed before its replacement opens.
      this._breakBeforeMake = true;
      this._next = null;
      stream.close();
      this._teardown(4002, "reopening the stream", { sendClose: true, reconnectNow: true });
      return;
    }
    if (stream === this._ws || stream === this._next) this._teardown(code, reason, { sendClose: true });
  }

  /** The stream's request failed or its body ended without a close event. */
  _onStreamEnd(stream, error) {
    if (stream !== this._ws && stream !== this._next) return;
    this._teardown(1006, error ? "connection failed" : "stream ended", { sendClose: true });
  }

  /**
   * The SSE request was answered with an error instead of a stream. A refused
   * topic (`invalid_topic`, `forbidden`, `proxy_unavailable` naming it, or
   * `limit_exceeded`) is dropped and the stream opened again without it; any
   * other refusal fails the attempt like a refused WebSocket handshake.
   */
  _onStreamRefused(stream, status, body) {
    if (stream !== this._ws && stream !== this._next) return;
    const generation = this._generation;
    const code = typeof body?.error === "string" ? body.error : `http_${status}`;
    const message = typeof body?.message === "string" ? body.message : `the SSE request was refused with HTTP ${status}`;
    const error = new RealtimeError(code, message, { status, body });
    let dropped = false;
    const topic = typeof body?.topic === "string" ? body.topic : null;
    if (topic !== null && stream.topics.has(topic)) {
      this._refuseTopic(topic, error);
      dropped = true;
    } else if (code === "limit_exceeded") {
      for (const t of stream.topics) {
        const entry = this._topics.get(t);
        if (entry && !entry.active) {
          this._refuseTopic(t, error);
          dropped = true;
        }
      }
    }
    if (stream === this._next) {
      this._next = null;
      if (dropped) {
        this._keepFreshToken(stream);
        this._scheduleReopen();
        return;
      }
      this._emit("error", { error });
      if (generation !== this._generation) return; // an error listener closed the client
      this._teardown(1006, message, { sendClose: true, status });
      return;
    }
    if (!dropped) this._emit("error", { error });
    if (generation !== this._generation) return; // an error listener (or a refused topic's) closed the client
    this._teardown(1006, message, { sendClose: true, status, reconnectNow: dropped });
  }

  // ----------------------------------------------------------- token refresh

  _scheduleRefresh() {
    this._clearTimer("_refreshTimer");
    if (!this.options.refresh || typeof this._token !== "function" || this._refreshUnsupported) return;
    if (typeof this.expiresAt !== "number" || !Number.isFinite(this.expiresAt)) return;
    const delay = refreshDelay(this.expiresAt * 1000, now(), this.options);
    // Beyond setTimeout's 2^31-1 ms range: nothing to plan yet.
    if (delay > 0x7fffffff) return;
    const generation = this._generation;
    this._refreshTimer = setTimeout(() => {
      this._refreshTimer = null;
      if (generation === this._generation) this._autoRefresh(generation);
    }, delay);
  }

  async _autoRefresh(generation) {
    let token;
    try {
      token = await this._token({ reason: "refresh" });
      if (typeof token !== "string" || token === "") throw new TypeError("the token function returned no string");
    } catch (err) {
      if (generation !== this._generation) return;
      this._emit("error", { error: new RealtimeError("token", `token function failed: ${err && err.message ? err.message : err}`, { cause: err }) });
      this._retryRefreshLater(generation);
      return;
    }
    if (generation !== this._generation || this.state !== "connected") return;
    if (this._using === "sse") {
      // A stream's token cannot change: a stream with the fresh one replaces it.
      this._freshToken = token;
      this._scheduleReopen();
      return;
    }
    let reply;
    try {
      reply = await this._request({ action: "refresh", token });
    } catch (error) {
      if (generation !== this._generation) return;
      this._emit("error", { error });
      if (generation !== this._generation) return; // an error listener closed the client
      if (error.code === "invalid_token" || error.code === "token_mismatch") {
        // Reconnect at once with a fresh token: the handshake decides.
        this._teardown(4000, "token refresh failed", { sendClose: true, clientCode: 4000, reconnectNow: true });
      } else if (error.code === "unknown_action") {
        this._refreshUnsupported = true;
      } else {
        this._retryRefreshLater(generation);
      }
      return;
    }
    if (generation !== this._generation) return;
    this._onRefreshed(reply);
  }

  _retryRefreshLater(generation) {
    if (typeof this.expiresAt !== "number") return;
    const left = this.expiresAt * 1000 - now();
    if (left < 2000) return; // the server will close with 3005; the reconnect fetches a token
    this._clearTimer("_refreshTimer");
    this._refreshTimer = setTimeout(() => {
      this._refreshTimer = null;
      if (generation === this._generation) this._autoRefresh(generation);
    }, Math.min(left / 2, 5000));
  }

  _onRefreshed(reply) {
    if (typeof reply.expires_at === "number") this.expiresAt = reply.expires_at;
    this._scheduleRefresh();
    this._emit("refreshed", { expiresAt: this.expiresAt });
  }

  // ---------------------------------------------------------------- heartbeat

  _scheduleHeartbeat() {
    this._clearTimer("_heartbeatTimer");
    const interval = this.options.heartbeatInterval;
    if (!interval || interval <= 0) return;
    const generation = this._generation;
    if (this._using === "sse") {
      // A stream cannot ping: one that brought nothing, not even the server's
      // heartbeat comment, for heartbeatInterval + timeout is taken for dead.
      const limit = interval + this.options.timeout;
      const check = () => {
        this._heartbeatTimer = null;
        if (generation !== this._generation || this.state !== "connected" || !this._ws) return;
        const idle = monotonic() - this._ws.lastActivity;
        if (idle >= limit) {
          this._emit("error", { error: new RealtimeError("timeout", `nothing received for ${Math.round(idle)} ms: reconnecting`) });
          if (generation !== this._generation) return; // an error listener closed the client
          this._teardown(4001, "heartbeat timeout", { sendClose: true, clientCode: 4001 });
          return;
        }
        this._heartbeatTimer = setTimeout(check, limit - idle);
      };
      this._heartbeatTimer = setTimeout(check, limit);
      return;
    }
    this._heartbeatTimer = setTimeout(() => {
      this._heartbeatTimer = null;
      if (generation !== this._generation || this.state !== "connected") return;
      this._request({ action: "ping" }).then(
        () => {
          if (generation === this._generation) this._scheduleHeartbeat();
        },
        (error) => {
          if (generation !== this._generation) return;
          if (error.code === "timeout") {
            this._emit("error", { error: new RealtimeError("timeout", "heartbeat ping unanswered: reconnecting") });
            if (generation !== this._generation) return; // an error listener closed the client
            this._teardown(4001, "heartbeat timeout", { sendClose: true, clientCode: 4001 });
          } else {
            this._scheduleHeartbeat();
          }
        },
      );
    }, interval);
  }

  // ------------------------------------------------------------------ helpers

  _setState(state) {
    this.state = state;
  }

  _emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set || set.size === 0) {
      return;
    }
    const event = { type, ...detail };
    for (const l of [...set]) {
      if (l.once) set.delete(l);
      try {
        l.fn.call(this, event);
      } catch (err) {
        reportUncaught(err);
      }
    }
  }

  _call(handler, message) {
    try {
      handler(message);
    } catch (err) {
      if (this._listeners.get("error")?.size) {
        this._emit("error", { error: err, message });
      } else {
        reportUncaught(err);
      }
    }
  }

  _clearTimer(name) {
    if (this[name]) {
      clearTimeout(this[name]);
      this[name] = null;
    }
  }

}

export default RealtimeClient;
