"""Training on a real local Ray: 2-worker DDP TorchTrainer, crash and resume, the bundle, evaluation."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from ray_logmilp.bundle import BundleError, load_bundle
from ray_logmilp.config import ProjectConfig, from_dict, to_dict
from ray_logmilp.ingest.prepared import load_prepared
from ray_logmilp.evaluation.evaluate import evaluate
from ray_logmilp.train import train_with_ray
from ray_logmilp.train.loop import FAULT_INJECTION_ENV


pytestmark = pytest.mark.integration


def with_overrides(cfg, *overrides):
    from ray_logmilp.config import apply_overrides
    return from_dict(ProjectConfig, apply_overrides(to_dict(cfg), list(overrides)))


def test_two_worker_ddp_writes_a_bundle_that_loads_and_predicts(ray_local, small_prepared, small_config, tmp_path):
    cfg = with_overrides(small_config, "train.num_workers=2", "train.epochs=2", f"train.bundle_dir={tmp_path / 'b'}",
                         f"train.storage_path={tmp_path / 'runs'}")
    result = train_with_ray(cfg)
    assert [h["epoch"] for h in result.history] == [0, 1]
    bundle = load_bundle(result.bundle_dir)
    assert 0.0 < bundle.threshold < 1.0
    data = load_prepared(cfg.data.output_dir)
    res = evaluate(bundle, data, top_k=[1, 3], delta_sr=0.1)
    assert np.all((res["_raw"]["p_orig"] >= 0) & (res["_raw"]["p_orig"] <= 1))
    assert res["bags"] == len(data.splits["test"])
    assert {"sr", "sr_other_line", "sr_one_labelled", "sr_several_labelled"} <= set(res)


def test_a_crashed_worker_resumes_from_the_last_checkpoint(ray_local, small_prepared, small_config, tmp_path,
                                                         monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(FAULT_INJECTION_ENV, f"0:{marker}")      # the last rank exits once after epoch 0
    cfg = with_overrides(small_config, "train.num_workers=2", "train.epochs=3", "train.max_failures=1",
                         f"train.bundle_dir={tmp_path / 'b'}", f"train.storage_path={tmp_path / 'runs'}")
    result = train_with_ray(cfg)
    assert marker.exists(), "the fault was not injected"
    # Epoch 0 ran once, before the crash; the restarted group resumed at epoch 1 from its checkpoint.
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    load_bundle(result.bundle_dir)


def test_bundle_rejects_tampered_and_missing_files(small_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle, copy)
    load_bundle(str(copy))
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.safetensors does not match its checksum"):
        load_bundle(str(copy))
    shutil.copytree(small_bundle, tmp_path / "b2")
    (tmp_path / "b2" / "parser.json").unlink()
    with pytest.raises(BundleError, match="parser.json is missing"):
        load_bundle(str(tmp_path / "b2"))
    with pytest.raises(BundleError, match="not a model bundle"):
        load_bundle(str(tmp_path))


def test_bundle_loads_without_training_code(small_bundle):
    """A fresh interpreter that never imports train/losses/pipeline can load and score."""
    code = (
        "import sys, torch\n"
        "from ray_logmilp.bundle import load_bundle\n"
        f"b = load_bundle({str(small_bundle)!r})\n"
        "x = torch.from_numpy(b.embeddings[[0, 1, 2]])[None]\n"
        "p = b.model(x, torch.ones(1, 3, dtype=torch.bool)).prob\n"
        "assert 0 <= float(p) <= 1\n"
        "bad = [m for m in ('ray_logmilp.train', 'ray_logmilp.model.losses', 'ray_logmilp.ingest.pipeline', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_train_local_leaves_no_checkpoints_behind(small_prepared, small_config, tmp_path, monkeypatch):
    import tempfile

    from ray_logmilp.train import train_local

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cfg = with_overrides(small_config, "train.epochs=1", f"train.bundle_dir={tmp_path / 'b'}")
    result = train_local(cfg)
    assert load_bundle(result.bundle_dir).threshold is not None
    assert list(scratch.iterdir()) == [], "epoch checkpoints of a run without run_dir must be removed"
    kept = train_local(cfg, run_dir=str(tmp_path / "run"))
    assert (tmp_path / "run").is_dir() and kept.best_checkpoint.startswith(str(tmp_path / "run"))
