"""Per-turn latency observer: where each turn's time went, stage by stage.

Every time is the pipeline clock at the moment a frame was pushed, so the stages of a
turn tile its voice-to-voice interval:

    user stops speaking ─ vad ─▶ VAD stop ─ stt ─▶ final transcript ─ turn ─▶ LLM request
      ─ llm_ttft ─▶ first LLM output ─ tts_ttfb ─▶ first TTS audio ─ (transport) ─▶ first
      bot audio out of the pipeline

`voice_to_voice` runs from the moment the user stopped speaking (VAD stop minus its
stop_secs) to the first bot audio frame leaving the output transport. `barge_in_stop`
runs from the moment the user started speaking over the bot (VAD start minus its
start_secs) to the last audio frame of the interrupted answer leaving the output. A stage
that did not happen is absent from the record (`TurnRecord`, turn_record.py), never 0.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    EagerEndOfTurnCancelFrame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMContextUserTurnFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMarkerResponseFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_output import BaseOutputTransport

from processors.fallback import ServiceFallbackFrame
from processors.observers.turn_record import TurnRecord

# Pipecat's turn-completion verdicts (its user-turn-completion mixin) that hold the answer back.
HELD_BACK = ("short", "long")

TurnSubscriber = Callable[[TurnRecord], Awaitable[None] | None]


class TurnMetricsObserver(BaseObserver):
    """Builds a `TurnRecord` per user turn and hands it to every subscriber."""

    def __init__(self, session_id: str, **kwargs):
        super().__init__(**kwargs)
        self.session_id = session_id
        self._subscribers: list[TurnSubscriber] = []
        self._turn_count = 0
        self._current: TurnRecord | None = None
        self._interrupted: TurnRecord | None = None
        self._vad_started_at: float | None = None
        # A turn that starts on its words (a barge-in judged by them) starts after its
        # speech ended and was transcribed: kept here until that turn opens.
        self._segment_end: tuple[float, float] | None = None  # VAD stop at, speech end at
        self._segment_final_at: float | None = None
        self._bot_speaking = False
        self._bot_started_at: float | None = None
        self._last_bot_audio_out_at: float | None = None
        self._pending_tools = 0
        self._tts_done = True
        self._fallbacks_before_turn: list[str] = []  # provider switches while no turn was open
        self._speculation_at: float | None = None  # a speculative answer requested, unresolved

    def subscribe(self, callback: TurnSubscriber) -> None:
        self._subscribers.append(callback)

    @property
    def turn_number(self) -> int:
        """The number of the turn in progress (or the last one); 0 before the first."""
        return self._turn_count

    @property
    def turns_completed(self) -> int:
        return self._turn_count - (1 if self._current else 0)

    async def on_push_frame(self, data: FramePushed):
        frame, src, t = data.frame, data.source, data.timestamp / 1e9
        upstream = data.direction == FrameDirection.UPSTREAM
        turn = self._current
        # Every hop of a frame is observed. The output transport and the LLM's input are
        # recognised by where the frame is (a word frame reaching the output was created
        # by the TTS; the context may reach the LLM through other processors); everything
        # else counts only where it was made, its first push.
        if isinstance(src, BaseOutputTransport) and not upstream:
            await self._on_output(frame, t)
            return
        if isinstance(frame, LLMContextFrame) and isinstance(data.destination, LLMService):
            if frame.speculation:  # held by the LLM until the turn ends (bot/turns/speculation.py)
                self._speculation_at = t
            elif turn and turn.llm_request_at is None:
                turn.llm_request_at = t
            return
        if isinstance(frame, EagerEndOfTurnCancelFrame):
            self._speculation_at = None
            return
        if isinstance(frame, InterruptionFrame) and isinstance(
            data.destination, BaseOutputTransport
        ):
            # From here on, any audio of the interrupted answer is audio that got out.
            if self._interrupted and self._interrupted.audio_after_interruption_ms is None:
                self._interrupted.audio_after_interruption_ms = 0.0
            return
        if not data.first_push:
            return
        if isinstance(frame, ServiceFallbackFrame):
            switch = f"{frame.stage}:{frame.reason if frame.event == 'fallback' else frame.event}"
            if turn:
                turn.fallbacks.append(switch)
                # The failed service's response is abandoned, its end may never play: what
                # follows (the local service's answer, or the apology) is the turn's.
                turn.responses_generated = turn.responses_played
                if frame.retracted:  # the failed LLM's words were withdrawn; the local one answers
                    turn.bot_text_generated.clear()
            else:  # e.g. at connect time, or the STT failing before the turn began
                self._fallbacks_before_turn.append(switch)
            return

        # --- user side: the user aggregator broadcasts these both ways; count the upstream copy
        if isinstance(frame, VADUserStartedSpeakingFrame) and upstream:
            self._vad_started_at = t - frame.start_secs
            self._segment_end = self._segment_final_at = None
        elif isinstance(frame, UserStartedSpeakingFrame) and upstream:
            await self._start_turn(t)
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and upstream:
            self._segment_end = (t, t - frame.stop_secs)
            if turn and turn.llm_request_at is None:
                turn.vad_stop_at = t
                turn.speech_end_at = t - frame.stop_secs
        elif isinstance(frame, UserStoppedSpeakingFrame) and upstream:
            if turn and turn.llm_request_at is None:
                turn.user_turn_end_at = t
                if self._speculation_at is not None:
                    # The turn ended as speculated: its answer, started earlier, goes out now.
                    turn.llm_request_at, turn.speculative = t, True
                    self._speculation_at = None
        # --- STT
        elif isinstance(frame, TranscriptionFrame) and isinstance(src, STTService) and not upstream:
            self._segment_final_at = t
            if turn and turn.llm_request_at is None:
                turn.user_text += " " + frame.text
                turn.stt_final_at = t
        elif isinstance(frame, LLMContextUserTurnFrame) and not upstream:
            # What the turn put in the context: its words, even those heard before the turn
            # started (a barge-in starts on its words), and none the turn-taking let pass.
            if turn and frame.text.strip():
                turn.user_text = frame.text
        # --- LLM
        elif isinstance(src, LLMService) and not upstream:
            if turn and turn.llm_request_at is not None:
                if isinstance(frame, (LLMTextFrame, FunctionCallsStartedFrame)):
                    turn.llm_first_output_at = turn.llm_first_output_at or t
                if isinstance(frame, LLMTextFrame):
                    turn.llm_first_text_at = turn.llm_first_text_at or t
                    turn.bot_text_generated.append(frame.text)
                elif isinstance(frame, FunctionCallInProgressFrame):
                    self._pending_tools += 1
                    turn.tool_started_at = turn.tool_started_at or t
                elif isinstance(frame, LLMFullResponseStartFrame):
                    # Counted at its start: an interrupted response can end after the next
                    # turn's request, and its end never plays.
                    turn.responses_generated += 1
                elif isinstance(frame, LLMFullResponseEndFrame):
                    turn.llm_done = self._pending_tools == 0
                elif isinstance(frame, LLMMarkerResponseFrame) and frame.kind in HELD_BACK:
                    # The LLM judged the user unfinished and said nothing (LLM_TURN_COMPLETION):
                    # the turn goes on, and its LLM stage starts again with the next request.
                    turn.llm_request_at = turn.llm_first_output_at = None
                    turn.responses_generated -= 1
        elif isinstance(frame, FunctionCallResultFrame):
            self._pending_tools = max(0, self._pending_tools - 1)
            if turn:
                turn.tool_finished_at = t
                turn.llm_done = False  # the LLM answers again with the result
        # --- TTS
        elif isinstance(frame, TTSAudioRawFrame) and isinstance(src, TTSService):
            if turn and turn.llm_request_at is not None:
                turn.tts_first_audio_at = turn.tts_first_audio_at or t

    async def _on_output(self, frame, t: float) -> None:
        turn = self._current
        if isinstance(frame, OutputAudioRawFrame):
            # Pushed on after it was written: when the caller last received bot audio.
            self._last_bot_audio_out_at = t
            if self._interrupted and self._interrupted.audio_after_interruption_ms is not None:
                self._interrupted.audio_after_interruption_ms += (
                    1000.0 * frame.num_frames / frame.sample_rate
                )
            elif turn and turn.llm_request_at is not None:
                turn.bot_audio_out_at = turn.bot_audio_out_at or t
        elif isinstance(frame, TTSTextFrame):
            # Until the interrupted answer stops, its words are still the ones playing.
            target = self._interrupted or turn
            if target:
                target.bot_text_spoken.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            if turn and turn.llm_request_at is not None:
                turn.responses_played += 1
                # The TTS's stop frame, which stops the bot, comes just before this one.
                if not self._bot_speaking and self._answer_over(turn):
                    self._current = None
                    await self._emit(turn)
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking, self._bot_started_at = True, t
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            if self._interrupted:
                # BotStoppedSpeaking comes a silence timeout after the last audio: the
                # barge-in stopped the bot when its last audio went out.
                self._interrupted.bot_stopped_at = self._last_bot_audio_out_at or t
                done, self._interrupted = self._interrupted, None
                await self._emit(done)
            elif turn and self._answer_over(turn):
                self._current = None
                await self._emit(turn)
            elif (
                turn
                and turn.llm_request_at is None
                and turn.user_turn_end_at is not None
                and self._bot_started_at is not None
                and self._bot_started_at >= turn.user_turn_end_at
            ):
                # Spoken after the user's turn, without the LLM (EmptyTurnReply's "Sorry, I
                # didn't catch that"): done now, not when the next turn starts. No
                # voice-to-voice: it is not an answer. (A greeting still playing when the
                # turn ended started before it, and is not mistaken for the reply.)
                self._current = None
                await self._emit(turn)

    @staticmethod
    def _answer_over(turn: TurnRecord) -> bool:
        return turn.bot_audio_out_at is not None and turn.answer_delivered

    def _speech_start(self, t: float) -> float:
        """When the user began the turn that starts at `t`."""
        # A barge-in starts its turn once its words are known (bot/turns/barge_in.py), but the
        # bot fell silent at the VAD's start: that is where the user began.
        return t if self._vad_started_at is None else self._vad_started_at

    async def _start_turn(self, t: float) -> None:
        previous = self._current
        speech_start = self._speech_start(t)
        if previous is not None:
            cut_off = self._bot_speaking or not previous.answer_delivered
            if cut_off and previous.bot_audio_out_at is not None:
                previous.interrupted = True
                previous.barge_in_at = speech_start
                if self._interrupted:  # an earlier interrupted answer never reported its stop
                    await self._emit(self._interrupted)
                    self._interrupted = None
                if self._bot_speaking:
                    self._interrupted = previous  # reported when its audio stops
                else:  # paused before the user began (bot/turns/barge_in.py): stopped already
                    previous.bot_stopped_at = self._last_bot_audio_out_at
                    await self._emit(previous)
            else:
                await self._emit(previous)
        self._turn_count += 1
        self._current = TurnRecord(
            session_id=self.session_id,
            turn=self._turn_count,
            speech_start_at=speech_start,
        )
        if self._segment_end is not None:  # the speech ended before its turn started
            self._current.vad_stop_at, self._current.speech_end_at = self._segment_end
            self._current.stt_final_at = self._segment_final_at
        self._current.fallbacks, self._fallbacks_before_turn = self._fallbacks_before_turn, []
        self._pending_tools = 0

    async def flush(self) -> None:
        """Report whatever is open (session end)."""
        for record in (self._interrupted, self._current):
            if record is not None:
                await self._emit(record)
        self._interrupted = self._current = None

    async def _emit(self, record: TurnRecord) -> None:
        for callback in self._subscribers:
            result = callback(record)
            if inspect.isawaitable(result):
                await result
