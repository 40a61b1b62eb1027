"""A turn nobody could make out (a barge-in with no words, or only words Whisper was unsure
of) gets the fixed apology as a reply, not a trip to the LLM."""

from __future__ import annotations

from pipecat.frames.frames import (
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import SleepFrame, run_test

from bot.turns.turn_taking import EMPTY_TURN_PROMPT, EMPTY_TURN_REPLY
from processors.empty_turn_reply import EmptyTurnReply
from processors.unsure_transcripts import UnsureTranscripts

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
        LLMContext(messages=[*HISTORY,
                             {"role": "user", "content": "What is the capital of France?"}]),
        LLMContext(messages=[*HISTORY, {"role": "developer", "content": "Be brief."}]),
    ]
    down, _ = await run_test(
        reply_processor(),
        frames_to_send=[LLMContextFrame(c) for c in asks],
        expected_down_frames=[LLMContextFrame, LLMContextFrame],
    )
    assert [f.context for f in down] == asks
    assert [len(c.get_messages()) for c in asks] == [3, 3]


# --- turns of words the recogniser was unsure of ------------------------------------------

MIN_LOGPROB = -0.9
ANSWER = [LLMContextFrame]
ASKED_AGAIN = [LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame]


def heard(text: str, logprob: float | None) -> TranscriptionFrame:
    result = {"avg_logprob": logprob} if logprob is not None else None
    return TranscriptionFrame(text, "user", "2026-12-06T00:00:00", result=result)


def turn(*transcripts: TranscriptionFrame) -> list:
    """A user turn as the two processors see it: its start, its transcripts, then the context
    the aggregator sends with them as the user's message."""
    text = " ".join(t.text for t in transcripts)
    context = LLMContext(messages=[*HISTORY, {"role": "user", "content": text}])
    return [*start_of_turn(), *transcripts, LLMContextFrame(context)]


def start_of_turn() -> list:
    # A system frame overtakes queued ones: the last turn's frames go through first.
    return [SleepFrame(sleep=0.05), UserStartedSpeakingFrame()]


async def run_turns(*turns: list) -> list:
    unsure = UnsureTranscripts(MIN_LOGPROB)
    reply = EmptyTurnReply(prompt=EMPTY_TURN_PROMPT, reply=EMPTY_TURN_REPLY, unsure=unsure)
    down, _ = await run_test(
        Pipeline([unsure, reply]),
        frames_to_send=[frame for t in turns for frame in t],
    )
    return [f for f in down if isinstance(f, (LLMContextFrame, *ASKED_AGAIN))]


async def test_a_turn_heard_unsurely_is_asked_again_and_leaves_the_context():
    misheard = turn(heard("What is the capital of the room?", -1.05))
    context = misheard[-1].context
    out = await run_turns(misheard)
    assert [type(f) for f in out] == ASKED_AGAIN
    assert out[1].text == EMPTY_TURN_REPLY
    assert context.get_messages() == HISTORY  # the misheard words are not kept


async def test_a_turn_heard_surely_or_in_part_surely_goes_to_the_llm():
    out = await run_turns(
        turn(heard("What is the capital of France?", -0.3)),
        # A clause Whisper was sure of: the turn is answered, its unsure part with it.
        turn(heard("Tell me about", -1.2), heard("the history of Paris.", -0.2)),
        turn(heard("What is the capital of France?", None)),  # a cloud STT: no confidence
    )
    assert [type(f) for f in out] == ANSWER * 3


async def test_a_second_unsure_turn_in_a_row_gets_the_llms_best_guess():
    out = await run_turns(
        turn(heard("What is capital?", -1.05)),
        turn(heard("What is gravel tea?", -0.95)),
        turn(heard("What is gravity?", -1.0)),  # after an answer, asked again once more
    )
    assert [type(f) for f in out] == ASKED_AGAIN + ANSWER + ASKED_AGAIN


async def test_only_the_turns_own_words_count():
    out = await run_turns(
        # Words whose turn never reached the LLM (a backchannel, an echo)...
        [*start_of_turn(), heard("Okay.", -0.2)],
        # ...then a turn the recogniser was unsure of.
        turn(heard("What is the capital of the room?", -1.05)),
    )
    assert [type(f) for f in out] == ASKED_AGAIN
