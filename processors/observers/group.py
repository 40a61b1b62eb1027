"""Several observers of one session behind a single Pipecat observer.

Pipecat hands every frame event (each push, each processing by each processor) to each
observer through its own queue and task: one put and one task wake-up per observer,
for every 20 ms audio frame at every hop. Our observers are cheap and never block, so
they share one queue here and are called in turn; each still sees exactly what Pipecat
would show it (a repeated push only if it observes every push).
"""

from __future__ import annotations

from pipecat.observers.base_observer import (
    BaseObserver,
    FrameProcessed,
    FramePushed,
    ProcessorSetUp,
)
from pipecat.utils.asyncio.task_manager import BaseTaskManager


class ObserverGroup(BaseObserver):
    """Calls each member observer in the order they were added."""

    def __init__(self, *observers: BaseObserver):
        super().__init__(observe_every_push=True)
        self._members: list[BaseObserver] = []
        self._tasks: BaseTaskManager | None = None
        for observer in observers:
            self._members.append(observer)

    async def add(self, observer: BaseObserver) -> None:
        """Add a member; once the pipeline is set up, it is set up at once."""
        self._members.append(observer)
        if self._tasks is not None:
            await observer.setup(self._tasks)

    async def setup(self, task_manager: BaseTaskManager):
        await super().setup(task_manager)
        self._tasks = task_manager
        for observer in self._members:
            await observer.setup(task_manager)

    async def cleanup(self):
        for observer in self._members:
            await observer.cleanup()
        await super().cleanup()

    async def on_push_frame(self, data: FramePushed):
        for observer in self._members:
            if data.first_push or observer.observe_every_push:
                await observer.on_push_frame(data)

    async def on_process_frame(self, data: FrameProcessed):
        for observer in self._members:
            await observer.on_process_frame(data)

    async def on_processor_setup(self, data: ProcessorSetUp):
        for observer in self._members:
            await observer.on_processor_setup(data)

    async def on_pipeline_started(self):
        for observer in self._members:
            await observer.on_pipeline_started()
