/**
 * The audio nodes behind `BrowserMedia` (media.ts), on the worklets of
 * worklets/audio-processors.js: `PcmPlayer` plays the WebSocket's bot PCM and can drop what
 * is queued at once; `LevelMeter` counts the audible time of the WebRTC bot track (how both
 * feed the stats: media.ts).
 */

import processorsUrl from "./worklets/audio-processors.js?url";

const PLAYER_PREBUFFER_MS = 80;

/** Loads the worklet processors into `ctx` (once per audio context). */
export async function loadProcessors(ctx: AudioContext): Promise<void> {
  await ctx.audioWorklet.addModule(processorsUrl);
}

/** Resample int16 PCM to float32 at `toRate` (linear; only used if the server's rate differs). */
function toFloat32(samples: Int16Array, fromRate: number, toRate: number): Float32Array {
  if (fromRate === toRate) {
    const out = new Float32Array(samples.length);
    for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 0x8000;
    return out;
  }
  const ratio = fromRate / toRate;
  const length = Math.floor(samples.length / ratio);
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    const pos = i * ratio;
    const i0 = Math.floor(pos);
    const i1 = Math.min(i0 + 1, samples.length - 1);
    const frac = pos - i0;
    out[i] = (samples[i0] * (1 - frac) + samples[i1] * frac) / 0x8000;
  }
  return out;
}

/** Streams PCM chunks to the speakers; `flush()` drops everything not yet played. */
export class PcmPlayer {
  private constructor(
    readonly ctx: AudioContext,
    private readonly node: AudioWorkletNode,
  ) {}

  played = 0;
  flushed = 0;
  cuts = 0;
  buffered = 0;
  playing = false;

  static async create(sampleRate: number, onReport: (player: PcmPlayer) => void): Promise<PcmPlayer> {
    const ctx = new AudioContext({ sampleRate, latencyHint: "interactive" });
    await loadProcessors(ctx);
    const node = new AudioWorkletNode(ctx, "pcm-player", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { prebufferMs: PLAYER_PREBUFFER_MS },
    });
    node.connect(ctx.destination);
    const player = new PcmPlayer(ctx, node);
    node.port.onmessage = (event) => {
      Object.assign(player, event.data);
      onReport(player);
    };
    if (ctx.state === "suspended") await ctx.resume();
    return player;
  }

  get sampleRate(): number {
    return this.ctx.sampleRate;
  }

  push(samples: Int16Array, sampleRate: number): void {
    const data = toFloat32(samples, sampleRate, this.ctx.sampleRate);
    this.node.port.postMessage({ type: "pcm", samples: data }, [data.buffer]);
  }

  flush(): void {
    this.node.port.postMessage({ type: "flush" });
  }

  async close(): Promise<void> {
    this.node.port.onmessage = null;
    this.node.disconnect();
    await this.ctx.close().catch(() => undefined);
  }
}

/** Counts audible milliseconds of a MediaStream (see media.ts). */
export class LevelMeter {
  audibleMs = 0;
  private source: MediaStreamAudioSourceNode;
  private node: AudioWorkletNode;

  constructor(ctx: AudioContext, stream: MediaStream, onUpdate: (ms: number) => void) {
    this.source = ctx.createMediaStreamSource(stream);
    // No outputs: an AudioWorkletNode without outputs is pulled by the graph on its own.
    this.node = new AudioWorkletNode(ctx, "level-meter", { numberOfInputs: 1, numberOfOutputs: 0 });
    this.node.port.onmessage = (event) => {
      this.audibleMs = (1000 * event.data.audibleFrames) / ctx.sampleRate;
      onUpdate(this.audibleMs);
    };
    this.source.connect(this.node);
  }

  stop(): void {
    this.node.port.onmessage = null;
    this.source.disconnect();
  }
}
