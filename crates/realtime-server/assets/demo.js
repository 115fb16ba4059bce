// The demo page (development mode only): connects by itself with a token from
// /dev/token, shows every message with its full content, subscribes and
// unsubscribes topics, sends through the HTTP API and logs every reconnect. Each
// subscription shows whether its last (re)subscription recovered what was
// published meanwhile and, on a history topic, its offset and epoch, and, on a
// presence topic, who is in it: read with `presence` on every (re)subscription
// and `missed` notice, kept current from join and leave notices in between.
// Every value is rendered with textContent, never as HTML.

import { RealtimeClient } from "/client/realtime-client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const user = params.get("user") ?? "demo-user";
const roles = params.get("roles") ?? "";
let apiKey = null;
let connects = 0;
/** topic -> its members (connection id -> user id), or null for a topic without presence. */
const members = new Map();
/** topic -> number of the latest presence read: an older answer that arrives late is dropped. */
const reads = new Map();

/** A fresh development token for every (re)connect: the server may have restarted
 *  with a new secret. */
async function token() {
  const query = new URLSearchParams({ user, roles });
  const response = await fetch(`/dev/token?${query}`);
  if (!response.ok) throw new Error(`/dev/token answered ${response.status}`);
  const body = await response.json();
  apiKey = body.api_key;
  return body.token;
}

function stamp() {
  return new Date().toISOString().slice(11, 23);
}

function logEvent(text) {
  const li = document.createElement("li");
  li.textContent = `${stamp()}  ${text}`;
  $("events").prepend(li);
}

function setStatus(state) {
  const status = $("status");
  status.textContent = state;
  status.className = `badge ${state}`;
}

const protocol = location.protocol === "https:" ? "wss:" : "ws:";
const client = new RealtimeClient(`${protocol}//${location.host}/ws`, { token });
window.realtimeClient = client;

client.addEventListener("connecting", (e) => {
  setStatus("connecting");
  logEvent(`connecting (attempt ${e.attempt ?? 0})`);
});
client.addEventListener("connected", (e) => {
  connects += 1;
  setStatus("connected");
  $("connection-id").textContent = e.connectionId;
  $("user-id").textContent = e.userId;
  $("reconnects").textContent = String(connects - 1);
  logEvent(`connected as ${e.userId}, connection ${e.connectionId}`);
});
client.addEventListener("disconnected", (e) => {
  setStatus("disconnected");
  const next = e.willReconnect ? `, reconnecting in ${Math.round(e.delay ?? 0)} ms` : ", not reconnecting";
  logEvent(`disconnected: ${e.code} ${e.reason || ""}${next}`);
});
client.addEventListener("refreshed", (e) => logEvent(`token refreshed, expires ${e.expiresAt}`));
client.addEventListener("resubscribed", (e) => {
  showRecovery(e.topic, e);
  logEvent(`resubscribed ${e.topic}: ${recoveryText(e)}`);
  // Joins and leaves while away were not seen (and this connection is a new one).
  readPresence(e.topic);
});
client.addEventListener("missed", (e) => {
  showRecovery(e.topic, { missed: e.reason });
  readPresence(e.topic);
  const at = e.epoch === undefined ? "" : `, continuing after offset ${e.offset} of epoch ${e.epoch}`;
  logEvent(`missed on ${e.topic}: ${e.reason}${at}`);
});
client.addEventListener("join", (e) => {
  const here = members.get(e.topic);
  if (here) here.set(e.connectionId, e.userId);
  showPresence(e.topic);
  logEvent(`${e.userId} joined ${e.topic} (connection ${e.connectionId})`);
});
client.addEventListener("leave", (e) => {
  members.get(e.topic)?.delete(e.connectionId);
  showPresence(e.topic);
  logEvent(`${e.userId} left ${e.topic} (connection ${e.connectionId})`);
});
client.addEventListener("error", (e) => logEvent(`error: ${e.error?.code ?? ""} ${e.error?.message ?? e.error}`));

client.on("*", (message) => {
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.type = String(message.type);
  if (typeof message.topic === "string") li.dataset.topic = message.topic;
  const head = document.createElement("div");
  head.className = "muted";
  head.textContent = `${stamp()}  ${message.type}${message.topic ? ` on ${message.topic}` : ""}`;
  const body = document.createElement("pre");
  body.textContent = JSON.stringify(message, null, 2);
  li.append(head, body);
  $("messages").prepend(li);
  if (typeof message.topic === "string") showPosition(message.topic);
});

function subscriptionItem(topic) {
  return document.querySelector(`#subscriptions li[data-topic="${CSS.escape(topic)}"]`);
}

/** "recovered", "not recovered (reason)" or "subscribed" (a first subscribe). */
function recoveryText(result) {
  if (result.missed) return `missed (${result.missed})`;
  if (result.recovered === true) return "recovered";
  if (result.recovered === false) return `not recovered (${result.reason})`;
  return "subscribed";
}

function showRecovery(topic, result) {
  const li = subscriptionItem(topic);
  if (!li) return;
  const recovery = li.querySelector(".recovery");
  recovery.textContent = recoveryText(result);
  const good = result.recovered === true || (result.recovered === undefined && !result.missed);
  recovery.className = `recovery badge ${good ? "connected" : "disconnected"}`;
  li.dataset.recovery = result.missed ? "missed" : result.recovered === undefined ? "subscribed" : String(result.recovered);
  showPosition(topic);
}

function showPosition(topic) {
  const li = subscriptionItem(topic);
  if (!li) return;
  const position = client.position(topic);
  li.querySelector(".position").textContent = position
    ? `offset ${position.offset} · epoch ${position.epoch}`
    : "no history";
}

/** Reads who is in `topic` (every page); a topic without presence says so. Notices
 *  are applied by connection id, so one that crosses this answer does no harm. */
async function readPresence(topic) {
  const read = (reads.get(topic) ?? 0) + 1;
  reads.set(topic, read);
  try {
    const { users, degraded } = await client.presenceAll(topic);
    if (reads.get(topic) !== read) return;
    const here = new Map();
    for (const u of users) for (const c of u.connections) here.set(c.connection_id, u.user_id);
    members.set(topic, here);
    showPresence(topic, degraded);
  } catch (e) {
    if (reads.get(topic) !== read) return;
    if (e.code === "no_presence") {
      members.set(topic, null);
      showPresence(topic);
    } else {
      logEvent(`presence of ${topic} failed: ${e.code ?? ""} ${e.message}`);
    }
  }
}

/** The members of `topic` as one badge per user (with its number of connections). */
function showPresence(topic, degraded = false) {
  const li = subscriptionItem(topic);
  if (!li || !members.has(topic)) return;
  const here = members.get(topic);
  const summary = li.querySelector(".presence");
  const list = li.querySelector(".members");
  list.replaceChildren();
  if (here === null) {
    summary.textContent = "no presence";
    return;
  }
  const perUser = new Map();
  for (const userId of here.values()) perUser.set(userId, (perUser.get(userId) ?? 0) + 1);
  const users = [...perUser.keys()].sort();
  summary.textContent = `here: ${users.length} ${users.length === 1 ? "user" : "users"}, ${here.size} ${here.size === 1 ? "connection" : "connections"}${degraded ? " (this node only: presence store unreachable)" : ""}`;
  for (const userId of users) {
    const item = document.createElement("li");
    item.className = "badge member";
    item.dataset.user = userId;
    const count = perUser.get(userId);
    item.textContent = `${userId}${userId === client.userId ? " (you)" : ""}${count > 1 ? ` ×${count}` : ""}`;
    list.append(item);
  }
}

function showSubscription(topic) {
  if (document.querySelector(`#subscriptions li[data-topic="${CSS.escape(topic)}"]`)) return;
  const li = document.createElement("li");
  li.dataset.topic = topic;
  const name = document.createElement("span");
  name.textContent = topic;
  const recovery = document.createElement("span");
  recovery.className = "recovery badge";
  const position = document.createElement("span");
  position.className = "position muted";
  // Set through the CSSOM: the page's CSP allows no inline style sheet.
  recovery.style.whiteSpace = "nowrap";
  recovery.style.marginRight = ".3rem";
  const button = document.createElement("button");
  button.className = "secondary unsubscribe";
  button.textContent = "Unsubscribe";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      // Removed from the list once the server confirms: nothing for it arrives after.
      await client.unsubscribe(topic);
      li.remove();
      members.delete(topic);
      reads.delete(topic);
      logEvent(`unsubscribed ${topic}`);
    } catch (e) {
      button.disabled = false;
      logEvent(`unsubscribe ${topic} failed: ${e.code ?? ""} ${e.message}`);
    }
  });
  // The topic on one line; below it how its last (re)subscription went and where it stands.
  const details = document.createElement("div");
  details.append(recovery, " ", position);
  // Who is in the topic, on a presence topic.
  const presence = document.createElement("div");
  presence.className = "presence muted";
  const list = document.createElement("ul");
  list.className = "members";
  const info = document.createElement("div");
  // As wide as the row allows, so the member badges line up rather than stack.
  info.style.flex = "1";
  info.style.minWidth = "0";
  info.append(name, details, presence, list);
  li.append(info, button);
  $("subscriptions").append(li);
}

async function subscribe(topic) {
  $("subscribe-error").textContent = "";
  try {
    const result = await client.subscribe(topic, () => {});
    showSubscription(topic);
    showRecovery(topic, result);
    readPresence(topic);
    const at = result.epoch === undefined ? "" : ` at offset ${result.offset} of epoch ${result.epoch}`;
    logEvent(`subscribed ${topic}${at}`);
  } catch (e) {
    $("subscribe-error").textContent = `${topic}: ${e.code ?? "error"}: ${e.message}`;
  }
}

$("subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const topic = $("topic-input").value.trim();
  if (topic) subscribe(topic);
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const route = $("send-route").value;
  const target = encodeURIComponent($("send-target").value.trim());
  const path = {
    topic: `/api/topics/${target}/messages`,
    user: `/api/users/${target}/messages`,
    role: `/api/roles/${target}/messages`,
    broadcast: "/api/broadcast",
  }[route];
  const message = { type: $("send-type").value.trim(), text: $("send-text").value };
  try {
    if (!apiKey) await token();
    const response = await fetch(path, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify(message),
    });
    const body = await response.text();
    $("send-result").textContent = `${response.status} ${body}`;
  } catch (e) {
    $("send-result").textContent = `failed: ${e.message}`;
  }
});

// Start with the topic already in the form and the user's own topic.
subscribe($("topic-input").value.trim());
subscribe(`user:${user}`);
