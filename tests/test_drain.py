"""Draining on SIGTERM when the grace runs out (web/drain.py, bot/cli.py): a session that
stays connected past DRAIN_GRACE_SECS is ended by the server, its client told why (1012, on
which the browser client resumes the conversation elsewhere), and the node exits. (Sessions
that finish within the grace: tests/test_cluster.py's placement test.)

One `python -m bot serve` node without Redis, every stage on its loopback cloud peer
(tests/support/nodes.py).
"""

from __future__ import annotations

import contextlib
import time

import pytest
import websockets

from tests.support.nodes import CloudPeers, Node
from tests.support.polling import until
from web.ws_client import AgentClient

GRACE = 2.0


@pytest.mark.parametrize(
    "session_processes", [False, True], ids=["in-process", "session-processes"]
)
async def test_a_session_still_live_when_the_drain_grace_is_over_is_ended_and_the_node_exits(
        session_processes):
    async with CloudPeers() as peers, Node(peers, None, "draining", drain_grace_secs=GRACE,
                                           session_processes=session_processes) as node:
        async with AgentClient(node.ws_url) as client:
            assert await client.wait_for(lambda r: r.server_messages("session"), 30)
            node.terminate()  # SIGTERM: no new sessions; this one may go on for GRACE
            draining = time.monotonic()
            # The client keeps its microphone live throughout: it never leaves by itself.
            with contextlib.suppress(websockets.ConnectionClosed):  # closed mid-frame
                await client.silence_until(lambda r: False, GRACE + 20)
            await until(lambda: client.closed, 5, "the client to see the close")
            assert client.closed, "the session outlived the drain grace"
            assert time.monotonic() - draining >= GRACE
            assert client.close_code == 1012, (client.close_code, client.close_reason)
            assert "shutting down" in client.close_reason, client.close_reason
            assert "DRAIN_GRACE_SECS" in client.close_reason, client.close_reason
        assert await node.wait_exit(20) == 0
        log = node.log()
        assert f"Drain grace ({GRACE:g} s) is over: ending 1 live sessions" in log, log[-3000:]
