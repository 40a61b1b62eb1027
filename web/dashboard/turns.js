// A session's turns: its transcript and each turn's stage timings as a waterfall (SVG).
import { STAGE_INFO, WATERFALL } from "./state.js";
import { el, fmtMs, svgEl } from "./helpers.js";

const WATERFALL_TURNS = 12;

export function renderTranscript(entry, box) {
  box.replaceChildren();
  for (const t of entry.history) {
    if (t.user_text) {
      const b = el("div", { class: "bubble user" });
      b.append(el("span", { class: "who" }, `you · turn ${t.turn}`), t.user_text);
      box.append(b);
    }
    if (t.bot_text) {
      const b = el("div", { class: `bubble bot${t.interrupted ? " interrupted" : ""}` });
      const v2v = t.stages_ms.voice_to_voice;
      b.append(el("span", { class: "who" }, `bot${v2v !== undefined ? ` · answered in ${fmtMs(v2v)}` : ""}`), t.bot_text);
      box.append(b);
    }
  }
  if (!entry.history.length) box.append(el("div", { class: "muted" }, "No turn yet."));
  box.scrollTop = box.scrollHeight;
}

export function renderWaterfall(entry, svg) {
  const turns = entry.history.slice(-WATERFALL_TURNS);
  const width = svg.clientWidth || 520, rowH = 22, labelW = 44, tailW = 116;
  const height = Math.max(1, turns.length) * rowH + 6;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", String(height));
  svg.replaceChildren();
  if (!turns.length) return;
  const total = (t) => Math.max(t.stages_ms.voice_to_voice || 0, WATERFALL.reduce((a, k) => a + (t.stages_ms[k] || 0), 0));
  const max = Math.max(...turns.map(total), 1);
  const scale = (width - labelW - tailW) / max;
  turns.forEach((t, row) => {
    const y = 3 + row * rowH;
    const label = svgEl("text", { x: labelW - 6, y: y + 14, "text-anchor": "end", fill: "#94a3b8", "font-size": 11 });
    label.textContent = `#${t.turn}`;
    svg.append(label);
    let x = labelW;
    for (const stage of WATERFALL) {
      const ms = t.stages_ms[stage];
      if (ms === undefined) continue;
      const rect = svgEl("rect", { x, y: y + 3, width: Math.max(1, ms * scale), height: rowH - 8, rx: 2, fill: STAGE_INFO[stage].color });
      const tip = svgEl("title");
      tip.textContent = `${STAGE_INFO[stage].label}: ${fmtMs(ms)}`;
      rect.append(tip);
      svg.append(rect);
      x += ms * scale;
    }
    const v2v = t.stages_ms.voice_to_voice;
    if (v2v !== undefined && labelW + v2v * scale > x + 0.5) {
      const rest = svgEl("rect", { x, y: y + 3, width: labelW + v2v * scale - x, height: rowH - 8, rx: 2, fill: "#475569" });
      const tip = svgEl("title");
      tip.textContent = `rest of voice-to-voice (transport, playout): ${fmtMs(v2v - (x - labelW) / scale)}`;
      rest.append(tip);
      svg.append(rest);
      x = labelW + v2v * scale;
    }
    const text = svgEl("text", { x: x + 6, y: y + 14, fill: t.interrupted ? "#fca5a5" : "#e2e8f0", "font-size": 11 });
    const barge = t.stages_ms.barge_in_stop;
    text.textContent = (v2v !== undefined ? `v2v ${fmtMs(v2v)}` : "no answer") + (t.interrupted ? ` ✂${barge !== undefined ? " " + fmtMs(barge) : ""}` : "");
    svg.append(text);
  });
}
