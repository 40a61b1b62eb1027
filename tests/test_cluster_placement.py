"""Sessions placed on a node count against it for a few seconds each, not for as long as
placements keep coming (a real Redis; the placements' times given, not waited for)."""

from web.cluster.node import ClusterNode
from web.sessions import SessionRegistry
from tests.support.redis_server import RedisServer
from tests.support.settings import local_settings

SECS = 5.0


async def test_each_placement_ages_out_on_its_own_however_many_follow():
    async with RedisServer() as redis_server:
        settings = local_settings(redis_url=redis_server.url, node_id="a")
        node = ClusterNode(settings, SessionRegistry(max_sessions=8), dispatch=None)
        try:
            start = 1_000_000
            counts = []
            for i in range(20):  # a steady stream: one placement every 2 s, none connecting
                now = start + i * 2000
                await node.place("a", SECS, now=now)
                counts.append((await node.placed(["a", "b"], SECS, now=now))["a"])
            # Those of the last 5 s: the one just made and the two before it.
            assert counts == [1, 2] + [3] * 18, counts
            assert await node.placed(["a", "b"], SECS, now=now + 4500) == {"a": 1, "b": 0}
            assert await node.placed(["a", "b"], SECS, now=now + 5000) == {"a": 0, "b": 0}
        finally:
            await node.stop()
