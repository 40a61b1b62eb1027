"""A stand-in for the speech gate the barge-in judgement (bot/turns/barge_in.py) reads, for
the tests of what words heard over the bot mean."""

SAID = "Plants make their food in the leaves, by photosynthesis."


class SaidLately:
    """The speech gate's one answer the judgement reads: what the bot said lately."""

    def __init__(self, text: str):
        self.text, self.held, self.cut_off = text, False, False

    def recent_text(self, since: float | None = None) -> str:
        return self.text

    def release(self) -> None:
        self.held = False
