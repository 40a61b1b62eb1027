"""Over the WebSocket endpoint, a laptop without headphones: the bot's own voice comes back
into the microphone (-20 dB, 150 ms late). It never cuts
the bot off, and a person talking over the bot still does."""

import pytest

from tests.support.fakes import FakeProviders
from tests.text import contains_words
from web.ws_client import AgentClient

pytestmark = pytest.mark.slow
LONG_QUESTION = "Please explain in detail how photosynthesis works in plants."
# A fixed long answer (a stand-in LLM): what is tested is the echo, not the model.
ANSWER = (
    "Plants make their food in the leaves, by photosynthesis. The chlorophyll in each leaf "
    "catches the energy of sunlight and keeps it. Water from the roots and carbon dioxide from "
    "the air become sugar. Oxygen is what the plant gives back to the air around it."
)
FIXED_ANSWER = FakeProviders("llm", answer=ANSWER)


def echoing_client(server) -> AgentClient:
    return AgentClient(server.ws_url, echo_gain_db=-20, echo_delay_secs=0.15)


async def test_echo_does_not_interrupt_the_bot(serve_app, speech):
    async with serve_app(FIXED_ANSWER) as server:
        async with echoing_client(server) as client:
            await client.speak(speech(LONG_QUESTION))
            # Keep the microphone live (hearing the bot) until the answer is over...
            assert await client.silence_until(
                lambda r: len(r.turns) >= 1, 90), client.received.turns
            # ...and a little longer, in case an echo turn is still being transcribed.
            await client.silence(2.0)
            turns = client.received.turns
            # Never a turn of its own, never the answer cut short. (A residual the canceller
            # let through can still pause the bot and have a sentence said again: counted
            # in bench.echo_matrix.)
            heard = client.received.user_transcripts() + client.received.user_transcripts(False)
            assert len(turns) == 1 and not turns[0]["interrupted"], (turns, heard)
            assert turns[0]["bot_text"] == ANSWER, turns


async def test_a_person_still_interrupts_over_the_echo(serve_app, speech):
    async with serve_app(FIXED_ANSWER) as server:
        async with echoing_client(server) as client:
            await client.speak(speech(LONG_QUESTION))
            assert await client.silence_until(lambda r: r.audio_ms() >= 1500, 60)
            await client.speak(speech("What is the capital of France?"))
            assert await client.silence_until(
                lambda r: len(r.turns) >= 2, 90), client.received.turns
            first, second = client.received.turns[:2]
            assert first["interrupted"], first
            assert contains_words(second["user_text"], "capital", "France"), second
