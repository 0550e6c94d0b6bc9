"""CUDA: the model on the GPU, fit() with bf16 autocast, Ray Train on the GPU, scoring on the GPU.

Skipped without CUDA (CI has no GPU); on a GPU machine run `pytest tests/gpu`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ray_logmilp.model.losses import LossConfig, compute_losses
from ray_logmilp.model.logmilp import LogMILP, ModelConfig

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: this machine has no GPU")]

CUDA = torch.device("cuda")


def default_model(input_dim: int = 64, seed: int = 0) -> LogMILP:
    """The default architecture (history window, L_loc pooling, prototypes) on a small input size."""
    torch.manual_seed(seed)
    return LogMILP(ModelConfig(dropout=0.0), input_dim)


def ragged_batch(batch: int = 8, width: int = 64, dim: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, dim, generator=g)                                          # [B,W,d]
    lengths = torch.randint(1, width + 1, (batch,), generator=g)
    mask = torch.arange(width)[None, :] < lengths[:, None]                                   # [B,W]
    return x, mask


def test_cuda_fp32_matches_cpu():
    """Same weights, same input: the GPU computes what the CPU does (catches tensors made on the wrong device)."""
    model = default_model().eval()
    x, mask = ragged_batch()
    with torch.no_grad():
        on_cpu = model(x, mask)
        on_gpu = model.to(CUDA)(x.to(CUDA), mask.to(CUDA))
    # TF32 may be on for matmuls: compare loosely but far below any decision-relevant difference.
    assert torch.allclose(on_gpu.prob.cpu(), on_cpu.prob, atol=2e-3)
    assert torch.allclose(on_gpu.attention.cpu(), on_cpu.attention, atol=2e-3)
    assert (on_gpu.attention[~mask.to(CUDA)[:, None, :].expand_as(on_gpu.attention)] == 0).all()


@pytest.mark.parametrize("junk", ["randn", "nan"])
def test_padding_does_not_change_outputs_under_bf16_autocast(junk):
    model = default_model().to(CUDA).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 20, 64, generator=g)                                                  # [1,20,d]
    pad = torch.randn(1, 12, 64, generator=g) if junk == "randn" else torch.full((1, 12, 64), float("nan"))
    x_pad = torch.cat([x, pad], dim=1)                                                       # [1,32,d]
    mask = torch.ones(1, 20, dtype=torch.bool)
    mask_pad = torch.cat([mask, torch.zeros(1, 12, dtype=torch.bool)], dim=1)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a = model(x.to(CUDA), mask.to(CUDA))
        b = model(x_pad.to(CUDA), mask_pad.to(CUDA))
    assert torch.isfinite(b.prob).all()
    # bf16 keeps ~3 significant digits; padding may change the kernels' reduction order, not the result.
    assert torch.allclose(a.prob.float(), b.prob.float(), atol=2e-2)
    assert torch.allclose(a.attention.float(), b.attention[:, :, :20].float(), atol=2e-2)
    assert (b.attention[:, :, 20:] == 0).all()


def test_every_loss_term_backpropagates_under_bf16_autocast():
    model = default_model().to(CUDA).train()
    x, mask = ragged_batch(batch=16)
    y = torch.arange(16) % 2
    cfg = LossConfig(lambda_i=0.1)   # every optional term on, so each one runs in bf16
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, terms, _ = compute_losses(model, x.to(CUDA), mask.to(CUDA), y.to(CUDA), cfg)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(np.isfinite(v) for v in terms.values()), terms
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# --------------------------------------------------------------------------------------------------
# Training and scoring on the GPU (the small synthetic corpus, prepared by the real Ray Data pipeline)


@pytest.fixture(scope="module")
def gpu_config(small_config, small_prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    return dataclasses.replace(small_config, train=dataclasses.replace(
        small_config.train, epochs=2, bundle_dir=str(root / "model"), storage_path=str(root / "runs")))


def test_fit_on_cuda_in_bf16_trains_attention_on_the_math_kernel(tmp_path, monkeypatch):
    """bf16 with PyTorch's default attention kernel diverged on an H200 (train.training_attention_kernels)."""
    import ray_logmilp.train.loop as train_module
    from ray_logmilp.train import LocalContext
    from ray_logmilp.config import load_project

    from ..unit.tiny_data import TINY_MODEL, tiny_prepared

    flags = []
    real = train_module.training_attention_kernels
    monkeypatch.setattr(train_module, "training_attention_kernels", lambda bf16: flags.append(bf16) or real(bf16))
    cfg = load_project(None, [*TINY_MODEL, "train.steps_per_epoch=3", "train.batch_size=4", "train.epochs=1"])
    ctx = LocalContext(tmp_path / "run")
    train_module.fit(cfg, tiny_prepared(), ctx, scratch_dir=str(tmp_path / "scratch"))
    assert ctx.device.type == "cuda" and flags == [True] * 3
    assert ctx.history[0]["skipped_steps"] == 0


def test_fit_runs_on_the_gpu_in_bf16_and_its_bundle_scores_alike_on_cpu_and_gpu(gpu_config, small_prepared):
    from ray_logmilp.bundle import load_bundle
    from ray_logmilp.ingest.prepared import load_prepared
    from ray_logmilp.evaluation.evaluate import evaluate
    from ray_logmilp.train import train_local

    result = train_local(gpu_config)
    assert all(h["device"].startswith("cuda") for h in result.history), result.history
    assert all(h["gpu_peak_memory_mb"] > 0 for h in result.history)
    assert all(np.isfinite(h["train_loss"]) for h in result.history)

    data = load_prepared(gpu_config.data.output_dir)
    on_cpu = evaluate(load_bundle(result.bundle_dir, device="cpu"), data, top_k=[1, 3], delta_sr=0.1)
    on_gpu = evaluate(load_bundle(result.bundle_dir, device="cuda"), data, top_k=[1, 3], delta_sr=0.1)
    assert np.allclose(on_gpu["_raw"]["p_orig"], on_cpu["_raw"]["p_orig"], atol=2e-3)
    assert abs(on_gpu["auc"] - on_cpu["auc"]) < 0.01


def test_window_scorer_on_the_gpu_agrees_with_cpu(gpu_config, small_bundle, synthetic_corpus):
    from ray_logmilp.serving.scorer import WindowScorer

    lines = (synthetic_corpus / "corpus.log").read_text().splitlines()
    windows = [lines[i:i + 64] for i in range(0, 64 * 8, 64)]
    on_cpu = WindowScorer.from_path(str(small_bundle), device="cpu").score_windows(windows, top_k=3)
    on_gpu = WindowScorer.from_path(str(small_bundle), device="cuda").score_windows(windows, top_k=3)
    for a, b in zip(on_cpu, on_gpu):
        assert b.score == pytest.approx(a.score, abs=2e-3)
        assert [t.weight for t in b.top] == pytest.approx([t.weight for t in a.top], abs=2e-3)
        if a.top[0].weight - a.top[1].weight > 1e-2:     # a clear leader must be the same line on both
            assert b.top[0].index == a.top[0].index


@pytest.mark.integration
def test_ray_train_finds_and_uses_the_gpu(ray_local, gpu_config):
    import ray

    from ray_logmilp.train import train_with_ray

    if not ray.cluster_resources().get("GPU"):
        pytest.skip("the local Ray cluster registered no GPU")
    assert gpu_config.train.use_gpu is None   # auto: use the GPUs the cluster has
    result = train_with_ray(gpu_config)
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert all(h["device"].startswith("cuda") for h in result.history), result.history
