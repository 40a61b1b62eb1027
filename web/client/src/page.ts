/**
 * The page's elements and `window.voiceAgent`, the state it shows (read by the tests and
 * the curious; main.ts keeps it current):
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

import type { TurnMetrics } from "./chart";
import type { AudioStats } from "./media";
import type { TransportKind } from "./session";

export type BadgeState = "disconnected" | "connecting" | "listening" | "thinking" | "speaking";

export interface TranscriptEntry {
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
export const el = {
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

export const agent: VoiceAgent = {
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
