"""Cluster mode (REDIS_URL set): several server nodes share one Redis.

- `node.ClusterNode`: this node's part — its own and its live sessions' entries in the shared
  registry (rewritten every heartbeat, expiring after the TTL), the dashboard events it
  relays to and from the other nodes; its one subscription hands steering calls on.
- `steering`: steering calls over Redis, sent to the node owning a session and answered there.
- `calls`: what a steering call runs: the owner's own route, in process.
- `keys`: the keys and channels in Redis.
- `placement`: `POST /api/connect` and `POST /api/rooms` on the least-loaded node.
- `routes`: `GET /api/nodes` (admin).

With REDIS_URL unset nothing here is created and the server is the single node it always was.
"""

from web.cluster.node import ClusterNode
from web.cluster.steering import ClusterUnavailable

__all__ = ["ClusterNode", "ClusterUnavailable"]
