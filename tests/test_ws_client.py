"""The test client's loudspeaker (`web.ws_client._Speaker`): it plays on the wall clock, as
a sound card does, so the echo in a microphone frame is what played `delay` before that
frame was captured, however late the client sends it."""

import numpy as np

from web.ws_client import _Speaker

RATE = 16000


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ramp(secs: float) -> np.ndarray:
    """Distinct sample values (1, 2, 3, ...), so where each echoed sample came from shows."""
    return np.arange(1, int(secs * RATE) + 1, dtype=np.int16)


def speaker(clock: Clock, delay: float = 0.1) -> _Speaker:
    return _Speaker(0.0, delay, RATE, clock=clock)


def echo(s: _Speaker, captured_at: float, secs: float = 0.02) -> np.ndarray:
    return s.mix(np.zeros(int(secs * RATE), dtype=np.int16), captured_at)


def test_a_burst_of_late_microphone_frames_hears_what_played_when_each_was_captured():
    clock = Clock()
    s = speaker(clock)
    played = ramp(1.0)
    s.receive(played.tobytes(), RATE)  # arrives at 100.0: plays 100.0-101.0
    clock.now = 100.6  # the client fell behind: frames captured from 100.1 go out now
    for k in range(10):
        t = 100.1 + k * 0.02
        start = round((t - 0.1 - 100.0) * RATE)
        assert np.array_equal(echo(s, t), played[start : start + 320]), k


def test_audio_that_arrives_after_the_speaker_ran_dry_plays_from_its_arrival():
    clock = Clock()
    s = speaker(clock, delay=0.0)
    s.receive(ramp(0.2).tobytes(), RATE)  # plays 100.0-100.2
    clock.now = 100.5
    s.receive(ramp(0.2).tobytes(), RATE)  # plays 100.5-100.7, not 100.2-100.4
    assert not echo(s, 100.3).any()
    assert np.array_equal(echo(s, 100.5), ramp(0.02))


def test_audio_that_arrives_while_the_speaker_plays_follows_it():
    clock = Clock()
    s = speaker(clock, delay=0.0)
    s.receive(ramp(0.2).tobytes(), RATE)
    clock.now = 100.1
    s.receive(ramp(0.2).tobytes(), RATE)  # queued behind the first: 100.2-100.4
    assert np.array_equal(echo(s, 100.2), ramp(0.02))


def test_an_interruption_drops_what_has_not_played():
    clock = Clock()
    s = speaker(clock, delay=0.0)
    s.receive(ramp(1.0).tobytes(), RATE)
    clock.now = 100.3
    s.flush()
    assert echo(s, 100.28).any()
    assert not echo(s, 100.3).any()
