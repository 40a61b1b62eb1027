"""What words heard over the bot mean: the user's interruption, a backchannel, or the bot's
own echo (the BARGE_IN_* settings). bot/turns/barge_in.py acts on the verdict."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# Hums and murmurs as Whisper spells them ("Hmm", "Mm", "HNN", "Mhm"): not words.
MURMUR = re.compile(r"[hmn]+")


class Meaning(Enum):
    INTERRUPTION = "interruption"
    BACKCHANNEL = "backchannel"
    ECHO = "echo"


def split_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+(?:-[a-z0-9']+)*", text.lower())


def canonical(word: str) -> str:
    """One spelling for the many of a backchannel: "Mm-hmm", "mmhmm", "mhm" → "mhm"."""
    return re.sub(r"(.)\1+", r"\1", word.replace("-", ""))


def _phrases(words: str) -> list[tuple[str, ...]]:
    return [tuple(canonical(w) for w in split_words(p)) for p in words.split(",") if split_words(p)]


@dataclass
class BargeInPolicy:
    """Which words interrupt the bot and which it lets pass (BARGE_IN_* settings)."""

    @classmethod
    def from_settings(cls, settings) -> BargeInPolicy:
        return cls(
            backchannels=settings.barge_in_backchannels,
            interrupt_words=settings.barge_in_interrupt_words,
            min_words=settings.barge_in_min_words,
        )

    backchannels: str  # comma-separated words and phrases
    interrupt_words: str
    min_words: int

    def __post_init__(self):
        self._backchannels = sorted(_phrases(self.backchannels), key=len, reverse=True)
        self._interrupts = _phrases(self.interrupt_words)

    def meaning(self, text: str, bot_text: str = "") -> Meaning | None:
        """What `text`, heard while the bot said `bot_text`, means (None: no words)."""
        words = [canonical(w) for w in split_words(text)]
        if not words:
            return None
        if self.has_interrupt_word(words):
            return Meaning.INTERRUPTION
        if _is_echo(words, [canonical(w) for w in split_words(bot_text)]):
            return Meaning.ECHO
        spoken = [w for w in words if not MURMUR.fullmatch(w)]
        # One word said over and over counts once: Whisper loops on a word it half hears
        # ("And, and, and, and." for "Mm-hmm."); a question repeats no single word throughout.
        distinct = len(set(spoken))
        if distinct < self.min_words or self._only_backchannels(spoken):
            return Meaning.BACKCHANNEL
        return Meaning.INTERRUPTION

    def has_interrupt_word(self, words: list[str]) -> bool:
        return any(_contains(words, phrase) for phrase in self._interrupts)

    def _only_backchannels(self, words: list[str]) -> bool:
        i = 0
        while i < len(words):
            match = next((p for p in self._backchannels if tuple(words[i : i + len(p)]) == p), None)
            if match is None:
                return False
            i += len(match)
        return True


def _contains(words: list[str], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tuple(words[i : i + n]) == phrase for i in range(len(words) - n + 1))


def _is_echo(words: list[str], bot_words: list[str]) -> bool:
    """The words are (nearly all, in order) some of what the bot just said."""
    if len(words) < 2 or not bot_words:
        return False
    # Longest common subsequence, words against the bot's words.
    previous = [0] * (len(bot_words) + 1)
    for w in words:
        current = [0]
        for j, b in enumerate(bot_words):
            current.append(previous[j] + 1 if w == b else max(previous[j + 1], current[j]))
        previous = current
    common = previous[-1]
    # A short echo loses a word to the recogniser as often as a long one ("Plants make
    # this." for "Plants make their"): all but one word of three, three in four or five
    # ("it's back to the end." for "gives back to the air around it").
    return common == len(words) if len(words) < 3 else common >= max(2, 0.6 * len(words))
