/**
 * Browser audio for both transports: the microphone, bot playback and its accounting.
 *
 * `BrowserMedia` implements the media-manager contract of Pipecat's JS transports (the
 * SDK's own managers use daily-js, which loads code from a CDN; this one needs nothing
 * but the browser):
 *
 *  - "pcm" mode (WebSocket): the mic is captured by an AudioWorklet at 16 kHz into 20 ms
 *    16-bit PCM chunks for the transport (the transport declares 16 kHz on every frame); bot
 *    PCM goes to `PcmPlayer` (audio-nodes.ts), whose queue can be flushed at once when the
 *    server interrupts the bot.
 *  - "webrtc" mode: the mic track is handed to the peer connection as is; the bot's track
 *    plays through an <audio> element (so the browser's echo canceller sees it) and is
 *    metered on the side (`LevelMeter`, audio-nodes.ts).
 *
 * How `stats` are measured:
 *  - WebSocket: `receivedAudioMs` sums the bot PCM handed to the player; `playedAudioMs`
 *    is the count of those samples the player worklet actually wrote to the audio output
 *    (silence it pads with is not counted), reported from the audio thread; what an
 *    interruption flushed is `flushedAudioMs`.
 *  - WebRTC: the decoded bot track carries continuous audio (silence between answers), so
 *    both figures count audible time: a level-meter worklet on the remote track counts
 *    128-frame blocks whose RMS is above -50 dBFS (plus a 250 ms hang-over for pauses
 *    between words): that is `receivedAudioMs`. Each ~100 ms of it is added to
 *    `playedAudioMs` only if the <audio> element played it: its clock (`currentTime`)
 *    advanced and it is not paused, muted or at volume 0. (`captureStream()` cannot tell:
 *    for a MediaStream source Chrome hands back clones of the tracks, paused or not.)
 */

import {
  DeviceError,
  type PipecatClientOptions,
  type RTVIEventCallbacks,
  type Tracks,
} from "@pipecat-ai/client-js";
import { LevelMeter, PcmPlayer, loadProcessors } from "./audio-nodes";

export const MIC_CONSTRAINTS: MediaTrackConstraints = {
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
  channelCount: 1,
};

export interface AudioStats {
  receivedAudioMs: number;
  playedAudioMs: number;
  /** WebSocket: bot audio dropped unplayed by interruptions. */
  flushedAudioMs: number;
  /** Times the bot was cut off while its audio was playing here. */
  interruptions: number;
}

export type MediaMode = "pcm" | "webrtc";

export interface BrowserMediaOptions {
  /** Rate of the mic PCM sent over the WebSocket (the transport declares it per frame). */
  captureSampleRate?: number;
  /** Rate bot PCM is assumed to have until a frame says otherwise. */
  playerSampleRate?: number;
  /** Where WebRTC bot audio plays. */
  audioElement?: HTMLAudioElement;
  /** Called when the player starts or stops producing sound. */
  onPlaying?: (playing: boolean) => void;
}

const CAPTURE_CHUNK_MS = 20;

export class BrowserMedia {
  private userAudioCallback: ((data: ArrayBuffer) => void) | undefined;
  private callbacks: RTVIEventCallbacks = {};
  private micEnabled = true;
  private initialized = false;
  private stream: MediaStream | undefined;
  private captureCtx: AudioContext | undefined;
  private captureSource: MediaStreamAudioSourceNode | undefined;
  private captureNode: AudioWorkletNode | undefined;
  private player: PcmPlayer | undefined;
  private botRate: number;
  private meterCtx: AudioContext | undefined;
  private meters: LevelMeter[] = [];
  private botTrackId: string | undefined;
  private readonly captureRate: number;

  constructor(
    readonly mode: MediaMode,
    readonly stats: AudioStats,
    private readonly options: BrowserMediaOptions = {},
  ) {
    this.captureRate = options.captureSampleRate ?? 16000;
    this.botRate = options.playerSampleRate ?? 24000;
  }

  // ---- the media-manager contract the transports call -----------------------------------

  setUserAudioCallback(callback: (data: ArrayBuffer) => void): void {
    this.userAudioCallback = callback;
  }

  setClientOptions(options: PipecatClientOptions, override = false): void {
    if (this.initialized && !override) return;
    this.callbacks = options.callbacks ?? {};
    this.micEnabled = options.enableMic ?? true;
  }

  /** Opens the mic (and the audio contexts, while the click that started it still counts). */
  async initialize(): Promise<void> {
    if (this.initialized) return;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ audio: MIC_CONSTRAINTS, video: false });
    } catch (error) {
      const err = error as DOMException;
      const type =
        err.name === "NotAllowedError" || err.name === "SecurityError"
          ? "permissions"
          : err.name === "NotFoundError"
            ? "not-found"
            : err.name === "NotReadableError"
              ? "in-use"
              : "unknown";
      this.callbacks.onDeviceError?.(new DeviceError(["mic"], type, err.message, { sourceError: err }));
      throw error;
    }
    const track = this.micTrack;
    if (track) {
      track.enabled = this.micEnabled;
      const settings = track.getSettings();
      this.callbacks.onMicUpdated?.({
        deviceId: settings.deviceId ?? "default",
        groupId: settings.groupId ?? "",
        kind: "audioinput",
        label: track.label,
        toJSON: () => ({}),
      } as MediaDeviceInfo);
    }
    if (this.mode === "pcm") {
      this.captureCtx = new AudioContext({ sampleRate: this.captureRate, latencyHint: "interactive" });
      await loadProcessors(this.captureCtx);
      this.player = await PcmPlayer.create(this.botRate, (player) => this.onPlayerReport(player));
    } else {
      this.meterCtx = new AudioContext({ latencyHint: "interactive" });
      await loadProcessors(this.meterCtx);
    }
    this.initialized = true;
  }

  async connect(): Promise<void> {
    if (!this.initialized) await this.initialize();
    if (this.mode !== "pcm" || this.captureNode || !this.captureCtx || !this.stream) return;
    let ctx = this.captureCtx;
    if (ctx.state === "suspended") await ctx.resume();
    try {
      this.captureSource = ctx.createMediaStreamSource(this.stream);
    } catch {
      // Some browsers (Firefox) cannot feed a mic into a context at another rate: capture at
      // the device's rate and let the worklet bring it down to captureRate.
      await ctx.close();
      ctx = this.captureCtx = new AudioContext({ latencyHint: "interactive" });
      await loadProcessors(ctx);
      this.captureSource = ctx.createMediaStreamSource(this.stream);
    }
    this.captureNode = new AudioWorkletNode(ctx, "pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      processorOptions: {
        targetRate: this.captureRate,
        chunkSamples: Math.round((this.captureRate * CAPTURE_CHUNK_MS) / 1000),
      },
    });
    this.captureNode.port.onmessage = (event) => {
      if (this.micEnabled) this.userAudioCallback?.(event.data as ArrayBuffer);
    };
    this.captureSource.connect(this.captureNode);
  }

  async disconnect(): Promise<void> {
    this.captureSource?.disconnect();
    if (this.captureNode) this.captureNode.port.onmessage = null;
    this.captureNode = this.captureSource = undefined;
    this.stream?.getTracks().forEach((track) => track.stop());
    this.stream = undefined;
    this.meters.forEach((meter) => meter.stop());
    this.meters = [];
    const closing = [this.captureCtx, this.meterCtx].map((ctx) => ctx?.close().catch(() => undefined));
    await Promise.all([...closing, this.player?.close()]);
    this.captureCtx = this.meterCtx = this.player = undefined;
    this.botTrackId = undefined;
    if (this.options.audioElement) this.options.audioElement.srcObject = null;
    this.initialized = false;
  }

  /** The SDK's hook for a local barge-in; the same as a server interruption here. */
  async userStartedSpeaking(): Promise<unknown> {
    this.interrupt();
    return undefined;
  }

  bufferBotAudio(data: ArrayBuffer | Int16Array): Int16Array | undefined {
    const samples = data instanceof Int16Array ? data : new Int16Array(data);
    if (!this.player) return undefined;
    this.stats.receivedAudioMs += (1000 * samples.length) / this.botRate;
    this.player.push(samples, this.botRate);
    return samples;
  }

  async getAllMics(): Promise<MediaDeviceInfo[]> {
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  }
  async getAllCams(): Promise<MediaDeviceInfo[]> {
    return [];
  }
  async getAllSpeakers(): Promise<MediaDeviceInfo[]> {
    return (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audiooutput");
  }
  updateMic(): void {}
  updateCam(): void {}
  updateSpeaker(): void {}
  get selectedMic(): MediaDeviceInfo | Record<string, never> {
    return {};
  }
  get selectedCam(): MediaDeviceInfo | Record<string, never> {
    return {};
  }
  get selectedSpeaker(): MediaDeviceInfo | Record<string, never> {
    return {};
  }
  enableMic(enable: boolean): void {
    this.micEnabled = enable;
    if (this.micTrack) this.micTrack.enabled = enable;
  }
  enableCam(): void {}
  enableScreenShare(): void {}
  get isCamEnabled(): boolean {
    return false;
  }
  get isMicEnabled(): boolean {
    return this.micEnabled;
  }
  get isSharingScreen(): boolean {
    return false;
  }
  get supportsScreenShare(): boolean {
    return false;
  }
  tracks(): Tracks {
    return { local: { audio: this.micTrack } };
  }

  // ---- ours ------------------------------------------------------------------------------

  get micTrack(): MediaStreamTrack | undefined {
    return this.stream?.getAudioTracks()[0];
  }

  /** What the browser applied to the mic (echo cancellation and friends). */
  micSettings(): MediaTrackSettings | null {
    return this.micTrack?.getSettings() ?? null;
  }

  /** The rate the server declared for the bot audio that follows. */
  setBotAudioRate(rate: number): void {
    if (rate > 0) this.botRate = rate;
  }

  /** Drops bot audio that has not been played yet (a server interruption). */
  interrupt(): void {
    this.player?.flush();
  }

  /** WebRTC: play the bot's track, and meter it (see the module comment). */
  playBotTrack(track: MediaStreamTrack): void {
    const element = this.options.audioElement;
    const ctx = this.meterCtx;
    if (!element || !ctx || track.kind !== "audio" || track.id === this.micTrack?.id) return;
    if (track.id === this.botTrackId) return; // unmuted again: already playing
    this.botTrackId = track.id;
    this.meters.forEach((meter) => meter.stop());
    this.meters = [];
    const receivedBase = this.stats.receivedAudioMs;
    const stream = new MediaStream([track]);
    element.srcObject = stream;
    element.play().catch((error) => console.warn("Bot audio did not start", error));
    let audible = 0;
    let clock = element.currentTime;
    this.meters.push(
      new LevelMeter(ctx, stream, (ms) => {
        const heard = ms - audible;
        audible = ms;
        this.stats.receivedAudioMs = receivedBase + ms;
        // Played only while the element plays: its clock moves, and it is not silenced.
        const playing =
          element.currentTime > clock && !element.paused && !element.muted && element.volume > 0;
        clock = element.currentTime;
        if (playing) this.stats.playedAudioMs += heard;
      }),
    );
  }

  private onPlayerReport(player: PcmPlayer): void {
    const rate = player.sampleRate;
    this.stats.playedAudioMs = (1000 * player.played) / rate;
    this.stats.flushedAudioMs = (1000 * player.flushed) / rate;
    this.stats.interruptions = player.cuts;
    this.options.onPlaying?.(player.playing || player.buffered > 0);
  }
}
