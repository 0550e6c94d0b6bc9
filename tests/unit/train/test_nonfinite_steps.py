"""A step with non-finite gradients is skipped, counted and reported; a diverged run stops with a clear error.

Seen on an H200 in bf16 (1M-line benchmark): about one step in 2,000 gave NaN gradients from a finite
loss, and the optimizer step that followed turned every weight into NaN.
"""
from __future__ import annotations

import math

import pytest
import torch

import ray_logmilp.train.loop as train_module
from ray_logmilp.config import load_project
from ray_logmilp.train import LocalContext, fit
from ray_logmilp.train.loop import finite_step

from ..tiny_data import TINY_MODEL, tiny_prepared


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def test_a_finite_step_is_applied():
    model, opt = _model_and_optimizer()
    before = model.weight.detach().clone()
    model(torch.ones(4, 3)).sum().backward()
    assert finite_step(model, opt, grad_clip=1.0)
    assert not torch.equal(model.weight, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("grad_clip", [1.0, 0.0], ids=["clipped", "unclipped"])
def test_a_non_finite_gradient_leaves_weights_and_optimizer_untouched(bad, grad_clip):
    model, opt = _model_and_optimizer()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model(torch.ones(4, 3)).sum().backward()
    model.bias.grad[0] = bad                     # one bad entry in one parameter is enough
    assert not finite_step(model, opt, grad_clip=grad_clip)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not opt.state, "AdamW took a step (its moments would now hold NaN)"
    assert all(p.grad is None for p in model.parameters())


def _nan_on(calls_to_poison):
    """compute_losses that returns a NaN loss on the given (1-based) calls, the real one otherwise."""
    real = train_module.compute_losses
    count = {"n": 0}

    def poisoned(model, x, mask, y, cfg):
        count["n"] += 1
        loss, terms, out = real(model, x, mask, y, cfg)
        if count["n"] in calls_to_poison:
            loss = loss * float("nan")
            terms = {k: float("nan") for k in terms}
        return loss, terms, out
    return poisoned


def _tiny_cfg(epochs=2):
    return load_project(None, [*TINY_MODEL, "train.steps_per_epoch=4", "train.batch_size=4", f"train.epochs={epochs}"])


def test_fit_skips_a_poisoned_step_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "compute_losses", _nan_on({2}))
    ctx = LocalContext(tmp_path / "run", device="cpu")
    fit(_tiny_cfg(), tiny_prepared(), ctx, scratch_dir=str(tmp_path / "scratch"))
    assert [m["skipped_steps"] for m in ctx.history] == [1, 0]
    # The epoch's loss terms average the applied steps only, so they stay finite.
    assert all(math.isfinite(m["train_loss"]) and math.isfinite(m["train_cls"]) for m in ctx.history)
    assert "skipped 1 non-finite step(s)" in train_module.format_progress(ctx.history[0], 2)
    assert "skipped" not in train_module.format_progress(ctx.history[1], 2)


def test_fit_weights_stay_finite_after_a_poisoned_step(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "compute_losses", _nan_on({1, 3}))
    cfg = _tiny_cfg(epochs=1)
    seen = {}
    real_save = train_module.save_checkpoint

    def spy_save(directory, model, *args, **kwargs):
        seen["finite"] = all(torch.isfinite(p).all() for p in model.parameters())
        return real_save(directory, model, *args, **kwargs)
    monkeypatch.setattr(train_module, "save_checkpoint", spy_save)
    ctx = LocalContext(tmp_path / "run", device="cpu")
    fit(cfg, tiny_prepared(), ctx, scratch_dir=str(tmp_path / "scratch"))
    assert ctx.history[0]["skipped_steps"] == 2
    assert seen["finite"]


def test_a_diverged_run_stops_with_an_error_naming_what_to_change(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "compute_losses", _nan_on(set(range(1, 100))))
    monkeypatch.setattr(train_module, "MAX_CONSECUTIVE_SKIPPED_STEPS", 3)
    ctx = LocalContext(tmp_path / "run", device="cpu")
    with pytest.raises(FloatingPointError, match=r"3 steps in a row had non-finite gradients.*train\.lr"):
        fit(_tiny_cfg(), tiny_prepared(), ctx, scratch_dir=str(tmp_path / "scratch"))


def _attention_ops(flag: bool) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    from ray_logmilp.model.logmilp import LogMILP, ModelConfig

    torch.manual_seed(0)
    model = LogMILP(ModelConfig(dropout=0.0), 16)
    x = torch.randn(2, 8, 16)                                  # [B,W,d]
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    with profile(activities=[ProfilerActivity.CPU]) as prof, train_module.training_attention_kernels(flag):
        model(x, mask).prob.sum().backward()
    return {e.key for e in prof.key_averages() if e.key.startswith("aten::_scaled_dot_product")}


def test_bf16_training_runs_the_encoder_attention_on_the_math_kernel():
    """bf16 training with PyTorch's default attention kernel gave NaN gradients on an H200 (see train.py)."""
    assert _attention_ops(True) == {"aten::_scaled_dot_product_attention_math"}
    assert "aten::_scaled_dot_product_attention_math" not in _attention_ops(False)   # fp32: PyTorch chooses


def test_fit_enters_the_attention_kernel_choice_for_every_step(tmp_path, monkeypatch):
    flags = []
    real = train_module.training_attention_kernels

    def spy(bf16):
        flags.append(bf16)
        return real(bf16)
    monkeypatch.setattr(train_module, "training_attention_kernels", spy)
    fit(_tiny_cfg(epochs=1), tiny_prepared(), LocalContext(tmp_path / "run", device="cpu"),
        scratch_dir=str(tmp_path / "scratch"))
    assert flags == [False] * 4                                # bf16 applies on CUDA only
