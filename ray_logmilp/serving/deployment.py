"""Ray Serve deployment: batched HTTP detection + localization of raw log windows with a model bundle.

Users start it through the thin entry point ``serve/app.py`` (``import_path: serve.app:build_app``):

    serve run serve/config.yaml                                    # local, settings from the YAML
    serve deploy serve/config.yaml                                 # running cluster (see docs/serving.md)
    python serve/app.py --bundle outputs/demo/model [--port 8000]  # same app, YAML defaults, flags on top

The deployment class lives here, in the installed package, so replicas unpickle it by reference on any
node without the repository on their import path. Its settings are ``serving.args``; the request and
response models are ``serving.schema``; how routes read bodies (size cap, ``args.body_timeout_s``
deadline) and answer 422s is ``serving.ingress``.

API (OpenAPI schema at /docs and /openapi.json; details in docs/serving.md):
    POST /v1/detect  {"lines": [...]} | {"windows": [[...], ...]}, optional "top_k"
    GET  /v1/model   bundle version, threshold, template count, config summary
    GET  /healthz

One deployment, ``LogMILPDetector``: a FastAPI ingress that validates requests, then hands every window
to a ``@serve.batch`` method, so windows from concurrent requests (and the windows of one multi-window
request) are scored together by ``ray_logmilp.serving.scorer.WindowScorer`` in a worker thread. Serve's
batcher freezes a batch when it is formed, so groups formed while the model is busy stay small. The
model loop therefore merges every group waiting when the model becomes free, up to ``max_batch_size``
(see ``_score_batch``). Batch size and wait come from ``user_config``, and ``reconfigure`` changes them
live. ``max_ongoing_requests`` must be at least the batch size: Serve's default is 5, and it caps
batches silently.
"""
import asyncio
import collections
import dataclasses
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

from ray_logmilp.bundle import BundleError, verify_bundle
from ray_logmilp.config import ConfigError, require, to_dict
from ray_logmilp.serving.args import (DEFAULT_MAX_ONGOING_REQUESTS, DEPLOYMENT_NAME, AppArgs, BatchingConfig,
                                      app_args, batching, builder_app, deployment_options, load_config)
from ray_logmilp.serving.ingress import BodyLimits, BodyRoute, validation_error
from ray_logmilp.serving.schema import DetectRequest, DetectResponse

log = logging.getLogger("ray.serve")

DEFAULT_USER_CONFIG = to_dict(BatchingConfig())


class _ReplicaBodyRoute(BodyRoute):
    """``BodyRoute`` under the limits of the replica handling the request (``AppArgs``)."""

    @classmethod
    def limits(cls) -> BodyLimits:
        try:
            args = serve.get_replica_context().servable_object.args
        except Exception:  # outside a replica, or before the replica finished initialising
            return super().limits()
        return BodyLimits(args.max_body_bytes, args.body_timeout_s)


api = FastAPI(
    title="ray-logmilp",
    description="Weakly supervised log anomaly detection and localization (LogMILP) on raw log windows.",
    version="1",
)
api.router.route_class = _ReplicaBodyRoute  # every route: body size cap, read deadline, lenient JSON decoding
api.add_exception_handler(RequestValidationError, validation_error)  # 422, not 500, for NaN / Infinity inputs


def _too_large(msg: str) -> HTTPException:
    return HTTPException(status_code=413, detail=msg)


def _resolve_device(choice: str) -> str:
    import ray
    import torch

    if choice == "cpu":
        return "cpu"
    has_gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    if choice == "cuda" and not has_gpu:
        raise RuntimeError("device 'cuda' asked for, but this replica has no GPU: set "
                           "ray_actor_options.num_gpus: 1 for the deployment in serve/config.yaml")
    return "cuda" if has_gpu else "cpu"


@serve.deployment(
    name=DEPLOYMENT_NAME,
    max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS,
    user_config=DEFAULT_USER_CONFIG,
    ray_actor_options={"num_cpus": 1},
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress(api)
class LogMILPDetector:
    """Loads the bundle once per replica; scores windows in batches."""

    def __init__(self, args: dict[str, Any]):
        import torch

        from ray_logmilp.serving.scorer import WindowScorer

        self.args = app_args(args)
        if self.args.torch_threads:
            torch.set_num_threads(self.args.torch_threads)
        device = _resolve_device(self.args.device)
        self.scorer = WindowScorer.from_path(self.args.bundle, device=device, max_line_bytes=self.args.max_line_bytes,
                                             perturbation=self.args.perturbation)
        self.max_lines_per_window = self.args.max_lines_per_window
        if self.scorer.max_window_lines is not None:
            self.max_lines_per_window = min(self.max_lines_per_window, self.scorer.max_window_lines)
        self.batching = BatchingConfig()
        # One thread for the model: batches run one at a time (max_concurrent_batches=1) while the event
        # loop keeps accepting requests and filling the next batch.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logmilp-score")
        self.stats = {"batches": 0, "windows": 0, "busy_s": 0.0}  # since start; updated by the scoring thread
        self._queue: collections.deque = collections.deque()  # (window, top_k), future: waiting for the model
        self._model_loop: Optional[asyncio.Future] = None
        self.scorer.check()
        log.info("LogMILP replica ready: bundle %s (version %s) on %s", self.args.bundle, self.scorer.bundle.version,
                 device)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.batching = batching(user_config, self.batching)
        self._score_batch.set_max_batch_size(self.batching.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(self.batching.batch_wait_timeout_s)

    async def check_health(self) -> None:
        """Fails (so Serve replaces the replica) when the model cannot produce a finite score."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self.scorer.check)

    # -- batching ---------------------------------------------------------------------------------
    def _score_items(self, items: list[tuple[list[str], int]]) -> list[Any]:
        start = time.perf_counter()
        try:
            return self.scorer.score_windows([w for w, _ in items], [k for _, k in items])
        except Exception as exc:  # one bad window must not fail its batch-mates: retry them one by one
            if len(items) == 1:
                log.exception("scoring a window failed")
                return [exc]
            return [self._score_items([item])[0] for item in items]
        finally:
            self.stats["batches"] += 1
            self.stats["windows"] += len(items)
            self.stats["busy_s"] += time.perf_counter() - start

    @serve.batch(max_batch_size=DEFAULT_USER_CONFIG["max_batch_size"],
                 batch_wait_timeout_s=DEFAULT_USER_CONFIG["batch_wait_timeout_s"])
    async def _score_batch(self, items: list[tuple[list[str], int]]) -> list["asyncio.Future[Any]"]:
        """Serve's batcher groups the windows that arrive within ``batch_wait_timeout_s``; they join the
        model queue and each caller gets a future for its window.

        Returning at once matters: Serve forms the next group as soon as this one is handed over, and a
        group that had to wait for a busy model would stay as small as it was when formed. The model
        loop instead takes everything queued when it becomes free (up to ``max_batch_size``), so under
        load model calls grow to full batches by themselves, and an idle model starts at once.
        """
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures))
        if self._model_loop is None or self._model_loop.done():
            self._model_loop = asyncio.ensure_future(self._run_model())
        return futures

    async def _run_model(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            size = self.batching.max_batch_size
            chunk: list[tuple[tuple[list[str], int], asyncio.Future]] = []
            while self._queue and len(chunk) < size:
                item, future = self._queue.popleft()
                if not future.done():  # skip windows whose request was cancelled or timed out
                    chunk.append((item, future))
            if not chunk:
                continue
            try:
                results = await loop.run_in_executor(self._pool, self._score_items, [i for i, _ in chunk])
            except Exception as exc:  # pragma: no cover - _score_items returns errors as values
                results = [exc] * len(chunk)
            for (_, future), result in zip(chunk, results):
                if not future.done():
                    future.set_result(result)

    # -- routes -----------------------------------------------------------------------------------
    @api.post("/v1/detect", response_model=DetectResponse,
              responses={413: {"description": "Too many lines or windows, or body too large"},
                         408: {"description": "Body not received within args.body_timeout_s"},
                         422: {"description": "Not JSON, wrong types (NaN / Infinity included), unknown field, "
                                              "empty window, bad top_k"},
                         503: {"description": "Timed out waiting for the model"}})
    async def detect(self, body: DetectRequest) -> Response:
        """Score windows of raw log lines: detection, top-k lines and a counterfactual check per window."""
        a = self.args
        windows = [body.lines] if body.lines is not None else body.windows
        field = "lines" if body.lines is not None else "windows"
        if len(windows) > a.max_windows_per_request:
            raise _too_large(f"windows: {len(windows)} windows, the limit is {a.max_windows_per_request}")
        total = 0
        for i, w in enumerate(windows):
            total += len(w)
            if len(w) > self.max_lines_per_window:
                where = field if field == "lines" else f"windows[{i}]"
                raise _too_large(f"{where}: {len(w)} lines, the limit is {self.max_lines_per_window} per window")
        if total > a.max_lines_per_request:
            raise _too_large(f"{field}: {total} lines in all, the limit is {a.max_lines_per_request} per request")
        top_k = a.default_top_k if body.top_k is None else body.top_k
        if top_k > a.max_top_k:
            raise RequestValidationError([{"type": "less_than_equal", "loc": ("body", "top_k"),
                                           "msg": f"Input should be less than or equal to {a.max_top_k}",
                                           "input": top_k, "ctx": {"le": a.max_top_k}}])
        futures: list[asyncio.Future] = []

        async def run() -> list[Any]:
            futures.extend(await asyncio.gather(*(self._score_batch((w, top_k)) for w in windows)))
            return await asyncio.gather(*futures)

        try:
            results = await asyncio.wait_for(run(), timeout=a.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(status_code=503, detail=f"timed out after {a.request_timeout_s} s waiting for "
                                                        f"the model", headers={"Retry-After": "1"}) from None
        finally:
            for future in futures:  # a cancelled or timed-out request leaves nothing for the model to do
                future.cancel()
        for r in results:
            if isinstance(r, Exception):
                raise HTTPException(status_code=500, detail=f"scoring failed: {type(r).__name__}: {r}")
        return JSONResponse({"model_version": self.scorer.bundle.version, "windows": [r.model_dump() for r in results]})

    @api.get("/v1/model")
    async def model_info(self) -> dict[str, Any]:
        """Bundle version, threshold, template count, config summary and serving limits."""
        import torch

        a = self.args
        return {**self.scorer.info(), "bundle": a.bundle,
                "limits": {"max_lines_per_window": self.max_lines_per_window,
                           "max_windows_per_request": a.max_windows_per_request,
                           "max_lines_per_request": a.max_lines_per_request, "max_line_bytes": a.max_line_bytes,
                           "max_body_bytes": a.max_body_bytes, "default_top_k": a.default_top_k,
                           "max_top_k": a.max_top_k, "body_timeout_s": a.body_timeout_s,
                           "request_timeout_s": a.request_timeout_s},
                "batching": to_dict(self.batching), "torch_threads": torch.get_num_threads(),
                "stats": {**self.stats, "mean_batch_size": self.stats["windows"] / max(self.stats["batches"], 1)}}

    @api.get("/healthz")
    async def healthz(self) -> Response:
        """200 when the model scores a probe window, 503 otherwise."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, self.scorer.check)
        except Exception as exc:
            return JSONResponse({"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok", "model_version": self.scorer.bundle.version})


# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------
def _absolute_bundle(path: str) -> str:
    """Local relative paths are made absolute here, where they were written (replicas may run in another
    working directory); URIs pass through. A missing local bundle is an error now, not in every replica."""
    if "://" not in path:
        p = Path(path).expanduser()
        require((p / "bundle.json").is_file(), "args.bundle",
                f"{path!r} is not a model bundle folder (no bundle.json); train one with jobs/train.py or point "
                f"args.bundle at a bundle")
        path = str(p.resolve())
    try:
        verify_bundle(path)     # checksums, manifest and signature once here, not as a traceback per replica
    except BundleError as exc:
        raise ConfigError(f"args.bundle: {exc}") from None
    return path


def build(args: "AppArgs | dict[str, Any]", **options: Any) -> Application:
    """``build_app`` with optional deployment options (``max_ongoing_requests``, ``user_config``,
    ``autoscaling_config``, ``num_replicas``, ``ray_actor_options``, ...)."""
    args = app_args(args)
    args = dataclasses.replace(args, bundle=_absolute_bundle(args.bundle))
    user_config = to_dict(batching(options.get("user_config")))
    options["user_config"] = user_config
    ongoing = options.get("max_ongoing_requests", DEFAULT_MAX_ONGOING_REQUESTS)
    require(ongoing >= user_config["max_batch_size"], "max_ongoing_requests",
            f"({ongoing}) is below user_config.max_batch_size ({user_config['max_batch_size']}): Serve would "
            f"silently cap every batch at {ongoing}; raise max_ongoing_requests")
    return LogMILPDetector.options(**options).bind(to_dict(args))


def build_app(args: dict[str, Any]) -> Application:
    """The application builder of ``serve run`` / ``serve deploy`` (``import_path: serve.app:build_app``).
    Serve passes the config's ``args:`` mapping; ``AppArgs`` checks it (errors name ``args.<key>``)."""
    return build(args)


def app_from_config(path: "str | os.PathLike[str]", *, args: Optional[dict[str, Any]] = None,
                    deployment: Optional[dict[str, Any]] = None) -> tuple[Application, str]:
    """The application a config file describes, with ``args`` and deployment options overridden;
    returns ``(app, route_prefix)``. Used by the CLI, the tests and the benchmark, so they run what
    ``serve run serve/config.yaml`` runs."""
    spec = builder_app(load_config(path))
    options = {**deployment_options(spec), **(deployment or {})}
    if options.get("num_replicas") is not None:
        options.pop("autoscaling_config", None)
    return build({**(spec.args or {}), **(args or {})}, **options), spec.route_prefix or "/"
