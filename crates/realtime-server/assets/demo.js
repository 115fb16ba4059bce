// The demo page (development mode only): connects by itself with a token from
// /dev/token, shows every message with its full content, subscribes and
// unsubscribes topics, sends through the HTTP API and logs every reconnect. Every
// value is rendered with textContent, never as HTML.

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
});

function showSubscription(topic) {
  if (document.querySelector(`#subscriptions li[data-topic="${CSS.escape(topic)}"]`)) return;
  const li = document.createElement("li");
  li.dataset.topic = topic;
  const name = document.createElement("span");
  name.textContent = topic;
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
  li.append(name, button);
  $("subscriptions").append(li);
}

async function subscribe(topic) {
  $("subscribe-error").textContent = "";
  try {
    await client.subscribe(topic, () => {});
    showSubscription(topic);
    logEvent(`subscribed ${topic}`);
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
