"""`GET /api/nodes` (admin): every live node of the cluster, with its load."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from bot.config import Settings
from web.admin import admin_router
from web.cluster.node import ClusterNode
from web.cluster.steering import ClusterUnavailable


class NodeInfo(BaseModel):
    id: str = Field(description="NODE_ID (default host:port)")
    url: str = Field(description="Where clients and other nodes reach it (NODE_URL)")
    sessions: int = Field(description="Live sessions on it")
    max_sessions: int
    cpu_percent: float = Field(description="Its server process's CPU use since its last heartbeat")
    draining: bool = Field(description="Taking no new sessions (SIGTERM)")
    pid: int
    updated: float = Field(description="Unix time of its last heartbeat")


def nodes_router(settings: Settings, cluster: ClusterNode) -> APIRouter:
    router = admin_router(
        settings, prefix="/api/nodes", tags=["admin"], unavailable="Redis is unavailable"
    )

    @router.get("", response_model=list[NodeInfo], summary="List the cluster's live nodes")
    async def list_nodes():
        try:
            return await cluster.nodes()
        except ClusterUnavailable as e:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from e

    return router
