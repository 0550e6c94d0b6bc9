"""--smoke-test points every stage at a tiny corpus, but the user's overrides still win."""
from __future__ import annotations

import importlib.util
import tempfile

import pytest

import ray_logmilp.cli.smoke as smoke
import ray_logmilp.cli.train as train_job
import ray_logmilp.train as train_package

from ...conftest import REPO_ROOT


class _TrainingStarted(Exception):
    pass


def test_train_smoke_test_keeps_the_users_bundle_dir_and_storage_path(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(smoke, "write_smoke_corpus", lambda root: None)       # the corpus is not needed here
    monkeypatch.setattr(train_job, "prepare_and_print", lambda cfg: None)
    trained = []

    def train_with_ray(cfg):
        trained.append(cfg)
        raise _TrainingStarted

    monkeypatch.setattr(train_package, "train_with_ray", train_with_ray)
    spec = importlib.util.spec_from_file_location("train_script", REPO_ROOT / "jobs" / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(_TrainingStarted):
        script.main(["--smoke-test", f"train.bundle_dir={tmp_path / 'mine'}", "train.epochs=1",
                     f"train.storage_path={tmp_path / 'runs'}"])
    cfg, = trained
    assert (cfg.train.bundle_dir, cfg.train.storage_path, cfg.train.epochs) == (
        str(tmp_path / "mine"), str(tmp_path / "runs"), 1)
    # Everything the user did not set still comes from the smoke setup.
    assert cfg.data.output_dir.startswith(str(tmp_path / "logmilp-smoke-")) and cfg.model.hidden_dim == 32
