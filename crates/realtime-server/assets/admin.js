// The admin page: polls the HTTP API once a second with the API key the visitor
// enters and shows connections, topics and a messages-per-second chart. Every value
// is rendered with textContent, never as HTML.

const KEY = "realtime-admin-key";
const HISTORY = 60;
const samples = []; // {t, messages, deliveries}
const $ = (id) => document.getElementById(id);

function apiKey() {
  return sessionStorage.getItem(KEY) ?? "";
}

async function api(method, path) {
  const response = await fetch(path, {
    method,
    headers: { authorization: `Bearer ${apiKey()}` },
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error(body?.message ?? `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function setStatus(text, kind) {
  const status = $("admin-status");
  status.textContent = text;
  status.className = `badge ${kind}`;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

function renderConnections(list) {
  const body = $("connections");
  const rows = list.connections
    .slice()
    .sort((a, b) => a.connected_at.localeCompare(b.connected_at))
    .map((c) => {
      const row = document.createElement("tr");
      row.dataset.id = c.id;
      row.dataset.user = c.user_id;
      cell(row, c.id);
      cell(row, c.user_id);
      cell(row, c.roles.join(", "));
      cell(row, c.topics.join(", "));
      cell(row, c.connected_at);
      const button = document.createElement("button");
      button.className = "disconnect";
      button.textContent = "Disconnect";
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          await api("DELETE", `/api/connections/${encodeURIComponent(c.id)}`);
          row.remove();
        } catch (e) {
          $("admin-error").textContent = `disconnect failed: ${e.message}`;
          button.disabled = false;
        }
      });
      cell(row, "").append(button);
      return row;
    });
  body.replaceChildren(...rows);
}

function renderTopics(list) {
  const items = Object.entries(list.topics).map(([topic, count]) => {
    const li = document.createElement("li");
    li.dataset.topic = topic;
    const name = document.createElement("span");
    name.textContent = topic;
    const n = document.createElement("span");
    n.className = "badge";
    n.textContent = `${count} subscriber${count === 1 ? "" : "s"}`;
    li.append(name, n);
    return li;
  });
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no topic has a subscriber";
    items.push(li);
  }
  $("topics").replaceChildren(...items);
}

function rates() {
  const points = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    const dt = (b.t - a.t) / 1000 || 1;
    points.push({
      t: b.t,
      messages: (b.messages - a.messages) / dt,
      deliveries: (b.deliveries - a.deliveries) / dt,
    });
  }
  return points;
}

function drawChart() {
  const canvas = $("chart");
  // Draw at the size the canvas is shown, in device pixels, so text stays crisp.
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 160;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const points = rates();
  const max = Math.max(1, ...points.map((p) => p.messages));
  ctx.strokeStyle = "#d9dee8";
  ctx.beginPath();
  ctx.moveTo(0, height - 0.5);
  ctx.lineTo(width, height - 0.5);
  ctx.stroke();
  ctx.fillStyle = "#5b6478";
  ctx.font = "12px system-ui";
  ctx.fillText(`${max.toFixed(1)}/s`, 4, 12);
  if (points.length > 0) {
    // One bar per second, the newest at the right edge.
    const slot = width / HISTORY;
    ctx.fillStyle = "#2456d6";
    points.forEach((p, i) => {
      const h = (p.messages / max) * (height - 18);
      const x = width - (points.length - i) * slot;
      ctx.fillRect(x + 1, height - 1 - h, Math.max(1, slot - 2), h);
    });
    const last = points[points.length - 1];
    $("rate").textContent = last.messages.toFixed(1);
    $("delivery-rate").textContent = last.deliveries.toFixed(1);
  }
}

async function refresh() {
  if (!apiKey()) {
    setStatus("locked", "");
    return;
  }
  try {
    const [stats, connections, topics] = await Promise.all([
      api("GET", "/api/stats"),
      api("GET", "/api/connections"),
      api("GET", "/api/topics"),
    ]);
    $("admin-error").textContent = "";
    setStatus("live", "connected");
    $("connection-count").textContent = String(stats.connections);
    samples.push({ t: Date.now(), messages: stats.messages, deliveries: stats.deliveries });
    while (samples.length > HISTORY + 1) samples.shift();
    renderConnections(connections);
    renderTopics(topics);
    drawChart();
  } catch (e) {
    setStatus(e.status === 401 ? "wrong key" : "error", "disconnected");
    $("admin-error").textContent = e.message;
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  samples.length = 0;
  refresh();
});

// In development mode the server hands out its generated key; elsewhere this is a 404.
async function developmentKey() {
  if (apiKey()) return;
  try {
    const response = await fetch("/dev/token");
    if (response.ok) {
      const body = await response.json();
      if (body.api_key) sessionStorage.setItem(KEY, body.api_key);
    }
  } catch {
    // Not in development mode.
  }
}

developmentKey().then(refresh);
setInterval(refresh, 1000);
