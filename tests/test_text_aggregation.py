"""The TTS text aggregator: the first clause of a reply goes early, then whole sentences."""

from bot.text_aggregation import FirstClauseTextAggregator


async def chunks(aggregator, tokens):
    out = []
    for token in tokens:
        out += [a.text async for a in aggregator.aggregate(token)]
    rest = await aggregator.flush()
    return out + ([rest.text] if rest and rest.text else [])


def tokens_of(text):
    return [text[i:i + 3] for i in range(0, len(text), 3)]  # LLM-like pieces


async def test_first_clause_then_sentences_and_the_next_reply_starts_over():
    aggregator = FirstClauseTextAggregator()
    reply = "Paris is the capital of France, and it is famous for the Eiffel Tower. It has, of course, museums."
    assert await chunks(aggregator, tokens_of(reply)) == [
        "Paris is the capital of France,",
        "and it is famous for the Eiffel Tower.",
        "It has, of course, museums.",
    ]
    assert await chunks(aggregator, tokens_of("Well, that is all, thanks.")) == ["Well, that is all,", "thanks."]


async def test_short_openings_and_numbers_are_not_clauses():
    aggregator = FirstClauseTextAggregator()
    assert await chunks(aggregator, tokens_of("Yes, it costs 1,000 dollars. Bye.")) == [
        "Yes, it costs 1,000 dollars.", "Bye."]


async def test_an_interruption_starts_the_next_reply_over():
    aggregator = FirstClauseTextAggregator()
    assert await chunks(aggregator, tokens_of("Paris is the capital of France, yes.")) == [
        "Paris is the capital of France,", "yes."]
    [a async for a in aggregator.aggregate("The first half of a clause")]
    await aggregator.handle_interruption()
    assert await chunks(aggregator, tokens_of("London is the capital city, of course.")) == [
        "London is the capital city,", "of course."]
