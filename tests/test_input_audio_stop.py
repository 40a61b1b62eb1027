"""The microphone's audio stops after the user aggregator; everything else goes on."""

from __future__ import annotations

from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame, TextFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.tests.utils import run_test

from processors.input_audio_stop import InputAudioStop

PCM = b"\x01\x00" * 320


async def test_input_audio_is_consumed_and_the_rest_passes_both_ways():
    down, _ = await run_test(
        InputAudioStop(),
        frames_to_send=[
            InputAudioRawFrame(PCM, 16000, 1),
            TextFrame("Paris."),
            OutputAudioRawFrame(PCM, 16000, 1),
            InputAudioRawFrame(PCM, 16000, 1),
        ],
        expected_down_frames=[TextFrame, OutputAudioRawFrame],
    )
    assert down[0].text == "Paris."
    _, up = await run_test(
        InputAudioStop(),
        frames_to_send=[TextFrame("upstream")],
        frames_to_send_direction=FrameDirection.UPSTREAM,
        expected_up_frames=[TextFrame],
    )
    assert up[0].text == "upstream"
