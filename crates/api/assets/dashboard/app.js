// Tether's operator page: the dashboard WebSocket and the REST API, nothing else. No build step and
// no library: the two charts are drawn on canvases here.
"use strict";

const API = "/api/mcp";
const KEY_SLOT = "tether.apiKey"; // sessionStorage: this tab only
const PAGE_SIZE = 50;
const FEED_SIZE = 200;
const HOUR_MS = 3600e3;
const MINUTE_MS = 60e3;
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

const S = {
  key: null,
  sessions: new Map(), // id -> session view (REST shape), plus ui flags
  ws: null,
  lastSeq: null, // the seq of the last message seen: where a resume starts
  attempt: 0,
  retryTimer: null,
  buffering: null, // events received while the list loads, applied after it
  breakdown: null,
  reconnects: new Map(), // minute (ms) -> reconnects seen in it
  statusHistory: [], // {t, active, idle, disconnected}
  reuse: 0,
  feed: [],
  page: 0,
  filter: "",
  search: "",
  dirty: true,
  detailQueue: new Set(),
  detailInFlight: 0,
  generation: 0, // bumped on sign-out, so late answers of an old sign-in are dropped
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// REST

class HttpError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path) {
  const res = await fetch(API + path, {
    method,
    headers: { Authorization: `Bearer ${S.key}` },
    cache: "no-store",
  });
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    body = null;
  }
  if (!res.ok) throw new HttpError(res.status, body);
  return body;
}

/// Loads the list while holding the stream's events back, then applies them on top: the snapshot
/// may be older than events that arrive while it loads.
async function reload() {
  S.buffering = S.buffering || [];
  try {
    await loadList();
  } finally {
    const held = S.buffering || [];
    S.buffering = null;
    for (const m of held) apply(m);
  }
}

async function loadList() {
  const gen = S.generation;
  const fresh = new Map();
  let cursor = null;
  do {
    const q = `?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
    const page = await api("GET", `/sessions${q}`);
    if (gen !== S.generation) return;
    for (const s of page.sessions) fresh.set(s.session_id, s);
    cursor = page.next_cursor;
  } while (cursor);
  // Rows seen only through events since the load began stay; everything else is the snapshot.
  for (const [id, s] of S.sessions) if (!fresh.has(id) && s._fromEvent) fresh.set(id, s);
  S.sessions = fresh;
  S.dirty = true;
}

function fetchDetails(id) {
  if (S.detailQueue.has(id)) return;
  S.detailQueue.add(id);
  pumpDetails();
}

function pumpDetails() {
  while (S.detailInFlight < 4 && S.detailQueue.size > 0) {
    const id = S.detailQueue.values().next().value;
    S.detailQueue.delete(id);
    S.detailInFlight += 1;
    const gen = S.generation;
    api("GET", `/sessions/${encodeURIComponent(id)}`)
      .then((full) => {
        if (gen !== S.generation) return;
        S.sessions.set(id, merge(full, S.sessions.get(id)));
        S.dirty = true;
      })
      .catch(() => {
        const known = S.sessions.get(id);
        if (known) known._detailed = true; // gone or unreachable: do not ask again
      })
      .finally(() => {
        S.detailInFlight -= 1;
        pumpDetails();
      });
  }
}

/// A full view from REST or a health update, merged with what events already told about the row:
/// an event may be newer than the view (it raced the request), and counts and the end only grow.
function merge(full, known) {
  const out = Object.assign({}, full, { _detailed: true });
  if (!known) return out;
  out.reconnect_count = Math.max(full.reconnect_count || 0, known.reconnect_count || 0);
  if ((Date.parse(known.last_activity) || 0) > (Date.parse(full.last_activity) || 0)) {
    out.last_activity = known.last_activity;
    out.status = known.status;
  }
  if (known.status === "disconnected") {
    out.status = "disconnected";
    out.disconnected_at = full.disconnected_at || known.disconnected_at;
    out.disconnect_reason = full.disconnect_reason || known.disconnect_reason;
  }
  out._reused = known._reused;
  out._flash = known._flash;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sign-in and the stream

async function ticket() {
  return (await api("POST", "/ws/ticket")).ticket;
}

function refusal(e) {
  if (e.status === 401) return "The API key was refused.";
  if (e.status === 429) return "Too many attempts from this address; wait a minute and try again.";
  if (e instanceof HttpError) return `The server answered ${e.status}: ${e.message}`;
  return `The server cannot be reached (${e.message}).`;
}

async function signIn(key) {
  S.key = key;
  $("signin-error").hidden = true;
  let first;
  try {
    first = await ticket();
  } catch (e) {
    S.key = null;
    showSigninError(refusal(e));
    return;
  }
  sessionStorage.setItem(KEY_SLOT, key);
  $("signin").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  connect(first, true);
}

function showSigninError(text) {
  const el = $("signin-error");
  el.textContent = text;
  el.hidden = false;
  $("signin").hidden = false;
  $("board").hidden = true;
  $("signout").hidden = true;
  setConn("signed-out", "signed out");
}

function signOut() {
  S.generation += 1;
  sessionStorage.removeItem(KEY_SLOT);
  S.key = null;
  clearTimeout(S.retryTimer);
  if (S.ws) {
    S.ws.onclose = null;
    S.ws.close(1000, "signed out");
    S.ws = null;
  }
  S.sessions = new Map();
  S.buffering = null;
  S.lastSeq = null;
  S.feed = [];
  S.dirty = true;
  $("key").value = "";
  $("signin").hidden = false;
  $("board").hidden = true;
  $("signout").hidden = true;
  setConn("signed-out", "signed out");
}

function setConn(state, text) {
  const el = $("conn");
  el.dataset.state = state;
  el.textContent = text;
}

function banner(text, warn) {
  const el = $("banner");
  el.textContent = text;
  el.classList.toggle("warn", !!warn);
  el.hidden = !text;
}

/// Opens the stream with `tk`; the first time the list is loaded over REST meanwhile, later times
/// the stream resumes from the last seq it saw.
function connect(tk, initial) {
  const gen = S.generation;
  const proto = location.protocol === "https:" ? "wss" : "ws";
  // health=summary: the page keeps its own list, so health updates need only the counts.
  let url = `${proto}://${location.host}${API}/ws/sessions?health=summary&ticket=${encodeURIComponent(tk)}`;
  if (!initial && S.lastSeq !== null) url += `&since=${S.lastSeq}`;
  setConn("connecting", initial ? "connecting" : "resuming");
  const ws = new WebSocket(url);
  S.ws = ws;
  let opened = false;
  ws.onopen = () => {
    opened = true;
    S.attempt = 0;
    setConn("live", "live");
    if (initial) {
      reload().catch((e) => {
        if (e.status === 401) return showSigninError(refusal(e));
        banner(`Could not load the session list: ${e.message}`, true);
      });
    }
  };
  ws.onmessage = (ev) => {
    if (gen !== S.generation) return;
    let m;
    try {
      m = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    if (typeof m.seq === "number") S.lastSeq = m.seq;
    if (S.buffering && m.type !== "health_update" && m.type !== "resumed") S.buffering.push(m);
    else apply(m);
  };
  ws.onclose = (ev) => {
    if (gen !== S.generation || S.ws !== ws) return;
    S.ws = null;
    const why = ev.code === 1013 ? "the server dropped this page as too slow" : `closed (${ev.code}${ev.reason ? `, ${ev.reason}` : ""})`;
    scheduleReconnect(opened ? `Stream ${why}.` : "Could not open the stream.");
  };
}

function scheduleReconnect(why) {
  const delay = BACKOFF_MS[Math.min(S.attempt, BACKOFF_MS.length - 1)] * (0.8 + Math.random() * 0.4);
  S.attempt += 1;
  const secs = Math.max(1, Math.round(delay / 1000));
  setConn("reconnecting", `reconnecting in ${secs} s`);
  banner(`${why} Reconnecting in ${secs} s (attempt ${S.attempt}); the page resumes where it stopped.`, true);
  const gen = S.generation;
  clearTimeout(S.retryTimer);
  S.retryTimer = setTimeout(async () => {
    if (gen !== S.generation) return;
    try {
      const tk = await ticket();
      if (gen !== S.generation) return;
      connect(tk, false);
    } catch (e) {
      if (e.status === 401) return showSigninError("The API key is no longer accepted; sign in again.");
      scheduleReconnect(`The server is not answering (${e.status ? `HTTP ${e.status}` : e.message}).`);
    }
  }, delay);
}

// ---------------------------------------------------------------------------------------------
// Messages

function session(id, ts) {
  let s = S.sessions.get(id);
  if (!s) {
    s = { session_id: id, status: "active", reconnect_count: 0, connected_at: ts, last_activity: ts, _fromEvent: true };
    S.sessions.set(id, s);
    fetchDetails(id);
  }
  return s;
}

function apply(m) {
  const d = m.data || {};
  const ts = m.timestamp;
  switch (m.type) {
    case "session_created": {
      const s = session(m.session_id, ts);
      s.client_type = d.client_type;
      s.status = d.status || "active";
      s._flash = Date.now();
      feed(m, `created (${d.client_type || "?"})`);
      break;
    }
    case "session_updated": {
      const s = session(m.session_id, ts);
      if (d.status) s.status = d.status;
      if (typeof d.reconnect_count === "number") s.reconnect_count = d.reconnect_count;
      if (d.update_type === "activity" || d.update_type === "reconnected") s.last_activity = ts;
      s._flash = Date.now();
      if (d.update_type === "reconnected") {
        countReconnect(ts);
        feed(m, `reconnected (#${d.reconnect_count})`);
      } else if (d.update_type !== "activity") {
        feed(m, d.update_type === "idle" ? "went idle" : d.update_type === "token_issued" ? "token issued" : d.update_type);
      }
      break;
    }
    case "session_disconnected": {
      const s = session(m.session_id, ts);
      s.status = "disconnected";
      s.disconnected_at = ts;
      s.disconnect_reason = d.reason;
      s._flash = Date.now();
      feed(m, `ended: ${d.reason || "?"}`);
      break;
    }
    case "token_reused": {
      const s = session(m.session_id, ts);
      s._reused = true;
      s._flash = Date.now();
      S.reuse += 1;
      feed(m, "reconnect token REUSED: the live token was revoked", true);
      break;
    }
    case "health_update": {
      S.breakdown = d.status_breakdown || S.breakdown;
      if (S.breakdown) {
        S.statusHistory.push({ t: Date.parse(ts) || Date.now(), ...S.breakdown });
        const cutoff = Date.now() - HOUR_MS;
        while (S.statusHistory.length && S.statusHistory[0].t < cutoff) S.statusHistory.shift();
      }
      for (const full of d.sessions || []) S.sessions.set(full.session_id, merge(full, S.sessions.get(full.session_id)));
      break;
    }
    case "resumed": {
      if (d.recovered) {
        banner("Stream resumed: the replay was complete, nothing was missed.");
      } else {
        banner("Stream resumed, but the replay was incomplete (events were pruned): reloading the list…", true);
        reload()
          .then(() => banner("Stream resumed; the replay was incomplete, so the list was reloaded over REST.", true))
          .catch((e) => banner(`Stream resumed, but reloading the list failed: ${e.message}`, true));
      }
      $("conn").dataset.recovered = String(!!d.recovered);
      break;
    }
    default:
      break;
  }
  S.dirty = true;
}

function countReconnect(ts) {
  const t = Date.parse(ts) || Date.now();
  const minute = Math.floor(t / MINUTE_MS) * MINUTE_MS;
  S.reconnects.set(minute, (S.reconnects.get(minute) || 0) + 1);
  const cutoff = Date.now() - HOUR_MS - MINUTE_MS;
  for (const k of S.reconnects.keys()) if (k < cutoff) S.reconnects.delete(k);
}

function feed(m, text, security) {
  S.feed.unshift({ t: m.timestamp, id: m.session_id, text, security: !!security, seq: m.seq });
  if (S.feed.length > FEED_SIZE) S.feed.length = FEED_SIZE;
}

// ---------------------------------------------------------------------------------------------
// Rendering: at most every 250 ms, whatever the event rate, and only the visible page of rows.

function rows() {
  const q = S.search.trim().toLowerCase();
  const out = [];
  for (const s of S.sessions.values()) {
    if (S.filter && s.status !== S.filter) continue;
    if (q && !`${s.session_id} ${s.client_type || ""} ${s.principal || ""}`.toLowerCase().includes(q)) continue;
    out.push(s);
  }
  out.sort((a, b) => (b.last_activity || "").localeCompare(a.last_activity || "") || a.session_id.localeCompare(b.session_id));
  return out;
}

function ago(iso, now) {
  const t = Date.parse(iso);
  if (!t) return "–";
  return span(now - t) + " ago";
}

function span(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function renderTable(now) {
  const all = rows();
  const pages = Math.max(1, Math.ceil(all.length / PAGE_SIZE));
  S.page = Math.min(S.page, pages - 1);
  const first = S.page * PAGE_SIZE;
  const visible = all.slice(first, first + PAGE_SIZE);
  const body = document.createElement("tbody");
  for (const s of visible) {
    if (!s._detailed && s._fromEvent) fetchDetails(s.session_id);
    const tr = document.createElement("tr");
    tr.dataset.id = s.session_id;
    if (s._flash && now - s._flash < 2000) tr.className = "flash";
    if (s._reused) tr.classList.add("reused");
    cell(tr, s.session_id, "id").title = s.session_id;
    cell(tr, [s.client_type, s.client_version].filter(Boolean).join(" ") || "–");
    cell(tr, s.principal || "–", "opt");
    const st = cell(tr, "");
    const badge = document.createElement("span");
    badge.className = `badge ${s.status}`;
    badge.textContent = s.status;
    st.appendChild(badge);
    cell(tr, String(s.reconnect_count ?? 0), "num reconnects");
    cell(tr, ago(s.last_activity, now));
    const start = Date.parse(s.connected_at);
    const end = s.status === "disconnected" ? Date.parse(s.disconnected_at) || now : now;
    cell(tr, start ? span(end - start) : "–", "opt");
    body.appendChild(tr);
  }
  $("sessions").replaceChild(body, $("sessions").tBodies[0]);
  $("range").textContent = all.length
    ? `${(first + 1).toLocaleString()}–${(first + visible.length).toLocaleString()} of ${all.length.toLocaleString()}`
    : "no sessions";
  $("prev").disabled = S.page === 0;
  $("next").disabled = S.page >= pages - 1;
}

function renderStats() {
  const b = S.breakdown;
  // Before the first health_update, count what the page holds.
  const counts = b || countLocal();
  for (const k of ["active", "idle", "disconnected", "total"]) $(`n-${k}`).textContent = (counts[k] ?? 0).toLocaleString();
  $("n-reuse").textContent = S.reuse.toLocaleString();
}

function countLocal() {
  const c = { active: 0, idle: 0, disconnected: 0, total: 0 };
  for (const s of S.sessions.values()) {
    c[s.status] = (c[s.status] || 0) + 1;
    c.total += 1;
  }
  return c;
}

function renderFeed() {
  const ol = $("feed");
  const frag = document.createDocumentFragment();
  for (const e of S.feed.slice(0, 100)) {
    const li = document.createElement("li");
    if (e.security) li.className = "security";
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = (e.t || "").slice(11, 19);
    li.appendChild(t);
    li.appendChild(document.createTextNode(`${e.id || ""} ${e.text}`));
    frag.appendChild(li);
  }
  ol.replaceChildren(frag);
}

function canvas2d(el) {
  const ratio = window.devicePixelRatio || 1;
  const w = el.clientWidth || 300;
  const h = el.clientHeight || 160;
  if (el.width !== Math.round(w * ratio) || el.height !== Math.round(h * ratio)) {
    el.width = Math.round(w * ratio);
    el.height = Math.round(h * ratio);
  }
  const g = el.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px system-ui, sans-serif";
  return { g, w, h };
}

function niceMax(v) {
  if (v <= 5) return 5;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function axes(g, w, h, max, pad) {
  g.strokeStyle = "#e3e6ea";
  g.fillStyle = "#6b7685";
  g.lineWidth = 1;
  for (let i = 0; i <= 2; i += 1) {
    const y = pad.t + ((h - pad.t - pad.b) * i) / 2;
    g.beginPath();
    g.moveTo(pad.l, y + 0.5);
    g.lineTo(w - pad.r, y + 0.5);
    g.stroke();
    g.fillText(String(Number((max * (1 - i / 2)).toFixed(1))), 2, y + 4);
  }
  g.fillText("-60 min", pad.l, h - 4);
  g.fillText("now", w - pad.r - 20, h - 4);
}

function renderReconnectChart(now) {
  const el = $("chart-reconnects");
  const { g, w, h } = canvas2d(el);
  const pad = { l: 34, r: 6, t: 8, b: 18 };
  const nowMinute = Math.floor(now / MINUTE_MS) * MINUTE_MS;
  const bins = [];
  let total = 0;
  for (let i = 59; i >= 0; i -= 1) {
    const n = S.reconnects.get(nowMinute - i * MINUTE_MS) || 0;
    bins.push(n);
    total += n;
  }
  const max = niceMax(Math.max(...bins));
  axes(g, w, h, max, pad);
  const bw = (w - pad.l - pad.r) / bins.length;
  g.fillStyle = "#2b6cb0";
  bins.forEach((n, i) => {
    if (!n) return;
    const bh = ((h - pad.t - pad.b) * n) / max;
    g.fillRect(pad.l + i * bw + 1, h - pad.b - bh, Math.max(1, bw - 2), bh);
  });
  el.dataset.total = String(total);
  el.setAttribute("aria-label", `${total} reconnects in the last hour, ${bins[bins.length - 1]} this minute`);
  $("reconnects-caption").textContent = `${total.toLocaleString()} in all (seen since this page opened)`;
}

function renderStatusChart(now) {
  const el = $("chart-status");
  const { g, w, h } = canvas2d(el);
  const pad = { l: 34, r: 6, t: 8, b: 18 };
  const pts = S.statusHistory;
  let top = 0;
  for (const p of pts) top = Math.max(top, p.active || 0, p.idle || 0, p.disconnected || 0);
  const max = niceMax(top);
  axes(g, w, h, max, pad);
  const x = (t) => pad.l + ((w - pad.l - pad.r) * (t - (now - HOUR_MS))) / HOUR_MS;
  const y = (v) => h - pad.b - ((h - pad.t - pad.b) * v) / max;
  const css = getComputedStyle(document.documentElement);
  for (const k of ["disconnected", "idle", "active"]) {
    g.strokeStyle = css.getPropertyValue(`--${k}`).trim() || "#888";
    g.lineWidth = 2;
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p[k] || 0)) : g.moveTo(x(p.t), y(p[k] || 0))));
    if (pts.length === 1) g.lineTo(x(now), y(pts[0][k] || 0));
    g.stroke();
  }
  const last = pts[pts.length - 1];
  el.setAttribute("aria-label", last ? `now ${last.active} active, ${last.idle} idle, ${last.disconnected} disconnected` : "no health update yet");
}

let lastFull = 0;
function frame() {
  const now = Date.now();
  // Relative times move every second even without events.
  if (S.key && (S.dirty || now - lastFull > 1000)) {
    S.dirty = false;
    lastFull = now;
    renderStats();
    renderTable(now);
    renderFeed();
    renderReconnectChart(now);
    renderStatusChart(now);
  }
}

// ---------------------------------------------------------------------------------------------

function start() {
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("key").value.trim();
    if (key) signIn(key);
  });
  $("signout").addEventListener("click", signOut);
  $("filter").addEventListener("change", (ev) => {
    S.filter = ev.target.value;
    S.page = 0;
    S.dirty = true;
  });
  $("search").addEventListener("input", (ev) => {
    S.search = ev.target.value;
    S.page = 0;
    S.dirty = true;
  });
  $("prev").addEventListener("click", () => {
    S.page = Math.max(0, S.page - 1);
    S.dirty = true;
  });
  $("next").addEventListener("click", () => {
    S.page += 1;
    S.dirty = true;
  });
  window.addEventListener("resize", () => (S.dirty = true));
  setInterval(frame, 250);
  const saved = sessionStorage.getItem(KEY_SLOT);
  if (saved) signIn(saved);
}

start();
