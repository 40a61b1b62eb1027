"""Issue 14's probe, F3: a session's slot is free the moment its client leaves, and no task
outlives the session (the WebRTC offers, F1-F2, are tests/abuse/test_sessions.py's)."""

from __future__ import annotations

import asyncio

import numpy as np
import websockets

from tests.abuse.frames import session_of
from tests.support.polling import until
from web.ws_client import AgentClient


async def test_a_client_that_reconnects_at_once_gets_its_slot_back(serve):
    """With SESSION_PROCESSES the old session's teardown includes its process exiting; the
    slot does not wait for it. In this process too, two clients reconnecting in a loop are
    never refused."""
    async with serve(
        session_processes=True, session_process_spares=1, max_sessions=1,
        max_new_sessions_per_minute=0,
    ) as server:
        for _ in range(2):
            async with AgentClient(server.ws_url) as client:
                await session_of(client)
            async with AgentClient(server.ws_url) as again:
                await session_of(again)  # not refused with 1013
        await until(lambda: not server.registry.all(), 30, "the session processes to exit")

    async with serve(max_sessions=2, max_new_sessions_per_minute=0) as server:
        refusals = []

        async def reconnect(times: int):
            for _ in range(times):
                async with AgentClient(server.ws_url) as client:
                    if not await client.wait_for(lambda r: r.server_messages("session"), 20):
                        refusals.append((client.close_code, client.close_reason))

        await asyncio.gather(reconnect(10), reconnect(10))
        assert refusals == []


async def test_no_task_outlives_a_session_that_ends_mid_transcription(models, log_lines):
    """Eager Whisper starts a pass the moment speech pauses; a session that ends then
    (cancelled, as when its client leaves, or ended) leaves no task behind."""
    from pipecat.frames.frames import CancelFrame, InputAudioRawFrame, VADUserStartedSpeakingFrame
    from pipecat.pipeline.worker import PipelineParams
    from pipecat.tests.utils import run_test

    from bot.local.eager_whisper import EagerWhisperSTTService
    from bot.turns.speech_pause import QUIET_FRAMES

    speech = models.synthesize("What is the capital of France?", 16000)[: 16000 * 8 // 10]
    pcm = np.concatenate([speech, np.zeros(320 * QUIET_FRAMES, dtype=np.int16)])
    frames = [VADUserStartedSpeakingFrame()] + [
        InputAudioRawFrame(audio=pcm[i : i + 320].tobytes(), sample_rate=16000, num_channels=1)
        for i in range(0, len(pcm), 320)
    ]  # the last frame completes the pause: a pass starts, and the session ends at once
    for end in ("cancel", "end"):
        stt = EagerWhisperSTTService(model=models.whisper, window_secs=30.0)
        await run_test(
            stt,
            frames_to_send=frames + ([CancelFrame()] if end == "cancel" else []),
            send_end_frame=end == "end",
            pipeline_params=PipelineParams(audio_in_sample_rate=16000),
        )
    dangling = [line for line in log_lines if "dangling" in line]
    assert dangling == []


async def test_no_task_outlives_a_session_whose_client_leaves_at_once(serve, log_lines):
    """A client that connects and leaves at once ends its session while the pipeline is
    still starting (the probe's connect/close cycles): Whisper's transcription task goes too."""
    async with serve(fake="llm,tts", max_new_sessions_per_minute=0) as server:
        for n in range(20):
            async with websockets.connect(server.ws_url):
                await asyncio.sleep(0.002 * (n % 10))
        await until(lambda: not server.registry.all(), 20, "the sessions to end")
    dangling = [line for line in log_lines if "dangling" in line]
    assert dangling == [], dangling[:3]

