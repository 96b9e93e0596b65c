// AudioWorklet processor: microphone audio (any rate) -> 16-bit PCM at `targetRate`.
//
// Runs on the audio rendering thread. Input is low-pass filtered (windowed-sinc FIR with its
// cutoff below the target Nyquist, so no aliasing), then resampled by linear interpolation at
// the fractional source position. Every `chunkMs` it posts {type: "pcm", buffer} (a
// transferable ArrayBuffer of little-endian int16) and {type: "level", rms, peak}.

const TAPS = 63;

function lowPass(cutoff, taps) {
  // cutoff as a fraction of the source rate (0..0.5); Blackman window.
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const w = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1))
      + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * w;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.step = sampleRate / this.targetRate; // source samples per output sample
    const needsFilter = sampleRate > this.targetRate;
    this.kernel = needsFilter ? lowPass((0.45 * this.targetRate) / sampleRate, TAPS) : null;
    this.history = new Float32Array(TAPS); // ring buffer of raw input for the FIR
    this.historyPos = 0;
    this.prev = 0; // last filtered sample (for interpolation across blocks)
    this.pos = 0; // fractional source position of the next output, relative to `prev`
    this.chunkLength = Math.round((this.targetRate * (opts.chunkMs || 100)) / 1000);
    this.chunk = new Int16Array(this.chunkLength);
    this.fill = 0;
    this.sumSquares = 0;
    this.peak = 0;
    this.levelCount = 0;
  }

  filtered(sample) {
    if (!this.kernel) return sample;
    this.history[this.historyPos] = sample;
    this.historyPos = (this.historyPos + 1) % TAPS;
    let acc = 0;
    let idx = this.historyPos;
    for (let i = 0; i < TAPS; i++) {
      acc += this.kernel[i] * this.history[idx];
      idx = idx + 1 === TAPS ? 0 : idx + 1;
    }
    return acc;
  }

  emit(value) {
    const clipped = Math.max(-1, Math.min(1, value));
    this.chunk[this.fill++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.fill === this.chunkLength) {
      const buffer = this.chunk.buffer;
      this.port.postMessage({ type: "pcm", buffer }, [buffer]); // transferred: chunk detaches
      this.chunk = new Int16Array(this.chunkLength);
      this.fill = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let n = 0; n < frames; n++) {
      let sample = 0;
      for (let c = 0; c < channels; c++) sample += input[c][n];
      sample /= channels;
      this.sumSquares += sample * sample;
      this.peak = Math.max(this.peak, Math.abs(sample));
      const current = this.filtered(sample);
      // Outputs falling between the previous and the current source sample.
      while (this.pos < 1) {
        this.emit(this.prev + (current - this.prev) * this.pos);
        this.pos += this.step;
      }
      this.pos -= 1;
      this.prev = current;
    }
    this.levelCount += frames;
    if (this.levelCount >= sampleRate / 20) {
      const rms = Math.sqrt(this.sumSquares / this.levelCount);
      this.port.postMessage({ type: "level", rms, peak: this.peak });
      this.sumSquares = 0;
      this.peak = 0;
      this.levelCount = 0;
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCaptureProcessor);
