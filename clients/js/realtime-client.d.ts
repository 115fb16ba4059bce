// Type declarations for realtime-client.js (Boundary Realtime JavaScript client).
// The wire protocol is described in docs/PROTOCOL.md; the API in README.md.

/** What the client is doing. */
export type ConnectionState = "disconnected" | "connecting" | "connected";

/** Backoff jitter: `"equal"` (delay in [d/2, d]), `"full"` ([0, d]) or `"none"` (d). */
export type Jitter = "equal" | "full" | "none";

/** What the token function is called for. */
export interface TokenRequest {
  /** `"connect"`: a connection attempt (the first one or a reconnect); `"refresh"`: a `refresh` before expiry. */
  reason: "connect" | "refresh";
  /** Consecutive failed attempts so far (connect only). */
  attempt?: number;
}

/** Returns a JWT; called on every connection attempt and before every refresh. */
export type TokenFunction = (request: TokenRequest) => string | Promise<string>;

/** Any class constructible like the standard `WebSocket` (browsers, Node 22+, undici, `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/**
 * How the client reaches the server: `"websocket"` (everything), `"sse"`
 * (Server-Sent Events: receiving only; commands reject with
 * `unsupported_transport`) or `"auto"` (WebSocket, falling back to SSE where it
 * cannot get a welcome; see README.md, *Server-Sent Events*).
 */
export type Transport = "websocket" | "sse" | "auto";

/** A `fetch` with a streamed response body (browsers, Node 18+, undici). */
export type FetchFunction = (url: string, init: { method: string; headers: Record<string, string>; cache: string; signal?: AbortSignal }) => Promise<Response>;

/** Backoff settings (also accepted by {@link backoffDelay}). */
export interface BackoffOptions {
  /** Delay of the first retry before jitter, ms. Default 250. */
  initialDelay?: number;
  /** Growth factor per consecutive failed attempt. Default 2. */
  factor?: number;
  /** Cap on the delay before jitter, ms. Default 10000. */
  maxDelay?: number;
  /** Default `"equal"`. */
  jitter?: Jitter;
}

export interface RealtimeClientOptions extends BackoffOptions {
  /**
   * The JWT, or a function returning one (sync or async). A function is called
   * on every connection attempt and before every refresh, so expired tokens are
   * replaced; a static string is for short demos (it cannot be refreshed, and
   * once expired every reconnect is refused).
   */
  token: string | TokenFunction;
  /** Default `"websocket"`. */
  transport?: Transport;
  /** The SSE endpoint (http/https, or ws/wss turned into them). Default: the WebSocket URL with `/ws` replaced by `/sse`. */
  sseUrl?: string | URL | null;
  /** WebSocket implementation. Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** The fetch SSE streams are read with. Default `globalThis.fetch`. */
  fetch?: FetchFunction;
  /** Connect from the constructor (on the next microtask). Default true. */
  autoConnect?: boolean;
  /** A connection that stayed welcomed this long resets the backoff, ms. Default 5000. */
  stableAfter?: number;
  /** Give up after this many consecutive failed attempts. Default Infinity. */
  maxReconnectAttempts?: number;
  /** After a `server-shutdown` notice or close 1001, reconnect after a uniform random delay in [0, shutdownJitter] ms. Default 1000. */
  shutdownJitter?: number;
  /** Longest wait for a command's reply (subscribe, unsubscribe, publish, history, presence, ping, refresh), ms. Default 10000. */
  timeout?: number;
  /** Longest wait from the start of an attempt (token fetch included) to the welcome frame, ms. Default 10000. */
  connectTimeout?: number;
  /** Largest refresh margin, ms: refresh at `expiresAt - min(refreshMargin, 20% of the time left)`. Default 30000. */
  refreshMargin?: number;
  /** Refresh the token before expiry when `token` is a function. Default true. */
  refresh?: boolean;
  /**
   * Application ping interval to detect dead links while connected, ms; 0
   * disables. Default 30000. Over SSE (no pings): a stream that brought nothing,
   * not even the server's heartbeat comment, for this plus `timeout` is dead.
   */
  heartbeatInterval?: number;
  /** Subscribes sent at once after connecting (restores and queued ones); the rest are paced. Default 100. */
  restoreBatch?: number;
  /** Pace of the remaining subscribes, per second. Default 80 (under the server's default 100/s). */
  restoreRate?: number;
  /** A restore answered `rate_limited` is queued again and the paced queue pauses this long, ms. Default 1000. */
  rateLimitRetryDelay?: number;
  /** Random source in [0, 1) for jitter (a test hook). Default Math.random. */
  random?: () => number;
}

/** The defaults of every option. */
export declare const DEFAULT_OPTIONS: Readonly<Required<Omit<RealtimeClientOptions, "token" | "WebSocket" | "fetch" | "random">>>;

/**
 * Error with a stable `code`: a server error code (`bad_request`,
 * `unknown_action`, `invalid_topic`, `forbidden`, `internal`,
 * `bus_unavailable`, `invalid_token`, `token_mismatch`, `rate_limited`,
 * `limit_exceeded`, `no_history`, `history_unavailable`, `invalid_message`,
 * `no_presence`) or a client one:
 * - `timeout`: no reply within the timeout (or no welcome within connectTimeout)
 * - `not_connected`: a command issued while not connected
 * - `disconnected`: the connection closed before the reply (or for good, for a queued subscribe)
 * - `closed`: `close()` was called before a queued subscribe was confirmed
 * - `unsubscribed`: `unsubscribe()` was called before the server confirmed the subscribe
 * - `token`: the token function threw or returned no string
 * - `socket`: the WebSocket constructor threw
 * - `bad_frame`: the server sent something that is not a JSON object
 * - `unsupported_transport`: a command (publish, history, presence,
 *   presenceStats, ping, refreshToken) over SSE, which only receives
 *
 * A refused SSE request (a topic, the token) carries the HTTP `status` and the
 * JSON `body` the server answered.
 */
export declare class RealtimeError extends Error {
  constructor(code: string, message?: string, extra?: object);
  readonly name: "RealtimeError";
  readonly code: string;
  /** The topic, for subscribe failures. */
  topic?: string;
  /** The server's `error` frame, when the error came from one. */
  frame?: { type: "error"; code: string; message: string; ref?: string | number };
  /** The close code, for `disconnected`. */
  closeCode?: number;
  /** SSE: the HTTP status of a refused request. */
  status?: number;
  /** SSE: the JSON body of a refused request (`{error, reason?, topic?, message}`). */
  body?: { error: string; reason?: string; topic?: string; message?: string } | null;
}

/** A message delivered by the server: an object with a string `type` and a `timestamp`; topic messages carry `topic`. */
export interface RealtimeMessage {
  type: string;
  /** RFC 3339 UTC with milliseconds. */
  timestamp: string;
  /** Set by the server on topic messages. */
  topic?: string;
  /** On history topics: the publication's offset (1, 2, ... within its epoch). */
  offset?: number;
  /** On history topics: the epoch the offset belongs to. */
  epoch?: string;
  [field: string]: unknown;
}

/**
 * A place in a history topic: the last offset had, within an epoch (an opaque
 * string that changes when the topic's history is lost or reset). Offset 0 is
 * "before the first publication".
 */
export interface Position {
  offset: number;
  epoch: string;
}

/**
 * Why a position could not be recovered: `"trimmed"` (publications after it were
 * trimmed or expired), `"other_epoch"` (the history was lost or reset since),
 * `"ahead_of_top"` (not a position this epoch gave out), `"no_history"` (the
 * topic keeps no history).
 */
export type UnrecoveredReason = "trimmed" | "other_epoch" | "ahead_of_top" | "no_history";

/** Why a `missed` notice was sent. */
export type MissedReason = "bus_reconnected" | "history_lost" | "history_trimmed";

/**
 * What a subscribe resolves to, and what a `resubscribed` event carries.
 * `offset`/`epoch`: on a history topic, the position the server reported.
 * `recovered` (with `since`, and on every resubscription): whether every
 * publication after the position follows; `reason` when not.
 */
export interface SubscribeResult {
  topic: string;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  reason?: UnrecoveredReason;
}

export type MessageHandler<M extends RealtimeMessage = RealtimeMessage> = (message: M) => void;

/** The server's welcome frame. */
export interface WelcomeFrame {
  type: "welcome";
  connection_id: string;
  user_id: string;
  roles: string[];
  timestamp: string;
  expires_at?: number;
}

export interface ConnectingEvent {
  type: "connecting";
  /** Consecutive failed attempts before this one. */
  attempt: number;
  /** The transport this attempt uses. */
  transport: "websocket" | "sse";
}

export interface ConnectedEvent {
  type: "connected";
  /** The welcome's `connection_id`: how a backend reaches this one connection. */
  connectionId: string;
  userId: string;
  roles: string[];
  /** Token expiry, Unix seconds (null if the server sent none). */
  expiresAt: number | null;
  /** The transport of the connection. */
  transport: "websocket" | "sse";
  /**
   * SSE: true when a stream with a new topic set (or a fresh token) replaced
   * the connection's stream without a disconnect; `connectionId` is the new
   * stream's.
   */
  reopened?: boolean;
  welcome: WelcomeFrame;
}

export interface DisconnectedEvent {
  type: "disconnected";
  /**
   * Close code as seen by the client: the server's (1001, 3005, 3503, ...),
   * 1006 for a failed handshake or lost link, 1000 after `close()`, 4000 after a
   * refused refresh, 4001 after an unanswered heartbeat, 0 when the token
   * function failed and no socket was opened.
   */
  code: number;
  reason: string;
  /** Whether a reconnect is scheduled. */
  willReconnect: boolean;
  /** Whether this ends a welcomed connection (false: a failed attempt). */
  wasConnected: boolean;
  /** Delay before the next attempt, ms (when willReconnect). */
  delay?: number;
  /** The transport of the connection or attempt that ended. */
  transport: "websocket" | "sse";
  /** SSE: the HTTP status when the request was refused (the code is then 1006). */
  status?: number;
}

export interface ErrorEvent {
  type: "error";
  error: RealtimeError | Error;
  /** The topic, when a subscription restore failed. */
  topic?: string;
  /** The message, when a message handler threw. */
  message?: RealtimeMessage;
}

export interface RefreshedEvent {
  type: "refreshed";
  /** The new expiry, Unix seconds. */
  expiresAt: number | null;
}

/**
 * A kept topic was subscribed again after a reconnect. `recovered: true`: every
 * message published meanwhile follows (history topic, position still held).
 * `recovered: false`: messages may have been lost (`reason`; `"no_history"` for
 * every topic without history): refetch the state the topic carries.
 */
export interface ResubscribedEvent extends SubscribeResult {
  type: "resubscribed";
  recovered: boolean;
}

/**
 * The server says messages on `topic` may not have reached this connection
 * (`bus_reconnected` on topics without history; `history_lost`,
 * `history_trimmed` on history topics, with the position delivery continues
 * after). Refetch the state the topic carries.
 */
export interface MissedEvent {
  type: "missed";
  topic: string;
  reason: MissedReason;
  offset?: number;
  epoch?: string;
}

/**
 * A `join` or `leave` notice: on a topic whose namespace has `join_leave`, a
 * connection subscribed (`join`) or unsubscribed or closed (`leave`; also the
 * members of a server node that died, once its lease expired). Never sent for
 * this client's own connection. Notices are hints, one per change and not
 * coalesced: {@link RealtimeClient.presence} is the truth, to be read again
 * after a `resubscribed` or `missed` event.
 */
export interface PresenceChangeEvent {
  type: "join" | "leave";
  topic: string;
  userId: string;
  connectionId: string;
}

export interface JoinEvent extends PresenceChangeEvent {
  type: "join";
}

export interface LeaveEvent extends PresenceChangeEvent {
  type: "leave";
}

export interface RealtimeClientEventMap {
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: ErrorEvent;
  refreshed: RefreshedEvent;
  resubscribed: ResubscribedEvent;
  missed: MissedEvent;
  join: JoinEvent;
  leave: LeaveEvent;
}

export interface PublishedReply {
  type: "published";
  ref: string;
  /** Connections on this server node the message was queued to. */
  delivered: number;
  /** Whether it was also handed to the bus for other nodes. */
  relayed: boolean;
  /** On a history topic: the offset the publication got. */
  offset?: number;
  /** On a history topic: its epoch. */
  epoch?: string;
}

export interface CommandOptions {
  /** Overrides the `timeout` option for this call, ms. */
  timeout?: number;
}

export interface SubscribeOptions extends CommandOptions {
  /**
   * A position kept from earlier (e.g. saved before the page unloaded): the
   * first subscribe asks for every publication after it. Ignored when the
   * topic is already kept. Resubscriptions after a reconnect use the tracked
   * position by themselves.
   */
  since?: Position;
  /**
   * Called with every `join` notice on the topic (namespaces with `join_leave`),
   * until this handler is unsubscribed. Notices never reach `handler`.
   */
  onJoin?: (event: JoinEvent) => void;
  /** Called with every `leave` notice on the topic, like `onJoin`. */
  onLeave?: (event: LeaveEvent) => void;
}

export interface HistoryOptions extends CommandOptions {
  /** Publications after this position; without it, from the oldest held. */
  since?: Position;
  /** At most this many publications (the server caps it at 1000). */
  limit?: number;
}

/** The answer to {@link RealtimeClient.history}. */
export interface HistoryAnswer<M extends RealtimeMessage = RealtimeMessage> {
  type: "history";
  topic: string;
  /** In offset order, each a topic message with its `offset` and `epoch`. */
  publications: M[];
  /** The topic's current position. */
  offset: number;
  epoch: string;
  /** With `since`: whether the publications start right after it (false: from the oldest held). */
  recovered?: boolean;
}

/** One connection of a presence topic's member. */
export interface PresenceConnection {
  connection_id: string;
  /** When the connection was opened (RFC 3339 UTC with milliseconds). */
  connected_at: string;
  /** The connection's token metadata claims (every claim but `sub`, `exp`, `nbf`, `iat`, `iss`, `aud`, `roles`). */
  info: Record<string, unknown>;
}

/** A member of a presence topic: a user and those of its connections on the page, sorted by connection id. */
export interface PresenceUser {
  user_id: string;
  connections: PresenceConnection[];
}

export interface PresenceOptions extends CommandOptions {
  /** At most this many connections on the page: 1 to 1000 (the server refuses more with `bad_request`). Default 100. */
  limit?: number;
  /** The `cursor` of the previous page; omitted or null for the first page. */
  cursor?: string | null;
}

/** One page of {@link RealtimeClient.presence}. */
export interface PresencePage {
  topic: string;
  /** Sorted by user id. A user may continue on the next page. */
  users: PresenceUser[];
  /** Pass it back for the next page; null on the last one. */
  cursor: string | null;
  /**
   * True when the server's presence store was unreachable: the page then lists
   * only the members on the server node this client is connected to.
   */
  degraded: boolean;
}

/** What {@link RealtimeClient.presenceAll} resolves to: every page joined. */
export interface PresenceList {
  topic: string;
  /** Sorted by user id, one entry per user. */
  users: PresenceUser[];
  /** True when any page was degraded. */
  degraded: boolean;
}

/** What {@link RealtimeClient.presenceStats} resolves to. */
export interface PresenceStats {
  topic: string;
  /** Connections subscribed to the topic. */
  connections: number;
  /** Distinct users among them. */
  users: number;
  /** True when the store was unreachable: then the counts of this client's server node only. */
  degraded: boolean;
}

/**
 * A connection to a Boundary Realtime server: reconnects by itself with
 * backoff, restores subscriptions after every reconnect and refreshes its token
 * before expiry.
 */
export declare class RealtimeClient {
  /**
   * @param url the server's WebSocket endpoint, e.g. `wss://rt.example.com/ws`
   *   (http/https URLs are turned into ws/wss; in a browser a relative URL is
   *   resolved against the page). Existing query parameters are kept; the token
   *   goes in `token`.
   * @throws if no WebSocket implementation is available (transport
   *   "websocket"; "auto" then needs fetch), no fetch (transport "sse"), the
   *   token is missing, the URL is not ws/wss/http/https, or the SSE endpoint
   *   cannot be derived from it (pass `sseUrl`)
   */
  constructor(url: string | URL, options: RealtimeClientOptions);

  /** The options in force (defaults merged). */
  readonly options: Readonly<Required<Omit<RealtimeClientOptions, "token" | "WebSocket" | "fetch" | "random">>>;
  /** Current state. */
  readonly state: ConnectionState;
  /** The welcome's `connection_id`; null when not connected. */
  readonly connectionId: string | null;
  /** The user id of the last welcome; null before the first. */
  readonly userId: string | null;
  /** The roles of the last welcome. */
  readonly roles: string[];
  /** Token expiry (Unix seconds) from the last welcome or refresh; null when unknown. */
  readonly expiresAt: number | null;
  /** Topics kept: subscribed, or waiting to be. */
  readonly topics: string[];
  /** The transport of the current (or last) attempt; null before the first. */
  readonly transport: "websocket" | "sse" | null;

  /**
   * Starts connecting (done by the constructor unless `autoConnect: false`).
   * While waiting to reconnect it tries at once; a no-op while connecting or
   * connected. From then on the client reconnects by itself until `close()` or
   * a terminal close code.
   */
  connect(): void;

  /**
   * Closes for good: no reconnect, every timer cleared (Node can exit).
   * Commands in flight are rejected with `disconnected`, subscribes never
   * confirmed with `closed`. `connect()` may be called again; confirmed
   * subscriptions are then restored.
   */
  close(): void;

  /**
   * Subscribes `handler` to `topic` (several handlers per topic are fine).
   * Resolves on `subscribed`, with the position on a history topic (and
   * `recovered` when `since` was given); rejects with a {@link RealtimeError}
   * whose code is the server's (`forbidden`, `invalid_topic`, `limit_exceeded`,
   * `rate_limited`, `history_unavailable`, ...), `timeout`, `closed`,
   * `unsubscribed`, or `disconnected` (terminal close); a rejected topic is not
   * kept. While not connected the subscribe is queued and sent once connected
   * (the timeout runs from the send). Kept topics are re-subscribed after every
   * reconnect, history topics from their last delivered position; each one is
   * a `resubscribed` event saying whether it recovered, a failure an `error`
   * event. Messages of a history topic at or below the last delivered offset
   * are dropped (duplicates).
   *
   * Over SSE a stream's topics are fixed: the client opens a stream with the
   * new topic set (history topics resuming from their positions) and drops the
   * old one once the new one confirmed every topic; the subscribe resolves on
   * the new stream's `subscribed` frame (timeout: the `timeout` option), and a
   * refused topic rejects with the server's code and `status` while the old
   * stream carries on. At most 64 topics (`limit_exceeded` beyond).
   */
  subscribe<M extends RealtimeMessage = RealtimeMessage>(
    topic: string,
    handler: MessageHandler<M>,
    options?: SubscribeOptions,
  ): Promise<SubscribeResult>;

  /**
   * Reads a history topic's publications. Allowed to whoever may subscribe to
   * the topic. Rejects with `no_history`, `forbidden`, `history_unavailable`,
   * `not_connected`, or a TypeError for a malformed `since` or `limit`.
   */
  history<M extends RealtimeMessage = RealtimeMessage>(topic: string, options?: HistoryOptions): Promise<HistoryAnswer<M>>;

  /**
   * The last position delivered on a kept history topic: what the next
   * resubscription resumes from (save it to resume after a page reload with
   * `subscribe(topic, handler, { since })`). Null for other topics.
   */
  position(topic: string): Position | null;

  /**
   * One page of a presence topic's members: who is subscribed to it, grouped
   * by user. Allowed to whoever may subscribe to the topic (subscribing is not
   * required). Rejects with `no_presence` (the topic's namespace keeps no
   * presence), `forbidden`, `invalid_topic`, `bad_request` (a limit above 1000,
   * a cursor the server did not give out), `not_connected`, or a TypeError for
   * a limit that is not a positive integer or a cursor that is not a string.
   */
  presence(topic: string, options?: PresenceOptions): Promise<PresencePage>;

  /**
   * Every member of a presence topic: reads pages of `limit` (default 1000)
   * one after the other until the last and joins a user split across pages.
   * Under churn the list is not one instant's. Rejects like {@link presence}
   * (and with `bad_frame` if the server hands the same cursor back).
   */
  presenceAll(topic: string, options?: Omit<PresenceOptions, "cursor">): Promise<PresenceList>;

  /** A presence topic's counts, in constant time whatever its size. Rejects like {@link presence}. */
  presenceStats(topic: string, options?: CommandOptions): Promise<PresenceStats>;

  /**
   * Removes `handler` from `topic`, or every handler when omitted. When none
   * remain the topic is forgotten and `unsubscribe` is sent if connected; the
   * promise resolves on `unsubscribed` (at once when nothing had to be sent).
   * Over SSE it resolves once a stream without the topic replaced the old one.
   */
  unsubscribe(topic: string, handler?: MessageHandler<any>): Promise<void>;

  /**
   * Publishes `message` (an object with a string `type`) on `topic`. Refused
   * with `forbidden` unless the server opens the topic to client publishing, and
   * with `invalid_message` on a history topic when the message carries `offset`
   * or `epoch` (the server assigns them). Rejects with `not_connected` when not
   * connected.
   */
  publish(topic: string, message: { type: string; [field: string]: unknown }, options?: CommandOptions): Promise<PublishedReply>;

  /** Application-level round trip; resolves with the round-trip time in ms. */
  ping(options?: CommandOptions): Promise<number>;

  /**
   * Sends `refresh` now with `token`, or a fresh token from the token function
   * (the current string otherwise). Resolves with the new expiry (Unix
   * seconds). Automatic refreshes need no call to this.
   */
  refreshToken(token?: string): Promise<number>;

  /**
   * Handles messages without a `topic` field whose `type` is `type`
   * (including the `server-shutdown` notice); `"*"` gets every message, topic
   * messages included. Returns a function that removes the handler.
   */
  on<M extends RealtimeMessage = RealtimeMessage>(type: string, handler: MessageHandler<M>): () => void;

  /** Removes a handler added with {@link on}; every handler of `type` when omitted. */
  off(type: string, handler?: MessageHandler<any>): void;

  /**
   * Listens to client events (never message types): `connecting`, `connected`,
   * `disconnected`, `error`, `refreshed`, `resubscribed`, `missed`, `join`,
   * `leave`. The listener receives a plain object.
   */
  addEventListener<K extends keyof RealtimeClientEventMap>(
    type: K,
    listener: (event: RealtimeClientEventMap[K]) => void,
    options?: { once?: boolean },
  ): void;

  /** Removes a listener added with {@link addEventListener}. */
  removeEventListener<K extends keyof RealtimeClientEventMap>(
    type: K,
    listener: (event: RealtimeClientEventMap[K]) => void,
  ): void;
}

export default RealtimeClient;

/**
 * Reconnect delay after `attempt` consecutive failures (0 for the first
 * retry): `min(maxDelay, initialDelay * factor ** attempt)`, jittered. Pure.
 * @param random returns a number in [0, 1); default Math.random
 */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** Counts consecutive failed attempts and hands out their delays. */
export declare class Backoff {
  constructor(options?: BackoffOptions, random?: () => number);
  options: BackoffOptions;
  /** Failed attempts since the last reset. */
  attempt: number;
  /** The next delay, ms; counts one more failure. */
  next(): number;
  /** Back to the shortest delay. */
  reset(): void;
}

/** Delay after a shutdown notice or close 1001: uniform in [0, shutdownJitter] ms. */
export declare function shutdownDelay(options?: { shutdownJitter?: number }, random?: () => number): number;

/**
 * When to refresh, in ms from `nowMs`: `expiresAtMs - min(refreshMargin, 20%
 * of the time left)`, never sooner than 1 s from now unless less than 1.1 s are
 * left (then 100 ms before expiry or at 80% of the time left, whichever is later).
 */
export declare function refreshDelay(expiresAtMs: number, nowMs: number, options?: { refreshMargin?: number }): number;

/**
 * What a close code means for reconnecting: `"terminal"` (3500–3999,
 * 4500–4999, 1007, 1008, 1009: no reconnect), `"shutdown"` (1001: short random
 * delay), `"token"` (3005: at once, fresh token), `"backoff"` (anything else).
 */
export declare function closeAction(code: number): "terminal" | "shutdown" | "token" | "backoff";

/** `{offset, epoch}` when `value` holds a position (a non-negative safe integer `offset` and a string `epoch`), else null. */
export declare function positionOf(value: unknown): Position | null;

/** Whether a message at `incoming` was already delivered to a subscription at `last`: same epoch, offset not above. */
export declare function isDuplicate(last: Position | null, incoming: Position): boolean;

/**
 * The SSE endpoint for the WebSocket URL `wsUrl`: `sseUrl` when given, else the
 * same URL over http(s) with its last path segment `ws` replaced by `sse`.
 * @throws when neither gives one
 */
export declare function sseEndpoint(wsUrl: URL, sseUrl?: string | URL | null): URL;

/** The name of a topic in an SSE cursor: the FNV-1a 64 hash of its UTF-8 bytes, 16 hex digits. */
export declare function cursorKey(topic: string): string;

/** The SSE cursor (`Last-Event-ID`) naming each topic's position: `r1,<key>:<offset>:<epoch>,…`. */
export declare function encodeCursor(positions: Iterable<[string, Position]>): string;

/** One event of a `text/event-stream`. */
export interface SseEvent {
  /** `"message"` unless the event named another type (`"close"`). */
  type: string;
  data: string;
  lastEventId: string;
}

/** Reads a `text/event-stream` fed in decoded chunks of any size. */
export declare class SseParser {
  constructor(onEvent: (event: SseEvent) => void, onComment?: (text: string) => void);
  /** The last `id:` seen. */
  lastEventId: string;
  /** The last valid `retry:` value, ms. */
  retry: number | null;
  push(text: string): void;
  /** Drops whatever is buffered; nothing more is reported. */
  stop(): void;
}
