"""Weight averaging (``train.ema_decay``): the average's arithmetic, what fit() validates and ships, resume."""
from __future__ import annotations

import pytest
import torch

import ray_logmilp.train.loop as train_module
from ray_logmilp.config import ConfigError, load_project
from ray_logmilp.train.loop import LocalContext, WeightAverage, fit, load_checkpoint

from .tiny_data import TINY_MODEL, tiny_prepared


def test_the_decay_is_warmed_up_then_capped():
    average = WeightAverage(torch.nn.Linear(1, 1), decay=0.99)
    assert average.decay_at(0) == pytest.approx(1 / 10)
    assert average.decay_at(10) == pytest.approx(11 / 20)
    assert average.decay_at(10_000) == 0.99


def test_update_moves_the_average_towards_the_live_weights_by_one_minus_the_decay():
    live = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        live.weight.fill_(1.0)
    average = WeightAverage(live, decay=0.5)
    with torch.no_grad():
        live.weight.fill_(3.0)
    average.update(live, step=1000)                     # decay 0.5: halfway from 1 to 3
    assert average.model.weight.item() == pytest.approx(2.0)
    average.update(live, step=0)                        # decay 0.1: 0.1·2 + 0.9·3
    assert average.model.weight.item() == pytest.approx(2.9)
    assert live.weight.item() == 3.0                    # the live weights are untouched
    assert not average.model.weight.requires_grad


def _cfg(epochs, *extra):
    return load_project(None, [*TINY_MODEL, "model.dropout=0", "train.steps_per_epoch=4", "train.batch_size=4",
                               f"train.epochs={epochs}", "train.ema_decay=0.9", *extra])


def test_fit_validates_and_checkpoints_the_average_and_keeps_the_raw_weights_for_resuming(tmp_path, monkeypatch):
    scored = []
    real_score = train_module.score_bags

    def spy(model, *args, **kwargs):
        scored.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_score(model, *args, **kwargs)
    monkeypatch.setattr(train_module, "score_bags", spy)
    ctx = LocalContext(tmp_path / "run", device="cpu")
    fit(_cfg(1), tiny_prepared(), ctx, scratch_dir=str(tmp_path / "scratch"))
    state, _ = load_checkpoint(ctx.best[1])
    assert set(state) >= {"model", "train_model"}
    for name, value in state["model"].items():
        assert torch.equal(value, scored[0][name]), name      # validated = checkpointed "model"
    assert any(not torch.equal(state["model"][k], state["train_model"][k]) for k in state["model"])


def test_a_resumed_run_continues_from_the_raw_weights_and_the_average(tmp_path):
    straight = LocalContext(tmp_path / "straight", device="cpu")
    fit(_cfg(2), tiny_prepared(), straight, scratch_dir=str(tmp_path / "s1"))
    resumed = LocalContext(tmp_path / "resumed", device="cpu")
    fit(_cfg(1), tiny_prepared(), resumed, scratch_dir=str(tmp_path / "s2"))
    fit(_cfg(2), tiny_prepared(), resumed, scratch_dir=str(tmp_path / "s3"))    # resumes after epoch 1
    a, _ = load_checkpoint(str(tmp_path / "straight" / "checkpoint_0001"))
    b, _ = load_checkpoint(str(tmp_path / "resumed" / "checkpoint_0001"))
    for part in ("model", "train_model"):
        for name in a[part]:
            assert torch.allclose(a[part][name], b[part][name], atol=1e-6), (part, name)


def test_without_averaging_the_checkpoint_has_no_second_copy(tmp_path):
    ctx = LocalContext(tmp_path / "run", device="cpu")
    fit(_cfg(1, "train.ema_decay=0"), tiny_prepared(), ctx, scratch_dir=str(tmp_path / "scratch"))
    assert "train_model" not in load_checkpoint(ctx.best[1])[0]


@pytest.mark.parametrize("bad", ["1", "-0.1", "1.5"])
def test_a_decay_outside_zero_to_one_is_rejected_naming_the_flag(bad):
    with pytest.raises(ConfigError, match="ema_decay"):
        load_project(None, [f"train.ema_decay={bad}"])
