"""The user's side of turn taking for one session: the VAD, when a turn starts (barge-in
judged by its words, bot/turns/barge_in.py) and when it ends (smart-turn checked against the
words and pauses, bot/turns/turn_end.py), idle and empty turns."""

from __future__ import annotations

from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.turns.empty_user_turn import EmptyUserTurnConfig
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import (
    FilterIncompleteUserTurnStrategies,
    UserTurnStrategies,
)

from bot.config import Settings
from bot.local.models import LocalModels
from bot.local.silero_vad import SharedSileroVADAnalyzer
from bot.local.smart_turn import SharedSmartTurnAnalyzer
from bot.providers import stt_answers_every_segment
from bot.turns.adaptive_vad import AdaptiveVADAnalyzer
from bot.turns.barge_in import BargeIn
from bot.turns.barge_in_start import BargeInStartStrategy
from bot.turns.turn_end import SentenceTurnStop

EMPTY_TURN_REPLY = "Sorry, I didn't catch that. Could you say it again?"
# What Pipecat's user aggregator would ask the LLM after a barge-in with no words;
# EmptyTurnReply says EMPTY_TURN_REPLY instead (processors/empty_turn_reply.py).
EMPTY_TURN_PROMPT = (
    f"The user spoke but it was not understood. Reply with exactly: {EMPTY_TURN_REPLY}"
)



def create_user_params(
    settings: Settings, models: LocalModels, barge_in: BargeIn
) -> LLMUserAggregatorParams:
    """VAD and turn taking for one session (their ONNX models are shared)."""
    # The VAD's loudness bar follows the room's noise floor (bot/turns/adaptive_vad.py).
    # ...and the speech it starts on is shorter while the bot talks into a microphone that
    # hears none of its echo (headphones, the browser's canceller): the echo's residue, at
    # 0.1 s, started turns of its own (bench/RESULTS.md, "Barge-in").
    params = VADParams(
        confidence=settings.vad_confidence,
        start_secs=settings.vad_start_secs,
        stop_secs=settings.vad_stop_secs,
        min_volume=settings.vad_min_volume,
    )
    if settings.vad_adaptive:
        vad = AdaptiveVADAnalyzer(
            session=models.silero_session,
            params=params,
            start_secs_over_bot=settings.vad_start_secs_over_bot,
            over_bot=lambda: barge_in.over_bot_without_echo,
        )
    else:
        vad = SharedSileroVADAnalyzer(session=models.silero_session, params=params)
    if settings.smart_turn_enabled:
        # Smart-turn, checked against the words and the speaker's pauses (bot/turns/turn_end.py),
        # with the answer started early on the words heard (SPECULATIVE_REPLY,
        # bot/turns/speculation.py).
        stop = SentenceTurnStop(
            final_per_segment=stt_answers_every_segment(settings),
            turn_analyzer=SharedSmartTurnAnalyzer(
                session=models.smart_turn_session,
                speculate=settings.smart_turn_speculate,
                params=SmartTurnParams(stop_secs=settings.smart_turn_stop_secs),
            ),
            speculate=settings.speculative_reply,
        )
    else:
        stop = SpeechTimeoutUserTurnStopStrategy()
    start = BargeInStartStrategy(
        barge_in=barge_in,
        false_interruption_secs=settings.false_interruption_secs,
        max_hold_secs=settings.barge_in_max_hold_secs,
        enable_interruptions=True,
    )
    # With LLM_TURN_COMPLETION the rules above only say when to ask the LLM; its marker ends
    # the turn (Pipecat wraps them in `deferred`).
    strategies = (
        FilterIncompleteUserTurnStrategies if settings.llm_turn_completion else UserTurnStrategies
    )
    return LLMUserAggregatorParams(
        vad_analyzer=vad,
        user_turn_strategies=strategies(start=[start], stop=[stop]),
        user_turn_stop_timeout=settings.user_turn_stop_timeout,
        user_idle_timeout=settings.user_idle_secs,
        # A barge-in nobody could transcribe: Pipecat decides when it deserves a reply,
        # EmptyTurnReply gives it (its default prompt, long and descriptive, was read aloud).
        empty_user_turn=EmptyUserTurnConfig(interrupted_prompt=EMPTY_TURN_PROMPT),
    )
