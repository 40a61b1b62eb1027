/** The transcript: the user's words as they are recognised, the bot's as they are spoken. */

import type { BotOutputData, TranscriptData } from "@pipecat-ai/client-js";
import { agent, el, type TranscriptEntry } from "./page";

let userFinalText = ""; // the finals of the user bubble being written
const botSegments = new Map<number | string, string>(); // segment → spoken text, current bot bubble

function lastEntry(): TranscriptEntry | undefined {
  return agent.transcript[agent.transcript.length - 1];
}

export function renderTranscript(): void {
  const list = el.transcript;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(
    ...agent.transcript.map((entry) => {
      const item = document.createElement("li");
      item.className = entry.role;
      if (!entry.final) item.classList.add(entry.role === "user" ? "interim" : "live");
      if (entry.interrupted) item.classList.add("interrupted");
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = entry.role === "user" ? "You" : "Agent";
      item.append(who, entry.text);
      return item;
    }),
  );
  if (agent.transcript.length === 0) {
    const placeholder = document.createElement("li");
    placeholder.className = "placeholder";
    placeholder.textContent = agent.connected
      ? "Listening… ask a question."
      : "Connect, allow the microphone, and ask a question.";
    list.append(placeholder);
  }
  if (atBottom) list.scrollTop = list.scrollHeight;
}

export function onUserTranscript(data: TranscriptData): void {
  const text = data.text.trim();
  if (!text) return;
  let entry = lastEntry();
  if (!entry || entry.role !== "user") {
    entry = { role: "user", text: "", final: false };
    agent.transcript.push(entry);
    userFinalText = "";
  }
  if (data.final) {
    userFinalText = userFinalText ? `${userFinalText} ${text}` : text;
    entry.text = userFinalText;
    entry.final = true;
  } else {
    entry.text = userFinalText ? `${userFinalText} ${text}` : text;
    entry.final = false;
  }
  renderTranscript();
}

function currentBotEntry(): TranscriptEntry {
  const entry = lastEntry();
  if (entry && entry.role === "bot" && !entry.final) return entry;
  botSegments.clear();
  const fresh: TranscriptEntry = { role: "bot", text: "", final: false };
  agent.transcript.push(fresh);
  return fresh;
}

export function onBotOutput(data: BotOutputData): void {
  // Protocol 2.x: a spoken segment reports "in-progress" / "completed" with what has been
  // said so far; text that will not be spoken comes once. Show what the user has heard.
  let spoken: string | undefined;
  if (data.will_be_spoken === false) spoken = data.text;
  else if (data.spoken_status === "in-progress" || data.spoken_status === "completed")
    spoken = data.spoken_progress?.accumulated_text ?? data.text;
  else if (data.spoken_status === undefined && data.spoken) spoken = data.text; // protocol 1.x
  if (!spoken?.trim()) return;
  const entry = currentBotEntry();
  const key = data.segment_id ?? `${botSegments.size}`;
  botSegments.set(key, spoken.trim());
  entry.text = [...botSegments.values()].join(" ");
  renderTranscript();
}

/** Ends the bot's open bubble (the user may have started one after it meanwhile). */
export function closeBotEntry(interrupted: boolean): void {
  const entry = agent.transcript.findLast((e) => e.role === "bot" && !e.final);
  if (!entry) return;
  entry.final = true;
  if (interrupted) entry.interrupted = true;
  renderTranscript();
}

/** A new session: no transcript yet. */
export function resetTranscript(): void {
  agent.transcript.length = 0;
  userFinalText = "";
  botSegments.clear();
  renderTranscript();
}
