"""Training on a Ray cluster: the Ray Train worker (``ray_worker_loop``) around ``fit`` and the driver
:func:`train_with_ray` (TorchTrainer, DDP). The only training module that imports Ray."""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import torch

from ray_logmilp.config import ProjectConfig, from_dict, to_dict
from ray_logmilp.ingest.prepared import load_prepared
from ray_logmilp.train.checkpoint import TrainResult, load_checkpoint
from ray_logmilp.train.loop import FAULT_INJECTION_ENV, SELECT_METRIC, fit
from ray_logmilp.train.scratch import scratch_dir

log = logging.getLogger(__name__)

# Checkpoints Ray Train keeps: the best by SELECT_METRIC, and the latest (which carries the full history).
NUM_TO_KEEP = 2


class RayContext:
    """TrainContext inside a Ray Train worker; a resumed checkpoint is copied into ``scratch_dir``."""

    def __init__(self, scratch_dir: str):
        import ray.train
        import ray.train.torch

        tctx = ray.train.get_context()
        self.rank, self.world_size = tctx.get_world_rank(), tctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.scratch_dir = scratch_dir

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
        # to_directory copies it locally, so it works for remote storage as well; into the scratch folder,
        # which is removed with the run (its default, a fresh temp folder, never is).
        return checkpoint.to_directory(os.path.join(self.scratch_dir, "resume"))

    def all_gather(self, obj):
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out


def ray_worker_loop(loop_config: dict[str, Any]) -> None:
    """The Ray Train ``train_loop_per_worker``: rebuild the config, load the data, call ``fit``."""
    if loop_config.get("fault_injection"):
        # The driver's test setting; workers do not inherit the driver's environment.
        os.environ[FAULT_INJECTION_ENV] = loop_config["fault_injection"]
    cfg = from_dict(ProjectConfig, loop_config["config"])
    data = load_prepared(cfg.train.prepared_dir or cfg.data.output_dir, splits=("train", "val"))
    with scratch_dir() as scratch:
        fit(cfg, data, RayContext(scratch), scratch_dir=scratch)


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
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=NUM_TO_KEEP,
                                                     checkpoint_score_attribute=SELECT_METRIC,
                                                     checkpoint_score_order="max"),
    )
    resources = {"CPU": 1.0, **({"GPU": 1.0} if use_gpu else {}), **(tc.resources_per_worker or {})}
    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config={"config": to_dict(cfg), "fault_injection": os.environ.get(FAULT_INJECTION_ENV)},
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
