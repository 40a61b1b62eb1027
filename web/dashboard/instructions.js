// The instructions form of a session card: PUT /api/sessions/{id}/context (admin API).
import { $ } from "./helpers.js";
import { bearer, savedToken } from "./token.js";

export async function sendInstructions(event, sessionId) {
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
