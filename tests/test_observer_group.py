"""Our observers share one Pipecat observer queue and see what Pipecat would show each."""

from __future__ import annotations

from pipecat.frames.frames import TextFrame
from pipecat.observers.base_observer import BaseObserver, FramePushed, FrameProcessed
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.tests.utils import run_test

from processors.observers.group import ObserverGroup


class Counting(BaseObserver):
    def __init__(self, every_push: bool):
        super().__init__(observe_every_push=every_push)
        self.pushes: list[tuple[str, bool]] = []
        self.processed: list[str] = []
        self.set_up = self.started = False

    async def setup(self, task_manager):
        await super().setup(task_manager)
        self.set_up = True

    async def on_pipeline_started(self):
        self.started = True

    async def on_push_frame(self, data: FramePushed):
        if isinstance(data.frame, TextFrame):
            self.pushes.append((data.frame.text, data.first_push))

    async def on_process_frame(self, data: FrameProcessed):
        if isinstance(data.frame, TextFrame):
            self.processed.append(data.frame.text)


async def test_each_member_sees_its_pushes_and_every_processing():
    every, first, late = (Counting(every_push=True), Counting(every_push=False),
                          Counting(every_push=False))
    group = ObserverGroup(every, first)
    await group.add(late)  # before the pipeline is set up, as run_bot adds SessionControl
    await run_test(
        IdentityFilter(),
        frames_to_send=[TextFrame("a"), TextFrame("b")],
        expected_down_frames=[TextFrame, TextFrame],
        observers=[group],
    )
    # Each frame crosses several hops: one first push, then repeats for `every` only.
    for text in "ab":
        seen = [first_push for t, first_push in every.pushes if t == text]
        assert seen.count(True) == 1 and len(seen) > 1
    assert first.pushes == late.pushes == [("a", True), ("b", True)]
    for member in (every, first, late):
        assert member.set_up and member.started
        assert member.processed.count("a") == member.processed.count("b") >= 1
