"""The local knowledge base: a folder of Markdown/text files, searched before the LLM.

Indexed once per process with SQLite FTS5 (Porter stemming) and shared by every session.
Two ways in:

- `retrieve(question)`: the passages that answer a question *about the knowledge base*, or
  none. A small local LLM gets them with the user's turn (processors/knowledge_retrieval.py)
  instead of a search tool it cannot use well; a question the knowledge base does not match
  gets no knowledge-base text at all, so its made-up company never leaks into general answers.
- `search(query)`: the `web_search` tool's backend for a cloud LLM without a Tavily key.

Whether a question matches is a score, not a guess: each of the question's words found in
a passage counts its information content in *general English* (`9 - Zipf frequency`, from
`wordfreq`: log10 of one over its frequency per billion words). A dozen files cannot tell
that "loyalty", "minutes" or "roaming" are everyday words and "Brightline" is not; English
can. The threshold (KNOWLEDGE_MATCH_THRESHOLD) is tuned on the spoken-QA yardstick
(bench/spoken_qa.py, bench/RESULTS.md).
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from loguru import logger

# The Markdown files shipped in bot/knowledge/ (this module is bot/tools/knowledge.py).
DEFAULT_KNOWLEDGE_DIR = Path(__file__).parent.parent / "knowledge"
KNOWLEDGE_SUFFIXES = {".md", ".markdown", ".txt"}
MAX_KNOWLEDGE_FILE_BYTES = 512 * 1024
PASSAGE_CHARS = 700  # paragraphs are merged into passages of about this size
RELATIVE_SCORE_FLOOR = 0.4  # a passage is returned if at least this relevant as the best
MIN_TERM_COVERAGE = 0.5  # ...and if it has at least this share of the query's words
# A local LLM reads its notes at ~100 tokens a second on two cores before it says a word:
# a question gets the passages that match it about as well as the best one, not every
# passage over the threshold (most share only the company's name with it).
CLOSE_MATCH_RATIO = 0.85
# A word never seen in English (a made-up name) carries this much information, like the
# rarest words wordfreq knows.
MAX_WORD_INFORMATION = 9.0
RARE_WORD_INFORMATION = 6.0  # Zipf 3 or less: about once per million words, or rarer

_STOPWORDS = frozenset(
    """a an and are as at be by can could did do does for from has have how i if in is it
    its me my of on or our please should tell than that the their them then there these
    they this to us was we what when where which who whom why will with would you your
    about any some much many know""".split()
)


@dataclass(frozen=True)
class SearchResult:
    title: str
    content: str
    url: str = ""


@dataclass(frozen=True)
class Match:
    """A passage and how strongly a question matches it (see the module's docstring)."""

    result: SearchResult
    score: float


def _passages(text: str) -> tuple[str | None, list[str]]:
    """A file's first heading and its body cut into passages of whole paragraphs."""
    title = None
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        block = " ".join(line.strip() for line in block.strip().splitlines())
        if not block:
            continue
        if block.startswith("#"):
            heading = block.lstrip("#").strip()
            title = title or heading
            continue
        paragraphs.append(block)
    passages: list[str] = []
    for paragraph in paragraphs:
        if passages and len(passages[-1]) + len(paragraph) < PASSAGE_CHARS:
            passages[-1] += " " + paragraph
        else:
            passages.append(paragraph)
    return title, passages


def query_terms(query: str) -> list[str]:
    """The meaningful words of a free-text query, once each."""
    words = [w for w in re.findall(r"\w+", query.lower()) if len(w) > 1 and w not in _STOPWORDS]
    return list(dict.fromkeys(words))


def fts_query(terms: list[str]) -> str:
    """Words → an FTS5 query: every word, OR-ed, each one quoted."""
    return " OR ".join(f'"{w}"' for w in terms)


@lru_cache(maxsize=4096)
def word_information(word: str) -> float:
    """How much a word tells about a text, from its frequency in general English."""
    from wordfreq import zipf_frequency

    return max(0.0, MAX_WORD_INFORMATION - zipf_frequency(word, "en"))


class KnowledgeBase:
    """Markdown/text files indexed with SQLite FTS5; one instance per folder per process."""

    name = "knowledge"
    _shared: dict[Path, KnowledgeBase] = {}
    _shared_lock = threading.Lock()

    def __init__(self, folder: Path, *, max_results: int = 3):
        started = time.monotonic()
        self.folder = folder
        self.max_results = max_results
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(
            "CREATE VIRTUAL TABLE passages USING fts5("
            "title, body, source UNINDEXED, tokenize = 'porter unicode61')"
        )
        self.files = 0
        self.passages = 0
        if not folder.is_dir():
            logger.warning(f"Knowledge base folder {folder} does not exist; search finds nothing")
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.suffix.lower() not in KNOWLEDGE_SUFFIXES or not path.is_file():
                continue
            if path.stat().st_size > MAX_KNOWLEDGE_FILE_BYTES:
                logger.warning(f"Knowledge base: skipped {path.name} (over 512 KB)")
                continue
            heading, passages = _passages(path.read_text(encoding="utf-8", errors="replace"))
            title = heading or path.stem.replace("-", " ").replace("_", " ")
            rows = [(title, p, path.name) for p in passages]
            self._db.executemany("INSERT INTO passages VALUES (?, ?, ?)", rows)
            self.files += 1
            self.passages += len(rows)
        self._db.commit()
        # Words written together in the files ("Brightline") that a recogniser may hear as
        # two ("bright line"): joined again before searching.
        self._vocabulary = {
            w.lower()
            for (text,) in self._db.execute("SELECT title || ' ' || body FROM passages")
            for w in re.findall(r"\w+", text)
        }
        logger.info(
            f"Knowledge base: {self.files} files, {self.passages} passages from {folder} "
            f"indexed in {1000 * (time.monotonic() - started):.0f} ms"
        )

    @classmethod
    def shared(cls, folder: Path, *, max_results: int = 3) -> KnowledgeBase:
        """The process-wide index of `folder`, built on first use."""
        key = folder.resolve()
        with cls._shared_lock:
            kb = cls._shared.get(key)
            if kb is None:
                kb = cls._shared[key] = cls(key, max_results=max_results)
            return kb

    def vocabulary(self, limit: int = 40) -> str:
        """The files' rare words (names, jargon) as written, most used first: a prompt that
        lets a recogniser spell them ("Brightline", not "Bright line")."""
        with self._lock:
            texts = [
                text for (text,) in self._db.execute("SELECT title || ' ' || body FROM passages")
            ]
        counts: dict[str, int] = {}
        for text in texts:
            for word in re.findall(r"(?<![\w-])[A-Za-z][A-Za-z-]*[A-Za-z](?![\w-])", text):
                # Names and brands as written; not settings (ALL_CAPS), not everyday words.
                named = any(c.isupper() for c in word) and not (word.isupper() and len(word) > 4)
                if named and word_information(word.lower()) >= RARE_WORD_INFORMATION:
                    counts[word] = counts.get(word, 0) + 1
        return ", ".join(sorted(counts, key=lambda w: -counts[w])[:limit])

    def _terms(self, query: str) -> list[str]:
        words = re.findall(r"\w+", query.lower())
        joined = {}  # (half, half) -> the word as the files write it
        for a, b in zip(words, words[1:]):
            # "Bright Lines" too: a plural or a possessive the recogniser wrote as one.
            for word in (a + b, (a + b)[:-1] if b.endswith("s") else None):
                if word in self._vocabulary and min(len(a), len(b)) > 1:
                    joined[(a, b)] = word
                    break
        # ...and its halves no longer count on their own ("bright", "line" matched a slogan).
        halves = {w for pair in joined for w in pair}
        terms = [w for w in query_terms(query) if w not in halves]
        return list(dict.fromkeys(terms + list(joined.values())))

    def _ranked(self, terms: list[str]) -> list[tuple[int, str, str, str, float, set[str]]]:
        """Passages with any of `terms`, best BM25 first, each with the terms it holds."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rowid, title, body, source, bm25(passages, 4.0, 1.0) AS score "
                "FROM passages WHERE passages MATCH ? ORDER BY score",
                (fts_query(terms),),
            ).fetchall()
            # Which of the query's words each passage has (stemmed as the index is).
            held: dict[int, set[str]] = {}
            for term in terms:
                for (rowid,) in self._db.execute(
                    "SELECT rowid FROM passages WHERE passages MATCH ?", (f'"{term}"',)
                ):
                    held.setdefault(rowid, set()).add(term)
        return [(*row, held.get(row[0], set())) for row in rows]

    def lookup(self, query: str, limit: int | None = None) -> list[SearchResult]:
        """The most relevant passages for a search query (the `web_search` backend)."""
        terms = self._terms(query)
        if not terms:
            return []
        # A passage must have at least half the query's words: "seven times eight" is not
        # answered by a page that mentions a repair *time*.
        needed = max(1, math.ceil(len(terms) * MIN_TERM_COVERAGE))
        rows = [r for r in self._ranked(terms) if len(r[5]) >= needed][: limit or self.max_results]
        # bm25 is negative, lower is better. Passages far weaker than the best one are
        # noise that only distracts a small model.
        best = rows[0][4] if rows else 0.0
        return [
            SearchResult(title=t, content=b, url=f"kb://{s}")
            for _, t, b, s, score, _ in rows
            if score <= RELATIVE_SCORE_FLOOR * best
        ]

    def matches(self, question: str) -> list[Match]:
        """Every passage holding a word of `question`, with its match score, best first."""
        terms = self._terms(question)
        if not terms:
            return []
        found = [
            Match(
                SearchResult(title=t, content=b, url=f"kb://{s}"),
                sum(word_information(w) for w in held),
            )
            for _, t, b, s, _, held in self._ranked(terms)
        ]
        return sorted(found, key=lambda m: -m.score)

    def retrieve(self, question: str, threshold: float) -> list[SearchResult]:
        """The passages that answer `question`, or [] when it is not about this knowledge base:
        those over `threshold` that match it about as well as the best one."""
        matched = [m for m in self.matches(question) if m.score >= threshold]
        close = [m.result for m in matched if m.score >= CLOSE_MATCH_RATIO * matched[0].score]
        return close[: self.max_results]

    async def search(self, query: str) -> list[SearchResult]:
        # A dozen-file index answers in well under a millisecond: no thread needed.
        return self.lookup(query)


def format_passages(results: list[SearchResult], max_chars: int) -> str:
    """Passages as compact text for the LLM, never longer than `max_chars`."""
    text = "\n".join(f"- {r.title}: {r.content}" if r.title else f"- {r.content}" for r in results)
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 1)].rstrip() + "…"
    return text
