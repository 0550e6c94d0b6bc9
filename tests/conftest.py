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
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, ignore_reinit_error=True)
    yield ray
