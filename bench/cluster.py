"""Cluster mode's costs: cross-node admin latency, Redis operations per session, placement.

Two nodes (`python -m bot serve`, cloud stack on the loopback peers of tests/peers/) share a
private redis-server, with the default heartbeat and TTL. Sessions are live WebSocket
clients on node B, silent (the registry's steady cost; a turn's own writes are counted
apart).

    .venv/bin/python -m bench.cluster [--sessions 4] [--calls 200] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import redis.asyncio as redis

from bench.common import (
    add_common_args,
    fmt,
    markdown_table,
    p50,
    p95,
    report,
    wait_for_quiet_machine,
)
from tests.support.nodes import CloudPeers, nodes
from tests.support.polling import until
from tests.support.redis_server import RedisServer
from web.ws_client import AgentClient

# The default heartbeat and TTL; room for the sessions placed.
# Counted from web/cluster/node.py, bot/memory/ and web/resume.py, not measured here.
PER_EVENT = (
    "Beyond the heartbeat, per session (counted from the code, not measured): a state change "
    "3 commands (SET, ZADD, PUBLISH), a turn 6 (SET, ZADD, RPUSH, LTRIM, PEXPIRE, PUBLISH), "
    "plus with a user id 2 (GET, SET of its memory), plus 1 EVALSHA (a conditional SET) to keep "
    "it resumable, and 1 PEXPIRE every min(SESSION_RESUME_SECS / 2, 10) s while it lives; a "
    "steering call 2 PUBLISH and 1 GET; a placement 4 + 2 per node (ZRANGEBYSCORE, MGET, "
    "ZREMRANGEBYSCORE and ZCARD per node, ZADD, PEXPIRE)."
)
DEFAULTS = {"cluster_heartbeat_secs": "2", "cluster_ttl_secs": "6", "max_sessions": "16"}


async def redis_calls(store) -> int:
    """Commands Redis has run so far (INFO commandstats), less the INFO calls themselves."""
    stats = await store.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")


async def ops_per_sec(store, secs: float) -> float:
    before, t0 = await redis_calls(store), time.monotonic()
    await asyncio.sleep(secs)  # a measuring window, not a wait for a condition
    return (await redis_calls(store) - before) / (time.monotonic() - t0)


async def latencies(http: httpx.AsyncClient, method: str, url: str, n: int, **kw) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await http.request(method, url, **kw)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return times


async def run(args) -> tuple[list[list], list[str]]:
    async with RedisServer() as server, CloudPeers() as peers, \
            nodes(peers, server.url, "a", "b", **DEFAULTS) as (a, b), \
            httpx.AsyncClient(timeout=30) as http:
        store = redis.from_url(server.url)
        idle = await ops_per_sec(store, args.window)
        clients = [AgentClient(b.ws_url) for _ in range(args.sessions)]
        for client in clients:
            await client.connect()
            assert await client.wait_for(lambda r: r.server_messages("session"), 30)
        ids = [c.received.server_messages("session")[0]["session_id"] for c in clients]
        busy = await ops_per_sec(store, args.window)
        per_session = (busy - idle) / args.sessions

        target = ids[0]
        rows = []
        for label, node, method, path, kw in [
            ("GET session, local (B)", b, "GET", f"/api/sessions/{target}", {}),
            ("GET session, across (A→B)", a, "GET", f"/api/sessions/{target}", {}),
            ("PUT context, local (B)", b, "PUT", f"/api/sessions/{target}/context",
             {"json": {"instructions": "Be brief.", "mode": "replace"}}),
            ("PUT context, across (A→B)", a, "PUT", f"/api/sessions/{target}/context",
             {"json": {"instructions": "Be brief.", "mode": "replace"}}),
            ("GET /api/sessions (all nodes), on A", a, "GET", "/api/sessions", {}),
        ]:
            times = await latencies(http, method, f"{node.url}{path}", args.calls, **kw)
            rows.append([label, args.calls, fmt(p50(times), 1), fmt(p95(times), 1)])

        for client in clients:
            await client.close()
        def loads():
            return [n["sessions"] for n in httpx.get(f"{a.url}/api/nodes").json()]
        await until(lambda: loads() == [0, 0], 30, "both nodes to be idle")
        placed = {"a": 0, "b": 0}
        for _ in range(2 * args.placements):
            r = await http.post(f"{a.url}/api/connect", json={"transport": "websocket"})
            assert r.status_code == 200, r.text
            placed[r.json()["node"]] += 1
        await store.aclose()
    verdicts = [
        f"- Redis commands per second: {idle:.2f} with no session (2 nodes' heartbeats), "
        f"{busy:.2f} with {args.sessions} silent sessions: {per_session:.2f} per session",
        f"- placement: {2 * args.placements} sessions placed through A on 2 idle nodes: "
        f"A {placed['a']}, B {placed['b']}",
    ]
    return rows, verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--placements", type=int, default=10, help="N: 2 x N are placed")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per ops count")
    add_common_args(parser)
    args = parser.parse_args()
    if args.smoke:
        args.sessions, args.calls, args.placements, args.window = 1, 5, 2, 2.0
    started = wait_for_quiet_machine(args.wait_load, 1800)
    rows, verdicts = asyncio.run(run(args))
    table = markdown_table(["admin call", "calls", "p50 (ms)", "p95 (ms)"], rows)
    report(args, "cluster", "Cluster mode: cross-node admin calls, Redis load, placement",
           "Cluster mode (2 nodes, 1 Redis)", table, started, verdicts=verdicts, appendix=PER_EVENT)


if __name__ == "__main__":
    main()
