"""Shared pytest fixtures: paths to ../shared, a real local Ray for integration tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RAY_LOGMILP_SHARED", REPO_ROOT.parent / "shared"))
LOGHUB = SHARED / "data" / "loghub"


def loghub_file(system: str, suffix: str = ".log") -> Path:
    """Path of a Loghub 2k sample file; skips the test when ../shared is not beside the repo."""
    path = LOGHUB / system / f"{system}_2k{suffix}"
    if not path.exists():
        pytest.skip(f"Loghub sample {path} not found: ../shared is not beside this checkout")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, shared by the whole test session."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        # address="local": always a fresh local instance, never a cluster someone started with `ray start`.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    yield ray


# Small end-to-end artifacts shared by integration tests (built once per session).
SMALL_MODEL = ["model.hidden_dim=64", "model.ff_dim=128", "model.num_prototypes=8"]


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
    """A 30k-line synthetic CFDR corpus with per-line ground truth (corpus.log, alarms.csv, truth.json)."""
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("synthetic") / "corpus"
    generate(SyntheticConfig(n_lines=30_000, seed=0), out)
    return out


@pytest.fixture(scope="session")
def small_config(synthetic_corpus, tmp_path_factory):
    """A ProjectConfig pointing every stage at the small synthetic corpus and temp folders."""
    from ray_logmilp.config import load_project

    root = tmp_path_factory.mktemp("run")
    return load_project(REPO_ROOT / "configs" / "synthetic.yaml", [
        f"data.inputs=[{synthetic_corpus / 'corpus.log'}]", f"data.output_dir={root / 'prepared'}",
        f"train.bundle_dir={root / 'model'}", f"train.storage_path={root / 'ray_results'}",
        "train.epochs=6", *SMALL_MODEL])


@pytest.fixture(scope="session")
def small_prepared(ray_local, small_config):
    """The small corpus prepared by the real Ray Data pipeline; returns the manifest."""
    from ray_logmilp.ingest.pipeline import prepare

    return prepare(small_config.data, progress=False)


@pytest.fixture(scope="session")
def small_bundle(small_prepared, small_config):
    """A model bundle trained in-process (plain PyTorch fit) on the small corpus; returns its path."""
    from ray_logmilp.train import train_local

    return train_local(small_config).bundle_dir
