"""Warm the local LLM's prompt cache before the first session."""

from __future__ import annotations

from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.turns.user_turn_completion_mixin import UserTurnCompletionConfig

from bot.config import Settings, Stage
from bot.local.models import LocalModels
from bot.providers import create_knowledge, create_llm, runs_locally


async def warm_up_llm(settings: Settings, models: LocalModels) -> None:
    """Send one request shaped exactly like a session's first turn (same system
    instruction, same tools, through the same service and adapter), so llama.cpp has that
    prefix in its cache and a real first turn only evaluates the user's words. Without it
    the first answer of a session waits for the whole tool prompt to be read."""
    if not runs_locally(settings, Stage.LLM):
        return
    llm = create_llm(settings.model_copy(update={"llm_max_tokens": 1}), models)
    if settings.llm_turn_completion:
        # As Pipecat composes it once the turn strategy switches the filter on: after the
        # system prompt, one blank line between (~10 s for the local model to read).
        llm.append_system_instruction(UserTurnCompletionConfig().completion_instructions)
    tools, _ = create_knowledge(settings)
    context = LLMContext(messages=[{"role": "user", "content": "Hello."}])
    if tools:
        context = LLMContext(messages=context.messages, tools=ToolsSchema(tools))
    stream = await llm.get_chat_completions(context)
    async for _ in stream:
        pass
