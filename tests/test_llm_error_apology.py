"""A failed LLM turn is answered with the apology, spoken, instead of silence.

The LLM is Pipecat's real OpenAI service (what the local stack runs) pointed at a
loopback server that answers 500, or at a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import WorkerRunner
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.llm import OpenAILLMService

from bot.processes import free_port
from processors.llm_error_apology import LLMErrorApology

APOLOGY = "Sorry, I'm having trouble answering right now."


class _ServerError(BaseHTTPRequestHandler):
    def do_POST(self):
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"message": "the model crashed", "type": "server_error"}}')

    def log_message(self, *args):
        pass


@pytest.fixture
def answers_500():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ServerError)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.fixture
def nobody_listens():
    return f"http://127.0.0.1:{free_port()}/v1"  # a free port, closed again: refused


class Recorder(FrameProcessor):
    """Keeps every frame that passes it in `direction`; `seen` is set when one of `until` does."""

    def __init__(self, direction: FrameDirection, until: type[Frame] | None = None):
        super().__init__()
        self.frames: list[Frame] = []
        self._direction, self._until = direction, until
        self.seen = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == self._direction and not isinstance(frame, EndFrame):
            self.frames.append(frame)
            if self._until and isinstance(frame, self._until):
                self.seen.set()
        await self.push_frame(frame, direction)


async def run(processors: list[FrameProcessor], frames: list[Frame], until: type[Frame]):
    """Sends `frames` through `processors`; ends once a frame of type `until` came out."""
    head, tail = Recorder(FrameDirection.UPSTREAM), Recorder(FrameDirection.DOWNSTREAM, until)
    worker = PipelineWorker(Pipeline([head, *processors, tail]), cancel_on_idle_timeout=False)

    async def drive():
        await worker.queue_frames(frames)
        await asyncio.wait_for(tail.seen.wait(), timeout=60)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    return tail.frames, head.frames


def llm_at(base_url: str) -> OpenAILLMService:
    return OpenAILLMService(api_key="local", base_url=base_url,
                            settings=OpenAILLMService.Settings(model="local"))


@pytest.mark.parametrize("server", ["answers_500", "nobody_listens"])
async def test_a_failed_completion_is_answered_with_the_apology(server, request):
    llm = llm_at(request.getfixturevalue(server))
    context = LLMContext(messages=[{"role": "user", "content": "What is the capital of France?"}])
    down, up = await run([LLMErrorApology(llm, apology=APOLOGY), llm], [LLMContextFrame(context)],
                         TTSSpeakFrame)
    answer = (LLMFullResponseStartFrame, LLMFullResponseEndFrame, TTSSpeakFrame)
    kinds = [type(f) for f in down if isinstance(f, answer)]
    assert kinds == list(answer), kinds  # an empty answer, then the apology
    assert [f.text for f in down if isinstance(f, TTSSpeakFrame)] == [APOLOGY]
    # The error still goes on up, to the `PipelineWorker` and the error counters.
    assert [f.processor for f in up if isinstance(f, ErrorFrame)] == [llm]


async def test_a_groq_turn_that_fails_mid_stream_is_answered_with_the_apology():
    """Groq's `tool_use_failed` after a 200 (no fallback configured): the apology, at
    once — our Groq client does not retry, so no `Retry-After` is slept through."""
    from bot.config import Settings
    from bot.providers import create_llm
    from tests.peers.groq import GroqPeer

    async with GroqPeer(api_key="gsk-apology") as groq:
        groq.reply_midstream_error(after_text="Let me")
        settings = Settings(
            _env_file=None, llm_provider="cloud", groq_api_key="gsk-apology",
            groq_base_url=f"{groq.base_url}/openai/v1", fallback_enabled=False,
        )
        llm = create_llm(settings, None)
        context = LLMContext(messages=[{"role": "user", "content": "Any news?"}])
        down, up = await run(
            [LLMErrorApology(llm, apology=APOLOGY), llm], [LLMContextFrame(context)], TTSSpeakFrame
        )
    assert [f.text for f in down if isinstance(f, TTSSpeakFrame)] == [APOLOGY]
    assert [f.processor for f in up if isinstance(f, ErrorFrame)] == [llm]
    assert len(groq.completions) == 1


class FailingTTS(FrameProcessor):
    """Raises an error upstream for each text it is given, then passes the text on."""

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSSpeakFrame):
            await self.push_error("the TTS failed")
        await self.push_frame(frame, direction)


async def test_errors_from_elsewhere_pass_without_a_word(nobody_listens):
    tts = FailingTTS()
    down, up = await run(
        [LLMErrorApology(llm_at(nobody_listens), apology=APOLOGY), tts],
        [TTSSpeakFrame("Hello.")], TTSSpeakFrame
    )
    # The error (a system frame) passed the apology before the text came out; the
    # EndFrame followed, so anything said about it would be here too.
    assert [f.processor for f in up if isinstance(f, ErrorFrame)] == [tts]
    assert [f.text for f in down if isinstance(f, TTSSpeakFrame)] == ["Hello."]


@pytest.mark.slow
async def test_the_local_stack_apologises_aloud_when_its_llm_server_fails(
        models, speech, answers_500):
    """The whole voice loop, local stack, its LLM server answering 500 to every request."""
    import soxr

    from bot.conversation import converse
    from bot.local.models import LocalModels
    from bot.session import Session
    from tests.support.audio import transcribe
    from tests.support.settings import local_settings
    from tests.text import contains_words
    from transports.file import FileTransportParams, Utterance

    settings = local_settings(local_llm_url=answers_500)
    broken = LocalModels(settings)  # the loaded models, but the LLM is the failing server
    broken._whisper, broken._piper = models._whisper, models._piper
    broken._silero, broken._smart_turn = models._silero, models._smart_turn
    session = Session(settings=settings, models=broken)
    script = [Utterance(audio=speech("What is the capital of France?"), name="question")]
    result = await converse(script, session, FileTransportParams(fast=True))

    (turn,) = result.turn_dicts()
    assert contains_words(turn["user_text"], "capital", "France"), turn
    assert turn["bot_text"] == settings.fallback_apology, turn
    audio = np.frombuffer(bytes(result.transport.bot_audio), np.int16)
    heard = await transcribe(
        settings, models,
        soxr.resample(audio, result.transport.output_sample_rate, 16000).astype(np.int16)
    )
    assert contains_words(heard, "trouble", "answering"), heard
