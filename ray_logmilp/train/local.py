"""Training in one process without Ray (tests, benchmarks, debugging): :func:`train_local`."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ray_logmilp.config import ProjectConfig
from ray_logmilp.ingest.prepared import load_prepared
from ray_logmilp.train.checkpoint import TrainResult, load_checkpoint
from ray_logmilp.train.loop import SELECT_METRIC, fit
from ray_logmilp.train.scratch import scratch_dir

log = logging.getLogger(__name__)


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


def train_local(cfg: ProjectConfig, run_dir: str | None = None) -> TrainResult:
    """The same training as :func:`train_with_ray`, in this process, and the bundle of the best epoch.

    Epoch checkpoints go to ``run_dir`` (kept, so a second call resumes from them) or, without one, to
    a temporary folder that is removed once the bundle is written: every epoch's checkpoint is
    several MB, and callers that only want the bundle must not fill /tmp with them.
    """
    if run_dir is None:
        with scratch_dir("logmilp-run-") as tmp:
            result = train_local(cfg, run_dir=tmp)
        return dataclasses.replace(result, best_checkpoint="")

    from ray_logmilp import bundle

    t0 = time.perf_counter()
    data = load_prepared(cfg.train.prepared_dir or cfg.data.output_dir, splits=("train", "val"))
    ctx = LocalContext(run_dir)
    with scratch_dir() as scratch:
        fit(cfg, data, ctx, scratch_dir=scratch)
    assert ctx.best is not None
    state, meta = load_checkpoint(ctx.best[1])
    out = bundle.write_bundle(cfg.train.bundle_dir, cfg, state["model"], meta,
                              prepared_dir=cfg.train.prepared_dir or cfg.data.output_dir)
    return TrainResult(bundle_dir=out, best_checkpoint=ctx.best[1], metrics=meta["metrics"],
                       seconds=time.perf_counter() - t0, history=ctx.history)
