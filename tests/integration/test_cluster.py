"""Scale-out on real multi-process Ray: `ray job submit` against a head with token auth, URIs for every path,
a small working-dir upload, and work placed on both nodes of a 2-node ``ray.cluster_utils.Cluster``.

Clusters come from tests/integration/ray_head.py: free ports, their own temp dir and token, stopped through
their own process group (never ``ray stop``). Runtimes on a 2-core box are in each test's docstring.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest

from .ray_head import RAY_CLI, REPO_ROOT, local_cluster, ray_head

pytestmark = pytest.mark.integration

# Small model and data: the point is the path through the cluster, not the scores.
SMALL = ["train.epochs=2", "model.hidden_dim=32", "model.ff_dim=64",
         "model.num_prototypes=4", "data.window.size=32", "data.window.stride=32", "train.max_failures=0"]
UPLOAD_LIMIT_BYTES = 2 * 1024 * 1024


def _corpus(tmp_path: Path, lines: int = 20_000) -> Path:
    out = tmp_path / "corpus"
    subprocess.run([sys.executable, "-m", "ray_logmilp.synthetic", "--out", str(out), "--lines", str(lines),
                    "--seed", "0", "--quiet"], check=True, cwd=REPO_ROOT, timeout=120, capture_output=True)
    return out / "corpus.log"


def _split(corpus: Path, parts: int) -> Path:
    """The corpus as ``parts`` consecutive files in one folder, so prepare has several read tasks to spread
    over the cluster (one file is one task below ``ray_logmilp.ingest.reading.READ_BLOCK_BYTES``)."""
    lines = corpus.read_bytes().splitlines(keepends=True)
    out = corpus.parent / "parts"
    out.mkdir(exist_ok=True)
    step = -(-len(lines) // parts)
    for i in range(parts):
        (out / f"part-{i:02d}.log").write_bytes(b"".join(lines[i * step:(i + 1) * step]))
    return out


def _wait_job(client, job_id: str, timeout: float) -> str:
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(1)
    client.stop_job(job_id)
    raise TimeoutError(f"job {job_id} not done in {timeout}s; logs:\n{client.get_job_logs(job_id)[-4000:]}")


# --------------------------------------------------------------------------------------------------
# The working-dir upload (no cluster needed: Ray's own packer, with the rules `ray job submit` applies).
# --------------------------------------------------------------------------------------------------

def _pack_repo(tmp_path: Path, *, gitignore: bool, default_excludes: bool) -> zipfile.ZipFile:
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import create_package

    target = tmp_path / f"pkg-{int(gitignore)}{int(default_excludes)}.zip"
    excludes = ray_constants.get_runtime_env_default_excludes() if default_excludes else []
    create_package(str(REPO_ROOT), target, include_gitignore=gitignore, excludes=excludes)
    return zipfile.ZipFile(target)


def test_working_dir_upload_is_small(tmp_path):
    """`ray job submit --working-dir .` packs code and configs only, even with .gitignore ignored.

    Ray 2.60 reads .gitignore (unless RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1) and .rayignore in every folder,
    on top of built-in excludes (.git, .venv, venv, __pycache__). .rayignore alone must keep the upload
    small, so it is checked without the other two. (~1 s)
    """
    from ray._private.runtime_env.packaging import _get_ignore_file

    as_submitted = _pack_repo(tmp_path, gitignore=True, default_excludes=True)
    rayignore_only = _pack_repo(tmp_path, gitignore=False, default_excludes=False)
    for pkg in (as_submitted, rayignore_only):
        names = pkg.namelist()
        size = sum(i.file_size for i in pkg.infolist())
        assert size < UPLOAD_LIMIT_BYTES, f"upload would be {size / 2**20:.1f} MiB: {sorted(names)[:50]}"
        tops = {n.split("/", 1)[0] for n in names}
        assert {"ray_logmilp", "jobs", "configs"} <= tops
        assert not tops & {".git", ".venv", "venv", "outputs", "data", "runs", ".pytest_cache"}, tops
        assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".parquet", ".pt"))]
    print(f"working-dir upload: {sum(i.file_size for i in as_submitted.infolist()) / 1024:.0f} KiB, "
          f"{len(as_submitted.namelist())} files")
    # The patterns themselves, for folders that do not exist in this checkout.
    ignored = _get_ignore_file(REPO_ROOT, ".rayignore")
    assert ignored is not None
    for path in ("outputs/model/weights.safetensors", "data/loghub/BGL.log", ".venv/bin/python",
                 "runs/x/checkpoint.pt", "ray_logmilp/__pycache__/x.pyc", "corpus.log.gz",
                 "outputs/prepared/bags.parquet", "ray_logmilp.egg-info/PKG-INFO"):
        assert ignored(REPO_ROOT / path), f".rayignore does not exclude {path}"
    for path in ("ray_logmilp/train.py", "jobs/train.py", "configs/synthetic.yaml", "pyproject.toml",
                 "ray_logmilp/ingest/format_specs/bgl.yaml", "ray_logmilp/ingest/prepared.py"):
        assert not ignored(REPO_ROOT / path), f".rayignore excludes {path}, which the jobs need"


# --------------------------------------------------------------------------------------------------
# `ray job submit` against a real head (token auth), every path a file:// URI.
# --------------------------------------------------------------------------------------------------

@pytest.mark.timeout(600)
@pytest.mark.slow  # ~60-100 s; runs in CI through `make test-slow`
def test_job_submit_prepare_and_train_against_a_real_head(tmp_path):
    """`ray start --head` (token auth) → `ray job submit ... jobs/prepare.py` (CLI) → jobs/train.py through
    JobSubmissionClient, 2 DDP workers; inputs, prepared data, storage_path and bundle are file:// URIs.
    Marked slow (about a minute): CI runs it through `make test-slow`.
    (~55-65 s on 2 cores: head start ~10 s, prepare job ~20 s, train job ~25 s, stop ~5 s)
    """
    from ray_logmilp.bundle import load_bundle

    corpus = _corpus(tmp_path)
    prepared, bundle = (tmp_path / "prepared").as_uri(), (tmp_path / "model").as_uri()
    results = (tmp_path / "ray_results").as_uri()
    t0 = time.monotonic()
    with ray_head(num_cpus=2) as head:
        print(f"head up in {time.monotonic() - t0:.1f}s")
        # Token auth is really on: a request without the token is refused.
        with pytest.raises(urllib.error.HTTPError) as refused:
            head.http("/api/jobs/", token=None)
        assert refused.value.code == 401

        # 1. Prepare through the CLI, exactly as the README says (plus --address / --submission-id).
        submit = [RAY_CLI, "job", "submit", "--address", head.dashboard_url, "--working-dir", ".",
                  "--submission-id", "logmilp-prepare", "--",
                  "python", "jobs/prepare.py", "--config", "configs/synthetic.yaml",
                  f"data.inputs=[{_split(corpus, 8).as_uri()}]", f"data.output_dir={prepared}",
                  *[o for o in SMALL if o.startswith("data.")]]
        t0 = time.monotonic()
        run = subprocess.run(submit, cwd=REPO_ROOT, env=head.env, capture_output=True, text=True, timeout=300)
        print(f"prepare job (ray job submit) {time.monotonic() - t0:.1f}s")
        assert run.returncode == 0, f"ray job submit failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}{head.diagnose()}"
        client = head.job_client()
        assert client.get_job_status("logmilp-prepare") == "SUCCEEDED"
        assert (tmp_path / "prepared" / "bags.parquet").exists()
        assert (tmp_path / "prepared" / "manifest.json").exists()

        # 2. Train through the Python SDK (what the CLI calls), same working-dir rules.
        # The entrypoint runs in a shell on the head: quote the overrides ([...] is a glob there).
        entrypoint = shlex.join([
            "python", "jobs/train.py", "--config", "configs/synthetic.yaml", f"data.inputs=[{corpus.as_uri()}]",
            f"data.output_dir={prepared}", f"train.prepared_dir={prepared}", f"train.bundle_dir={bundle}",
            f"train.storage_path={results}", "train.run_name=submit-test", "train.num_workers=2",
            "train.use_gpu=false", *SMALL])
        t0 = time.monotonic()
        job_id = client.submit_job(entrypoint=entrypoint, submission_id="logmilp-train",
                                   runtime_env={"working_dir": str(REPO_ROOT)})
        status = _wait_job(client, job_id, timeout=420)
        print(f"train job (JobSubmissionClient) {time.monotonic() - t0:.1f}s")
        t0 = time.monotonic()
        logs = client.get_job_logs(job_id)
        assert status == "SUCCEEDED", logs[-6000:] + head.diagnose()
        assert "model bundle:" in logs
    print(f"head stopped in {time.monotonic() - t0:.1f}s")

    # The bundle it wrote loads (sha256 of every file checked) from the URI.
    loaded = load_bundle(bundle)
    assert loaded.manifest["epoch"] in (0, 1)
    assert 0.0 <= loaded.manifest["threshold"] <= 1.0
    assert any((tmp_path / "ray_results" / "submit-test").iterdir()), "no Ray Train run under storage_path"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tune_sweep_job_submit(tmp_path):
    """`ray job submit ... tune/sweep.py --smoke-test` (3 trials) against a real head, results under a file://
    storage_path. (~55 s on 2 cores)
    """
    if not (REPO_ROOT / "tune" / "sweep.py").exists():
        pytest.skip("tune/sweep.py is not in this checkout yet")
    storage = (tmp_path / "sweeps").as_uri()
    with ray_head(num_cpus=2) as head:
        run = subprocess.run([RAY_CLI, "job", "submit", "--address", head.dashboard_url, "--working-dir", ".",
                              "--submission-id", "logmilp-sweep", "--", "python", "tune/sweep.py", "--smoke-test",
                              "--name", "submitted", f"train.storage_path={storage}"],
                             cwd=REPO_ROOT, env=head.env, capture_output=True, text=True, timeout=560)
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}{head.diagnose()}"
        client = head.job_client()
        assert client.get_job_status("logmilp-sweep") == "SUCCEEDED"
        logs = client.get_job_logs("logmilp-sweep")
    assert "best config written to" in logs, logs[-3000:]
    assert list((tmp_path / "sweeps" / "submitted").rglob("best.yaml")), "no best.yaml under the file:// storage_path"


# --------------------------------------------------------------------------------------------------
# Two nodes: prepare and train put work on both (checked from the state API, not assumed).
# --------------------------------------------------------------------------------------------------

def _nodes_of(actors: list[dict], needle: str) -> set[str]:
    return {a["node_id"] for a in actors if needle in (a.get("class_name") or "") and a.get("node_id")}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_node_cluster_prepare_and_train_use_both_nodes(tmp_path):
    """2-node ``ray.cluster_utils.Cluster`` (1 CPU each): jobs/prepare.py's parse actors and jobs/train.py's
    two DDP workers land on both nodes; shared storage is a file:// URI. (~55-95 s on 2 cores)
    """
    from ray_logmilp.bundle import load_bundle

    corpus = _corpus(tmp_path)
    prepared, bundle = (tmp_path / "prepared").as_uri(), (tmp_path / "model").as_uri()
    with local_cluster(num_nodes=2, cpus_per_node=1) as cluster:
        nodes = [n for n in cluster.state("nodes") if n["state"] == "ALIVE"]
        assert len(nodes) == 2, nodes
        env = cluster.client_env()

        prep = subprocess.run(
            [sys.executable, "jobs/prepare.py", "--config", "configs/synthetic.yaml",
             f"data.inputs=[{_split(corpus, 16).as_uri()}]", f"data.output_dir={prepared}",
             "data.parse_concurrency=2", "data.window.size=32",
             "data.window.stride=32"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert prep.returncode == 0, f"{prep.stdout[-3000:]}\n{prep.stderr[-3000:]}{cluster.diagnose()}"
        parse_nodes = _nodes_of(cluster.state("actors"), "ParseTask")
        assert len(parse_nodes) == 2, f"parse actors ran on {parse_nodes}, expected both nodes{cluster.diagnose()}"

        train = subprocess.run(
            [sys.executable, "jobs/train.py", "--config", "configs/synthetic.yaml", f"data.output_dir={prepared}",
             f"train.prepared_dir={prepared}", f"train.bundle_dir={bundle}",
             f"train.storage_path={(tmp_path / 'ray_results').as_uri()}", "train.run_name=two-nodes",
             "train.num_workers=2", "train.resources_per_worker={CPU: 1}", "train.use_gpu=false", *SMALL],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=420)
        assert train.returncode == 0, f"{train.stdout[-3000:]}\n{train.stderr[-5000:]}{cluster.diagnose()}"
        train_nodes = _nodes_of(cluster.state("actors"), "RayTrainWorker")
        assert len(train_nodes) == 2, f"train workers ran on {train_nodes}, expected both nodes{cluster.diagnose()}"
        assert parse_nodes == train_nodes == {n["node_id"] for n in nodes}
    assert load_bundle(bundle).manifest["epoch"] in (0, 1)
