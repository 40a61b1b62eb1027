"""What a session remembers of its user, and what it keeps for the next one.

Each turn's words are kept as they happen (facts the user asked to be remembered, their
latest words); when a session ends, the LLM rewrites the user's rolling summary from the
previous one and that conversation (MEMORY_SUMMARIZE), out of band.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from loguru import logger
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import LLMService

from bot.config import Settings
from bot.memory.store import MemoryStore, RedisMemoryStore, SqliteMemoryStore, UserMemory
from processors.observers.turn_metrics import TurnSubscriber
from processors.observers.turn_record import TurnRecord

if TYPE_CHECKING:
    from bot.session import Session

# An opaque id of the client's choosing: letters, digits and . _ : @ -, at most 128.
USER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
# "Remember that my dog is called Rex", "please remember my flight is on Friday".
REMEMBER = re.compile(r"\bremember\b\s*(?:that\s+)?(?P<fact>[^.!?]*\w[^.!?]*)", re.IGNORECASE)
MAX_FACTS = 20
MAX_RECENT = 5
MAX_WORDS_CHARS = 200
MAX_SUMMARY_CHARS = 600
SUMMARY_TOKENS = 150
SUMMARY_INSTRUCTION = (
    "You keep notes about a user of a voice assistant, for its next conversations with them. "
    "Given your previous notes and the latest conversation, write the updated notes: at most "
    "three short sentences of what is worth remembering about the user (who they are, what "
    "they want, what they asked you to remember). Plain text, no preamble."
)


def valid_user_id(user_id: object) -> str | None:
    """The id, or None for none; ValueError for one that is not an opaque id."""
    if user_id is None or user_id == "":
        return None
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        raise ValueError("user_id must be 1-128 letters, digits or . _ : @ -")
    return user_id


def fact_in(text: str) -> str | None:
    """What the user asked to be remembered, if they did."""
    match = REMEMBER.search(text)
    if not match:
        return None
    return match.group("fact").strip(" ,;:")[:MAX_WORDS_CHARS] or None


class MemoryKeeper:
    """Per-user memory for the sessions of one server (MEMORY_ENABLED)."""

    def __init__(
        self,
        settings: Settings,
        store: MemoryStore | None = None,
        summarizer: Callable[[], LLMService | None] | None = None,
    ):
        """`summarizer()` gives the LLM that writes the rolling summary (None: none)."""
        self.settings = settings
        self._summarizer = summarizer if settings.memory_summarize else None
        self._llm: LLMService | None = None
        self._conversations: dict[str, tuple[str, list[str]]] = {}  # session → (user, lines)
        if store is None:
            store = (
                RedisMemoryStore(settings.redis_url.get_secret_value())
                if settings.cluster
                else SqliteMemoryStore(settings.memory_path)
            )
        self.store = store
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._writes: set[asyncio.Task] = set()

    async def load(self, user_id: str) -> UserMemory | None:
        return await self.store.load(user_id)

    async def delete(self, user_id: str) -> bool:
        async with self._locks[user_id]:
            return await self.store.delete(user_id)

    async def instructions_for(self, user_id: str, prompt: str | None = None) -> str:
        """`prompt` (default: the system prompt) with what is remembered of the user, within
        MEMORY_MAX_CHARS.

        If the store cannot be read, the session starts without memory (logged)."""
        prompt = self.settings.system_prompt if prompt is None else prompt
        try:
            memory = await self.store.load(user_id)
        except Exception as e:
            logger.warning(f"User memory could not be read ({e}); the session starts without it")
            return prompt
        if memory is None or not (memory.facts or memory.recent or memory.summary):
            return prompt
        return f"{prompt}\n\n{self.describe(memory)}"

    def describe(self, memory: UserMemory) -> str:
        """Newest facts first, then the user's last words, cut to MEMORY_MAX_CHARS."""
        budget = self.settings.memory_max_chars
        lines = [
            "What you remember about this user from earlier conversations (use it when "
            "it helps; do not recite it unasked):"
        ]
        used = len(lines[0])
        sections = [
            ("The user asked you to remember:", memory.facts[::-1]),
            ("Your notes from earlier conversations:", [memory.summary] if memory.summary else []),
            ("Their most recent words:", memory.recent[::-1]),
        ]
        for title, items in sections:
            if not items or used + len(title) + 1 > budget:
                continue
            lines.append(title)
            used += len(title) + 1
            for item in items:
                line = f"- {item}"
                if used + len(line) + 1 > budget:
                    break
                lines.append(line)
                used += len(line) + 1
        return "\n".join(lines)

    def keeper_of(self, user_id: str, session_id: str) -> TurnSubscriber:
        """A session's turn subscriber that keeps each turn's words as they happen (so a
        dropped connection or a dead node loses nothing said before); `ended(session_id)`
        then summarises the conversation."""
        lines: list[str] = []
        if self._summarizer is not None:
            self._conversations[session_id] = (user_id, lines)

        async def keep(record: TurnRecord) -> None:
            words = record.user_text.strip()
            if words:  # written apart from the session: its end does not cancel the write
                self._spawn(self._keep(user_id, words))
                lines.append(f"User: {words}")
            if record.bot_text.strip():
                lines.append(f"Assistant: {record.bot_text.strip()}")

        return keep

    def enrol(self, session: Session, *, named_by_client: bool = True) -> None:
        """Keep `session`'s turns for its user, if it has one (its instructions already hold
        what is remembered: `instructions_for`); with `named_by_client`, the client's
        client-ready message may name the user (`client_ready`)."""
        if session.user_id is not None:
            session.on_turn.append(self.keeper_of(session.user_id, session.id))
        if named_by_client:
            session.on_client_ready.append(self.client_ready)

    async def client_ready(self, session: Session, data: dict) -> None:
        """A session's `on_client_ready` hook: a `user_id` in the client's RTVI client-ready
        data names the session's user, unless its URL already did (that one wins). What is
        kept of the user joins the instructions before the greeting, and the session's turns
        are kept from now on. A bad id is refused (an RTVI error); the session goes on
        without memory."""
        sent = data.get("user_id")
        if sent is None or sent == "":
            return
        log = logger.bind(session_id=session.id)
        if session.user_id is not None:
            if sent != session.user_id:
                log.warning("The client-ready user_id is ignored: the URL's user_id names the user")
            return
        try:
            user_id = valid_user_id(sent)
        except ValueError as e:
            log.warning(f"The client-ready user_id is refused ({e}); the session keeps no memory")
            await session.worker.rtvi.send_error(f"user_id refused: {e}; nothing is remembered")
            return
        session.user_id = user_id
        instructions = await self.instructions_for(user_id, session.control.instructions)
        if instructions != session.control.instructions:  # something is remembered
            await session.control.update_instructions(instructions)
        session.metrics.subscribe(self.keeper_of(user_id, session.id))

    def on_session_event(self, event: str, live, _=None) -> None:
        """A session registry listener: a session that ended is summarised."""
        if event == "ended":
            self.ended(live.id)

    def ended(self, session_id: str) -> None:
        """A session has ended: its user's rolling summary is rewritten (in the background)."""
        user_id, lines = self._conversations.pop(session_id, (None, []))
        if user_id is not None and lines:
            self._spawn(self._summarize(user_id, lines))

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _summarize(self, user_id: str, lines: list[str]) -> None:
        try:
            if self._llm is None:
                self._llm = self._summarizer()
            if self._llm is None:
                return
            previous = (await self.store.load(user_id) or UserMemory()).summary
            conversation = "\n".join(lines)[-4000:]
            context = LLMContext(
                messages=[
                    {
                        "role": "user",
                        "content": (
                            f"Previous notes: {previous or '(none)'}\n\n"
                            f"Latest conversation:\n{conversation}"
                        ),
                    }
                ]
            )
            summary = await self._llm.run_inference(
                context, max_tokens=SUMMARY_TOKENS, system_instruction=SUMMARY_INSTRUCTION
            )
            if not summary or not summary.strip():
                return
            async with self._locks[user_id]:
                memory = await self.store.load(user_id)
                if memory is None:  # forgotten (DELETE) since: the summary is not kept
                    return
                memory.summary = summary.strip()[:MAX_SUMMARY_CHARS]
                memory.updated = time.time()
                await self.store.save(user_id, memory)
        except Exception as e:
            logger.warning(f"The user's conversation could not be summarised ({e})")

    async def _keep(self, user_id: str, words: str) -> None:
        try:
            async with self._locks[user_id]:
                memory = await self.store.load(user_id) or UserMemory()
                if (fact := fact_in(words)) and fact not in memory.facts:
                    memory.facts = (memory.facts + [fact])[-MAX_FACTS:]
                memory.recent = (memory.recent + [words[:MAX_WORDS_CHARS]])[-MAX_RECENT:]
                memory.updated = time.time()
                await self.store.save(user_id, memory)
        except Exception as e:
            logger.warning(f"User memory could not be kept ({e}); the session goes on")

    async def written(self) -> None:
        """Returns once every turn's write so far is done."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def close(self) -> None:
        await self.written()
        await self.store.close()
