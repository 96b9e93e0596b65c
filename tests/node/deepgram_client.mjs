// The official @deepgram/sdk live client (listen.v1), pointed at Speechgate by its environment
// (base URL) and key only, as the SDK's README shows it: connect -> waitForOpen -> sendMedia
// in 100 ms chunks -> sendFinalize half-way -> sendCloseStream -> messages until the close.
//
// Usage: node deepgram_client.mjs HTTP_URL WS_URL API_KEY PCM_FILE SPEED MODEL
//   PCM_FILE: 16 kHz s16le mono; SPEED: 1 = real time, 0 = as fast as the socket takes it.
// Prints one JSON object on stdout: {opened, error?, close?, messages: [...]}.
import { readFileSync } from "node:fs";
import { DeepgramClient } from "@deepgram/sdk";

const [httpUrl, wsUrl, apiKey, pcmFile, speedArg, model] = process.argv.slice(2);
const CHUNK_BYTES = 3200; // 100 ms of 16-bit PCM at 16 kHz
const speed = Number(speedArg || "1");
const pcm = readFileSync(pcmFile);
const out = { opened: false, messages: [] };

const client = new DeepgramClient({
  apiKey,
  environment: { base: httpUrl, production: wsUrl, agent: wsUrl, agentRest: httpUrl },
});

const connection = await client.listen.v1.connect({
  model,
  encoding: "linear16",
  sample_rate: 16000,
  interim_results: "true",
  punctuate: "true",
  vad_events: "true",
  utterance_end_ms: 1000,
  reconnectAttempts: 0,
});

const closed = new Promise((resolve) => {
  connection.on("close", (event) => {
    out.close = { code: event?.code ?? null, reason: event?.reason ?? null };
    resolve();
  });
});
connection.on("message", (message) => out.messages.push(message));
connection.on("error", (error) => {
  out.error = String(error?.message ?? error);
});

connection.connect();
try {
  await Promise.race([
    connection.waitForOpen(),
    closed.then(() => { throw new Error("closed before open"); }),
  ]);
  out.opened = true;
  for (let i = 0; i < pcm.length; i += CHUNK_BYTES) {
    connection.sendMedia(pcm.subarray(i, i + CHUNK_BYTES));
    if (i <= pcm.length / 2 && pcm.length / 2 < i + CHUNK_BYTES) {
      connection.sendFinalize({ type: "Finalize" });
    }
    if (speed > 0) {
      await new Promise((r) => setTimeout(r, 100 / speed));
    }
  }
  connection.sendCloseStream({ type: "CloseStream" });
  await Promise.race([closed, new Promise((r) => setTimeout(r, 60000))]);
} catch (error) {
  out.error = out.error ?? String(error?.message ?? error);
}
process.stdout.write(JSON.stringify(out) + "\n");
process.exit(0);
