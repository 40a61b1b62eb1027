"""Notes before a local LLM: knowledge-base passages and worked sums for the turns that need them,
nothing otherwise."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import run_test

from bot.config import Settings
from bot.tools.knowledge import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase
from processors.turn_notes import NOTES_INTRO, TurnNotes, calculator_notes, knowledge_notes

THRESHOLD = Settings(_env_file=None).knowledge_match_threshold
ABOUT_THE_KB = {
    "Who is the CEO of Brightline Telecom?": "Marta Quintela",
    "How much does Brightline's Spark plan cost?": "12 euros",
    "How do I check for a Brightline outage?": "4040",
    "What is Brightline's late payment fee?": "5 euro late fee",
    # As a recogniser may write the name: two words, joined again before the search.
    "When was Bright Line Telecom founded?": "2011",
    "How much is Bright Lines Travel Pass per day?": "7 euros a day",
}
# General questions, several sharing words with the knowledge base's pages.
NOT_ABOUT_THE_KB = [
    "What is the capital of Portugal?",
    "What is an eSIM?",
    "What is a loyalty programme in a shop?",
    "What does roaming mean for a mobile phone?",
    "How many minutes are there in an hour?",
    "What is seven times eight?",
    "Tell me a joke.",
    "",
    "'\" OR 1=1 --",
]


@pytest.fixture(scope="module")
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.shared(DEFAULT_KNOWLEDGE_DIR)


@pytest.mark.parametrize("question", ABOUT_THE_KB)
def test_a_question_about_the_knowledge_base_gets_its_passage(knowledge, question):
    passages = knowledge.retrieve(question, THRESHOLD)
    assert passages and ABOUT_THE_KB[question] in passages[0].content, passages


@pytest.mark.parametrize(
    "question",
    [
        "How many days do I have to return a Brightline phone?",
        # The name in two words, which also match the company's slogan ("bright days").
        "How many days do I have to return a bright line phone?",
    ],
)
def test_a_question_gets_only_the_passage_it_matches_best(knowledge, question):
    """Other pages share the company's name with it; each passage costs the local LLM ~1 s
    of reading before its first word."""
    [passage] = knowledge.retrieve(question, THRESHOLD)
    assert "within 30 days" in passage.content, passage


@pytest.mark.parametrize("question", NOT_ABOUT_THE_KB)
def test_a_general_question_gets_nothing_from_the_knowledge_base(knowledge, question):
    assert knowledge.retrieve(question, THRESHOLD) == []


def test_the_threshold_decides(knowledge):
    question = "What is an eSIM?"  # shares one rare word with the SIM page
    best = knowledge.matches(question)[0]
    assert 0 < best.score < THRESHOLD
    assert knowledge.retrieve(question, best.score) == [best.result]
    assert knowledge.retrieve(question, best.score + 0.01) == []


def context_of(*turns: str) -> LLMContext:
    roles = ["user", "assistant"]
    return LLMContext(messages=[{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)])


async def test_only_the_matching_turns_request_carries_the_passages(knowledge):
    retrieval = TurnNotes([knowledge_notes(knowledge, THRESHOLD, 1200)])
    about = context_of("What is the capital of Portugal?", "Lisbon.",
                       "Who is the CEO of Brightline Telecom?")
    general = context_of("Who is the CEO of Brightline Telecom?", "Marta Quintela.",
                         "What is an eSIM?")
    down, _ = await run_test(
        retrieval,
        frames_to_send=[LLMContextFrame(context=about), LLMContextFrame(context=general)],
        expected_down_frames=[LLMContextFrame, LLMContextFrame],
    )
    sent_about, sent_general = (frame.context.messages for frame in down)
    # The matching turn: the passage comes with the question, in this request only.
    assert (NOTES_INTRO in sent_about[-1]["content"]
            and "Marta Quintela" in sent_about[-1]["content"])
    assert sent_about[-1]["content"].endswith("Who is the CEO of Brightline Telecom?")
    assert sent_about[:-1] == about.messages[:-1]
    # conversation untouched
    assert about.messages[-1]["content"] == "Who is the CEO of Brightline Telecom?"
    # A general turn after it: no knowledge-base text at all, not even the earlier passage.
    assert sent_general == general.messages
    assert not any(NOTES_INTRO in str(m["content"]) for m in sent_general)


async def test_a_sum_is_worked_out_for_the_llm(knowledge):
    notes = TurnNotes([knowledge_notes(knowledge, THRESHOLD, 1200), calculator_notes])
    sums = context_of("What is one hundred minus thirty five?")
    chat = context_of("How many days are there in a week?")
    down, _ = await run_test(
        notes,
        frames_to_send=[LLMContextFrame(context=sums), LLMContextFrame(context=chat)],
        expected_down_frames=[LLMContextFrame, LLMContextFrame],
    )
    asked = down[0].context.messages[-1]["content"]
    assert "Calculator: 100 - 35 = 65" in asked and "Brightline" not in asked, asked
    assert down[1].context.messages == chat.messages
