// Microphone capture: getUserMedia -> AudioWorklet (pcm-worklet.js) -> 16 kHz int16 chunks.

export const TARGET_RATE = 16000;

export async function startCapture({ onAudio, onLevel }) {
  if (!navigator.mediaDevices || !window.AudioWorkletNode) {
    throw new Error("this browser has no microphone or AudioWorklet support (use HTTPS or localhost)");
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: {
      channelCount: 1,
      // Speech models do better on the raw signal than on call-style processing.
      echoCancellation: false,
      noiseSuppression: false,
      autoGainControl: false,
    },
  });
  const context = new AudioContext();
  await context.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
  const source = context.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(context, "pcm-capture", {
    numberOfInputs: 1,
    numberOfOutputs: 1,
    processorOptions: { targetRate: TARGET_RATE, chunkMs: 100 },
  });
  node.port.onmessage = (event) => {
    if (event.data.type === "pcm") onAudio(event.data.buffer);
    else if (event.data.type === "level") onLevel(event.data.rms, event.data.peak);
  };
  // A muted path to the destination keeps the graph rendering in every browser.
  const mute = context.createGain();
  mute.gain.value = 0;
  source.connect(node).connect(mute).connect(context.destination);
  if (context.state === "suspended") await context.resume();

  return {
    inputRate: context.sampleRate,
    async stop() {
      node.port.onmessage = null;
      source.disconnect();
      node.disconnect();
      stream.getTracks().forEach((track) => track.stop());
      await context.close();
    },
  };
}
