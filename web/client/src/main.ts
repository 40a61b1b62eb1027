/**
 * The page: connect / disconnect (a session, resumed when its connection drops), the state
 * badge and errors. What it shows: `window.voiceAgent` (page.ts); the transcript
 * (transcript.ts) and the latency panel (latency-panel.ts) draw themselves.
 */

import type { TurnMetrics } from "./chart";
import { onTurnMetrics, renderAudioStats, renderEmptyLatency, resetLatency } from "./latency-panel";
import { agent, el, type BadgeState } from "./page";
import { SessionError, VoiceSession, type ResumeTicket, type TransportKind } from "./session";
import {
  closeBotEntry,
  onBotOutput,
  onUserTranscript,
  renderTranscript,
  resetTranscript,
} from "./transcript";
import "./style.css";

let session: VoiceSession | null = null;
let serverState: BadgeState = "listening";
let localPlayback = false;
let playbackTimer: ReturnType<typeof setTimeout> | undefined;
const PLAYBACK_HANG_MS = 300; // a short gap in the audio is not the end of speaking
// A dropped connection is resumed with the server's ticket (SESSION_RESUME_SECS, 120 s by
// default, is far longer than these attempts).
const RECONNECT_DELAYS_MS = [250, 1000, 2500, 5000];
let resumeTicket: ResumeTicket | null = null;
let reconnecting = false;

// ---- state badge and buttons -------------------------------------------------------------

function setState(state: BadgeState): void {
  agent.state = state;
  el.state.dataset.state = state;
  el.state.querySelector(".label")!.textContent = state;
}

/** The server's state, except that WebSocket audio still playing here is "speaking". */
function refreshState(): void {
  if (!agent.connected) return;
  setState(localPlayback && serverState === "listening" ? "speaking" : serverState);
}

function setControls(phase: "idle" | "connecting" | "connected"): void {
  el.connect.disabled = phase !== "idle";
  el.disconnect.disabled = phase === "idle";
  el.transport.disabled = phase !== "idle";
}

// ---- errors ------------------------------------------------------------------------------

function showError(kind: string, message: string): void {
  agent.errors.push({ kind, message });
  el.error.textContent = message;
  el.error.dataset.kind = kind;
  el.error.hidden = false;
}

function clearError(): void {
  el.error.textContent = "";
  el.error.hidden = true;
  delete el.error.dataset.kind;
}

// ---- session -----------------------------------------------------------------------------

function resetForSession(kind: TransportKind): void {
  agent.transport = kind;
  agent.connected = false;
  agent.sessionId = null;
  agent.reconnects = 0;
  resumeTicket = null;
  agent.mic = null;
  Object.assign(agent.stats, { receivedAudioMs: 0, playedAudioMs: 0, flushedAudioMs: 0, interruptions: 0 });
  serverState = "listening";
  localPlayback = false;
  clearTimeout(playbackTimer);
  playbackTimer = undefined;
  resetTranscript();
  resetLatency();
  el.sessionInfo.textContent = "";
}

function sessionEnded(error?: SessionError): void {
  session = null;
  agent.connected = false;
  localPlayback = false;
  setState("disconnected");
  setControls("idle");
  closeBotEntry(false);
  renderAudioStats();
  if (error) showError(error.kind, error.message);
}

async function connect(): Promise<void> {
  if (session || reconnecting) return;
  clearError();
  const kind = el.transport.value as TransportKind;
  resetForSession(kind);
  setState("connecting");
  setControls("connecting");
  const error = await openSession(kind);
  if (error) sessionEnded(error);
}

/** Starts a session (resuming a conversation with `resume`); its error if it did not start. */
async function openSession(kind: TransportKind, resume?: ResumeTicket): Promise<SessionError | null> {
  let sessionIdSeen: string | null = null;
  const current = new VoiceSession(
    kind,
    {
      onServerMessage: (data) => {
        if (current !== session) return;
        if (data.type === "session") {
          // A second session id on one connection: WebRTC offered again by itself after
          // losing the connection, and the server resumed the conversation in a new session.
          const id = String(data.session_id ?? "");
          const resumedInPlace = sessionIdSeen !== null && id !== sessionIdSeen;
          sessionIdSeen = id;
          agent.sessionId = id;
          resumeTicket = data.resume_token
            ? { sessionId: agent.sessionId, token: String(data.resume_token) }
            : null;
          if (resumeTicket) current.resumeWith(resumeTicket);
          if (resumedInPlace) agent.reconnects += 1;
          const resumed = resumedInPlace || resume ? " · resumed" : "";
          el.sessionInfo.textContent = `session ${agent.sessionId} · ${data.transport ?? kind}${resumed}`;
        } else if (data.type === "state") {
          serverState = data.state as BadgeState;
          refreshState();
        } else if (data.type === "turn-metrics") {
          onTurnMetrics(data as unknown as TurnMetrics);
        }
      },
      onUserTranscript,
      onBotOutput,
      onUserStartedSpeaking: () => undefined,
      onBotStartedSpeaking: () => undefined,
      onBotStoppedSpeaking: () => closeBotEntry(false),
      onInterrupted: () => closeBotEntry(true),
      onPlaying: (playing) => {
        if (playing) {
          clearTimeout(playbackTimer);
          playbackTimer = undefined;
          if (!localPlayback) {
            localPlayback = true;
            refreshState();
          }
        } else if (localPlayback && !playbackTimer) {
          playbackTimer = setTimeout(() => {
            playbackTimer = undefined;
            localPlayback = false;
            refreshState();
          }, PLAYBACK_HANG_MS);
        }
      },
      onEnded: (error) => {
        if (current !== session) return;
        if (error?.resumable && resumeTicket) void reconnect(kind, error);
        else sessionEnded(error);
      },
    },
    agent.stats,
    el.audio,
    resume,
  );
  session = current;
  try {
    await current.start();
  } catch (error) {
    if (current !== session) return null; // the user left meanwhile
    return error instanceof SessionError ? error : new SessionError("connection", String(error));
  }
  if (current !== session) return null;
  agent.connected = true;
  agent.mic = current.media.micSettings();
  setControls("connected");
  refreshState();
  renderTranscript();
  return null;
}

/** The connection dropped but the conversation lives on at the server: resume it, keeping
 * the transcript, or give up with why after a few tries. */
async function reconnect(kind: TransportKind, lost: SessionError): Promise<void> {
  const ticket = resumeTicket!;
  session = null;
  reconnecting = true;
  agent.connected = false;
  localPlayback = false;
  closeBotEntry(true);
  setState("connecting");
  el.sessionInfo.textContent = `connection lost · resuming session ${ticket.sessionId}…`;
  for (const delay of RECONNECT_DELAYS_MS) {
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (!reconnecting) return; // the user disconnected meanwhile
    const error = await openSession(kind, ticket);
    if (!reconnecting) return;
    if (!error) {
      reconnecting = false;
      agent.reconnects += 1;
      el.sessionInfo.textContent = `session ${agent.sessionId} · ${kind} · resumed`;
      return;
    }
    session = null;
    if (!error.resumable && error.kind !== "unreachable") {
      lost = new SessionError(lost.kind, `${lost.message} It could not be resumed: ${error.message}`);
      break;
    }
  }
  reconnecting = false;
  sessionEnded(lost);
}

async function disconnect(): Promise<void> {
  if (reconnecting) {
    reconnecting = false;
    const pending = session;
    session = null;
    await pending?.stop();
    sessionEnded();
    return;
  }
  const current = session;
  if (!current) return;
  session = null;
  await current.stop();
  sessionEnded();
}

el.connect.addEventListener("click", () => void connect());
el.disconnect.addEventListener("click", () => void disconnect());
el.transport.addEventListener("change", () => {
  if (!session) agent.transport = el.transport.value as TransportKind;
});
window.addEventListener("pagehide", () => void session?.stop());
setInterval(renderAudioStats, 250);

renderEmptyLatency();
setControls("idle");
