"""A turn's record: what the user said, what the bot answered and when each stage happened.

`TurnMetricsObserver` (turn_metrics.py) fills one per user turn; `to_dict()` is the public
record the client, the log line, Prometheus and the dashboard receive. `stages_ms()` turns
the moments into stage durations (the stages are described in turn_metrics.py); a stage that
did not happen is absent, never 0.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,!?;:])")

# The stages `TurnRecord.stages_ms()` may report (the dashboard lists them in this order).
STAGES = ("vad", "stt", "turn", "llm_ttft", "tool", "tts_ttfb", "voice_to_voice", "barge_in_stop")


@dataclass
class TurnRecord:
    """One user turn and the bot's answer to it. Times are pipeline-clock seconds."""

    session_id: str
    turn: int
    user_text: str = ""
    bot_text: str = ""
    interrupted: bool = False
    # Milliseconds of the interrupted answer's audio that left the pipeline after the
    # interruption reached the output transport.
    audio_after_interruption_ms: float | None = None
    # Moments (pipeline-clock seconds), in the order they normally happen.
    speech_start_at: float | None = None
    speech_end_at: float | None = None
    vad_stop_at: float | None = None
    stt_final_at: float | None = None
    user_turn_end_at: float | None = None
    llm_request_at: float | None = None
    llm_first_output_at: float | None = None
    llm_first_text_at: float | None = None
    tool_started_at: float | None = None
    tool_finished_at: float | None = None
    tts_first_audio_at: float | None = None
    bot_audio_out_at: float | None = None
    barge_in_at: float | None = None
    bot_stopped_at: float | None = None
    llm_done: bool = False
    # The answer's LLM responses (one, or more around tool calls) made, and those whose end
    # has gone out behind their audio: until then a silent bot is paused (bot/turns/barge_in.py),
    # not done.
    responses_generated: int = 0
    responses_played: int = 0
    # The answer was started before the turn ended and released when it did
    # (bot/turns/speculation.py).
    speculative: bool = False
    bot_text_spoken: list[str] = field(default_factory=list)
    bot_text_generated: list[str] = field(default_factory=list)
    # Provider switches during the turn (processors/fallback/), e.g. "llm:timeout".
    fallbacks: list[str] = field(default_factory=list)

    @property
    def answer_delivered(self) -> bool:
        return self.llm_done and self.responses_played >= self.responses_generated

    def stages_ms(self) -> dict[str, float]:
        """Stage durations in ms; only the stages that happened."""

        def span(a: float | None, b: float | None) -> float | None:
            if a is None or b is None:
                return None
            return round(max(0.0, b - a) * 1000.0, 1)

        # STT is timed from the VAD stop; a streaming STT may finalise before it (0).
        stt_from = self.vad_stop_at
        stages = {
            "vad": span(self.speech_end_at, self.vad_stop_at),
            "stt": span(stt_from, self.stt_final_at),
            "turn": span(
                max(t for t in (self.vad_stop_at, self.stt_final_at) if t is not None)
                if (self.vad_stop_at or self.stt_final_at)
                else None,
                self.llm_request_at,
            ),
            "llm_ttft": span(self.llm_request_at, self.llm_first_output_at),
            "tool": span(self.tool_started_at, self.tool_finished_at),
            "tts_ttfb": span(self.llm_first_text_at, self.tts_first_audio_at),
            "voice_to_voice": span(self.speech_end_at, self.bot_audio_out_at),
            "barge_in_stop": span(self.barge_in_at, self.bot_stopped_at)
            if self.interrupted
            else None,
        }
        return {k: v for k, v in stages.items() if v is not None}

    def to_dict(self) -> dict:
        """The public record: ids, texts and stage timings (moments are internal)."""
        record = {
            "session_id": self.session_id,
            "turn": self.turn,
            "user_text": self.user_text.strip(),
            "bot_text": self.spoken_text(),
            "interrupted": self.interrupted,
            "stages_ms": self.stages_ms(),
        }
        if self.fallbacks:
            record["fallbacks"] = list(self.fallbacks)
        if self.speculative:
            record["speculative"] = True
        if self.audio_after_interruption_ms is not None:
            record["audio_after_interruption_ms"] = round(self.audio_after_interruption_ms, 1)
        return record

    def spoken_text(self) -> str:
        """What the user heard: the words played before an interruption, else the answer.

        Word frames follow the audio clock and can trail the last audio frame, so an
        answer that played to its end is reported as generated.
        """
        if self.interrupted or not self.bot_text_generated:
            text = " ".join(self.bot_text_spoken)  # words or sentences
        else:
            text = "".join(self.bot_text_generated)  # LLM deltas carry their own spaces
        return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(text.split()))

    def moments(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k.endswith("_at") and v is not None}
