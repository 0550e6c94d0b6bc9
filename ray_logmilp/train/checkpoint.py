"""Epoch checkpoints (weights, optimizer, metrics, history) and what a training run returns."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from ray_logmilp.config import to_dict
from ray_logmilp.model.logmilp import ModelConfig

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_META = "meta.json"


def save_checkpoint(directory: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    metrics: dict[str, Any], model_cfg: ModelConfig, input_dim: int,
                    history: list[dict[str, Any]] | None = None) -> str:
    """Weights + optimizer state, and a JSON sidecar with this epoch's metrics, the model's architecture
    (its config plus ``input_dim``, as bundles record it) and the run's history so far.

    The history travels with the checkpoint because it is the only record that survives restarts:
    Ray Train's result lists just the checkpoints it kept, not every epoch.
    """
    os.makedirs(directory, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
    torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
    with open(os.path.join(directory, CHECKPOINT_META), "w") as fh:
        json.dump({"epoch": epoch, "metrics": metrics, "model_config": {**to_dict(model_cfg), "input_dim": input_dim},
                   "history": list(history or [])}, fh)
    return directory


def load_checkpoint(directory: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state: model/optimizer/epoch, meta: the JSON sidecar) of a checkpoint folder."""
    state = torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    with open(os.path.join(directory, CHECKPOINT_META)) as fh:
        meta = json.load(fh)
    return state, meta


@dataclass
class TrainResult:
    bundle_dir: str
    best_checkpoint: str             # "" when train_local ran in a temporary folder (removed)
    metrics: dict[str, Any]          # validation metrics of the chosen (best) epoch
    seconds: float
    history: list[dict[str, Any]]    # every epoch's reported metrics, in order (across restarts)
