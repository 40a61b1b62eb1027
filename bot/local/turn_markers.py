"""A reply's first token chosen among Pipecat's turn-completion markers.

With `LLM_TURN_COMPLETION` (Pipecat's `FilterIncompleteUserTurnStrategies`) every reply must
open with one marker: complete (answer follows), or one of two incomplete ones (nothing
follows; the user is still talking or thinking). The local 1.5B model, told so by Pipecat's
instructions, does open with one when nothing else is allowed, and reads the turn right on
the phrases those instructions name; left free it often starts with words. So the request
names the markers (`turn_markers`, complete first) and the first token is the likeliest of
them, taken greedily: a verdict, not a sample. After an incomplete marker the reply ends.
"""

from __future__ import annotations

import numpy as np


class TurnMarkerChoice:
    """A llama.cpp logits processor for one generation (llama-cpp-python's protocol:
    called with the token ids so far and the next token's scores, before sampling)."""

    def __init__(self, token_ids: list[int], end_token: int):
        self._complete, *self._incomplete = token_ids
        self._markers = np.array(token_ids)
        self._end = end_token
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
        return cls(ids, llm.token_eos())

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self._prompt_tokens is None:
            self._prompt_tokens = len(input_ids)
        step = len(input_ids) - self._prompt_tokens
        if step == 0:
            chosen = self._markers[np.argmax(scores[self._markers])]
            self._only(scores, chosen)
        elif step == 1 and input_ids[-1] in self._incomplete:
            self._only(scores, self._end)
        return scores

    @staticmethod
    def _only(scores: np.ndarray, token: int) -> None:
        kept = scores[token]
        scores[:] = -np.inf
        scores[token] = kept
