"""The web server: WebSocket sessions end to end, bad input, limits, teardown."""

import asyncio

import httpx
import numpy as np
import pipecat.frames.protobufs.frames_pb2 as proto
import pytest
import websockets

from tests.support.server import ask, turn_count
from tests.text import contains_words
from tests.webrtc_peer import offer_sdp
from web.ws_client import AgentClient

pytestmark = pytest.mark.slow


async def test_two_turns_and_a_barge_in_over_websocket(serve_app, speech):
    async with serve_app() as server, AgentClient(server.ws_url) as client:
        first = await ask(client, speech("What is the capital of France?"), 0)
        assert (contains_words(first["user_text"], "capital", "France")
                and contains_words(first["bot_text"], "Paris"))
        second = await ask(client, speech("What is the capital of Japan?"), 1)
        assert (contains_words(second["user_text"], "Japan")
                and contains_words(second["bot_text"], "Tokyo"))
        assert client.received.user_transcripts(), "user transcripts reach the client"

        # A long answer, interrupted one second in.
        await client.speak(speech("Please explain in detail how photosynthesis works in plants."))
        audio_before = len(client.received.bot_audio)
        rate = 24000

        def one_second_into_answer(r):
            return len(r.bot_audio) - audio_before >= rate * 2 * 1.0

        assert await client.silence_until(one_second_into_answer, 60)
        interruptions_before = len(client.received.interruptions)
        await client.speak(speech("What is the capital of France?"))
        assert await client.silence_until(turn_count(4), 60), client.received.turns
        third, fourth = client.received.turns[2:4]
        assert third["interrupted"] and "barge_in_stop" in third["stages_ms"], third
        assert third["audio_after_interruption_ms"] <= 80, third
        assert len(client.received.interruptions) > interruptions_before, (
            "the client is told to flush")
        assert contains_words(fourth["bot_text"], "Paris") and not fourth["interrupted"], fourth
        # The state went through all three phases and the session announced itself.
        states = [m["state"] for m in client.received.server_messages("state")]
        assert {"thinking", "speaking", "listening"} <= set(states)
        assert client.received.server_messages("session")[0]["transport"] == "websocket"


async def test_session_ends_and_is_released_on_disconnect(serve_app):
    async with serve_app() as server:
        async with AgentClient(server.ws_url) as client:
            assert await client.wait_for(lambda r: r.server_messages("session"), 20)
            assert len(server.registry.all()) == 1
        for _ in range(200):
            if not server.registry.all():
                break
            await asyncio.sleep(0.05)
        assert server.registry.all() == []


async def test_session_limit_refuses_the_next_session_with_a_reason(serve_app):
    async with serve_app(max_sessions=1) as server:
        async with AgentClient(server.ws_url) as first:
            assert await first.wait_for(lambda r: r.server_messages("session"), 20)
            refused = AgentClient(server.ws_url)
            await refused.connect()
            assert await refused.wait_for(lambda r: False, 5) is False
            assert refused.close_code == 1013 and "MAX_SESSIONS" in refused.close_reason
            async with httpx.AsyncClient() as http:
                offer = {"sdp": await offer_sdp(), "type": "offer"}
                r = await http.post(f"{server.url}/api/offer", json=offer)
            assert r.status_code == 503 and "MAX_SESSIONS" in r.json()["detail"]
            assert not first.closed


async def test_bad_input_never_hurts_a_healthy_session(serve_app, speech):
    # 400 sessions from one address: the per-client limits are not what this test is about.
    async with serve_app(max_sessions=10, max_message_bytes=64 * 1024, max_sessions_per_client=0,
                         max_new_sessions_per_minute=0) as server:
        async with AgentClient(server.ws_url) as healthy:
            assert await healthy.wait_for(lambda r: r.server_messages("session"), 20)

            async def abuse(payloads, expect_close=None):
                client = AgentClient(server.ws_url)
                await client.connect()
                for payload in payloads:
                    try:
                        await client.send_raw(payload)
                    except websockets.ConnectionClosed:
                        break
                await client.wait_for(lambda r: False, 1.5)
                if expect_close:
                    assert client.close_code == expect_close, (
                        client.close_code, client.close_reason)
                await client.close()
                return client

            rng = np.random.default_rng(1)
            good = proto.Frame()
            good.audio.audio, good.audio.sample_rate, good.audio.num_channels = (
                b"\0\0" * 320, 16000, 1)
            good_bytes = good.SerializeToString()
            # Random bytes, truncated frames, text frames: dropped, the session lives on.
            survivor = await abuse([rng.bytes(200) for _ in range(10)]
                                   + [good_bytes[:17], "hello", good_bytes])
            assert not survivor.closed or survivor.close_code in (1000, 1005)
            # A client that only ever sends garbage is closed with 1007 and a reason.
            await abuse([rng.bytes(64) for _ in range(60)], expect_close=1007)
            # An oversized message is refused by the WebSocket layer (1009, message too big).
            await abuse([b"\0" * (200 * 1024)], expect_close=1009)
            # Audio at a wrong-but-valid rate is resampled; nonsense rates are dropped.
            odd = proto.Frame()
            odd.audio.audio, odd.audio.sample_rate, odd.audio.num_channels = b"\0\0" * 441, 44100, 1
            bogus = proto.Frame()
            bogus.audio.audio, bogus.audio.sample_rate, bogus.audio.num_channels = (
                b"\0\0" * 10, 3, 1)
            await abuse([odd.SerializeToString()] * 5 + [bogus.SerializeToString()] * 5)

            # 400 connect/disconnect cycles, four at a time (a leak of one task per session
            # would show as hundreds).
            tasks_before = len(asyncio.all_tasks())

            async def cycle():
                async with websockets.connect(server.ws_url) as ws:
                    await ws.send(good_bytes)

            for _ in range(100):
                # Sessions end asynchronously after a disconnect; keep a few slots free.
                for _ in range(400):
                    if len(server.registry) <= 5:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.gather(*(cycle() for _ in range(4)))
            for _ in range(400):
                if len(server.registry.all()) == 1:
                    break
                await asyncio.sleep(0.05)
            assert [s.id for s in server.registry.all()] == [
                healthy.received.server_messages("session")[0]["session_id"]]
            assert len(asyncio.all_tasks()) <= tasks_before + 5

            # The healthy session still answers.
            turn = await ask(healthy, speech("What is the capital of France?"), 0)
            assert contains_words(turn["bot_text"], "Paris"), turn


async def test_audio_at_48khz_stereo_is_understood(serve_app, speech):
    """A client that sends 48 kHz stereo is resampled and downmixed, not misheard."""
    import soxr

    question = speech("What is the capital of France?")
    stereo48 = np.repeat(
        soxr.resample(question, 16000, 48000).astype(np.int16)[:, None], 2, axis=1).ravel()
    async with serve_app() as server, AgentClient(server.ws_url) as client:
        chunk = 960 * 2  # 20 ms of stereo at 48 kHz
        for i in range(0, len(stereo48), chunk):
            frame = proto.Frame()
            frame.audio.audio = stereo48[i : i + chunk].tobytes()
            frame.audio.sample_rate, frame.audio.num_channels = 48000, 2
            await client.send_raw(frame.SerializeToString())
            await asyncio.sleep(0.02)
        assert await client.silence_until(turn_count(1), 60), client.received.turns
        turn = client.received.turns[0]
        assert contains_words(turn["user_text"], "capital", "France"), turn
