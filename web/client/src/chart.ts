/** Per-turn latency: stacked stage bars with a voice-to-voice marker, drawn on a canvas. */

export interface TurnMetrics {
  type: "turn-metrics";
  session_id: string;
  turn: number;
  user_text: string;
  bot_text: string;
  interrupted: boolean;
  stages_ms: Partial<Record<StageKey | "voice_to_voice" | "barge_in_stop", number>>;
  [extra: string]: unknown;
}

export type StageKey = "vad" | "stt" | "turn" | "llm_ttft" | "tool" | "tts_ttfb";

export const STAGES: { key: StageKey; label: string; color: string }[] = [
  { key: "vad", label: "VAD", color: "#60a5fa" },
  { key: "stt", label: "STT", color: "#34d399" },
  { key: "turn", label: "Turn", color: "#a78bfa" },
  { key: "llm_ttft", label: "LLM TTFT", color: "#f472b6" },
  { key: "tool", label: "Tool", color: "#fb923c" },
  { key: "tts_ttfb", label: "TTS TTFB", color: "#facc15" },
];
export const V2V_COLOR = "#f8fafc";

const MAX_BARS = 12;
const PAD = { left: 48, right: 12, top: 14, bottom: 26 };

function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const steps = [1, 2, 2.5, 5, 10];
  return magnitude * (steps.find((s) => s * magnitude >= raw) ?? 10);
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

export class LatencyChart {
  private turns: TurnMetrics[] = [];

  constructor(private readonly canvas: HTMLCanvasElement) {
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  update(turns: TurnMetrics[]): void {
    this.turns = turns;
    this.draw();
  }

  draw(): void {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (width === 0 || height === 0) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px ui-sans-serif, system-ui, sans-serif";

    const shown = this.turns.slice(-MAX_BARS);
    const plotW = width - PAD.left - PAD.right;
    const plotH = height - PAD.top - PAD.bottom;
    if (shown.length === 0) {
      ctx.fillStyle = "#64748b";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("Latency per turn appears here after your first question.", width / 2, height / 2);
      return;
    }

    const stackOf = (t: TurnMetrics) => STAGES.reduce((sum, s) => sum + (t.stages_ms[s.key] ?? 0), 0);
    const top = Math.max(...shown.map((t) => Math.max(stackOf(t), t.stages_ms.voice_to_voice ?? 0)), 100);
    const step = niceStep(top, 4);
    const yMax = Math.ceil((top * 1.08) / step) * step;
    const y = (ms: number) => PAD.top + plotH - (ms / yMax) * plotH;

    // grid and axis labels
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = 0; v <= yMax + 1e-6; v += step) {
      ctx.strokeStyle = v === 0 ? "#475569" : "#1e293b";
      ctx.beginPath();
      ctx.moveTo(PAD.left, Math.round(y(v)) + 0.5);
      ctx.lineTo(width - PAD.right, Math.round(y(v)) + 0.5);
      ctx.stroke();
      ctx.fillStyle = "#94a3b8";
      ctx.fillText(v === 0 ? "0" : formatMs(v), PAD.left - 6, y(v));
    }

    const slot = plotW / Math.max(6, shown.length);
    const barW = Math.min(34, slot * 0.62);
    const centers: { x: number; v2v?: number }[] = [];
    shown.forEach((turn, i) => {
      const cx = PAD.left + slot * (i + 0.5);
      let acc = 0;
      for (const stage of STAGES) {
        const ms = turn.stages_ms[stage.key];
        if (ms === undefined || ms <= 0) continue;
        ctx.fillStyle = stage.color;
        const y0 = y(acc);
        const y1 = y(acc + ms);
        ctx.fillRect(cx - barW / 2, y1, barW, Math.max(1, y0 - y1));
        acc += ms;
      }
      ctx.fillStyle = turn.interrupted ? "#fca5a5" : "#94a3b8";
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      ctx.fillText(turn.interrupted ? `${turn.turn}✂` : `${turn.turn}`, cx, PAD.top + plotH + 7);
      centers.push({ x: cx, v2v: turn.stages_ms.voice_to_voice });
    });

    // voice-to-voice: a line through the turns and a marker on each bar
    const marked = centers.filter((c) => c.v2v !== undefined) as { x: number; v2v: number }[];
    ctx.strokeStyle = "rgba(248, 250, 252, 0.45)";
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    marked.forEach((c, i) => (i === 0 ? ctx.moveTo(c.x, y(c.v2v)) : ctx.lineTo(c.x, y(c.v2v))));
    ctx.stroke();
    ctx.setLineDash([]);
    for (const c of marked) {
      const yy = y(c.v2v);
      ctx.strokeStyle = V2V_COLOR;
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(c.x - barW / 2 - 4, yy);
      ctx.lineTo(c.x + barW / 2 + 4, yy);
      ctx.stroke();
      ctx.lineWidth = 1;
      ctx.fillStyle = V2V_COLOR;
      ctx.beginPath();
      ctx.arc(c.x, yy, 3, 0, Math.PI * 2);
      ctx.fill();
    }
  }
}

export { formatMs };
