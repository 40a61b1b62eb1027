"""Whisper over a window that fits the utterance, not Whisper's fixed 30 seconds.

faster-whisper pads every input to 30 s of audio, so Whisper's encoder reads 1,500
positions for a 2 s question: ~0.4 s of the ~0.6 s a turn's transcript costs here.
CTranslate2 accepts a shorter mel window, and Whisper tiny.en transcribes as well from a
12 s window (measured in bench/RESULTS.md: the encoder takes ~1/5 of the time). Shorter
windows than that make Whisper repeat its own words, so the window never goes below
`window_secs`; a decode that still runs away (repeats, or fills its token budget), or
that is unsure of itself (mean token log-probability under -0.6: noisy or mangled audio,
where the short window does worse), is thrown away and the audio transcribed the stock way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from loguru import logger

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

SAMPLE_RATE = 16000
TAIL_SECS = 1.0  # silence after the speech inside the window, so Whisper sees it end
# Fast speech is ~4 words/s, ~1.3 tokens a word: a budget well above that catches a
# decode that loops without cutting off a real one.
TOKENS_PER_SEC = 6
TOKENS_MIN = 10
MAX_COMPRESSION_RATIO = 2.4  # Whisper's own threshold for "this text repeats itself"
# Below this mean token log-probability the short window is unsure (noisy or mangled
# audio, where it does worse than the 30 s window): the stock window decides. Between it
# and -0.35 the short window heard unfamiliar voices in noise better (bench/RESULTS.md,
# "The short window's unsure bar").
MIN_AVG_LOGPROB = -0.6


@dataclass(frozen=True)
class WindowedSegment:
    """The fields of faster-whisper's `Segment` that our callers read, and whether the
    short window's decode can be trusted (a draft's may not: see `transcribe`)."""

    text: str
    no_speech_prob: float
    avg_logprob: float = 0.0  # mean token log-probability, as faster-whisper's Segment has it
    trusted: bool = True


class Heard(NamedTuple):
    """What a transcription heard: its text, how sure Whisper was of it (the mean token
    log-probability over its words, 0.0 for no words) and whether a draft can be trusted."""

    text: str
    avg_logprob: float = 0.0
    trusted: bool = True


def heard(segments: list[Any], no_speech_threshold: float) -> Heard:
    """The words of `segments` Whisper took for speech, and its confidence in them."""
    spoken = [s for s in segments if s.no_speech_prob < no_speech_threshold and s.text.strip()]
    text = " ".join(s.text.strip() for s in spoken)
    chars = sum(len(s.text) for s in spoken)
    logprob = sum(s.avg_logprob * len(s.text) for s in spoken) / chars if chars else 0.0
    return Heard(text, logprob, all(getattr(s, "trusted", True) for s in segments))


def trailing_repeat_start(tokens: list[int], min_len: int = 3) -> int | None:
    """Where `tokens` starts repeating its own beginning ("How are you? How are"), or None."""
    n = len(tokens)
    for k in range(min_len, n - 1):
        if tokens[k:] == tokens[: n - k]:
            return k
    return None


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WindowedWhisper:
    """A `WhisperModel` view: greedy by default, no cross-turn conditioning, and a
    window fitted to short audio (`window_secs` 0 keeps the stock 30 s window)."""

    def __init__(self, model: WhisperModel, beam_size: int = 1, window_secs: float = 12.0):
        # `model` may be a lazy stand-in (processors/fallback.py): touch it only to transcribe.
        self._model = model
        self._beam_size = beam_size
        self._window_secs = window_secs
        self._prompts: dict[str, list[int]] = {}
        self.windowed_runs = 0  # transcriptions the short window served
        self.fallbacks = 0  # ... and those it handed back to the 30 s window

    @cached_property
    def _tokenizer(self):
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        return Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en"
        )

    def _prompt(self, vocabulary: str) -> list[int]:
        """Whisper's decoder prompt: its start tokens, after `vocabulary` as "previous text"."""
        if vocabulary not in self._prompts:
            if len(self._prompts) > 32:  # a conversation's words change every turn
                self._prompts.clear()
            previous = (
                self._tokenizer.encode(" " + vocabulary.strip()) if vocabulary.strip() else []
            )
            self._prompts[vocabulary] = self._model.get_prompt(
                self._tokenizer, previous, without_timestamps=True
            )
        return self._prompts[vocabulary]

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        draft: bool = False,
        stock: bool = False,
        vocabulary: str = "",
        **kwargs: Any,
    ):
        """Like `WhisperModel.transcribe`: (segments, info); info is None on the short path.

        `draft`: a transcript taken while the user may still be speaking (an eager pass).
        The short window's decode is returned even when unsure (a cut-off "What is the..."
        always is), marked `trusted=False`, and never handed back to the 30 s window: that
        costs ~0.5-1 s of CPU next to the final transcript and the LLM, and most drafts are
        superseded anyway. A runaway draft is an untrusted empty segment. `stock`: the 30 s
        window straight away (a draft that was not trusted became the final transcript).
        `vocabulary` (or `initial_prompt`): words the speaker is likely to use, given to
        Whisper as previous text, e.g. the knowledge base's names.
        """
        vocabulary = vocabulary or kwargs.pop("initial_prompt", None) or ""
        if stock:
            self.fallbacks += 1
        elif self._fits(audio, kwargs):
            segment = self._transcribe_windowed(audio, vocabulary, accept_unsure=draft)
            if segment is not None:
                self.windowed_runs += 1
                return [segment], None
            if draft:
                return [WindowedSegment(text="", no_speech_prob=0.0, trusted=False)], None
            self.fallbacks += 1
        kwargs.setdefault("beam_size", self._beam_size)
        # Each turn is its own utterance: conditioning on earlier text only invites
        # hallucinated repeats in a live conversation.
        kwargs.setdefault("condition_on_previous_text", False)
        if vocabulary.strip():
            kwargs.setdefault("initial_prompt", vocabulary.strip())
        return self._model.transcribe(audio, **kwargs)

    def _fits(self, audio: np.ndarray, kwargs: dict[str, Any]) -> bool:
        if self._window_secs <= 0:
            return False
        if kwargs.get("language") not in (None, "en") or kwargs.get("hotwords"):
            return False
        return len(audio) / SAMPLE_RATE + TAIL_SECS <= self._model.feature_extractor.chunk_length

    def _transcribe_windowed(
        self, audio: np.ndarray, vocabulary: str = "", accept_unsure: bool = False
    ) -> WindowedSegment | None:
        import ctranslate2

        secs = len(audio) / SAMPLE_RATE
        window = min(
            max(self._window_secs, secs + TAIL_SECS), self._model.feature_extractor.chunk_length
        )
        padded = np.zeros(int(window * SAMPLE_RATE), dtype=np.float32)
        padded[: len(audio)] = audio
        features = self._model.feature_extractor(padded, padding=0)
        features = features[:, : features.shape[1] // 2 * 2]  # the encoder's conv has stride 2
        encoded = self._model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])), to_cpu=False
        )
        budget = int(TOKENS_MIN + secs * TOKENS_PER_SEC)
        prompt = self._prompt(vocabulary)
        result = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=self._beam_size,
            # CTranslate2 stops Whisper after max_length // 2 tokens here (measured), the
            # prompt's included: room for one token past the budget, so that "no end of
            # text" shows as len > budget.
            max_length=2 * (budget + 1 + len(prompt)),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
        )[0]
        tokens = result.sequences_ids[0]
        repeat = trailing_repeat_start(tokens)
        if repeat is not None:
            tokens = tokens[:repeat]
        elif len(tokens) > budget:
            logger.debug(
                f"windowed Whisper used its whole token budget ({budget}); 30 s window instead"
            )
            return None
        text = self._tokenizer.decode(tokens).strip()
        # CTranslate2's score is the mean log-probability (length_penalty 1).
        unsure = result.no_speech_prob < 0.5 and result.scores[0] < MIN_AVG_LOGPROB
        if unsure and not accept_unsure:
            logger.debug(
                f"windowed Whisper unsure ({result.scores[0]:.2f}: {text!r}); 30 s window instead"
            )
            return None
        if compression_ratio(text) > MAX_COMPRESSION_RATIO:
            logger.debug(f"windowed Whisper repeated itself ({text!r}); 30 s window instead")
            return None
        return WindowedSegment(
            text=text,
            no_speech_prob=result.no_speech_prob,
            avg_logprob=result.scores[0],
            trusted=not unsure,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
