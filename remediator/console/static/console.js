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
  // Past the browser's streams (other lists of this console hold them): polled.
  polled: "Live: new and changed decisions appear here within seconds.",
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

// Streams the browser holds for this console's lists; the lists past them poll. A stream
// holds one of the 6 connections a browser opens to a host (HTTP/1.1): six open lists left
// none for any other page or form of the console, which hung. Counted across the
// browser's tabs and windows by Web Locks (let go as a list is hidden, closed, or its tab
// crashes); without them (not a secure context: plain HTTP to another host) a stream each.
const STREAMS = 2;
const POLL_MS = 3000;

// One of the streams' slots (its release), or null when every one is held.
function slot(i) {
  if (!navigator.locks) return Promise.resolve(() => {});
  if (i >= STREAMS) return Promise.resolve(null);
  return new Promise((taken) => {
    navigator.locks.request("remediator-live-" + i, { ifAvailable: true }, (lock) => {
      if (!lock) {
        taken(slot(i + 1));
        return undefined;
      }
      return new Promise((release) => taken(release));  // held until released
    }).catch(() => taken(() => {}));  // refused (an opaque origin): a stream, as without
  });
}

// The events of a poll's answer (as the stream sends them), each as [type, id, data].
function parseEvents(text) {
  const events = [];
  for (const block of text.split("\n\n")) {
    let type = "", id = "", data = "";
    for (const line of block.split("\n")) {
      const at = line.indexOf(": ");
      const name = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 2);
      if (name === "event") type = value;
      else if (name === "id") id = value;
      else if (name === "data") data = value;
    }
    if (type) events.push([type, id, data]);
  }
  return events;
}

function live() {
  const table = document.getElementById("decisions");
  if (!table || table.dataset.live !== "on" || !window.EventSource) return;
  const prefix = document.querySelector("a.brand").getAttribute("href").replace(/\/$/, "");
  const body = table.tBodies[0];
  const limit = Number(table.dataset.limit) || 1000;
  // From the newest decision the page drew and the store's position then, then from the
  // last event's id: a stream opened again (the tab shown again), or a poll, starts where
  // the last one stopped, and sends every change since.
  let after = table.dataset.after;
  let source = null;
  let release = null;  // the stream's slot
  let polling = false;
  let timer = null;
  let broken = false;
  // Until the first read after a reconnection is all sent (its `at` event): more changed
  // meanwhile than a read holds is a reload, drawn as the page is now, not a line asking
  // for one (the engineer just came back to this tab).
  let catching = false;
  const url = (extra) => prefix + "/events" + extra +
    (after ? (extra ? "&" : "?") + "after=" + encodeURIComponent(after) : "");

  function gap() {
    if (catching) window.location.reload();
    else liveState("gap");
  }
  function at(id) {
    if (id) after = id;
    catching = false;
  }
  function decision(id, data) {
    if (id) after = id;
    const d = JSON.parse(data);
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
  }

  function open() {
    source = new EventSource(url(""));
    const mine = source;
    catching = broken;
    mine.addEventListener("open", () => liveState(broken ? "resumed" : "live"));
    mine.addEventListener("gap", gap);
    mine.addEventListener("error", () => {
      broken = catching = true;
      liveState(mine.readyState === EventSource.CLOSED ? "lost" : "reconnecting");
      if (mine.readyState === EventSource.CLOSED && release) {
        release();  // for another list
        release = null;
      }
    });
    mine.addEventListener("at", (event) => at(event.lastEventId));
    mine.addEventListener("decision", (event) => decision(event.lastEventId, event.data));
  }
  // Past the streams: what changed since `after`, every few seconds, a request each (its
  // connection free between them); a stream's slot let go meanwhile is taken.
  async function poll() {
    timer = null;
    polling = true;
    try {
      const taken = await slot(0);
      if (taken && !document.hidden) {
        release = taken;
        open();
        return;
      }
      if (taken) taken();
      if (document.hidden) return;
      let answer = null;
      try {
        answer = await fetch(url("?once=1"), { cache: "no-store", redirect: "manual" });
      } catch (e) {
        answer = null;  // the server away: tried again
      }
      if (answer && answer.ok) {
        catching = broken;
        liveState("polled");
        for (const [type, id, data] of parseEvents(await answer.text())) {
          if (type === "decision") decision(id, data);
          else if (type === "gap") gap();
          else if (type === "at") at(id);
        }
        broken = false;
      } else if (answer && answer.status < 500 && answer.status !== 429) {
        liveState("lost");  // logged out or expired (a redirect to log in): as a stream's end
        return;
      } else {
        broken = catching = true;
        liveState("reconnecting");
      }
      if (!document.hidden) timer = setTimeout(poll, POLL_MS);
    } finally {
      polling = false;
    }
  }
  // Shown: a stream if a slot is free, else polls.
  function start() {
    if (source || polling || timer) return;
    poll();
  }
  // A hidden tab lets its stream (and its slot) go, or stops polling. Shown again, it is a
  // reconnection from where it stopped, and says so ("resumed").
  function stop() {
    if (source) {
      source.close();
      broken = true;
    }
    source = null;
    if (release) release();
    release = null;
    if (timer) {
      clearTimeout(timer);
      broken = true;
    }
    timer = null;
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stop();
    else start();
  });
  window.addEventListener("pagehide", stop);
  if (!document.hidden) start();
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
