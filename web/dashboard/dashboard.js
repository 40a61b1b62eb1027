// Live dashboard of every session: plain JS modules, no build, fed by server-sent events
// from /api/events (behind the admin token: ADMIN_TOKEN, or loopback clients only without
// one). `window.dashboard` holds the state the page draws (state.js; the tests read it).
//
//   state.js         that state, the stages and their colours
//   stream.js        the event stream and what each event does
//   sessions.js      a card per live session; turns.js its transcript and waterfall
//   charts.js        the latency panel (per-stage p50/p95, one stage's trend)
//   token.js         the admin token; instructions.js a card's instructions form
//   helpers.js       DOM helpers, formats, percentiles
import { state } from "./state.js";
import { $ } from "./helpers.js";
import { drawCharts, drawTrendChart, fillStageSelect } from "./charts.js";
import { renderDuration } from "./sessions.js";
import { connect } from "./stream.js";
import { renderWaterfall } from "./turns.js";
import { savedToken, storeToken } from "./token.js";

function useToken(event) {
  event.preventDefault();
  storeToken($("#admin-token").value.trim());
  connect();
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
