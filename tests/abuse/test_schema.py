"""Issue 14's probe, F8: the OpenAPI schema holds against schemathesis."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.abuse.frames import TOKEN, session_of
from web.ws_client import AgentClient

SCHEMATHESIS_CONFIG = Path(__file__).with_name("schemathesis.toml")


# --- F8: the OpenAPI schema holds against schemathesis ------------------------------------------


async def test_the_openapi_schema_holds_under_schemathesis(serve, tmp_path):
    """Every check and phase of schemathesis (tests/abuse/schemathesis.toml: a fixed seed and a
    bounded number of cases) against the live server, holding the admin token while two
    /ws clients are live: no failure, and a client whose session it ends is closed with
    1000 and a reason."""
    schemathesis = Path(sys.executable).with_name("st")
    async with serve(admin_token=TOKEN, max_new_sessions_per_minute=0) as server:
        clients = [AgentClient(server.ws_url) for _ in range(2)]
        for client in clients:
            await client.connect()
            await session_of(client)
        try:
            run = await asyncio.create_subprocess_exec(
                str(schemathesis),
                "--config-file",
                str(SCHEMATHESIS_CONFIG),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
                cwd=tmp_path,
            )
            report = (await asyncio.wait_for(run.communicate(), 600))[0].decode(errors="replace")
            assert run.returncode == 0, report[-6000:]
            assert " passed" in report and "failures" not in report.splitlines()[-1], report[-2000:]
            for client in clients:
                if client.closed:
                    assert client.close_code == 1000 and client.close_reason, client.close_reason
        finally:
            for client in clients:
                await client.close()
