"""Turn records as the turn-metrics observer makes them from the frames it sees pushed."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.stt_service import STTService


class ObservedTurns:
    """A TurnMetricsObserver fed pushes by hand: `push(frame, t)` from a plain processor,
    the output transport (`source=turns.output`) or to the LLM (`destination=turns.llm`)."""

    def __init__(self):
        from pipecat.processors.frame_processor import FrameProcessor
        from pipecat.services.llm_service import LLMService
        from pipecat.transports.base_output import BaseOutputTransport
        from pipecat.transports.base_transport import TransportParams

        from processors.observers.turn_metrics import TurnMetricsObserver

        self.observer, self.records = TurnMetricsObserver("s1"), []
        self.observer.subscribe(self.records.append)
        self.output, self.other, self.llm = (BaseOutputTransport(TransportParams()),
                                             FrameProcessor(), LLMService())

    async def push(self, frame, t, source=None, destination=None, upstream=False):
        from pipecat.observers.base_observer import FramePushed
        from pipecat.processors.frame_processor import FrameDirection

        direction = FrameDirection.UPSTREAM if upstream else FrameDirection.DOWNSTREAM
        await self.observer.on_push_frame(
            FramePushed(source or self.other, destination or self.other, frame, direction,
                        int(t * 1e9))
        )

    async def llm_answers(self, text, t):
        """The LLM's response, from its start at `t`."""
        await self.push(LLMFullResponseStartFrame(), t, source=self.llm)
        await self.push(LLMTextFrame(text), t + 0.05, source=self.llm)
        await self.push(LLMFullResponseEndFrame(), t + 0.1, source=self.llm)

    @staticmethod
    def audio():
        from pipecat.frames.frames import OutputAudioRawFrame

        return OutputAudioRawFrame(b"\0\0" * 480, 24000, 1)


async def test_barge_in_stop_ends_at_the_last_bot_audio_out_not_at_bot_stopped_speaking():
    """BotStoppedSpeaking follows the last audio by a silence timeout; the caller heard
    the bot stop when its last audio frame went out."""

    turns = ObservedTurns()
    push, audio, output, llm, records = (turns.push, turns.audio, turns.output, turns.llm,
                                         turns.records)

    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    await push(LLMContextFrame(LLMContext()), 1.0, destination=llm)
    await push(BotStartedSpeakingFrame(), 1.5, source=output)
    for i in range(20):  # the answer plays from 1.5 s
        await push(audio(), 1.5 + i * 0.02, source=output)
    # speech began at 1.8
    await push(VADUserStartedSpeakingFrame(start_secs=0.2), 2.0, upstream=True)
    await push(UserStartedSpeakingFrame(), 2.0, upstream=True)
    await push(audio(), 2.05, source=output)  # the last audio out, before the interruption lands
    await push(BotStoppedSpeakingFrame(), 2.45, source=output)
    assert len(records) == 1 and records[0].interrupted
    assert records[0].stages_ms()["barge_in_stop"] == pytest.approx(250.0)


async def test_a_turn_started_on_its_words_keeps_the_speech_end_it_came_after():
    """Over the bot, a turn starts once its words are judged (bot/turns/barge_in.py): after the VAD
    stopped and the STT finalised. Its voice-to-voice still runs from the end of the speech."""

    turns = ObservedTurns()
    push, audio, output, llm, records = (turns.push, turns.audio, turns.output, turns.llm,
                                         turns.records)
    class AnySTT(STTService):
        async def run_stt(self, audio):
            yield None

    stt = AnySTT()

    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    await push(LLMContextFrame(LLMContext()), 1.0, destination=llm)
    await push(BotStartedSpeakingFrame(), 1.5, source=output)
    await push(audio(), 1.5, source=output)
    await push(BotStoppedSpeakingFrame(), 2.0, source=output)
    await push(VADUserStartedSpeakingFrame(start_secs=0.2), 2.2, upstream=True)
    await push(VADUserStoppedSpeakingFrame(stop_secs=0.2), 3.2, upstream=True)  # spoke until 3.0
    await push(TranscriptionFrame("hello there", "u", "now"), 3.4, source=stt)
    await push(UserStartedSpeakingFrame(), 3.45, upstream=True)  # started on its words
    await push(LLMContextFrame(LLMContext()), 3.5, destination=llm)
    await push(BotStartedSpeakingFrame(), 3.9, source=output)
    await push(audio(), 3.9, source=output)
    await turns.observer.flush()
    stages = records[-1].stages_ms()
    assert stages["voice_to_voice"] == pytest.approx(900.0)
    assert stages["vad"] == pytest.approx(200.0) and stages["stt"] == pytest.approx(200.0)


async def test_a_turn_answered_without_the_llm_is_reported_when_the_bot_stops():
    """An untranscribed barge-in answered by EmptyTurnReply's fixed sentence (spoken by the
    TTS, no LLM request) is reported when the sentence ends, not at the next turn."""
    from pipecat.utils.text.base_text_aggregator import AggregationType

    from bot.turns.turn_taking import EMPTY_TURN_REPLY

    turns = ObservedTurns()
    push, output = turns.push, turns.output

    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    # A greeting playing across the end of the user's turn is not the reply to it.
    await push(BotStartedSpeakingFrame(), 0.3, source=output)
    await push(TTSTextFrame("Hi!", AggregationType.WORD), 0.3, source=output)
    await push(UserStoppedSpeakingFrame(), 1.0, upstream=True)
    await push(BotStoppedSpeakingFrame(), 1.1, source=output)
    assert turns.records == []
    await push(BotStartedSpeakingFrame(), 1.2, source=output)
    for i, word in enumerate(EMPTY_TURN_REPLY.split()):
        await push(TTSTextFrame(word, AggregationType.WORD), 1.2 + i * 0.1, source=output)
        await push(turns.audio(), 1.2 + i * 0.1, source=output)
    await push(BotStoppedSpeakingFrame(), 2.5, source=output)
    [record] = turns.records
    assert (record.to_dict()["bot_text"].endswith(EMPTY_TURN_REPLY)
            and not record.to_dict()["user_text"])
    assert "voice_to_voice" not in record.stages_ms()



async def _answer_paused_mid_way(turns):
    """Turn 1's answer is all generated and half played when the bot falls silent: held
    over a sound (bot/turns/barge_in.py) long enough for the output's 3 s fallback, or stopped
    for real to say its sentence again, either of which reports the bot stopped."""
    push, audio, output, llm = turns.push, turns.audio, turns.output, turns.llm
    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    await push(LLMContextFrame(LLMContext()), 1.0, destination=llm)
    await turns.llm_answers("One. Two.", 1.05)
    await push(BotStartedSpeakingFrame(), 1.5, source=output)
    await push(audio(), 1.5, source=output)
    await push(BotStoppedSpeakingFrame(), 4.5, source=output)


async def test_an_answer_paused_mid_way_is_reported_once_its_end_has_played():
    turns = ObservedTurns()
    push, audio, output = turns.push, turns.audio, turns.output
    await _answer_paused_mid_way(turns)
    assert turns.records == []  # the answer's end is still waiting behind the pause
    await push(BotStartedSpeakingFrame(), 4.6, source=output)  # it goes on
    await push(audio(), 4.6, source=output)
    await push(BotStoppedSpeakingFrame(), 5.0, source=output)  # at the TTS's stop frame
    assert turns.records == []
    await push(LLMFullResponseEndFrame(), 5.0, source=output)
    [record] = turns.records
    assert not record.interrupted and record.to_dict()["bot_text"] == "One. Two."


async def test_a_turn_begun_while_the_answer_is_paused_interrupts_it():
    turns = ObservedTurns()
    push = turns.push
    await _answer_paused_mid_way(turns)
    await push(VADUserStartedSpeakingFrame(start_secs=0.2), 5.0, upstream=True)
    await push(UserStartedSpeakingFrame(), 5.5, upstream=True)
    [record] = turns.records
    assert record.interrupted and record.stages_ms()["barge_in_stop"] == 0.0


async def test_the_end_of_an_interrupted_response_does_not_hold_the_next_answer_open():
    """A barge-in's request can reach the LLM before the response it cut off has ended:
    that end never plays (the interruption dropped it), and the new answer is reported
    when it has played."""
    turns = ObservedTurns()
    push, audio, output, llm = turns.push, turns.audio, turns.output, turns.llm
    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    await push(LLMContextFrame(LLMContext()), 0.1, destination=llm)
    await push(LLMFullResponseEndFrame(), 0.2, source=llm)  # the cut-off response's end
    await turns.llm_answers("Paris.", 0.3)
    await push(BotStartedSpeakingFrame(), 1.0, source=output)
    await push(audio(), 1.0, source=output)
    await push(BotStoppedSpeakingFrame(), 1.5, source=output)
    await push(LLMFullResponseEndFrame(), 1.5, source=output)
    [record] = turns.records
    assert record.to_dict()["bot_text"] == "Paris."


async def test_an_answer_the_llm_held_back_leaves_the_turn_open_and_untimed():
    """LLM_TURN_COMPLETION: "Let me think about it" gets an incomplete marker and no words;
    the user goes on. The turn's stages are those of the request that was answered."""
    from pipecat.frames.frames import LLMMarkerResponseFrame

    turns = ObservedTurns()
    push, audio, output, llm, records = (turns.push, turns.audio, turns.output, turns.llm,
                                         turns.records)

    await push(UserStartedSpeakingFrame(), 0.0, upstream=True)
    await push(VADUserStoppedSpeakingFrame(stop_secs=0.2), 2.2, upstream=True)  # "let me think"
    await push(LLMContextFrame(LLMContext()), 2.5, destination=llm)
    await push(LLMFullResponseStartFrame(), 2.6, source=llm)
    await push(LLMMarkerResponseFrame(raw="○", marker="○", kind="long"), 3.0, source=llm)
    await push(LLMFullResponseEndFrame(), 3.0, source=llm)
    await push(LLMFullResponseEndFrame(), 3.0, source=output)
    await push(VADUserStartedSpeakingFrame(start_secs=0.2), 5.2, upstream=True)
    # "...Japan", until 6.0
    await push(VADUserStoppedSpeakingFrame(stop_secs=0.2), 6.2, upstream=True)
    await push(LLMContextFrame(LLMContext()), 6.5, destination=llm)
    await turns.llm_answers("Japan is lovely.", 6.6)
    await push(UserStoppedSpeakingFrame(), 6.7, upstream=True)
    await push(BotStartedSpeakingFrame(), 7.0, source=output)
    await push(audio(), 7.0, source=output)
    await push(LLMFullResponseEndFrame(), 7.5, source=output)
    await push(BotStoppedSpeakingFrame(), 7.6, source=output)
    [record] = records
    stages = record.stages_ms()
    assert stages["voice_to_voice"] == pytest.approx(1000.0)
    assert stages["llm_ttft"] == pytest.approx(150.0) and stages["vad"] == pytest.approx(200.0)
    assert not record.interrupted and record.spoken_text() == "Japan is lovely."
