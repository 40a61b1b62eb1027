"""Provider fallback: when a cloud stage fails, its local counterpart answers the turn.

`bot/providers.py` wraps each cloud service (with FALLBACK_ENABLED) in one of the
switchers below, a Pipecat `ServiceSwitcher` over ``[cloud, local]``:

    STTFallback  Deepgram → Whisper     LLMFallback  Groq → llama.cpp     TTSFallback  Cartesia → Piper

What counts as a failure of the active cloud service:

- any `ErrorFrame` it pushes (usable or not: a 500, a refused handshake, a dropped or
  garbled stream, Cartesia's "context completed with no audio"…);
- no first byte within the stage's budget (Pipecat has no such watchdog: a Deepgram
  that hears but never answers, a Groq that hangs, a Cartesia that stays silent are
  otherwise never noticed): STT from the VAD stop to a final transcript, LLM from the
  context to the first token (or tool call), TTS from the text sent to the first audio;
- a dropped connection while the TTS has text in flight (Cartesia reconnects silently
  and loses the rest of the sentence);
- a cloud service still connecting when its setup budget runs out (a refused or
  unanswered handshake would otherwise hold the whole pipeline's start).

On a failure the switcher, in one step under its lock: makes the local service active,
silences the cloud one (whatever it pushes from then on is dropped, so a late answer can
never be heard: the hung request is also cancelled with an interruption of its own),
logs the switch, announces it with a `ServiceFallbackFrame` (counted by the observers:
Prometheus, the turn record) and redoes the turn in flight on the local service:

- STT: a rolling buffer holds the current utterance's audio from the VAD start (with a
  second of pre-roll); it is replayed, between VAD start/stop frames of its own, into
  Whisper, which is segmented and transcribes it as if it had heard it live;
- LLM: the last context is sent again, to the local LLM; text the cloud already said of
  a broken answer is withdrawn first (an interruption downstream clears the TTS);
- TTS: the text sent to the cloud whose audio did not complete (the current answer,
  pending `TTSSpeakFrame`s) is spoken again by Piper.

If the local service has not answered within `hold_secs`, the bot says the hold
phrase ("Sorry, one moment.") so the caller never waits in silence; if it fails too
(an error, or nothing within `local_timeout_secs`), it says the apology.

Back-off: `retry_secs` after a switch (doubling on each failure in a row, up to
`retry_max_secs`) the cloud service is made usable again and reconnected; the next turn
uses it (STT: the next moment the user is not speaking). If it fails again the turn
falls back again and the wait doubles; a turn it answers in budget resets the count.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallsStartedFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    ServiceUpdateSettingsFrame,
    StartFrame,
    SystemFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.llm_switcher import LLMSwitcher
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategyManual
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

_LIFECYCLE = (StartFrame, EndFrame, CancelFrame)
_DOWN = FrameDirection.DOWNSTREAM


@dataclass
class FallbackPolicy:
    """The knobs of one stage's fallback (from FALLBACK_* settings)."""

    budget_secs: float  # first byte: STT from VAD stop, LLM from the context, TTS from the text
    retry_secs: float = 30.0
    retry_max_secs: float = 300.0
    hold_secs: float = 1.0  # 0: never say the hold phrase
    hold_phrase: str = "Sorry, one moment."
    apology: str = "Sorry, I'm having trouble answering right now. Please try again in a moment."
    local_timeout_secs: float = 10.0
    warm: bool = True  # prepare the local counterpart when the session starts, not at the first fault
    reconnect_timeout_secs: float = 5.0

    def backoff(self, failures: int) -> float:
        """Seconds before the cloud is retried after `failures` failures in a row."""
        return min(self.retry_secs * 2 ** max(failures - 1, 0), max(self.retry_max_secs, self.retry_secs))


@dataclass
class ServiceFallbackFrame(SystemFrame):
    """A stage changed provider, or gave up.

    `event`: "fallback" (cloud → local, with the `reason`: error, timeout, disconnect,
    connect), "retry" (back to the cloud after the back-off) or "apology" (the local
    counterpart failed too). `retracted`: text the failed service had already produced
    for the answer was withdrawn (the local one answers from scratch).
    """

    stage: str = ""
    event: str = "fallback"
    reason: str = ""
    from_service: str = ""
    to_service: str = ""
    detail: str = ""
    redo: bool = False  # a turn was in flight: the local service redoes it
    retracted: bool = False


# --------------------------------------------------------------------------------------
# Lazy local models: the local services are built with the session, their weights are
# only fetched by `prepare_local` (a worker thread) or on first use.
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# The switcher
# --------------------------------------------------------------------------------------


class _Strategy(ServiceSwitcherStrategyManual):
    async def switch_to(self, service: FrameProcessor) -> bool:
        return await self._set_active_if_available(service) is not None


class FallbackSwitcher(ServiceSwitcher):
    """`ServiceSwitcher` over ``[cloud, local]`` that fails over by itself (see module doc)."""

    stage = "?"
    hold = True  # say the hold phrase while the local service is slow (not from the TTS)

    def __init__(
        self,
        cloud: FrameProcessor,
        local: FrameProcessor,
        policy: FallbackPolicy,
        *,
        prepare_local: Callable[[], None] | None = None,
    ):
        super().__init__([cloud, local], _Strategy)
        self._cloud = cloud
        self._local = local
        self._policy = policy
        self._prepare_local = prepare_local
        self._prepare_task: asyncio.Future | None = None
        self._lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task] = {}
        self._private: set[int] = set()  # frames we injected that must not leave the switcher
        self._failing = False  # the active cloud failed; its output is dropped from now on
        self._failures = 0  # failures in a row (back-off)
        self._retry_due = False  # revived: the next turn goes to the cloud
        self._local_answered = True
        self._apologized_at = -1e9
        self._ending = False
        self._bot_speaking = False
        self._bot_starts = 0  # the bot's audio starting, seen going upstream
        self._starts_at_fault = 0
        for service in (cloud, local):
            self._wrap(service)
        self._bound_setup(cloud)

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

    def _wrap(self, service: FrameProcessor) -> None:
        """Every frame a member pushes passes here first (before any observer sees it)."""
        push = service.push_frame

        async def push_frame(frame: Frame, direction: FrameDirection = _DOWN):
            if frame.id in self._private:
                self._private.discard(frame.id)
                return
            if isinstance(frame, ErrorFrame):
                # Only its own errors: another stage's errors pass through it upstream.
                if frame.processor is service:
                    await self._on_member_error(service, frame)
            elif not isinstance(frame, _LIFECYCLE):
                if self._silenced(service):
                    return
                await self._on_output(service, frame, direction)
            await push(frame, direction)

        service.push_frame = push_frame

    def _silenced(self, service: FrameProcessor) -> bool:
        # Only the cloud service is ever silenced (once it failed, until it is active
        # again): a late answer of the local one after a switch back is still an answer.
        return service is self._cloud and (self._failing or service is not self.strategy.active_service)

    async def _on_member_error(self, service: FrameProcessor, frame: ErrorFrame) -> None:
        if self._ending or self._silenced(service):
            return
        if service is self._cloud:
            self._failing = True  # from now on nothing it pushes gets out
            self.create_task(self._fall_back("error", frame.error), f"{self}::fallback")
        elif not self._local_answered:
            self.create_task(self._local_failed(f"error: {frame.error}"), f"{self}::apology")

    def _bound_setup(self, cloud: FrameProcessor) -> None:
        """A cloud service connects in setup, which holds the pipeline's start (a refused
        Deepgram handshake retries for ~8 s; an unanswered one for longer than the
        pipeline's setup timeout). Past the budget, the pipeline starts on the local
        service and the cloud one goes on connecting in the background."""
        setup = cloud.setup
        budget = max(self._policy.budget_secs, 1.0)

        async def bounded_setup(arg):
            task = asyncio.ensure_future(setup(arg))
            task.add_done_callback(_log_task_failure)
            try:
                await asyncio.wait_for(asyncio.shield(task), budget)
            except TimeoutError:
                self._failing = True
                self.create_task(
                    self._fall_back("connect", f"not connected within {budget:g}s"), f"{self}::fallback"
                )

        cloud.setup = bounded_setup

    # --- the switch --------------------------------------------------------------------

    async def _fall_back(self, reason: str, detail: str = "") -> None:
        """Cloud → local for this stage, redoing the turn in flight on the local service."""
        async with self._lock:
            if self._ending or self.strategy.active_service is not self._cloud:
                self._failing = False
                return
            await self._disarm("budget")
            replay = self._take_replay()
            self._failures += 1
            delay = self._policy.backoff(self._failures)
            if not await self.strategy.switch_to(self._local):
                logger.error(f"{self.stage.upper()} fallback impossible: {self._local} cannot work")
                self._failing = False
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
            await self._arm("local", self._policy.local_timeout_secs, self._local_failed, "no answer in time")
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
        logger.info(f"{self.stage.upper()}: trying {self._cloud} again (after {self._failures} failure(s))")
        await self.push_frame(
            ServiceFallbackFrame(
                stage=self.stage, event="retry", from_service=self._local.name, to_service=self._cloud.name
            )
        )

    def _cloud_answered(self) -> None:
        if self._failures:
            logger.info(f"{self.stage.upper()}: {self._cloud} answered in time again")
        self._failures = 0

    async def _retry(self) -> None:
        """After the back-off: revive the cloud service until it connects, then let the
        next turn use it."""
        while not self._ending:
            if await self._revive():
                break
            self._failures += 1
            delay = self._policy.backoff(self._failures)
            logger.info(f"{self.stage.upper()}: {self._cloud} still unavailable; next try in {delay:g}s")
            await asyncio.sleep(delay)
        self._retry_due = True
        await self._on_retry_due()

    async def _revive(self) -> bool:
        cloud = self._cloud
        if not cloud.is_usable:
            await cloud.set_usable(True)
        disconnect = getattr(cloud, "_disconnect", None)
        connect = getattr(cloud, "_connect", None)
        if disconnect is None or connect is None:
            return True  # no connection to renew (HTTP)

        async def reconnect():
            await disconnect()
            await connect()

        task = asyncio.ensure_future(reconnect())
        task.add_done_callback(_log_task_failure)
        try:
            await asyncio.wait_for(asyncio.shield(task), self._policy.reconnect_timeout_secs)
        except TimeoutError:
            pass
        return _connected(cloud)

    # --- the local service -----------------------------------------------------------

    def _start_prepare(self) -> asyncio.Future:
        if self._prepare_task is None:
            self._prepare_task = asyncio.ensure_future(asyncio.to_thread(self._prepare_local))
            self._prepare_task.add_done_callback(_log_task_failure)
        return self._prepare_task

    async def _local_ready(self) -> bool:
        if not self._prepare_local:
            return True
        task = self._start_prepare()
        try:
            await asyncio.wait_for(asyncio.shield(task), self._policy.local_timeout_secs)
            return True
        except Exception as e:
            logger.error(f"{self.stage.upper()}: the local {self._local} is not ready: {e!r}")
            return False

    def _local_output(self) -> None:
        """The local service produced the first output of the redone turn (the hold phrase
        still waits for speech: an LLM's first token is not audio yet)."""
        if not self._local_answered:
            self._local_answered = True
            self.create_task(self._disarm("local"), f"{self}::answered")

    def _hold_wanted(self, replay: Any) -> bool:
        return True

    async def _hold(self) -> None:
        # Only the caller's ears count: an LLM's first token is not speech yet.
        heard = self._bot_speaking or self._bot_starts > self._starts_at_fault
        if not heard and not self._ending:
            logger.info(f"{self.stage.upper()}: nothing said yet from {self._local}; saying the hold phrase")
            await self.push_frame(TTSSpeakFrame(self._policy.hold_phrase, append_to_context=False))

    async def _local_failed(self, why: str) -> None:
        """The local counterpart failed too: apologise rather than leave silence."""
        if self._local_answered or self._ending:
            return
        self._local_answered = True
        await self._disarm("hold", "local")
        if time.monotonic() - self._apologized_at < self._policy.local_timeout_secs:
            # The apology itself failed (no TTS works at all): never loop on it.
            logger.error(f"{self.stage.upper()}: {self._local} failed too ({why}); already apologised")
            return
        self._apologized_at = time.monotonic()
        logger.error(f"{self.stage.upper()}: {self._local} failed too ({why}); apologising")
        await self.push_frame(
            ServiceFallbackFrame(
                stage=self.stage, event="apology", reason="local-failed", from_service=self._local.name,
                detail=why[:200],
            )
        )
        await self._apologize()

    async def _apologize(self) -> None:
        await self._inject(self._local, InterruptionFrame())
        await self.push_frame(TTSSpeakFrame(self._policy.apology, append_to_context=False))

    async def _inject(self, service: FrameProcessor, frame: Frame, direction: FrameDirection = _DOWN):
        """Queue a frame of our own into a member; whatever it makes of it stays inside."""
        self._private.add(frame.id)
        await service.queue_frame(frame, direction)

    # --- timers ------------------------------------------------------------------------

    async def _arm(self, name: str, delay: float, callback: Callable[..., Awaitable], *args) -> None:
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

    def _armed(self, name: str) -> bool:
        return name in self._tasks

    async def _disarm_all(self) -> None:
        await self._disarm(*list(self._tasks))

    # --- stage hooks -------------------------------------------------------------------

    def _tracks(self, frame: Frame) -> bool:
        """Whether `frame` coming in matters to the stage (handled under the lock)."""
        return False

    async def _on_input(self, frame: Frame, direction: FrameDirection) -> None:
        """A tracked frame, before it is routed to the active service."""

    async def _on_output(self, service: FrameProcessor, frame: Frame, direction: FrameDirection) -> None:
        """A frame the active member pushes (before it leaves the switcher)."""

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


def _connected(service: FrameProcessor) -> bool:
    if hasattr(service, "_connection"):  # Deepgram: the live connection, None when down
        return service._connection is not None
    ws = getattr(service, "_websocket", None)
    if ws is not None:
        from websockets.protocol import State

        return ws.state is State.OPEN
    return not hasattr(service, "_websocket")


def _log_task_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning(f"Fallback background task failed: {task.exception()!r}")


# --------------------------------------------------------------------------------------
# STT: replay the utterance to Whisper
# --------------------------------------------------------------------------------------


class STTFallback(FallbackSwitcher):
    stage = "stt"
    PREROLL_SECS = 1.0

    def __init__(self, cloud, local, policy, **kwargs):
        super().__init__(cloud, local, policy, **kwargs)
        self._preroll: deque[InputAudioRawFrame] = deque()
        self._preroll_bytes = 0
        self._segment: list[InputAudioRawFrame] | None = None
        self._speaking = False
        self._awaiting = False  # VAD stopped, no final transcript from the cloud yet
        self._heard = False  # the cloud gave a final transcript for this segment
        self._local_pending = False  # the local STT owes a transcript
        self._utterances = 0
        self._hold_at_stop = False  # redone mid-utterance: the hold waits for the VAD stop

    def _tracks(self, frame):
        return isinstance(
            frame, (InputAudioRawFrame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame, UserStoppedSpeakingFrame)
        )

    async def _on_input(self, frame, direction):
        if isinstance(frame, InputAudioRawFrame):
            self._preroll.append(frame)
            self._preroll_bytes += len(frame.audio)
            limit = int(self.PREROLL_SECS * frame.sample_rate * frame.num_channels * 2)
            while self._preroll_bytes - len(self._preroll[0].audio) >= limit:
                self._preroll_bytes -= len(self._preroll.popleft().audio)
            if self._speaking and self._segment is not None:
                self._segment.append(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            if self._awaiting and not self._heard and self._segment is not None:
                # Spoke again before the last segment was transcribed: one segment.
                seen = {id(f) for f in self._segment}
                self._segment.extend(f for f in self._preroll if id(f) not in seen)
            else:
                self._segment = list(self._preroll)
            self._speaking, self._awaiting, self._heard = True, False, False
            await self._disarm("budget")
        elif isinstance(frame, UserStoppedSpeakingFrame):
            # The user's turn is over: whatever the local STT had to say has been said
            # (Whisper rightly says nothing for a cough).
            self._local_pending = False
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            if self.on_local:
                self._local_pending, self._local_answered = True, False
                self._utterances += 1
                self.create_task(self._local_due(self._utterances), f"{self}::local_due")
                if self._hold_at_stop:
                    self._hold_at_stop = False
                    self._starts_at_fault = self._bot_starts
                    if self._policy.hold_secs > 0:
                        await self._arm("hold", self._policy.hold_secs, self._hold)
            elif not self._heard:
                self._awaiting = True
                await self._arm("budget", self._policy.budget_secs, self._timed_out)

    async def _timed_out(self):
        self._failing = True
        await self._fall_back(
            "timeout", f"no final transcript {self._policy.budget_secs:g}s after the user stopped speaking"
        )

    async def _on_output(self, service, frame, direction):
        if not isinstance(frame, TranscriptionFrame) or isinstance(frame, InterimTranscriptionFrame):
            return
        if not frame.text.strip():
            return
        if service is self._cloud:
            self._heard, self._awaiting = True, False
            if not self._speaking:
                self._segment = None
            self.create_task(self._disarm("budget"), f"{self}::heard")
            self._cloud_answered()
        else:
            self._local_pending = False
            self._local_output()

    def _hold_wanted(self, replay):
        return replay[1]  # not while the user is still speaking

    def _take_replay(self):
        if self._segment is None or not (self._speaking or (self._awaiting and not self._heard)):
            return None
        replay = (self._segment, not self._speaking)
        if not self._speaking:
            self._segment = None
        self._awaiting = False
        return replay

    async def _replay(self, replay):
        frames, stopped = replay
        await self._inject(self._local, VADUserStartedSpeakingFrame())
        for f in frames:
            copy = InputAudioRawFrame(audio=f.audio, sample_rate=f.sample_rate, num_channels=f.num_channels)
            await self._inject(self._local, copy)
        if stopped:
            self._local_pending = True
            self._utterances += 1
            self.create_task(self._local_due(self._utterances), f"{self}::local_due")
            await self._inject(self._local, VADUserStoppedSpeakingFrame())
        else:
            # The user is still speaking: the rest of the audio and the real VAD stop
            # reach the local STT as the active service (the hold waits for that stop).
            self._hold_at_stop = True

    async def _stop_cloud_work(self):
        pass  # a streaming STT has no request to cancel; it is reconnected on retry

    async def _local_due(self, utterance: int):
        """Whisper may rightly say nothing (noise): stop waiting after the local timeout."""
        await asyncio.sleep(self._policy.local_timeout_secs)
        if utterance == self._utterances:
            self._local_pending = False

    async def _on_retry_due(self):
        # Switch between utterances, so the cloud hears every one from its start.
        while self._retry_due and self.on_local and not self._ending:
            if not self._speaking and not self._local_pending:
                async with self._lock:
                    if not self._speaking and not self._local_pending:
                        await self._switch_back()
                        return
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------------------
# LLM: send the context again, to the local LLM
# --------------------------------------------------------------------------------------


class LLMFallback(FallbackSwitcher, LLMSwitcher):
    stage = "llm"

    def __init__(self, cloud, local, policy, **kwargs):
        super().__init__(cloud, local, policy, **kwargs)
        self._request: tuple[LLMContextFrame, FrameDirection] | None = None
        self._said = False  # the active LLM already produced text for this request

    @property
    def settings(self):
        """The active LLM's settings (both share the instructions, temperature…)."""
        return self.active_llm.settings

    def _tracks(self, frame):
        return isinstance(frame, (LLMContextFrame, InterruptionFrame))

    async def _on_input(self, frame, direction):
        if isinstance(frame, InterruptionFrame):
            self._request = None
            self._local_answered = True
            await self._disarm("budget", "hold", "local")
            return
        if direction is _DOWN:  # a new user turn (not a tool result coming back)
            await self._switch_back()
        self._request, self._said = (frame, direction), False
        if self.on_local:
            self._local_answered = False
            await self._arm("local", self._policy.local_timeout_secs, self._local_failed, "no answer in time")
        else:
            await self._arm("budget", self._policy.budget_secs, self._timed_out)

    async def _timed_out(self):
        self._failing = True
        await self._fall_back("timeout", f"no first token within {self._policy.budget_secs:g}s")

    async def _on_output(self, service, frame, direction):
        if self._request is None:
            return
        first = isinstance(frame, (FunctionCallsStartedFrame, FunctionCallInProgressFrame)) or (
            isinstance(frame, LLMTextFrame) and frame.text.strip()
        )
        if first:
            self._said = self._said or isinstance(frame, LLMTextFrame)
            if service is self._cloud:
                if self._armed("budget"):
                    self.create_task(self._disarm("budget"), f"{self}::answered")
                    self._cloud_answered()
            else:
                self._local_output()
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._request = None
            if service is self._cloud:
                self.create_task(self._disarm("budget"), f"{self}::done")
            elif not self._local_answered:
                # An empty answer (or one cut by an error) is silence: apologise.
                self.create_task(self._local_failed("no answer"), f"{self}::apology")

    def _take_replay(self):
        if self._request is None:
            return None
        replay = (self._request, self._said)
        self._said = False
        return replay

    def _retracts(self, replay):
        return bool(replay and replay[1])

    async def _replay(self, replay):
        (frame, direction), said = replay
        if said:
            # The broken answer's words are still on their way to the TTS: clear them.
            await self.push_frame(InterruptionFrame())
        await self._local.queue_frame(LLMContextFrame(context=frame.context, speculation=frame.speculation), direction)

    async def _local_failed(self, why):
        await super()._local_failed(why)
        self._request = None


# --------------------------------------------------------------------------------------
# TTS: speak again, with Piper, what the cloud did not finish saying
# --------------------------------------------------------------------------------------


@dataclass
class _Utterance:
    """Text routed to the cloud TTS whose audio has not completed."""

    texts: list[str] = field(default_factory=list)
    response: bool = True  # an LLM answer (Start … End), else a TTSSpeakFrame
    open: bool = True  # LLMFullResponseEndFrame not seen yet
    speak: TTSSpeakFrame | None = None
    contexts: set[str] = field(default_factory=set)
    heard: bool = False


class TTSFallback(FallbackSwitcher):
    stage = "tts"
    hold = False  # the hold phrase would wait behind the replay in the same TTS
    IDLE_SECS = 0.3

    def __init__(self, cloud, local, policy, **kwargs):
        super().__init__(cloud, local, policy, **kwargs)
        self._pending: list[_Utterance] = []
        self._waiting: dict[str, float] = {}  # context → when its first request was sent
        self._heard_contexts: deque[str] = deque(maxlen=64)
        self._last_local_audio = 0.0
        cloud.add_event_handler("on_tts_request", self._on_cloud_request)
        # A broken stream (dropped socket, unparsable message): Pipecat reconnects at once
        # and says nothing (the "disconnected" event only comes once the close handshake
        # of the dead socket has timed out, 2 s later). Hear of it as the reconnect starts.
        reconnect = getattr(cloud, "_reconnect_websocket", None)
        if reconnect is not None:

            async def reconnecting(*args, **kwargs):
                self._on_cloud_broken()
                return await reconnect(*args, **kwargs)

            cloud._reconnect_websocket = reconnecting
        else:
            cloud.add_event_handler("on_disconnected", lambda tts: self._on_cloud_broken())

    def _tracks(self, frame):
        return isinstance(
            frame,
            (LLMFullResponseStartFrame, LLMFullResponseEndFrame, TextFrame, TTSSpeakFrame, InterruptionFrame),
        )

    def _local_idle(self) -> bool:
        local = self._local
        contexts = local.get_audio_contexts() if hasattr(local, "get_audio_contexts") else []
        quiet = time.monotonic() - self._last_local_audio > self.IDLE_SECS
        return not self._bot_speaking and not contexts and quiet

    async def _on_input(self, frame, direction):
        if isinstance(frame, InterruptionFrame):
            self._pending.clear()
            self._waiting.clear()
            self._local_answered = True
            await self._disarm("budget", "local")
            return
        if direction is not _DOWN or getattr(frame, "skip_tts", False):
            return
        if isinstance(frame, (LLMFullResponseStartFrame, TTSSpeakFrame)) and self._retry_due and self._local_idle():
            await self._switch_back()
        if self.on_local:
            if isinstance(frame, (LLMFullResponseStartFrame, TTSSpeakFrame)):
                self._local_answered = False
            return
        if isinstance(frame, LLMFullResponseStartFrame):
            self._pending.append(_Utterance())
        elif isinstance(frame, LLMFullResponseEndFrame):
            for u in self._pending:
                if u.response and u.open:
                    u.open = False
                    break
        elif isinstance(frame, TTSSpeakFrame):
            self._pending.append(_Utterance(texts=[frame.text], response=False, open=False, speak=frame))
        elif isinstance(frame, TextFrame) and not isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame)):
            current = next((u for u in reversed(self._pending) if u.response and u.open), None)
            if current is None:
                current = _Utterance()
                self._pending.append(current)
            current.texts.append(frame.text)

    async def _on_cloud_request(self, tts, context_id: str, text: str):
        # An event handler task: it may run after the request's first audio came out.
        if self.on_local or self._failing:
            return
        utterance = next(
            (u for u in self._pending if u.speak is not None and not u.contexts and u.speak.text.strip() == text.strip()),
            None,
        ) or next((u for u in self._pending if u.response), None)
        if utterance is not None:
            utterance.contexts.add(context_id)
            utterance.heard = utterance.heard or context_id in self._heard_contexts
        if context_id not in self._waiting and context_id not in self._heard_contexts:
            self._waiting[context_id] = time.monotonic()
            if not self._armed("budget"):
                await self._arm("budget", self._policy.budget_secs, self._timed_out)

    async def _timed_out(self):
        now = time.monotonic()
        late = [c for c, at in self._waiting.items() if now - at >= self._policy.budget_secs - 0.01]
        if not late:
            if self._waiting:
                oldest = min(self._waiting.values())
                await self._arm("budget", max(0.0, oldest + self._policy.budget_secs - now), self._timed_out)
            return
        self._failing = True
        await self._fall_back("timeout", f"no audio within {self._policy.budget_secs:g}s of the text")

    def _on_cloud_broken(self) -> None:
        if self._ending or self.on_local or self._failing:
            return
        # Text sent whose audio did not complete: the rest of it is lost with the socket.
        if any("".join(u.texts).strip() for u in self._pending) or self._waiting:
            self._failing = True  # from now on nothing it pushes gets out
            self.create_task(
                self._fall_back("disconnect", "the connection broke with text in flight"), f"{self}::fallback"
            )

    async def _on_output(self, service, frame, direction):
        if service is self._local:
            if isinstance(frame, TTSAudioRawFrame):
                self._last_local_audio = time.monotonic()
                self._local_output()
            return
        if isinstance(frame, TTSAudioRawFrame):
            cid = frame.context_id
            if cid not in self._heard_contexts:
                self._heard_contexts.append(cid)
            for u in self._pending:
                if cid in u.contexts:
                    u.heard = True
            if self._waiting.pop(cid, None) is not None:
                self._cloud_answered()
                if not self._waiting:
                    self.create_task(self._disarm("budget"), f"{self}::heard")
        elif isinstance(frame, TTSStoppedFrame):
            self._pending = [u for u in self._pending if u.response or not (u.heard and frame.context_id in u.contexts)]
        elif isinstance(frame, LLMFullResponseEndFrame):
            # Queued behind the answer's audio: the answer is complete.
            for i, u in enumerate(self._pending):
                if u.response and not u.open:
                    del self._pending[i]
                    break

    def _take_replay(self):
        pending, self._pending = self._pending, []
        self._waiting.clear()
        return pending or None

    async def _replay(self, pending):
        for u in pending:
            if u.response:
                await self._local.queue_frame(LLMFullResponseStartFrame())
                if "".join(u.texts).strip():
                    await self._local.queue_frame(LLMTextFrame("".join(u.texts)))
                if not u.open:
                    await self._local.queue_frame(LLMFullResponseEndFrame())
            else:
                speak = u.speak
                await self._local.queue_frame(
                    TTSSpeakFrame(speak.text, append_to_context=speak.append_to_context)
                )

    async def _reset_cloud(self):
        # Drop what the cloud TTS kept of its failed answer (text waiting in its
        # sentence aggregator, open audio contexts) before it speaks again.
        await self._inject(self._cloud, InterruptionFrame())

    async def _apologize(self):
        # The local TTS cannot speak it: reconnect the cloud one and try it for the apology.
        await self._inject(self._local, InterruptionFrame())
        if self.on_local and await self._revive():
            self._retry_due = True
            async with self._lock:
                await self._switch_back()
        await self.strategy.active_service.queue_frame(
            TTSSpeakFrame(self._policy.apology, append_to_context=False)
        )


def create_fallback(stage: str, cloud, local, policy: FallbackPolicy, **kwargs) -> FallbackSwitcher:
    """The switcher for `stage` ("stt", "llm" or "tts") over a cloud and a local service."""
    cls = {"stt": STTFallback, "llm": LLMFallback, "tts": TTSFallback}[stage]
    return cls(cloud, local, policy, **kwargs)
