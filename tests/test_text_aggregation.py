"""The TTS text aggregator: the first phrase or clause of a reply goes early, then whole
sentences."""

from bot.config import FirstChunk
from bot.text_aggregation import FirstChunkTextAggregator, speakable_chunk


def FirstClauseTextAggregator():
    return FirstChunkTextAggregator(first_chunk=FirstChunk.CLAUSE)


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
    reply = ("Paris is the capital of France, and it is famous for the Eiffel Tower. "
             "It has, of course, museums.")
    assert await chunks(aggregator, tokens_of(reply)) == [
        "Paris is the capital of France,",
        "and it is famous for the Eiffel Tower.",
        "It has, of course, museums.",
    ]
    assert await chunks(aggregator, tokens_of("Well, that is all, thanks.")) == [
        "Well, that is all,", "thanks."]


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


async def test_phrase_cut_before_the_first_phrase_opener_after_three_words():
    aggregator = FirstChunkTextAggregator()  # the default: phrase
    assert await chunks(aggregator, tokens_of("The capital of Japan is Tokyo. It is big.")) == [
        "The capital of Japan", "is Tokyo.", "It is big."]
    assert await chunks(aggregator, tokens_of("Romeo and Juliet were written by Shakespeare.")) == [
        "Romeo and Juliet", "were written by Shakespeare."]
    # Two words before the opener are too few to speak alone; a clause comes first here.
    assert await chunks(aggregator, tokens_of("A spider has eight legs, like all spiders.")) == [
        "A spider has eight legs,", "like all spiders."]
    # A one-sentence answer with no opener after three words stays whole.
    assert await chunks(aggregator, tokens_of("Water boils at 100 degrees.")) == [
        "Water boils at 100 degrees."]


async def test_phrase_cut_after_eight_words_at_most_and_only_once_per_reply():
    aggregator = FirstChunkTextAggregator()
    reply = ("Light bends inside raindrops splitting white sunlight beautifully everywhere today. "
             "It is in the sky.")
    assert await chunks(aggregator, tokens_of(reply)) == [
        "Light bends inside raindrops splitting white sunlight beautifully",
        "everywhere today.",
        "It is in the sky.",
    ]
    assert await chunks(aggregator, tokens_of("The sky is blue because of scattering.")) == [
        "The sky is blue", "because of scattering."]


async def test_sentence_mode_does_not_cut():
    aggregator = FirstChunkTextAggregator(first_chunk=FirstChunk.SENTENCE)
    assert await chunks(aggregator, tokens_of("The capital of Japan, of course, is Tokyo.")) == [
        "The capital of Japan, of course, is Tokyo."]


def test_a_phrase_cut_mid_sentence_is_spoken_with_a_comma():
    assert speakable_chunk("The capital of Japan") == "The capital of Japan,"
    assert speakable_chunk("is Tokyo.") == "is Tokyo."
    assert speakable_chunk("Paris is the capital of France,") == "Paris is the capital of France,"
