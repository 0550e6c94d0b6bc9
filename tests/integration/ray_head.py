"""Real multi-process Ray clusters for integration tests, started and stopped by this process only.

Other people run their own Ray on the same machine, so everything here is isolated:

* every port is a free one picked at start (never 6379/8265/10001), the dashboard binds 127.0.0.1;
* every cluster has its own ``--temp-dir`` (and ``RAY_TMPDIR`` for ``ray.cluster_utils``), so it never
  writes ``/tmp/ray/ray_current_cluster`` and a bare ``ray.init()`` elsewhere never finds it;
* token authentication is on with a token of our own (``RAY_AUTH_MODE=token`` +
  ``RAY_AUTH_TOKEN_PATH``), never ``~/.ray/auth_token``;
* a cluster is stopped through the process group of the process we started (SIGTERM: Ray drains and
  kills its children; SIGKILL after a grace period), never with ``ray stop`` (which kills every Ray
  process on the machine).

Clients talk to a cluster from subprocesses (``ray job submit``, ``python jobs/...`` with ``RAY_ADDRESS``)
or over HTTP with ``Authorization: Bearer <token>`` (jobs and state API), so the pytest process never
has to connect a second Ray driver beside the session's ``ray_local`` fixture.

``python -m tests.integration.ray_head cluster ...`` hosts a :class:`ray.cluster_utils.Cluster` in its
own process (see :func:`local_cluster`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent          # the venv's bin: `ray`, and the `python` job entrypoints run
RAY_CLI = str(BIN / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _short_temp_dir() -> Path:
    # Ray puts unix sockets under the temp dir: keep the path short (108-byte limit on sun_path).
    return Path(tempfile.mkdtemp(prefix="rlm-", dir="/tmp"))


def auth_env(token_path: Path, **extra: str) -> dict[str, str]:
    """Environment for anything that talks to our cluster: token auth with our token, venv on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_TMPDIR",
                        "RAY_FAKE_CLUSTER", "PYTEST_CURRENT_TEST")}
    env.update({
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_path),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@dataclass
class RayCluster:
    """A cluster we started: where it is, and how to talk to it with our token."""

    proc: subprocess.Popen
    gcs_address: str
    dashboard_url: str
    token: str
    token_path: Path
    temp_dir: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def client_env(self, **extra: str) -> dict[str, str]:
        """For `python jobs/...` drivers: RAY_ADDRESS points here, token auth on."""
        return auth_env(self.token_path, RAY_ADDRESS=self.gcs_address, **extra)

    def http(self, path: str, token: str | None = "self", data: dict | None = None) -> Any:
        """GET (or POST ``data``) the dashboard; bearer token unless ``token=None``."""
        headers = {"Content-Type": "application/json"}
        token = self.token if token == "self" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(self.dashboard_url + path, data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read().decode() or "null")

    def state(self, resource: str, limit: int = 10_000) -> list[dict[str, Any]]:
        """Ray state API over HTTP (``nodes``, ``actors``, ``tasks``...), including finished/dead entries."""
        out = self.http(f"/api/v0/{resource}?limit={limit}&detail=1")
        return out["data"]["result"]["result"]

    def job_client(self):
        """A JobSubmissionClient that sends our token whatever this process's RAY_AUTH_MODE is."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url, headers={"Authorization": f"Bearer {self.token}"})

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return "\n".join(lines[-n:])

    def diagnose(self) -> str:
        """For assertion messages: is our process alive, and what did Ray log (a foreign `ray stop` shows as
        SIGTERM here: it kills every Ray process on the machine, ours included)."""
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        exits = "\n".join(p.read_text(errors="replace")[-2000:]
                          for p in self.temp_dir.glob("**/logs/ray_process_exit.log"))
        return f"\n--- cluster process {state}; log tail:\n{self.log_tail(30)}\n--- process exits:\n{exits}"


def _wait_until_up(cluster: RayCluster, timeout: float, address_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if cluster.proc.poll() is not None:
            raise RuntimeError(f"Ray exited with {cluster.proc.returncode} while starting:\n{cluster.log_tail()}")
        try:
            nodes = cluster.state("nodes")
            if any(n["state"] == "ALIVE" for n in nodes) and (address_file is None or address_file.exists()):
                return
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            last_error = exc
        time.sleep(1)
    raise TimeoutError(f"Ray did not come up in {timeout:.0f}s (last error: {last_error}):\n{cluster.log_tail()}")


def stop_process_group(proc: subprocess.Popen, grace: float = 45) -> None:
    """Stop what we started: SIGTERM to our process (``ray start --block`` drains its node and kills its
    children), then SIGTERM/SIGKILL to whatever is left in its process group. Nothing outside the group."""
    pgid = proc.pid            # started with start_new_session=True: the group is ours alone

    def group_alive() -> bool:
        proc.poll()            # reap our own child, or its zombie keeps the group "alive"
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def wait_group(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and group_alive():
            time.sleep(0.25)
        return not group_alive()

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    for sig, seconds in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if wait_group(2 if sig == signal.SIGTERM else 0):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        if wait_group(seconds):
            return


@contextmanager
def ray_head(*, num_cpus: int = 2, object_store_mb: int = 300, extra_args: tuple[str, ...] = (),
             extra_env: dict[str, str] | None = None, gcs_port: int | None = None,
             startup_timeout: float = 120) -> Iterator[RayCluster]:
    """``ray start --head --block`` on loopback with token auth; stopped (and its temp dir removed) on exit."""
    temp_dir = _short_temp_dir()
    token = secrets.token_hex(24)
    token_path = temp_dir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    gcs_port = gcs_port or free_port()
    dash_port = free_port()
    # Tests tear the head down for good: skip the SIGTERM drain wait (up to 30 s when jobs ran on it).
    env = auth_env(token_path, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", **(extra_env or {}))
    cmd = [RAY_CLI, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", "--include-dashboard=true",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--num-cpus={num_cpus}", "--num-gpus=0", f"--object-store-memory={object_store_mb * 1024 * 1024}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats", *extra_args]
    log_path = temp_dir / "head.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=temp_dir)
    cluster = RayCluster(proc=proc, gcs_address="", dashboard_url=f"http://127.0.0.1:{dash_port}", token=token,
                         token_path=token_path, temp_dir=temp_dir, log_path=log_path, env=env)
    try:
        # `ray start` writes the address the head advertises (Ray resolves 127.0.0.1 to this host's IP for
        # the GCS) into <temp dir>/ray_current_cluster, after the dashboard is already up.
        _wait_until_up(cluster, startup_timeout, address_file=temp_dir / "ray_current_cluster")
        t0 = time.monotonic()
        while not (address := (temp_dir / "ray_current_cluster").read_text().strip()) and time.monotonic() - t0 < 10:
            time.sleep(0.2)
        cluster.gcs_address = address
        yield cluster
    finally:
        stop_process_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def local_cluster(num_nodes: int = 2, cpus_per_node: int = 1, startup_timeout: float = 180
                  ) -> Iterator[RayCluster]:
    """A ``ray.cluster_utils.Cluster`` of ``num_nodes`` raylets, hosted by a subprocess of its own."""
    temp_dir = _short_temp_dir()
    token = secrets.token_hex(24)
    token_path = temp_dir / "auth_token"
    token_path.write_text(token)
    token_path.chmod(0o600)
    dash_port = free_port()
    ready = temp_dir / "ready.json"
    # RAY_TMPDIR: ray_current_cluster goes to our temp dir. No SIGTERM drain wait at teardown.
    env = auth_env(token_path, RAY_TMPDIR=str(temp_dir), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
    cmd = [sys.executable, "-m", "tests.integration.ray_head", "cluster", f"--nodes={num_nodes}",
           f"--cpus-per-node={cpus_per_node}", f"--temp-dir={temp_dir}", f"--dashboard-port={dash_port}",
           f"--ready-file={ready}"]
    log_path = temp_dir / "cluster.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=REPO_ROOT)
    cluster = RayCluster(proc=proc, gcs_address="", dashboard_url=f"http://127.0.0.1:{dash_port}", token=token,
                         token_path=token_path, temp_dir=temp_dir, log_path=log_path, env=env)
    try:
        deadline = time.monotonic() + startup_timeout
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"cluster host exited with {proc.returncode}:\n{cluster.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not up in {startup_timeout:.0f}s:\n{cluster.log_tail()}")
            time.sleep(0.5)
        cluster.gcs_address = json.loads(ready.read_text())["gcs_address"]
        _wait_until_up(cluster, startup_timeout)
        yield cluster
    finally:
        stop_process_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _host_cluster(args: argparse.Namespace) -> int:
    """Body of ``python -m tests.integration.ray_head cluster``: start, write the ready file, wait for SIGTERM."""
    from ray.cluster_utils import Cluster

    stop = {"now": False}
    # RAY_TMPDIR is args.temp_dir, so Ray's default temp dir (and ray_current_cluster) is <temp_dir>/ray.
    ray_temp = os.path.join(args.temp_dir, "ray")
    os.makedirs(ray_temp, exist_ok=True)
    common = {"num_cpus": args.cpus_per_node, "num_gpus": 0, "object_store_memory": 200 * 1024 * 1024,
              "temp_dir": ray_temp}
    cluster = Cluster(initialize_head=True, head_node_args={
        **common, "gcs_server_port": free_port(), "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": args.dashboard_port, "ray_client_server_port": free_port(),
        "dashboard_agent_listen_port": free_port()})
    try:
        for _ in range(args.nodes - 1):
            cluster.add_node(**common)
        cluster.wait_for_nodes()
        # After the nodes: each Node installs its own SIGTERM handler (drain, kill its processes, exit), and
        # the last one installed wins. Ours shuts the whole cluster down in order instead.
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        Path(args.ready_file).write_text(json.dumps({"gcs_address": cluster.address}))
        print(f"cluster of {args.nodes} nodes up at {cluster.address}", flush=True)
        while not stop["now"]:
            time.sleep(0.5)
    finally:
        cluster.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cluster", help="host a ray.cluster_utils.Cluster until SIGTERM")
    c.add_argument("--nodes", type=int, default=2)
    c.add_argument("--cpus-per-node", type=int, default=1)
    c.add_argument("--temp-dir", required=True)
    c.add_argument("--dashboard-port", type=int, required=True)
    c.add_argument("--ready-file", required=True)
    args = parser.parse_args(argv)
    return _host_cluster(args)


if __name__ == "__main__":
    sys.exit(main())
