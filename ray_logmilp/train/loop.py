"""Training LogMILP in plain PyTorch: ``fit()``, one epoch, validation.

``fit`` knows nothing about Ray: it talks to a :class:`TrainContext` (rank, world size, device, how to
report metrics and checkpoints, how to find the checkpoint to resume from). ``train.local`` runs it
in-process; ``train.ray_trainer`` runs it inside Ray Train workers.

Every rank runs the same number of steps per epoch (uneven steps hang DDP): each rank draws
``steps_per_epoch * batch_size`` class-balanced bags from its own seeded stream over the training split.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ray_logmilp.config import ProjectConfig
from ray_logmilp.evaluation.metrics import best_f1_threshold, precision_recall_f1, roc_auc, success_rate
from ray_logmilp.ingest.prepared import BagSet, PreparedData, collate
from ray_logmilp.model.localize import score_with_removal
from ray_logmilp.model.logmilp import MAX_LEN, LogMILP
from ray_logmilp.model.losses import compute_losses, loss_config_for_epoch
from ray_logmilp.train.checkpoint import load_checkpoint, save_checkpoint
from ray_logmilp.train.sampling import epoch_indices, set_seed

log = logging.getLogger(__name__)

# AdamW's decoupled weight decay.
WEIGHT_DECAY = 1e-4
# Max gradient norm: the counterfactual terms can spike the gradient early on.
GRAD_CLIP = 1.0
# Bags per validation batch (no gradient, so larger than a training batch).
EVAL_BATCH_SIZE = 128
# The epoch kept as the bundle maximises val_select = val_f1 + SELECT_SR_WEIGHT · val_sr (bag labels only:
# SR needs no line labels). F1 alone saturates early on easy data and keeps an epoch before localization forms.
SELECT_METRIC = "val_select"
SELECT_SR_WEIGHT = 0.5
# A few skipped steps are noise (see finite_step); this many in a row means the run has diverged.
MAX_CONSECUTIVE_SKIPPED_STEPS = 50
# Tests only: "<epoch>:<marker path>" makes the last rank exit once, right after that epoch's checkpoint.
FAULT_INJECTION_ENV = "RAY_LOGMILP_FAULT_INJECTION"


class TrainContext(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module: ...
    def progress(self, line: str) -> None: ...
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...
    def resume_dir(self) -> str | None: ...
    def all_gather(self, obj: Any) -> list[Any]: ...


def fit(cfg: ProjectConfig, data: PreparedData, ctx: TrainContext, *, scratch_dir: str) -> dict[str, Any]:
    """Train LogMILP; reports every epoch through ``ctx``. Returns the last epoch's metrics."""
    tc = cfg.train
    set_seed(tc.seed)
    model = LogMILP(cfg.model, data.input_dim).to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=WEIGHT_DECAY)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    resume = ctx.resume_dir()
    if resume:
        state, meta = load_checkpoint(resume)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        history = list(meta.get("history", []))
        if ctx.rank == 0:
            log.info("resuming from %s (epoch %d done)", resume, start_epoch)
    train_model = ctx.wrap_model(model)
    embeddings = torch.from_numpy(data.embeddings).to(ctx.device)
    train_bags, val_bags = data.splits["train"], data.splits["val"]
    steps = tc.steps_per_epoch or max(1, math.ceil(len(train_bags) / (tc.batch_size * ctx.world_size)))
    metrics: dict[str, Any] = {}
    skips = [0]     # consecutive non-finite steps, across epochs

    for epoch in range(start_epoch, tc.epochs):
        t_epoch = time.perf_counter()
        batches = epoch_indices(train_bags.labels, steps, tc.batch_size, seed=tc.seed * 100_003 + epoch * 1_009 + ctx.rank)
        sums, skipped = train_epoch(cfg, model, train_model, optimizer, train_bags, embeddings, batches, epoch,
                                    ctx.device, skips)
        train_seconds = time.perf_counter() - t_epoch
        applied = max(1, len(batches) - skipped)
        metrics = {"epoch": epoch, **{f"train_{k}": v / applied for k, v in sums.items()},
                   "skipped_steps": skipped,
                   **validate(cfg, model, val_bags, embeddings, ctx),
                   "train_seconds": train_seconds, "bags_per_second": len(batches) * tc.batch_size / train_seconds,
                   "lr": tc.lr, "device": str(ctx.device)}
        if ctx.device.type == "cuda":
            # This process's peak so far (the Ray workers' own, which the driver cannot read).
            metrics["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
        history.append(metrics)
        ckpt = None
        if ctx.rank == 0:
            ctx.progress(format_progress(metrics, tc.epochs))
            ckpt = save_checkpoint(os.path.join(scratch_dir, f"epoch_{epoch:04d}"), model, optimizer, epoch,
                                   metrics, cfg.model, data.input_dim, history)
        ctx.report(metrics, ckpt)
        _maybe_crash_once(epoch, ctx)
    return metrics


def train_epoch(cfg: ProjectConfig, model: LogMILP, train_model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                bags: BagSet, embeddings: torch.Tensor, batches: np.ndarray, epoch: int, device: torch.device,
                skips: list[int]) -> tuple[dict[str, float], int]:
    """One epoch of steps over ``batches`` [steps, batch_size]. ``train_model`` is ``model`` as the context
    wrapped it (DDP). Returns (summed loss terms of the applied steps, steps skipped); ``skips[0]`` counts
    consecutive skipped steps across epochs."""
    model.train()
    use_bf16 = device.type == "cuda"          # bf16 autocast whenever on a GPU
    loss_cfg = loss_config_for_epoch(cfg.loss, epoch)
    sums: dict[str, float] = {}
    skipped = 0
    for step, idx in enumerate(batches):
        x, mask, y, _ = collate(bags, idx, embeddings, MAX_LEN)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16), \
                training_attention_kernels(use_bf16):
            loss, terms, _ = compute_losses(train_model, x, mask, y, loss_cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not finite_step(model, optimizer, GRAD_CLIP):
            skipped += 1
            skips[0] += 1
            if skips[0] >= MAX_CONSECUTIVE_SKIPPED_STEPS:
                raise FloatingPointError(
                    f"training diverged: {skips[0]} steps in a row had non-finite gradients "
                    f"(epoch {epoch + 1}/{cfg.train.epochs}, step {step + 1}/{len(batches)}); try a lower train.lr")
            continue
        skips[0] = 0
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
    return sums, skipped


@torch.no_grad()
def score_bags(model: LogMILP, bags: BagSet, embeddings: torch.Tensor, perturbation: str,
               index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Scores of every bag (and with its key instance removed), in eval mode: p_orig, p_pert."""
    index = np.arange(len(bags)) if index is None else index
    # Score in order of length so padding stays small; results go back to the order of ``index``.
    perm = np.argsort(bags.lengths()[index], kind="stable")
    p_orig = np.empty(len(index), np.float64)
    p_pert = np.empty(len(index), np.float64)
    for start in range(0, len(perm), EVAL_BATCH_SIZE):
        rows = perm[start:start + EVAL_BATCH_SIZE]
        x, mask, _, _ = collate(bags, index[rows], embeddings, MAX_LEN)
        out, pert, _, _ = score_with_removal(model, x, mask, perturbation)
        p_orig[rows] = out.prob.float().cpu().numpy()
        p_pert[rows] = pert.float().cpu().numpy()
    return {"bag_index": index, "p_orig": p_orig, "p_pert": p_pert}


def validate(cfg: ProjectConfig, model: LogMILP, bags: BagSet, embeddings: torch.Tensor,
             ctx: TrainContext) -> dict[str, float]:
    """Validation on this rank's shard of ``bags``, gathered so every rank sees the same numbers."""
    shard = np.arange(ctx.rank, len(bags), ctx.world_size)
    gathered = ctx.all_gather(score_bags(model, bags, embeddings, cfg.loss.perturbation, shard))
    idx = np.concatenate([g["bag_index"] for g in gathered])
    p_orig = np.concatenate([g["p_orig"] for g in gathered])
    p_pert = np.concatenate([g["p_pert"] for g in gathered])
    return validation_metrics(bags.labels[idx].astype(int), p_orig, p_pert, cfg.eval.delta_sr)


def validation_metrics(y: np.ndarray, p_orig: np.ndarray, p_pert: np.ndarray, delta_sr: float) -> dict[str, float]:
    """Bag-label-only metrics: threshold by max F1, F1 there, AUC, SR on positive bags, and the model
    selection score ``val_select = val_f1 + SELECT_SR_WEIGHT · val_sr`` (an undefined SR counts 0)."""
    out: dict[str, float] = {}
    if len(y) == 0 or len(np.unique(y)) < 2:
        return {"val_f1": 0.0, "val_auc": float("nan"), "val_sr": float("nan"), "threshold": 0.5,
                SELECT_METRIC: 0.0}
    threshold, f1 = best_f1_threshold(y, p_orig)
    out["threshold"] = float(threshold)
    out["val_f1"] = float(f1)
    p, r, _ = precision_recall_f1(y, (p_orig >= threshold).astype(int))
    out["val_precision"], out["val_recall"] = float(p), float(r)
    out["val_auc"] = float(roc_auc(y, p_orig))
    pos = y == 1
    out["val_sr"] = float(success_rate(p_orig[pos], p_pert[pos], delta_sr)) if pos.any() else float("nan")
    sr = out["val_sr"] if math.isfinite(out["val_sr"]) else 0.0
    out[SELECT_METRIC] = out["val_f1"] + SELECT_SR_WEIGHT * sr
    return out


def training_attention_kernels(bf16: bool):
    """The scaled-dot-product-attention kernels the encoder may use in training: the math kernel in bf16.

    Why: in bf16 on an H200, with the fused kernel PyTorch picked by default, training began returning NaN
    gradients from a finite loss well into a run and then diverged; with the math kernel it did not
    (docs/experiments.md). Windows are short (64 lines): the cost is small.
    """
    if not bf16:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.MATH])


def finite_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> bool:
    """Clip and apply the gradients unless any is non-finite; returns whether the step was taken.

    Why: one step with a NaN gradient turns every weight into NaN under AdamW, and training then
    silently keeps the best epoch before it. Skipping the step, as fp16's GradScaler does, keeps the
    run; a run that keeps producing them stops (MAX_CONSECUTIVE_SKIPPED_STEPS). Under DDP the gradients
    are already all-reduced here, so every rank sees the same norm and skips alike.
    """
    # max_norm=inf measures without rescaling; the norm is non-finite iff some gradient is.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


def format_progress(metrics: dict[str, Any], epochs: int) -> str:
    skipped = f" skipped {metrics['skipped_steps']} non-finite step(s)" if metrics.get("skipped_steps") else ""
    return (f"epoch {metrics['epoch'] + 1}/{epochs} loss {metrics['train_loss']:.4f} (cls {metrics['train_cls']:.4f} "
            f"proto {metrics['train_proto']:.4f} attn {metrics['train_attn']:.4f} con {metrics['train_con']:.4f} "
            f"loc {metrics.get('train_loc', 0.0):.4f} inst {metrics.get('train_inst', 0.0):.4f}) "
            f"val F1 {metrics['val_f1']:.3f} AUC {metrics['val_auc']:.3f} SR {metrics['val_sr']:.3f} "
            f"[{metrics['bags_per_second']:.1f} bags/s]{skipped}")


def _maybe_crash_once(epoch: int, ctx: TrainContext) -> None:
    """Fault injection for the resume test (FAULT_INJECTION_ENV): the last rank dies once, after a checkpoint."""
    setting = os.environ.get(FAULT_INJECTION_ENV)
    if not setting:
        return
    crash_epoch, _, marker = setting.partition(":")
    if epoch != int(crash_epoch) or ctx.rank != ctx.world_size - 1 or os.path.exists(marker):
        return
    Path(marker).write_text("crashed once\n")
    log.warning("fault injection: rank %d exits now", ctx.rank)
    os._exit(1)
