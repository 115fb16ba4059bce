// The demo page (development mode only): connects by itself with a token from
// /dev/token, shows every message with its full content, subscribes and
// unsubscribes topics, sends through the HTTP API and logs every reconnect. Each
// subscription shows whether its last (re)subscription recovered what was
// published meanwhile and, on a history topic, its offset and epoch. Every value
// is rendered with textContent, never as HTML.

import { RealtimeClient } from "/client/realtime-client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const user = params.get("user") ?? "demo-user";
const roles = params.get("roles") ?? "";
let apiKey = null;
let connects = 0;

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
});
client.addEventListener("missed", (e) => {
  showRecovery(e.topic, { missed: e.reason });
  const at = e.epoch === undefined ? "" : `, continuing after offset ${e.offset} of epoch ${e.epoch}`;
  logEvent(`missed on ${e.topic}: ${e.reason}${at}`);
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
      logEvent(`unsubscribed ${topic}`);
    } catch (e) {
      button.disabled = false;
      logEvent(`unsubscribe ${topic} failed: ${e.code ?? ""} ${e.message}`);
    }
  });
  // The topic on one line; below it how its last (re)subscription went and where it stands.
  const details = document.createElement("div");
  details.append(recovery, " ", position);
  const info = document.createElement("div");
  info.append(name, details);
  li.append(info, button);
  $("subscriptions").append(li);
}

async function subscribe(topic) {
  $("subscribe-error").textContent = "";
  try {
    const result = await client.subscribe(topic, () => {});
    showSubscription(topic);
    showRecovery(topic, result);
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
