"""Right answers to questions spoken in voices the bot has never heard, through the voice loop,
and a question back when the recogniser was unsure of what it heard.

A fixed dozen of the spoken-QA yardstick's items (bench/spoken_qa.yaml: general knowledge,
arithmetic, a follow-up, a joke, a knowledge-base question and a general one that shares its
words), asked in one conversation by two voices taking turns, through `run_bot` with the local
stack, judged by the yardstick's own deterministic judge. The local LLM samples with a fixed seed.
"""

from __future__ import annotations

import pytest

from bench import voices
from bench.qa_judge import KB_MARKERS, judge, load_items
from bench.spoken_qa import spoken
from bot.conversation import converse
from bot.session import Session
from bot.turns.turn_taking import EMPTY_TURN_REPLY
from tests.conftest import local_settings
from transports.file import FileTransportParams, Utterance

pytestmark = pytest.mark.slow

# Asked in this order in one conversation: the follow-up comes right after its lead-in.
SUBSET = [
    "capital-france", "fu-germany", "spider-legs", "mul-7-8", "kb-ceo", "nk-portugal",
    "largest-planet", "mona-lisa", "week-days", "plants-gas", "joke-any", "boiling-water",
]
# Two flite voices unlike Piper's. The third flite voice, awb (Scottish), got 9 of 12 here:
# tiny.en mishears it ("Who painted the Mona Lisa?" → "You painted the Mona Lisa."); its
# figures are in bench/RESULTS.md (Spoken QA), with the other voices'.
TEST_VOICES = ["flite-slt", "flite-rms"]


REPEATED = next(item for item in load_items() if item.id == "light-bulb")


@pytest.fixture(scope="module")
def items():
    by_id = {item.id: item for item in load_items()}
    return [by_id[i] for i in SUBSET]


async def test_a_dozen_spoken_questions_are_answered_right(models, items):
    for voice in TEST_VOICES:
        if not voices.get(voice).available():
            pytest.skip(f"{voice} needs flite (apt-get install flite; `make test` installs it)")
        assert not voices.get(voice).is_bot_voice
    # The voices take turns; the follow-up's own lead-in is the item just before it ("What is
    # the capital of France?"), asked by the other voice, as a second person in the room might.
    script = [
        Utterance(audio=voices.synthesize(item.q, TEST_VOICES[i % 2]), name=item.id)
        for i, item in enumerate(items)
    ]
    # The knowledge-base question is said twice: Whisper cannot know the company's name, and
    # its confidence in "Who is the chief of Bright Line Telecom?" sits near the unsure bar
    # (-0.66 in one run, under -0.75 in another), so the bot may ask it again; then the
    # second time is answered, whatever Whisper's confidence (asked again once in a row).
    kb = SUBSET.index("kb-ceo")
    script.insert(kb + 1, Utterance(audio=script[kb].audio, name="kb-ceo-again"))
    # Then a question lost in a noisy room (white noise, 10 dB SNR), which Whisper hears as
    # another sentence and is unsure of: it is asked again, and the repeat is answered.
    noisy, _ = spoken(REPEATED.q, TEST_VOICES[0], "noisy", piper=None)
    script += [
        Utterance(audio=noisy, name="noisy"),
        Utterance(audio=voices.synthesize(REPEATED.q, TEST_VOICES[0]), name="repeated"),
    ]
    session = Session(settings=local_settings(greeting="", llm_seed=7), models=models)
    # In real time, as a person listens: each question waits for the whole answer, which on a
    # loaded machine can pause for over a second while the LLM writes its next sentence.
    result = await converse(script, session, FileTransportParams(fast=False))

    turns = result.turn_dicts()
    assert len(turns) == len(items) + 3, [(t["user_text"], t["bot_text"]) for t in turns]
    (misheard, asked_again), (repeat, answer) = [(t["user_text"], t["bot_text"])
                                                 for t in turns[-2:]]
    kb_answers = [turns[kb]["bot_text"], turns.pop(kb + 1)["bot_text"]]
    turns = turns[:-2]
    verdicts = [judge(item, turn["bot_text"]) for item, turn in zip(items, turns)]
    report = "\n".join(
        f"{'ok ' if v.right else 'BAD'} {item.id} ({TEST_VOICES[i % 2]}): "
        f"heard {t['user_text']!r} → {t['bot_text']!r}"
        for i, (item, t, v) in enumerate(zip(items, turns, verdicts))
    )
    assert sum(v.right for v in verdicts) >= 10, report
    # The knowledge-base question is answered from it (asked again at most once); no other
    # answer mentions it.
    assert kb_answers.count(EMPTY_TURN_REPLY) <= 1, kb_answers
    assert all("Quintela" in a for a in kb_answers if a != EMPTY_TURN_REPLY), kb_answers
    assert not any(KB_MARKERS.search(t["bot_text"]) for i, t in enumerate(turns) if i != kb), report
    assert not any(v.refusal for v in verdicts), report

    assert asked_again == EMPTY_TURN_REPLY, (misheard, asked_again)
    assert judge(REPEATED, answer).right, (repeat, answer)
    # The misheard words never reached the conversation; the repeat did.
    said = [str(m.get("content")) for m in session.context.get_messages()
            if m.get("role") == "user"]
    assert misheard not in said and repeat in said, (misheard, said[-3:])
