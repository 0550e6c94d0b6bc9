"""The FastAPI side of the serving ingress: how request bodies are read and how 422s are written. No Ray.

* ``BodyRoute`` reads every request body before FastAPI parses it: a ``Content-Length`` over the limit is
  refused (413) before anything is read, a body that grows past the limit stops being read (413), and a
  body not fully received within ``BodyLimits.read_timeout_s`` gets 408. uvicorn (Ray Serve's HTTP
  proxy) has no body-read timeout, and Serve hands a request to a replica before its body arrives, so
  without this deadline a client that sends headers and then stalls holds one of the replica's
  ``max_ongoing_requests`` slots for as long as it keeps the socket open.
* ``LenientJSONRequest`` decodes the body with ``surrogateescape``: bytes that are not UTF-8 inside a
  JSON string reach the scorer, which quarantines that line instead of failing the whole request.
* ``validation_error`` is FastAPI's 422 handler made safe for non-finite numbers: Python's JSON parser
  accepts ``NaN``, ``Infinity`` and ``1e400``, and FastAPI's own handler then fails (500) to echo them
  back, because a JSON response may not contain them.
"""
from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ray_logmilp.serving.args import AppArgs

__all__ = ["BodyLimits", "BodyRoute", "LenientJSONRequest", "json_safe", "validation_error"]


@dataclass(frozen=True)
class BodyLimits:
    """What a request body may cost: ``max_bytes`` of it, received within ``read_timeout_s`` seconds."""

    max_bytes: int
    read_timeout_s: float


class LenientJSONRequest(Request):
    """A request whose ``json()`` keeps bytes that are not UTF-8 (as surrogate escapes)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = json.loads(body.decode("utf-8", "surrogateescape"))
        return self._json


def _too_large(size: int | str, limit: int) -> JSONResponse:
    return JSONResponse({"detail": f"request body of {size} bytes is over the limit of {limit}"}, status_code=413)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past ``limit`` bytes (a chunked body has no length to
    refuse it by). Stored where Starlette keeps a body it has read, so the route's handler reads it there."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    request._body = b"".join(chunks)  # Request.body() caches in this attribute; FastAPI reads it back
    return request._body


class BodyRoute(APIRoute):
    """A route that reads its request body under ``limits()`` before FastAPI parses it (see module doc)."""

    @classmethod
    def limits(cls) -> BodyLimits:
        """The limits of the request being handled: ``AppArgs``' defaults here; the deployment's route
        reads its replica's args instead."""
        return BodyLimits(AppArgs.max_body_bytes, AppArgs.body_timeout_s)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        limits = self.limits

        async def route_handler(request: Request) -> Response:
            request = LenientJSONRequest(request.scope, request.receive)
            lim = limits()
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > lim.max_bytes:
                return _too_large(length, lim.max_bytes)
            try:
                # One deadline for the whole body, not per chunk: a client trickling a byte at a time
                # must not hold the request (and its replica slot) open either.
                body = await asyncio.wait_for(_read_body(request, lim.max_bytes), lim.read_timeout_s)
            except asyncio.TimeoutError:
                return JSONResponse({"detail": f"request body not received within {lim.read_timeout_s} s"},
                                    status_code=408, headers={"Connection": "close"})
            if body is None:
                return _too_large(f"more than {lim.max_bytes}", lim.max_bytes)
            return await handler(request)

        return route_handler


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its JSON-extension spelling (``"NaN"``,
    ``"Infinity"``, ``"-Infinity"``), so a strict JSON encoder accepts it."""
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 in FastAPI's shape (``{"detail": [{"loc": [...], "msg": ..., "input": ...}]}``), for any input."""
    return JSONResponse({"detail": json_safe(jsonable_encoder(exc.errors()))}, status_code=422)
