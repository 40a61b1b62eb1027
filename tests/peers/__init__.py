"""Loopback protocol peers: small asyncio servers that speak each cloud provider's
documented wire protocol, so the cloud wiring can be tested on a machine with no route to
the providers.

    async with DeepgramPeer(["what is the capital of France"], api_key="k") as peer:
        settings = Settings(deepgram_api_key="k", deepgram_base_url=peer.ws_url, ...)

| module | provider | protocol |
|---|---|---|
| `deepgram` (+ `deepgram_stream`) | Deepgram live STT | WebSocket `/v1/listen`, HTTP `/v1/models` |
| `groq` | Groq chat completions | HTTP + SSE `/openai/v1/chat/completions`, `/openai/v1/models` |
| `cartesia` | Cartesia TTS (API 2026-03-01) | WebSocket `/tts/websocket`, HTTP `/models` |
| `tavily` | Tavily search | HTTP `POST /search` |
| `daily` | Daily REST | HTTP `/rooms`, `/rooms/{name}`, `/meeting-tokens` |

Each peer binds 127.0.0.1 on an ephemeral port (`base_url`, `ws_url`), records what it
received, takes scripted answers, and injects faults (`peer.faults`, see `faults.py`) and
each provider's own failures (its module doc). Each module names, at its top, the doc
pages it follows and when they were read.
"""

from tests.peers.cartesia import CartesiaPeer
from tests.peers.daily import DailyPeer
from tests.peers.deepgram import DeepgramPeer
from tests.peers.faults import Fault, Faults, FaultSpec
from tests.peers.groq import GroqPeer
from tests.peers.tavily import TavilyPeer

__all__ = [
    "CartesiaPeer",
    "DailyPeer",
    "DeepgramPeer",
    "Fault",
    "FaultSpec",
    "Faults",
    "GroqPeer",
    "TavilyPeer",
]
