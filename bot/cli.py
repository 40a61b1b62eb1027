"""Command line: `python -m bot talk|demo|serve`."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from bot.config import Settings, Stage
from bot.logs import configure_logging

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="A real-time voice agent on Pipecat."
)

STAGE_COLUMNS = (
    "vad",
    "stt",
    "turn",
    "llm_ttft",
    "tool",
    "tts_ttfb",
    "voice_to_voice",
    "barge_in_stop",
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def load_models(settings: Settings, progress: bool = False, providers=None):
    """Load and warm the local models the providers need (bot/providers.py's by default)."""
    from bot.local.models import LocalModels
    from bot.providers import PROVIDERS

    providers = providers or PROVIDERS
    models = LocalModels(settings)
    stages = [
        (Stage.STT, "speech-to-text (Whisper tiny.en)"),
        (Stage.LLM, "language model (llama.cpp)"),
        (Stage.TTS, "text-to-speech (Piper)"),
    ]
    needed = providers.local_stages(settings)
    local = [(stage, label) for stage, label in stages if stage in needed]
    for index, (stage, label) in enumerate(local, 1):
        if progress:
            typer.echo(f"[{index}/{len(local)}] loading {label}…")
        models.warm_up(stt=stage is Stage.STT, llm=stage is Stage.LLM, tts=stage is Stage.TTS)
    if Stage.LLM in needed:
        from bot.local.warm_up import warm_up_llm

        asyncio.run(warm_up_llm(settings, models))
    return models


def _parse_at(value: str):
    """`12.5` → absolute seconds; `+1.5` → seconds into the bot's previous answer."""
    try:
        if value.startswith("+"):
            return None, float(value[1:])
        return float(value), None
    except ValueError:
        _fail(f"--at {value!r}: expected seconds (12.5) or seconds into the bot's answer (+1.5)")


def _print_turns(turns: list[dict]) -> None:
    for t in turns:
        typer.echo(f"\n[turn {t['turn']}] you: {t['user_text']}")
        typer.echo(f"          bot: {t['bot_text']}{'  (interrupted)' if t['interrupted'] else ''}")
        stages = t["stages_ms"]
        typer.echo(
            "          " + "  ".join(f"{k}={stages[k]:.0f}ms" for k in STAGE_COLUMNS if k in stages)
        )


@app.command()
def talk(
    inputs: list[Path] = typer.Option(
        ..., "--in", help="A WAV of the user speaking; repeat for more turns."
    ),
    at: list[str] = typer.Option(
        [],
        "--at",
        help="When the 2nd, 3rd… --in starts: seconds since the start (12.5), or seconds "
        "into the bot's previous answer (+1.5) to barge in. Default: after the bot answers.",
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the bot's audio (WAV)."),
    transcript: Path = typer.Option(..., "--transcript", help="Where to write the turns (JSONL)."),
    fast: bool = typer.Option(
        False, "--fast", help="Deliver speech and play answers faster than real time."
    ),
):
    """Hold a conversation from WAV files through the full voice pipeline."""
    from bot.conversation import converse
    from bot.session import Session
    from transports.file import FileTransportParams, Utterance
    from transports.wav import AudioFileError, load_wav

    settings = Settings()
    configure_logging(settings)
    if len(at) > max(0, len(inputs) - 1):
        _fail(
            f"{len(at)} --at values for {len(inputs)} --in files: "
            "--at times the 2nd, 3rd… --in"
        )
    script = []
    for index, path in enumerate(inputs):
        try:
            audio = load_wav(path, settings.input_sample_rate)
        except AudioFileError as e:
            _fail(str(e))
        absolute, into_answer = _parse_at(at[index - 1]) if 0 < index <= len(at) else (None, None)
        script.append(
            Utterance(audio=audio, name=path.name, at=absolute, after_bot_audio=into_answer)
        )

    models = load_models(settings)
    try:
        session = Session(settings=settings, models=models)
        result = asyncio.run(converse(script, session, FileTransportParams(fast=fast)))
    finally:
        models.close()
    result.write_transcript(transcript)
    result.write_audio(out)
    _print_turns(result.turn_dicts())
    typer.echo(f"\nbot audio → {out}\nturns → {transcript}")


@app.command()
def demo(
    question: str = typer.Option(
        "What is the capital of France?", help="What the synthetic user asks."
    ),
    out_dir: Path = typer.Option(
        Path("out"), help="Where the demo writes its WAVs and transcript."
    ),
):
    """A spoken demo conversation: a question synthesized with the local voice, answered aloud."""
    from bot.conversation import converse
    from bot.session import Session
    from transports.file import FileTransportParams, Utterance
    from transports.wav import write_wav

    settings = Settings()
    configure_logging(settings)
    models = load_models(settings)
    try:
        speech = models.synthesize(question, settings.input_sample_rate)
        write_wav(out_dir / "question.wav", speech.tobytes(), settings.input_sample_rate)
        session = Session(settings=settings, models=models)
        result = asyncio.run(
            converse([Utterance(audio=speech, name="question")], session, FileTransportParams())
        )
    finally:
        models.close()
    result.write_transcript(out_dir / "turns.jsonl")
    result.write_audio(out_dir / "reply.wav")
    _print_turns(result.turn_dicts())
    typer.echo(f"\nquestion → {out_dir / 'question.wav'}\nanswer → {out_dir / 'reply.wav'}")


@app.command()
def serve(
    host: str = typer.Option(None, help="Interface to listen on (default: HOST setting)."),
    port: int = typer.Option(None, help="Port (default: PORT setting, 7860)."),
):
    """Serve the browser client and its WebSocket/WebRTC sessions."""
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings)
    run_server(settings)


def run_server(settings: Settings, providers=None, session_process_command=None) -> None:
    """Load the models and serve the app until stopped. `providers` and the command that
    starts a session process are production's unless a test or benchmark hands in its own
    (tests/support/fakes.py)."""
    import uvicorn

    from bot.providers import PROVIDERS
    from web.app import create_app
    from web.http_server import server_config

    providers = providers or PROVIDERS
    models = load_models(settings, progress=True, providers=providers)
    try:
        web_app = create_app(
            settings, models, providers=providers, session_process_command=session_process_command
        )
        server = uvicorn.Server(server_config(web_app, settings))

        async def drain_then_exit():
            from web.drain import drain

            await drain(web_app, settings.drain_grace_secs)
            server.should_exit = True

        async def run():
            serving = asyncio.create_task(server.serve())
            while not server.started and not serving.done():
                await asyncio.sleep(0.05)
            if server.started:
                address = f"http://{settings.host}:{settings.port}"
                typer.secho(f"Voice agent ready: {address}", fg=typer.colors.GREEN)
                # SIGTERM drains (web/drain.py); a second one, or Ctrl-C, stops at once.
                draining: list[asyncio.Task] = []

                def on_sigterm():
                    if draining:
                        server.should_exit = server.force_exit = True
                    else:
                        draining.append(asyncio.create_task(drain_then_exit()))

                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm)
            await serving

        asyncio.run(run())
    finally:
        models.close()


@app.command()
def chat(
    input_device: int = typer.Option(
        None, help="PyAudio input device index (default: the system's)."
    ),
    output_device: int = typer.Option(
        None, help="PyAudio output device index (default: the system's)."
    ),
):
    """Talk to the agent through this machine's microphone and speakers (Ctrl-C ends)."""
    from bot.pipeline import run_bot
    from bot.session import Session
    from transports.local_audio import AudioDeviceError, create_local_audio_transport

    settings = Settings()
    configure_logging(settings)
    try:
        transport = create_local_audio_transport(input_device, output_device)
    except AudioDeviceError as e:
        _fail(str(e))
    models = load_models(settings, progress=True)
    typer.secho("Listening — speak to the agent (Ctrl-C to stop).", fg=typer.colors.GREEN)
    try:
        session = Session(
            settings=settings, models=models, transport_kind="local", handle_sigint=True
        )
        session.on_turn.append(lambda record: _print_turns([record.to_dict()]))
        asyncio.run(run_bot(transport, session))
    finally:
        models.close()


@app.command("session-process", hidden=True)
def session_process():
    """Run one session in this process (started by the server's spawner; the job comes on stdin)."""
    run_session_process()


def run_session_process(providers=None) -> None:
    """One session process: settings, then the job, on stdin (web/session_process.py)."""
    import json
    import sys

    from bot.providers import PROVIDERS
    from web.session_process import read_line, serve

    providers = providers or PROVIDERS
    try:
        settings = Settings(_env_file=None, **read_line()["settings"])
    except (ValueError, KeyError, TypeError) as e:
        _fail(f"expected a JSON line with the settings on stdin ({e})")
    # stdout carries the events to the server; the logs go to stderr.
    configure_logging(settings, stream=sys.stderr)
    models = load_models(settings, providers=providers)
    print(json.dumps({"event": "loaded"}), flush=True)
    try:
        job = read_line()  # the session: given when one comes (a spare waits here)
        if missing := {"session_id", "transport"} - job.keys():
            raise KeyError(", ".join(sorted(missing)))
    except (ValueError, KeyError, TypeError) as e:
        models.close()
        _fail(f"expected a JSON job with session_id and transport on stdin ({e})")
    try:
        code = asyncio.run(serve(job, settings, models, providers))
    finally:
        models.close()
    raise typer.Exit(code)
