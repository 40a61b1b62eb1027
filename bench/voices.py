"""Voices the bot has never heard, for tests and benchmarks: nothing tuned on Piper alone.

A `Voice` speaks text as mono int16 at 16 kHz. Besides the bot's own Piper voice (one voice
among several, never the only one), the voices come from Debian's `espeak-ng` (formant
synthesis: accents, rates, pitches) and `flite` (CMU's diphone/cluster voices: slt, awb, rms),
two synthesizers unlike Piper's neural one. `Makefile` installs both.

`with_pauses` speaks a sentence clause by clause with a chosen silence at each comma (any
voice), the way people pause mid-question; `add_noise` mixes deterministic noise in at an SNR;
`muffled` makes a voice a sound with no words in it (a mumble through a wall, a cough's
murmur: the VAD hears speech, Whisper no words).
Generated audio is cached under `out/voices/` (git-ignored; `BENCH_OUT_DIR`/voices when set:
bench/common.py), keyed by voice and text.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import OUT_ROOT

CACHE_DIR = OUT_ROOT / "voices"
SAMPLE_RATE = 16000


class VoiceUnavailable(RuntimeError):
    """The synthesizer this voice needs is not installed (see the Makefile's APT_PACKAGES)."""


@dataclass(frozen=True)
class Voice:
    """One way of speaking: a synthesizer and its settings."""

    name: str
    engine: str  # "piper" | "espeak" | "flite"
    voice: str = ""  # the engine's own voice name
    rate: int = 0  # espeak words per minute (0: default); flite duration stretch x100
    pitch: int = 0  # espeak pitch 0-99 (0: default)

    @property
    def is_bot_voice(self) -> bool:
        return self.engine == "piper"

    def available(self) -> bool:
        return self.engine == "piper" or shutil.which(_BINARIES[self.engine]) is not None


_BINARIES = {"espeak": "espeak-ng", "flite": "flite"}

PIPER_JOE = Voice("piper-joe", "piper", "en_US-joe-medium")
# Each differs from the others in synthesizer, accent, sex, rate or pitch.
VOICES: dict[str, Voice] = {
    v.name: v
    for v in (
        PIPER_JOE,
        Voice("flite-slt", "flite", "slt"),  # US English, female
        Voice("flite-awb", "flite", "awb"),  # Scottish English, male
        Voice("flite-rms", "flite", "rms"),  # US English, male, low
        Voice("espeak-us-f", "espeak", "en-us+f3", rate=165, pitch=60),
        Voice("espeak-rp-slow", "espeak", "en-gb-x-rp", rate=140, pitch=40),
        Voice("espeak-scot-fast", "espeak", "en-gb-scotland", rate=200, pitch=50),
    )
}
# Voices the bot has never heard, in the order tests take them.
UNFAMILIAR = [name for name, v in VOICES.items() if not v.is_bot_voice]


def get(name: str) -> Voice:
    try:
        return VOICES[name]
    except KeyError:
        raise KeyError(f"unknown voice {name!r}; known: {', '.join(VOICES)}") from None


def synthesize(text: str, voice: Voice | str,
               piper: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
    """`text` spoken by `voice`: int16 mono at 16 kHz, cached on disk.

    `piper(text)` speaks with the bot's Piper voice (e.g. `LocalModels.synthesize`); needed
    only for that voice.
    """
    voice = get(voice) if isinstance(voice, str) else voice
    key = hashlib.sha1(f"{voice}|{text}".encode()).hexdigest()[:16]
    path = CACHE_DIR / voice.name / f"{key}.npy"
    if path.exists():
        return np.load(path)
    if voice.engine == "piper":
        if piper is None:
            raise VoiceUnavailable("the Piper voice needs a `piper` synthesizer "
                                   "(LocalModels.synthesize)")
        audio = np.asarray(piper(text), dtype=np.int16)
    else:
        audio = _external(text, voice)
    audio = _trim_silence(audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{np.random.randint(1 << 30)}.npy")
    np.save(tmp, audio)
    tmp.replace(path)
    return audio


def _external(text: str, voice: Voice) -> np.ndarray:
    import soundfile as sf
    import soxr

    binary = shutil.which(_BINARIES[voice.engine])
    if binary is None:
        raise VoiceUnavailable(f"{_BINARIES[voice.engine]} is not installed (apt-get install it)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine == "espeak":
            cmd = [binary, "-v", voice.voice, "-w", str(wav),
                   *(["-m"] if text.startswith("<speak>") else [])]
            if voice.rate:
                cmd += ["-s", str(voice.rate)]
            if voice.pitch:
                cmd += ["-p", str(voice.pitch)]
            cmd.append(text)
        else:
            cmd = [binary, "-voice", voice.voice, "-t", text, "-o", str(wav)]
            if voice.rate:
                cmd += ["--setf", f"duration_stretch={voice.rate / 100:.2f}"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        audio, rate = sf.read(wav, dtype="int16", always_2d=True)
    audio = audio.mean(axis=1).astype(np.int16)
    if rate != SAMPLE_RATE:
        audio = soxr.resample(audio, rate, SAMPLE_RATE).astype(np.int16)
    return audio


def _trim_silence(audio: np.ndarray, keep_secs: float = 0.05) -> np.ndarray:
    """Cut leading/trailing silence (synthesizers add different amounts) down to `keep_secs`."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 300)
    if len(loud) == 0:
        return audio
    keep = int(keep_secs * SAMPLE_RATE)
    return audio[max(0, loud[0] - keep) : loud[-1] + keep]


def with_pauses(text: str, voice: Voice | str, pause_secs: float, piper=None) -> np.ndarray:
    """`text` spoken clause by clause with `pause_secs` of silence at every comma or dash."""
    clauses = [c.strip() for c in re.split(r"\s*(?:,|—| - )\s*", text) if c.strip()]
    gap = np.zeros(int(pause_secs * SAMPLE_RATE), dtype=np.int16)
    parts: list[np.ndarray] = []
    for i, clause in enumerate(clauses):
        if i:
            parts.append(gap)
        parts.append(synthesize(clause, voice, piper))
    return np.concatenate(parts)


def with_break(before: str, after: str, voice: Voice | str, pause_secs: float) -> np.ndarray:
    """One sentence with a silence inside it, intonation unbroken (espeak-ng's SSML <break>):
    "What is the capital of … France?" sounds unfinished at the break, as people sound."""
    voice = get(voice) if isinstance(voice, str) else voice
    if voice.engine != "espeak":
        raise VoiceUnavailable(f"{voice.name}: only espeak-ng voices take SSML breaks")
    ms = int(pause_secs * 1000)
    return synthesize(f'<speak>{before} <break time="{ms}ms"/> {after}</speak>', voice)
def muffled(audio: np.ndarray, cutoff_hz: float = 400.0) -> np.ndarray:
    """Speech with everything above `cutoff_hz` removed (and made up in level): voice-like
    sound without intelligible words."""
    spectrum = np.fft.rfft(audio.astype(np.float64))
    spectrum[np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE) > cutoff_hz] = 0
    low = np.fft.irfft(spectrum, n=len(audio))
    low *= np.sqrt(np.mean(audio.astype(np.float64) ** 2) / (np.mean(low**2) + 1e-9))
    return np.clip(low, -32768, 32767).astype(np.int16)


def add_noise(audio: np.ndarray, snr_db: float, kind: str = "babble", seed: int = 0) -> np.ndarray:
    """`audio` with noise mixed in at `snr_db` (speech power over noise power), deterministic.

    `kind`: "white", "pink" (1/f, like a fan or traffic), "babble" (several talkers'
    speech-shaped noise) or "chatter" (six synthetic voices really talking over each other,
    the café a VAD finds hardest: it is speech).
    """
    rng = np.random.default_rng(seed)
    n = len(audio)
    if kind == "white":
        noise = rng.standard_normal(n)
    elif kind == "pink":
        noise = _shaped(rng.standard_normal(n), lambda f: 1 / np.sqrt(np.maximum(f, 20.0)))
    elif kind == "chatter":
        noise = _chatter(n, rng)
    elif kind == "babble":
        # Six talkers' worth of speech-band noise, each with a syllable-rate (3-5 Hz) envelope.
        noise = np.zeros(n)
        t = np.arange(n) / SAMPLE_RATE
        for _ in range(6):
            band = _shaped(rng.standard_normal(n),
                           lambda f: ((f > 120) & (f < 4000)) / np.sqrt(np.maximum(f, 120)))
            rate = rng.uniform(3.0, 5.0)
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)) ** 2
            noise += band * envelope
    else:
        raise ValueError(f"unknown noise kind {kind!r}")
    speech = audio.astype(np.float64)
    active = np.abs(speech) > 300  # the speech power counts speech, not the gaps
    speech_power = np.mean(speech[active] ** 2) if active.any() else np.mean(speech**2)
    noise *= np.sqrt(speech_power / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return np.clip(speech + noise, -32768, 32767).astype(np.int16)


CHATTER = [
    "So I told him we would meet at the station at nine, but he never came.",
    "The soup here is really good, you should try it next time.",
    "Did you see the game last night? It went to extra time.",
    "My sister is moving to another city after the summer.",
    "We need to finish the report before the end of the week.",
    "I think the new place around the corner opens on Monday.",
]


def _chatter(n: int, rng: np.random.Generator) -> np.ndarray:
    """Six voices talking at once, each looping its sentences from a random point."""
    out = np.zeros(n)
    for voice, text in zip(UNFAMILIAR[1:] + UNFAMILIAR[:1], CHATTER):
        talk = synthesize(text, voice).astype(np.float64)
        talk = np.concatenate([talk, np.zeros(int(rng.uniform(0.3, 1.0) * SAMPLE_RATE))])
        loop = np.tile(talk, n // len(talk) + 2)
        start = int(rng.integers(0, len(talk)))
        out += loop[start : start + n] / (np.std(talk) + 1e-9)
    return out


def _shaped(white: np.ndarray, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(len(white), 1 / SAMPLE_RATE)
    return np.fft.irfft(spectrum * gain(freqs), n=len(white))
