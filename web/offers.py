"""What `/api/offer` accepts: a WebRTC offer checked before anything is reserved for it.

The bodies are Pipecat's (`SmallWebRTCRequest`, `SmallWebRTCPatchRequest`) with their limits
written down, so FastAPI answers a wrong shape with 422 and the OpenAPI page shows them.
`check_offer` then reads the SDP as aiortc will and refuses (400, with the reason) what it
would fail on or what is no voice call: not SDP, no audio or more than one audio m-line,
media without ICE credentials, DTLS fingerprint or RTCP multiplexing, no audio codec in
common. A body over MAX_REQUEST_BYTES never gets this far (413, web/http_hygiene.py).
"""

from __future__ import annotations

from typing import Any, Literal

from aiortc.sdp import SessionDescription
from fastapi import HTTPException, status
from pipecat.transports.smallwebrtc.request_handler import (
    IceCandidate,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
)
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from bot.memory import valid_user_id

# The media a Pipecat client offers: its microphone, camera, screen share and data channel.
MEDIA_KINDS = ("audio", "video", "application")
MAX_MEDIA = 4
AUDIO_CODECS = {"audio/opus", "audio/g722", "audio/pcmu", "audio/pcma"}  # what aiortc speaks
MAX_CANDIDATES = 50
MAX_TICKET_CHARS = 200  # a session id or resume token


class Offer(BaseModel):
    """A WebRTC offer (Pipecat's small WebRTC protocol)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sdp": "v=0\r\n...", "type": "offer"}]},
    )

    sdp: str = Field(description="The browser's SDP offer: one audio m-line (more media allowed)")
    type: Literal["offer"] = Field(description="Always 'offer'")
    pc_id: str | None = Field(
        None, max_length=200, description="The connection to renegotiate; absent for a new one"
    )
    restart_pc: bool | None = Field(None, description="Renegotiation: restart the peer connection")
    request_data: Any | None = Field(
        None,
        # Pipecat's JS SDK sends `requestData`; Pipecat's own request accepts both spellings.
        validation_alias=AliasChoices("request_data", "requestData"),
        description='Optional: {"user_id": …} for per-user memory (README "Memory"), '
        '{"session_id": …, "resume_token": …} to resume a dropped conversation '
        '(README "Resume"); also accepted as `requestData`',
    )

    def for_pipecat(self) -> SmallWebRTCRequest:
        return SmallWebRTCRequest(
            sdp=self.sdp,
            type=self.type,
            pc_id=self.pc_id,
            restart_pc=self.restart_pc,
            request_data=self.request_data,
        )

    def user_id(self) -> str | None:
        """The user id the client named (bot/memory/), or None; 422 for one that is not one."""
        data = self.request_data if isinstance(self.request_data, dict) else {}
        try:
            return valid_user_id(data.get("user_id"))
        except ValueError as e:
            problem = {
                "loc": ["body", "request_data", "user_id"],
                "msg": str(e),
                "type": "value_error",
            }
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, [problem]) from e

    def resume(self) -> tuple[str, str] | None:
        """The (session id, resume token) of a conversation to go on with, or None; 422 for
        ids that are not strings of a sane length."""
        data = self.request_data if isinstance(self.request_data, dict) else {}
        if data.get("session_id") is None:
            return None
        ticket = (data["session_id"], data.get("resume_token", ""))
        for name, value in zip(("session_id", "resume_token"), ticket):
            if not isinstance(value, str) or len(value) > MAX_TICKET_CHARS:
                problem = {
                    "loc": ["body", "request_data", name],
                    "type": "value_error",
                    "msg": f"must be a string of at most {MAX_TICKET_CHARS} characters",
                }
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, [problem])
        return ticket


class Answer(BaseModel):
    sdp: str
    type: Literal["answer"]
    pc_id: str = Field(description="Name this connection in ICE candidates and renegotiations")


class Candidate(BaseModel):
    candidate: str = Field(
        max_length=1000, description="An SDP a=candidate value; empty: end of candidates"
    )
    sdp_mid: str = Field(max_length=64)
    sdp_mline_index: int = Field(ge=0, le=MAX_MEDIA)


class CandidatesPatch(BaseModel):
    """Trickled ICE candidates for a connection made by an earlier offer."""

    pc_id: str = Field(max_length=200)
    candidates: list[Candidate] = Field(max_length=MAX_CANDIDATES)

    def for_pipecat(self) -> SmallWebRTCPatchRequest:
        return SmallWebRTCPatchRequest(
            pc_id=self.pc_id,
            candidates=[
                IceCandidate(c.candidate, c.sdp_mid, c.sdp_mline_index) for c in self.candidates
            ],
        )


class PatchResult(BaseModel):
    status: Literal["success"]


def bad_offer(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, f"unusable WebRTC offer: {reason}")


def check_offer(sdp: str) -> None:
    """Raise a 400 with the reason unless `sdp` is an offer this server can answer."""
    if not sdp.startswith("v=0"):
        raise bad_offer("not SDP (an SDP starts with 'v=0')")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as e:  # aiortc's parser raises whatever the line it chokes on gives
        raise bad_offer(f"the SDP does not parse ({e.__class__.__name__}: {str(e)[:80]})") from None
    kinds = [media.kind for media in description.media]
    if kinds.count("audio") != 1:
        raise bad_offer(f"it has {kinds.count('audio')} audio m-lines; a voice call has one")
    if len(kinds) > MAX_MEDIA or any(kind not in MEDIA_KINDS for kind in kinds):
        raise bad_offer(f"it offers {', '.join(kinds)}; at most audio, video and a data channel")
    for media in description.media:
        if not media.ice.usernameFragment or not media.ice.password:
            raise bad_offer(
                f"its {media.kind} m-line has no ICE credentials (a=ice-ufrag, a=ice-pwd)"
            )
        if media.dtls is None or not media.dtls.fingerprints:
            raise bad_offer(f"its {media.kind} m-line has no DTLS fingerprint (a=fingerprint)")
        if media.kind in ("audio", "video") and not media.rtcp_mux:
            raise bad_offer(f"its {media.kind} m-line does not multiplex RTCP (a=rtcp-mux)")
        if (
            media.kind == "audio"
            and not {c.mimeType.lower() for c in media.rtp.codecs} & AUDIO_CODECS
        ):
            raise bad_offer("no audio codec in common (Opus, G.722, PCMU or PCMA)")
