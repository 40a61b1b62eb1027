"""Pipecat's Whisper and Piper services over models loaded once per process.

The stock services load their model in `__init__`, i.e. once per session; a voice
agent hosting many sessions must share one copy of the weights instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipecat.services.piper.tts import PiperTTSService
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from piper import PiperVoice


class _FixedBeamWhisper:
    """A `WhisperModel` view whose `transcribe` uses our beam size (greedy is fastest)."""

    def __init__(self, model: WhisperModel, beam_size: int):
        self._model = model
        self._beam_size = beam_size

    def transcribe(self, audio: Any, **kwargs: Any):
        kwargs.setdefault("beam_size", self._beam_size)
        # Each turn is its own utterance: conditioning on earlier text only invites
        # hallucinated repeats in a live conversation.
        kwargs.setdefault("condition_on_previous_text", False)
        return self._model.transcribe(audio, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class SharedWhisperSTTService(WhisperSTTService):
    def __init__(self, *, model: WhisperModel, beam_size: int = 1, **kwargs: Any):
        self._shared_model = _FixedBeamWhisper(model, beam_size)
        super().__init__(
            settings=WhisperSTTService.Settings(model="shared", language=Language.EN),
            device="cpu",
            **kwargs,
        )

    def _load(self):
        self._model = self._shared_model


class SharedPiperTTSService(PiperTTSService):
    def __init__(self, *, voice: PiperVoice, voice_name: str, **kwargs: Any):
        # Skip PiperTTSService.__init__: it would load (or download) a voice per session.
        TTSService.__init__(
            self,
            push_start_frame=True,
            push_stop_frames=True,
            settings=PiperTTSService.Settings(model=None, voice=voice_name, language=None),
            **kwargs,
        )
        self._voice = voice
