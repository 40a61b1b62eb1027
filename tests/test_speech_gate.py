"""The speech gate says a cut-off sentence again from its start, and no more than that; it
lets audio further ahead of real time when the event loop is late."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pipecat.frames.frames import (
    AggregatedTextFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import run_test

from processors.speech_gate import LEAD_SECS, SpeechGate

RATE = 24000


def chunk(level: int, secs: float = 0.1) -> TTSAudioRawFrame:
    """Audio at one level, so that where it went can be told from the output."""
    audio = np.full(int(secs * RATE), level, np.int16).tobytes()
    return TTSAudioRawFrame(audio, RATE, 1, context_id="reply")


class CoughAt(FrameProcessor):
    """After the gate: when audio of `level` first plays, a cough holds the bot and turns out
    to have no words (what bot/turns/barge_in.py does), so the gate says the sentence again."""

    def __init__(self, gate: SpeechGate, level: int):
        super().__init__()
        self._gate, self._level, self._coughed = gate, level, False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and not self._coughed:
            if np.frombuffer(frame.audio, np.int16)[0] == self._level:
                self._coughed = True
                self._gate.hold()
                self.create_task(self._gate.replay_sentence(), "no-words")
        await self.push_frame(frame, direction)


def levels_after_the_cut(frames) -> list[int]:
    """The audio levels played after the replay's interruption, each run of one level once."""
    cut = next(i for i, f in enumerate(frames) if isinstance(f, InterruptionFrame))
    levels = [
        int(np.frombuffer(f.audio, np.int16)[0])
        for f in frames[cut:]
        if isinstance(f, OutputAudioRawFrame)
    ]
    return [level for i, level in enumerate(levels) if i == 0 or levels[i - 1] != level]


def reply() -> list[Frame]:
    """A reply whose first sentence went to the TTS in two chunks (bot/text_aggregation.py)."""
    return [
        TTSStartedFrame(context_id="reply"),
        chunk(1000),
        TTSTextFrame("Plants make their food", text_type="phrase"),
        chunk(2000),
        TTSTextFrame("in the leaves, by photosynthesis.", text_type="sentence"),
        chunk(3000),
        TTSTextFrame("The chlorophyll in each leaf catches the light.", text_type="sentence"),
    ]


@pytest.mark.parametrize(
    "cough_over, max_replay_secs, said_again",
    [
        (2000, 10.0, [1000, 2000, 3000]),  # the sentence's second chunk: from the first one
        (3000, 10.0, [3000]),  # the next sentence: that one only
        (2000, 0.05, [2000, 3000]),  # a sentence gone on too long: from its latest chunk
    ],
)
async def test_a_cut_off_sentence_is_said_again_from_its_start(
    cough_over, max_replay_secs, said_again
):
    gate = SpeechGate(max_replay_secs=max_replay_secs)
    received, _ = await run_test(
        Pipeline([gate, CoughAt(gate, cough_over)]), frames_to_send=reply()
    )
    assert levels_after_the_cut(received) == said_again


class BusyLoop(FrameProcessor):
    """After the gate: the first audio it sees holds up the whole event loop, as many
    sessions' frames on one loop do."""

    def __init__(self, secs: float):
        super().__init__()
        self._secs, self._done = secs, False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and not self._done:
            self._done = True
            time.sleep(self._secs)  # blocking on purpose: the loop is busy elsewhere
        await self.push_frame(frame, direction)


async def test_audio_goes_further_ahead_once_the_loop_wakes_the_gate_late():
    """The gate woken 120 ms late: it lets audio that much further ahead of real time, so
    that a client's playout buffer does not run dry the next time."""
    gate = SpeechGate()
    assert gate.lead_secs == LEAD_SECS
    await run_test(Pipeline([gate, BusyLoop(0.12)]), frames_to_send=[chunk(1000, secs=0.3)])
    assert gate.lead_secs > LEAD_SECS + 0.05, gate.lead_secs


class HeardWhilePlaying(FrameProcessor):
    """After the gate: what the gate says the bot is saying, when each level first plays."""

    def __init__(self, gate: SpeechGate):
        super().__init__()
        self._gate, self.text_at = gate, {}

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame):
            level = int(np.frombuffer(frame.audio, np.int16)[0])
            self.text_at.setdefault(level, self._gate.recent_text())
        await self.push_frame(frame, direction)


def announced(text: str) -> AggregatedTextFrame:
    frame = AggregatedTextFrame(text, text_type="sentence")
    frame.will_be_spoken = True  # as the TTS announces a chunk ahead of its audio
    return frame


async def test_the_sentence_playing_is_known_before_its_synthesis_ends():
    """Its own text comes after all its audio (a slow TTS streams the audio first): the
    bot's echo of it is its own words from the first chunk played."""
    gate = SpeechGate()
    heard = HeardWhilePlaying(gate)
    frames = [
        TTSStartedFrame(context_id="reply"),
        announced("Plants make their food."),
        chunk(1000),
        TTSTextFrame("Plants make their food.", text_type="sentence"),
        announced("The leaf catches the energy."),
        chunk(2000),
    ]
    await run_test(Pipeline([gate, heard]), frames_to_send=frames)
    assert heard.text_at[1000] == "Plants make their food."
    assert heard.text_at[2000].endswith("The leaf catches the energy."), heard.text_at
