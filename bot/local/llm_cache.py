"""llama.cpp that keeps its cache when the oldest turns of a conversation are dropped.

llama-cpp-python reuses the KV cache for the longest common prefix of two prompts, so a
conversation that only grows costs one new turn per request. But once the context budget
(processors/context_budget.py) drops the oldest turns, the prompt differs right after the
system instruction and everything after it was read again: measured here, the LLM's first
token went from ~0.3 s to 15–20 s per turn once a local conversation filled its budget.

`ContextShiftingLlama` finds where the new prompt's continuation sits further on in the
cache, removes the dropped tokens from the KV cache and shifts the kept ones back (what
llama.cpp's own server calls a context shift), so only the new turn is read. As with
llama.cpp's context shift, the kept turns' cache entries were computed while the dropped
turns were still in view; the dropped text itself is gone from the prompt.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import llama_cpp
import numpy as np
from llama_cpp import Llama

PROBE_TOKENS = 16  # how much of the new prompt must match the cache after a gap
USER_TURN = "<|im_start|>user"


@dataclass
class SavedCache:
    """One conversation's KV cache (~12 KB a token for the 0.5B model) and its tokens."""

    data: ctypes.Array
    tokens: np.ndarray

    @property
    def size(self) -> int:
        return len(self.data)


class ContextShiftingLlama(Llama):
    def __init__(self, *args, shift: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.shift = shift  # False: llama-cpp-python's plain prefix cache (bench baseline)
        self.shift_allowed = True  # per request: the cache holds this conversation's prompt
        self.prompt_tokens_evaluated = 0  # of the last request: what a cache miss costs
        self.tokens_shifted = 0  # of the last request: the cache kept across a gap

    def generate(self, tokens: Sequence[int], *args, **kwargs) -> Iterator[int]:
        tokens = list(tokens)
        shift = self.shift and self.shift_allowed and kwargs.get("reset", True)
        self.tokens_shifted = self._close_gap(tokens) if shift else 0
        self._first_eval = True
        yield from super().generate(tokens, *args, **kwargs)

    def eval(self, tokens: Sequence[int]):
        if self._first_eval:  # the prompt's uncached part; later calls are one token each
            self.prompt_tokens_evaluated = len(tokens)
            self._first_eval = False
        super().eval(tokens)

    def save_cache(self) -> SavedCache | None:
        if self.n_tokens == 0:
            return None
        size = llama_cpp.llama_state_seq_get_size(self.ctx, 0)
        data = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self.ctx, data, size, 0) != size:
            return None
        return SavedCache(data, self.input_ids[: self.n_tokens].copy())

    def restore_cache(self, saved: SavedCache) -> bool:
        self._ctx.kv_cache_seq_rm(0, -1, -1)
        self.n_tokens, self._requires_eval = 0, True
        if llama_cpp.llama_state_seq_set_data(self.ctx, saved.data, saved.size, 0) == 0:
            return False
        n = len(saved.tokens)
        self.input_ids[:n] = saved.tokens
        self.n_tokens = n
        return True

    @cached_property
    def _turn_marker(self) -> np.ndarray:
        """The tokens that open a user turn (ChatML's, as the shipped model's template)."""
        return np.asarray(
            self.tokenize(USER_TURN.encode(), add_bos=False, special=True), dtype=np.intc
        )

    def _turn_starts(self, ids: np.ndarray) -> np.ndarray:
        marker = self._turn_marker
        if len(ids) < len(marker):
            return np.array([], dtype=int)
        windows = np.lib.stride_tricks.sliding_window_view(ids, len(marker))
        return np.flatnonzero((windows == marker).all(axis=1))

    def _close_gap(self, tokens: list[int]) -> int:
        """Drop the cached turns the new prompt dropped from its front; returns the tokens kept.

        Only the context budget's cut is shifted over: the new prompt's first user turn is
        one of the cached turns further on, and everything between is whole turns.
        Any other difference (an edited message) is left to the plain prefix match.
        """
        n = self.n_tokens
        cached = self.input_ids[:n]
        new = np.asarray(tokens, dtype=cached.dtype)
        cached_turns, new_turns = self._turn_starts(cached), self._turn_starts(new)
        if len(cached_turns) < 2 or not len(new_turns):
            return 0
        start = int(cached_turns[0])  # the first (oldest) user turn in the cache
        if start != int(new_turns[0]) or not np.array_equal(cached[:start], new[:start]):
            return 0  # a different system prompt or tools: nothing to keep past it
        probe = new[start : start + PROBE_TOKENS]
        if len(probe) < PROBE_TOKENS or np.array_equal(cached[start : start + PROBE_TOKENS], probe):
            return 0  # the first turn is still there: nothing was dropped
        # The new first turn must start one of the cached turns, and match it for a while.
        later = [
            int(t) for t in cached_turns[1:] if np.array_equal(cached[t : t + PROBE_TOKENS], probe)
        ]
        if not later:
            return 0
        resume = later[0]
        gap = resume - start
        if not self._ctx.kv_cache_seq_rm(0, start, resume):
            return 0
        self._ctx.kv_cache_seq_shift(0, resume, n, -gap)
        self.input_ids[start : n - gap] = self.input_ids[resume:n].copy()
        self.n_tokens = n - gap
        self._requires_eval = True
        return n - resume


class ConversationCaches:
    """The KV caches of the conversations not being served, least recently used first.

    The one model serves every local session, one request at a time. Without these, a
    session whose turn follows another's reads its whole history again (the cache holds
    the other's); with them it gets its own cache back (a copy of ~12 KB a token).
    """

    def __init__(self, llm: ContextShiftingLlama, max_bytes: int = 512 * 1024 * 1024):
        self.llm = llm
        self.max_bytes = max_bytes
        self.current: str | None = None  # whose prompt the model's cache holds
        self._saved: OrderedDict[str, SavedCache] = OrderedDict()
        self.restored = 0  # for tests

    def switch_to(self, conversation: str | None) -> None:
        """Before a request: make the cache this conversation's, and say if it may shift."""
        if conversation == self.current:
            self.llm.shift_allowed = conversation is not None
            return
        if self.current is not None and (saved := self.llm.save_cache()) is not None:
            self._saved[self.current] = saved
        own = self._saved.pop(conversation, None) if conversation is not None else None
        self.llm.shift_allowed = own is not None and self.llm.restore_cache(own)
        self.restored += self.llm.shift_allowed
        self.current = conversation
        while self._saved and sum(s.size for s in self._saved.values()) > self.max_bytes:
            self._saved.popitem(last=False)

    @property
    def saved_bytes(self) -> int:
        return sum(s.size for s in self._saved.values())
