// Pure unit tests of the SSE pieces: the event-stream parser (every way a
// stream can be cut into chunks), the SSE endpoint derived from the WebSocket
// URL, and the transport option checks. No server, no timers waited on.

import { test } from "node:test";
import assert from "node:assert/strict";

import { RealtimeClient, RealtimeError, SseParser, cursorKey, encodeCursor, sseEndpoint } from "../realtime-client.js";

/** Parses `chunks` in order; returns what the parser reported. */
function parse(chunks) {
  const events = [];
  const comments = [];
  const parser = new SseParser(
    (event) => events.push(event),
    (comment) => comments.push(comment),
  );
  for (const chunk of chunks) parser.push(chunk);
  return { events, comments, parser };
}

const STREAM =
  "retry: 1500\n\n" +
  'data: {"type":"welcome","connection_id":"c1"}\n\n' +
  ": ping\n\n" +
  'id: cur-1\ndata: {"type":"subscribed","topic":"feed"}\r\n\r\n' +
  'data: {"type":"tick",\ndata:"n":1}\r\rdata: after-cr\r\n\n' +
  'event: close\ndata: {"type":"close","code":3005,"reason":"token expired"}\n\n' +
  "data: never dispatched (no blank line)";

const EXPECTED = [
  { type: "message", data: '{"type":"welcome","connection_id":"c1"}', lastEventId: "" },
  { type: "message", data: '{"type":"subscribed","topic":"feed"}', lastEventId: "cur-1" },
  { type: "message", data: '{"type":"tick",\n"n":1}', lastEventId: "cur-1" },
  { type: "message", data: "after-cr", lastEventId: "cur-1" },
  { type: "close", data: '{"type":"close","code":3005,"reason":"token expired"}', lastEventId: "cur-1" },
];

test("sse parser: events, comments, ids, retry, LF, CRLF and CR line ends", () => {
  const { events, comments, parser } = parse([STREAM]);
  assert.deepEqual(events, EXPECTED);
  assert.deepEqual(comments, ["ping"]);
  assert.equal(parser.retry, 1500);
  assert.equal(parser.lastEventId, "cur-1");
});

test("sse parser: the same events however the stream is cut into chunks", () => {
  // Every single cut point, and every byte on its own (a CRLF split in two included).
  for (let cut = 1; cut < STREAM.length; cut++) {
    const { events } = parse([STREAM.slice(0, cut), STREAM.slice(cut)]);
    assert.deepEqual(events, EXPECTED, `cut at ${cut}: ${JSON.stringify(STREAM.slice(cut - 2, cut + 2))}`);
  }
  assert.deepEqual(parse([...STREAM]).events, EXPECTED);
});

test("sse parser: a CR ending a chunk ends its line at once; an LF opening the next chunk is its CRLF", () => {
  const crlf = parse(["data: a\r", "\n\r", "\n"]);
  assert.deepEqual(crlf.events, [{ type: "message", data: "a", lastEventId: "" }], "CRLF CRLF: one event, no empty extra one");
  const cr = parse(["data: b\r", "\r"]);
  assert.deepEqual(cr.events, [{ type: "message", data: "b", lastEventId: "" }], "CR CR: dispatched without waiting for more");
  const lflf = parse(["data: c\r", "\n", "\n"]);
  assert.deepEqual(lflf.events, [{ type: "message", data: "c", lastEventId: "" }], "CRLF LF");
});

test("sse parser: field rules of the event-stream format", () => {
  const { events, parser } = parse([
    // One leading space is dropped, a second one is kept; a field without a colon has an empty value.
    "data:no-space\ndata:  two-spaces\ndata\n\n",
    // An id with NUL is ignored; an empty id resets; unknown fields are ignored.
    "id: ok\n\n",
    "id: bad\0id\ndata: x\n\n",
    "id\ndata: y\nfoo: bar\n\n",
    // An event with no data is not dispatched (but its id counts); event types reset per event.
    "id: z\nevent: custom\n\n",
    "data: plain\n\n",
    "retry: soon\n\n",
    // A lone empty data line is no event; two make one holding a line break.
    "data\n\n",
    "data:\ndata:\n\n",
  ]);
  assert.deepEqual(events, [
    { type: "message", data: "no-space\n two-spaces\n", lastEventId: "" },
    { type: "message", data: "x", lastEventId: "ok" },
    { type: "message", data: "y", lastEventId: "" },
    { type: "message", data: "plain", lastEventId: "z" },
    { type: "message", data: "\n", lastEventId: "z" },
  ]);
  assert.equal(parser.retry, null, "a retry that is not digits is ignored");
});

test("sse parser: stop() from a callback drops the rest of the chunk", () => {
  const seen = [];
  const parser = new SseParser((event) => {
    seen.push(event.data);
    parser.stop();
  });
  parser.push("data: one\n\ndata: two\n\n");
  parser.push("data: three\n\n");
  assert.deepEqual(seen, ["one"]);
});

test("sse cursor: FNV-1a 64 keys and percent-encoded epochs, as the server writes and reads them", () => {
  // Published FNV-1a 64-bit test vectors.
  assert.equal(cursorKey(""), "cbf29ce484222325");
  assert.equal(cursorKey("a"), "af63dc4c8601ec8c");
  assert.equal(cursorKey("foobar"), "85944171f73967e8");
  assert.equal(encodeCursor([]), "r1");
  assert.equal(
    encodeCursor([
      ["a", { offset: 17, epoch: "9f3a6c21d0e4b7a5" }],
      ["foobar", { offset: 0, epoch: "odd epoch,with:separators%" }],
    ]),
    "r1,af63dc4c8601ec8c:17:9f3a6c21d0e4b7a5,85944171f73967e8:0:odd%20epoch%2Cwith%3Aseparators%25",
  );
  assert.match(encodeCursor([["t", { offset: 1, epoch: "é_.-~" }]]), /^r1,[0-9a-f]{16}:1:%C3%A9_\.-%7E$/);
});

test("sse endpoint: derived from the WebSocket URL, or given", () => {
  assert.equal(sseEndpoint(new URL("ws://127.0.0.1:8080/ws")).href, "http://127.0.0.1:8080/sse");
  assert.equal(sseEndpoint(new URL("wss://rt.example.com/ws?tenant=a")).href, "https://rt.example.com/sse?tenant=a");
  assert.equal(sseEndpoint(new URL("wss://example.com/realtime/ws")).href, "https://example.com/realtime/sse");
  assert.equal(sseEndpoint(new URL("ws://example.com/sse")).href, "http://example.com/sse", "already the SSE endpoint");
  assert.equal(
    sseEndpoint(new URL("ws://example.com/ws"), "https://stream.example.com/events").href,
    "https://stream.example.com/events",
  );
  assert.throws(() => sseEndpoint(new URL("ws://example.com/socket")), /pass options\.sseUrl/);
  assert.throws(() => sseEndpoint(new URL("ws://example.com/ws"), "ftp://example.com/sse"), /unsupported SSE URL scheme/);
});

test("transport option: checked in the constructor", () => {
  const token = "t";
  assert.throws(() => new RealtimeClient("ws://h/ws", { token, transport: "polling" }), /unknown transport "polling"/);
  const noFetch = globalThis.fetch;
  try {
    globalThis.fetch = undefined;
    assert.throws(() => new RealtimeClient("ws://h/ws", { token, transport: "sse" }), /needs fetch/);
  } finally {
    globalThis.fetch = noFetch;
  }
  // "auto" without any WebSocket goes straight to SSE.
  const noWebSocket = globalThis.WebSocket;
  try {
    globalThis.WebSocket = undefined;
    assert.throws(() => new RealtimeClient("ws://h/ws", { token }), /no WebSocket implementation/);
    const auto = new RealtimeClient("ws://h/ws", { token, transport: "auto", autoConnect: false });
    assert.equal(auto._nextTransport, "sse");
  } finally {
    globalThis.WebSocket = noWebSocket;
  }
});

test("over SSE the commands reject with unsupported_transport, even before connecting", async () => {
  const client = new RealtimeClient("ws://127.0.0.1:9/ws", { token: "t", transport: "sse", autoConnect: false });
  const calls = [
    client.publish("chat:lobby", { type: "chat" }),
    client.history("feed"),
    client.presence("room"),
    client.presenceStats("room"),
    client.presenceAll("room"),
    client.ping(),
    client.refreshToken("another"),
  ];
  for (const call of calls) {
    await assert.rejects(call, (e) => e instanceof RealtimeError && e.code === "unsupported_transport");
  }
  assert.equal(client.transport, null, "no attempt yet");
});
