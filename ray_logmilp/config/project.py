"""The project config: one dataclass per stage, read from one YAML file plus dotted CLI overrides.

A config file is a YAML mapping whose top-level keys are stages (``data``, ``model``, ``loss``,
``train``, ``eval``). Every key must be a field of the stage's dataclass: an unknown key, a value of the
wrong type or a value out of range raises :class:`ConfigError` naming the dotted flag
(``train.epochs``), and it does so before any Ray work starts.

Overrides on the command line use the same dotted names, with YAML values::

    python jobs/train.py --config configs/synthetic.yaml train.epochs=5 model.num_prototypes=32
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ray_logmilp.config.engine import apply_overrides, from_dict, load_yaml, require
from ray_logmilp.model.config import LossConfig, ModelConfig


# --------------------------------------------------------------------------------------------------
# Stage configs
# --------------------------------------------------------------------------------------------------

@dataclass
class WindowConfig:
    """How lines are grouped into bags (multi-instance learning windows)."""

    kind: Literal["time", "count", "session"] = "count"
    """``time``: sliding time windows; ``count``: fixed number of lines; ``session``: one bag per session key."""
    size: float = 64
    """Window length: seconds for ``time``, lines for ``count``; unused for ``session``."""
    stride: float | None = None
    """Step between window starts (same unit as ``size``); ``None`` means ``size`` (tumbling windows)."""
    max_instances: int = 512
    """Cap on lines per bag. A longer window is split into consecutive bags of at most this many lines,
    each carrying the window's label source; lines are never dropped."""

    def __post_init__(self) -> None:
        require(self.size > 0, "size", f"must be > 0, got {self.size}")
        if self.stride is not None:
            require(self.stride > 0, "stride", f"must be > 0, got {self.stride}")
            # A stride longer than the window would leave lines in no bag at all.
            require(self.stride <= self.size, "stride", f"must be <= size ({self.size}), got {self.stride}")
        if self.kind == "count":
            require(float(self.size).is_integer(), "size", "must be a whole number of lines for kind=count")
            if self.stride is not None:
                require(float(self.stride).is_integer(), "stride", "must be a whole number for kind=count")
        require(self.max_instances >= 1, "max_instances", f"must be >= 1, got {self.max_instances}")

    @property
    def step(self) -> float:
        return self.size if self.stride is None else self.stride


@dataclass
class LabelConfig:
    """Where bag labels come from."""

    source: Literal["lines", "alarms", "sessions", "none"] = "lines"
    """``lines``: bag = max of line labels (the format needs a label field); ``alarms``: a window that
    overlaps an alarm time span is positive; ``sessions``: a CSV of session key -> label; ``none``: unlabelled."""
    alarms_path: str | None = None
    """CSV with columns ``start,end`` (epoch seconds or ISO timestamps), for ``source: alarms``."""
    session_labels_path: str | None = None
    """CSV with a session column and a label column (0/1 or Normal/Anomaly), for ``source: sessions``."""

    def __post_init__(self) -> None:
        if self.source == "alarms":
            require(bool(self.alarms_path), "alarms_path", "is required when labels.source is 'alarms'")
        if self.source == "sessions":
            require(bool(self.session_labels_path), "session_labels_path",
                     "is required when labels.source is 'sessions'")


@dataclass
class SplitConfig:
    """Train/validation/test split of bags."""

    mode: Literal["chronological", "random"] = "chronological"
    """``chronological``: by bag start time (the default: no peeking into the future); ``random``: shuffled by seed."""
    train: float = 0.6
    val: float = 0.2
    test: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            v = getattr(self, name)
            require(0.0 <= v <= 1.0, name, f"must be within [0, 1], got {v}")
        total = self.train + self.val + self.test
        require(abs(total - 1.0) < 1e-6, "", f"train + val + test must be 1, got {total}")


@dataclass
class EmbeddingConfig:
    """Template text -> vector."""

    kind: Literal["hashing", "sentence_transformers"] = "hashing"
    """``hashing``: offline hashed token n-grams with IDF weights (no download); ``sentence_transformers``:
    a model from a local path (``pip install ray-logmilp[embed]``)."""
    dim: int = 512
    """Vector size of the hashing embedder. Hashed n-grams of a few hundred templates collide in fewer
    buckets, and the model has to tell a template's own partner from look-alikes; the measurements behind
    512 are in docs/training.md. The cost is only in the model's input projection."""
    model_path: str | None = None
    """Local folder of a sentence-transformers model (never downloaded)."""

    def __post_init__(self) -> None:
        require(self.dim >= 8, "dim", f"must be >= 8, got {self.dim}")
        if self.kind == "sentence_transformers":
            require(bool(self.model_path), "model_path", "is required for kind sentence_transformers")


@dataclass
class DataConfig:
    """The prepare stage: raw logs -> events, templates, bags (Ray Data). How big a read range and a
    parse batch are is fixed in :mod:`ray_logmilp.ingest.reading` (``READ_BLOCK_BYTES``, ``CHUNK_LINES``)."""

    inputs: list[str] = field(default_factory=list)
    """Files, directories, globs or URIs (``file://``, ``s3://``, ...); ``.gz`` is read transparently."""
    format: str = "bgl"
    """A built-in format name (bgl, thunderbird, spirit, hdfs, zookeeper, generic) or a path to a format YAML."""
    output_dir: str = "outputs/prepared"
    """Where events/templates/bags parquet and the manifest are written (local path or URI)."""
    strict: bool = False
    """Fail on the first quarantined line (naming file, line and reason) instead of counting it."""
    parse_concurrency: int | None = None
    """Parallel parse tasks; ``None`` lets Ray Data decide from the cluster's CPUs."""
    window: WindowConfig = field(default_factory=WindowConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)

    def __post_init__(self) -> None:
        if self.parse_concurrency is not None:
            require(self.parse_concurrency >= 1, "parse_concurrency", "must be >= 1")


# --------------------------------------------------------------------------------------------------
# The whole project config: one YAML file, one section per stage.
# --------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """The train stage (Ray Train TorchTrainer with DDP, or plain PyTorch). Fixed choices (AdamW's weight
    decay, gradient clipping, balanced batches, bf16 on GPU, checkpoint selection) are constants in
    ``ray_logmilp.train`` and described in docs/training.md."""

    prepared_dir: str | None = None
    """Output of the prepare stage; ``None`` means ``data.output_dir``. Must be shared storage (a URI)
    when workers run on several nodes."""
    bundle_dir: str = "outputs/model"
    """Where the model bundle of the best epoch is written (local folder or URI)."""
    storage_path: str = "outputs/ray_results"
    """Ray Train storage for checkpoints (local folder or URI)."""
    run_name: str | None = None
    """Name of the run under ``storage_path``; a run with the same name resumes from its checkpoints."""
    epochs: int = 15
    batch_size: int = 32
    """Bags per step and rank; half positive, half negative (the paper's weighted sampler)."""
    lr: float = 1e-3
    """AdamW's learning rate, constant throughout."""
    seed: int = 0
    steps_per_epoch: int | None = None
    """Steps per rank per epoch; ``None``: one pass over the training bags split across ranks."""
    num_workers: int = 1
    """Ray Train workers (DDP ranks)."""
    use_gpu: bool | None = None
    """``None``: use GPUs when the cluster has them at start. On an autoscaling cluster that starts with
    no GPU nodes, set ``true`` so the GPU worker type is requested."""
    resources_per_worker: dict[str, float] | None = None
    """Ray resources per worker, e.g. ``{CPU: 4}`` or ``{gpu_node: 0.01}`` to land on a node type. CPU
    defaults to 1, and GPU to 1 when GPUs are used."""
    max_failures: int = 1
    """Worker crashes tolerated; the run restarts from the last checkpoint."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "num_workers"):
            require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(self.max_failures >= 0, "max_failures", "must be >= 0")
        if self.steps_per_epoch is not None:
            require(self.steps_per_epoch >= 1, "steps_per_epoch", "must be >= 1")
        for name, amount in (self.resources_per_worker or {}).items():
            require(amount >= 0, "resources_per_worker", f"{name} must be >= 0, got {amount}")


@dataclass
class EvalConfig:
    """Evaluation: localization depth and the success-rate margin."""

    top_k: list[int] = field(default_factory=lambda: [1, 3, 5])
    """k values for Loc@k."""
    delta_sr: float = 0.1
    """δ_sr of eq. 6: a positive bag counts as a success when removing its top line lowers P by more."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds for mean ± std figures."""

    def __post_init__(self) -> None:
        require(all(k >= 1 for k in self.top_k) and bool(self.top_k), "top_k", "must be a non-empty list of k >= 1")
        require(0 <= self.delta_sr < 1, "delta_sr", f"must be in [0, 1), got {self.delta_sr}")
        require(bool(self.seeds), "seeds", "must name at least one seed")


@dataclass
class ProjectConfig:
    """Top level of a config file. Each job validates the whole file, so a typo anywhere fails early."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_project(path: str | Path | None, overrides: list[str] | None = None) -> ProjectConfig:
    """Load a full config file plus dotted overrides (``data.window.size=128``)."""
    data = load_yaml(path) if path else {}
    apply_overrides(data, list(overrides or []))
    return from_dict(ProjectConfig, data)
