"""LLM: Groq → the local llama.cpp server. The last context is sent again, to the local
LLM; text the cloud already said of a broken answer is withdrawn first (an interruption
downstream clears the TTS)."""

from __future__ import annotations

from pipecat.frames.frames import (
    FunctionCallInProgressFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
)
from pipecat.pipeline.llm_switcher import LLMSwitcher
from pipecat.processors.frame_processor import FrameDirection

from processors.fallback.switcher import FallbackSwitcher

REQUEST = "request"


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

    def _first_byte(self, frame):
        tool = isinstance(frame, (FunctionCallsStartedFrame, FunctionCallInProgressFrame))
        text = isinstance(frame, LLMTextFrame) and frame.text.strip()
        return REQUEST if tool or text else None

    def _timeout_detail(self, key):
        return f"no first token within {self._policy.budget_secs:g}s"

    async def _on_input(self, frame, direction):
        if isinstance(frame, InterruptionFrame):
            self._request = None
            self._local_answered = True
            await self.watchdog.stop()
            await self._disarm("hold", "local")
            return
        if direction is FrameDirection.DOWNSTREAM:  # a new user turn, not a tool result
            await self._switch_back()
        self._request, self._said = (frame, direction), False
        if self.on_local:
            self._local_answered = False
            timeout = self._policy.local_timeout_secs
            await self._arm("local", timeout, self._local_failed, "no answer in time")
        else:
            await self.watchdog.stop()
            self.watchdog.expect(REQUEST)

    async def _on_output(self, service, frame, direction):
        if self._request is None:
            return
        if self._first_byte(frame) is not None:
            self._said = self._said or isinstance(frame, LLMTextFrame)
            if service is self._local:
                self._local_output()
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._request = None
            if service is self._cloud:
                await self.watchdog.stop()
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
        context = LLMContextFrame(context=frame.context, speculation=frame.speculation)
        await self._local.queue_frame(context, direction)

    async def _local_failed(self, why):
        await super()._local_failed(why)
        self._request = None
