"""Per-user memory's rules (bot/memory/), on the SQLite store: what counts as a fact to
remember, and what of it a new session's instructions hold (tests/test_cluster.py has it
end to end, across nodes)."""

from __future__ import annotations

import pytest

from bot.memory import MemoryKeeper, SqliteMemoryStore, valid_user_id
from bot.memory.keeper import fact_in
from processors.observers.turn_record import TurnRecord
from tests.support.settings import local_settings


@pytest.mark.parametrize("said, fact", [
    ("Please remember that my dog is called Rex.", "my dog is called Rex"),
    ("remember my flight is on Friday", "my flight is on Friday"),
    ("Do you remember?", None),
    ("What is the capital of France?", None),
])
def test_a_fact_is_what_the_user_asked_to_be_remembered(said, fact):
    assert fact_in(said) == fact


def test_user_ids_are_opaque_and_bounded():
    assert valid_user_id("u-42@example.com") == "u-42@example.com"
    assert valid_user_id(None) is None and valid_user_id("") is None
    for bad in ("a b", "x" * 129, "../etc", "ü", 42, {"id": "u"}):  # JSON (client-ready) too
        with pytest.raises(ValueError):
            valid_user_id(bad)


async def test_the_newest_facts_come_first_and_the_whole_stays_within_its_budget(tmp_path):
    settings = local_settings(memory_max_chars=300, memory_path=tmp_path / "m.sqlite3")
    keeper = MemoryKeeper(settings, SqliteMemoryStore(settings.memory_path))
    keep = keeper.keeper_of("u1", "s1")
    assert await keeper.instructions_for("u1") == settings.system_prompt  # nothing kept yet
    for n in range(30):
        await keep(TurnRecord(session_id="s", turn=n,
                              user_text=f"remember that fact number {n} holds"))
    await keeper.written()
    prompt = await keeper.instructions_for("u1")
    added = prompt.removeprefix(settings.system_prompt + "\n\n")
    assert len(added) <= 300
    assert "fact number 29 holds" in added and "fact number 10 holds" not in added
    assert added.index("number 29") < added.index("number 28")
    assert (await keeper.load("u1")).facts[-1] == "fact number 29 holds"
    assert await keeper.delete("u1") and await keeper.load("u1") is None
