"""Training leaves no scratch folders behind: not after an exception or Ctrl-C, and not after a process
that was killed outright (its folders are removed by the next run on the machine)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import ray_logmilp.bundle as bundle_module
import ray_logmilp.train.local as local_module
from ray_logmilp.config import load_project
from ray_logmilp.train import LocalContext, train_local
from ray_logmilp.train.loop import FAULT_INJECTION_ENV
from ray_logmilp.train.scratch import scratch_dir

from ...conftest import REPO_ROOT
from ..tiny_data import TINY_MODEL, tiny_prepared

OVERRIDES = [*TINY_MODEL, "train.epochs=3", "train.batch_size=4", "train.steps_per_epoch=2"]


@pytest.fixture
def tmp(tmp_path, monkeypatch):
    """tempfile's folder, for this test only."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _left(folder) -> list[str]:
    """The kinds ("ckpt", "run", ...) of the logmilp scratch folders in ``folder`` (torch keeps caches there too)."""
    return sorted(p.name.split("-")[1] for p in folder.iterdir() if p.name.startswith("logmilp-"))


@pytest.mark.parametrize("interrupt", [RuntimeError("boom"), KeyboardInterrupt()], ids=["exception", "ctrl-c"])
def test_an_exception_mid_training_leaves_no_scratch_folder(tmp, tmp_path, monkeypatch, interrupt):
    monkeypatch.setattr(local_module, "load_prepared", lambda *a, **k: tiny_prepared())
    real_report = LocalContext.report
    seen = []

    def report_then_fail(self, metrics, checkpoint_dir):
        real_report(self, metrics, checkpoint_dir)
        seen.append(_left(tmp))
        raise interrupt

    monkeypatch.setattr(LocalContext, "report", report_then_fail)
    cfg = load_project(None, OVERRIDES + [f"train.bundle_dir={tmp_path / 'b'}"])
    with pytest.raises(type(interrupt)):
        train_local(cfg)
    assert seen == [["ckpt", "run"]], "the test did not reach a checkpoint"
    assert _left(tmp) == []


_KILLED_RUN = """
import sys
import ray_logmilp.train.local as local
from tests.unit.tiny_data import TINY_MODEL, tiny_prepared
from ray_logmilp.config import load_project
local.load_prepared = lambda *a, **k: tiny_prepared()
local.train_local(load_project(None, TINY_MODEL + sys.argv[1:]))
"""


def test_the_scratch_folders_of_a_killed_run_are_removed_by_the_next_run(tmp, tmp_path, monkeypatch):
    # The fault injection ends the process with os._exit after epoch 0, as SIGKILL would: no cleanup runs.
    env = {**os.environ, "TMPDIR": str(tmp), FAULT_INJECTION_ENV: f"0:{tmp_path / 'crashed'}",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_RUN), *OVERRIDES,
                           f"train.bundle_dir={tmp_path / 'b'}"], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and (tmp_path / "crashed").exists(), proc.stderr[-2000:]
    assert _left(tmp) == ["ckpt", "run"], "the killed run left no folders: this test checks nothing"
    monkeypatch.setattr(local_module, "load_prepared", lambda *a, **k: tiny_prepared())
    monkeypatch.setattr(bundle_module, "write_bundle", lambda bundle_dir, *a, **k: bundle_dir)   # no prepared files
    train_local(load_project(None, OVERRIDES + ["train.epochs=1", f"train.bundle_dir={tmp_path / 'b'}"]))
    assert _left(tmp) == []


def test_a_live_runs_scratch_folder_is_not_swept(tmp):
    with scratch_dir() as live:
        with scratch_dir() as other:
            assert os.path.isdir(live) and os.path.isdir(other) and live != other
        assert os.path.isdir(live)
    assert _left(tmp) == []


def test_folders_without_a_lock_are_not_ours_to_remove(tmp):
    foreign = tmp / "logmilp-ckpt-someone-elses"
    foreign.mkdir()
    with scratch_dir():
        pass
    assert _left(tmp) == ["ckpt"] and foreign.is_dir()
