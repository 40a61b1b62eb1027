"""A barge-in with no words gets the fixed apology as a reply, not a trip to the LLM."""

from __future__ import annotations

from pipecat.frames.frames import (
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from bot.turn_taking import EMPTY_TURN_PROMPT, EMPTY_TURN_REPLY
from processors.empty_turn_reply import EmptyTurnReply

HISTORY = [
    {"role": "user", "content": "Tell me a long story."},
    {"role": "assistant", "content": "Once upon a time"},
]


def reply_processor() -> EmptyTurnReply:
    return EmptyTurnReply(prompt=EMPTY_TURN_PROMPT, reply=EMPTY_TURN_REPLY)


async def test_the_empty_turn_request_is_answered_and_leaves_the_context_as_it_was():
    context = LLMContext(messages=[*HISTORY, {"role": "developer", "content": EMPTY_TURN_PROMPT}])
    down, _ = await run_test(
        reply_processor(),
        frames_to_send=[LLMContextFrame(context)],
        expected_down_frames=[LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame],
    )
    assert down[1].text == EMPTY_TURN_REPLY
    assert context.get_messages() == HISTORY


async def test_every_other_request_goes_to_the_llm():
    asks = [
        LLMContext(messages=[*HISTORY, {"role": "user", "content": "What is the capital of France?"}]),
        LLMContext(messages=[*HISTORY, {"role": "developer", "content": "Be brief."}]),
    ]
    down, _ = await run_test(
        reply_processor(),
        frames_to_send=[LLMContextFrame(c) for c in asks],
        expected_down_frames=[LLMContextFrame, LLMContextFrame],
    )
    assert [f.context for f in down] == asks
    assert [len(c.get_messages()) for c in asks] == [3, 3]
