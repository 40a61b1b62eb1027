"""Offline services for Pipecat's eval harness (`factory:` in the scenarios' user/judge blocks).

- `user_voice`: the user's side spoken by a synthesizer the bot has never heard (espeak-ng or
  flite through `bench/voices.py`; `voice:` names one), never the bot's own Piper voice.
- `bot_speech_transcriber`: the bot's audio transcribed by the shipped Whisper model, the
  harness's own Whisper service pointed at a local folder (nothing is downloaded).
- `keyword_judge`: a deterministic classifier. Each criterion the copied scenarios ask is
  answered by a rule over the bot's reply, written out in `RULES`; a criterion without a
  rule is a clear error, not a guess.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import soxr
from pipecat.classifiers.base_classifier import (
    BaseClassifier,
    ChoiceQuestion,
    ChoiceResult,
    ClassifierError,
    ClassifierQuestion,
    YesNoQuestion,
    YesNoResult,
)
from pipecat.frames.frames import Frame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.services.tts_service import TTSService

from bench import voices

# --- The user's voice -------------------------------------------------------------------


class SynthesizedUserVoice(TTSService):
    """A local TTS for the harness's user: one of `bench.voices` (espeak-ng, flite)."""

    def __init__(self, voice: str, **kwargs):
        super().__init__(**kwargs)
        self._voice = voices.get(voice)
        if self._voice.is_bot_voice:
            raise ValueError("the user's voice must not be the bot's own Piper voice")

    def can_generate_metrics(self) -> bool:
        return False

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        audio = await asyncio.to_thread(voices.synthesize, text, self._voice)
        if self.sample_rate != voices.SAMPLE_RATE:
            audio = soxr.resample(audio, voices.SAMPLE_RATE, self.sample_rate).astype(np.int16)
        yield TTSStartedFrame(context_id=context_id)
        yield TTSAudioRawFrame(audio.tobytes(), self.sample_rate, 1, context_id=context_id)
        yield TTSStoppedFrame(context_id=context_id)


def user_voice(config: dict) -> TTSService:
    return SynthesizedUserVoice(str(config.get("voice") or "flite-slt"))


# --- The bot's speech, transcribed --------------------------------------------------------


def bot_speech_transcriber(config: dict):
    from pipecat.evals.services import whisper_service

    from bot.config import Settings
    from bot.local.models import whisper_model_dir

    settings = Settings(_env_file=None, whisper_model=config.get("model", "base"))
    return whisper_service({**config, "model": str(whisper_model_dir(settings))})


# --- The judge ----------------------------------------------------------------------------


def _has(*words: str) -> Callable[[str], bool]:
    """Any of the words (or phrases) in the reply, as whole words."""
    patterns = [re.compile(rf"\b{re.escape(w)}\b") for w in words]
    return lambda reply: any(p.search(reply) for p in patterns)


def _sounds_like(name: str, ratio: float = 0.7) -> Callable[[str], bool]:
    """The name, or a word the judge's own Whisper may have made of it (Piper's "is Tokyo."
    heard as "is Tokido." on a loaded machine): same first two letters, and close enough.
    For what a reply must say only; what it must not is matched exactly."""
    exact = _has(name)
    return lambda reply: exact(reply) or any(
        w[:2] == name[:2] and difflib.SequenceMatcher(None, w, name).ratio() >= ratio
        for w in reply.split()
    )


def _nothing(reply: str) -> bool:
    return False


@dataclass(frozen=True)
class Rule:
    """A criterion met when the reply says all of `needs` (each: any of its words) and none
    of `forbids`. A missing word may still come (the reply is spoken in pieces): the judge
    says `continue`, and the harness fails the turn when its time is up; a forbidden one
    cannot be unsaid: `no` at once."""

    needs: tuple[Callable[[str], bool], ...]
    forbids: Callable[[str], bool] = _nothing

    def verdict(self, reply: str) -> str:
        if self.forbids(reply):
            return "no"
        return "yes" if all(need(reply) for need in self.needs) else "continue"


def _opens(reply: str) -> bool:
    return reply.rstrip().endswith("?") or _has(
        "hi", "hello", "hey", "welcome", "good morning", "help", "ask", "listening"
    )(reply)


_JAPAN = _has("japan", "japanese", "tokyo", "kyoto")
# Engaging with a plan, in the words a reply to it uses when it names no place.
_ACKNOWLEDGES_PLAN = _has(
    "sounds like", "sounds great", "sounds wonderful", "sounds exciting", "great plan",
    "exciting", "wonderful", "enjoy", "have fun", "lovely", "amazing", "fantastic",
)
_ASKS_TO_GO_ON = _has("go on", "go ahead", "continue", "finish your", "take your time")
_DID_NOT_CATCH = _has(
    "catch", "understand", "repeat", "say that again", "say it again", "didn't hear", "pardon"
)
_OPENING = Rule((_opens,))

# Each criterion of the copied scenarios, word for word, and what a reply must say to meet it.
RULES: dict[str, Rule] = {
    "the bot opens the conversation in some way (a greeting, an introduction, an offer to help, "
    "or a question to get the user started)": _OPENING,
    "the bot opens the conversation in some way (a greeting, an introduction, or a question "
    "inviting the user to respond)": _OPENING,
    "the response says the capital of Germany is Berlin": Rule((_sounds_like("berlin"),)),
    "acknowledges the user's message (the name Alex and/or the trip to Italy)": Rule(
        (_has("alex", "italy"),)
    ),
    "recalls that the user's name is Alex and the destination is Italy": Rule(
        (_has("alex"), _has("italy"))
    ),
    "the response says the capital of Japan is Tokyo, instead of continuing the Paris story": Rule(
        (_sounds_like("tokyo"),), forbids=_has("paris")
    ),
    "the bot says it didn't catch or understand what the user said, asks them to repeat, or "
    "picks the Paris story back up; it does not mention pineapples": Rule(
        (lambda r: _DID_NOT_CATCH(r) or _has("paris")(r),), forbids=_has("pineapple", "pineapples")
    ),
    "the bot checks in on the user, asking whether they are still there or still with the "
    "bot": Rule((_has("still there", "still with me", "are you there", "you still here"),)),
    "the response engages with the user's answer about visiting Japan (acknowledging or "
    "responding to it), rather than asking the user to continue or finish their thought": Rule(
        (lambda r: _JAPAN(r) or _ACKNOWLEDGES_PLAN(r),), forbids=_ASKS_TO_GO_ON
    ),
    "the response engages with the user's trip to Japan": Rule(
        (lambda r: _JAPAN(r) or _ACKNOWLEDGES_PLAN(r),)
    ),
}


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("’", "'")).split())


_RULES = {_normalise(c): rule for c, rule in RULES.items()}


class KeywordJudge(BaseClassifier):
    """Answers the harness's reply questions (`yes`/`no`/`continue`) by `RULES`."""

    async def _ask(
        self,
        state,
        questions: Mapping[str, ClassifierQuestion],
        images: Sequence = (),
    ):
        reply = _normalise(state.get("latest_bot_reply", "") if isinstance(state, dict) else "")
        results = {}
        for name, question in questions.items():
            verdict = self.rule_for(question).verdict(reply)
            if isinstance(question, ChoiceQuestion):
                choice = verdict if verdict in question.options else "no"
                probabilities = {o: float(o == choice) for o in question.options}
                results[name] = ChoiceResult(
                    choice=choice, probabilities=probabilities, confidence=1.0
                )
            elif isinstance(question, YesNoQuestion):
                results[name] = YesNoResult(probability=float(verdict == "yes"))
            else:
                raise ClassifierError(f"the keyword judge answers no {type(question).__name__}")
        return results, None

    @staticmethod
    def rule_for(question: ClassifierQuestion) -> Rule:
        instructions = question.instructions if isinstance(question.instructions, str) else ""
        # The harness writes "<question> Criterion: <the scenario's eval>. <notes>".
        asked = _normalise(instructions.partition("Criterion:")[2])
        for criterion, rule in _RULES.items():
            if asked.startswith(criterion):
                return rule
        raise ClassifierError(f"no keyword rule for the criterion in {instructions!r} (RULES)")


def keyword_judge(config: dict) -> BaseClassifier:
    return KeywordJudge()
