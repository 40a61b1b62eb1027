// What the page draws: the state every module reads and the event stream (stream.js) fills.
// `window.dashboard` is this state (the tests read it).

export const STAGE_INFO = {
  vad: { label: "VAD end of speech", color: "#60a5fa" },
  stt: { label: "STT final", color: "#34d399" },
  turn: { label: "Turn decision", color: "#a78bfa" },
  llm_ttft: { label: "LLM first token", color: "#f472b6" },
  tool: { label: "Tool call", color: "#fb923c" },
  tts_ttfb: { label: "TTS first audio", color: "#facc15" },
  voice_to_voice: { label: "Voice-to-voice", color: "#f8fafc" },
  barge_in_stop: { label: "Barge-in stop", color: "#f87171" },
};
// The stages that tile a turn's voice-to-voice time, in order.
export const WATERFALL = ["vad", "stt", "turn", "llm_ttft", "tool", "tts_ttfb"];

export const state = {
  connected: false,
  locked: "", // why the event stream is refused (no or wrong admin token), if it is
  events: 0,
  clockOffset: 0, // server time - browser time (s)
  stages: Object.keys(STAGE_INFO),
  chartTurns: 200,
  sessionTurns: 50,
  sessions: new Map(), // id -> {summary, history, ended, card}
  recent: [], // recent turn records across sessions, oldest first
  chart: { samples: 0, drawnStages: 0 },
};
window.dashboard = state;

export const nowServer = () => Date.now() / 1000 + state.clockOffset;
