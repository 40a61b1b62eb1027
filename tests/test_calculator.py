"""The calculator that works out a spoken question's arithmetic for the local LLM."""

import pytest

from bot.tools.calculator import worked_arithmetic


@pytest.mark.parametrize(
    "question, worked",
    [
        ("What is one hundred minus thirty five?", "100 - 35 = 65"),
        ("What is two hundred and fifty plus two hundred and fifty?", "250 + 250 = 500"),
        ("What is seven times eight?", "7 * 8 = 56"),
        ("what is eighty one divided by nine", "81 / 9 = 9"),
        ("What is 2 + 2 * 3?", "2 + 2 * 3 = 8"),
        ("What is ten percent of two hundred?", "10 percent of 200 = 20"),
        ("What is twelve squared?", "12 squared = 144"),
        ("What is the square root of sixty four?", "the square root of 64 = 8"),
        ("What is half of fifty?", "half of 50 = 25"),
        ("What is seven divided by two?", "7 / 2 = 3.5"),
    ],
)
def test_the_sum_in_a_question_is_worked_out(question, worked):
    assert worked_arithmetic(question) == worked


@pytest.mark.parametrize(
    "question",
    ["How many days are there in a week?", "And what is that times three?",
     "What is 5 divided by 0?", "Call 0800 555 0199", "What is the capital of France?", ""],
)
def test_no_sum_no_note(question):
    assert worked_arithmetic(question) == ""
