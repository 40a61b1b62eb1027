"""Smart-turn judged at the first pause: the same verdicts as at the VAD stop, sooner."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams

from bot.local_services import SharedSmartTurnAnalyzer
from bot.speech_pause import PauseDetector
from tests.conftest import shared_transcripts

FRAME = 320  # 20 ms at 16 kHz
VAD_STOP_FRAMES = 15  # the VAD's stop comes ~300 ms after the last word (stop_secs + its tail)


def frames(audio: np.ndarray) -> list[bytes]:
    audio = np.concatenate([audio, np.zeros(-len(audio) % FRAME, dtype=np.int16)])
    return [audio[i : i + FRAME].tobytes() for i in range(0, len(audio), FRAME)]


async def judge(models, audio: np.ndarray, speculate: bool) -> tuple[EndOfTurnState, SharedSmartTurnAnalyzer]:
    """Feed an utterance as the turn strategy does, up to the VAD stop, and ask for the verdict."""
    analyzer = SharedSmartTurnAnalyzer(
        session=models.smart_turn_session, speculate=speculate, params=SmartTurnParams(stop_secs=2.0)
    )
    analyzer.set_sample_rate(16000)
    silence = np.zeros(FRAME * VAD_STOP_FRAMES, dtype=np.int16)
    for pcm in frames(np.concatenate([audio, silence])):
        analyzer.append_audio(pcm, is_speech=True)  # the VAD says "speaking" until its stop
    state, _ = await analyzer.analyze_end_of_turn()
    await analyzer.cleanup()
    return state, analyzer


def test_a_pause_is_five_quiet_frames_after_speech():
    detector = PauseDetector()
    loud, quiet = np.full(FRAME, 8000, np.int16).tobytes(), np.zeros(FRAME, np.int16).tobytes()
    assert [detector.update(f) for f in [loud] + [quiet] * 6] == [False, False, False, False, False, True, False]
    assert detector.quiet
    detector.update(loud)
    assert not detector.quiet


@pytest.mark.parametrize(
    "text", ["What is the capital of France?", "Explain how a rainbow forms.", "My name is, um, and I",
             "Can you tell me about"],
)
async def test_the_pause_verdict_ends_a_finished_turn_and_never_holds_one_stock_would_end(models, speech, text):
    stock, _ = await judge(models, speech(text), speculate=False)
    early, analyzer = await judge(models, speech(text), speculate=True)
    assert analyzer.speculations_started >= 1  # at the end, and at any pause inside the words
    if analyzer.speculations_used:
        assert early == EndOfTurnState.COMPLETE  # the pause run heard a finished turn
    else:
        assert early == stock  # judged again on the whole silence: the stock verdict
    if stock == EndOfTurnState.COMPLETE:
        assert early == EndOfTurnState.COMPLETE


async def test_finished_questions_are_mostly_answered_from_the_pause_run(models, speech):
    texts = ["What is the capital of France?", "Explain how a rainbow forms.", "Who wrote Romeo and Juliet?",
             "What is the boiling point of water?", "Which planet is closest to the sun?"]
    used = 0
    for text in texts:
        _, analyzer = await judge(models, speech(text), speculate=True)
        used += analyzer.speculations_used
    assert used >= 3, f"the pause run ended only {used} of {len(texts)} finished questions"


async def test_speech_after_the_pause_discards_the_early_verdict(models, speech):
    words = speech("What is the capital of France?")
    gap = np.zeros(FRAME * 8, dtype=np.int16)  # 160 ms: a pause, then more words
    _, words_only = await judge(models, words, speculate=True)
    _, analyzer = await judge(models, np.concatenate([words, gap, speech("And of Spain?")]), speculate=True)
    # The first question's pauses, the gap and the second question's end each start a run;
    # only the last can end the turn (the gap's was dropped when the words came back).
    assert analyzer.speculations_started >= words_only.speculations_started + 1
    assert analyzer.speculations_used <= 1


async def test_no_pause_no_speculation(models, speech):
    """Noise under the speech that never falls 26 dB below it: Pipecat's own path."""
    words = speech("What is the capital of France?").astype(np.int32)
    rng = np.random.default_rng(0)
    tail = np.zeros(FRAME * VAD_STOP_FRAMES, dtype=np.int32)
    audio = np.concatenate([words, tail])
    audio = np.clip(audio + rng.normal(0, 0.2 * np.abs(words).max(), len(audio)), -32768, 32767).astype(np.int16)
    analyzer = SharedSmartTurnAnalyzer(
        session=models.smart_turn_session, speculate=True, params=SmartTurnParams(stop_secs=2.0)
    )
    analyzer.set_sample_rate(16000)
    for pcm in frames(audio):
        analyzer.append_audio(pcm, is_speech=True)
    await analyzer.analyze_end_of_turn()
    await analyzer.cleanup()
    assert analyzer.speculations_started == 0 and analyzer.speculations_used == 0


async def test_real_recordings_judged_finished_at_the_pause_stay_finished(models, shared_audio):
    for name, _ in shared_transcripts():
        with wave.open(str(shared_audio / name)) as w:
            assert w.getframerate() == 16000 and w.getnchannels() == 1
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        early, analyzer = await judge(models, audio, speculate=True)
        assert analyzer.speculations_started >= 1, name
        if analyzer.speculations_used:
            assert early == EndOfTurnState.COMPLETE, name
