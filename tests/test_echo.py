"""The bot does not interrupt itself on its own echo (-20 dB), yet a person still can."""

import pytest

from tests.text import contains_words
from web.ws_client import AgentClient

pytestmark = pytest.mark.slow
LONG_QUESTION = "Please explain in detail how photosynthesis works in plants."


async def long_answer_with_echo(server, speech, client: AgentClient):
    await client.speak(speech(LONG_QUESTION))
    # Keep the microphone live (hearing the bot at -20 dB) until the answer is over.
    assert await client.silence_until(lambda r: len(r.turns) >= 1, 90), client.received.turns
    # ...and a little longer, in case an echo turn is still being transcribed.
    await client.silence(1.5)
    return client.received.turns


async def test_echo_does_not_interrupt_the_bot(serve_app, speech):
    async with serve_app(echo_guard_enabled=True) as server:
        async with AgentClient(server.ws_url, echo_gain_db=-20) as client:
            turns = await long_answer_with_echo(server, speech, client)
            assert len(turns) == 1 and not turns[0]["interrupted"], turns
            assert len(turns[0]["bot_text"].split()) >= 8, "a long enough answer to have echoed"


async def test_without_the_guard_the_echo_interrupts(serve_app, speech):
    """Why the guard exists: the same scenario with it switched off."""
    async with serve_app(echo_guard_enabled=False) as server:
        async with AgentClient(server.ws_url, echo_gain_db=-20) as client:
            turns = await long_answer_with_echo(server, speech, client)
            assert turns[0]["interrupted"] or len(turns) > 1, turns


async def test_a_person_still_interrupts_over_the_echo(serve_app, speech):
    async with serve_app(echo_guard_enabled=True) as server:
        async with AgentClient(server.ws_url, echo_gain_db=-20) as client:
            await client.speak(speech(LONG_QUESTION))
            assert await client.silence_until(lambda r: r.audio_ms() >= 1000, 60)
            await client.speak(speech("What is the capital of France?"))
            assert await client.silence_until(lambda r: len(r.turns) >= 2, 90), client.received.turns
            first, second = client.received.turns[:2]
            assert first["interrupted"], first
            assert contains_words(second["user_text"], "capital", "France"), second
