"""`run_bot`: the one voice pipeline every transport shares.

    transport in → echo cancel → STT → denoise → backchannels → user context (VAD + turns)
      → LLM → TTS → speech gate → transport out → echo reference → assistant context

One call is one session: its own services, VAD and turn state, context and `PipelineWorker`.
Model weights are shared through `Session.models`.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import LLMMessagesAppendFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMAssistantAggregatorParams,
    LLMContextAggregatorPair,
    LLMUserAggregator,
)
from pipecat.processors.aggregators.llm_text_processor import LLMTextProcessor
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.services.llm_service import LLMService
from pipecat.transports.base_transport import BaseTransport
from pipecat.utils.text.base_text_aggregator import BaseTextAggregator
from pipecat.workers.runner import WorkerRunner

from bot.config import Settings
from bot.local.models import LocalModels
from bot.logs import log_turn, session_context
from bot.providers import Services, create_knowledge, stt_answers_every_segment
from bot.session import Session
from bot.session_control import SessionControl
from bot.turns.backchannel_filter import BackchannelFilter
from bot.turns.barge_in import BargeIn
from bot.turns.barge_in_words import BargeInPolicy
from bot.turns.idle import IdleCheckIn
from bot.turns.turn_taking import EMPTY_TURN_PROMPT, EMPTY_TURN_REPLY, create_user_params
from processors.client_ready import ClientReadyRTVIProcessor
from processors.context_budget import ContextBudget, tools_tokens
from processors.denoise import Denoiser
from processors.echo_cancel import BotAudioTap, EchoCanceller, EchoReference
from processors.empty_turn_reply import EmptyTurnReply
from processors.input_audio_stop import InputAudioStop
from processors.llm_error_apology import LLMErrorApology
from processors.observers.group import ObserverGroup
from processors.observers.session_state import SessionState, SessionStateObserver
from processors.observers.turn_metrics import TurnMetricsObserver
from processors.observers.turn_record import TurnRecord
from processors.recording import SessionRecorder
from processors.sequential_bridge import SequentialBridge
from processors.speech_gate import SpeechGate
from processors.unsure_transcripts import UnsureTranscripts


def create_memory(
    settings: Settings, context: LLMContext, system_instruction
) -> tuple[ContextBudget, LLMAssistantAggregatorParams]:
    """The context's token budget and, with CONTEXT_SUMMARIZE, Pipecat's summarizer."""
    budget = ContextBudget(settings.context_token_budget, system_instruction)
    if not settings.context_summarize:
        return budget, LLMAssistantAggregatorParams()
    fixed = len(settings.system_prompt) // 4 + tools_tokens(context)
    return budget, LLMAssistantAggregatorParams(
        enable_auto_context_summarization=True,
        auto_context_summarization_config=budget.summarizer_config(fixed),
    )


async def run_bot(transport: BaseTransport, session: Session) -> None:
    """Run one conversation over `transport` until it ends or the client leaves."""

    # Every line logged by this session, Pipecat's own included (every task it starts
    # inherits the context), carries the session id and the turn in progress.
    def current_turn() -> int | None:
        return session.metrics.turn_number or None if session.metrics else None

    with session_context(session.id, turn=current_turn):
        await _run_bot(transport, session)


@dataclass
class VoicePipeline:
    """What `build_pipeline` put together: the pipeline and the parts a session steers."""

    pipeline: Pipeline
    context: LLMContext
    user_aggregator: LLMUserAggregator
    assistant_aggregator: LLMAssistantAggregator
    budget: ContextBudget
    recorder: SessionRecorder | None


def build_pipeline(
    settings: Settings,
    services: Services,
    transport: BaseTransport,
    models: LocalModels,
    *,
    session_id: str = "",
    history: list[dict] | None = None,
) -> VoicePipeline:
    """The one voice pipeline (module docstring), around `services`; `models` gives the VAD
    and turn analyzers their shared weights."""
    stt, llm, tts = services.stt, services.llm, services.tts
    # Opt-in: a JSONL of turns and, with RECORDING_AUDIO, a stereo WAV (processors/recording.py).
    recorder = (
        SessionRecorder.from_settings(settings, session_id) if settings.recording_enabled else None
    )

    # A cloud LLM searches with a tool; a local one is told what a turn needs (passages, sums).
    tools, notes = create_knowledge(settings, local_llm=services.local_llm)
    messages = list(history or [])
    context = LLMContext(messages, tools=ToolsSchema(tools)) if tools else LLMContext(messages)
    if services.follow_conversation:  # the local recogniser hears in the conversation's words
        services.follow_conversation(context)
    # Every LLM request (system instruction + tools + turns) stays within CONTEXT_TOKEN_BUDGET.
    budget, assistant_params = create_memory(
        settings, context, lambda: llm.settings.system_instruction
    )
    # The bot's speech, paced so that it can pause while a barge-in is judged, and the
    # audio it sent, which the echo canceller subtracts from the microphone.
    gate = SpeechGate()
    echo_reference = EchoReference(settings.input_sample_rate)
    echo_canceller = EchoCanceller(
        echo_reference,
        enabled=settings.echo_cancel_enabled,
        noise_suppression=settings.echo_cancel_noise_suppression,
    )
    barge_in = BargeIn(
        gate,
        BargeInPolicy.from_settings(settings),
        settings.echo_tail_secs,
        echo_canceller,
        vad_start_secs=settings.vad_start_secs,
    )
    barge_in.stt_answers_every_segment = stt_answers_every_segment(settings)
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=create_user_params(settings, models, barge_in),
        assistant_params=assistant_params,
    )

    # With LLM_TURN_COMPLETION only the LLM's marker ends a turn: a fixed "didn't catch that"
    # in its place would leave the turn open, so words heard unsurely go to the LLM too.
    unsure = (
        None if settings.llm_turn_completion else UnsureTranscripts(settings.stt_unsure_logprob)
    )
    records_user_audio = bool(recorder and recorder.audio_path)
    pipeline = Pipeline(
        [
            transport.input(),
            echo_canceller,
            stt,
            # After the STT: the VAD and smart-turn hear denoised audio, the recogniser the
            # microphone's own (a denoiser costs Whisper words: docs/answers.md).
            Denoiser(
                engine=settings.denoiser,
                enabled=settings.denoise_enabled,
                echo_audible=lambda: barge_in.echo_may_be_heard,
            ),
            BackchannelFilter(barge_in),
            *([unsure] if unsure else []),  # how sure the recogniser was of each transcript
            user_aggregator,
            # The microphone's audio goes no further unless the recorder needs it.
            *([] if records_user_audio else [InputAudioStop()]),
            *reply_chain(
                settings, llm, budget=budget, notes=notes, unsure=unsure, tts_text=services.tts_text
            ),
            tts,
            gate,
            transport.output(),
            *([recorder.audio_processor()] if records_user_audio else []),
            BotAudioTap(echo_reference),
            assistant_aggregator,
        ]
    )
    return VoicePipeline(pipeline, context, user_aggregator, assistant_aggregator, budget, recorder)


def reply_chain(
    settings: Settings,
    llm: LLMService,
    *,
    budget: ContextBudget,
    notes: FrameProcessor | None = None,
    unsure: UnsureTranscripts | None = None,
    tts_text: BaseTextAggregator | None = None,
) -> list[FrameProcessor]:
    """What answers a finished user turn, from the user aggregator to the TTS, as
    `build_pipeline` runs it (tests run it between aggregators of their own)."""
    return [
        # A turn with no words, or only words heard unsurely: "Sorry, I didn't catch that."
        EmptyTurnReply(prompt=EMPTY_TURN_PROMPT, reply=EMPTY_TURN_REPLY, unsure=unsure),
        budget.guard(),  # the user's turns
        # A failed completion is answered with an apology, not silence (a cloud LLM's
        # fallback switcher handles its own failures and passes this by).
        LLMErrorApology(llm, apology=settings.fallback_apology),
        # A local LLM's notes (knowledge-base passages, sums) just before it.
        *([notes] if notes else []),
        llm,
        budget.guard(),  # re-runs after tool results (upstream)
        # STREAMING_BRIDGE=false: whole reply, then TTS (the benchmark's baseline).
        *([] if settings.streaming_bridge else [SequentialBridge()]),
        *([LLMTextProcessor(text_aggregator=tts_text)] if tts_text else []),
    ]


async def _run_bot(transport: BaseTransport, session: Session) -> None:
    settings = session.settings
    log = logger.bind(session_id=session.id)
    services = session.providers.services(settings, session.models)
    llm = services.llm
    built = build_pipeline(
        settings,
        services,
        transport,
        session.models,
        session_id=session.id,
        history=session.history,
    )
    pipeline, context, budget = built.pipeline, built.context, built.budget
    recorder, user_aggregator = built.recorder, built.user_aggregator

    metrics = TurnMetricsObserver(session.id)
    state = SessionStateObserver()

    observers = ObserverGroup(metrics, state, *session.observers)
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            enable_metrics=True,
            enable_usage_metrics=True,
            audio_in_sample_rate=settings.input_sample_rate,
            audio_out_sample_rate=settings.output_sample_rate,
        ),
        # Ours share one of Pipecat's observer queues (processors/observers/group.py);
        # TurnMetricsObserver times the turns, so Pipecat's own turn tracker is left out.
        observers=[observers],
        enable_turn_tracking=False,
        conversation_id=session.id,
        idle_timeout_secs=settings.idle_timeout_secs,
        rtvi_processor=ClientReadyRTVIProcessor(),
    )
    session.worker, session.context, session.metrics, session.state = (
        worker,
        context,
        metrics,
        state,
    )
    if settings.user_idle_secs:
        IdleCheckIn(
            check_in=settings.user_idle_check_in,
            goodbye=settings.user_idle_goodbye,
            idle_secs=settings.user_idle_secs,
            end_secs=settings.user_idle_end_secs,
        ).attach(user_aggregator, worker)
    session.control = SessionControl(
        worker=worker, llm=llm, context=context, instructions=settings.system_prompt, budget=budget
    )
    await observers.add(session.control)
    runner = WorkerRunner(handle_sigint=session.handle_sigint)

    # The client (RTVI) hears about every turn and state change, the host's subscribers too.
    async def tell_client(data: dict) -> None:
        await worker.queue_frame(RTVIServerMessageFrame(data=data))

    async def report_turn(record: TurnRecord) -> None:
        await tell_client({"type": "turn-metrics", **record.to_dict()})

    async def report_state(new_state: SessionState) -> None:
        await tell_client({"type": "state", "state": new_state.value})

    for subscriber in (
        report_turn,
        log_turn,
        *([recorder.write_turn] if recorder else []),
        *session.on_turn,
    ):
        metrics.subscribe(subscriber)
    for subscriber in (report_state, *session.on_state):
        state.subscribe(subscriber)

    @built.assistant_aggregator.event_handler("on_assistant_turn_stopped")
    async def on_assistant_turn_stopped(aggregator, message):
        for hook in session.on_reply:
            await hook(session)

    user_spoke = False

    @user_aggregator.event_handler("on_user_turn_started")
    async def on_user_turn_started(aggregator, strategy):
        nonlocal user_spoke
        user_spoke = True

    async def tell_session() -> None:
        await tell_client(
            {
                "type": "session",
                "session_id": session.id,
                "transport": session.transport_kind,
                "state": state.state.value,
                **({"resume_token": session.resume_token} if session.resume_token else {}),
            }
        )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        log.info(f"Client connected over {session.transport_kind}")
        if session.history:
            # A resumed conversation: a WebRTC client that re-offered by itself after losing
            # its connection does no new handshake, and needs the new ticket for the next.
            await tell_session()
        for hook in session.on_connected:
            await hook(session)

    @worker.rtvi.event_handler("on_client_ready")
    async def on_client_ready(rtvi):
        # Tell the session and greet once the client can hear it: a message sent while the
        # RTVI handshake is in flight may never reach the client.
        await tell_session()
        for hook in session.on_client_ready:  # e.g. the user's memory, before any greeting
            await hook(session, rtvi.client_ready_data)
        # A user who is already talking is heard, not talked over.
        if session.greeting and not user_spoke:
            if settings.greeting_from_llm:
                ask = f"(The caller has just connected. {session.greeting})"
                greet = LLMMessagesAppendFrame(
                    messages=[{"role": "user", "content": ask}], run_llm=True
                )
                await worker.queue_frames([greet])
            else:
                await worker.queue_frames([TTSSpeakFrame(session.greeting)])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        log.info("Client disconnected")
        await runner.cancel()

    await runner.add_workers(worker)
    try:
        await runner.run()
    finally:
        await metrics.flush()
        if recorder:
            recorder.close()
        for hook in session.on_end:
            try:
                await hook(session)
            except Exception:
                log.exception("A session-end hook failed")
        log.info(f"Session ended after {metrics.turns_completed} turns")
