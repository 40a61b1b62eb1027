// Live sessions: one card each (from the page's template), kept while the session lives and
// for a while after it ends.
import { STAGE_INFO, WATERFALL, nowServer, state } from "./state.js";
import { $, el, fmtDuration } from "./helpers.js";
import { sendInstructions } from "./instructions.js";
import { renderTranscript, renderWaterfall } from "./turns.js";

const ENDED_LINGER_MS = 30000;

function ensureCard(entry) {
  if (entry.card) return entry.card;
  const card = $("#session-template").content.firstElementChild.cloneNode(true);
  card.dataset.sessionId = entry.summary.id;
  $(".session-id", card).textContent = entry.summary.id;
  $(".instructions-form", card).addEventListener("submit", (e) => sendInstructions(e, entry.summary.id));
  const legend = $(".stage-legend", card);
  for (const stage of [...WATERFALL, "transport"]) {
    const item = el("span");
    const sw = el("i", { class: "swatch" });
    sw.style.background = stage === "transport" ? "#475569" : STAGE_INFO[stage].color;
    item.append(sw, stage === "transport" ? "rest (transport, playout)" : STAGE_INFO[stage].label);
    legend.append(item);
  }
  $("#sessions").prepend(card);
  entry.card = card;
  return card;
}

export function renderSession(entry) {
  const card = ensureCard(entry);
  const s = entry.summary;
  const st = entry.ended ? "ended" : s.state;
  card.dataset.state = st;
  // Cluster mode: the node running it. Else a session in its own session process
  // (SESSION_PROCESSES, Daily) says which.
  const inOwnProcess = s.pid && state.serverPid && s.pid !== state.serverPid;
  $(".transport", card).textContent = s.node
    ? `${s.transport} · node ${s.node}`
    : inOwnProcess ? `${s.transport} · process ${s.pid}` : s.transport;
  const pill = $(".pill.state", card);
  pill.textContent = st;
  pill.dataset.state = st;
  $(".turns", card).textContent = `${s.turns} turn${s.turns === 1 ? "" : "s"}`;
  renderDuration(entry);
  renderTranscript(entry, $(".transcript", card));
  renderWaterfall(entry, $(".waterfall", card));
}

export function renderDuration(entry) {
  if (!entry.card) return;
  const end = entry.ended ? entry.endedAt : nowServer();
  $(".duration", entry.card).textContent = fmtDuration(end - entry.summary.started_at);
}

export function upsertSession(summary, history) {
  let entry = state.sessions.get(summary.id);
  if (!entry) {
    entry = { summary, history: [], ended: false, card: null };
    state.sessions.set(summary.id, entry);
  }
  entry.summary = summary;
  if (history) entry.history = history.slice(-state.sessionTurns);
  return entry;
}

export function endSession(id) {
  const entry = state.sessions.get(id);
  if (!entry || entry.ended) return;
  entry.ended = true;
  entry.endedAt = nowServer();
  renderSession(entry);
  setTimeout(() => {
    if (state.sessions.get(id) === entry) {
      entry.card && entry.card.remove();
      state.sessions.delete(id);
      renderCounts();
    }
  }, ENDED_LINGER_MS);
}

export function renderCounts() {
  const live = [...state.sessions.values()].filter((e) => !e.ended).length;
  $("#live-count").textContent = String(live);
  $("#no-sessions").hidden = state.sessions.size > 0;
}
