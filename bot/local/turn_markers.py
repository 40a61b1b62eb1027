"""A reply's first token chosen among Pipecat's turn-completion markers.

With `LLM_TURN_COMPLETION` (Pipecat's `FilterIncompleteUserTurnStrategies`) every reply must
open with one marker: complete (answer follows), or one of two incomplete ones (nothing
follows; the user is still talking or thinking). The local 1.5B model, told so by Pipecat's
instructions, does open with one when nothing else is allowed, and reads the turn right on
the phrases those instructions name; left free it often starts with words. So the request
names the markers (`turn_markers`, complete first) and the first token is the likeliest of
them, taken greedily: a verdict, not a sample. After an incomplete marker the reply ends;
after the complete one it may not end at once (Pipecat's instructions say "Never write ● on
its own").

A reply interrupted before its first words were heard stays in Pipecat's context as a bare ●;
given one, the model answered the next question with a bare ● too (heard: nothing), or with
"I understand.". Such a turn said nothing, so it is left out of the prompt (`unspoken_left_out`).
"""

from __future__ import annotations

from functools import lru_cache

import llama_cpp
import numpy as np

from bot.local.chat_format import text_of


class TurnMarkerChoice:
    """A llama.cpp logits processor for one generation (llama-cpp-python's protocol:
    called with the token ids so far and the next token's scores, before sampling)."""

    def __init__(self, token_ids: list[int], end_tokens: list[int]):
        """`end_tokens`: every token that ends a generation, the end-of-sequence one first."""
        self._incomplete = token_ids[1:]  # the first is the complete marker
        self._markers = np.array(token_ids)
        self._end, self._ends = end_tokens[0], np.array(end_tokens)
        self._prompt_tokens: int | None = None

    @classmethod
    def for_model(cls, llm, markers: list[str]) -> TurnMarkerChoice:
        """Raises ValueError unless there are markers and each is a single token."""
        if not isinstance(markers, list) or not markers or not all(
            isinstance(m, str) and m for m in markers
        ):
            raise ValueError("turn_markers must be a list of marker strings, complete first")
        ids = []
        for marker in markers:
            tokens = llm.tokenize(marker.encode(), add_bos=False, special=False)
            if len(tokens) != 1:
                raise ValueError(f"turn marker {marker!r} is {len(tokens)} tokens, not one")
            ids.append(tokens[0])
        return cls(ids, _end_tokens(llm))

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self._prompt_tokens is None:
            self._prompt_tokens = len(input_ids)
        step = len(input_ids) - self._prompt_tokens
        if step == 0:
            chosen = self._markers[np.argmax(scores[self._markers])]
            self._only(scores, chosen)
        elif step == 1 and input_ids[-1] in self._incomplete:
            self._only(scores, self._end)
        elif step == 1:
            scores[self._ends] = -np.inf
        return scores

    @staticmethod
    def _only(scores: np.ndarray, token: int) -> None:
        kept = scores[token]
        scores[:] = -np.inf
        scores[token] = kept


def unspoken_left_out(messages: list[dict], complete_marker: str) -> list[dict]:
    """The messages without the assistant turns that are only the complete marker."""

    def unspoken(m: dict) -> bool:
        return m.get("role") == "assistant" and text_of(m.get("content")).strip() == complete_marker

    return [m for m in messages if not unspoken(m)]


@lru_cache(maxsize=4)
def _end_tokens(llm) -> list[int]:
    """The model's end-of-generation tokens, end-of-sequence first (~60 ms, once a model)."""
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ends = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    return [llm.token_eos(), *(t for t in ends if t != llm.token_eos())]
