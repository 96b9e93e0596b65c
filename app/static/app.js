// Speechgate demo page: microphone -> /v1/transcribe (verbose_json) -> live partials and finals.
//
// No build step: plain ES modules served from /static. The page dispatches DOM events
// ("speechgate:final", "speechgate:partial", "speechgate:closed") with each result, so it can
// be embedded or driven by tests.

import { TARGET_RATE, startCapture } from "./capture.js";
import { RECONNECT_ATTEMPTS, RETRY_CODES, keep, newStream, onTimeline } from "./resume.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("controls"), key: $("key"), useToken: $("use-token"), remember: $("remember"),
  model: $("model"), language: $("language"), interim: $("interim"),
  punctuation: $("punctuation"), diarization: $("diarization"), showEvents: $("show-events"),
  start: $("start"), stop: $("stop"), level: $("level"), inputInfo: $("input-info"),
  state: $("state"), errors: $("errors"), notices: $("notices"), transcript: $("transcript"),
  partial: $("partial"), sessionInfo: $("session-info"), summary: $("summary"),
  clear: $("clear"), eventsBox: $("events-box"), events: $("events"),
  unconfigured: $("unconfigured"),
};
const PLACEHOLDER = ui.transcript.querySelector(".placeholder")?.cloneNode(true);

const KEY_STORE = "speechgate.key";
let socket = null;
let capture = null;
let closingTimer = null;
let lastError = null; // {element, code, message} of the last error event, merged with the close

// ------------------------------------------------------------------------------- helpers

function setState(name, detail = "") {
  ui.state.className = `state ${name}`;
  ui.state.textContent = detail ? `${name} — ${detail}` : name;
  const busy = name === "connecting" || name === "open" || name === "closing";
  ui.start.disabled = busy;
  ui.stop.disabled = !(name === "open" || name === "connecting");
  for (const el of [ui.key, ui.model, ui.language, ui.interim, ui.punctuation, ui.diarization]) {
    el.disabled = busy;
  }
}

function showError(code, message) {
  const div = document.createElement("div");
  div.className = "error";
  const c = document.createElement("code");
  c.textContent = String(code);
  div.append(c, document.createTextNode(message || "(no reason given)"));
  ui.errors.append(div);
  return div;
}

function showClose(code, reason) {
  // A fatal error event is followed by the close naming the same cause: one entry for both.
  const text = reason || closeMeaning(code);
  const prefix = text.replace(/\.\.\.$/, "");
  if (lastError && prefix && lastError.message.startsWith(prefix)) {
    lastError.element.querySelector("code").textContent = `${code} ${lastError.code}`;
  } else {
    showError(code, text);
  }
}

function showNotice(message) {
  const div = document.createElement("div");
  div.className = "notice";
  div.textContent = message;
  ui.notices.append(div);
}

function logEvent(direction, data) {
  if (!ui.showEvents.checked) return;
  const line = `${new Date().toISOString().slice(11, 23)} ${direction} ${data}\n`;
  ui.events.textContent = (ui.events.textContent + line).slice(-20000);
  ui.events.scrollTop = ui.events.scrollHeight;
}

const fmt = (t) => (typeof t === "number" ? t.toFixed(2) : "?");

function clearTranscript(placeholder = true) {
  ui.transcript.replaceChildren();
  if (placeholder) restorePlaceholder();
  ui.partial.hidden = true;
  ui.partial.textContent = "";
  ui.summary.textContent = "";
}

function restorePlaceholder() {
  // An empty transcript says what to do (also after a failed start).
  if (PLACEHOLDER && !ui.transcript.querySelector(".final, .placeholder")) {
    ui.transcript.append(PLACEHOLDER.cloneNode(true));
  }
}

// ------------------------------------------------------------------------------- models

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    const models = Array.isArray(body) ? body : body.models;
    const preferred = body.default || "local.tiny.en";
    ui.model.replaceChildren();
    // Configured models in the list; the others folded under a disclosure with the reason.
    const missing = [];
    for (const m of models) {
      if (!m.available) {
        missing.push(m);
        continue;
      }
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = modelLabel(m) + (m.streamable ? "" : " — segmented");
      option.selected = m.id === preferred;
      ui.model.append(option);
    }
    const list = ui.unconfigured.querySelector("ul");
    list.replaceChildren();
    for (const m of missing) {
      const li = document.createElement("li");
      li.textContent = modelLabel(m);
      if (m.unavailable_reason) li.title = m.unavailable_reason;
      li.dataset.model = m.id;
      list.append(li);
    }
    const providers = [...new Set(missing.map((m) => m.provider))].join(", ");
    ui.unconfigured.querySelector("summary").textContent =
      `${missing.length} more models are not configured here (${providers})`;
    ui.unconfigured.hidden = missing.length === 0;
  } catch (err) {
    showError("models", `could not load /v1/models: ${err.message}`);
  }
}

function modelLabel(m) {
  // "Whisper tiny.en (local)" already names its provider: never "(…) (…)" twice.
  const name = m.display_name || m.id;
  return name === m.id || name.includes(m.id) ? name : `${name} · ${m.id}`;
}

// --------------------------------------------------------------------------- credentials

async function credential(key) {
  // A short-lived token keeps the long-lived key out of URLs and logs.
  if (!ui.useToken.checked) return { kind: "key", value: key };
  const response = await fetch("/v1/auth/tokens", {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify({ ttl_seconds: 600 }),
  });
  if (response.status === 404 || response.status === 405) {
    showNotice("this gateway has no POST /v1/auth/tokens; the key is sent in an auth message");
    return { kind: "key", value: key };
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw Object.assign(new Error(error.message || `HTTP ${response.status}`),
      { code: response.status });
  }
  return { kind: "token", value: body.token };
}

// ------------------------------------------------------------------------------ session

function sessionUrl(cred) {
  const params = new URLSearchParams({
    model: ui.model.value,
    language: ui.language.value,
    output_format: "verbose_json",
    sample_rate: String(TARGET_RATE),
    interim_results: String(ui.interim.checked),
    punctuation: String(ui.punctuation.checked),
    diarization: String(ui.diarization.checked),
  });
  if (cred.kind === "token") params.set("api_key", cred.value);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/transcribe?${params}`;
}

let live = null; // the stream across its connections (resume.js)

async function start(event) {
  event.preventDefault();
  const key = ui.key.value.trim();
  ui.errors.replaceChildren();
  ui.notices.replaceChildren();
  lastError = null;
  if (!key) {
    showError("key", "enter an API key (or a token) first");
    return;
  }
  if (ui.remember.checked) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
  clearTranscript(false);
  setState("connecting");
  let cred;
  try {
    cred = await credential(key);
  } catch (err) {
    showError(err.code || "token", `token request failed: ${err.message}`);
    setState("failed", "no token");
    restorePlaceholder();
    return;
  }
  live = newStream(key, cred);
  connect();
}

function connect() {
  const session = live;
  const resuming = session.connection > 0;
  const ws = new WebSocket(sessionUrl(session.cred));
  ws.binaryType = "arraybuffer";
  socket = ws;
  ws.onopen = async () => {
    if (session.cred.kind === "key") {
      ws.send(JSON.stringify({ type: "auth", api_key: session.cred.value }));
    }
    if (resuming) {
      session.offset = session.start / (2 * TARGET_RATE);
      for (const chunk of session.chunks) ws.send(chunk);
      if (session.stopping) ws.send(JSON.stringify({ type: "close_stream" }));
      else setState("open", ui.model.value);
      return;
    }
    try {
      capture = await startCapture({
        onAudio: (buffer) => {
          keep(live, buffer);
          if (socket && socket.readyState === WebSocket.OPEN) socket.send(buffer);
        },
        onLevel: (rms) => {
          const db = 20 * Math.log10(Math.max(rms, 1e-5));
          ui.level.style.width = `${Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
        },
      });
      ui.inputInfo.textContent = `mic ${capture.inputRate} Hz → ${TARGET_RATE} Hz PCM`;
      if (ws.readyState === WebSocket.OPEN) setState("open", ui.model.value);
    } catch (err) {
      showError("microphone", err.message || String(err));
      ws.close(1000, "no microphone");
    }
  };
  ws.onmessage = (msg) => {
    logEvent("←", typeof msg.data === "string" ? msg.data : `[${msg.data.byteLength} bytes]`);
    let data;
    try {
      data = JSON.parse(msg.data);
    } catch {
      return;
    }
    const event = onTimeline(session, data);
    if (event) handleEvent(event);
  };
  ws.onclose = (close) => {
    clearTimeout(closingTimer);
    if (socket === ws) socket = null;
    if (RETRY_CODES.has(close.code) && session === live && session.attempts < RECONNECT_ATTEMPTS
        && (capture || session.stopping)) {
      session.attempts += 1;
      session.connection += 1;
      session.deferred = [];
      if (lastError && lastError.code === "server_restarting") lastError.element.remove();
      lastError = null;
      const delay = Math.min(5000, 250 * 2 ** (session.attempts - 1));
      showNotice(`${close.code} ${close.reason || closeMeaning(close.code)}: reconnecting`
        + ` (attempt ${session.attempts})`);
      setState("connecting", `reconnecting in ${(delay / 1000).toFixed(1)} s`);
      setTimeout(async () => {
        if (session !== live) return;
        // A fresh token: the old one may have expired, or been minted by the process that left.
        try { session.cred = await credential(session.key); } catch { /* the close will say */ }
        connect();
      }, delay);
      return;
    }
    for (const deferred of session.deferred.splice(0)) handleEvent(deferred);
    stopCapture();
    ui.level.style.width = "0";
    if (close.code === 1000) {
      setState("closed", "1000 session ended");
    } else {
      showClose(close.code, close.reason);
      setState("failed", `${close.code} ${close.reason || closeMeaning(close.code)}`);
    }
    if (!ui.partial.textContent) restorePlaceholder();
    document.dispatchEvent(new CustomEvent("speechgate:closed",
      { detail: { code: close.code, reason: close.reason } }));
  };
}

function closeMeaning(code) {
  return {
    1006: "connection lost (no close frame)", 1009: "frame too big", 1011: "internal error",
    1012: "server restarting", 4400: "invalid parameter", 4401: "missing or invalid key",
    4402: "quota exhausted", 4403: "not allowed", 4404: "unknown model", 4408: "timeout",
    4413: "session too long", 4429: "rate limited", 4502: "upstream failed",
    4503: "unavailable", 4504: "upstream timed out",
  }[code] || "closed";
}

async function stopCapture() {
  const current = capture;
  capture = null;
  if (current) await current.stop().catch(() => {});
}

async function stop() {
  const ws = socket;
  await stopCapture();
  if (live) live.stopping = true;
  if (!ws) return;
  if (ws.readyState === WebSocket.OPEN) {
    setState("closing", "waiting for the last finals");
    ws.send(JSON.stringify({ type: "close_stream" }));
    closingTimer = setTimeout(() => ws.close(1000, "client gave up waiting"), 20000);
  } else {
    ws.close();
  }
}

// ------------------------------------------------------------------------ server events

function handleEvent(event) {
  switch (event.type) {
    case "session.created": {
      ui.sessionInfo.textContent = `${event.model} · ${event.language} · ${event.session_id}`;
      for (const warning of event.warnings || []) showNotice(warning);
      break;
    }
    case "reconnected":
      ui.sessionInfo.textContent += ` → ${event.session_id}`;
      showNotice(`reconnected: resumed at ${fmt(event.resumed_at)} s`
        + (event.lost_seconds ? ` (${fmt(event.lost_seconds)} s of audio could not be kept)` : ""));
      break;
    case "transcript":
      if (event.is_final) addFinal(event);
      else showPartial(event);
      break;
    case "warning":
      showNotice(`${event.code}: ${event.message}`);
      break;
    case "provider_switched":
      showNotice(`switched from ${event.from} to ${event.to}: ${event.reason}`);
      break;
    case "error": {
      const retry = event.retry_after ? ` (retry after ${event.retry_after} s)` : "";
      const element = showError(event.code, event.message + retry);
      lastError = { element, code: event.code, message: event.message };
      break;
    }
    case "session.ended": {
      const latency = event.latency || {};
      ui.summary.textContent = `${fmt(event.usage.audio_seconds)} s of audio`
        + (latency.first_partial_ms != null ? ` · first result after ${Math.round(latency.first_partial_ms)} ms` : "")
        + (latency.final_after_end_ms != null ? ` · last final ${Math.round(latency.final_after_end_ms)} ms after stop` : "");
      break;
    }
    default:
      break; // speech_started, utterance_end, finalized: shown in the event log only
  }
}

function showPartial(event) {
  if (!event.text) return;
  ui.partial.hidden = false;
  ui.partial.dataset.segment = event.segment_id;
  // The settled words (stable_words) dark, the newest ones grey: they may still change.
  const words = event.text.trim().split(/\s+/);
  const settled = Math.min(event.stable_words || 0, words.length);
  const tail = document.createElement("span");
  tail.className = "unsettled";
  tail.textContent = words.slice(settled).join(" ");
  ui.partial.replaceChildren(words.slice(0, settled).join(" ") + (settled ? " " : ""), tail);
  document.dispatchEvent(new CustomEvent("speechgate:partial", { detail: event }));
}

function addFinal(event) {
  if (ui.partial.dataset.segment === event.segment_id || !ui.partial.textContent) {
    ui.partial.hidden = true;
    ui.partial.textContent = "";
  }
  ui.transcript.querySelector(".placeholder")?.remove();
  if (!event.text) return;
  const p = document.createElement("p");
  p.className = "final";
  p.dataset.segment = event.segment_id;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${fmt(event.start)}–${fmt(event.end)}`;
  p.append(time);
  if (event.speaker != null) {
    const who = document.createElement("span");
    who.className = "speaker";
    who.textContent = `[${event.speaker}]`;
    p.append(who);
  }
  if (event.words && event.words.length) {
    event.words.forEach((w, i) => {
      const span = document.createElement("span");
      span.className = "word";
      if (typeof w.confidence === "number" && w.confidence < 0.5) span.classList.add("low");
      span.textContent = w.word.trim();
      const conf = typeof w.confidence === "number" ? ` · confidence ${w.confidence.toFixed(2)}` : "";
      const who = w.speaker != null ? ` · speaker ${w.speaker}` : "";
      span.dataset.tip = `${fmt(w.start)}–${fmt(w.end)} s${conf}${who}`;
      span.setAttribute("aria-label", `${span.textContent}, ${span.dataset.tip}`);
      p.append(span);
      if (i < event.words.length - 1) p.append(" ");
    });
  } else {
    p.append(event.text);
  }
  ui.transcript.append(p);
  document.dispatchEvent(new CustomEvent("speechgate:final", { detail: event }));
}

// ---------------------------------------------------------------------------------- init

ui.form.addEventListener("submit", start);
ui.stop.addEventListener("click", stop);
ui.clear.addEventListener("click", () => clearTranscript());
ui.showEvents.addEventListener("change", () => { ui.eventsBox.hidden = !ui.showEvents.checked; });
const saved = localStorage.getItem(KEY_STORE);
if (saved) {
  ui.key.value = saved;
  ui.remember.checked = true;
}
setState("idle");
loadModels();
