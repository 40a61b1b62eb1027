/** The latency panel: each turn's stages as a chart, the latest turn's figures, audio stats. */

import { LatencyChart, STAGES, V2V_COLOR, formatMs, type TurnMetrics } from "./chart";
import { agent, el } from "./page";

const chart = new LatencyChart(el.chart);

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

export function onTurnMetrics(record: TurnMetrics): void {
  agent.turns.push(record);
  chart.update(agent.turns);
  renderLatest();
}

export function renderAudioStats(): void {
  const s = agent.stats;
  const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  el.audioStats.textContent = agent.connected
    ? `Bot audio received ${sec(s.receivedAudioMs)} · played ${sec(s.playedAudioMs)}` +
      (s.interruptions ? ` · ${s.interruptions} interruption${s.interruptions > 1 ? "s" : ""}` : "")
    : "";
}

/** A new session: no turn yet. */
export function resetLatency(): void {
  agent.turns.length = 0;
  chart.update(agent.turns);
  renderLatest();
}

/** The empty panel, at page load. */
export function renderEmptyLatency(): void {
  renderLegend();
  renderLatest();
  chart.update([]);
}
