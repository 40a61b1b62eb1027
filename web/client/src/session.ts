/**
 * One conversation with the server over Pipecat's JS SDK, on either transport:
 *
 *  - WebSocket (`@pipecat-ai/websocket-transport`): mic PCM and bot PCM as protobuf frames
 *    on one socket to `/ws`. The SDK plays bot audio from a queue that nothing flushes (it
 *    cannot even decode the server's interruption frame), so this session flushes the
 *    player itself: on the in-band InterruptionFrame (see serializer.ts) and on RTVI
 *    `bot-interrupted`, whichever comes first.
 *  - WebRTC (`@pipecat-ai/small-webrtc-transport`): SDP offer to `/api/offer`, Opus over
 *    SRTP. The server stops its audio track on an interruption and paces it in real time,
 *    so only the browser's jitter buffer (tens of ms) is left to play; nothing to flush.
 *    When the connection is lost the SDK offers again by itself (same pc_id, a new peer
 *    connection); the offer carries the resume ticket (`requestData`, kept current by
 *    `resumeWith`), so a server that no longer has the connection (its session's process
 *    died) resumes the conversation instead of starting a new one.
 */

import {
  PipecatClient,
  TransportStartError,
  type BotOutputData,
  type PipecatClientOptions,
  type RTVIMessage,
  type TranscriptData,
} from "@pipecat-ai/client-js";
import { SmallWebRTCTransport } from "@pipecat-ai/small-webrtc-transport";
import { WebSocketTransport } from "@pipecat-ai/websocket-transport";
import { BrowserMedia, type AudioStats } from "./media";
import { PipecatFrameSerializer } from "./serializer";

export type TransportKind = "websocket" | "webrtc";

export type ErrorKind =
  | "mic-denied" // the browser or the user refused the microphone
  | "mic-unavailable" // no microphone, or it could not be opened
  | "unreachable" // the server did not answer
  | "refused" // the server is full (WebSocket close 1013, HTTP 503)
  | "connection" // the connection failed or dropped
  | "server"; // the server reported an error or ended the session

export class SessionError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    /** The conversation may be resumed: the connection dropped, not the session. */
    readonly resumable = false,
  ) {
    super(message);
  }
}

/** What the server's first `session` message gives for resuming its conversation. */
export interface ResumeTicket {
  sessionId: string;
  token: string;
}

export interface SessionListener {
  onServerMessage(data: Record<string, unknown>): void;
  onUserTranscript(data: TranscriptData): void;
  onBotOutput(data: BotOutputData): void;
  onUserStartedSpeaking(): void;
  onBotStartedSpeaking(): void;
  onBotStoppedSpeaking(): void;
  onInterrupted(): void;
  onPlaying(playing: boolean): void;
  /** The session is over: the user left (no error), or it failed / was ended. */
  onEnded(error?: SessionError): void;
}

const CLOSE_TRY_AGAIN_LATER = 1013;
// Closes after which the conversation lives on server-side (SESSION_RESUME_SECS): the
// connection was lost (1006), the session's process failed (1011), the server restarted (1012).
const CLOSE_RESUMABLE = new Set([1006, 1011, 1012]);
const HEALTH_TIMEOUT_MS = 4000;
const READY_TIMEOUT_MS = 60000;

type MediaManagerOption = NonNullable<ConstructorParameters<typeof WebSocketTransport>[0]>["mediaManager"];
type RtcMediaManagerOption = NonNullable<
  ConstructorParameters<typeof SmallWebRTCTransport>[0]
>["mediaManager"];

/** The SDK's WebSocket transport, telling us how the socket closed (code and reason). */
class WebSocketSession extends WebSocketTransport {
  onSocketClosed?: (code: number, reason: string) => void;
  onRtviMessage?: (message: RTVIMessage) => void;

  initialize(options: PipecatClientOptions, handler: (ev: RTVIMessage) => void): void {
    super.initialize(options, (ev) => {
      this.onRtviMessage?.(ev);
      handler(ev);
    });
  }

  initializeWebsocket(): ReturnType<WebSocketTransport["initializeWebsocket"]> {
    const ws = super.initializeWebsocket();
    ws.on("close", (code: number, reason: string) => this.onSocketClosed?.(code, reason ?? ""));
    return ws;
  }
}

/** The SDK's SmallWebRTC transport, letting us see every RTVI message. */
class WebRTCSession extends SmallWebRTCTransport {
  onRtviMessage?: (message: RTVIMessage) => void;

  initialize(options: PipecatClientOptions, handler: (ev: RTVIMessage) => void): void {
    super.initialize(options, (ev) => {
      this.onRtviMessage?.(ev);
      handler(ev);
    });
  }
}

function resumePath(ticket: ResumeTicket): string {
  const query = new URLSearchParams({ session_id: ticket.sessionId, resume_token: ticket.token });
  return `/ws?${query}`;
}

function wsUrl(path: string): string {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.toString();
}

/** Fails fast, with a clear message, when the server is down. */
async function checkServer(): Promise<void> {
  let response: Response;
  try {
    response = await fetch("/api/health", {
      cache: "no-store",
      signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS),
    });
  } catch {
    throw new SessionError("unreachable", "The server is unreachable. Is `python -m bot serve` running?");
  }
  if (!response.ok) {
    throw new SessionError("unreachable", `The server is not healthy (HTTP ${response.status}).`);
  }
}

function micError(error: unknown): SessionError {
  const name = (error as { name?: string })?.name ?? "";
  if (name === "NotAllowedError" || name === "SecurityError") {
    return new SessionError(
      "mic-denied",
      "Microphone access was denied. Allow the microphone for this page (the icon in the address bar) and connect again.",
    );
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return new SessionError("mic-unavailable", "No microphone was found. Plug one in and connect again.");
  }
  if (name === "NotReadableError") {
    return new SessionError("mic-unavailable", "The microphone is in use by another application.");
  }
  if (!window.isSecureContext) {
    return new SessionError(
      "mic-unavailable",
      "The microphone needs a secure page: open it over https or on localhost.",
    );
  }
  return new SessionError("mic-unavailable", `The microphone could not be opened: ${String(error)}`);
}

/** Turns a failed WebRTC offer into a SessionError (503 → refused with the server's detail). */
async function offerError(error: unknown): Promise<SessionError> {
  const status = (error as { status?: number })?.status;
  const cause = (error as { cause?: unknown })?.cause;
  if (status === 503 || (cause instanceof Response && cause.status === 503)) {
    let detail = "The server is full; try again in a moment.";
    if (cause instanceof Response) {
      try {
        const body = await cause.json();
        if (typeof body?.detail === "string") detail = body.detail;
      } catch {
        // keep the generic message
      }
    }
    return new SessionError("refused", `Session refused: ${detail}`);
  }
  if (status) return new SessionError("connection", `The server rejected the WebRTC offer (HTTP ${status}).`);
  if (cause instanceof TypeError) return new SessionError("unreachable", "The server is unreachable.");
  return new SessionError(
    "connection",
    `WebRTC connection failed: ${(error as Error)?.message ?? String(error)}`,
  );
}

export class VoiceSession {
  readonly media: BrowserMedia;
  private readonly client: PipecatClient;
  private readonly transport: WebSocketSession | WebRTCSession;
  private ended = false;
  private botSpeaking = false;
  private stopping = false;
  private failStart: ((error: SessionError) => void) | undefined;
  // WebRTC: the offer's requestData. The SDK copies it into every offer it makes, its own
  // re-offers after a lost connection included, so it is updated in place.
  private readonly requestData: { session_id?: string; resume_token?: string } = {};

  constructor(
    readonly kind: TransportKind,
    private readonly listener: SessionListener,
    stats: AudioStats,
    audioElement: HTMLAudioElement,
    /** Resume this conversation instead of starting one. */
    private readonly resume?: ResumeTicket,
  ) {
    if (resume) this.resumeWith(resume);
    this.media = new BrowserMedia(kind === "websocket" ? "pcm" : "webrtc", stats, {
      captureSampleRate: 16000,
      playerSampleRate: 24000,
      audioElement,
      onPlaying: (playing) => listener.onPlaying(playing),
    });

    if (kind === "websocket") {
      const transport = new WebSocketSession({
        mediaManager: this.media as unknown as MediaManagerOption,
        serializer: new PipecatFrameSerializer({
          onInterruption: () => this.media.interrupt(),
          onAudioRate: (rate) => this.media.setBotAudioRate(rate),
        }),
        recorderSampleRate: 16000,
      });
      transport.onSocketClosed = (code, reason) => this.onSocketClosed(code, reason);
      this.transport = transport;
    } else {
      this.transport = new WebRTCSession({
        mediaManager: this.media as unknown as RtcMediaManagerOption,
        iceServers: [],
      });
    }
    // The server sends bot-interrupted for every interruption, whether the bot was speaking
    // or not. WebSocket: the player counts the flushes that cut audio off (media.ts).
    this.transport.onRtviMessage = (message) => {
      if (message.type !== "bot-interrupted") return;
      this.media.interrupt();
      if (kind === "webrtc" && this.botSpeaking) stats.interruptions += 1;
      listener.onInterrupted();
    };

    this.client = new PipecatClient({
      transport: this.transport,
      enableMic: true,
      enableCam: false,
      callbacks: {
        onServerMessage: (data) => listener.onServerMessage(data ?? {}),
        onUserTranscript: (data) => listener.onUserTranscript(data),
        onBotOutput: (data) => listener.onBotOutput(data),
        onUserStartedSpeaking: () => listener.onUserStartedSpeaking(),
        onBotStartedSpeaking: () => {
          this.botSpeaking = true;
          listener.onBotStartedSpeaking();
        },
        onBotStoppedSpeaking: () => {
          this.botSpeaking = false;
          listener.onBotStoppedSpeaking();
        },
        onTrackStarted: (track, participant) => {
          if (kind === "webrtc" && track.kind === "audio" && !participant?.local)
            this.media.playBotTrack(track);
        },
        onError: (message) => {
          const data = (message.data ?? {}) as { message?: string; error?: string; fatal?: boolean };
          const text = data.message ?? data.error ?? "unknown error";
          // The WebSocket transport reports its own close as an error; onSocketClosed says more.
          if (/websocket connection closed/i.test(text)) return;
          if (data.fatal) this.end(new SessionError("server", `Session error: ${text}`));
          else console.warn("Server error:", text);
        },
        // WebRTC: the server left (its session ended).
        onBotDisconnected: () => this.end(new SessionError("server", "The server ended the session.")),
        // Deferred: a close code, or the reason a start failed, is reported first.
        onDisconnected: () => setTimeout(() => this.end(), 0),
      },
    });
  }

  /** Connects and resolves once the bot is ready; rejects with a SessionError. */
  async start(): Promise<void> {
    await checkServer();
    try {
      await this.client.initDevices();
    } catch (error) {
      await this.media.disconnect();
      throw micError(error);
    }
    const failed = new Promise<never>((_, reject) => (this.failStart = reject));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new SessionError("connection", "The bot did not become ready in time.")),
        READY_TIMEOUT_MS,
      );
    });
    const params =
      this.kind === "websocket"
        ? { wsUrl: wsUrl(this.resume ? resumePath(this.resume) : "/ws") }
        : {
            webrtcRequestParams: {
              endpoint: new URL("/api/offer", window.location.href).toString(),
              requestData: this.requestData,
            },
          };
    try {
      await Promise.race([this.client.connect(params), failed, timeout]);
    } catch (error) {
      let sessionError: SessionError;
      if (error instanceof SessionError) sessionError = error;
      else if (this.kind === "webrtc") sessionError = await offerError(error);
      else if (error instanceof TransportStartError)
        sessionError = new SessionError("unreachable", "Could not open the WebSocket to the server.");
      else sessionError = new SessionError("connection", `Connection failed: ${String(error)}`);
      this.ended = true; // a failed start is reported by the caller, not as an end
      await this.client.disconnect().catch(() => undefined);
      await this.media.disconnect();
      throw sessionError;
    } finally {
      clearTimeout(timer);
      this.failStart = undefined;
    }
  }

  /** The ticket that resumes this session's conversation, for the transport's own re-offers. */
  resumeWith(ticket: ResumeTicket): void {
    this.requestData.session_id = ticket.sessionId;
    this.requestData.resume_token = ticket.token;
  }

  async stop(): Promise<void> {
    if (this.ended) return;
    this.stopping = true;
    await this.client.disconnect().catch(() => undefined);
    this.end();
  }

  private onSocketClosed(code: number, reason: string): void {
    const why = reason ? `: ${reason}` : "";
    if (code === CLOSE_TRY_AGAIN_LATER) {
      const error = new SessionError(
        "refused",
        `Session refused: ${reason || "the server is full; try again in a moment."}`,
      );
      if (this.failStart) this.failStart(error);
      else this.end(error);
      return;
    }
    const resumable = CLOSE_RESUMABLE.has(code);
    const error =
      code === 1006
        ? new SessionError("connection", "The connection to the server was lost.", resumable)
        : code === 1000 || code === 1001
          ? new SessionError("server", `The server ended the session${why}.`)
          : new SessionError("server", `The server closed the session (code ${code}${why}).`, resumable);
    if (this.failStart) this.failStart(error);
    else this.end(error);
  }

  private end(error?: SessionError): void {
    if (this.ended) return;
    if (this.failStart) {
      this.failStart(
        error ?? new SessionError("connection", "The connection closed before the bot was ready."),
      );
      return;
    }
    if (!error && !this.stopping) {
      // WebRTC: the SDK gave up re-offering (the server was unreachable meanwhile); the
      // conversation may still be waiting at the server.
      error =
        this.kind === "webrtc"
          ? new SessionError("connection", "The connection to the server was lost.", true)
          : new SessionError("connection", "The session ended unexpectedly.");
    }
    this.ended = true;
    void this.client.disconnect().catch(() => undefined);
    void this.media.disconnect();
    this.listener.onEnded(error);
  }
}
