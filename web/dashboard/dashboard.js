// Live dashboard of every session: plain JS, fed by server-sent events from /api/events
// (behind the admin token: ADMIN_TOKEN, or loopback clients only without one).
// `window.dashboard` holds the state the page draws (the tests read it).
"use strict";

(() => {
  const STAGE_INFO = {
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
  const WATERFALL = ["vad", "stt", "turn", "llm_ttft", "tool", "tts_ttfb"];
  const ROLLING_WINDOW = 20;
  const WATERFALL_TURNS = 12;
  const ENDED_LINGER_MS = 30000;

  const state = {
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

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const svgEl = (tag, attrs = {}) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  const fmtMs = (ms) =>
    ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  // Axis ticks: as short as they can be.
  const fmtTick = (ms) => (ms >= 1000 ? `${+(ms / 1000).toFixed(2)} s` : `${+ms.toFixed(1)} ms`);
  const fmtDuration = (secs) => {
    secs = Math.max(0, Math.floor(secs));
    const m = Math.floor(secs / 60), s = secs % 60;
    return m >= 60 ? `${Math.floor(m / 60)}h ${m % 60}m` : `${m}:${String(s).padStart(2, "0")}`;
  };
  const nowServer = () => Date.now() / 1000 + state.clockOffset;

  function percentile(values, p) {
    if (!values.length) return undefined;
    const sorted = [...values].sort((a, b) => a - b);
    const rank = Math.ceil((p / 100) * sorted.length) - 1; // nearest rank
    return sorted[Math.min(sorted.length - 1, Math.max(0, rank))];
  }
  function niceStep(max, ticks) {
    const raw = max / ticks, mag = 10 ** Math.floor(Math.log10(raw));
    return mag * ([1, 2, 2.5, 5, 10].find((f) => f * mag >= raw) || 10);
  }
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
      ctx.fillStyle = "#64748b";
      ctx.textAlign = "center";
      ctx.fillText("Stage latencies appear here after the first turn.", w / 2, h / 2);
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
  function hexToRgba(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  // --- Trend of one stage: every turn a dot, rolling p50/p95 lines ------------------------
  function drawTrendChart() {
    const canvas = $("#trend-chart");
    const { ctx, w, h } = setupCanvas(canvas);
    const stage = $("#trend-stage").value || "voice_to_voice";
    const points = state.recent
      .map((t, i) => ({ i, v: t.stages_ms[stage], interrupted: t.interrupted }))
      .filter((p) => p.v !== undefined);
    canvas.dataset.samples = String(points.length);
    if (!points.length) {
      ctx.fillStyle = "#64748b";
      ctx.textAlign = "center";
      ctx.fillText("No turn has this stage yet.", w / 2, h / 2);
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

  function drawCharts() {
    drawStageChart();
    drawTrendChart();
    $("#turn-count").textContent = String(state.recent.length);
    $("#chart-caption").textContent = `· last ${state.recent.length} of up to ${state.chartTurns} turns across sessions`;
  }

  // --- Sessions --------------------------------------------------------------------------
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

  function renderSession(entry) {
    const card = ensureCard(entry);
    const s = entry.summary;
    const st = entry.ended ? "ended" : s.state;
    card.dataset.state = st;
    // Cluster mode: the node running it. Else a session in its own worker process
    // (SESSION_PROCESSES, Daily) says which.
    const inWorker = s.pid && state.serverPid && s.pid !== state.serverPid;
    $(".transport", card).textContent = s.node
      ? `${s.transport} · node ${s.node}`
      : inWorker ? `${s.transport} · process ${s.pid}` : s.transport;
    const pill = $(".pill.state", card);
    pill.textContent = st;
    pill.dataset.state = st;
    $(".turns", card).textContent = `${s.turns} turn${s.turns === 1 ? "" : "s"}`;
    renderDuration(entry);
    renderTranscript(entry, $(".transcript", card));
    renderWaterfall(entry, $(".waterfall", card));
  }

  function renderDuration(entry) {
    if (!entry.card) return;
    const end = entry.ended ? entry.endedAt : nowServer();
    $(".duration", entry.card).textContent = fmtDuration(end - entry.summary.started_at);
  }

  function renderTranscript(entry, box) {
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

  function renderWaterfall(entry, svg) {
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

  function upsertSession(summary, history) {
    let entry = state.sessions.get(summary.id);
    if (!entry) {
      entry = { summary, history: [], ended: false, card: null };
      state.sessions.set(summary.id, entry);
    }
    entry.summary = summary;
    if (history) entry.history = history.slice(-state.sessionTurns);
    return entry;
  }

  function endSession(id) {
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

  function renderCounts() {
    const live = [...state.sessions.values()].filter((e) => !e.ended).length;
    $("#live-count").textContent = String(live);
    $("#no-sessions").hidden = state.sessions.size > 0;
  }

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

  // --- The event stream: GET /api/events, read with fetch so it can carry the admin token
  // (EventSource cannot send headers). The token is kept for this tab only.
  const TOKEN_KEY = "voice-agent-admin-token";
  const savedToken = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const bearer = (token) => (token ? { Authorization: `Bearer ${token}` } : {});
  let stream = null; // the AbortController of the stream being read

  async function connect() {
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

  function useToken(event) {
    event.preventDefault();
    const token = $("#admin-token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    connect();
  }

  function fillStageSelect() {
    const select = $("#trend-stage");
    if (select.options.length) return;
    for (const stage of state.stages) {
      select.append(el("option", { value: stage }, (STAGE_INFO[stage] || { label: stage }).label));
    }
    select.value = "voice_to_voice";
  }

  // --- Instructions form (PUT /api/sessions/{id}/context, admin API) ----------------------
  async function sendInstructions(event, sessionId) {
    event.preventDefault();
    const form = event.currentTarget;
    const out = $(".instructions-result", form);
    const data = new FormData(form);
    out.className = "instructions-result small";
    out.textContent = "sending…";
    try {
      const response = await fetch(`/api/sessions/${encodeURIComponent(sessionId)}/context`, {
        method: "PUT",
        headers: {
          "Content-Type": "application/json",
          ...bearer(data.get("token") || savedToken()),
        },
        body: JSON.stringify({ instructions: data.get("instructions"), mode: data.get("mode") }),
      });
      const body = await response.text();
      out.classList.add(response.ok ? "ok" : "error");
      out.textContent = `HTTP ${response.status} ${response.statusText}${body ? ` — ${body.slice(0, 300)}` : ""}`;
    } catch (e) {
      out.classList.add("error");
      out.textContent = `failed: ${e}`;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#trend-stage").addEventListener("change", drawTrendChart);
    window.addEventListener("resize", () => {
      drawCharts();
      for (const entry of state.sessions.values()) if (entry.card) renderWaterfall(entry, $(".waterfall", entry.card));
    });
    setInterval(() => state.sessions.forEach(renderDuration), 1000);
    $("#token-form").addEventListener("submit", useToken);
    $("#admin-token").value = savedToken();
    fillStageSelect();
    drawCharts();
    connect();
  });
})();
