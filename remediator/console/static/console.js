// remediator console: live decisions (server-sent events) and confirmations. Pages work
// without this file; it only adds. Data is inserted with textContent, never as HTML.
"use strict";

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

// As the pages' `breakable` filter: a name with <wbr> where it may wrap.
function breakable(parent, text) {
  text.split(/(?<=[a-z0-9])(?=[A-Z])|(?<=[\/_])/).forEach((part, i) => {
    if (i) parent.appendChild(document.createElement("wbr"));
    parent.appendChild(document.createTextNode(part));
  });
  return parent;
}

function pill(outcome) {
  const span = document.createElement("span");
  span.className = "pill o-" + outcome.replace(/[^a-z_]/g, "");
  span.textContent = outcome;
  return span;
}

function when(iso) {
  return iso ? iso.replace("T", " ").split(".")[0].replace(/Z$/, "") + " UTC" : "";
}

function row(d, prefix) {
  const tr = document.createElement("tr");
  tr.dataset.id = d.id;
  tr.dataset.outcome = d.outcome;
  tr.className = "fresh";
  // Day and time may sit on two lines in a narrow window, as the pages draw them.
  const at = cell("", "when");
  const [day, ...time] = when(d.created_at).split(" ");
  for (const text of [day, time.join(" ")]) {
    if (at.firstChild) at.appendChild(document.createTextNode(" "));
    at.appendChild(document.createElement("span")).textContent = text;
  }
  tr.appendChild(at);
  const name = cell("", "wrap name");
  const a = document.createElement("a");
  a.href = prefix + "/executions/" + encodeURIComponent(d.id);
  name.appendChild(breakable(a, d.alertname || ""));
  tr.appendChild(name);
  tr.appendChild(cell(d.playbook || "\u2014", "wrap"));
  const outcome = cell("");
  outcome.appendChild(pill(d.outcome));
  tr.appendChild(outcome);
  const target = typeof d.target === "string" ? d.target : JSON.stringify(d.target);
  tr.appendChild(breakable(cell("", "mono wrap"), target || ""));
  tr.appendChild(cell(d.reason, "reason"));
  return tr;
}

// Whether the list still updates, said above it: a stream that ended (the session logged
// out or expired, the server gone) left a list that looked live and was not.
const LIVE_STATES = {
  live: "Live: new and changed decisions appear here.",
  reconnecting: "Reconnecting: the list is not updating right now\u2026",
  lost: "Disconnected: this list no longer updates. Reload the page.",
  // A reconnection goes on from where the last stream stopped (its last event's id: the
  // store's position), older decisions' changes too; past a read's worth the page reloads.
  resumed: "Live again: decisions made or changed while disconnected were updated.",
  gap: "More decisions were made meanwhile than the stream sends at once: reload the page.",
};

function liveState(state) {
  const p = document.getElementById("live-state");
  if (!p) return;
  p.dataset.state = state;
  p.textContent = LIVE_STATES[state];
}

// The counts above the list, as the page draws them, from the rows the list holds now.
function recount(body, limit) {
  const p = document.getElementById("counts");
  if (!p) return;
  const rows = body.querySelectorAll("tr[data-id]");
  const counts = {};
  for (const tr of rows) counts[tr.dataset.outcome] = (counts[tr.dataset.outcome] || 0) + 1;
  p.textContent = "";
  p.appendChild(document.createElement("strong")).textContent = String(rows.length);
  p.appendChild(document.createTextNode(
    " shown" + (rows.length >= limit ? " (newest " + limit + ")" : "") + ": "));
  for (const outcome of Object.keys(counts).sort()) {
    const link = document.createElement("a");
    link.className = pill(outcome).className;
    link.href = "?outcome=" + encodeURIComponent(outcome);
    link.textContent = outcome + " " + counts[outcome];
    p.appendChild(link);
    p.appendChild(document.createTextNode(" "));
  }
}

function live() {
  const table = document.getElementById("decisions");
  if (!table || table.dataset.live !== "on" || !window.EventSource) return;
  const prefix = document.querySelector("a.brand").getAttribute("href").replace(/\/$/, "");
  const body = table.tBodies[0];
  const limit = Number(table.dataset.limit) || 1000;
  // From the newest decision the page drew, then from the last event's id: a stream opened
  // again (the tab shown again) starts where the last one stopped.
  let after = table.dataset.after;
  let source = null;
  let broken = false;
  // Until the first read after a reconnection is all sent (its `at` event): more changed
  // meanwhile than a read holds is a reload, drawn as the page is now, not a line asking
  // for one (the engineer just came back to this tab).
  let catching = false;
  function open() {
    source = new EventSource(prefix + "/events" +
      (after ? "?after=" + encodeURIComponent(after) : ""));
    const mine = source;
    catching = broken;
    mine.addEventListener("open", () => liveState(broken ? "resumed" : "live"));
    mine.addEventListener("gap", () => {
      if (catching) window.location.reload();
      else liveState("gap");
    });
    mine.addEventListener("error", () => {
      broken = catching = true;
      liveState(mine.readyState === EventSource.CLOSED ? "lost" : "reconnecting");
    });
    mine.addEventListener("at", (event) => {
      if (event.lastEventId) after = event.lastEventId;
      catching = false;
    });
    mine.addEventListener("decision", (event) => {
      if (event.lastEventId) after = event.lastEventId;
      const d = JSON.parse(event.data);
      const old = body.querySelector('tr[data-id="' + CSS.escape(d.id) + '"]');
      // The stream's start sends again what the page drew: drawn again only if it changed.
      if (old && old.dataset.outcome === d.outcome) return;
      const fresh = row(d, prefix);
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      if (old) old.replaceWith(fresh);
      else body.insertBefore(fresh, body.firstChild);
      // As long as the page's list, no longer: an open tab grew by every decision.
      const rows = body.querySelectorAll("tr[data-id]");
      for (let i = limit; i < rows.length; i++) rows[i].remove();
      recount(body, limit);
    });
  }
  // A hidden tab lets its stream go: a browser opens 6 connections to a host, and 6 open
  // lists (tabs) left none for any other page or form of the console. Shown again, it is a
  // reconnection from where it stopped, and says so ("resumed").
  function close() {
    if (source) {
      source.close();
      broken = true;
    }
    source = null;
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) close();
    else if (!source) open();
  });
  window.addEventListener("pagehide", close);
  if (!document.hidden) open();
}

function confirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

// Back (or Forward) to a page kept in the back/forward cache showed it as it was: an
// approval just decided still pending. Drawn again, as it is now.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) window.location.reload();
});

document.addEventListener("DOMContentLoaded", () => {
  live();
  confirmations();
});
