"""Ray Serve deployment: batched HTTP detection + localization of raw log windows with a model bundle.

Users start it through the thin entry point ``serve/app.py`` (``import_path: serve.app:build_app``):

    serve run serve/config.yaml                                    # local, settings from the YAML
    serve deploy serve/config.yaml                                 # running cluster (see docs/serving.md)
    python serve/app.py --bundle outputs/demo/model [--port 8000]  # same app, YAML defaults, flags on top

The deployment class lives here, in the installed package, so replicas unpickle it by reference on any
node without the repository on their import path.

API (OpenAPI schema at /docs and /openapi.json; details in docs/serving.md):
    POST /v1/detect  {"lines": [...]} | {"windows": [[...], ...]}, optional "top_k"
    GET  /v1/model   bundle version, threshold, template count, config summary
    GET  /healthz

One deployment, ``LogMILPDetector``: a FastAPI ingress that validates requests, then hands every window
to a ``@serve.batch`` method, so windows from concurrent requests (and the windows of one multi-window
request) are scored together by ``ray_logmilp.inference.WindowScorer`` in a worker thread. Serve's
batcher freezes a batch when it is formed, so groups formed while the model is busy stay small. The
model loop therefore merges every group waiting when the model becomes free, up to ``max_batch_size``
(see ``_score_batch``). Batch size and wait come from ``user_config``, and ``reconfigure`` changes them
live. ``max_ongoing_requests`` must be at least the batch size: Serve's default is 5, and it caps
batches silently.
"""
import asyncio
import collections
import json
import logging
import os

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator
from ray import serve
from ray.serve import Application

log = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "LogMILPDetector"
DEFAULT_USER_CONFIG = {"max_batch_size": 32, "batch_wait_timeout_s": 0.002}
USER_CONFIG_KEYS = ("max_batch_size", "batch_wait_timeout_s")
DEFAULT_MAX_ONGOING_REQUESTS = 128


# ------------------------------------------------------------------------------------------------
# Typed builder arguments (the `args:` of an application in serve/config.yaml)
# ------------------------------------------------------------------------------------------------
class AppArgs(BaseModel):
    """Arguments of ``build_app``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    bundle: str = Field(description="Model bundle folder: a local path or a URI (s3://, gs://, ...)")
    max_lines_per_window: int = Field(1024, ge=1, description="More lines in one window -> 413")
    max_windows_per_request: int = Field(256, ge=1, description="More windows in one request -> 413")
    max_lines_per_request: int = Field(65536, ge=1, description="More lines in one request -> 413")
    max_line_bytes: int = Field(16384, ge=1, description="Longer lines are quarantined (line_too_long)")
    max_body_bytes: int = Field(64 << 20, ge=1, description="Larger request bodies -> 413 before parsing")
    default_top_k: int = Field(5, ge=1, description="top_k when a request gives none")
    max_top_k: int = Field(100, ge=1, description="Larger top_k -> 422")
    perturbation: Literal["zero", "mask"] = Field("zero", description="How the counterfactual removes the top line")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: cuda when the replica was given a GPU (ray_actor_options.num_gpus), else cpu")
    torch_threads: Optional[int] = Field(None, ge=1, description="torch intra-op threads (default: Ray's, = num_cpus)")
    request_timeout_s: float = Field(60.0, gt=0, description="A request waiting longer gets 503")

    @model_validator(mode="after")
    def _check(self) -> "AppArgs":
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) must be <= max_top_k ({self.max_top_k})")
        return self


# ------------------------------------------------------------------------------------------------
# Request / response models (they also make the OpenAPI schema)
# ------------------------------------------------------------------------------------------------
Window = Annotated[list[StrictStr], Field(min_length=1, description="Raw log lines of one window, in order")]


class DetectRequest(BaseModel):
    """Exactly one of ``lines`` (one window) or ``windows`` (many)."""

    model_config = ConfigDict(extra="forbid")

    lines: Optional[Window] = None
    windows: Optional[Annotated[list[Window], Field(min_length=1)]] = None
    top_k: Optional[StrictInt] = Field(None, ge=1, description="Lines to return per window (default from the app)")

    @model_validator(mode="after")
    def _one_of(self) -> "DetectRequest":
        if (self.lines is None) == (self.windows is None):
            raise ValueError("give exactly one of 'lines' (one window) or 'windows' (a list of windows)")
        return self


class TopLineOut(BaseModel):
    index: int = Field(description="0-based position of the line in its window")
    line: str
    template_id: int = Field(description="-1: no training template matches; template is then the masked line")
    template: str
    weight: float


class CounterfactualOut(BaseModel):
    removed_index: int
    score_without_top: float
    drop: float


class QuarantinedOut(BaseModel):
    index: int
    reason: str
    raw: str


class WindowOut(BaseModel):
    score: Optional[float]
    anomalous: Optional[bool]
    threshold: float
    n_lines: int
    n_scored: int
    unseen_templates: int
    top: list[TopLineOut]
    counterfactual: Optional[CounterfactualOut]
    quarantined: list[QuarantinedOut]
    error: Optional[str] = Field(description="Set when no line of the window could be scored")


class DetectResponse(BaseModel):
    model_version: str
    windows: list[WindowOut]


# ------------------------------------------------------------------------------------------------
# Request body handling: size cap before parsing, and bytes that are not UTF-8 reach the scorer
# (as surrogate escapes) to be quarantined per line instead of failing the whole request.
# ------------------------------------------------------------------------------------------------
def _max_body_bytes() -> int:
    try:
        return serve.get_replica_context().servable_object.args.max_body_bytes
    except Exception:  # outside a replica, or before the replica finished initialising
        return AppArgs.model_fields["max_body_bytes"].default


class _LenientJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = json.loads(body.decode("utf-8", "surrogateescape"))
        return self._json


class _BodyRoute(APIRoute):
    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            request = _LenientJSONRequest(request.scope, request.receive)
            limit = _max_body_bytes()
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                return JSONResponse({"detail": f"request body of {length} bytes is over the limit of {limit}"},
                                    status_code=413)
            body = await request.body()  # cached on the request: FastAPI's handler reads it from there
            if len(body) > limit:
                return JSONResponse({"detail": f"request body of {len(body)} bytes is over the limit of {limit}"},
                                    status_code=413)
            return await handler(request)

        return route_handler


api = FastAPI(
    title="ray-logmilp",
    description="Weakly supervised log anomaly detection and localization (LogMILP) on raw log windows.",
    version="1",
)
api.router.route_class = _BodyRoute  # every route: body size cap + lenient JSON decoding


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

        self.args = AppArgs.model_validate(args)
        if self.args.torch_threads:
            torch.set_num_threads(self.args.torch_threads)
        device = _resolve_device(self.args.device)
        self.scorer = WindowScorer.from_path(self.args.bundle, device=device, max_line_bytes=self.args.max_line_bytes,
                                             perturbation=self.args.perturbation)
        self.max_lines_per_window = self.args.max_lines_per_window
        if self.scorer.max_window_lines is not None:
            self.max_lines_per_window = min(self.max_lines_per_window, self.scorer.max_window_lines)
        self.batching = dict(DEFAULT_USER_CONFIG)
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
        user_config = dict(user_config or {})
        unknown = sorted(set(user_config) - set(USER_CONFIG_KEYS))
        if unknown:
            raise ValueError(f"user_config: unknown key(s) {unknown}; allowed: {list(USER_CONFIG_KEYS)}")
        size = user_config.get("max_batch_size", self.batching["max_batch_size"])
        wait = user_config.get("batch_wait_timeout_s", self.batching["batch_wait_timeout_s"])
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"user_config.max_batch_size must be an integer >= 1, got {size!r}")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise ValueError(f"user_config.batch_wait_timeout_s must be a number >= 0, got {wait!r}")
        self._score_batch.set_max_batch_size(size)
        self._score_batch.set_batch_wait_timeout_s(float(wait))
        self.batching = {"max_batch_size": size, "batch_wait_timeout_s": float(wait)}

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
            size = self.batching["max_batch_size"]
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
                         422: {"description": "Not JSON, wrong types, unknown field, empty window, bad top_k"},
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
        return JSONResponse({"model_version": self.scorer.bundle.version, "windows": [r.to_dict() for r in results]})

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
                           "max_top_k": a.max_top_k},
                "batching": dict(self.batching), "torch_threads": torch.get_num_threads(),
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
    if "://" in path:
        return path
    p = Path(path).expanduser()
    if not (p / "bundle.json").is_file():
        raise ValueError(f"args.bundle: {path!r} is not a model bundle folder (no bundle.json); train one with "
                         f"jobs/train.py or point args.bundle at a bundle")
    return str(p.resolve())


def build(args: "AppArgs | dict[str, Any]", **deployment_options: Any) -> Application:
    """``build_app`` with optional deployment options (``max_ongoing_requests``, ``user_config``,
    ``autoscaling_config``, ``num_replicas``, ``ray_actor_options``, ...)."""
    args = AppArgs.model_validate(args) if isinstance(args, dict) else args
    args = args.model_copy(update={"bundle": _absolute_bundle(args.bundle)})
    user_config = {**DEFAULT_USER_CONFIG, **(deployment_options.get("user_config") or {})}
    deployment_options["user_config"] = user_config
    ongoing = deployment_options.get("max_ongoing_requests", DEFAULT_MAX_ONGOING_REQUESTS)
    if ongoing < user_config["max_batch_size"]:
        raise ValueError(f"max_ongoing_requests ({ongoing}) is below user_config.max_batch_size "
                         f"({user_config['max_batch_size']}): Serve would silently cap every batch at "
                         f"{ongoing}; raise max_ongoing_requests")
    return LogMILPDetector.options(**deployment_options).bind(args.model_dump())


def build_app(args: AppArgs) -> Application:
    """Typed application builder for ``serve run`` / ``serve deploy`` (``import_path: serve.app:build_app``)."""
    return build(args)


def load_config(path: "str | os.PathLike[str]") -> Any:
    """Read and validate a Serve config file (``ServeDeploySchema``)."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    with open(path, encoding="utf-8") as f:
        return ServeDeploySchema.model_validate(yaml.safe_load(f))


def app_from_config(path: "str | os.PathLike[str]", *, args: Optional[dict[str, Any]] = None,
                    deployment: Optional[dict[str, Any]] = None) -> tuple[Application, str]:
    """The application a config file describes, with ``args`` and deployment options overridden;
    returns ``(app, route_prefix)``. Used by the CLI below, the tests and the benchmark, so they run
    what ``serve run serve/config.yaml`` runs."""
    config = load_config(path)
    spec = next(a for a in config.applications if a.import_path.endswith(":build_app"))
    options: dict[str, Any] = {}
    for dep in spec.deployments or []:
        if dep.name == DEPLOYMENT_NAME:
            options = dep.model_dump(exclude_unset=True, exclude={"name"})
    options.update(deployment or {})
    if "num_replicas" in options and options["num_replicas"] is not None:
        options.pop("autoscaling_config", None)
    return build({**(spec.args or {}), **(args or {})}, **options), spec.route_prefix or "/"


def main(argv: Optional[list[str]] = None, *, default_config: "str | os.PathLike[str] | None" = None) -> int:
    """``python serve/app.py``: serve a bundle with the settings of a Serve config file, flags on top."""
    import argparse

    import ray

    p = argparse.ArgumentParser(description="Serve a LogMILP bundle over HTTP with Ray Serve.")
    p.add_argument("--bundle", required=True, help="model bundle folder (local path or URI)")
    p.add_argument("--config", default=None if default_config is None else str(default_config),
                   required=default_config is None, help="Serve config whose app settings to use")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", default=None, help="Ray address (default: start a local Ray or use RAY_ADDRESS)")
    p.add_argument("--num-replicas", type=int, default=None, help="fixed replicas instead of autoscaling")
    p.add_argument("--max-batch-size", type=int, default=None)
    p.add_argument("--batch-wait-timeout-s", type=float, default=None)
    p.add_argument("--max-ongoing-requests", type=int, default=None)
    p.add_argument("--num-gpus", type=float, default=None, help="GPUs per replica (0 = CPU replicas)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(a.config)
    dep: dict[str, Any] = {}
    base = next((d for app in config.applications for d in (app.deployments or []) if d.name == DEPLOYMENT_NAME), None)
    base_opts = base.model_dump(exclude_unset=True) if base is not None else {}
    user_config = dict(base_opts.get("user_config") or {})
    if a.max_batch_size is not None:
        user_config["max_batch_size"] = a.max_batch_size
    if a.batch_wait_timeout_s is not None:
        user_config["batch_wait_timeout_s"] = a.batch_wait_timeout_s
    if user_config:
        dep["user_config"] = user_config
    if a.num_replicas is not None:
        dep["num_replicas"] = a.num_replicas
    if a.max_ongoing_requests is not None:
        dep["max_ongoing_requests"] = a.max_ongoing_requests
    if a.num_gpus is not None:
        dep["ray_actor_options"] = {**(base_opts.get("ray_actor_options") or {}), "num_gpus": a.num_gpus}
    app, prefix = app_from_config(a.config, args={"bundle": a.bundle}, deployment=dep)
    ray.init(address=a.address)
    serve.start(http_options={"host": a.host, "port": a.port})
    serve.run(app, name="logmilp", route_prefix=prefix)
    print(f"serving {a.bundle} at http://{a.host}:{a.port}{prefix.rstrip('/')}/v1/detect "
          f"(docs: http://{a.host}:{a.port}/docs); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
