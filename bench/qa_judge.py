"""Judging spoken-QA answers without an LLM: the question set and a deterministic judge.

The question set is `bench/spoken_qa.yaml` (its header explains the fields). An answer is
right when it holds one of the item's accepted patterns (and, for open requests, is not a
refusal and has enough words); a knowledge-base leak is a fact only the knowledge base holds
(KB_MARKERS) in the answer to a question that is not about it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

QUESTIONS_FILE = Path(__file__).with_name("spoken_qa.yaml")
KB_CATEGORIES = {"kb"}
# Facts only bot/knowledge/ holds: one of these in a non-kb answer came from it.
KB_MARKERS = re.compile(
    r"brightline|lantern club|quintela|rua das flores|multibanco|travel pass|0800|4040|"
    r"555 ?0199|clear lines, bright days|spark plan|beam plan|flare plan",
    re.IGNORECASE,
)
REFUSAL = re.compile(
    r"\b(i'?m sorry,? but i (can'?t|cannot)|i (can'?t|cannot|won'?t) (assist|help|provide|do) "
    r"(with )?th(at|is)|as an ai\b|i'?m (not able|unable) to (help|assist|provide))",
    re.IGNORECASE,
)

# The agent's question back when it did not make the words out (bot/turns/turn_taking.py).
ASKED_AGAIN = re.compile(r"\bdidn'?t catch that\b", re.IGNORECASE)


@dataclass(frozen=True)
class Item:
    id: str
    category: str
    q: str
    accept: tuple[str, ...]
    min_words: int = 0
    context: str = ""

    @property
    def utterances(self) -> list[str]:
        """What the user says, in order: the follow-up's lead-in first."""
        return [self.context, self.q] if self.context else [self.q]


@dataclass(frozen=True)
class Verdict:
    right: bool
    refusal: bool
    leak: bool
    asked_again: bool = False  # "Sorry, I didn't catch that": neither right nor a wrong answer


def load_items(path: Path = QUESTIONS_FILE) -> list[Item]:
    items = []
    for raw in yaml.safe_load(path.read_text()):
        items.append(
            Item(
                id=raw["id"],
                category=raw["category"],
                q=raw["q"],
                accept=tuple(raw["a"]),
                min_words=int(raw.get("min_words", 0)),
                context=raw.get("context", ""),
            )
        )
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate ids")
    return items


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text)


def judge(item: Item, answer: str) -> Verdict:
    refusal = bool(REFUSAL.search(answer))
    relevant = any(re.search(rf"\b(?:{p})\b", answer, re.IGNORECASE) for p in item.accept)
    long_enough = len(words(answer)) >= item.min_words
    leak = item.category not in KB_CATEGORIES and bool(KB_MARKERS.search(answer))
    return Verdict(right=relevant and long_enough and not refusal and not leak, refusal=refusal,
                   leak=leak, asked_again=bool(ASKED_AGAIN.search(answer)))
