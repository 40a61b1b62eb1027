"""Text helpers for checking what was said."""

import re

import jiwer

_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
            "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten"}


def normalise(text: str) -> str:
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words)


def word_error_rate(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def contains_words(text: str, *words: str) -> bool:
    said = set(normalise(text).split())
    return all(normalise(w) in said for w in words)
