"""The server's readings route (entry point ``vllm.endpoint_plugins``, loaded
when ``VLLM_PLUGINS`` names ``axis_steer``):

``GET /axis_steer/readings?id=<response id>`` returns, and forgets, the
readings of a finished request that asked for them (``axis_steer_readings``):
``{"id": ..., "readings": {...}}`` as described in
:mod:`axis_steer.serving`, or HTTP 404 when there are none (the request did
not ask, is not finished, or was already read). ``GET /axis_steer/info``
returns the capped layers and the caps file."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

# at module level: FastAPI resolves the routes' annotations in this namespace
from fastapi import HTTPException, Request


class ReadingsEndpoint:
    name = "axis_steer"
    required_tasks = None

    def attach_router(self, app: Any) -> None:
        @app.get("/axis_steer/readings")
        async def readings(request: Request, id: str) -> dict:  # noqa: A002 - the query parameter's name
            per_rank = await request.app.state.axis_steer_engine.collective_rpc("axis_steer_rpc", args=("take", [id]))
            found = (per_rank[0] or {}).get(id) if per_rank else None
            if found is None:
                raise HTTPException(
                    status_code=404,
                    detail=f"no axis_steer readings for id {id!r} (the request must set axis_steer_readings=1 "
                    "and be finished; readings are returned once)",
                )
            return {"id": id, "readings": found}

        @app.get("/axis_steer/info")
        async def info(request: Request) -> dict:
            per_rank = await request.app.state.axis_steer_engine.collective_rpc("axis_steer_rpc", args=("info",))
            return {"ranks": per_rank}

    async def init_state(self, engine_client: Any, state: Any, args: Namespace) -> None:
        state.axis_steer_engine = engine_client
