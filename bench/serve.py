"""Benchmark of the Ray Serve detection app (serve/app.py) against the plain alternatives.

    python bench/serve.py                          # builds a small bundle first (~1 min), full run ~5 min
    python bench/serve.py --bundle outputs/demo/model --duration 60 --step 10
    python bench/serve.py --bundle PATH --quick    # 5-s points, 15-s long run: a first look

Bounded closed-loop clients (each sends a request, waits for the answer, sends the next; every request
has a timeout) on loopback, 100-line windows cut from a synthetic corpus:

1. in-process: ``WindowScorer.score_windows`` on 1, 16 and 64 windows per call, with the replica's
   torch thread count (the model's own scoring rate, no HTTP);
2. Ray Serve, settings from serve/config.yaml (one replica): single-window requests at concurrency
   1, 8 and 32 (the 32 point runs ``--duration`` seconds and must have no errors), then ``windows``
   requests of 1, 16 and 64 windows (lines scored per second);
3. the same app reconfigured live to ``max_batch_size=1`` (no batching) at concurrency 1, 8 and 32;
4. a plain FastAPI + uvicorn process (one worker, same request model, same WindowScorer, one scoring
   thread, no batching) at the same points.

Prints a table on stderr and, last on stdout, one JSON line with every figure and the bars:
no errors in the long run at concurrency 32; batched ≥ 2× unbatched windows/s at concurrency 32;
64-window requests ≥ 0.5× the in-process lines/s.
"""
import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVE_CONFIG = REPO_ROOT / "serve" / "config.yaml"

WINDOW_LINES = 100
SMALL_MODEL = ["model.hidden_dim=64", "model.ff_dim=128", "model.num_prototypes=8"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------
def build_bundle(work: Path, model_size: str) -> str:
    """A bundle trained briefly on a synthetic corpus (speed, not quality, matters here)."""
    import ray

    from ray_logmilp.config import load_project
    from ray_logmilp.ingest.pipeline import prepare
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate
    from ray_logmilp.train import train_local

    generate(SyntheticConfig(n_lines=30_000, seed=0), work / "train_corpus")
    overrides = [f"data.inputs=[{work / 'train_corpus' / 'corpus.log'}]", f"data.output_dir={work / 'prepared'}",
                 f"train.bundle_dir={work / 'model'}", f"train.storage_path={work / 'ray_results'}", "train.epochs=2"]
    cfg = load_project(REPO_ROOT / "configs" / "synthetic.yaml", overrides + (SMALL_MODEL if model_size == "small" else []))
    prepare(cfg.data, progress=False)
    assert ray.is_initialized()
    return train_local(cfg).bundle_dir


def request_windows(work: Path, n: int = 400) -> list[list[str]]:
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    generate(SyntheticConfig(n_lines=n * WINDOW_LINES, seed=11), work / "request_corpus")
    lines = (work / "request_corpus" / "corpus.log").read_text().splitlines()
    return [lines[i:i + WINDOW_LINES] for i in range(0, len(lines) - WINDOW_LINES + 1, WINDOW_LINES)]


def bodies(windows: list[list[str]], per_request: int) -> list[bytes]:
    """Pre-encoded request bodies: single-window ``lines`` requests, or ``windows`` requests."""
    if per_request == 0:
        return [json.dumps({"lines": w}).encode() for w in windows]
    out = []
    for i in range(0, len(windows), per_request):
        chunk = windows[i:i + per_request]
        if len(chunk) < per_request:
            chunk = chunk + windows[:per_request - len(chunk)]
        out.append(json.dumps({"windows": chunk}).encode())
    return out


# --------------------------------------------------------------------------------------------------
# Closed-loop load
# --------------------------------------------------------------------------------------------------
async def _closed_loop(url: str, payloads: list[bytes], windows_per_request: int, concurrency: int,
                       duration: float, timeout: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    counter = 0
    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    tmo = aiohttp.ClientTimeout(total=timeout)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=conn, timeout=tmo) as session:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            nonlocal done, counter
            while time.perf_counter() < deadline:
                body = payloads[counter % len(payloads)]
                counter += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except Exception as exc:  # timeouts, resets: counted, never hidden
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                    done += 1
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat = np.asarray(latencies) * 1e3
    wins = done * windows_per_request
    return {
        "concurrency": concurrency, "seconds": round(elapsed, 2), "requests": done,
        "windows_per_s": round(wins / elapsed, 1), "lines_per_s": round(wins * WINDOW_LINES / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "errors": sum(errors.values()), "error_kinds": errors,
    }


def _replica_stats(url: str) -> dict | None:
    """The app's scoring counters (GET /v1/model "stats"), or None (the plain server has none)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url.replace("/v1/detect", "/v1/model"), timeout=10) as r:
            return json.loads(r.read()).get("stats")
    except Exception:
        return None


def load(url: str, payloads: list[bytes], windows_per_request: int, concurrency: int, duration: float,
         label: str, timeout: float = 60.0) -> dict:
    before = _replica_stats(url)
    r = asyncio.run(_closed_loop(url, payloads, windows_per_request, concurrency, duration, timeout))
    after = _replica_stats(url)
    extra = ""
    if before and after and after["batches"] > before["batches"]:
        batches = after["batches"] - before["batches"]
        r["mean_batch_size"] = round((after["windows"] - before["windows"]) / batches, 2)
        r["model_busy_fraction"] = round((after["busy_s"] - before["busy_s"]) / r["seconds"], 2)
        extra = f"  batch {r['mean_batch_size']}  model busy {r['model_busy_fraction']:.0%}"
    log(f"  {label:<36} c={concurrency:<3} {r['windows_per_s']:>7.1f} win/s {r['lines_per_s']:>8.0f} lines/s "
        f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}{extra}")
    return r


def wait_ready(base: str, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError(f"{base}/healthz did not answer within {timeout} s")


# --------------------------------------------------------------------------------------------------
# In-process reference
# --------------------------------------------------------------------------------------------------
def in_process(bundle: str, windows: list[list[str]], threads: int, seconds: float) -> dict:
    import torch

    from ray_logmilp.serving.scorer import WindowScorer

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        scorer = WindowScorer.from_path(bundle, max_line_bytes=16384)
        out = {}
        for per_call in (1, 16, 64):
            scorer.score_windows(windows[:per_call])
            n, i, t0 = 0, 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                batch = [windows[(i + j) % len(windows)] for j in range(per_call)]
                scorer.score_windows(batch)
                n += per_call
                i += per_call
            dt = time.perf_counter() - t0
            out[str(per_call)] = {"windows_per_s": round(n / dt, 1), "lines_per_s": round(n * WINDOW_LINES / dt, 1)}
            log(f"  in-process, {per_call:>2} windows per call        {n / dt:>8.1f} win/s "
                f"{n * WINDOW_LINES / dt:>10.0f} lines/s")
        return out
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------
# The plain alternative: FastAPI + uvicorn, one process, no batching
# --------------------------------------------------------------------------------------------------
def plain_server(bundle: str, port: int, threads: int) -> None:
    import torch
    import uvicorn
    from concurrent.futures import ThreadPoolExecutor
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from ray_logmilp.serving.scorer import WindowScorer
    from ray_logmilp.serving.schema import DetectRequest

    torch.set_num_threads(threads)
    scorer = WindowScorer.from_path(bundle, max_line_bytes=16384)
    pool = ThreadPoolExecutor(max_workers=1)
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/detect")
    async def detect(body: DetectRequest):
        windows = [body.lines] if body.lines is not None else body.windows
        top_k = body.top_k or 5
        results = await asyncio.get_running_loop().run_in_executor(pool, scorer.score_windows, windows, top_k)
        return JSONResponse({"model_version": scorer.bundle.version, "windows": [r.model_dump() for r in results]})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _ratio(a: float, b: float):
    return round(a / b, 2) if b else None


# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", help="model bundle (default: build a small one first)")
    p.add_argument("--model-size", choices=("small", "default"), default="small",
                   help="model of the bundle built when --bundle is not given (small: the tests' model; "
                        "default: configs/synthetic.yaml)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of the long run at concurrency 32")
    p.add_argument("--step", type=float, default=10.0, help="seconds of every other point")
    p.add_argument("--quick", action="store_true", help="--step 5 --duration 15")
    p.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.plain_server:
        plain_server(a.bundle, a.port, a.threads)
        return 0
    if a.quick:
        a.step, a.duration = 5.0, 15.0
    logging.basicConfig(level=logging.WARNING)

    import ray
    from ray import serve

    from ray_logmilp.serving.args import builder_app, deployment_options, http_options, load_config
    from ray_logmilp.serving.deployment import app_from_config

    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    t0 = time.time()
    bundle = a.bundle or build_bundle(work, a.model_size)
    if not a.bundle:
        log(f"built a {a.model_size} bundle in {time.time() - t0:.0f} s: {bundle}")
    windows = request_windows(work)
    dep = deployment_options(builder_app(load_config(SERVE_CONFIG)))
    replica_cpus = int((dep.get("ray_actor_options") or {}).get("num_cpus", 1) or 1)
    batch_cfg = dict(dep["user_config"])
    result: dict = {"bench": "serve", "window_lines": WINDOW_LINES, "cpus": os.cpu_count(), "bundle": str(bundle),
                    "replicas": 1, "replica_torch_threads": replica_cpus, "batching": batch_cfg,
                    "duration_s": a.duration, "step_s": a.step}

    log(f"in-process scoring ({replica_cpus} torch thread(s), as in a replica):")
    result["in_process"] = in_process(bundle, windows, replica_cpus, a.step)

    single, multi = bodies(windows, 0), {k: bodies(windows, k) for k in (1, 16, 64)}
    port = free_port()
    serve.start(http_options=http_options(load_config(SERVE_CONFIG), host="127.0.0.1", port=port))
    base = f"http://127.0.0.1:{port}"
    url = base + "/v1/detect"
    app, prefix = app_from_config(SERVE_CONFIG, args={"bundle": str(bundle)}, deployment={"num_replicas": 1})
    serve.run(app, name="bench", route_prefix=prefix)
    wait_ready(base)
    load(url, single, 1, 8, 2.0, "warm-up")

    log(f"Ray Serve, batched (max_batch_size={batch_cfg['max_batch_size']}, "
        f"wait {batch_cfg['batch_wait_timeout_s']} s):")
    batched = {str(c): load(url, single, 1, c, a.duration if c == 32 else a.step, "serve batched, 1 window/request")
               for c in (1, 8, 32)}
    result["serve_batched"] = batched
    multi_conc = 4
    result["serve_multi_window"] = {str(k): load(url, multi[k], k, multi_conc, a.step, f"serve, {k} windows/request")
                                    for k in (1, 16, 64)}

    # Same app, batching off: a live reconfigure through user_config.
    app1, _ = app_from_config(SERVE_CONFIG, args={"bundle": str(bundle)},
                              deployment={"num_replicas": 1, "user_config": {**batch_cfg, "max_batch_size": 1}})
    serve.run(app1, name="bench", route_prefix=prefix)
    wait_ready(base)
    log("Ray Serve, max_batch_size=1:")
    result["serve_unbatched"] = {str(c): load(url, single, 1, c, a.step, "serve unbatched, 1 window/request")
                                 for c in (1, 8, 32)}
    result["serve_unbatched_multi_window"] = {"16": load(url, multi[16], 16, multi_conc, a.step,
                                                         "serve unbatched, 16 windows/request")}
    serve.delete("bench")
    serve.shutdown()

    log("plain FastAPI + uvicorn (one process, no batching):")
    pport = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--plain-server", "--bundle", str(bundle), "--port", str(pport),
                             "--threads", str(replica_cpus)], cwd=str(REPO_ROOT))
    try:
        pbase = f"http://127.0.0.1:{pport}"
        wait_ready(pbase)
        purl = pbase + "/v1/detect"
        load(purl, single, 1, 8, 2.0, "warm-up")
        result["plain"] = {str(c): load(purl, single, 1, c, a.step, "plain, 1 window/request") for c in (1, 8, 32)}
        result["plain_multi_window"] = {str(k): load(purl, multi[k], k, multi_conc, a.step,
                                                     f"plain, {k} windows/request") for k in (1, 16, 64)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    ray.shutdown()

    b32 = batched["32"]["windows_per_s"]
    u32 = result["serve_unbatched"]["32"]["windows_per_s"]
    best_inproc = result["in_process"]["64"]["lines_per_s"]
    multi64 = result["serve_multi_window"]["64"]["lines_per_s"]
    result["ratios"] = {
        "batched_over_unbatched_c32": _ratio(b32, u32),
        "batched_over_unbatched_16_windows_per_request": _ratio(
            result["serve_multi_window"]["16"]["windows_per_s"],
            result["serve_unbatched_multi_window"]["16"]["windows_per_s"]),
        "batched_over_plain_c32": _ratio(b32, result["plain"]["32"]["windows_per_s"]),
        "multi64_over_in_process": _ratio(multi64, best_inproc),
        "multi64_over_plain_multi64": _ratio(multi64, result["plain_multi_window"]["64"]["lines_per_s"]),
    }
    result["bars"] = {
        "no_errors_long_run_c32": batched["32"]["errors"] == 0 and batched["32"]["seconds"] >= 0.95 * a.duration,
        "batched_ge_2x_unbatched_c32": bool(u32) and b32 >= 2 * u32,
        "multi_window_ge_half_in_process": multi64 >= 0.5 * best_inproc,
    }
    result["passed"] = all(result["bars"].values()) and a.duration >= 60
    log(json.dumps(result["ratios"]) + "  " + json.dumps(result["bars"]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
