// AudioWorklet processors (loaded with audioWorklet.addModule; plain JS on the audio thread).
//
//   pcm-capture  mic → 16-bit PCM chunks posted to the page (WebSocket transport).
//   pcm-player   16-bit PCM from the page → speakers, with a flush that takes effect at the
//                next render quantum (128 frames) and exact counts of what was played.
//   level-meter  counts how long a stream carried audible sound (WebRTC bot audio).

/**
 * Mic samples → Int16 chunks of `chunkSamples` at `targetRate`, posted as transferable
 * ArrayBuffers. When the context runs at another rate (a browser that cannot resample a
 * mic into a 16 kHz context), each output sample is the mean of the input samples it
 * spans: a box low-pass and decimation in one.
 */
class PcmCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = options.processorOptions?.chunkSamples ?? 320;
    this.step = sampleRate / (options.processorOptions?.targetRate ?? sampleRate);
    this.buffer = new Int16Array(this.chunk);
    this.filled = 0;
    this.sum = 0;
    this.count = 0;
    this.position = 0; // input samples into the current output sample
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    for (let i = 0; i < frames; i++) {
      let s = input[0][i];
      if (channels > 1) {
        for (let c = 1; c < channels; c++) s += input[c][i];
        s /= channels;
      }
      this.sum += s;
      this.count += 1;
      this.position += 1;
      if (this.position < this.step) continue;
      this.position -= this.step;
      this.emit(this.sum / this.count);
      this.sum = 0;
      this.count = 0;
    }
    return true;
  }

  emit(sample) {
    const s = sample < -1 ? -1 : sample > 1 ? 1 : sample;
    this.buffer[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
    if (this.filled === this.chunk) {
      this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
      this.buffer = new Int16Array(this.chunk);
      this.filled = 0;
    }
  }
}

/**
 * A jitter-buffered PCM queue. The page posts {type:"pcm", samples: Float32Array} at the
 * context's rate and {type:"flush"} on an interruption. Playback starts once `prebufferMs`
 * is queued (or has been waited for), and re-buffers after an underrun.
 *
 * It reports {played, flushed, cuts, buffered, playing}: `played` counts queued samples actually
 * written to the output (never the silence it pads with), so it is what reached the speakers.
 */
class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const prebufferMs = options.processorOptions?.prebufferMs ?? 80;
    this.prebuffer = Math.round((prebufferMs * sampleRate) / 1000);
    this.queue = [];
    this.head = 0;
    this.buffered = 0;
    this.playing = false;
    this.waited = 0;
    this.played = 0;
    this.flushed = 0;
    this.cuts = 0; // flushes that cut off audio (not those that found nothing to drop)
    this.sinceReport = 0;
    this.reportEvery = Math.round(sampleRate / 20); // ~50 ms
    this.port.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === "pcm") {
        this.queue.push(msg.samples);
        this.buffered += msg.samples.length;
      } else if (msg.type === "flush") {
        if (this.buffered > 0) this.cuts += 1;
        this.flushed += this.buffered;
        this.queue = [];
        this.head = 0;
        this.buffered = 0;
        this.playing = false;
        this.waited = 0;
        this.report();
      }
    };
  }

  report() {
    this.sinceReport = 0;
    this.port.postMessage({
      played: this.played,
      flushed: this.flushed,
      cuts: this.cuts,
      buffered: this.buffered,
      playing: this.playing,
    });
  }

  process(_inputs, outputs) {
    const output = outputs[0];
    const out = output[0];
    const wasPlaying = this.playing;
    let written = 0;
    if (!this.playing && this.buffered > 0) {
      this.waited += out.length;
      if (this.buffered >= this.prebuffer || this.waited >= this.prebuffer) this.playing = true;
    }
    if (this.playing) {
      while (written < out.length && this.queue.length > 0) {
        const chunk = this.queue[0];
        const take = Math.min(out.length - written, chunk.length - this.head);
        out.set(chunk.subarray(this.head, this.head + take), written);
        written += take;
        this.head += take;
        if (this.head >= chunk.length) {
          this.queue.shift();
          this.head = 0;
        }
      }
      this.buffered -= written;
      this.played += written;
      if (this.buffered === 0) {
        this.playing = false;
        this.waited = 0;
      }
    }
    out.fill(0, written);
    for (let c = 1; c < output.length; c++) output[c].set(out);
    this.sinceReport += out.length;
    if (this.playing !== wasPlaying || this.sinceReport >= this.reportEvery) this.report();
    return true;
  }
}

/**
 * Counts frames of audible sound: a render quantum counts when its RMS is above
 * `threshold`, or when sound was heard less than `hangMs` ago (so the short pauses between
 * words count as speech, as they would when played). Reports {audibleFrames, level}.
 */
class LevelMeter extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.threshold = options.processorOptions?.threshold ?? 0.003;
    this.hang = Math.round(((options.processorOptions?.hangMs ?? 250) * sampleRate) / 1000);
    this.sinceSound = Infinity;
    this.audible = 0;
    this.sinceReport = 0;
    this.level = 0;
    this.reportEvery = Math.round(sampleRate / 10); // ~100 ms
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const data = input[0];
    let sum = 0;
    for (let i = 0; i < data.length; i++) sum += data[i] * data[i];
    const rms = Math.sqrt(sum / data.length);
    this.level = Math.max(rms, this.level * 0.9);
    if (rms >= this.threshold) this.sinceSound = 0;
    else this.sinceSound += data.length;
    if (this.sinceSound <= this.hang) this.audible += data.length;
    this.sinceReport += data.length;
    if (this.sinceReport >= this.reportEvery) {
      this.sinceReport = 0;
      this.port.postMessage({ audibleFrames: this.audible, level: this.level });
    }
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
registerProcessor("pcm-player", PcmPlayer);
registerProcessor("level-meter", LevelMeter);
