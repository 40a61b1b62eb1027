// The latency panel: p50/p95 of each stage over the recent turns across sessions, and the
// trend of one stage turn by turn (canvas).
import { STAGE_INFO, state } from "./state.js";
import { $, el, fmtMs, fmtTick, hexToRgba, niceStep, percentile } from "./helpers.js";

const ROLLING_WINDOW = 20;

function setupCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "12px ui-sans-serif, system-ui, sans-serif";
  return { ctx, w, h };
}

// --- Latency per stage: p50 (solid) and p95 (light) bars over the recent turns ---------
/** A chart with nothing to draw yet says why, in its middle. */
function drawPlaceholder(ctx, w, h, text) {
  ctx.fillStyle = "#64748b";
  ctx.textAlign = "center";
  ctx.fillText(text, w / 2, h / 2);
}

function drawStageChart() {
  const canvas = $("#stage-chart");
  const { ctx, w, h } = setupCanvas(canvas);
  const rows = state.stages.map((stage) => {
    const values = state.recent.map((t) => t.stages_ms[stage]).filter((v) => v !== undefined);
    return { stage, n: values.length, p50: percentile(values, 50), p95: percentile(values, 95) };
  });
  const drawn = rows.filter((r) => r.n > 0);
  state.chart.samples = state.recent.length;
  state.chart.drawnStages = drawn.length;
  canvas.dataset.samples = String(state.recent.length);
  canvas.dataset.stages = String(drawn.length);
  if (!drawn.length) {
    drawPlaceholder(ctx, w, h, "Stage latencies appear here after the first turn.");
    return;
  }
  const left = 126, right = 150, top = 8, bottom = 22;
  const rowH = (h - top - bottom) / rows.length;
  const max = Math.max(...drawn.map((r) => r.p95)) * 1.08 || 1;
  const step = niceStep(max, 4);
  const x = (v) => left + (v / (Math.ceil(max / step) * step)) * (w - left - right);
  // grid
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let v = 0; v <= Math.ceil(max / step) * step + 1e-9; v += step) {
    ctx.strokeStyle = v === 0 ? "#475569" : "#1e293b";
    ctx.beginPath();
    ctx.moveTo(Math.round(x(v)) + 0.5, top);
    ctx.lineTo(Math.round(x(v)) + 0.5, h - bottom);
    ctx.stroke();
    ctx.fillStyle = "#94a3b8";
    ctx.fillText(v === 0 ? "0" : fmtTick(v), x(v), h - bottom + 5);
  }
  rows.forEach((r, i) => {
    const y = top + i * rowH, barH = Math.min(18, rowH * 0.62), yb = y + (rowH - barH) / 2;
    const info = STAGE_INFO[r.stage] || { label: r.stage, color: "#94a3b8" };
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    ctx.fillStyle = r.n ? "#e2e8f0" : "#475569";
    ctx.fillText(info.label, left - 10, y + rowH / 2);
    if (!r.n) {
      ctx.textAlign = "left";
      ctx.fillStyle = "#475569";
      ctx.fillText("—", left + 4, y + rowH / 2);
      return;
    }
    ctx.fillStyle = hexToRgba(info.color, 0.3);
    ctx.fillRect(x(0), yb, Math.max(2, x(r.p95) - x(0)), barH);
    ctx.fillStyle = info.color;
    ctx.fillRect(x(0), yb + barH * 0.2, Math.max(2, x(r.p50) - x(0)), barH * 0.6);
    ctx.textAlign = "left";
    ctx.fillStyle = "#cbd5e1";
    ctx.fillText(`${fmtMs(r.p50)} · ${fmtMs(r.p95)}  n=${r.n}`, x(r.p95) + 8, y + rowH / 2);
  });
}

// --- Trend of one stage: every turn a dot, rolling p50/p95 lines ------------------------
export function drawTrendChart() {
  const canvas = $("#trend-chart");
  const { ctx, w, h } = setupCanvas(canvas);
  const stage = $("#trend-stage").value || "voice_to_voice";
  const points = state.recent
    .map((t, i) => ({ i, v: t.stages_ms[stage], interrupted: t.interrupted }))
    .filter((p) => p.v !== undefined);
  canvas.dataset.samples = String(points.length);
  if (!points.length) {
    drawPlaceholder(ctx, w, h, "No turn has this stage yet.");
    return;
  }
  const left = 58, right = 12, top = 10, bottom = 24;
  const rolling = points.map((p, k) => {
    const window = points.slice(Math.max(0, k - ROLLING_WINDOW + 1), k + 1).map((q) => q.v);
    return { i: p.i, p50: percentile(window, 50), p95: percentile(window, 95) };
  });
  const max = Math.max(...points.map((p) => p.v)) * 1.1 || 1;
  const step = niceStep(max, 4), top_v = Math.ceil(max / step) * step;
  const n = Math.max(2, state.recent.length);
  const x = (i) => left + (i / (n - 1)) * (w - left - right);
  const y = (v) => top + (1 - v / top_v) * (h - top - bottom);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let v = 0; v <= top_v + 1e-9; v += step) {
    ctx.strokeStyle = v === 0 ? "#475569" : "#1e293b";
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y(v)) + 0.5);
    ctx.lineTo(w - right, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillStyle = "#94a3b8";
    ctx.fillText(v === 0 ? "0" : fmtTick(v), left - 6, y(v));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  ctx.fillText(`last ${state.recent.length} turns →`, (left + w - right) / 2, h - bottom + 6);
  const color = (STAGE_INFO[stage] || {}).color || "#38bdf8";
  const line = (key, style, width) => {
    ctx.strokeStyle = style;
    ctx.lineWidth = width;
    ctx.beginPath();
    rolling.forEach((r, k) => (k ? ctx.lineTo(x(r.i), y(r[key])) : ctx.moveTo(x(r.i), y(r[key]))));
    ctx.stroke();
    ctx.lineWidth = 1;
  };
  line("p95", hexToRgba(color, 0.45), 2);
  line("p50", color, 2.5);
  for (const p of points) {
    ctx.fillStyle = p.interrupted ? "#f87171" : "#e2e8f0";
    ctx.beginPath();
    ctx.arc(x(p.i), y(p.v), 2.6, 0, Math.PI * 2);
    ctx.fill();
  }
}

export function drawCharts() {
  drawStageChart();
  drawTrendChart();
  $("#turn-count").textContent = String(state.recent.length);
  $("#chart-caption").textContent = `· last ${state.recent.length} of up to ${state.chartTurns} turns across sessions`;
}

export function fillStageSelect() {
  const select = $("#trend-stage");
  if (select.options.length) return;
  for (const stage of state.stages) {
    select.append(el("option", { value: stage }, (STAGE_INFO[stage] || { label: stage }).label));
  }
  select.value = "voice_to_voice";
}
