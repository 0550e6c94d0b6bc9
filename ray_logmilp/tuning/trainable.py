"""The Tune trainable: the library's :func:`~ray_logmilp.train.loop.fit` run inside one Tune trial.

A trial is one Tune function-trainable actor that calls ``fit`` with a :class:`TuneContext` (no Ray Train
controller per trial, so a trial starts in about the time an actor does; actors are reused between
trials). ``fit`` reports every epoch, so ASHA can stop poor trials early. Only bag labels reach a trial:
:func:`tuning_data` keeps the train and validation splits and blanks their instance labels.
Ray and torch are imported inside functions: importing this module starts nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from typing import Any

import numpy as np

from ray_logmilp.config import from_dict
from ray_logmilp.tuning.space import ObjectiveConfig, apply_params

log = logging.getLogger(__name__)

OBJECTIVE = "objective"          # name of the reported scalar Tune optimises
EPOCHS_DONE = "epochs_done"      # ASHA's time attribute (1-based epochs, survives restores)
TUNE_STATE_FILE = "tune_state.json"


def objective_value(metrics: dict[str, Any], objective: ObjectiveConfig) -> float:
    """``metric + sr_weight * val_sr``; an undefined SR (no positive validation bag) counts as 0."""
    value = float(metrics.get(objective.metric, float("nan")))
    value = 0.0 if math.isnan(value) else value
    if objective.sr_weight:
        sr = float(metrics.get("val_sr", float("nan")))
        value += objective.sr_weight * (0.0 if math.isnan(sr) else sr)
    return value


def tuning_data(prepared) -> Any:
    """Train and validation splits only, with instance labels blanked: all a trial may see."""
    from ray_logmilp.ingest.prepared import PreparedData

    splits = {}
    for name in ("train", "val"):
        bags = prepared.splits[name]
        splits[name] = dataclasses.replace(bags, instance_labels=np.full(len(bags.template_ids), -1, np.int8))
    return PreparedData(root=prepared.root, embeddings=prepared.embeddings, splits=splits, manifest={})


class TuneContext:
    """:class:`~ray_logmilp.train.TrainContext` inside a Tune trial: one process, reports to Tune.

    It adds to every report the objective, ``epochs_done`` (ASHA's clock) and ``fit_seconds``, the time
    spent inside ``fit`` so far (reporting excluded), so per-trial overhead = trial wall time − fit time.
    """

    def __init__(self, objective: ObjectiveConfig, scratch_dir: str, started_at: float | None = None):
        import ray
        import torch

        self.rank, self.world_size = 0, 1
        self.device = torch.device("cuda") if ray.get_gpu_ids() and torch.cuda.is_available() else torch.device("cpu")
        self.objective = objective
        self.scratch_dir = scratch_dir
        self.started_at = started_at if started_at is not None else time.time()
        self.fit_seconds = 0.0
        self._mark = time.perf_counter()

    def progress(self, line: str) -> None:
        log.debug(line)   # Tune's trial table already shows every epoch's metrics

    def wrap_model(self, model):
        return model

    def all_gather(self, obj):
        return [obj]

    def resume_dir(self) -> str | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        path = checkpoint.to_directory(os.path.join(self.scratch_dir, "resume"))
        state_file = os.path.join(path, TUNE_STATE_FILE)
        if os.path.exists(state_file):
            with open(state_file) as fh:
                self.fit_seconds = float(json.load(fh).get("fit_seconds", 0.0))
        return path

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        now = time.perf_counter()
        self.fit_seconds += now - self._mark
        # The objective and its parts first: Tune's live table shows the first few reported metrics.
        out = {OBJECTIVE: objective_value(metrics, self.objective),
               **{k: metrics[k] for k in ("val_f1", "val_sr") if k in metrics},
               EPOCHS_DONE: int(metrics["epoch"]) + 1, "fit_seconds": self.fit_seconds}
        out.update({k: v for k, v in metrics.items() if k not in out})
        out["trial_started_at"] = self.started_at
        checkpoint = None
        if checkpoint_dir is not None:
            with open(os.path.join(checkpoint_dir, TUNE_STATE_FILE), "w") as fh:
                json.dump({"fit_seconds": self.fit_seconds}, fh)
            checkpoint = tune.Checkpoint.from_directory(checkpoint_dir)
        tune.report(out, checkpoint=checkpoint)     # persists the checkpoint before it returns
        if checkpoint_dir is not None:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        self._mark = time.perf_counter()


def tune_trial(params: dict[str, Any], *, base: dict[str, Any], objective: dict[str, Any], data) -> None:
    """The Tune trainable: the base config with the sampled ``params``, trained by ``fit``."""
    import ray
    import torch

    from ray_logmilp.train.loop import fit
    from ray_logmilp.train.scratch import scratch_dir

    started_at = time.time()
    cfg = apply_params(base, params)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    # Object-store arrays are read-only; the embedding table is small, give torch a writable copy.
    data = dataclasses.replace(data, embeddings=np.array(data.embeddings, copy=True))
    with scratch_dir("logmilp-trial-") as scratch:
        ctx = TuneContext(from_dict(ObjectiveConfig, objective, prefix="objective."), scratch, started_at)
        fit(cfg, data, ctx, scratch_dir=scratch)
