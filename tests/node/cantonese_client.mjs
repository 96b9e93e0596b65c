// The cantonese.ai realtime speech-to-text example, step by step, with the npm socket.io-client
// (https://docs.cantonese.ai/speech-to-text-realtime):
//   connect (path /api/stt-realtime-socket, extraHeaders x-api-key) -> start-session
//   {sampleRate} -> session-started -> audio-chunk {audio_base_64, sample_rate} ... ->
//   stop-session -> transcript-message ... -> session-closed {code, reason}.
//
// Usage: node cantonese_client.mjs URL API_KEY PCM_FILE [SPEED]
//   PCM_FILE: 16 kHz s16le mono; SPEED: 1 = real time (default), 2 = twice as fast.
// Prints one JSON object on stdout: {connected, connectError?, events: [[name, payload]...]}.
import { readFileSync } from "node:fs";
import { io } from "socket.io-client";

const [url, apiKey, pcmFile, speedArg] = process.argv.slice(2);
const SAMPLE_RATE = 16000;
const CHUNK_BYTES = 3200; // 100 ms of 16-bit PCM
const speed = Number(speedArg || "1");
const pcm = readFileSync(pcmFile);
const out = { connected: false, events: [] };

function finish(code) {
  process.stdout.write(JSON.stringify(out) + "\n");
  socket.close();
  process.exit(code);
}

const socket = io(url, {
  path: "/api/stt-realtime-socket",
  extraHeaders: { "x-api-key": apiKey },
  reconnection: false,
});

socket.on("connect", () => {
  out.connected = true;
  socket.emit("start-session", { sampleRate: SAMPLE_RATE });
});

socket.on("connect_error", (err) => {
  out.connectError = { message: err.message, data: err.data ?? null };
  finish(0);
});

socket.on("session-started", () => {
  out.events.push(["session-started", null]);
  let offset = 0;
  const timer = setInterval(() => {
    if (offset >= pcm.length) {
      clearInterval(timer);
      socket.emit("stop-session");
      return;
    }
    const chunk = pcm.subarray(offset, offset + CHUNK_BYTES);
    offset += CHUNK_BYTES;
    socket.emit("audio-chunk", {
      audio_base_64: chunk.toString("base64"),
      sample_rate: SAMPLE_RATE,
    });
  }, 100 / speed);
});

socket.on("transcript-message", (message) => {
  out.events.push(["transcript-message", message]);
});

socket.on("session-error", (payload) => {
  out.events.push(["session-error", payload]);
});

socket.on("session-closed", (payload) => {
  out.events.push(["session-closed", payload]);
  finish(0);
});

setTimeout(() => {
  out.timedOut = true;
  finish(1);
}, 120000).unref();
