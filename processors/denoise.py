"""Noise suppression for the user's microphone audio: RNNoise, WebRTC's, or both by turns.

RNNoise runs on 48 kHz audio in 10 ms frames; the pipeline usually carries 16 kHz, so each
session owns its RNNoise state and a pair of streaming resamplers. WebRTC's noise
suppressor (`webrtc-noise-gain`: WebRTC's audio processing called directly, not through
livekit's FFI as the echo canceller's is) works on 16 kHz in 10 ms blocks, at a small part
of the cost (bench/RESULTS.md, "Per-frame CPU cost"); other rates are resampled for it.
Either way the filter state carries across frames and never across sessions.

`auto` uses each where it is better: WebRTC's while the bot is quiet (fewer false starts in
room noise, quiet voices kept, 1/20 of the CPU), RNNoise while the bot's own echo may be in
the microphone (it takes out the echo canceller's residue, which WebRTC's lets through to
the VAD); with headphones, or a browser that cancelled the echo itself, there is none.
WebRTC's suppressor hears every frame, so its noise estimate is current whenever it takes
over again.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pyrnnoise import rnnoise

RNNOISE_RATE = 48000
RNNOISE_FRAME = rnnoise.FRAME_SIZE  # 480 samples = 10 ms at 48 kHz
# Low-latency resampling: soxr's "quick" cubic filter delays by well under 1 ms.
_RESAMPLE_QUALITY = "QQ"
WEBRTC_NS_RATE = 16000
WEBRTC_NS_BLOCK_BYTES = WEBRTC_NS_RATE // 100 * 2  # 10 ms of 16-bit mono
# webrtc-noise-gain's suppression level (1-4): the lightest, ~10 dB off pink noise in the
# pauses; the stronger ones let the adaptive VAD start on more of a café's chatter
# (bench/RESULTS.md, "The VAD's WebRTC suppressor without livekit").
WEBRTC_NS_LEVEL = 1


def _resamplers(rate: int, engine_rate: int, dtype: str):
    """Streaming resamplers to an engine's rate and back (mono)."""
    return (
        soxr.ResampleStream(rate, engine_rate, 1, dtype=dtype, quality=_RESAMPLE_QUALITY),
        soxr.ResampleStream(engine_rate, rate, 1, dtype=dtype, quality=_RESAMPLE_QUALITY),
    )


class _RNNoiseStream:
    """Streaming 16-bit PCM denoiser at any input rate (mono)."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate
        self._state = rnnoise.create()
        self._resample = sample_rate != RNNOISE_RATE
        if self._resample:
            self._up, self._down = _resamplers(sample_rate, RNNOISE_RATE, "float32")
        # 48 kHz samples waiting to fill a 10 ms RNNoise frame (at most one frame's worth).
        self._pending = np.zeros(RNNOISE_FRAME * 2, dtype=np.float32)
        self._pending_len = 0
        self._aligned = False
        self._frame = np.zeros(RNNOISE_FRAME, dtype=np.float32)
        self._frame_ptr = self._frame.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def close(self) -> None:
        if self._state:
            rnnoise.destroy(self._state)
            self._state = None

    def process(self, pcm16: bytes) -> bytes:
        x = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
        if self._resample:
            expected = len(x) * RNNOISE_RATE // self.sample_rate
            x = self._up.resample_chunk(x)
            if not self._aligned:
                # The upsampler holds back a few samples at first; without this the
                # 10 ms RNNoise frames would straddle every chunk and add ~10 ms.
                self._pending_len = max(0, expected - len(x)) % RNNOISE_FRAME
                self._pending[: self._pending_len] = 0.0
                self._aligned = True
        out = np.empty(self._pending_len + len(x), dtype=np.float32)
        n_out = 0
        pos = 0
        while pos < len(x):
            take = min(RNNOISE_FRAME - self._pending_len, len(x) - pos)
            self._pending[self._pending_len : self._pending_len + take] = x[pos : pos + take]
            self._pending_len += take
            pos += take
            if self._pending_len == RNNOISE_FRAME:
                self._frame[:] = self._pending[:RNNOISE_FRAME]
                # RNNoise works on int16-scaled floats, in place.
                rnnoise.lib.rnnoise_process_frame(self._state, self._frame_ptr, self._frame_ptr)
                out[n_out : n_out + RNNOISE_FRAME] = self._frame
                n_out += RNNOISE_FRAME
                self._pending_len = 0
        y = out[:n_out]
        if self._resample:
            y = self._down.resample_chunk(y)
        return np.clip(y, -32768, 32767).astype(np.int16).tobytes()


class _WebRTCNoiseStream:
    """Streaming 16-bit PCM through WebRTC's noise suppressor (mono, 10 ms blocks)."""

    def __init__(self, sample_rate: int):
        from webrtc_noise_gain import AudioProcessor

        self.sample_rate = sample_rate
        self._processor = AudioProcessor(0, WEBRTC_NS_LEVEL)  # 0: no automatic gain
        self._resample = sample_rate != WEBRTC_NS_RATE
        if self._resample:
            self._up, self._down = _resamplers(sample_rate, WEBRTC_NS_RATE, "int16")
        self._pending = b""

    def close(self) -> None:
        self._processor = None

    def process(self, pcm16: bytes) -> bytes:
        if self._resample:
            pcm16 = self._up.resample_chunk(np.frombuffer(pcm16, dtype=np.int16)).tobytes()
        x = self._pending + pcm16 if self._pending else pcm16
        whole = len(x) - len(x) % WEBRTC_NS_BLOCK_BYTES
        out = b"".join(
            self._processor.Process10ms(x[i : i + WEBRTC_NS_BLOCK_BYTES]).audio
            for i in range(0, whole, WEBRTC_NS_BLOCK_BYTES)
        )
        self._pending = x[whole:]
        if self._resample:
            out = self._down.resample_chunk(np.frombuffer(out, dtype=np.int16)).tobytes()
        return out


ENGINES = {"rnnoise": _RNNoiseStream, "webrtc": _WebRTCNoiseStream}
# WebRTC's suppressor while the bot is quiet, RNNoise while its echo may be heard (see above).
AUTO = "auto"


def denoise(
    audio: np.ndarray, sample_rate: int, chunk_secs: float = 0.02, engine: str = "rnnoise"
) -> np.ndarray:
    """A whole int16 recording through the denoiser, in chunks as the pipeline sends them."""
    stream = ENGINES[engine](sample_rate)
    try:
        step = int(sample_rate * chunk_secs)
        pcm = audio.astype(np.int16).tobytes()
        out = b"".join(stream.process(pcm[i : i + 2 * step]) for i in range(0, len(pcm), 2 * step))
    finally:
        stream.close()
    return np.frombuffer(out, dtype=np.int16)


class Denoiser(FrameProcessor):
    """Denoises `InputAudioRawFrame`s in place with `engine` (rnnoise, webrtc, or auto:
    RNNoise while `echo_audible()`, WebRTC's otherwise); every other frame passes untouched.

    Mono audio only: other channel counts pass through (with one warning), as does all
    audio when `enabled` is False.
    """

    def __init__(
        self,
        *,
        engine: str = "rnnoise",
        enabled: bool = True,
        echo_audible: Callable[[], bool] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if engine != AUTO and engine not in ENGINES:
            raise ValueError(f"unknown denoiser {engine!r}: rnnoise, webrtc or {AUTO}")
        if engine == AUTO and echo_audible is None:
            raise ValueError(f"the {AUTO} denoiser needs to know when the bot's echo is heard")
        self._engine = engine
        self._echo_audible = echo_audible
        self._enabled = enabled
        self._streams: dict[str, _RNNoiseStream | _WebRTCNoiseStream] = {}
        self._warned_channels = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and self._enabled and frame.audio:
            self._denoise(frame)
        elif isinstance(frame, (EndFrame, CancelFrame)):
            self._close()
        elif isinstance(frame, StartFrame):
            self._close()
        await self.push_frame(frame, direction)

    def _denoise(self, frame: InputAudioRawFrame) -> None:
        if frame.num_channels != 1:
            if not self._warned_channels:
                logger.warning(f"{self}: {frame.num_channels}-channel audio is not denoised")
                self._warned_channels = True
            return
        if any(s.sample_rate != frame.sample_rate for s in self._streams.values()):
            self._close()
        if self._engine == AUTO:
            quiet = self._stream("webrtc", frame.sample_rate).process(frame.audio)
            if self._echo_audible():
                frame.audio = self._stream("rnnoise", frame.sample_rate).process(frame.audio)
            else:
                frame.audio = quiet
        else:
            frame.audio = self._stream(self._engine, frame.sample_rate).process(frame.audio)
        frame.num_frames = len(frame.audio) // 2

    def _stream(self, engine: str, sample_rate: int):
        if engine not in self._streams:
            self._streams[engine] = ENGINES[engine](sample_rate)
        return self._streams[engine]

    def _close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()

    async def cleanup(self):
        self._close()
        await super().cleanup()
