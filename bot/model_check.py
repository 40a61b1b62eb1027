"""At start-up, ask each cloud provider in use whether the configured model exists.

A decommissioned or misspelt model answers every turn with an error (Groq: HTTP 400
`model_decommissioned`), so the server says so once, clearly, when it starts:

- Groq: `GET {GROQ_BASE_URL}/models` (OpenAI's list: `data[].id`);
- Deepgram: `GET /v1/models` on the API host of DEEPGRAM_BASE_URL (`stt[].canonical_name`,
  `stt[].name`, and `architecture` alone as Deepgram accepts it, e.g. `nova-3`);
- Cartesia: `GET /models` on the API host of CARTESIA_BASE_URL (`data[].id`).

A provider that cannot be asked (unreachable, a bad key) is reported as such; nothing
here stops the server: the fallback and the apology still answer a failing stage.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from loguru import logger

from bot.config import Settings, Stage
from bot.providers import uses_cloud

CARTESIA_VERSION = "2026-03-01"  # as pipecat.services.cartesia.tts pins it
TIMEOUT = httpx.Timeout(5.0)


def _http_base(url: str) -> str:
    """The HTTPS (or, for a loopback peer, HTTP) origin of a WebSocket base URL."""
    url = url.rstrip("/")
    for ws, http in (("wss://", "https://"), ("ws://", "http://")):
        if url.startswith(ws):
            return http + url[len(ws) :]
    return url


async def _get(http: httpx.AsyncClient, url: str, **kwargs) -> Any:
    response = await http.get(url, **kwargs)
    response.raise_for_status()
    return response.json()


async def _groq(settings: Settings, http: httpx.AsyncClient) -> tuple[str, set[str]]:
    key = settings.groq_api_key.get_secret_value()
    url = f"{settings.groq_base_url.rstrip('/')}/models"
    body = await _get(http, url, headers={"Authorization": f"Bearer {key}"})
    return settings.groq_model, {m.get("id") for m in body.get("data", [])}


async def _deepgram(settings: Settings, http: httpx.AsyncClient) -> tuple[str, set[str]]:
    key = settings.deepgram_api_key.get_secret_value()
    url = f"{_http_base(settings.deepgram_base_url)}/v1/models"
    body = await _get(http, url, headers={"Authorization": f"Token {key}"})
    names: set[str] = set()
    for m in body.get("stt", []):
        names |= {m.get("canonical_name"), m.get("architecture")}
        if m.get("architecture") and m.get("name"):
            names.add(f"{m['architecture']}-{m['name']}")
    return settings.deepgram_model, names


async def _cartesia(settings: Settings, http: httpx.AsyncClient) -> tuple[str, set[str]]:
    key = settings.cartesia_api_key.get_secret_value()
    body = await _get(
        http,
        f"{_http_base(settings.cartesia_base_url)}/models",
        params={"capability": "tts"},
        headers={"X-API-Key": key, "Cartesia-Version": CARTESIA_VERSION},
    )
    items = body if isinstance(body, list) else body.get("data") or body.get("models") or []
    return settings.cartesia_model, {m.get("id") if isinstance(m, dict) else m for m in items}


CHECKS = {Stage.STT: ("Deepgram", _deepgram), Stage.LLM: ("Groq", _groq)}
CHECKS[Stage.TTS] = ("Cartesia", _cartesia)


async def model_problems(settings: Settings) -> list[str]:
    """One line per cloud stage in use whose model is not offered (or could not be
    checked); empty when every configured model exists."""
    stages = [stage for stage in CHECKS if uses_cloud(settings, stage)]
    if not stages:
        return []
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        answers = await asyncio.gather(
            *(CHECKS[stage][1](settings, http) for stage in stages), return_exceptions=True
        )
    problems = []
    for stage, answer in zip(stages, answers, strict=True):
        provider = CHECKS[stage][0]
        setting = f"{provider.upper()}_MODEL"
        if isinstance(answer, BaseException):
            problems.append(f"{provider}: could not check {setting} ({_why(answer)})")
            continue
        model, offered = answer
        if model not in offered:
            listed = ", ".join(sorted(m for m in offered if m)[:8]) or "none listed"
            problems.append(
                f"{provider} does not offer {setting}={model!r} (it may be decommissioned); "
                f"every {stage.value.upper()} request will fail. Offered: {listed}"
            )
    return problems


def _why(error: BaseException) -> str:
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code}"
    return f"{type(error).__name__}: {error}"


async def warn_about_models(settings: Settings) -> list[str]:
    """Check once and log what is wrong (the server's start-up calls this)."""
    try:
        problems = await model_problems(settings)
    except Exception as e:  # noqa: BLE001 - a check must never take the server down
        problems = [f"model check failed: {e!r}"]
    for problem in problems:
        logger.warning(f"Model check: {problem}")
    return problems
