"""The first-byte watchdog (processors/fallback/watchdog.py), fast: stand-in services in a
small pipeline, no model, no peer, no conversation.

A request the service never answers within the budget is a failure: the watchdog says so
(`on_first_byte_timeout`) and, in the LLM's fallback switcher, the turn goes to the local
LLM. A request answered in time stops its clock: no timeout, no switch. Budgets are short;
every wait is for an event, bounded only against a hung test.
"""

from __future__ import annotations

import asyncio
import contextlib

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.workers.runner import WorkerRunner

from processors.fallback import FallbackPolicy, FirstByteWatchdog, LLMFallback, ServiceFallbackFrame
from tests.support.fakes import InstantLLMService, unset_llm_settings
from tests.support.pipeline import Heard
from tests.support.polling import until

WAIT = 5.0  # bounds a hung test only
BUDGET = 0.05  # the first-byte budget of a request nobody answers


@contextlib.asynccontextmanager
async def running(*processors: FrameProcessor):
    worker = PipelineWorker(Pipeline(list(processors)), params=PipelineParams())
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        yield worker
    finally:
        await worker.cancel()
        await asyncio.wait_for(run, WAIT)


# --------------------------------------------------------------------------------------
# The watchdog alone, behind a service that answers one request and not the other
# --------------------------------------------------------------------------------------


class Expect(FrameProcessor):
    """Starts a request's clock as it goes in (the switcher does this): the key is its text."""

    def __init__(self, watchdog: FirstByteWatchdog):
        super().__init__()
        self._watchdog = watchdog

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame) and direction is FrameDirection.DOWNSTREAM:
            self._watchdog.expect(frame.text)
        await self.push_frame(frame, direction)


class AnswersOnly(FrameProcessor):
    """A service that answers the requests named `answered` at once, and the others never."""

    def __init__(self, answered: set[str]):
        super().__init__()
        self._answered = answered

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TextFrame):
            if frame.text in self._answered:
                await self.push_frame(LLMTextFrame(frame.text))
            return
        await self.push_frame(frame, direction)


async def test_only_the_request_with_no_first_byte_in_its_budget_times_out():
    def first_byte(frame: Frame) -> str | None:
        return frame.text if isinstance(frame, LLMTextFrame) else None

    watchdog = FirstByteWatchdog(BUDGET, first_byte)
    timeouts: list[str] = []
    first_bytes: list[tuple[str, bool]] = []

    @watchdog.event_handler("on_first_byte_timeout")
    async def on_timeout(_, key):
        timeouts.append(key)

    @watchdog.event_handler("on_first_byte")
    async def on_first_byte(_, key, answered):
        first_bytes.append((key, answered))

    async with running(Expect(watchdog), AnswersOnly({"answered"}), watchdog) as worker:
        # "answered"'s clock starts first: had its first byte not stopped it, it would run
        # out before (or with) "silent"'s, so waiting for "silent"'s is waiting long enough.
        await worker.queue_frames([TextFrame("answered"), TextFrame("silent")])
        await until(lambda: "silent" in timeouts, WAIT, "the silent request's timeout")
        assert not watchdog.waiting  # a clock that ran out is gone

    assert timeouts == ["silent"]
    assert first_bytes == [("answered", True)]


# --------------------------------------------------------------------------------------
# In the LLM's fallback switcher: a cloud LLM that never answers, and one that answers
# --------------------------------------------------------------------------------------


class SilentLLM(LLMService):
    """A cloud LLM that takes every request and never says a word."""

    def __init__(self):
        super().__init__(settings=unset_llm_settings())
        self.requests = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            self.requests += 1
        else:
            await self.push_frame(frame, direction)


class CountedLLM(InstantLLMService):
    def __init__(self, answer: str):
        super().__init__(answer=answer)
        self.requests = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, LLMContextFrame):
            self.requests += 1
        await super().process_frame(frame, direction)


def llm_fallback(cloud: LLMService, local: LLMService, budget_secs: float) -> LLMFallback:
    # No hold phrase, no retry of the cloud within the test.
    policy = FallbackPolicy(budget_secs=budget_secs, hold_secs=0, retry_secs=600.0, warm=False)
    return LLMFallback(cloud, local, policy)


def question() -> LLMContextFrame:
    context = LLMContext([{"role": "user", "content": "What is the capital of France?"}])
    return LLMContextFrame(context)


def fallbacks(heard: Heard) -> list[ServiceFallbackFrame]:
    return [f for f in heard.frames if isinstance(f, ServiceFallbackFrame)]


async def test_a_cloud_llm_with_no_first_token_in_its_budget_hands_the_turn_to_the_local_one():
    cloud, local = SilentLLM(), CountedLLM("Paris, from the local model.")
    llm, heard = llm_fallback(cloud, local, BUDGET), Heard()
    async with running(llm, heard) as worker:
        await worker.queue_frame(question())
        await until(lambda: heard.texts(), WAIT, "an answer")

    assert cloud.requests == 1 and local.requests == 1
    assert heard.texts() == ["Paris, from the local model."]
    [switch] = fallbacks(heard)
    assert (switch.stage, switch.event, switch.reason) == ("llm", "fallback", "timeout")
    assert switch.redo  # the turn in flight was redone locally
    assert heard.frames.index(switch) < heard.index(LLMTextFrame)[0]
    assert llm.on_local


async def test_a_cloud_llm_that_answers_in_time_keeps_the_turn():
    cloud, local = CountedLLM("Paris, from the cloud."), CountedLLM("Paris, from the local model.")
    # A generous budget: the stand-in answers at once.
    llm, heard = llm_fallback(cloud, local, 2.0), Heard()
    first_bytes: list[tuple[str, bool]] = []

    @llm.watchdog.event_handler("on_first_byte")
    async def on_first_byte(_, key, answered):
        first_bytes.append((key, answered))

    async with running(llm, heard) as worker:
        await worker.queue_frame(question())
        await until(lambda: heard.index(LLMFullResponseEndFrame), WAIT, "the whole answer")
        # Its first token stopped the request's clock: it can never run out.
        assert first_bytes == [("request", True)]
        assert not llm.watchdog.waiting

    assert cloud.requests == 1 and local.requests == 0
    assert heard.texts() == ["Paris, from the cloud."]
    assert not fallbacks(heard)
    assert not llm.on_local
