"""The learning-rate schedule of fit(): a pure function of the global step, so resumed runs stay on it."""
from __future__ import annotations

import pytest

from ray_logmilp.config import ConfigError, TrainConfig, load_project
from ray_logmilp.train.loop import learning_rate

from .tiny_data import TINY_MODEL, tiny_prepared


def test_constant_schedule_is_the_base_rate():
    tc = TrainConfig(lr=3e-3)
    assert [learning_rate(tc, s, 100) for s in (0, 50, 99)] == [3e-3] * 3


def test_cosine_runs_from_lr_to_its_floor_monotonically():
    tc = TrainConfig(lr=1e-3, lr_schedule="cosine", lr_min_factor=0.1)
    rates = [learning_rate(tc, s, 11) for s in range(11)]
    assert rates[0] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4)
    assert rates[5] == pytest.approx(0.55e-3)                 # half way: the mean of the two ends
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert learning_rate(tc, 50, 11) == pytest.approx(1e-4)    # past the end it stays at the floor


def test_schedule_settings_are_validated_with_the_flag_name():
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        load_project(None, ["train.lr_schedule=linear"])
    with pytest.raises(ConfigError, match="train.lr_min_factor"):
        load_project(None, ["train.lr_min_factor=1.5"])


def test_fit_follows_the_schedule_across_a_resume(tmp_path):
    from ray_logmilp.train.loop import LocalContext, fit

    overrides = [*TINY_MODEL, "train.steps_per_epoch=3", "train.batch_size=4", "train.lr_schedule=cosine",
                 "train.lr_min_factor=0.1"]
    cfg = load_project(None, overrides + ["train.epochs=2"])
    ctx = LocalContext(tmp_path / "run", device="cpu")
    fit(cfg, tiny_prepared(), ctx, scratch_dir=str(tmp_path / "scratch"))
    # A longer run resumes from epoch 2's checkpoint; the curve is the 4-epoch one from the start.
    cfg4 = load_project(None, overrides + ["train.epochs=4"])
    ctx4 = LocalContext(tmp_path / "run", device="cpu")
    fit(cfg4, tiny_prepared(), ctx4, scratch_dir=str(tmp_path / "scratch4"))
    lrs = [m["lr"] for m in ctx4.history]
    assert [m["epoch"] for m in ctx4.history] == [2, 3]
    assert lrs == pytest.approx([learning_rate(cfg4.train, 8, 12), learning_rate(cfg4.train, 11, 12)])
    assert lrs[-1] == pytest.approx(1e-4)                     # the last step ends at lr · lr_min_factor
    assert ctx.history[0]["lr"] == pytest.approx(learning_rate(cfg.train, 2, 6))
