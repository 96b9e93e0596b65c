// Resuming a live stream on a new connection (README "Reconnecting"), for the demo page.
//
// A close that means "try again" (the gateway restarting during a deploy, a dropped
// connection) opens a new session that is sent the microphone audio kept since the last final,
// and whose times are shifted by where that audio starts, so the transcript carries on. The
// kept audio is bounded: older audio is dropped (and reported).

import { TARGET_RATE } from "./capture.js";

export const RETRY_CODES = new Set([1001, 1006, 1012, 1013, 1014]);
export const RECONNECT_ATTEMPTS = 5;
const MAX_REPLAY_BYTES = 30 * 2 * TARGET_RATE; // 30 s of 16-bit PCM

export function keep(live, buffer) {
  live.chunks.push(buffer);
  live.end += buffer.byteLength;
  let kept = live.end - live.start;
  while (kept > MAX_REPLAY_BYTES && live.chunks.length > 1) {
    const dropped = live.chunks.shift().byteLength;
    live.start += dropped;
    live.lost += dropped;
    kept -= dropped;
  }
}

function dropBefore(live, seconds) {
  // A final ended at `seconds` of the stream: its audio is never needed again.
  const position = Math.round(seconds * TARGET_RATE) * 2;
  while (live.chunks.length && live.start + live.chunks[0].byteLength <= position) {
    live.start += live.chunks.shift().byteLength;
  }
  if (live.chunks.length && position > live.start) {
    live.chunks[0] = live.chunks[0].slice(position - live.start);
    live.start = position;
  }
}

export function newStream(key, cred) {
  // chunks: the audio since the last final; start/end: their byte positions in the stream.
  return { key, cred, chunks: [], start: 0, end: 0, lost: 0, connection: 0, offset: 0,
    attempts: 0, stopping: false, deferred: [] };
}

export function onTimeline(session, event) {
  // This connection's event on the stream's timeline, segment ids unique across connections.
  const shift = (t) => (typeof t === "number" ? Math.round((t + session.offset) * 1000) / 1000 : t);
  const out = { ...event };
  if (event.type === "transcript") {
    out.start = shift(event.start);
    out.end = shift(event.end);
    out.words = (event.words || []).map((w) => ({ ...w, start: shift(w.start), end: shift(w.end) }));
    if (session.connection > 0) out.segment_id = `r${session.connection}.${event.segment_id}`;
    if (event.is_final) {
      session.attempts = 0;
      dropBefore(session, out.end);
    }
  } else if (event.type === "speech_started" || event.type === "utterance_end") {
    out.time = shift(event.time);
  } else if (event.type === "error" && event.code === "invalid_message") {
    // We send only audio and close_stream: this is our audio reaching a server that began to
    // drain. It is replayed if the close says "try again"; shown only if it does not.
    session.deferred.push(event);
    return null;
  } else if (event.type === "session.created" && session.connection > 0) {
    const lost = session.lost / (2 * TARGET_RATE);
    session.lost = 0;
    return { type: "reconnected", session_id: event.session_id, resumed_at: session.offset,
      lost_seconds: lost };
  }
  return out;
}
