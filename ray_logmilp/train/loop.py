"""Training LogMILP: ``fit()`` in plain PyTorch, plus the thin Ray Train worker function around it.

``fit`` knows nothing about Ray: it talks to a :class:`TrainContext` (rank, world size, device, how to
report metrics and checkpoints, how to find the checkpoint to resume from). :class:`LocalContext` runs
it in-process; :func:`ray_worker_loop` gives it a Ray Train context inside ``TorchTrainer`` workers.

Every rank runs the same number of steps per epoch (uneven steps hang DDP): each rank draws
``steps_per_epoch * batch_size`` bags, class-balanced by default (the paper's weighted sampler), from
its own seeded stream over the whole training split.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ray_logmilp.config import ProjectConfig, TrainConfig, from_dict, to_dict
from ray_logmilp.ingest.prepared import BagSet, PreparedData, collate, load_prepared
from ray_logmilp.model.losses import compute_losses, loss_config_for_epoch
from ray_logmilp.evaluation.metrics import best_f1_threshold, precision_recall_f1, roc_auc, success_rate
from ray_logmilp.model.logmilp import LogMILP, ModelConfig, perturb_key_instance

log = logging.getLogger(__name__)
# The epoch kept as the bundle maximises this (see TrainConfig.select_sr_weight).
SELECT_METRIC = "val_select"
# A few skipped steps are noise (see finite_step); this many in a row means the run has diverged.
MAX_CONSECUTIVE_SKIPPED_STEPS = 50

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_META = "meta.json"


# --------------------------------------------------------------------------------------------------
# Context: what fit() needs from its surroundings.
# --------------------------------------------------------------------------------------------------

class TrainContext(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module: ...
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...
    def resume_dir(self) -> str | None: ...
    def all_gather(self, obj: Any) -> list[Any]: ...


class LocalContext:
    """Single process, no Ray: checkpoints go to ``<run_dir>/checkpoint_<epoch>``; the best is tracked."""

    def __init__(self, run_dir: str | os.PathLike, device: str | torch.device | None = None):
        self.rank, self.world_size = 0, 1
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, str] | None = None

    def wrap_model(self, model):
        return model

    def progress(self, line):
        log.info(line)

    def report(self, metrics, checkpoint_dir):
        self.history.append(dict(metrics))
        if checkpoint_dir is not None:
            dest = self.run_dir / f"checkpoint_{metrics['epoch']:04d}"
            if dest.exists():
                import shutil
                shutil.rmtree(dest)
            os.replace(checkpoint_dir, dest)
            score = metrics.get(SELECT_METRIC, 0.0)
            if self.best is None or score > self.best[0]:
                self.best = (score, str(dest))

    def resume_dir(self):
        found = sorted(self.run_dir.glob("checkpoint_*"))
        return str(found[-1]) if found else None

    def all_gather(self, obj):
        return [obj]


# --------------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------------

def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def learning_rate(tc: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of global step ``step`` (0-based) of ``total_steps`` under ``tc.lr_schedule``."""
    if tc.lr_schedule == "constant" or total_steps <= 1:
        return tc.lr
    progress = min(step / (total_steps - 1), 1.0)
    return tc.lr * (tc.lr_min_factor + (1.0 - tc.lr_min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def epoch_indices(labels: np.ndarray, steps: int, batch_size: int, seed: int, balanced: bool) -> np.ndarray:
    """Bag indices for one rank's epoch, [steps, batch_size]. Same shape on every rank."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    total = steps * batch_size
    if balanced:
        pos = labels == 1
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos and n_neg:
            # Each class gets half of every batch (the paper's weighted sampler, with the class mix fixed
            # per batch rather than binomial: i.i.d. weighted draws gave batches of 10 positives next to
            # batches of 22, and on the 1M-line benchmark corpus the model then sat at chance: validation
            # AUC 0.48-0.60 after 300 steps for seeds 0-2, against 0.81-0.84 with stratified batches).
            pos_idx, neg_idx = np.flatnonzero(pos), np.flatnonzero(~pos)
            n_p = batch_size // 2 + int(rng.integers(0, 2)) * (batch_size % 2)   # odd sizes: alternate the extra
            take_pos = rng.choice(pos_idx, size=(steps, n_p), replace=True)
            take_neg = rng.choice(neg_idx, size=(steps, batch_size - n_p), replace=True)
            return rng.permuted(np.concatenate([take_pos, take_neg], axis=1), axis=1)
    reps = -(-total // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:total].reshape(steps, batch_size)


@torch.no_grad()
def score_bags(model: LogMILP, bags: BagSet, embeddings: torch.Tensor, batch_size: int, perturbation: str,
               index: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Scores of every bag (and with its key instance removed), in eval mode: p_orig, p_pert."""
    was_training = model.training
    model.eval()
    index = np.arange(len(bags)) if index is None else index
    # Score in order of length so padding stays small; results go back to the order of ``index``.
    perm = np.argsort(bags.lengths()[index], kind="stable")
    p_orig = np.empty(len(index), np.float64)
    p_pert = np.empty(len(index), np.float64)
    max_len = model.config.max_len if model.config.positional_encoding else None
    for start in range(0, len(perm), batch_size):
        rows = perm[start:start + batch_size]
        x, mask, _, _ = collate(bags, index[rows], embeddings, max_len)
        out = model(x, mask)
        x_p, mask_p, _, _ = perturb_key_instance(x, mask, out.attention, perturbation)
        p_orig[rows] = out.prob.float().cpu().numpy()
        p_pert[rows] = model(x_p, mask_p).prob.float().cpu().numpy()
    model.train(was_training)
    return {"bag_index": index, "p_orig": p_orig, "p_pert": p_pert}


def validation_metrics(y: np.ndarray, p_orig: np.ndarray, p_pert: np.ndarray, delta_sr: float,
                       select_sr_weight: float) -> dict[str, float]:
    """Bag-label-only metrics: threshold by max F1, F1 there, AUC, SR on positive bags, and the model
    selection score ``val_select = val_f1 + select_sr_weight · val_sr`` (an undefined SR counts 0)."""
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
    out[SELECT_METRIC] = out["val_f1"] + select_sr_weight * sr
    return out


def save_checkpoint(directory: str, model: LogMILP, optimizer, epoch: int, metrics: dict[str, Any],
                    model_cfg: ModelConfig, history: list[dict[str, Any]] | None = None,
                    train_model: LogMILP | None = None) -> str:
    """Weights + optimizer state, and a JSON sidecar with this epoch's metrics and the run's history so far.

    ``model`` is what was validated and goes into the bundle; ``train_model``, when weights are averaged
    (``TrainConfig.ema_decay``), the raw weights a resumed run continues from.

    The history travels with the checkpoint because it is the only record that survives restarts:
    Ray Train's result dataframe lists just the checkpoints it kept (num_to_keep), not every epoch.
    """
    os.makedirs(directory, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
    if train_model is not None:
        state["train_model"] = train_model.state_dict()
    torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
    with open(os.path.join(directory, CHECKPOINT_META), "w") as fh:
        json.dump({"epoch": epoch, "metrics": metrics, "model_config": to_dict(model_cfg),
                   "history": list(history or [])}, fh)
    return directory


def load_checkpoint(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    state = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    with open(os.path.join(directory, CHECKPOINT_META)) as fh:
        meta = json.load(fh)
    return state, meta


def model_config_for(cfg: ProjectConfig, data: PreparedData) -> ModelConfig:
    """The project's model section with the input size taken from the template embeddings."""
    section = to_dict(cfg.model)
    if section.get("input_dim") not in (0, None, data.input_dim):
        raise ValueError(f"model.input_dim={section['input_dim']} but the templates are embedded in "
                         f"{data.input_dim} dimensions; leave model.input_dim at 0 to take it from the data")
    section["input_dim"] = data.input_dim
    return ModelConfig(**section)


def fit(cfg: ProjectConfig, data: PreparedData, ctx: TrainContext, *, scratch_dir: str) -> dict[str, Any]:
    """Train LogMILP; reports every epoch through ``ctx``. Returns the last epoch's metrics."""
    tc = cfg.train
    set_seed(tc.seed)
    model_cfg = model_config_for(cfg, data)
    model = LogMILP(model_cfg).to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    average = WeightAverage(model, tc.ema_decay) if tc.ema_decay > 0 else None
    resume = ctx.resume_dir()
    if resume:
        state, meta = load_checkpoint(resume)
        # With weight averaging the checkpoint's "model" is the average (what validation scored and the
        # bundle ships); the raw weights that training continues from are kept beside it.
        model.load_state_dict(state.get("train_model", state["model"]))
        if average is not None:
            average.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        history = list(meta.get("history", []))
        if ctx.rank == 0:
            log.info("resuming from %s (epoch %d done)", resume, start_epoch)
    train_model = ctx.wrap_model(model)
    embeddings = torch.from_numpy(data.embeddings).to(ctx.device)
    train_bags, val_bags = data.splits["train"], data.splits["val"]
    steps = tc.steps_per_epoch or max(1, math.ceil(len(train_bags) / (tc.batch_size * ctx.world_size)))
    use_bf16 = tc.bf16 and ctx.device.type == "cuda"
    max_len = model_cfg.max_len if model_cfg.positional_encoding else None
    metrics: dict[str, Any] = {}
    consecutive_skips = 0

    for epoch in range(start_epoch, tc.epochs):
        t_epoch = time.perf_counter()
        model.train()
        batches = epoch_indices(train_bags.labels, steps, tc.batch_size,
                                seed=tc.seed * 100_003 + epoch * 1_009 + ctx.rank, balanced=tc.balanced_sampling)
        sums: dict[str, float] = {}
        skipped = 0
        loss_cfg = loss_config_for_epoch(cfg.loss, epoch)
        for step_in_epoch, idx in enumerate(batches):
            lr = learning_rate(tc, epoch * steps + step_in_epoch, tc.epochs * steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, mask, y, _ = collate(train_bags, idx, embeddings, max_len)
            with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=use_bf16), \
                    training_attention_kernels(use_bf16):
                loss, terms, _ = compute_losses(train_model, x, mask, y, loss_cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not finite_step(model, optimizer, tc.grad_clip):
                skipped += 1
                consecutive_skips += 1
                if consecutive_skips >= MAX_CONSECUTIVE_SKIPPED_STEPS:
                    raise FloatingPointError(
                        f"training diverged: {consecutive_skips} steps in a row had non-finite gradients "
                        f"(epoch {epoch + 1}/{tc.epochs}, step {step_in_epoch + 1}/{steps}); try a lower train.lr"
                        + (" or train.bf16=false" if use_bf16 else ""))
                continue
            consecutive_skips = 0
            if average is not None:
                average.update(model, epoch * steps + step_in_epoch)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
        train_seconds = time.perf_counter() - t_epoch

        # Validation on this rank's shard of the val split, gathered so every rank sees the same numbers.
        shard = np.arange(ctx.rank, len(val_bags), ctx.world_size)
        eval_model = average.model if average is not None else model
        scored = score_bags(eval_model, val_bags, embeddings, tc.eval_batch_size, cfg.loss.perturbation, shard)
        gathered = ctx.all_gather(scored)
        idx = np.concatenate([g["bag_index"] for g in gathered])
        p_orig = np.concatenate([g["p_orig"] for g in gathered])
        p_pert = np.concatenate([g["p_pert"] for g in gathered])
        applied = max(1, len(batches) - skipped)
        metrics = {"epoch": epoch, **{f"train_{k}": v / applied for k, v in sums.items()},
                   "skipped_steps": skipped,
                   **validation_metrics(val_bags.labels[idx].astype(int), p_orig, p_pert, cfg.eval.delta_sr,
                                        tc.select_sr_weight),
                   "train_seconds": train_seconds, "bags_per_second": len(batches) * tc.batch_size / train_seconds,
                   "lr": lr, "device": str(ctx.device)}
        if ctx.device.type == "cuda":
            # This process's peak so far (the Ray workers' own, which the driver cannot read).
            metrics["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
        history.append(metrics)
        if ctx.rank == 0:
            ctx.progress(format_progress(metrics, tc.epochs))
        ckpt = None
        if ctx.rank == 0:
            ckpt = save_checkpoint(os.path.join(scratch_dir, f"epoch_{epoch:04d}"), eval_model, optimizer, epoch,
                                   metrics, model_cfg, history, train_model=model if average is not None else None)
        ctx.report(metrics, ckpt)
        if tc.fault_injection_epoch is not None and epoch == tc.fault_injection_epoch:
            _maybe_crash_once(tc.fault_injection_marker, ctx)
    return metrics


def training_attention_kernels(bf16: bool):
    """The scaled-dot-product-attention kernels the encoder may use in training.

    Why: in bf16 on an H200, with the kernel PyTorch chose by default (not the math one; which fused
    kernel it picked was not recorded, and flash attention refuses our masks), training returned NaN
    gradients from a finite loss: 11 of 17 runs on the synthetic benchmark (2,400 steps each, one of
    4,800) began doing so after 1,200 to 2,200 steps, and then on most steps (100–180 of 200), so
    training diverged. With the math kernel, 4 of the settings that had diverged trained all 2,400
    steps without one non-finite step (as did fp32). Windows are short (64 lines): the cost is small.
    """
    if not bf16:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.MATH])


def finite_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> bool:
    """Clip and apply the gradients unless any is non-finite; returns whether the step was taken.

    Why: one step with a NaN gradient turns every weight into NaN under AdamW, and training then
    silently keeps the best epoch before it (seen on an H200 in bf16 before training_attention_kernels;
    such steps can come from any kernel's numerics). Skipping the step, as fp16's GradScaler does,
    keeps the run; a run that keeps producing them stops (MAX_CONSECUTIVE_SKIPPED_STEPS). Under DDP
    the gradients are already all-reduced here, so every rank sees the same norm and skips alike.
    """
    # max_norm=inf measures without rescaling; the norm is non-finite iff some gradient is.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


class WeightAverage:
    """An exponential moving average of a model's weights (Polyak averaging), kept as a second model.

    Why: on the synthetic benchmark corpora (1M–8M lines, graded settings) validation F1 moved by up to
    0.025 from one epoch to the next late in training while the training classification loss sat near
    0.01; an average of the weights is the standard remedy for such wandering. Every DDP rank applies
    the same all-reduced steps, so every rank's average is equal.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay applied after global step ``step`` (0-based): warmed up so that the first updates
        follow the weights instead of staying near their random start."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        weight = 1.0 - self.decay_at(step)
        for avg, live in zip(self.model.parameters(), model.parameters()):
            avg.lerp_(live.detach(), weight)
        for avg, live in zip(self.model.buffers(), model.buffers()):
            avg.copy_(live)


def format_progress(metrics: dict[str, Any], epochs: int) -> str:
    skipped = f" skipped {metrics['skipped_steps']} non-finite step(s)" if metrics.get("skipped_steps") else ""
    return (f"epoch {metrics['epoch'] + 1}/{epochs} loss {metrics['train_loss']:.4f} (cls {metrics['train_cls']:.4f} "
            f"proto {metrics['train_proto']:.4f} attn {metrics['train_attn']:.4f} con {metrics['train_con']:.4f} "
            f"loc {metrics.get('train_loc', 0.0):.4f} inst {metrics.get('train_inst', 0.0):.4f}) "
            f"val F1 {metrics['val_f1']:.3f} AUC {metrics['val_auc']:.3f} SR {metrics['val_sr']:.3f} "
            f"[{metrics['bags_per_second']:.1f} bags/s]{skipped}")


def _maybe_crash_once(marker: str | None, ctx: TrainContext) -> None:
    """Fault injection for the resume test: the last rank dies once, right after a checkpoint."""
    if marker is None or ctx.rank != ctx.world_size - 1 or os.path.exists(marker):
        return
    Path(marker).write_text("crashed once\n")
    log.warning("fault injection: rank %d exits now", ctx.rank)
    os._exit(1)


# --------------------------------------------------------------------------------------------------
# Ray Train.
# --------------------------------------------------------------------------------------------------

class RayContext:
    """TrainContext inside a Ray Train worker."""

    def __init__(self):
        import ray.train
        import ray.train.torch

        tctx = ray.train.get_context()
        self.rank, self.world_size = tctx.get_world_rank(), tctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap_model(self, model):
        import ray.train.torch

        if self.world_size == 1:
            return model
        wrapped = ray.train.torch.prepare_model(model, move_to_device=False)
        wrapped.config = model.config   # losses read model.config; DDP does not forward attributes
        return wrapped

    def progress(self, line):
        # Worker stdout is what Ray forwards to the driver's console (logging handlers in workers are
        # Ray Train's own, writing to files).
        print(line, flush=True)

    def report(self, metrics, checkpoint_dir):
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def resume_dir(self):
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        # to_directory copies it locally, so it works for remote storage as well.
        return checkpoint.to_directory()

    def all_gather(self, obj):
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def ray_worker_loop(loop_config: dict[str, Any]) -> None:
    """The Ray Train ``train_loop_per_worker``: rebuild the config, load the data, call ``fit``."""
    import tempfile

    cfg = from_dict(ProjectConfig, loop_config["config"])
    data = load_prepared(cfg.train.prepared_dir or cfg.data.output_dir, splits=("train", "val"))
    with tempfile.TemporaryDirectory(prefix="logmilp-ckpt-") as scratch:
        fit(cfg, data, RayContext(), scratch_dir=scratch)


@dataclass
class TrainResult:
    bundle_dir: str
    best_checkpoint: str             # "" when train_local ran in a temporary folder (removed)
    metrics: dict[str, Any]          # validation metrics of the chosen (best) epoch
    seconds: float
    history: list[dict[str, Any]]    # every epoch's reported metrics, in order (across restarts)


def train_with_ray(cfg: ProjectConfig) -> TrainResult:
    """Run training on the Ray cluster (TorchTrainer, DDP) and write the model bundle from the best epoch."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from ray_logmilp import bundle, storage

    t0 = time.perf_counter()
    tc = cfg.train
    if not ray.is_initialized():
        ray.init()
    use_gpu = tc.use_gpu if isinstance(tc.use_gpu, bool) else bool(ray.cluster_resources().get("GPU", 0))
    fs, storage_root = storage.resolve_dir(tc.storage_path, create=True)
    run_config = ray.train.RunConfig(
        name=tc.run_name,
        # Pass the filesystem itself: rebuilding a URI string would drop options such as an S3 endpoint.
        storage_path=storage_root, storage_filesystem=fs,
        failure_config=ray.train.FailureConfig(max_failures=tc.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=tc.num_to_keep,
                                                     checkpoint_score_attribute=SELECT_METRIC,
                                                     checkpoint_score_order="max"),
    )
    resources = {"CPU": tc.cpus_per_worker, **(tc.resources_per_worker or {})}
    if use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config={"config": to_dict(cfg)},
        scaling_config=ray.train.ScalingConfig(num_workers=tc.num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=run_config,
    )
    log.info("training on %d worker(s)%s; checkpoints under %s", tc.num_workers, " with GPUs" if use_gpu else "",
             tc.storage_path)
    result = trainer.fit()
    best = result.get_best_checkpoint(metric=SELECT_METRIC, mode="max") if result.best_checkpoints else None
    if best is None:
        raise RuntimeError("training reported no checkpoint")
    with best.as_directory() as ckpt_dir:
        state, meta = load_checkpoint(ckpt_dir)
        out = bundle.write_bundle(tc.bundle_dir, cfg, state["model"], meta,
                                  prepared_dir=tc.prepared_dir or cfg.data.output_dir)
    # Every epoch, across restarts, from the latest checkpoint (metrics_dataframe holds only kept checkpoints).
    latest = result.checkpoint or best
    with latest.as_directory() as ckpt_dir:
        history = load_checkpoint(ckpt_dir)[1].get("history", [])
    return TrainResult(bundle_dir=out, best_checkpoint=best.path, metrics=meta["metrics"],
                       seconds=time.perf_counter() - t0, history=history)


def train_local(cfg: ProjectConfig, run_dir: str | None = None) -> TrainResult:
    """The same training without Ray (one process): used by tests, benchmarks and debugging.

    Epoch checkpoints go to ``run_dir`` (kept, so a second call resumes from them) or, without one, to
    a temporary folder that is removed once the bundle is written: every epoch's checkpoint is
    several MB, and callers that only want the bundle must not fill /tmp with them.
    """
    import tempfile

    if run_dir is None:
        with tempfile.TemporaryDirectory(prefix="logmilp-run-") as tmp:
            result = train_local(cfg, run_dir=tmp)
        return dataclasses.replace(result, best_checkpoint="")

    from ray_logmilp import bundle

    t0 = time.perf_counter()
    data = load_prepared(cfg.train.prepared_dir or cfg.data.output_dir, splits=("train", "val"))
    ctx = LocalContext(run_dir)
    with tempfile.TemporaryDirectory(prefix="logmilp-ckpt-") as scratch:
        fit(cfg, data, ctx, scratch_dir=scratch)
    assert ctx.best is not None
    state, meta = load_checkpoint(ctx.best[1])
    out = bundle.write_bundle(cfg.train.bundle_dir, cfg, state["model"], meta,
                              prepared_dir=cfg.train.prepared_dir or cfg.data.output_dir)
    return TrainResult(bundle_dir=out, best_checkpoint=ctx.best[1], metrics=meta["metrics"],
                       seconds=time.perf_counter() - t0, history=ctx.history)
