"""The admin API of per-user memory (bot/memory/):

GET    /api/users/{user_id}/memory   what is kept of a user
DELETE /api/users/{user_id}/memory   forget the user (their next session starts blank;
                                     a session of theirs still live keeps what follows)
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, Field

from bot.config import Settings
from bot.memory import MemoryKeeper
from bot.memory.keeper import USER_ID
from web.admin import admin_router


class UserMemoryInfo(BaseModel):
    user_id: str
    facts: list[str] = Field(description="What the user asked the agent to remember, oldest first")
    recent: list[str] = Field(description="The user's most recent words, oldest first")
    summary: str = Field(description="The LLM's notes on their conversations so far")
    updated: float = Field(description="Unix time of the last change")


class Forgotten(BaseModel):
    user_id: str
    deleted: bool = Field(description="False: nothing was kept of this user")


def user_memory_router(settings: Settings, keeper: MemoryKeeper) -> APIRouter:
    router = admin_router(
        settings,
        prefix="/api/users",
        tags=["admin"],
        unavailable="The memory store is unavailable",
    )

    UserId = Path(pattern=f"^{USER_ID.pattern}$", description="The client's opaque user id")

    async def attempt(call):
        try:
            return await call
        except Exception as e:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"the memory store is unavailable: {e}"
            ) from e

    @router.get(
        "/{user_id}/memory",
        response_model=UserMemoryInfo,
        responses={404: {"description": "Nothing is kept of this user"}},
        summary="What is remembered of a user",
    )
    async def get_memory(user_id: str = UserId):
        memory = await attempt(keeper.load(user_id))
        if memory is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"nothing is kept of user {user_id!r}")
        return UserMemoryInfo(
            user_id=user_id,
            facts=memory.facts,
            recent=memory.recent,
            summary=memory.summary,
            updated=memory.updated,
        )

    @router.delete("/{user_id}/memory", response_model=Forgotten, summary="Forget a user")
    async def delete_memory(user_id: str = UserId):
        return Forgotten(user_id=user_id, deleted=await attempt(keeper.delete(user_id)))

    return router
