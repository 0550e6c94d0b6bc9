"""Configuration: one dataclass per stage, YAML files, dotted CLI overrides.

A config file is a YAML mapping whose top-level keys are stages (``data``, ``model``, ``loss``,
``train``, ``eval``). Every key must be a field of the stage's dataclass: an unknown key, a value of the
wrong type or a value out of range raises :class:`ConfigError` naming the dotted flag
(``train.epochs``), and it does so before any Ray work starts.

Overrides on the command line use the same dotted names, with YAML values::

    python jobs/train.py --config configs/synthetic.yaml train.epochs=5 model.num_prototypes=32
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted key."""


# --------------------------------------------------------------------------------------------------
# Generic machinery: dict <-> dataclass with type checks and named errors.
# --------------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the harmless cases (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "3e-3" (no dot) as a string; users write it that way in overrides and files.
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, localns=_lazy_types())
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} "
            + ", ".join(f"'{prefix}{k}'" for k in unknown)
            + f"; {prefix.rstrip('.') or cls.__name__} accepts: {', '.join(sorted(names))}"
        )
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        # __post_init__ validation names the field relative to its dataclass; add the dotted prefix.
        msg = str(exc)
        raise ConfigError(f"{prefix}{msg}" if not msg.startswith(":") else f"{prefix.rstrip('.')}{msg}") from None
    except ValueError as exc:
        # Validation in library dataclasses (model, loss) says "ModelConfig.hidden_dim ..."; name the flag.
        raise ConfigError(str(exc).replace(f"{cls.__name__}.", prefix)) from None
    except TypeError as exc:  # a required field missing
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from None
    return obj


def _lazy_types() -> dict[str, Any]:
    """Annotations of sections defined in torch modules, resolved only when needed."""
    return {"ModelConfig": _model_config_type(), "LossConfig": _loss_config_type()}


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (tuples become lists) suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip().lstrip("-")
        if not dotted:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {dotted}: cannot parse value {raw!r}: {exc}") from None
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {dotted}: '{part}' is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def _require(cond: bool, key: str, message: str) -> None:
    """Validation inside ``__post_init__``: ``key`` is the field name ('' for the whole section)."""
    if not cond:
        raise ConfigError(f"{key}: {message}")


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
        _require(self.size > 0, "size", f"must be > 0, got {self.size}")
        if self.stride is not None:
            _require(self.stride > 0, "stride", f"must be > 0, got {self.stride}")
            # A stride longer than the window would leave lines in no bag at all.
            _require(self.stride <= self.size, "stride", f"must be <= size ({self.size}), got {self.stride}")
        if self.kind == "count":
            _require(float(self.size).is_integer(), "size", "must be a whole number of lines for kind=count")
            if self.stride is not None:
                _require(float(self.stride).is_integer(), "stride", "must be a whole number for kind=count")
        _require(self.max_instances >= 1, "max_instances", f"must be >= 1, got {self.max_instances}")

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
            _require(bool(self.alarms_path), "alarms_path", "is required when labels.source is 'alarms'")
        if self.source == "sessions":
            _require(bool(self.session_labels_path), "session_labels_path",
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
            _require(0.0 <= v <= 1.0, name, f"must be within [0, 1], got {v}")
        total = self.train + self.val + self.test
        _require(abs(total - 1.0) < 1e-6, "", f"train + val + test must be 1, got {total}")


@dataclass
class EmbeddingConfig:
    """Template text -> vector."""

    kind: Literal["hashing", "sentence_transformers"] = "hashing"
    """``hashing``: offline hashed token n-grams with IDF weights (no download); ``sentence_transformers``:
    a model from a local path (``pip install ray-logmilp[embed]``)."""
    dim: int = 512
    """Vector size of the hashing embedder. 512 because hashed n-grams of a few hundred templates
    collide in 128 buckets (template cosines up to 0.64, spread 0.09 at 128; 0.53 and 0.05 at 512), and
    the model has to tell a template's own partner (its "open", its trigger) from look-alikes: on the
    1M-line benchmark corpus (seed 0, 2,400 steps, test split) 512 gave F1 0.921, Loc@3 0.872, SR 0.834
    against 0.894, 0.708, 0.773 at 128. The cost is only in the model's input projection."""
    model_path: str | None = None
    """Local folder of a sentence-transformers model (never downloaded)."""

    def __post_init__(self) -> None:
        _require(self.dim >= 8, "dim", f"must be >= 8, got {self.dim}")
        if self.kind == "sentence_transformers":
            _require(bool(self.model_path), "model_path", "is required for kind sentence_transformers")


@dataclass
class DataConfig:
    """The prepare stage: raw logs -> events, templates, bags (Ray Data)."""

    inputs: list[str] = field(default_factory=list)
    """Files, directories, globs or URIs (``file://``, ``s3://``, ...); ``.gz`` is read transparently."""
    format: str = "bgl"
    """A built-in format name (bgl, thunderbird, spirit, hdfs, zookeeper, generic) or a path to a format YAML."""
    output_dir: str = "outputs/prepared"
    """Where events/templates/bags parquet and the manifest are written (local path or URI)."""
    strict: bool = False
    """Fail on the first quarantined line (naming file, line and reason) instead of counting it."""
    read_block_bytes: int = 32 * 1024 * 1024
    """Uncompressed files are split into byte ranges of about this size so they are read in parallel."""
    chunk_lines: int = 65536
    """Lines per Arrow batch inside a read task."""
    parse_concurrency: int | None = None
    """Parallel parse tasks; ``None`` lets Ray Data decide from the cluster's CPUs."""
    window: WindowConfig = field(default_factory=WindowConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)

    def __post_init__(self) -> None:
        _require(self.read_block_bytes >= 1024, "read_block_bytes", "must be >= 1024")
        _require(self.chunk_lines >= 1, "chunk_lines", "must be >= 1")
        if self.parse_concurrency is not None:
            _require(self.parse_concurrency >= 1, "parse_concurrency", "must be >= 1")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file is an empty config)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping of stages")
    return data


def load_stage(cls: type, path: str | Path | None, overrides: list[str] | None = None,
               section: str | None = None) -> Any:
    """Load one stage's dataclass from ``path`` (optionally one ``section`` of it) plus overrides."""
    data = load_yaml(path) if path else {}
    if section is not None:
        data = data.get(section) or {}
        overrides = [o[len(section) + 1:] for o in (overrides or []) if o.startswith(section + ".")]
    apply_overrides(data, overrides or [])
    return from_dict(cls, data, prefix=f"{section}." if section else "")


# --------------------------------------------------------------------------------------------------
# The whole project config: one YAML file, one section per stage.
# --------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """The train stage (Ray Train TorchTrainer with DDP, or plain PyTorch)."""

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
    eval_batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """"cosine": the learning rate follows a half cosine from ``lr`` down to ``lr · lr_min_factor`` over
    the run's ``epochs × steps_per_epoch`` steps (a function of the step, so a resumed run continues
    on the same curve). "constant": ``lr`` throughout."""
    lr_min_factor: float = 0.05
    """Where the cosine schedule ends, as a fraction of ``lr``."""
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    """Max gradient norm; 0 disables clipping."""
    ema_decay: float = 0.0
    """0 = off. Otherwise validation, the kept checkpoint and the bundle use an exponential moving
    average of the weights (Polyak averaging) with this decay per step; training itself steps the raw
    weights. The decay is warmed up as ``min(ema_decay, (1 + t) / (10 + t))`` at step t, so early
    averages are not dominated by the initial weights. 0.995 averages over about 200 steps."""
    seed: int = 0
    steps_per_epoch: int | None = None
    """Steps per rank per epoch; ``None``: one pass over the training bags split across ranks."""
    balanced_sampling: bool = True
    """Draw positive and negative bags with equal probability (the paper's weighted sampler)."""
    num_workers: int = 1
    """Ray Train workers (DDP ranks)."""
    cpus_per_worker: float = 1
    use_gpu: bool | None = None
    """``None``: use GPUs when the cluster has them at start. On an autoscaling cluster that starts with
    no GPU nodes, set ``true`` so the GPU worker type is requested."""
    resources_per_worker: dict[str, float] | None = None
    """Extra custom resources per worker (e.g. ``{gpu_node: 0.01}`` to land on a node type)."""
    bf16: bool = True
    """bf16 autocast on GPU (ignored on CPU)."""
    max_failures: int = 1
    """Worker crashes tolerated; the run restarts from the last checkpoint."""
    num_to_keep: int = 2
    """Checkpoints kept (the best by ``val_select``, see ``select_sr_weight``)."""
    select_sr_weight: float = 0.5
    """Which epoch becomes the bundle: the one with the highest ``val_select = val_f1 + select_sr_weight ·
    val_sr``. Both use bag labels only (SR needs no line labels). Validation F1 alone (0) saturates early on
    easy data and then keeps the first epoch that detects, before localization has formed."""
    fault_injection_epoch: int | None = None
    """Testing only: after this epoch's checkpoint, the last rank exits once (see fault_injection_marker)."""
    fault_injection_marker: str | None = None
    """File that records the injected crash, so it happens once."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "num_workers", "num_to_keep"):
            _require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(0 <= self.lr_min_factor <= 1, "lr_min_factor", f"must be in [0, 1], got {self.lr_min_factor}")
        _require(self.max_failures >= 0, "max_failures", "must be >= 0")
        _require(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        _require(self.select_sr_weight >= 0, "select_sr_weight", f"must be >= 0, got {self.select_sr_weight}")
        _require(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.steps_per_epoch is not None:
            _require(self.steps_per_epoch >= 1, "steps_per_epoch", "must be >= 1")


@dataclass
class EvalConfig:
    """Evaluation: localization depth and the success-rate margin."""

    top_k: list[int] = field(default_factory=lambda: [1, 3, 5])
    """k values for Loc@k."""
    delta_sr: float = 0.1
    """δ_sr of eq. 6: a positive bag counts as a success when removing its top line lowers P by more."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds for mean ± std figures."""
    heatmaps: int = 4
    """Positive test bags drawn as attention heatmaps in the report."""

    def __post_init__(self) -> None:
        _require(all(k >= 1 for k in self.top_k) and bool(self.top_k), "top_k", "must be a non-empty list of k >= 1")
        _require(0 <= self.delta_sr < 1, "delta_sr", f"must be in [0, 1), got {self.delta_sr}")
        _require(bool(self.seeds), "seeds", "must name at least one seed")


def _model_config_type():
    from ray_logmilp.model.logmilp import ModelConfig
    return ModelConfig


def _loss_config_type():
    from ray_logmilp.model.losses import LossConfig
    return LossConfig


@dataclass
class ProjectConfig:
    """Top level of a config file. Each job validates the whole file, so a typo anywhere fails early."""

    data: DataConfig = field(default_factory=DataConfig)
    model: "ModelConfig" = field(default_factory=lambda: _model_config_type()())
    loss: "LossConfig" = field(default_factory=lambda: _loss_config_type()())
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_project(path: str | Path | None, overrides: list[str] | None = None) -> ProjectConfig:
    """Load a full config file plus dotted overrides (``data.window.size=128``)."""
    data = load_yaml(path) if path else {}
    apply_overrides(data, list(overrides or []))
    return from_dict(ProjectConfig, data)
