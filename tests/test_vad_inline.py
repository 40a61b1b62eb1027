"""The VAD as the pipeline runs it: inline on the event loop, verdicts as stock Pipecat's."""

import asyncio
import itertools

import numpy as np
import pytest
import soundfile as sf
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from bot.config import Settings
from bot.local.models import LocalModels
from bot.local.silero_vad import SharedSileroVADAnalyzer

FRAME = 320  # 20 ms at 16 kHz, as the transports deliver it


def frames_of(path) -> list[bytes]:
    audio, rate = sf.read(path, dtype="int16")
    assert rate == 16000
    silence = np.zeros(rate, np.int16)  # a second of quiet around the speech: stops and starts
    track = np.concatenate([silence, audio, silence, audio[: rate * 3], silence])
    return [track[i : i + FRAME].tobytes() for i in range(0, len(track) - FRAME + 1, FRAME)]


def inline(coro):
    """The coroutine's result, if it finishes without yielding to the event loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    pytest.fail("analyze_audio waited on something (a thread hand-off?) instead of running inline")


class ModelRuns:
    """The shared Silero session, counting the windows it scores."""

    def __init__(self, session):
        self._session = session
        self.runs = 0

    def run(self, outputs, feeds):
        self.runs += 1
        return self._session.run(outputs, feeds)


def test_inline_vad_hears_a_real_recording_as_stock_pipecat_does(shared_audio):
    """...and spares the model the digital silence around it (nothing under -80 dBFS can
    pass the VAD's volume bar): the same verdicts, no model run on it."""
    frames = frames_of(shared_audio / "jfk_16k.wav")
    models = LocalModels(Settings(_env_file=None))
    model = ModelRuns(models.silero_session)
    ours = SharedSileroVADAnalyzer(session=model, params=VADParams())
    stock = SileroVADAnalyzer(params=VADParams())
    for analyzer in (ours, stock):
        analyzer.set_sample_rate(16000)

    async def stock_states():
        return [await stock.analyze_audio(f) for f in frames]

    expected = asyncio.run(stock_states())
    assert [inline(ours.analyze_audio(f)) for f in frames] == expected
    # The clip has speech, pauses and silence: the comparison covered every transition.
    changes = [b for a, b in itertools.pairwise(expected) if a != b]
    assert {VADState.STARTING, VADState.SPEAKING, VADState.STOPPING, VADState.QUIET} <= set(changes)
    assert changes.count(VADState.SPEAKING) >= 2
    # Three seconds of the track are digital silence (before, between and after the speech);
    # the model ran on the rest, and on the first silent windows after speech cut off.
    windows = len(frames) * FRAME // 512
    speech_windows = (len(frames) * FRAME - 3 * 16000) // 512
    assert model.runs <= speech_windows + 10, (model.runs, speech_windows, windows)
