"""How a new session begins: a resumed conversation goes on where it stopped, a user the
memory knows starts with what they said before, anyone else with the default prompt.
Shared by the server (sessions in its own process) and each session process."""

from __future__ import annotations

from bot.config import Settings
from bot.local.models import LocalModels
from bot.memory.keeper import MemoryKeeper
from bot.session import Session
from bot.providers import Providers
from web.resume import ResumeKeeper


async def open_session(
    settings: Settings,
    models: LocalModels,
    providers: Providers,
    transport: str,
    *,
    user_id: str | None,
    saved: dict | None,
    memory: MemoryKeeper | None,
    resumes: ResumeKeeper | None,
    observers: list,
    session_id: str | None = None,
) -> Session:
    """A session; `saved` is the conversation being resumed (None: a new one)."""
    prompt, history = settings.system_prompt, []
    if saved is not None:
        history, user_id = saved["messages"], saved["user_id"]
        prompt = saved["instructions"] or prompt
    elif memory is not None and user_id is not None:
        prompt = await memory.instructions_for(user_id)
    session = Session(
        settings=settings.model_copy(update={"system_prompt": prompt}),
        models=models,
        transport_kind=transport,
        greeting="" if history else settings.greeting,
        observers=observers,
        history=history,
        providers=providers,
        user_id=user_id,
        **({"id": session_id} if session_id else {}),
    )
    if memory is not None:
        memory.enrol(session, named_by_client=saved is None)
    if resumes is not None:
        resumes.enrol(session)
    return session
