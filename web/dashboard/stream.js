// The event stream: GET /api/events, read with fetch so it can carry the admin token
// (EventSource cannot send headers), and what each event does to the page.
import { state } from "./state.js";
import { $ } from "./helpers.js";
import { drawCharts, fillStageSelect } from "./charts.js";
import { endSession, renderCounts, renderSession, upsertSession } from "./sessions.js";
import { bearer, savedToken } from "./token.js";

function addRecentTurn(turn) {
  const key = `${turn.session_id}:${turn.turn}`;
  if (state.recent.some((t) => `${t.session_id}:${t.turn}` === key)) return;
  state.recent.push(turn);
  if (state.recent.length > state.chartTurns) state.recent.splice(0, state.recent.length - state.chartTurns);
}

// --- Events ----------------------------------------------------------------------------
const handlers = {
  snapshot(data) {
    state.clockOffset = data.now - Date.now() / 1000;
    state.stages = data.stages;
    state.chartTurns = data.chart_turns;
    state.sessionTurns = data.session_turns;
    state.serverPid = data.pid;
    state.recent = data.recent_turns.slice(-state.chartTurns);
    if (data.providers) {
      $("#providers").textContent = `STT ${data.providers.stt} · LLM ${data.providers.llm} · TTS ${data.providers.tts}`;
    }
    fillStageSelect();
    const live = new Set(data.sessions.map((s) => s.id));
    for (const [id, entry] of state.sessions) if (!live.has(id) && !entry.ended) endSession(id);
    for (const s of data.sessions) {
      const { history, ...summary } = s;
      const entry = upsertSession(summary, history);
      entry.ended = false;
      renderSession(entry);
    }
    renderCounts();
    drawCharts();
  },
  "session-started"(data) {
    const { history, ...summary } = data.session;
    renderSession(upsertSession(summary, history));
    renderCounts();
  },
  state(data) {
    renderSession(upsertSession(data.session));
  },
  turn(data) {
    const entry = upsertSession(data.session);
    entry.history = entry.history.filter((t) => t.turn !== data.turn.turn);
    entry.history.push(data.turn);
    entry.history.sort((a, b) => a.turn - b.turn);
    if (entry.history.length > state.sessionTurns) entry.history.splice(0, entry.history.length - state.sessionTurns);
    renderSession(entry);
    addRecentTurn(data.turn);
    drawCharts();
  },
  "session-ended"(data) {
    upsertSession(data.session);
    endSession(data.session.id);
    renderCounts();
  },
};

function setConnected(on) {
  state.connected = on;
  if (on) state.locked = "";
  const status = $("#stream-status");
  status.textContent = on ? "live" : state.locked || "reconnecting…";
  status.className = `pill ${on ? "on" : "off"}`;
}

let stream = null; // the AbortController of the stream being read

export async function connect() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  let retryMs = 1000;
  try {
    const response = await fetch("/api/events", {
      headers: { Accept: "text/event-stream", ...bearer(savedToken()) },
      cache: "no-store",
      signal: controller.signal,
    });
    if (response.status === 401 || response.status === 403) {
      // No (or a wrong) token: wait for one to be entered.
      state.locked =
        response.status === 401 ? "admin token required" : "this server answers its own machine only";
      setConnected(false);
      $("#admin-token").focus();
      return;
    }
    if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
    setConnected(true);
    await readEvents(response.body, controller, (ms) => (retryMs = ms));
  } catch (e) {
    if (controller.signal.aborted) return;
  }
  if (stream !== controller) return;
  setConnected(false);
  setTimeout(connect, retryMs); // the server ends each stream after a while: reconnect
}

// Server-sent events as the server writes them: "event:", "data:", "retry:" lines, a
// blank line ending each event, ":" lines as keep-alives.
async function readEvents(body, controller, setRetry) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", name = "message", data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done || controller.signal.aborted) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (data.length && handlers[name]) {
          state.events += 1;
          handlers[name](JSON.parse(data.join("\n")));
        }
        name = "message";
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
        else if (field === "retry" && /^\d+$/.test(text)) setRetry(+text);
      }
    }
  }
}
