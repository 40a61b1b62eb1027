"""The cluster's keys and channels in Redis.

Keys (all under `voice-agent:`):

    node:{node_id}        JSON: id, url, sessions, max_sessions, cpu, draining, updated
    session:{session_id}  JSON: the session's summary (`LiveSession.summary()`) and its node
    turns:{session_id}    its recent turn records (a list, newest last)
    placed:{node_id}      sessions placed on the node lately: a sorted set, scored by when
                          (ms), pruned to the last few seconds on reading
    index:node, index:session   sorted sets of the ids above, scored by when they expire
                          (listing reads these, never a scan of every key)

Channels: `events` carries every node's dashboard events; `calls:{node_id}` the steering
calls for that node; `replies:{node_id}` their answers (web/cluster/calls.py).
"""

from __future__ import annotations

import time

PREFIX = "voice-agent:"
EVENTS_CHANNEL = f"{PREFIX}events"


def key(kind: str, name: str) -> str:
    return f"{PREFIX}{kind}:{name}"


def index(kind: str) -> str:
    """The sorted set of `kind`'s ids, scored by when their entries expire."""
    return key("index", kind)


def now_ms() -> int:
    return int(time.time() * 1000)
