"""Lazy local models: the local counterparts are built with the session, their weights
are only fetched by `prepare_local` (on a thread of its own) or on first use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class LazyModel:
    """Stands for a model object; fetches it (`loader()`) on the first attribute use."""

    def __init__(self, loader: Callable[[], Any]):
        self._loader = loader
        self._model = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._model is None:
            self._model = self._loader()
        return getattr(self._model, name)


@dataclass
class PendingServer:
    """A local LLM server not started yet: nothing listens at `base_url` until prepared."""

    model_name: str
    base_url: str = "http://127.0.0.1:9/v1"


class LazyModels:
    """A view of `LocalModels` that loads (or touches) nothing when a local service is built."""

    def __init__(self, models: Any, llm_model_name: str):
        self._models = models
        self._llm_model_name = llm_model_name

    @property
    def whisper(self) -> LazyModel:
        return LazyModel(lambda: self._models.whisper)

    @property
    def piper(self) -> LazyModel:
        return LazyModel(lambda: self._models.piper)

    @property
    def llm_server(self) -> PendingServer:
        return PendingServer(model_name=self._llm_model_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models, name)
