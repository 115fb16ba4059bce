// The client over SSE against a scripted event-stream server whose events the
// test writes itself, for what the real server sends only when its history
// store fails while its bus works: the `history_unavailable` error frame in
// place of a topic's `subscribed`, for a first subscribe and for a restore.
// Also for what it does only when slow or at an unlucky moment: a `subscribed`
// that never comes, a topic unsubscribed and subscribed again in one tick, a
// replacement stream refused or never answered.

import { after, afterEach, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";

import { RealtimeClient, encodeCursor } from "../realtime-client.js";
import { messageQueue, nextEvent } from "./server.js";

/** One request to the scripted server: its query, and a stream to write events to
 * (or, given `refusal`, answered `{status, body}` instead of a stream). */
class ScriptedStream {
  constructor(req, res, refusal) {
    this.url = new URL(req.url, "http://scripted");
    this.res = res;
    this.closed = new Promise((r) => res.once("close", r));
    if (refusal) {
      res.writeHead(refusal.status, { "content-type": "application/json" });
      res.end(JSON.stringify(refusal.body));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    res.write("retry: 2000\n\n");
  }

  get topics() {
    return this.url.searchParams.getAll("topic");
  }

  get token() {
    return this.url.searchParams.get("token");
  }

  send(frame, id) {
    this.res.write(`${id === undefined ? "" : `id: ${id}\n`}data: ${JSON.stringify(frame)}\n\n`);
  }

  welcome() {
    this.send({ type: "welcome", connection_id: "00000000-0000-0000-0000-000000000001", user_id: "u", roles: [], timestamp: "t" });
  }
}

class ScriptedSseServer {
  constructor() {
    this.streams = [];
    this._waiting = [];
    this._refusals = [];
    this._server = createServer((req, res) => {
      const stream = new ScriptedStream(req, res, this._refusals.shift());
      const w = this._waiting.shift();
      if (w) {
        clearTimeout(w.timer);
        w.resolve(stream);
      } else {
        this.streams.push(stream);
      }
    });
  }

  start() {
    return new Promise((r) => this._server.listen(0, "127.0.0.1", () => r(this)));
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this._server.address().port}/ws`;
  }

  /** Answers the next request with `status` and the JSON `body` instead of a stream. */
  refuseNext(status, body) {
    this._refusals.push({ status, body });
  }

  /** The next request (upper bound `timeout`). */
  next(timeout = 5000) {
    if (this.streams.length > 0) return Promise.resolve(this.streams.shift());
    return new Promise((resolve, reject) => {
      const w = { resolve, timer: setTimeout(() => reject(new Error(`no SSE request within ${timeout} ms`)), timeout) };
      this._waiting.push(w);
    });
  }

  close() {
    this._server.closeAllConnections();
    return new Promise((r) => this._server.close(() => r()));
  }
}

const servers = [];
const clients = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.close();
});

after(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function setup(options = {}) {
  const server = await new ScriptedSseServer().start();
  servers.push(server);
  const client = new RealtimeClient(server.wsUrl, {
    token: "t",
    transport: "sse",
    heartbeatInterval: 0,
    autoConnect: false,
    initialDelay: 10,
    rateLimitRetryDelay: 50,
    ...options,
  });
  clients.push(client);
  return { server, client };
}

/** `promise`, or a rejection saying `what` did not settle within `timeout` ms (an upper bound). */
function settles(promise, what, timeout = 5000) {
  let timer;
  const bound = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not settled within ${timeout} ms`)), timeout);
  });
  return Promise.race([promise, bound]).finally(() => clearTimeout(timer));
}

const UNAVAILABLE = { type: "error", code: "history_unavailable", message: "feed:a: the history store is unreachable" };

test("a first subscribe whose stream answers history_unavailable rejects with it; the other topics carry on", async () => {
  const { server, client } = await setup();
  const failing = client.subscribe("feed:a", () => {}).catch((e) => e);
  const fine = client.subscribe("news:b", () => {});
  client.connect();
  const stream = await server.next();
  assert.deepEqual(stream.topics, ["feed:a", "news:b"]);
  stream.welcome();
  stream.send(UNAVAILABLE);
  stream.send({ type: "subscribed", topic: "news:b" });
  const error = await failing;
  assert.equal(error.code, "history_unavailable");
  assert.equal(error.topic, "feed:a");
  assert.deepEqual(await fine, { topic: "news:b" });
  assert.deepEqual(client.topics, ["news:b"]);
});

test("a restore answered history_unavailable is an error event, kept, and tried again on a later stream that resumes it", async () => {
  const { server, client } = await setup();
  const inbox = messageQueue();
  const subscribed = client.subscribe("feed:a", inbox);
  client.connect();
  const first = await server.next();
  first.welcome();
  first.send({ type: "subscribed", topic: "feed:a", offset: 3, epoch: "e1" });
  assert.deepEqual(await subscribed, { topic: "feed:a", offset: 3, epoch: "e1" });
  first.send({ offset: 4, epoch: "e1", type: "tick", seq: 4, topic: "feed:a", timestamp: "t" });
  assert.equal((await inbox.next()).seq, 4);

  // The stream ends; the reconnect's stream cannot read the history.
  const errorEvent = nextEvent(client, "error");
  first.res.end();
  const second = await server.next();
  assert.equal(second.url.searchParams.get("last_event_id"), encodeCursor([["feed:a", { offset: 4, epoch: "e1" }]]));
  second.welcome();
  second.send(UNAVAILABLE);
  const { error, topic } = await errorEvent;
  assert.equal(error.code, "history_unavailable");
  assert.equal(topic, "feed:a");
  assert.deepEqual(client.topics, ["feed:a"], "kept");

  // rateLimitRetryDelay later a stream with the topic replaces the second one.
  const resubscribed = nextEvent(client, "resubscribed");
  const third = await server.next();
  assert.deepEqual(third.topics, ["feed:a"]);
  assert.equal(third.url.searchParams.get("last_event_id"), encodeCursor([["feed:a", { offset: 4, epoch: "e1" }]]));
  third.welcome();
  third.send({ type: "subscribed", topic: "feed:a", offset: 6, epoch: "e1", recovered: true });
  third.send({ offset: 5, epoch: "e1", type: "tick", seq: 5, topic: "feed:a", timestamp: "t" });
  third.send({ offset: 6, epoch: "e1", type: "tick", seq: 6, topic: "feed:a", timestamp: "t" });
  assert.deepEqual(await resubscribed, { type: "resubscribed", topic: "feed:a", offset: 6, epoch: "e1", recovered: true });
  await second.closed; // the client closed the stream it replaced
  assert.equal((await inbox.next()).seq, 5);
  assert.equal((await inbox.next()).seq, 6);
  assert.deepEqual(inbox.all.map((m) => m.seq), [4, 5, 6]);
  assert.deepEqual(client.position("feed:a"), { offset: 6, epoch: "e1" });
});

test("a topic paused after a restore's history_unavailable is carried again by the next connection's stream", async () => {
  const { server, client } = await setup();
  // A pause far longer than the test: only the reconnect can bring the topic back.
  client.options.rateLimitRetryDelay = 60_000;
  const subscribed = client.subscribe("feed:a", () => {});
  client.connect();
  const first = await server.next();
  first.welcome();
  first.send({ type: "subscribed", topic: "feed:a", offset: 3, epoch: "e1" });
  await subscribed;

  const errorEvent = nextEvent(client, "error");
  first.res.end();
  const second = await server.next();
  second.welcome();
  second.send(UNAVAILABLE);
  assert.equal((await errorEvent).error.code, "history_unavailable");

  // The connection drops during the pause: the reconnect's stream asks for the topic.
  second.res.end();
  const third = await server.next();
  assert.deepEqual(third.topics, ["feed:a"]);
  assert.equal(third.url.searchParams.get("last_event_id"), encodeCursor([["feed:a", { offset: 3, epoch: "e1" }]]));
});

test("a topic the stream did not confirm in time is refused; the stream is replaced without it and later subscribes get a stream", async () => {
  const { server, client } = await setup({ timeout: 200 });
  const silent = client.subscribe("news:silent", () => {}).catch((e) => e);
  client.connect();
  const first = await server.next();
  assert.deepEqual(first.topics, ["news:silent"]);
  first.welcome(); // and never the topic's subscribed
  const error = await settles(silent, "the unconfirmed subscribe");
  assert.equal(error.code, "timeout");
  assert.deepEqual(client.topics, []);

  // The server still carries the refused topic on that stream: one without it replaces it.
  const second = await server.next();
  assert.deepEqual(second.topics, []);
  second.welcome();
  await first.closed;

  const later = client.subscribe("news:later", () => {});
  const third = await server.next();
  assert.deepEqual(third.topics, ["news:later"]);
  third.welcome();
  third.send({ type: "subscribed", topic: "news:later" });
  assert.deepEqual(await settles(later, "the later subscribe"), { topic: "news:later" });
});

test("unsubscribe and subscribe again to a topic in the same tick: a stream confirms the new subscription and both promises settle", async () => {
  const { server, client } = await setup();
  const oldInbox = messageQueue();
  const subscribed = client.subscribe("news:a", oldInbox);
  client.connect();
  const first = await server.next();
  first.welcome();
  first.send({ type: "subscribed", topic: "news:a" });
  await subscribed;
  first.send({ type: "tick", seq: 1, topic: "news:a", timestamp: "t" });
  assert.equal((await oldInbox.next()).seq, 1);

  const newInbox = messageQueue();
  const gone = client.unsubscribe("news:a");
  const again = client.subscribe("news:a", newInbox);
  const second = await server.next();
  assert.deepEqual(second.topics, ["news:a"]);
  second.welcome();
  second.send({ type: "subscribed", topic: "news:a" });
  assert.deepEqual(await settles(again, "the new subscribe"), { topic: "news:a" });
  await settles(gone, "the unsubscribe");
  await first.closed;
  second.send({ type: "tick", seq: 2, topic: "news:a", timestamp: "t" });
  assert.equal((await newInbox.next()).seq, 2);
  assert.deepEqual(oldInbox.all.map((m) => m.seq), [1]);
  assert.deepEqual(client.topics, ["news:a"]);
});

/** A client whose token function hands out t1, t2, ...; connected on a stream whose
 * welcome says the token expires in `expiresIn` ms, so a refresh comes before that. */
async function refreshing(expiresIn = 600) {
  let issued = 0;
  const { server, client } = await setup({ token: () => `t${++issued}`, timeout: 200 });
  const subscribed = client.subscribe("news:a", () => {});
  client.connect();
  const first = await server.next();
  assert.equal(first.token, "t1");
  first.send({ type: "welcome", connection_id: "c1", user_id: "u", roles: [], expires_at: (Date.now() + expiresIn) / 1000 });
  first.send({ type: "subscribed", topic: "news:a" });
  await subscribed;
  return { server, client, first };
}

test("a fresh token whose replacement stream never answered is carried by the next stream", async () => {
  const { server, client } = await refreshing();
  const unanswered = await server.next(); // opened with the fresh token; never welcomed
  assert.equal(unanswered.token, "t2");
  await unanswered.closed; // given up after `timeout`
  const next = await server.next();
  assert.equal(next.token, "t2");
  const refreshed = nextEvent(client, "refreshed", { timeout: 5000 });
  next.send({ type: "welcome", connection_id: "c2", user_id: "u", roles: [], expires_at: Date.now() / 1000 + 3600 });
  next.send({ type: "subscribed", topic: "news:a" });
  await refreshed;
});

test("a fresh token whose replacement stream was refused for one topic is carried by the next stream", async () => {
  const { server, client } = await refreshing();
  // The fresh token no longer allows the topic.
  server.refuseNext(403, { error: "forbidden", reason: "forbidden", topic: "news:a", message: "news:a is forbidden" });
  const errorEvent = nextEvent(client, "error", { timeout: 5000 });
  const refused = await server.next();
  assert.equal(refused.token, "t2");
  const { error, topic } = await errorEvent;
  assert.equal(error.code, "forbidden");
  assert.equal(topic, "news:a");
  const next = await server.next();
  assert.deepEqual(next.topics, []);
  assert.equal(next.token, "t2");
});

test("a fetch that throws instead of returning a rejected promise fails the replacement stream like a lost link", async () => {
  let throwNext = false;
  const { server, client } = await setup({
    fetch: (url, init) => {
      if (throwNext) {
        throwNext = false;
        throw new TypeError("this fetch throws");
      }
      return fetch(url, init);
    },
  });
  const disconnected = nextEvent(client, "disconnected");
  const first = client.subscribe("feed:a", () => {});
  client.connect();
  const one = await server.next();
  one.welcome();
  one.send({ type: "subscribed", topic: "feed:a" });
  await first;

  // The replacement stream's fetch throws: the connection reconnects with both topics.
  throwNext = true;
  const second = client.subscribe("news:b", () => {});
  assert.equal((await disconnected).willReconnect, true);
  const again = await server.next();
  assert.deepEqual(again.topics, ["feed:a", "news:b"]);
  again.welcome();
  again.send({ type: "subscribed", topic: "feed:a" });
  again.send({ type: "subscribed", topic: "news:b" });
  assert.deepEqual(await settles(second, "the second subscribe"), { topic: "news:b" });
});
