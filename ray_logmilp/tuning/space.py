"""The search-space file: its sections, how it is read, and how it is checked against the project config.

A search-space file (``configs/search/*.yaml``) has five sections, all optional but ``space``::

    objective: {metric: val_f1, sr_weight: 0.5}      # maximised: metric + sr_weight * val_sr
    search:    {num_samples: 32, seed: 0}            # Optuna TPE, seeded; the base config is trial 1
    scheduler: {kind: asha, grace_period: 3, reduction_factor: 3}
    resources: {cpu: 1, gpu: null}                   # per trial; null gpu: 0.25 when the cluster has GPUs
    space:                                           # dotted project-config keys
      loss.lambda_p: {type: loguniform, low: 0.001, high: 0.1}
      model.num_prototypes: {type: logint, low: 2, high: 64}

The sections are built by the config engine (:func:`~ray_logmilp.config.from_dict`), so every error is a
:class:`~ray_logmilp.config.ConfigError` naming the dotted key (``space.loss.lambda_p.low``), and an
unknown key gets a did-you-mean. :func:`validate_spec` then checks every searched key against
:class:`~ray_logmilp.config.ProjectConfig`: an unknown or untunable key, a bound that makes an invalid
config, or a float distribution on an integer field is an error too, all before any Ray work.
Nothing here imports Ray or torch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from ray_logmilp.config import (ConfigError, ProjectConfig, apply_overrides, from_dict, get_dotted, load_yaml,
                                require, set_dotted, to_dict)

log = logging.getLogger(__name__)

#: Validation metrics ``fit`` reports every epoch that may drive the search (bag labels only).
OBJECTIVE_METRICS = ("val_f1", "val_auc", "val_sr", "val_precision", "val_recall")
#: Keys of the ``train`` section that may be searched; ``model.*`` and ``loss.*`` may be searched freely.
TUNABLE_TRAIN_KEYS = ("lr", "batch_size", "steps_per_epoch")


# --------------------------------------------------------------------------------------------------
# The sections of a search-space file.
# --------------------------------------------------------------------------------------------------

@dataclass
class ParamSpec:
    """One searched parameter. Bounds are inclusive for every type."""

    type: Literal["uniform", "loguniform", "int", "logint", "choice"]
    """``uniform``/``loguniform``: floats; ``int``/``logint``: integers (``logint`` samples on a log scale);
    ``choice``: one of ``values``."""
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    """Candidates of a ``choice``."""

    def __post_init__(self) -> None:
        if self.type == "choice":
            require(bool(self.values), "values", "a choice needs a non-empty list of values")
            require(self.low is None and self.high is None, "low", "a choice takes values, not low/high")
            return
        require(self.values is None, "values", f"only a choice takes values (this is {self.type})")
        require(self.low is not None and self.high is not None, "low", f"{self.type} needs both low and high")
        require(self.low < self.high, "high", f"must be > low ({self.low}), got {self.high}")
        if self.type in ("loguniform", "logint"):
            require(self.low > 0, "low", f"must be > 0 for a log scale, got {self.low}")
        if self.is_integer:
            for name in ("low", "high"):
                v = getattr(self, name)
                require(float(v).is_integer(), name, f"must be a whole number for {self.type}, got {v}")
            self.low, self.high = int(self.low), int(self.high)

    @property
    def is_integer(self) -> bool:
        return self.type in ("int", "logint")

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.is_integer and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def ends(self) -> tuple[Any, Any]:
        """(low end, high end): the bounds, or a choice's first and last value."""
        return (self.values[0], self.values[-1]) if self.type == "choice" else (self.low, self.high)


@dataclass
class ObjectiveConfig:
    """What the sweep maximises, per epoch: ``metric + sr_weight * val_sr`` on the validation split."""

    metric: str = "val_f1"
    """A validation metric of ``fit``: val_f1 (default), val_auc, val_sr, val_precision, val_recall."""
    sr_weight: float = 0.5
    """Weight of the success rate (eq. 6, needs bag labels only) as a secondary term; 0 drops it. The
    default is the weight training uses to pick the epoch it keeps, so a trial's best epoch is the epoch
    its bundle would keep."""
    scope: Literal["best_epoch", "last_epoch"] = "best_epoch"
    """How a trial is scored when picking the best: its best epoch (what ``jobs/train.py`` keeps in the
    bundle) or its last one."""

    def __post_init__(self) -> None:
        require(self.metric in OBJECTIVE_METRICS, "metric",
                f"{self.metric!r} is not a validation metric the trainer reports; use one of "
                f"{', '.join(OBJECTIVE_METRICS)} (test and instance-level figures never reach the tuner)")
        require(self.sr_weight >= 0, "sr_weight", f"must be >= 0, got {self.sr_weight}")


@dataclass
class SearchConfig:
    """The searcher: Optuna's TPE sampler, seeded."""

    num_samples: int = 32
    """Trials in the sweep."""
    seed: int = 0
    """Seed of the TPE sampler (trials themselves all train with ``train.seed``)."""
    startup_trials: int | None = None
    """Random trials before TPE models the space; ``None``: a third of num_samples, within [2, 10]."""
    include_defaults: bool = True
    """Make trial 1 the base config's own values (a value outside the space moves to its nearest bound)."""
    max_concurrent: int | None = None
    """Trials at once; ``None``: as many as the cluster's CPUs/GPUs hold at ``resources`` per trial."""

    def __post_init__(self) -> None:
        require(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        if self.startup_trials is not None:
            require(self.startup_trials >= 1, "startup_trials", f"must be >= 1, got {self.startup_trials}")
        if self.max_concurrent is not None:
            require(self.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {self.max_concurrent}")

    @property
    def n_startup(self) -> int:
        return self.startup_trials or max(2, min(10, self.num_samples // 3))


@dataclass
class SchedulerConfig:
    """Early stopping on the per-epoch objective (ASHA; ``max_t`` is ``train.epochs``)."""

    kind: Literal["asha", "none"] = "asha"
    grace_period: int = 3
    """Epochs every trial runs before ASHA may stop it (LogMILP is still at chance after one epoch)."""
    reduction_factor: float = 3
    """ASHA keeps the top 1/reduction_factor of trials at each rung."""

    def __post_init__(self) -> None:
        require(self.grace_period >= 1, "grace_period", f"must be >= 1, got {self.grace_period}")
        require(self.reduction_factor > 1, "reduction_factor", f"must be > 1, got {self.reduction_factor}")


@dataclass
class ResourcesConfig:
    """What one trial asks of the cluster."""

    cpu: float = 1
    """CPUs per trial (also torch's thread count inside it)."""
    gpu: float | None = None
    """GPUs per trial; fractions share a GPU between small trials. ``None``: 0.25 when the cluster has
    GPUs, else 0."""
    reuse_actors: bool = True
    """Run the next trial in a finished trial's actor (no new process, torch already imported)."""

    def __post_init__(self) -> None:
        require(self.cpu > 0, "cpu", f"must be > 0, got {self.cpu}")
        if self.gpu is not None:
            require(self.gpu >= 0, "gpu", f"must be >= 0, got {self.gpu}")


@dataclass
class SweepSpec:
    """A search-space file: objective, searcher, scheduler, per-trial resources and the space itself."""

    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    space: dict[str, Any] = field(default_factory=dict)
    """Dotted project-config key -> :class:`ParamSpec` (a mapping in YAML)."""

    def __post_init__(self) -> None:
        require(isinstance(self.space, dict) and bool(self.space), "space",
                f"expected a non-empty mapping of dotted config keys to parameters, got {self.space!r}")
        params = {}
        for key, value in self.space.items():
            require(isinstance(key, str) and bool(key), "space", f"{key!r} is not a dotted config key")
            # The engine does not look inside dict-typed fields, so each parameter is built here; the
            # prefix keeps errors naming the whole flag (space.loss.lambda_p.low).
            params[key] = value if isinstance(value, ParamSpec) else from_dict(ParamSpec, value,
                                                                               prefix=f"space.{key}.")
        self.space = params


#: The sections of a search-space file: an override under one of them is a search-space override.
SPEC_SECTIONS = tuple(f.name for f in dataclasses.fields(SweepSpec))


def parse_search_space(data: dict[str, Any], source: str = "search space") -> SweepSpec:
    """Build a :class:`SweepSpec` from a mapping; errors name the dotted key (``space.loss.lambda_p.low``)."""
    try:
        return from_dict(SweepSpec, data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_search_space(path: str | os.PathLike, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a search-space YAML plus dotted overrides: ``search.num_samples=8``,
    ``space.loss.lambda_p.high=0.5`` (a field of a searched key), ``space.loss.delta_c={type: uniform,
    low: 0.1, high: 0.9}`` (add a key) or ``space.train.lr=null`` (drop one)."""
    data = load_yaml(path)
    rest = []
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        dotted = dotted.strip().lstrip("-")
        if not dotted.startswith("space."):
            rest.append(item)
            continue
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        space = data.setdefault("space", {})
        if not isinstance(space, dict):
            raise ConfigError(f"{path}: space: expected a mapping of dotted config keys")
        _override_space(space, dotted[len("space."):], raw)
    return parse_search_space(apply_overrides(data, rest), source=str(path))


def _override_space(space: dict[str, Any], key: str, raw: str) -> None:
    """Apply ``space.<key>=<raw>`` to the flat space: searched keys hold dots, so the longest searched key
    that ``key`` extends owns it (``loss.lambda_p`` owns ``loss.lambda_p.high``)."""
    owner = next((k for k in sorted(space, key=len, reverse=True) if key.startswith(f"{k}.")), None)
    if owner is not None and isinstance(space[owner], dict):
        apply_overrides(space[owner], [f"{key[len(owner) + 1:]}={raw}"])
        return
    # A whole parameter: parsed like any override value, into a holder, as its key is not a path.
    value = apply_overrides({}, [f"param={raw}"])["param"]
    if value is None:
        space.pop(key, None)
    else:
        space[key] = value


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(project-config overrides, search-space overrides): the search file's sections (objective, search,
    scheduler, resources, space) are not project-config sections, so the first dotted part decides."""
    project, search = [], []
    for item in items:
        (search if item.lstrip("-").split(".", 1)[0] in SPEC_SECTIONS else project).append(item)
    return project, search


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """The spec as plain data that :func:`parse_search_space` reads back (unset parameter fields left out)."""
    out = to_dict(spec)
    out["space"] = {k: {kk: vv for kk, vv in p.items() if vv is not None} for k, p in out["space"].items()}
    return out


# --------------------------------------------------------------------------------------------------
# Checking the space against the project config, and applying sampled values.
# --------------------------------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """numpy scalars (from samplers) -> Python scalars, so configs and YAML stay plain."""
    return value.item() if isinstance(value, np.generic) else value


def check_key(cfg: ProjectConfig, key: str) -> None:
    """``key`` names a tunable leaf field of the project config, or ConfigError naming it."""
    try:
        # Looked up under "space" so that an unknown key's did-you-mean names the flag as written.
        value = get_dotted({"space": cfg}, f"space.{key}")
    except ConfigError as exc:
        raise ConfigError(f"space.{key}: {exc}") from None
    if dataclasses.is_dataclass(value):
        raise ConfigError(f"space.{key}: is a section, not a value; search one of its fields")
    parts = key.split(".")
    tunable = parts[0] in ("model", "loss") or \
              (parts[0] == "train" and len(parts) == 2 and parts[1] in TUNABLE_TRAIN_KEYS)
    if not tunable:
        raise ConfigError(
            f"space.{key}: cannot be searched: a sweep trains every trial on one prepared corpus with one "
            f"epoch budget and seed; searchable keys are model.*, loss.* and "
            f"train.{{{', '.join(TUNABLE_TRAIN_KEYS)}}}")


def apply_params(base: dict[str, Any] | ProjectConfig, params: dict[str, Any]) -> ProjectConfig:
    """The project config ``base`` with dotted ``params`` set (validated like any config file)."""
    data = to_dict(base)                    # a fresh tree: ``base`` is left as it is
    for key, value in params.items():
        set_dotted(data, key, plain(value))
    return from_dict(ProjectConfig, data)


def _probe_values(p: ParamSpec) -> list[Any]:
    values = list(p.values) if p.type == "choice" else [p.low, p.high]
    if p.type in ("uniform", "loguniform"):
        # An interior, non-integral float: a float distribution on an integer field fails here.
        values.append(p.low + (p.high - p.low) * 0.3713 if p.type == "uniform"
                      else math.exp(math.log(p.low) + (math.log(p.high) - math.log(p.low)) * 0.3713))
    return values


def validate_spec(spec: SweepSpec, cfg: ProjectConfig) -> None:
    """Everything that can be checked before Ray starts; ConfigError names the bad key."""
    for key, p in spec.space.items():
        check_key(cfg, key)
        for value in _probe_values(p):
            try:
                apply_params(cfg, {key: value})
            except ConfigError as exc:
                current = get_dotted(cfg, key)
                hint = ""
                if isinstance(current, int) and not isinstance(current, bool) and p.type in ("uniform", "loguniform"):
                    hint = f" ({key} is an integer: use type int or logint)"
                raise ConfigError(f"space.{key}: {p.type} value {value!r} gives an invalid config: {exc}{hint}") \
                    from None
    # All bounds at once catches interactions (e.g. hidden_dim vs encoder_heads).
    for end in (0, 1):
        try:
            apply_params(cfg, {k: p.ends()[end] for k, p in spec.space.items()})
        except ConfigError as exc:
            raise ConfigError(f"space: every parameter at its {('low', 'high')[end]} end together gives an "
                              f"invalid config: {exc}") from None
    if spec.scheduler.kind == "asha":
        require(spec.scheduler.grace_period <= cfg.train.epochs, "scheduler.grace_period",
                f"{spec.scheduler.grace_period} is more than train.epochs ({cfg.train.epochs}): "
                f"ASHA could stop nothing")


def default_point(spec: SweepSpec, cfg: ProjectConfig) -> dict[str, Any]:
    """Trial 1: the base config's own values of the searched keys, one for *every* key.

    A base value outside its range is moved to the nearest bound (a choice that lacks it takes its first
    value), and logged. The point must be complete: Ray's OptunaSearch rejects a warm-start point that
    names fewer keys than the space ("Dim of point ... do not match"), which is what a sweep started from
    a tuned ``best.yaml`` (values from a wider space) ran into.
    """
    point = {}
    for key, p in spec.space.items():
        value = get_dotted(cfg, key)
        if p.contains(value):
            point[key] = value
            continue
        if p.type == "choice":
            inside = p.values[0]
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            inside = p.low
        else:
            inside = min(max(value, p.low), p.high)
            inside = int(round(inside)) if p.is_integer else float(inside)
        log.info("base value %s=%r lies outside the searched space; trial 1 uses %r", key, value, inside)
        point[key] = inside
    return point
