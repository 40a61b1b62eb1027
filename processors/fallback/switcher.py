"""`FallbackSwitcher`: Pipecat's `ServiceSwitcher` over ``[cloud, local]`` that fails over
by itself, and the per-stage hooks its subclasses (stt.py, llm.py, tts.py) fill in.

Built on `ServiceSwitcherStrategyFailover`: the active service is switched by the
strategy, the branches are gated by the switcher's own filters. Each branch also holds
two small taps around its service (and the cloud one a `FirstByteWatchdog`), so the
switcher sees what a member pushes without touching the member.

On a failure (an error of the active cloud service, no first byte within the budget, a
broken stream with work in flight, a connect that timed out) the switcher, under its
lock: makes the local service active, mutes the cloud one (a late answer is never heard,
nor counted), logs and announces the switch (`ServiceFallbackFrame`) and redoes the turn
in flight on the local service. Nothing heard after `hold_secs`: the hold phrase; the
local one failing too: the apology. After a back-off (doubling per failure in a row) the
cloud service is reconnected and the next turn uses it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    ServiceUpdateSettingsFrame,
    StartFrame,
)
from pipecat.pipeline.service_switcher import ServiceSwitcher
from pipecat.processors.filters.function_filter import FunctionFilter
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.fallback.branch import LIFECYCLE, Failover, Muteable, Tap
from processors.fallback.frames import (
    ConnectTimeout,
    ContextFreeError,
    FallbackPolicy,
    ServiceFallbackFrame,
)
from processors.fallback.local import LocalCounterpart, log_task_failure
from processors.fallback.watchdog import FirstByteWatchdog

_DOWN, _UP = FrameDirection.DOWNSTREAM, FrameDirection.UPSTREAM


class FallbackSwitcher(LocalCounterpart, ServiceSwitcher):
    """`ServiceSwitcher` over ``[cloud, local]`` that fails over by itself (module doc)."""

    stage = "?"
    hold = True  # say the hold phrase while the local service is slow (not from the TTS)

    def __init__(self, cloud, local, policy: FallbackPolicy, *, prepare_local=None):
        self._cloud, self._local, self._policy = cloud, local, policy
        self.watchdog = FirstByteWatchdog(policy.budget_secs, self._first_byte)
        super().__init__([cloud, local], Failover)
        self._prepare_local = prepare_local
        self._prepare_task: asyncio.Future | None = None
        self._lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task] = {}
        self._private: set[int] = set()  # frames we injected that must not leave the switcher
        self._failing = False  # the active cloud failed; its output is dropped from now on
        self._failures = 0  # failures in a row (back-off)
        self._retry_due = False  # reconnected: the next turn goes to the cloud
        self._local_answered = True
        self._apologized_at = -1e9
        self._ending = False
        self._bot_speaking = False
        self._bot_starts = 0  # the bot's audio starting, seen going upstream
        self._starts_at_fault = 0
        self.watchdog.add_event_handler("on_first_byte", self._on_first_byte)
        self.watchdog.add_event_handler("on_first_byte_timeout", self._on_first_byte_timeout)

    def _make_pipeline_definitions(self, services, strategy) -> list[Any]:
        """Each branch: gate → tap → service → (watchdog) → tap → gate."""
        return [self._branch(service, strategy) for service in services]

    def _branch(self, service: FrameProcessor, strategy) -> list[FrameProcessor]:
        async def active(_: Frame) -> bool:
            return service is strategy.active_service

        async def output(frame: Frame, direction: FrameDirection) -> bool:
            return await self._member_output(service, frame, direction)

        gate = dict(filter=active, filter_system_frames=True, enable_direct_mode=True)
        middle = [service, self.watchdog] if service is self._cloud else [service]
        return [
            FunctionFilter(direction=_DOWN, **gate),
            Tap(output, _UP),
            *middle,
            Tap(output, _DOWN),
            FunctionFilter(direction=_UP, **gate),
        ]

    # --- public ----------------------------------------------------------------------

    @property
    def cloud(self) -> FrameProcessor:
        return self._cloud

    @property
    def local(self) -> FrameProcessor:
        return self._local

    @property
    def on_local(self) -> bool:
        return self.strategy.active_service is self._local

    # --- frames in -------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, ServiceUpdateSettingsFrame) and frame.service is self:
            # Addressed to the switcher (e.g. new instructions): every member applies it.
            frame.service = None
            frame.reach_inactive_services = True
        if isinstance(frame, StartFrame):
            await super().process_frame(frame, direction)
            if self._policy.warm and self._prepare_local:
                self._start_prepare()
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            self._ending = True
            await self._disarm_all()
            await super().process_frame(frame, direction)
            return
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            self._bot_starts += 1
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        if self._tracks(frame):
            async with self._lock:
                await self._on_input(frame, direction)
                await super().process_frame(frame, direction)
        else:
            await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = _DOWN):
        # The cloud's errors were answered here (a fallback) and counted where they were
        # raised; they go no further.
        if isinstance(frame, ErrorFrame) and frame.processor is self._cloud and not frame.fatal:
            return
        await super().push_frame(frame, direction)

    async def cleanup(self):
        self._ending = True
        await self._disarm_all()
        await super().cleanup()

    # --- frames out of the members ---------------------------------------------------

    async def _member_output(self, service, frame: Frame, direction: FrameDirection) -> bool:
        """Every frame a member pushes passes here; False drops it."""
        if frame.id in self._private:
            self._private.discard(frame.id)
            return False
        if isinstance(frame, ErrorFrame):
            # Only its own errors: another stage's errors pass through it upstream.
            if frame.processor is service:
                await self._on_member_error(service, frame)
            return True
        if isinstance(frame, LIFECYCLE):
            return True
        if self._silenced(service):
            return False
        return await self._on_output(service, frame, direction) is not False

    def _silenced(self, service: FrameProcessor) -> bool:
        # Only the cloud service is ever silenced (once it failed, until it is active
        # again): a late answer of the local one after a switch back is still an answer.
        return service is self._cloud and (self._failing or not self._cloud_active)

    @property
    def _cloud_active(self) -> bool:
        return self.strategy.active_service is self._cloud

    def _mute_cloud(self, muted: bool) -> None:
        if isinstance(self._cloud, Muteable):
            self._cloud.muted = muted

    async def _on_member_error(self, service: FrameProcessor, frame: ErrorFrame) -> None:
        if self._ending or self._silenced(service):
            return
        if service is self._cloud:
            if isinstance(frame.exception, ContextFreeError):
                return  # no request failed for sure: the watchdog judges each one
            reason = "connect" if isinstance(frame.exception, ConnectTimeout) else "error"
            self._fail(reason, frame.error)
        elif not self._local_answered:
            self.create_task(self._local_failed(f"error: {frame.error}"), f"{self}::apology")

    def _fail(self, reason: str, detail: str) -> None:
        """The active cloud failed: mute it at once, switch in a task of its own."""
        self._failing = True
        self._mute_cloud(True)
        self.create_task(self._fall_back(reason, detail), f"{self}::fallback")

    async def _on_first_byte(self, watchdog, key: str, answered: bool) -> None:
        if answered and not self._failing:
            self._cloud_answered()

    async def _on_first_byte_timeout(self, watchdog, key: str) -> None:
        if self._ending or self._failing or not self._cloud_active:
            return
        self._failing = True
        self._mute_cloud(True)
        await self._fall_back("timeout", self._timeout_detail(key))

    # --- the switch --------------------------------------------------------------------

    async def _fall_back(self, reason: str, detail: str = "") -> None:
        """Cloud → local for this stage, redoing the turn in flight on the local service."""
        async with self._lock:
            if self._ending or not self._cloud_active:
                self._failing = False
                return
            await self.watchdog.stop()
            replay = self._take_replay()
            self._failures += 1
            delay = self._policy.backoff(self._failures)
            if not await self.strategy.switch_to(self._local):
                logger.error(f"{self.stage.upper()} fallback impossible: {self._local} cannot work")
                self._failing = False
                self._mute_cloud(False)
                return
            self._failing = False  # inactive now: silenced as such
            self._retry_due = False
            logger.warning(
                f"{self.stage.upper()} fallback: {self._cloud} → {self._local} ({reason}"
                f"{': ' + detail if detail else ''}); "
                f"{'redoing the turn locally' if replay else 'no turn in flight'}; "
                f"cloud retried in {delay:g}s"
            )
            await self.push_frame(
                ServiceFallbackFrame(
                    stage=self.stage,
                    event="fallback",
                    reason=reason,
                    from_service=self._cloud.name,
                    to_service=self._local.name,
                    detail=detail[:200],
                    redo=replay is not None,
                    retracted=self._retracts(replay),
                )
            )
            await self._stop_cloud_work()
            await self._arm("retry", delay, self._retry)
            if replay is None:
                return
            self._local_answered = False
            self._starts_at_fault = self._bot_starts
            if self.hold and self._policy.hold_secs > 0 and self._hold_wanted(replay):
                await self._arm("hold", self._policy.hold_secs, self._hold)
            await self._arm(
                "local", self._policy.local_timeout_secs, self._local_failed, "no answer in time"
            )
            if not await self._local_ready():
                # Not under the lock: the apology may need it (TTS).
                self.create_task(self._local_failed("not available"), f"{self}::apology")
                return
            await self._replay(replay)

    async def _switch_back(self) -> None:
        """Back to the cloud at a turn boundary, once the back-off is over (lock held)."""
        if not self._retry_due or not self.on_local or self._ending:
            return
        self._retry_due = False
        await self._reset_cloud()
        if not self._cloud.is_usable:
            await self._cloud.set_usable(True)
        if not await self.strategy.switch_to(self._cloud):
            return
        self._mute_cloud(False)
        logger.info(
            f"{self.stage.upper()}: trying {self._cloud} again (after {self._failures} failure(s))"
        )
        await self.push_frame(
            ServiceFallbackFrame(
                stage=self.stage,
                event="retry",
                from_service=self._local.name,
                to_service=self._cloud.name,
            )
        )

    def _cloud_answered(self) -> None:
        if self._failures:
            logger.info(f"{self.stage.upper()}: {self._cloud} answered in time again")
        self._failures = 0

    async def _retry(self) -> None:
        """After the back-off: reconnect the cloud service until it connects, then let the
        next turn use it."""
        while not self._ending:
            if await self._revive():
                break
            self._failures += 1
            delay = self._policy.backoff(self._failures)
            logger.info(
                f"{self.stage.upper()}: {self._cloud} still unavailable; next try in {delay:g}s"
            )
            await asyncio.sleep(delay)
        self._retry_due = True
        await self._on_retry_due()

    async def _revive(self) -> bool:
        cloud = self._cloud
        if not cloud.is_usable:
            await cloud.set_usable(True)
        reconnect = getattr(cloud, "reconnect", None)
        if reconnect is None:
            return True  # no connection to renew (HTTP)
        task = asyncio.ensure_future(reconnect())
        task.add_done_callback(log_task_failure)
        try:
            await asyncio.wait_for(asyncio.shield(task), self._policy.reconnect_timeout_secs)
        except TimeoutError:
            pass
        return bool(getattr(cloud, "connected", True))

    async def _inject(self, service: FrameProcessor, frame: Frame, direction=_DOWN):
        """Queue a frame of our own into a member; whatever it makes of it stays inside."""
        self._private.add(frame.id)
        await service.queue_frame(frame, direction)

    # --- timers ------------------------------------------------------------------------

    async def _arm(self, name: str, delay: float, callback: Callable[..., Awaitable], *args):
        await self._disarm(name)

        async def run():
            try:
                await asyncio.sleep(delay)
                await callback(*args)
            finally:
                if self._tasks.get(name) is asyncio.current_task():
                    del self._tasks[name]

        self._tasks[name] = self.create_task(run(), f"{self}::{name}")

    async def _disarm(self, *names: str) -> None:
        for name in names:
            task = self._tasks.get(name)
            if task is not None and task is not asyncio.current_task():
                del self._tasks[name]
                await self.cancel_task(task)

    async def _disarm_all(self) -> None:
        await self._disarm(*list(self._tasks))
        await self.watchdog.stop()

    # --- stage hooks -------------------------------------------------------------------

    def _tracks(self, frame: Frame) -> bool:
        """Whether `frame` coming in matters to the stage (handled under the lock)."""
        return False

    async def _on_input(self, frame: Frame, direction: FrameDirection) -> None:
        """A tracked frame, before it is routed to the active service."""

    async def _on_output(self, service, frame: Frame, direction: FrameDirection) -> bool | None:
        """A frame the active member pushes (before it leaves the switcher); False holds
        it back (the stage pushes it itself later, or never)."""

    def _first_byte(self, frame: Frame) -> str | None:
        """The watchdog key `frame` answers, if it is the cloud's first byte for one."""
        return None

    def _timeout_detail(self, key: str) -> str:
        return f"no first byte within {self._policy.budget_secs:g}s"

    def _take_replay(self) -> Any:
        """What the local service must redo (None: nothing in flight); resets the tracking."""
        return None

    def _retracts(self, replay: Any) -> bool:
        return False

    async def _replay(self, replay: Any) -> None:
        """Hand the turn in flight to the (now active) local service."""

    async def _stop_cloud_work(self) -> None:
        """Cancel what the failed cloud service is still doing."""
        await self._inject(self._cloud, InterruptionFrame())

    async def _reset_cloud(self) -> None:
        """Clear what the cloud service kept from before its failure (switching back)."""

    async def _on_retry_due(self) -> None:
        """The cloud may be used again: LLM and TTS switch at their next request."""
