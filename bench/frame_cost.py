"""CPU cost of one session's audio path, per 20 ms microphone frame, component by component.

    .venv/bin/python -m bench.frame_cost            # 3,000 frames (one minute of audio) each
    .venv/bin/python -m bench.frame_cost --smoke

Evidence behind bench/capacity.py's hot spots: the same code the server runs per frame
(RNNoise or WebRTC denoise; Silero VAD as stock Pipecat calls it — through a one-thread
executor —, through a shared pool, and inline as we call it; echo cancellation; the WebSocket
protobuf deserializer; and one smart-turn verdict, per VAD stop), timed on this process's CPU
clock (all threads), so other load on the machine inflates it less than wall time. 20,000 µs
per 20 ms frame is one full core per session.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from bench.common import FRAME_SECS, add_common_args, loadavg, markdown_table, report, synthesize

FRAME_US = FRAME_SECS * 1e6


def frames_of(audio: np.ndarray, count: int, n: int = 320) -> list[bytes]:
    chunks = [audio[i : i + n].tobytes() for i in range(0, len(audio) - n + 1, n)]
    chunks += [np.zeros(n, np.int16).tobytes()] * len(chunks)  # as much silence as speech
    return [chunks[i % len(chunks)] for i in range(count)]


def cpu_us_per_frame(fn, frames: list[bytes]) -> float:
    start = time.process_time()
    for f in frames:
        fn(f)
    return (time.process_time() - start) * 1e6 / len(frames)


async def async_cpu_us_per_frame(fn, frames: list[bytes]) -> tuple[float, float]:
    start, wall = time.process_time(), time.perf_counter()
    for f in frames:
        await fn(f)
    n = len(frames)
    return (time.process_time() - start) * 1e6 / n, (time.perf_counter() - wall) * 1e6 / n


async def run(count: int) -> tuple[str, dict]:
    import pipecat.frames.protobufs.frames_pb2 as proto
    from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

    from bot.config import Settings
    from bot.local.models import LocalModels
    from bot.local.silero_vad import SharedSileroVADAnalyzer
    from bot.local.smart_turn import SharedSmartTurnAnalyzer
    from processors.denoise import _RNNoiseStream, _WebRTCNoiseStream
    from processors.echo_cancel import EchoCanceller, EchoReference
    from transports.websocket import GuardedProtobufSerializer

    speech = synthesize(["What is the capital of France? Tell me about its history."])[0].audio
    frames = frames_of(speech, count)
    models = LocalModels(Settings(_env_file=None))

    def vad():
        analyzer = SharedSileroVADAnalyzer(session=models.silero_session, params=VADParams())
        analyzer.set_sample_rate(16000)
        return analyzer

    rows, figures = [], {}

    def add(name, us, note=""):
        figures[name] = us
        rows.append([name, f"{us:.0f}", f"{100 * us / FRAME_US:.2f}", note])

    denoiser = _RNNoiseStream(16000)
    add("RNNoise denoise (16→48→16 kHz, 2 RNNoise frames)",
        cpu_us_per_frame(denoiser.process, frames))
    denoiser.close()
    denoiser = _WebRTCNoiseStream(16000)
    add("WebRTC noise suppression (16 kHz, 2 blocks of 10 ms)",
        cpu_us_per_frame(denoiser.process, frames))
    denoiser.close()

    inline = vad()
    floor = cpu_us_per_frame(inline._run_analyzer, frames)
    add("Silero VAD, the analyzer's own work (`_run_analyzer`)", floor)
    stock = vad()
    cpu, wall = await async_cpu_us_per_frame(partial(VADAnalyzer.analyze_audio, stock), frames)
    add("Silero VAD as stock Pipecat runs it (one-thread executor per session)", cpu,
        f"wall {wall:.0f} µs per frame; hand-off {cpu - floor:.0f} µs")
    figures["vad_handoff_stock"] = cpu - floor
    pool, pooled = ThreadPoolExecutor(max_workers=2), vad()

    async def through_pool(f: bytes):
        # What bot/local/silero_vad.py did before: buffering inline, each model call in a pool.
        if len(pooled._vad_buffer) + len(f) < pooled._vad_frames_num_bytes:
            return pooled._run_analyzer(f)
        return await asyncio.get_running_loop().run_in_executor(pool, pooled._run_analyzer, f)

    cpu, wall = await async_cpu_us_per_frame(through_pool, frames)
    pool.shutdown()
    add("Silero VAD, model calls through a shared 2-thread pool (before)", cpu,
        f"wall {wall:.0f} µs per frame; hand-off {cpu - floor:.0f} µs")
    figures["vad_handoff_pool"] = cpu - floor
    ours = vad()
    cpu, wall = await async_cpu_us_per_frame(ours.analyze_audio, frames)
    add("Silero VAD as we run it (`analyze_audio`, inline)", cpu,
        f"wall {wall:.0f} µs per frame; hand-off {cpu - floor:.0f} µs")
    figures["vad_handoff"] = cpu - floor

    # Smart-turn runs per VAD stop, not per frame: its CPU per verdict on a 3 s utterance and
    # its silence, i.e. what a stop with no turn in progress no longer costs.
    turn = SharedSmartTurnAnalyzer(session=models.smart_turn_session)
    turn.set_sample_rate(16000)
    utterance = frames[: 3 * 50] + [bytes(640)] * 15
    runs = 5 if count < 1000 else 20
    start = time.process_time()
    for _ in range(runs):
        for i, f in enumerate(utterance):
            turn.append_audio(f, is_speech=i < 150)
        await turn.analyze_end_of_turn()
        turn.clear()
    per_run = (time.process_time() - start) * 1e6 / runs
    figures["smart_turn_run"] = per_run
    rows.append(["smart-turn v3, one verdict (3 s utterance + 0.3 s silence)", f"{per_run:.0f}",
                 "per VAD stop", "CPU of one run, not per frame"])
    await turn.cleanup()

    from pipecat.frames.frames import InputAudioRawFrame

    # The bot's own speech as the reference, so the echo path estimate runs as in a call.
    reference = EchoReference(16000)
    canceller = EchoCanceller(reference)

    def cancel(f):
        reference.add(f, 16000)
        canceller._process(InputAudioRawFrame(f, 16000, 1))

    add("echo cancellation (AEC3 both ways + the echo path estimate)",
        cpu_us_per_frame(cancel, frames))

    # The same bot, and a microphone that hears none of it (headphones, the browser's AEC),
    # on a clock of 20 ms a frame: the canceller places the bot's audio by its clock, and at
    # the bench's pace it would read the bot's sound as bursts with gaps between.
    clock = [0.0]
    reference = EchoReference(16000, clock=lambda: clock[0])
    canceller = EchoCanceller(reference)
    room = np.random.default_rng(0).normal(0, 30, 320).astype(np.int16).tobytes()

    def cancel_no_echo(f):
        clock[0] += 0.02
        reference.add(f, 16000)
        canceller._process(InputAudioRawFrame(room, 16000, 1))

    add("echo cancellation, a microphone with no echo in it (after the bot's first 2 s)",
        cpu_us_per_frame(cancel_no_echo, frames))

    serializer = GuardedProtobufSerializer(16000)
    messages = []
    for f in frames:
        m = proto.Frame()
        m.audio.audio, m.audio.sample_rate, m.audio.num_channels = f, 16000, 1
        messages.append(m.SerializeToString())
    cpu, _ = await async_cpu_us_per_frame(serializer.deserialize, messages)
    add("WebSocket protobuf deserialize (`GuardedProtobufSerializer`)", cpu)
    table = markdown_table(["per 20 ms frame, one session", "CPU µs", "% of a core", "note"], rows)
    return table, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--frames", type=int, default=3000)
    args = parser.parse_args()
    if args.smoke:
        args.frames = 200
    load = loadavg()
    table, figures = asyncio.run(run(args.frames))
    report(args, "frame_cost", "Per-frame CPU cost of the audio path", table=table,
           started_load=load,
           heading=f"per-frame CPU cost ({args.frames} frames each); load average at start {load}")


if __name__ == "__main__":
    main()
