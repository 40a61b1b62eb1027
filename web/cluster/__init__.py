"""Cluster mode (REDIS_URL set): several server nodes share one Redis.

- `node.ClusterNode`: this node's part — its own and its live sessions' entries in the shared
  registry (rewritten every heartbeat, expiring after the TTL), the dashboard events it
  relays to and from the other nodes, and the steering calls it answers and forwards.
- `calls`: steering calls answered by the session's own node.
- `keys`: the keys and channels in Redis.
- `placement`: `POST /api/connect` and `POST /api/rooms` on the least-loaded node.
- `routes`: `GET /api/nodes` (admin).

With REDIS_URL unset nothing here is created and the server is the single node it always was.
"""

from web.cluster.node import ClusterNode, ClusterUnavailable

__all__ = ["ClusterNode", "ClusterUnavailable"]
