// The Roost admin page. Every text that comes from the server (object names,
// keys, values, log messages) is put in the page with textContent, never as
// HTML, so a value holding "<script>" shows as those characters.
"use strict";

const TOKEN_KEY = "roost-admin-token";
const POLL_MS = 2000;
const POINTS = 60;
const $ = (id) => document.getElementById(id);

let token = null;
let poller = null;
let nextPage = null;
let previous = null;
const series = {};

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function status(text, isError) {
  const node = $("status");
  node.textContent = text;
  node.className = isError ? "error" : "";
}

class Unauthorized extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token } });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Wrong token (401 Unauthorized)");
    throw new Unauthorized("401");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.status);
  return body;
}

function showLogin(message) {
  token = null;
  if (poller !== null) clearInterval(poller);
  poller = null;
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  status(message || "", Boolean(message));
}

async function connectWith(given) {
  token = given;
  try {
    await refresh();
  } catch (error) {
    if (!(error instanceof Unauthorized)) status("Cannot reach the server: " + error.message, true);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, given);
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  status("Connected");
  poller = setInterval(() => refresh().catch(() => {}), POLL_MS);
}

async function refresh() {
  const overview = await api("/api/overview");
  renderNamespaces(overview.namespaces);
  renderCounters(overview);
  chart(overview.counters);
  renderErrors((await api("/api/errors")).errors);
}

function renderNamespaces(namespaces) {
  const body = $("namespaces").tBodies[0];
  body.replaceChildren(...namespaces.map((ns) => {
    const row = element("tr");
    row.append(element("td", ns.name), element("td", ns.class + (ns.sql ? " (SQL)" : "")),
               element("td", ns.stored), element("td", ns.live));
    return row;
  }));
  const select = $("search-ns");
  const chosen = select.value;
  if (select.options.length !== namespaces.length) {
    select.replaceChildren(...namespaces.map((ns) => {
      const option = element("option", ns.name);
      option.value = ns.name;
      return option;
    }));
    if (chosen) select.value = chosen;
  }
}

function renderCounters(overview) {
  const c = overview.counters;
  const parts = [
    "live objects: " + c.live_objects, "commits: " + c.commits, "fsyncs: " + c.fsyncs,
    "WebSockets: " + c.websockets,
  ];
  if (c.http_requests !== null) parts.unshift("HTTP requests: " + c.http_requests);
  parts.push(overview.event_metrics ? "events: " + c.events : "event metrics off");
  $("counters").textContent = parts.join(" · ");
}

// -- live charts: rates of the counters, levels of the gauges -------------------------

const CHARTS = [
  ["http_requests", "HTTP requests/s", true],
  ["events", "events/s", true],
  ["commits", "commits/s", true],
  ["live_objects", "live objects", false],
  ["websockets", "WebSocket connections", false],
];

function chart(counters) {
  const now = performance.now() / 1000;
  for (const [key, label, isRate] of CHARTS) {
    if (counters[key] === null || counters[key] === undefined) continue;
    let value = counters[key];
    if (isRate) {
      if (previous === null || previous.counters[key] == null) continue;
      value = Math.max(0, (value - previous.counters[key]) / (now - previous.time));
    }
    const points = (series[key] = series[key] || []);
    points.push(value);
    if (points.length > POINTS) points.shift();
    draw(key, label, points);
  }
  previous = { time: now, counters };
}

function draw(key, label, points) {
  let canvas = document.getElementById("chart-" + key);
  if (canvas === null) {
    const figure = element("figure");
    canvas = element("canvas");
    canvas.id = "chart-" + key;
    canvas.width = 260;
    canvas.height = 80;
    figure.append(canvas, element("figcaption"));
    $("charts").append(figure);
  }
  const last = points[points.length - 1];
  canvas.nextSibling.textContent = label + ": " + (Number.isInteger(last) ? last : last.toFixed(1));
  const context = canvas.getContext("2d");
  const top = Math.max(1, ...points);
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#05c";
  context.beginPath();
  points.forEach((value, i) => {
    const x = (i / (POINTS - 1)) * canvas.width;
    const y = canvas.height - 2 - (value / top) * (canvas.height - 4);
    if (i === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
}

// -- objects ----------------------------------------------------------------------------

async function search(after) {
  const params = new URLSearchParams({ namespace: $("search-ns").value, q: $("search-q").value });
  if (after) params.set("after", after);
  const page = await api("/api/objects?" + params);
  const list = $("results");
  if (!after) list.replaceChildren();
  if (!after && page.objects.length === 0) list.append(element("li", "No object found"));
  for (const found of page.objects) {
    const button = element("button", found.name !== null
      ? found.name + "  (" + found.id.slice(0, 12) + "…)" : found.id);
    button.type = "button";
    button.dataset.id = found.id;
    button.addEventListener("click", () => show(page.namespace, found.id));
    const item = element("li");
    item.append(button, element("span", found.live ? "  live" : ""));
    list.append(item);
  }
  nextPage = page.next;
  $("more").hidden = nextPage === null;
}

async function show(namespace, id) {
  const view = await api("/api/object?" + new URLSearchParams({ namespace, id }));
  $("object").hidden = false;
  $("object-title").textContent = view.namespace + " " + (view.name !== null ? view.name : view.id);
  const meta = [view.class + (view.sql ? " (SQL)" : ""), "ID " + view.id,
                view.live ? "live" : "not in memory", view.bytes + " bytes"];
  if (view.created) meta.push("created " + view.created);
  if (view.written) meta.push("written " + view.written);
  if (view.alarm) meta.push("alarm at " + view.alarm + (view.alarm_retries ? " (" + view.alarm_retries + " failed)" : ""));
  if (view.more_entries) meta.push("first " + view.entries.length + " keys shown");
  $("object-meta").textContent = meta.join(" · ");
  $("object-kv").tBodies[0].replaceChildren(...view.entries.map((pair) => {
    const row = element("tr");
    row.append(element("td", pair.key), element("td", pair.value, "value"));
    return row;
  }));
  const tables = view.tables || [];
  $("object-tables").tBodies[0].replaceChildren(...tables.map((table) => {
    const row = element("tr");
    row.append(element("td", table.name), element("td", table.rows));
    return row;
  }));
  $("object-tables-note").textContent = view.sql ? (view.tables_note || "") : "a KV object: none";
}

function renderErrors(errors) {
  const list = $("errors");
  if (errors.length === 0) {
    list.replaceChildren(element("li", "None"));
    return;
  }
  list.replaceChildren(...errors.map((record) => {
    const item = element("li");
    const when = new Date(record.time * 1000).toISOString();
    item.append(element("div", when + " " + record.level + " " + record.logger + ": " + record.message));
    if (record.traceback) item.append(element("pre", record.traceback));
    return item;
  }));
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    connectWith($("token").value.trim());
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("");
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search(null).catch((error) => status(error.message, true));
  });
  $("more").addEventListener("click", () => search(nextPage).catch((e) => status(e.message, true)));
  // A link may carry the token in its fragment (never sent to a server): keep
  // it for this tab only, and take it out of the address bar.
  const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromLink) history.replaceState(null, "", location.pathname);
  const saved = fromLink || sessionStorage.getItem(TOKEN_KEY);
  if (saved) connectWith(saved);
  else showLogin("");
});
