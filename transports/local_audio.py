"""This machine's microphone and speakers, through Pipecat's local audio transport (PyAudio)."""

from __future__ import annotations

from pipecat.transports.base_transport import BaseTransport


class AudioDeviceError(RuntimeError):
    """No usable microphone or speaker (or no PyAudio) on this machine."""


def create_local_audio_transport(
    input_device: int | None = None, output_device: int | None = None
) -> BaseTransport:
    try:
        import pyaudio
        from pipecat.transports.local.audio import LocalAudioTransport, LocalAudioTransportParams
    except ImportError as e:
        raise AudioDeviceError(
            "the microphone needs PyAudio: install the mic extra with "
            "`.venv/bin/pip install -e '.[mic]'` "
            "(on Debian first `apt-get install portaudio19-dev`)"
        ) from e

    audio = pyaudio.PyAudio()
    try:
        for kind, index, default in (
            ("input (microphone)", input_device, audio.get_default_input_device_info),
            ("output (speaker)", output_device, audio.get_default_output_device_info),
        ):
            try:
                info = audio.get_device_info_by_index(index) if index is not None else default()
            except (OSError, IOError) as e:
                names = [
                    audio.get_device_info_by_index(i)["name"]
                    for i in range(audio.get_device_count())
                ]
                raise AudioDeviceError(
                    f"no audio {kind} device: {e}. Devices seen: {names or 'none'}. "
                    "Plug one in, or pick one with --input-device/--output-device."
                ) from e
            channels = "maxInputChannels" if "input" in kind else "maxOutputChannels"
            if info[channels] < 1:
                raise AudioDeviceError(f"device {info['name']!r} has no {kind} channels")
    finally:
        audio.terminate()

    class MicrophoneTransport(LocalAudioTransport):
        """The person is always "connected"; the events exist so run_bot's handlers attach."""

        def __init__(self, params):
            super().__init__(params)
            self._register_event_handler("on_client_connected")
            self._register_event_handler("on_client_disconnected")

    return MicrophoneTransport(
        LocalAudioTransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            input_device_index=input_device,
            output_device_index=output_device,
        )
    )
