"""An RTVI processor that keeps what the client said in its `client-ready` message.

Pipecat's `on_client_ready` event carries no data, and its processor keeps only the
protocol version. A client may also say who its user is there (`data.user_id`, README
"Memory"); the session's `on_client_ready` handlers read it from `client_ready_data`.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, InputTransportMessageFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.processors.frameworks.rtvi import RTVIProcessor
from pipecat.processors.frameworks.rtvi.models import MESSAGE_LABEL


class ClientReadyRTVIProcessor(RTVIProcessor):
    """`RTVIProcessor` with `client_ready_data`: the data of the client's first client-ready
    message ({} until then). It is set before Pipecat handles the message, so it is there
    when `on_client_ready` fires."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.client_ready_data: dict = {}
        self._client_ready_seen = False

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        if isinstance(frame, InputTransportMessageFrame) and not self._client_ready_seen:
            message = frame.message if isinstance(frame.message, dict) else {}
            if message.get("label") == MESSAGE_LABEL and message.get("type") == "client-ready":
                self._client_ready_seen = True
                data = message.get("data")
                self.client_ready_data = data if isinstance(data, dict) else {}
        await super().process_frame(frame, direction)
