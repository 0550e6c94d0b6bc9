"""Training: ``fit`` in plain PyTorch (``loop``), in one process (``local``) or on Ray Train (``ray_trainer``)."""
from ray_logmilp.train.checkpoint import TrainResult, load_checkpoint, save_checkpoint
from ray_logmilp.train.local import LocalContext, train_local
from ray_logmilp.train.loop import SELECT_METRIC, fit, format_progress, validation_metrics
from ray_logmilp.train.ray_trainer import train_with_ray

__all__ = ["LocalContext", "SELECT_METRIC", "TrainResult", "fit", "format_progress", "load_checkpoint",
           "save_checkpoint", "train_local", "train_with_ray", "validation_metrics"]
