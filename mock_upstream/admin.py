"""The ``/_mock/*`` control endpoints: stats, reset, live config. They are not counted."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import ValidationError

from mock_upstream.config import RATE_WINDOW_SECONDS
from mock_upstream.state import STATE

__all__ = ["add_admin_routes"]


async def _stats(request: web.Request) -> web.Response:
    """``GET /_mock/stats[?window=60][&arrivals=1]``."""
    try:
        window = float(request.query.get("window", RATE_WINDOW_SECONDS))
    except ValueError:
        window = 0.0
    if not window > 0:
        error = {"error": "window must be a positive number of seconds"}
        return web.json_response(error, status=400)
    arrivals = request.query.get("arrivals", "").lower() in ("1", "true", "yes")
    return web.json_response(request.app[STATE].stats.snapshot(window=window, arrivals=arrivals))


async def _reset(request: web.Request) -> web.Response:
    """``POST /_mock/reset``: zero the stats and the rate-limit window, re-seed the draws."""
    request.app[STATE].reset()
    return web.json_response({"reset": True})


async def _get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].config.model_dump())


async def _patch_config(request: web.Request) -> web.Response:
    """``POST /_mock/config`` with a JSON object of the fields to change."""
    try:
        patch = await request.json()
    except json.JSONDecodeError:
        return web.json_response({"error": "the body must be JSON"}, status=400)
    if not isinstance(patch, dict):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    state = request.app[STATE]
    try:
        state.patch_config(patch)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        return web.json_response({"error": errors}, status=400)
    return web.json_response(state.config.model_dump())


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def add_admin_routes(router: web.UrlDispatcher) -> None:
    """Serve the control endpoints under ``/_mock/``."""
    router.add_get("/_mock/stats", _stats)
    router.add_post("/_mock/reset", _reset)
    router.add_get("/_mock/config", _get_config)
    router.add_post("/_mock/config", _patch_config)
    router.add_get("/_mock/health", _health)
