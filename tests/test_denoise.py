"""The denoisers (RNNoise, WebRTC's): cleaner speech at 5 dB SNR, STT still understands it,
nothing else touched."""

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame, TextFrame, UserStartedSpeakingFrame
from pipecat.tests.utils import run_test

from processors.denoise import Denoiser
from tests.support.audio import shared_transcripts, transcribe
from tests.text import word_error_rate
from transports.wav import load_wav

RATE = 16000
CHUNK = 320  # 20 ms


def add_noise(clean: np.ndarray, snr_db: float, kind: str, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(len(clean))
    if kind == "pink":  # 1/f spectrum
        spectrum = np.fft.rfft(noise)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        noise = np.fft.irfft(spectrum, len(clean))
    speech = clean.astype(np.float64)
    noise *= np.sqrt(np.mean(speech**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return np.clip(speech + noise, -32768, 32767).astype(np.int16)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    n = min(len(reference), len(estimate))
    ref, est = reference[:n].astype(np.float64), estimate[:n].astype(np.float64)
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2))


def advance(x: np.ndarray, delay: float) -> np.ndarray:
    """`x` moved `delay` samples earlier (fractional, by an FFT phase shift)."""
    n = len(x)
    spectrum = np.fft.rfft(x.astype(np.float64), 2 * n)
    return np.fft.irfft(spectrum * np.exp(2j * np.pi * np.fft.rfftfreq(2 * n) * delay), 2 * n)[:n]


def best_alignment(
    reference: np.ndarray, output: np.ndarray, max_lag: int = 800
) -> tuple[float, float]:
    """(lag in samples, SNR in dB) of the output against the clean reference at the best lag.

    The lag is found to a twentieth of a sample: resampling delays the signal by a
    fraction of a sample, and at high frequencies even half a sample of misalignment
    would be counted as noise.
    """
    lag = max(range(max_lag), key=lambda k: snr_db(reference[: len(reference) - k], output[k:]))
    n = min(len(reference), len(output)) - lag - 2
    return max(
        (snr_db(reference[:n], advance(output, lag + d)[:n]), lag + d)
        for d in np.arange(-1.0, 1.0001, 0.05)
    )[::-1]


async def denoise(
    audio: np.ndarray, enabled: bool = True, extra_frames=(), engine: str = "rnnoise"
) -> tuple[np.ndarray, list]:
    frames = [
        InputAudioRawFrame(audio=audio[i : i + CHUNK].tobytes(), sample_rate=RATE, num_channels=1)
        for i in range(0, len(audio) - CHUNK + 1, CHUNK)
    ]
    frames[len(frames) // 2 : len(frames) // 2] = list(extra_frames)
    down, _ = await run_test(Denoiser(engine=engine, enabled=enabled), frames_to_send=frames)
    out = b"".join(f.audio for f in down if isinstance(f, InputAudioRawFrame))
    return (np.frombuffer(out, dtype=np.int16),
            [f for f in down if not isinstance(f, InputAudioRawFrame)])


def speech_samples(speech, shared: bool):
    samples = [("synthesized",
                speech("The quick brown fox jumps over the lazy dog near the river bank."),
                "the quick brown fox jumps over the lazy dog near the river bank")]
    if shared:
        from tests.support.audio import SHARED_AUDIO

        samples += [(name, load_wav(SHARED_AUDIO / name, RATE), text)
                    for name, text in shared_transcripts()]
    return samples


@pytest.mark.parametrize("kind", ["white", "pink"])
async def test_denoise_improves_snr_by_5db_and_keeps_speech_intelligible(
    speech, settings, models, kind
):
    from tests.support.audio import SHARED_AUDIO

    samples = speech_samples(speech, shared=(SHARED_AUDIO / "transcripts.tsv").exists())
    report, clean_energy, noise_before, noise_after, errors, words = [], 0.0, 0.0, 0.0, 0.0, 0
    noisy_errors = 0.0
    for name, clean, text in samples:
        noisy = add_noise(clean, 5.0, kind)
        out, _ = await denoise(noisy)
        lag, after = best_alignment(clean, out)
        before = snr_db(clean, noisy)
        energy = float(np.sum(clean.astype(np.float64) ** 2))
        clean_energy += energy
        noise_before += energy / 10 ** (before / 10)
        noise_after += energy / 10 ** (after / 10)
        wer_noisy = word_error_rate(text, await transcribe(settings, models, noisy))
        wer_clean = word_error_rate(text, await transcribe(settings, models, out))
        n = len(text.split())
        errors, words, noisy_errors = (errors + wer_clean * n, words + n,
                                       noisy_errors + wer_noisy * n)
        report.append(f"{name}: SNR {before:.1f} → {after:.1f} dB, lag {lag / RATE * 1000:.1f} ms, "
                      f"WER noisy {wer_noisy:.0%} → denoised {wer_clean:.0%}")
        # RNNoise's own look-ahead is 20 ms; the processor adds at most 1 ms to it.
        assert lag <= 0.021 * RATE, "\n".join(report)
        assert after - before >= 4.0, "\n".join(report)
    overall_before = 10 * np.log10(clean_energy / noise_before)
    overall_after = 10 * np.log10(clean_energy / noise_after)
    report.append(f"overall: {overall_before:.1f} → {overall_after:.1f} dB, "
                  f"WER noisy {noisy_errors / words:.0%} → denoised {errors / words:.0%}")
    assert overall_after - overall_before >= 5.0, "\n".join(report)
    # Intelligibility over all the samples, not per sample: Piper samples its voice afresh
    # on every call, and one synthesized sentence at 5 dB swings by 2-4 words either way.
    assert errors / words <= noisy_errors / words + 0.15, "\n".join(report)
    assert errors / words <= 0.30, "\n".join(report)


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-9)


# (noise taken out of the speaker's pauses, at least; speech lost, at most), in dB; and
# how late the output is (RNNoise's look-ahead; WebRTC's suppressor has none to speak of).
# WebRTC's runs at its lightest level (~10 dB here), where the VAD starts least on chatter.
ENGINE_FLOORS = {"rnnoise": (20.0, 2.0, 960 // 3), "webrtc": (8.0, 2.5, 0)}


@pytest.mark.parametrize("engine", ["rnnoise", "webrtc"])
async def test_noise_in_the_pauses_goes_and_the_speech_stays(speech, engine):
    """What the VAD and smart-turn get from a denoiser, for both engines (pink noise, 5 dB)."""
    from tests.support.audio import SHARED_AUDIO

    pause_floor, speech_ceiling, lag = ENGINE_FLOORS[engine]
    report = []
    for name, clean, _ in speech_samples(
            speech, shared=(SHARED_AUDIO / "transcripts.tsv").exists()):
        pad = np.zeros(RATE, dtype=np.int16)
        clean = np.concatenate([pad, clean, pad])
        noisy = add_noise(clean, 5.0, "pink")
        out, _ = await denoise(noisy, engine=engine)
        n = len(out) - lag
        levels = np.array([level_db(clean[i : i + CHUNK]) for i in range(0, n - CHUNK + 1, CHUNK)])
        pauses, loud = levels < levels.max() - 50, levels > levels.max() - 20

        def frames(x, mask):
            return np.concatenate([x[i * CHUNK : (i + 1) * CHUNK] for i in np.flatnonzero(mask)])

        cleaned = out[lag:]
        pause = level_db(frames(noisy, pauses)) - level_db(frames(cleaned, pauses))
        kept = level_db(frames(noisy, loud)) - level_db(frames(cleaned, loud))
        report.append(f"{name}: pauses -{pause:.1f} dB, speech -{kept:.1f} dB")
        assert pause >= pause_floor and kept <= speech_ceiling, "\n".join(report)


async def test_other_frames_pass_untouched_and_audio_keeps_its_length(speech):
    clean = speech("Hello there.")
    marker_text, marker_turn = TextFrame("marker"), UserStartedSpeakingFrame()
    out, others = await denoise(clean, extra_frames=[marker_text, marker_turn])
    # (Pipecat delivers system frames ahead of data frames, so only membership is checked.)
    assert (len(others) == 2 and any(f is marker_text for f in others)
            and any(f is marker_turn for f in others))
    assert marker_text.text == "marker"
    assert abs(len(out) - (len(clean) // CHUNK) * CHUNK) <= CHUNK // 4


async def test_disabled_denoiser_passes_audio_through_unchanged(speech):
    noisy = add_noise(speech("Hello there."), 5.0, "white")
    out, _ = await denoise(noisy, enabled=False)
    assert np.array_equal(out, noisy[: len(out)])
    assert len(out) == (len(noisy) // CHUNK) * CHUNK


async def test_auto_denoises_with_rnnoise_while_the_bot_may_be_heard_and_webrtc_otherwise(speech):
    """`auto`: RNNoise on the frames the bot may be heard in, WebRTC's suppressor on the
    rest, which also hears every frame (its noise estimate stays current)."""
    from processors.denoise import _RNNoiseStream, _WebRTCNoiseStream

    noisy = add_noise(
        np.concatenate([speech("Tell me about the weather in Paris.")] * 2), 5.0, "pink")
    chunks = [noisy[i : i + CHUNK].tobytes() for i in range(0, len(noisy) - CHUNK + 1, CHUNK)]
    # The bot speaks for half a second, then is quiet for half a second, and so on.
    audible = [(i // 25) % 2 == 1 for i in range(len(chunks))]
    asked = iter(audible)
    frames = [InputAudioRawFrame(audio=c, sample_rate=RATE, num_channels=1) for c in chunks]
    down, _ = await run_test(
        Denoiser(engine="auto", echo_audible=lambda: next(asked)), frames_to_send=frames
    )
    out = [f.audio for f in down if isinstance(f, InputAudioRawFrame)]

    rnnoise, webrtc = _RNNoiseStream(RATE), _WebRTCNoiseStream(RATE)
    quiet = [webrtc.process(c) for c in chunks]
    over_bot = iter([rnnoise.process(c) for c, bot in zip(chunks, audible) if bot])
    rnnoise.close()
    expected = [next(over_bot) if bot else q for q, bot in zip(quiet, audible)]
    assert sum(audible) > 50 and len(chunks) - sum(audible) > 50
    assert expected != quiet
    assert out == expected


@pytest.mark.parametrize("engine", ["rnnoise", "webrtc"])
async def test_sample_rate_change_mid_stream_is_handled(engine):
    tone = (np.sin(np.arange(48000 * 2) * 2 * np.pi * 220 / 48000) * 8000).astype(np.int16)
    frames = [InputAudioRawFrame(audio=tone[i : i + 960].tobytes(), sample_rate=48000,
                                 num_channels=1)
              for i in range(0, 48000, 960)]
    frames += [InputAudioRawFrame(audio=b"\x00\x00" * CHUNK, sample_rate=RATE, num_channels=1)
               for _ in range(20)]
    down, _ = await run_test(Denoiser(engine=engine), frames_to_send=frames)
    audio = [f for f in down if isinstance(f, InputAudioRawFrame)]
    assert {f.sample_rate for f in audio} == {48000, RATE}
    assert sum(len(f.audio) for f in audio if f.sample_rate == RATE) > 0
