/**
 * The page: connect / disconnect, transcript, state badge, latency chart and errors.
 *
 * `window.voiceAgent` mirrors what the page shows, for tests and the curious:
 *   state       "disconnected" | "connecting" | "listening" | "thinking" | "speaking"
 *   connected   true once the bot is ready, until the session ends
 *   transport   "websocket" | "webrtc" (the one in use, or selected)
 *   sessionId   the server's session id (from its "session" message)
 *   reconnects  conversations resumed after a dropped connection, this session
 *   mic         the mic track's applied settings (echoCancellation, noiseSuppression, …)
 *   stats       { receivedAudioMs, playedAudioMs, flushedAudioMs, interruptions }
 *               (how they are measured: see media.ts)
 *   transcript  [{ role: "user" | "bot", text, final, interrupted? }]
 *   turns       the server's "turn-metrics" records, in order
 *   errors      [{ kind, message }] (kinds: see session.ts)
 */

import type { BotOutputData, TranscriptData } from "@pipecat-ai/client-js";
import { LatencyChart, STAGES, V2V_COLOR, formatMs, type TurnMetrics } from "./chart";
import type { AudioStats } from "./media";
import { SessionError, VoiceSession, type ResumeTicket, type TransportKind } from "./session";
import "./style.css";

type BadgeState = "disconnected" | "connecting" | "listening" | "thinking" | "speaking";

interface TranscriptEntry {
  role: "user" | "bot";
  text: string;
  final: boolean;
  interrupted?: boolean;
}

interface VoiceAgent {
  state: BadgeState;
  connected: boolean;
  transport: TransportKind;
  sessionId: string | null;
  reconnects: number;
  mic: MediaTrackSettings | null;
  stats: AudioStats;
  transcript: TranscriptEntry[];
  turns: TurnMetrics[];
  errors: { kind: string; message: string }[];
}

declare global {
  interface Window {
    voiceAgent: VoiceAgent;
  }
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const el = {
  connect: $<HTMLButtonElement>("connect"),
  disconnect: $<HTMLButtonElement>("disconnect"),
  transport: $<HTMLSelectElement>("transport"),
  state: $<HTMLDivElement>("state"),
  transcript: $<HTMLOListElement>("transcript"),
  chart: $<HTMLCanvasElement>("latency-chart"),
  legend: $<HTMLUListElement>("latency-legend"),
  latest: $<HTMLDListElement>("latency-latest"),
  latestCaption: $<HTMLSpanElement>("latency-caption"),
  error: $<HTMLDivElement>("error"),
  sessionInfo: $<HTMLSpanElement>("session-info"),
  audioStats: $<HTMLParagraphElement>("audio-stats"),
  audio: $<HTMLAudioElement>("bot-audio"),
};

const agent: VoiceAgent = {
  state: "disconnected",
  connected: false,
  transport: el.transport.value as TransportKind,
  sessionId: null,
  reconnects: 0,
  mic: null,
  stats: { receivedAudioMs: 0, playedAudioMs: 0, flushedAudioMs: 0, interruptions: 0 },
  transcript: [],
  turns: [],
  errors: [],
};
window.voiceAgent = agent;

const chart = new LatencyChart(el.chart);
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

// ---- transcript --------------------------------------------------------------------------

let userFinalText = ""; // the finals of the user bubble being written
const botSegments = new Map<number | string, string>(); // segment → spoken text, current bot bubble

function lastEntry(): TranscriptEntry | undefined {
  return agent.transcript[agent.transcript.length - 1];
}

function renderTranscript(): void {
  const list = el.transcript;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(
    ...agent.transcript.map((entry) => {
      const item = document.createElement("li");
      item.className = entry.role;
      if (!entry.final) item.classList.add(entry.role === "user" ? "interim" : "live");
      if (entry.interrupted) item.classList.add("interrupted");
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = entry.role === "user" ? "You" : "Agent";
      item.append(who, entry.text);
      return item;
    }),
  );
  if (agent.transcript.length === 0) {
    const placeholder = document.createElement("li");
    placeholder.className = "placeholder";
    placeholder.textContent = agent.connected
      ? "Listening… ask a question."
      : "Connect, allow the microphone, and ask a question.";
    list.append(placeholder);
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function onUserTranscript(data: TranscriptData): void {
  const text = data.text.trim();
  if (!text) return;
  let entry = lastEntry();
  if (!entry || entry.role !== "user") {
    entry = { role: "user", text: "", final: false };
    agent.transcript.push(entry);
    userFinalText = "";
  }
  if (data.final) {
    userFinalText = userFinalText ? `${userFinalText} ${text}` : text;
    entry.text = userFinalText;
    entry.final = true;
  } else {
    entry.text = userFinalText ? `${userFinalText} ${text}` : text;
    entry.final = false;
  }
  renderTranscript();
}

function currentBotEntry(): TranscriptEntry {
  const entry = lastEntry();
  if (entry && entry.role === "bot" && !entry.final) return entry;
  botSegments.clear();
  const fresh: TranscriptEntry = { role: "bot", text: "", final: false };
  agent.transcript.push(fresh);
  return fresh;
}

function onBotOutput(data: BotOutputData): void {
  // Protocol 2.x: a spoken segment reports "in-progress" / "completed" with what has been
  // said so far; text that will not be spoken comes once. Show what the user has heard.
  let spoken: string | undefined;
  if (data.will_be_spoken === false) spoken = data.text;
  else if (data.spoken_status === "in-progress" || data.spoken_status === "completed")
    spoken = data.spoken_progress?.accumulated_text ?? data.text;
  else if (data.spoken_status === undefined && data.spoken) spoken = data.text; // protocol 1.x
  if (!spoken?.trim()) return;
  const entry = currentBotEntry();
  const key = data.segment_id ?? `${botSegments.size}`;
  botSegments.set(key, spoken.trim());
  entry.text = [...botSegments.values()].join(" ");
  renderTranscript();
}

/** Ends the bot's open bubble (the user may have started one after it meanwhile). */
function closeBotEntry(interrupted: boolean): void {
  const entry = agent.transcript.findLast((e) => e.role === "bot" && !e.final);
  if (!entry) return;
  entry.final = true;
  if (interrupted) entry.interrupted = true;
  renderTranscript();
}

// ---- latency -----------------------------------------------------------------------------

function renderLegend(): void {
  const items = STAGES.map((s) => ({ label: s.label, color: s.color, cls: "" }));
  items.push({ label: "Voice-to-voice", color: V2V_COLOR, cls: " v2v" });
  el.legend.replaceChildren(
    ...items.map((item) => {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch${item.cls}`;
      swatch.style.background = item.color;
      li.append(swatch, item.label);
      return li;
    }),
  );
}

function renderLatest(): void {
  const turn = agent.turns[agent.turns.length - 1];
  const cells: [string, number | undefined, string][] = [
    ["Voice-to-voice", turn?.stages_ms.voice_to_voice, "v2v"],
    ...STAGES.map((s) => [s.label, turn?.stages_ms[s.key], ""] as [string, number | undefined, string]),
  ];
  if (turn?.stages_ms.barge_in_stop !== undefined)
    cells.push(["Barge-in stop", turn.stages_ms.barge_in_stop, ""]);
  el.latest.replaceChildren(
    ...cells.map(([label, ms, cls]) => {
      const div = document.createElement("div");
      if (cls) div.className = cls;
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = ms === undefined ? "—" : formatMs(ms);
      if (ms === undefined) dd.className = "absent";
      div.append(dt, dd);
      return div;
    }),
  );
  el.latest.dataset.turn = turn ? String(turn.turn) : "";
  el.latestCaption.textContent = turn
    ? `latest: turn ${turn.turn}${turn.interrupted ? " (interrupted)" : ""}`
    : "";
}

function onTurnMetrics(record: TurnMetrics): void {
  agent.turns.push(record);
  chart.update(agent.turns);
  renderLatest();
}

function renderAudioStats(): void {
  const s = agent.stats;
  const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  el.audioStats.textContent = agent.connected
    ? `Bot audio received ${sec(s.receivedAudioMs)} · played ${sec(s.playedAudioMs)}` +
      (s.interruptions ? ` · ${s.interruptions} interruption${s.interruptions > 1 ? "s" : ""}` : "")
    : "";
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
  agent.transcript.length = 0;
  agent.turns.length = 0;
  userFinalText = "";
  botSegments.clear();
  serverState = "listening";
  localPlayback = false;
  clearTimeout(playbackTimer);
  playbackTimer = undefined;
  chart.update(agent.turns);
  renderTranscript();
  renderLatest();
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

renderLegend();
renderLatest();
chart.update([]);
setControls("idle");
