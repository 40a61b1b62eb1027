"""One session in its own process: what `python -m bot session-process` runs for the spawner.

The pipes (one JSON object per line), the other side being web/spawner.py's `SessionProcessLink`:

- stdin: first `{"settings": {...}}` (the session process loads its models and says `loaded`), then
  the job, `{"session_id", "transport": "websocket" | "webrtc" | "daily"}` (+ `room_url`
  and `token` for Daily; + `resumed`, the conversation a checked resume ticket named; a
  spare session process waits for it), then the admin API's commands,
  `{"id", "cmd": "instructions" | "say" | "end", ...}`, each answered by a `reply` event.
  End of input (the server has gone) ends the session.
- stdout: events only: `loaded`, `ready` (with the loopback `port` of a WebSocket/WebRTC
  session process),
  `state`, `turn` (a `TurnRecord.to_dict()`), `levers` (instructions, context size),
  `resumable` (the conversation's record once connected, after each reply and at its end
  (`ended`), kept by the server for resuming),
  `released` (the client has left: the server frees the session's slot while the session
  process tears it down), `reply`.
- stderr: the session's log lines (bot/logs.py), which the server passes on.

Its provider errors and fallbacks are counted in prometheus-client's multiprocess files, in the
directory the server gives it (PROMETHEUS_MULTIPROC_DIR; web/process_metrics.py).

A WebSocket or WebRTC session process serves the in-process session routes (web/session_routes.py)
for its one session on a loopback port, behind the server; a Daily session process joins its room.
The session process exits when its session ends.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TextIO

from loguru import logger

from bot.config import Settings
from bot.local.models import LocalModels
from bot.pipeline import run_bot
from bot.session import Session
from bot.providers import ProviderNames, Providers, create_memory_keeper
from bot.session_control import InstructionMode
from processors.observers.provider_errors import ProviderErrorObserver, provider_counters
from web.resume import ResumeKeeper, ResumeRefused
from web.session_opening import open_session
from web.sessions import LiveSession, SessionRegistry

EXIT_OK, EXIT_NO_CONNECTION = 0, 3


class EventWriter:
    """The session process's stdout: one JSON event per line."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def emit(self, event: str, **data: Any) -> None:
        self._stream.write(json.dumps({"event": event, **data}, default=str) + "\n")
        self._stream.flush()

    def levers(self, live: LiveSession | Session) -> None:
        control = live.control
        if control is not None:
            self.emit(
                "levers",
                instructions=control.instructions,
                updates=control.updates,
                context=control.context_summary(),
            )

    def on_session_event(self, event: str, live: LiveSession, payload: Any) -> None:
        if event == "state":
            self.emit("state", state=payload.value)
            self.levers(live)
        elif event == "turn":
            self.emit("turn", record=payload)
            self.levers(live)
        elif event == "released":
            self.emit("released")


async def serve(job: dict, settings: Settings, models: LocalModels, providers: Providers) -> int:
    out = EventWriter(sys.stdout)
    registry = SessionRegistry(max_sessions=1)
    registry.listeners.append(out.on_session_event)
    started, ended = asyncio.Event(), asyncio.Event()

    def on_lifecycle(event: str, live: LiveSession, payload: Any) -> None:
        if event == "started":
            started.set()
        elif event == "ended":
            ended.set()

    registry.listeners.append(on_lifecycle)

    # Provider errors and fallbacks: counted in the server's directory, read by its /metrics.
    try:
        names: ProviderNames | None = ProviderNames.from_settings(settings)
    except ValueError:
        names = None
    error_counter, fallback_counter = provider_counters(None)
    errors = ProviderErrorObserver(error_counter, names, fallback_counter)
    # Per-user memory, in the store the server reads too (SQLite file or Redis): the
    # session process keeps its user's words and, when its session ends, their summary.
    memory = create_memory_keeper(settings, models)
    if memory is not None:
        registry.listeners.append(memory.on_session_event)

    # Its conversation is saved for resuming by the server, which holds the records.
    resumes = None
    if settings.session_resume_secs > 0:
        resumes = ResumeKeeper(
            settings,
            forward=lambda _, record, ended: out.emit("resumable", record=record, ended=ended),
        )

    async def new_session(
        transport: str, user_id: str | None = None, resume: tuple[str, str] | None = None
    ) -> Session:
        saved = None
        if resume is not None:  # the server has checked the ticket and sent the conversation
            saved = job.get("resumed")
            if saved is None:
                raise ResumeRefused("the server sent no conversation to resume")
        session = await open_session(
            settings,
            models,
            providers,
            transport,
            user_id=user_id,
            saved=saved,
            memory=memory,
            resumes=resumes,
            observers=[errors],
            session_id=job["session_id"],
        )

        async def report_context(session: Session) -> None:  # the reply is in it now
            out.levers(session)

        session.on_reply.append(report_context)
        session.on_connected.append(report_context)  # a resumed conversation's, at once
        session.on_client_ready.append(lambda session, _: report_context(session))
        return session

    stdin = await _stdin_reader()
    server_gone = asyncio.create_task(_obey_commands(stdin, registry, out))
    runner = (
        _serve_web(settings, registry, new_session, out, started, ended)
        if job["transport"] != "daily"
        else _join_daily(job, settings, registry, new_session, out)
    )
    session = asyncio.create_task(runner)
    done, _ = await asyncio.wait({session, server_gone}, return_when=asyncio.FIRST_COMPLETED)
    if session not in done:  # stdin closed: the server has gone; so does its session
        logger.warning("The server closed this session process's pipe; ending the session")
        session.cancel()
    server_gone.cancel()
    await asyncio.gather(server_gone, return_exceptions=True)
    try:
        return await session
    except asyncio.CancelledError:
        return EXIT_OK
    finally:
        if resumes is not None:  # the last reply's record goes to the server before exit
            await resumes.close()
        if memory is not None:  # the user's last words and summary are written before exit
            await memory.close()


async def _serve_web(settings, registry, new_session, out: EventWriter, started, ended) -> int:
    import uvicorn
    from fastapi import FastAPI
    from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequestHandler

    from web.http_server import loopback_socket, server_config
    from web.session_routes import in_process_session_router

    webrtc = SmallWebRTCRequestHandler()
    app = FastAPI()
    app.include_router(in_process_session_router(settings, registry, new_session, webrtc))
    sock = loopback_socket()
    port = sock.getsockname()[1]
    config = server_config(app, settings, host="127.0.0.1", port=port, lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                return EXIT_NO_CONNECTION
            await asyncio.sleep(0.01)
        out.emit("ready", port=port)
        try:
            await asyncio.wait_for(started.wait(), settings.spawn_ready_timeout_secs)
        except TimeoutError:
            logger.warning("No client reached this session process in time")
            return EXIT_NO_CONNECTION
        await ended.wait()
        return EXIT_OK
    finally:
        await registry.cancel_all()
        await webrtc.close()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)


async def _join_daily(
    job, settings, registry: SessionRegistry, new_session, out: EventWriter
) -> int:
    from transports.daily import create_daily_transport

    room_url, token = job["room_url"], job["token"]
    transport = create_daily_transport(room_url, token, settings)
    session = await new_session("daily")
    joined = asyncio.Event()

    @transport.event_handler("on_joined")
    async def on_joined(transport, data):
        joined.set()

    @transport.event_handler("on_error")
    async def on_error(transport, error):
        logger.error(f"Daily reported: {error}")

    slot = registry.reserve()
    bot = asyncio.create_task(registry.run(slot, session, "daily", run_bot(transport, session)))
    out.emit("ready")
    try:
        await asyncio.wait_for(joined.wait(), settings.daily_join_timeout_secs)
    except TimeoutError:
        logger.error(
            f"Could not join the Daily room {room_url} "
            f"within {settings.daily_join_timeout_secs:.0f}s"
        )
        bot.cancel()
        await asyncio.gather(bot, return_exceptions=True)
        return EXIT_NO_CONNECTION
    await bot
    return EXIT_OK


async def _stdin_reader() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _obey_commands(
    stdin: asyncio.StreamReader, registry: SessionRegistry, out: EventWriter
) -> None:
    """Run the server's commands until its end of the pipe closes."""
    pending: set[asyncio.Task] = set()
    while line := await stdin.readline():
        try:
            command = json.loads(line)
            request_id, name = command["id"], command["cmd"]
        except (ValueError, KeyError, TypeError):
            logger.warning(f"Ignored a malformed command from the server: {line[:80]!r}")
            continue
        task = asyncio.create_task(_obey(request_id, name, command, registry, out))
        pending.add(task)
        task.add_done_callback(pending.discard)


async def _obey(
    request_id: int, name: str, command: dict, registry: SessionRegistry, out: EventWriter
) -> None:
    live = next(iter(registry.all()), None)
    control = live.control if live else None
    reply: dict[str, Any] = {"id": request_id}
    try:
        if control is None:
            raise RuntimeError("the session is starting or ending; try again")
        if name == "instructions":
            reply["applied"] = await control.update_instructions(
                command["text"],
                InstructionMode(command.get("mode", "replace")),
                timeout=float(command.get("timeout", 10.0)),
            )
            out.levers(live)
        elif name == "say":
            await control.say(command["text"])
        elif name == "end":
            await control.end(command.get("reason"))
        else:
            raise ValueError(f"unknown command {name!r}")
    except Exception as e:
        reply["error"] = str(e) or e.__class__.__name__
    out.emit("reply", **reply)


def read_line() -> dict:
    """A JSON line of stdin, read unbuffered so later lines stay for the command reader."""
    raw = sys.stdin.buffer.raw  # type: ignore[attr-defined]
    line = bytearray()
    while (byte := raw.read(1)) and byte != b"\n":
        line += byte
    if not line:
        raise ValueError("end of input")
    return json.loads(line)
