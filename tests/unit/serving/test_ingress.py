"""The serving ingress's body handling and 422s, on a plain FastAPI app with the same route class and
validation handler as the deployment (no Ray): NaN / Infinity inputs, size caps, the body-read deadline."""
from __future__ import annotations

import asyncio
import json
import math

import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from ray_logmilp.serving.ingress import (
    BodyLimits,
    BodyRoute,
    json_safe,
    validation_error,
)
from ray_logmilp.serving.schema import DetectRequest

httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient

LIMITS = BodyLimits(max_bytes=1000, read_timeout_s=0.5)


class _Route(BodyRoute):
    @classmethod
    def limits(cls) -> BodyLimits:
        return LIMITS


def _app() -> FastAPI:
    app = FastAPI()
    app.router.route_class = _Route
    app.add_exception_handler(RequestValidationError, validation_error)

    @app.post("/v1/detect")
    async def detect(body: DetectRequest) -> dict:
        raw = [line.encode("utf-8", "surrogateescape") for line in body.lines or []]
        return {"raw": [r.hex() for r in raw], "top_k": body.top_k}

    return app


@pytest.fixture(scope="module")
def client():
    with TestClient(_app()) as c:
        yield c


NON_FINITE = [
    ('{"lines": ["a"], "top_k": NaN}', "top_k", "NaN"),
    ('{"lines": ["a"], "top_k": Infinity}', "top_k", "Infinity"),
    ('{"lines": ["a"], "top_k": -Infinity}', "top_k", "-Infinity"),
    ('{"lines": ["a"], "top_k": 1e400}', "top_k", "Infinity"),
    ('{"lines": [NaN]}', "lines", "NaN"),
    ('{"windows": [["a"], [Infinity]]}', "windows", "Infinity"),
    ('{"lines": ["a"], "score": [NaN, {"x": -Infinity}]}', "score", "NaN"),
]


@pytest.mark.parametrize("body,field,echo", NON_FINITE, ids=[b for b, _, _ in NON_FINITE])
def test_non_finite_numbers_get_422_naming_the_field(client, body, field, echo):
    r = client.post("/v1/detect", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert field in error["loc"] and echo in json.dumps(error["input"])


def test_valid_request_passes_and_invalid_utf8_inside_strings_reaches_the_handler(client):
    r = client.post("/v1/detect", content=b'{"lines": ["ok", "\xff\xfe"], "top_k": 2}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"raw": [b"ok".hex(), b"\xff\xfe".hex()], "top_k": 2}


def test_declared_length_over_the_limit_is_refused_before_reading(client):
    r = client.post("/v1/detect", content=b"x" * (LIMITS.max_bytes + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and str(LIMITS.max_bytes) in r.text


def test_json_safe_replaces_only_non_finite_floats():
    value = {"a": [math.nan, 1.5, (math.inf, -math.inf)], "b": "NaN", "c": 3}
    assert json_safe(value) == {"a": ["NaN", 1.5, ["Infinity", "-Infinity"]], "b": "NaN", "c": 3}


# -- raw ASGI: bodies that arrive in chunks, without a length, or never ---------------------------
def _call(chunks: list[bytes], *, complete: bool, content_length: int | None) -> tuple[int, float]:
    """POST ``chunks`` to the app through ASGI; ``complete=False`` never sends the last chunk (the client
    stalls). Returns the response status and the seconds it took."""
    headers = [(b"content-type", b"application/json")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/detect", "raw_path": b"/v1/detect", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict] = []

    async def run() -> tuple[int, float]:
        queue = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
        if complete:
            queue.append({"type": "http.request", "body": b"", "more_body": False})
        never = asyncio.Event()

        async def receive() -> dict:
            if queue:
                return queue.pop(0)
            await never.wait()  # a stalled client: no more bytes, connection still open
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.wait_for(_app()(scope, receive, send), timeout=LIMITS.read_timeout_s + 10)
        return sent[0]["status"], loop.time() - start

    return asyncio.run(run())


def test_a_stalled_body_gets_408_after_the_read_timeout():
    status, took = _call([b'{"lines": ['], complete=False, content_length=LIMITS.max_bytes)
    assert status == 408
    assert LIMITS.read_timeout_s <= took < LIMITS.read_timeout_s + 5


def test_a_body_trickled_in_small_chunks_is_held_to_one_deadline_for_the_whole_body():
    # Every chunk arrives at once here, but the last never does: per-chunk timers would never fire
    # if the client kept sending a byte now and then; one deadline for the body does.
    status, _ = _call([b"{", b'"', b"l"] * 50, complete=False, content_length=None)
    assert status == 408


def test_a_chunked_body_over_the_limit_stops_being_read():
    chunk = b" " * (LIMITS.max_bytes // 4 + 1)
    status, took = _call([chunk] * 4, complete=False, content_length=None)  # would stall after these
    assert status == 413 and took < LIMITS.read_timeout_s


def test_a_body_in_chunks_within_the_limits_is_parsed():
    body = json.dumps({"lines": ["a", "b"]}).encode()
    status, _ = _call([body[:5], body[5:]], complete=True, content_length=len(body))
    assert status == 200
