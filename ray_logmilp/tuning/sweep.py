"""Hyperparameter sweeps: Ray Tune + Optuna (TPE) + ASHA over the loss weights and the prototype count.

The trainable is the library's :func:`~ray_logmilp.train.fit` itself, run in one Tune trial actor with a
:class:`TuneContext` (no Ray Train controller per trial, so a trial starts in about the time an actor
does; actors are reused between trials). ``fit`` reports every epoch, so ASHA can stop poor trials early.

A search-space file (``configs/search/*.yaml``) has five sections, all optional but ``space``::

    objective: {metric: val_f1, sr_weight: 0.5}      # maximised: metric + sr_weight * val_sr
    search:    {num_samples: 32, seed: 0}            # Optuna TPE, seeded; the base config is trial 1
    scheduler: {kind: asha, grace_period: 3, reduction_factor: 3}
    resources: {cpu: 1, gpu: null}                   # per trial; null gpu: 0.25 when the cluster has GPUs
    space:                                           # dotted project-config keys
      loss.lambda_p: {type: loguniform, low: 0.001, high: 0.1}
      model.num_prototypes: {type: logint, low: 2, high: 64}

Every key is checked against :class:`~ray_logmilp.config.ProjectConfig` before any Ray work: an unknown
or untunable key, a bound that makes an invalid config, or a float distribution on an integer field is
a :class:`~ray_logmilp.config.ConfigError` that names the key (``space.loss.lambda_x``).

Only bag labels reach the tuner: trials get the train and validation splits with their instance labels
blanked, and the objective may only name validation metrics (``val_*``), never a test figure.

Outputs, under ``<train.storage_path>/<name>/results/``: ``trials.parquet``/``trials.csv`` (one row per
trial), ``epochs.parquet`` (every reported epoch), ``best.yaml`` (a full project config that
``jobs/train.py --config`` accepts unchanged), ``summary.json``, ``history.png`` and ``importance.png``.
Ray imports stay inside functions: importing this module starts nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from ray_logmilp.config import ConfigError, ProjectConfig, from_dict, load_yaml, to_dict

log = logging.getLogger(__name__)

#: Validation metrics ``fit`` reports every epoch that may drive the search (bag labels only).
OBJECTIVE_METRICS = ("val_f1", "val_auc", "val_sr", "val_precision", "val_recall")
#: Keys of the ``train`` section that may be searched; ``model.*`` and ``loss.*`` may be searched freely
#: (but ``model.input_dim``, which comes from the data).
TUNABLE_TRAIN_KEYS = ("lr", "batch_size", "steps_per_epoch")
UNTUNABLE_KEYS = ("model.input_dim",)
OBJECTIVE = "objective"          # name of the reported scalar Tune optimises
EPOCHS_DONE = "epochs_done"      # ASHA's time attribute (1-based epochs, survives restores)
RESULTS_DIR = "results"
TUNE_STATE_FILE = "tune_state.json"


# --------------------------------------------------------------------------------------------------
# The search-space file.
# --------------------------------------------------------------------------------------------------

def _need(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {message}")


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
            _need(bool(self.values), "values", "a choice needs a non-empty list of values")
            _need(self.low is None and self.high is None, "low", "a choice takes values, not low/high")
            return
        _need(self.values is None, "values", f"only a choice takes values (this is {self.type})")
        _need(self.low is not None and self.high is not None, "low", f"{self.type} needs both low and high")
        _need(self.low < self.high, "high", f"must be > low ({self.low}), got {self.high}")
        if self.type in ("loguniform", "logint"):
            _need(self.low > 0, "low", f"must be > 0 for a log scale, got {self.low}")
        if self.type in ("int", "logint"):
            for name in ("low", "high"):
                v = getattr(self, name)
                _need(float(v).is_integer(), name, f"must be a whole number for {self.type}, got {v}")
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


@dataclass
class ObjectiveConfig:
    """What the sweep maximises, per epoch: ``metric + sr_weight * val_sr`` on the validation split."""

    metric: str = "val_f1"
    """A validation metric of ``fit``: val_f1 (default), val_auc, val_sr, val_precision, val_recall."""
    sr_weight: float = 0.5
    """Weight of the success rate (eq. 6, needs bag labels only) as a secondary term; 0 drops it. The
    default equals ``train.select_sr_weight``, so a trial's best epoch is the epoch its bundle would keep."""
    scope: Literal["best_epoch", "last_epoch"] = "best_epoch"
    """How a trial is scored when picking the best: its best epoch (what ``jobs/train.py`` keeps in the
    bundle) or its last one."""

    def __post_init__(self) -> None:
        _need(self.metric in OBJECTIVE_METRICS, "metric",
              f"{self.metric!r} is not a validation metric the trainer reports; use one of "
              f"{', '.join(OBJECTIVE_METRICS)} (test and instance-level figures never reach the tuner)")
        _need(self.sr_weight >= 0, "sr_weight", f"must be >= 0, got {self.sr_weight}")


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
        _need(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        if self.startup_trials is not None:
            _need(self.startup_trials >= 1, "startup_trials", f"must be >= 1, got {self.startup_trials}")
        if self.max_concurrent is not None:
            _need(self.max_concurrent >= 1, "max_concurrent", f"must be >= 1, got {self.max_concurrent}")

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
        _need(self.grace_period >= 1, "grace_period", f"must be >= 1, got {self.grace_period}")
        _need(self.reduction_factor > 1, "reduction_factor", f"must be > 1, got {self.reduction_factor}")


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
        _need(self.cpu > 0, "cpu", f"must be > 0, got {self.cpu}")
        if self.gpu is not None:
            _need(self.gpu >= 0, "gpu", f"must be >= 0, got {self.gpu}")


@dataclass
class SweepSpec:
    """A search-space file: objective, searcher, scheduler, per-trial resources and the space itself."""

    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    space: dict[str, Any] = field(default_factory=dict)
    """Dotted project-config key -> :class:`ParamSpec` (a mapping in YAML)."""


def parse_search_space(data: dict[str, Any], source: str = "search space") -> SweepSpec:
    """Build a :class:`SweepSpec` from a mapping; errors name the dotted key (``space.loss.lambda_p.low``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    data = dict(data)
    raw_space = data.pop("space", None)
    if raw_space is None:
        raise ConfigError(f"{source}: space: missing; give at least one parameter to search")
    if not isinstance(raw_space, dict) or not raw_space:
        raise ConfigError(f"{source}: space: expected a non-empty mapping of dotted config keys, got {raw_space!r}")
    try:
        spec = from_dict(SweepSpec, data)
        params: dict[str, ParamSpec] = {}
        for key, value in raw_space.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"space: {key!r} is not a dotted config key")
            params[key] = value if isinstance(value, ParamSpec) else from_dict(ParamSpec, value,
                                                                               prefix=f"space.{key}.")
        spec.space = params
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return spec


def load_search_space(path: str | os.PathLike, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a search-space YAML plus dotted overrides: ``search.num_samples=8``,
    ``space.loss.lambda_p.high=0.5`` (a field of a searched key), ``space.loss.delta_c={type: uniform,
    low: 0.1, high: 0.9}`` (add a key) or ``space.train.lr=null`` (drop one)."""
    import yaml

    from ray_logmilp.config import apply_overrides

    data = load_yaml(path)
    rest = []
    for item in overrides:
        dotted, _, raw = item.partition("=")
        if not dotted.strip().lstrip("-").startswith("space."):
            rest.append(item)
            continue
        if not _:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key = dotted.strip().lstrip("-")[len("space."):]
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override space.{key}: cannot parse value {raw!r}: {exc}") from None
        space = data.setdefault("space", {})
        if not isinstance(space, dict):
            raise ConfigError(f"{path}: space: expected a mapping of dotted config keys")
        owner = next((k for k in sorted(space, key=len, reverse=True) if key.startswith(f"{k}.")), None)
        if owner is not None and isinstance(space[owner], dict):
            space[owner][key[len(owner) + 1:]] = value
        elif value is None:
            space.pop(key, None)
        else:
            space[key] = value
    data = apply_overrides(data, rest)
    return parse_search_space(data, source=str(path))


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    out = to_dict(spec)
    out["space"] = {k: {kk: vv for kk, vv in to_dict(v).items() if vv is not None} for k, v in spec.space.items()}
    return out


# --------------------------------------------------------------------------------------------------
# Checking the space against the project config, and applying sampled values.
# --------------------------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """numpy scalars (from samplers) -> Python scalars, so configs and YAML stay plain."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _get_dotted(cfg: Any, key: str) -> Any:
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def check_key(cfg: ProjectConfig, key: str) -> None:
    """``key`` names a tunable leaf field of the project config, or ConfigError naming it."""
    parts = key.split(".")
    obj: Any = cfg
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the project config"
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"space.{key}: '{'.'.join(parts[:i])}' is a value, not a section")
        names = [f.name for f in dataclasses.fields(obj)]
        if part not in names:
            raise ConfigError(f"space.{key}: unknown config key; {where} has: {', '.join(names)}")
        obj = getattr(obj, part)
    if dataclasses.is_dataclass(obj):
        raise ConfigError(f"space.{key}: is a section, not a value; search one of its fields")
    section = parts[0]
    tunable = (section in ("model", "loss") and key not in UNTUNABLE_KEYS) or \
              (section == "train" and len(parts) == 2 and parts[1] in TUNABLE_TRAIN_KEYS)
    if not tunable:
        raise ConfigError(
            f"space.{key}: cannot be searched: a sweep trains every trial on one prepared corpus with one "
            f"epoch budget and seed; searchable keys are model.* (but input_dim), loss.* and "
            f"train.{{{', '.join(TUNABLE_TRAIN_KEYS)}}}")


def apply_params(base: dict[str, Any] | ProjectConfig, params: dict[str, Any]) -> ProjectConfig:
    """The project config ``base`` with dotted ``params`` set (validated like any config file)."""
    data = copy.deepcopy(to_dict(base) if isinstance(base, ProjectConfig) else base)
    for key, value in params.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _plain(value)
    return from_dict(ProjectConfig, data)


def _probe_values(p: ParamSpec) -> list[Any]:
    if p.type == "choice":
        return list(p.values)
    values: list[Any] = [p.low, p.high]
    if not p.is_integer:
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
                current = _get_dotted(cfg, key)
                hint = ""
                if isinstance(current, int) and not isinstance(current, bool) and not p.is_integer \
                        and p.type != "choice":
                    hint = f" ({key} is an integer: use type int or logint)"
                raise ConfigError(f"space.{key}: {p.type} value {value!r} gives an invalid config: {exc}{hint}") from None
    # All bounds at once catches interactions (e.g. hidden_dim vs encoder_heads).
    for end in ("low", "high"):
        params = {k: (p.values[0] if p.type == "choice" and end == "low" else p.values[-1] if p.type == "choice"
                      else getattr(p, end)) for k, p in spec.space.items()}
        try:
            apply_params(cfg, params)
        except ConfigError as exc:
            raise ConfigError(f"space: every parameter at its {end} end together gives an invalid config: {exc}") from None
    if spec.scheduler.kind == "asha":
        _need(spec.scheduler.grace_period <= cfg.train.epochs, "scheduler.grace_period",
              f"{spec.scheduler.grace_period} is more than train.epochs ({cfg.train.epochs}): ASHA could stop nothing")


def default_point(spec: SweepSpec, cfg: ProjectConfig) -> dict[str, Any]:
    """Trial 1: the base config's own values of the searched keys, one for *every* key.

    A base value outside its range is moved to the nearest bound (a choice that lacks it takes its first
    value), and logged. The point must be complete: Ray's OptunaSearch rejects a warm-start point that
    names fewer keys than the space ("Dim of point ... do not match"), which is what a sweep started from
    a tuned ``best.yaml`` (values from a wider space) ran into.
    """
    point = {}
    for key, p in spec.space.items():
        value = _get_dotted(cfg, key)
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


def build_param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune search domains for the space (flat, dotted keys). Integer upper bounds are inclusive."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, p in spec.space.items():
        if p.type == "uniform":
            out[key] = tune.uniform(p.low, p.high)
        elif p.type == "loguniform":
            out[key] = tune.loguniform(p.low, p.high)
        elif p.type == "int":
            out[key] = tune.randint(p.low, p.high + 1)       # Tune's upper bound is exclusive
        elif p.type == "logint":
            out[key] = tune.lograndint(p.low, p.high + 1)
        else:
            out[key] = tune.choice(list(p.values))
    return out


def objective_value(metrics: dict[str, Any], objective: ObjectiveConfig) -> float:
    """``metric + sr_weight * val_sr``; an undefined SR (no positive validation bag) counts as 0."""
    value = float(metrics.get(objective.metric, float("nan")))
    value = 0.0 if math.isnan(value) else value
    if objective.sr_weight:
        sr = float(metrics.get("val_sr", float("nan")))
        value += objective.sr_weight * (0.0 if math.isnan(sr) else sr)
    return value


def plan_resources(spec: SweepSpec, cluster: dict[str, float]) -> tuple[float, float, int]:
    """(cpus per trial, gpus per trial, concurrent trials) for a cluster's total resources."""
    cpu = float(spec.resources.cpu)
    has_gpu = float(cluster.get("GPU", 0)) > 0
    gpu = float(spec.resources.gpu) if spec.resources.gpu is not None else (0.25 if has_gpu else 0.0)
    if spec.search.max_concurrent:
        return cpu, gpu, spec.search.max_concurrent
    slots = int(float(cluster.get("CPU", 1)) // cpu)
    if gpu > 0:
        slots = min(slots, int(float(cluster.get("GPU", 0)) / gpu + 1e-9))
    return cpu, gpu, max(1, min(slots, spec.search.num_samples))


# --------------------------------------------------------------------------------------------------
# The trainable: fit() inside a Tune trial.
# --------------------------------------------------------------------------------------------------

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

    started_at = time.time()
    cfg = apply_params(base, params)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    # Object-store arrays are read-only; the embedding table is small, give torch a writable copy.
    data = dataclasses.replace(data, embeddings=np.array(data.embeddings, copy=True))
    with tempfile.TemporaryDirectory(prefix="logmilp-trial-") as scratch:
        ctx = TuneContext(from_dict(ObjectiveConfig, objective), scratch, started_at)
        fit(cfg, data, ctx, scratch_dir=scratch)


# --------------------------------------------------------------------------------------------------
# Trial wall clock (driver side).
# --------------------------------------------------------------------------------------------------

_CLOCK_EVENTS: dict[str, list[dict[str, Any]]] = {}


def record_clock_event(key: str, trial_id: str, event: str) -> None:
    _CLOCK_EVENTS.setdefault(key, []).append({"trial_id": trial_id, "event": event, "time": time.time()})


def _trial_clock(key: str):
    """A Tune callback recording when each trial starts and ends, into ``_CLOCK_EVENTS[key]``.

    Tune pickles the run config (callbacks included) and unpickles it on restore; the callback holds only
    the key, so the restored copy records into the same driver-side list.
    """
    from ray import tune

    class TrialClock(tune.Callback):
        def __init__(self, key: str):
            self.key = key

        def _add(self, trial, event: str) -> None:
            # Looked up at call time: a by-value unpickled copy of this class must still write into the
            # driver's module-level list.
            from ray_logmilp.tuning.sweep import record_clock_event

            record_clock_event(self.key, trial.trial_id, event)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._add(trial, "start")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._add(trial, "complete")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._add(trial, "error")

    return TrialClock(key)


def trial_walls(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per trial: wall seconds summed over start→end segments, segment count, how it ended."""
    out: dict[str, dict[str, Any]] = {}
    open_at: dict[str, float] = {}
    for e in sorted(events, key=lambda e: e["time"]):
        rec = out.setdefault(e["trial_id"], {"wall_seconds": 0.0, "segments": 0, "ended": None})
        if e["event"] == "start":
            open_at[e["trial_id"]] = e["time"]
        elif e["trial_id"] in open_at:
            rec["wall_seconds"] += e["time"] - open_at.pop(e["trial_id"])
            rec["segments"] += 1
            rec["ended"] = e["event"]
        else:
            rec["ended"] = e["event"]
    return out


# --------------------------------------------------------------------------------------------------
# Results: tables, summary, best YAML, plots.
# --------------------------------------------------------------------------------------------------

def summarise(trials, *, max_epochs: int, concurrency: int | None = None,
              loop_seconds: float | None = None) -> dict[str, Any]:
    """Sweep figures from the per-trial table: early stops, compute saved, per-trial overhead."""
    done = trials[trials["status"].isin(["completed", "stopped_early"])]
    n = int(len(done))
    stopped = int((done["status"] == "stopped_early").sum())
    epochs_run = int(done["epochs"].sum())
    budget = n * max_epochs
    out: dict[str, Any] = {
        "trials": int(len(trials)), "finished": n, "stopped_early": stopped,
        "stopped_early_fraction": stopped / n if n else float("nan"),
        "epochs_run": epochs_run, "epochs_budget": budget,
        "compute_saved_fraction": 1 - epochs_run / budget if budget else float("nan"),
    }
    per_epoch = (done["fit_seconds"] / done["epochs"]).dropna()
    if len(per_epoch):
        out["fit_seconds_per_epoch"] = float(per_epoch.mean())
        out["compute_saved_seconds"] = float((budget - epochs_run) * per_epoch.mean())
    out["fit_seconds_total"] = float(done["fit_seconds"].sum())
    clean = done[(done["segments"] == 1) & done["overhead_seconds"].notna()]
    if len(clean):
        ov = clean["overhead_seconds"]
        out["overhead_seconds"] = {"mean": float(ov.mean()), "median": float(ov.median()), "max": float(ov.max()),
                                   "trials": int(len(ov)),
                                   "fraction_of_wall": float(ov.sum() / clean["wall_seconds"].sum())}
        for label, mask in (("fresh_actor", ~clean["actor_reused"]), ("reused_actor", clean["actor_reused"])):
            if mask.any():
                out["overhead_seconds"][f"mean_{label}"] = float(ov[mask].mean())
    if concurrency and loop_seconds and n:
        # Everything a trial slot spent outside fit: actor start, scheduling, reporting, idle tail.
        out["slot_overhead_seconds_per_trial"] = float((concurrency * loop_seconds - out["fit_seconds_total"]) / n)
    return out


def _trial_number(path: str | None, trial_id: str) -> int:
    m = re.search(rf"{re.escape(trial_id)}_(\d+)_", os.path.basename(str(path or "")))
    return int(m.group(1)) if m else 10**9


def build_tables(results, spec: SweepSpec, *, max_epochs: int, walls: dict[str, dict[str, Any]],
                 statuses: dict[str, str]):
    """(per-trial table, per-epoch table) from a Tune ResultGrid and the persisted trial statuses."""
    import pandas as pd

    rows, epochs = [], []
    scope_best = spec.objective.scope == "best_epoch"
    for result in results:
        hist = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id") or os.path.basename(str(result.path))
        params = {k: _plain(result.config.get(k)) for k in spec.space}
        if hist is None or len(hist) == 0 or OBJECTIVE not in hist:
            rows.append({"trial_id": trial_id, "number": _trial_number(result.path, trial_id),
                         "status": "error" if result.error else "unfinished", "epochs": 0, **params,
                         "trial_dir": str(result.path)})
            continue
        hist = hist.sort_values(EPOCHS_DONE).drop_duplicates(EPOCHS_DONE, keep="last")
        pick = hist.loc[hist[OBJECTIVE].idxmax()] if scope_best else hist.iloc[-1]
        last = hist.iloc[-1]
        n_ep = int(last[EPOCHS_DONE])
        clock = walls.get(trial_id, {})
        if result.error or statuses.get(trial_id) == "ERROR":
            status = "error"
        elif statuses.get(trial_id) == "TERMINATED":
            status = "completed" if n_ep >= max_epochs else "stopped_early"
        else:
            status = "unfinished"
        wall = clock.get("wall_seconds") if clock.get("segments") else None
        fit_s = float(last.get("fit_seconds", float("nan")))
        rows.append({
            "trial_id": trial_id, "number": _trial_number(result.path, trial_id), "status": status,
            "epochs": n_ep, **params,
            OBJECTIVE: float(pick[OBJECTIVE]), "best_epoch": int(pick[EPOCHS_DONE]),
            "val_f1": float(pick.get("val_f1", float("nan"))), "val_sr": float(pick.get("val_sr", float("nan"))),
            "val_auc": float(pick.get("val_auc", float("nan"))),
            "last_objective": float(last[OBJECTIVE]),
            "fit_seconds": fit_s, "wall_seconds": wall, "segments": int(clock.get("segments", 0)),
            "overhead_seconds": (wall - fit_s) if wall is not None else None,
            "actor_reused": _ran_after_another(results, result),
            "trial_started_at": float(last.get("trial_started_at", float("nan"))),
            "trial_dir": str(result.path),
        })
        keep = [c for c in hist.columns if c in (EPOCHS_DONE, OBJECTIVE, "fit_seconds", "timestamp")
                or c.startswith("val_") or c.startswith("train_")]
        part = hist[keep].copy()
        part.insert(0, "trial_id", trial_id)
        epochs.append(part)
    table = pd.DataFrame(rows)
    for col in (OBJECTIVE, "best_epoch", "val_f1", "val_sr", "val_auc", "last_objective", "fit_seconds",
                "wall_seconds", "segments", "overhead_seconds", "actor_reused", "trial_started_at"):
        if col not in table:
            table[col] = np.nan
    table["actor_reused"] = table["actor_reused"].fillna(False).astype(bool)
    table["overhead_seconds"] = table["overhead_seconds"].astype(float)
    table["wall_seconds"] = table["wall_seconds"].astype(float)
    if len(table):
        table = table.sort_values([OBJECTIVE, "val_sr", "number"], ascending=[False, False, True],
                                  na_position="last").reset_index(drop=True)
    epoch_table = pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame()
    return table, epoch_table


def _ran_after_another(results, result) -> bool:
    """Whether this trial ran in an actor (same pid) that had run an earlier trial."""
    def first(res):
        h = res.metrics_dataframe
        if h is None or not len(h) or "pid" not in h or "trial_started_at" not in h:
            return None, None
        return int(h["pid"].iloc[0]), float(h["trial_started_at"].iloc[0])

    pid, started = first(result)
    if pid is None:
        return False
    for other in results:
        if other is not result:
            o_pid, o_started = first(other)
            if o_pid == pid and o_started is not None and o_started < started:
                return True
    return False


def best_config_yaml(base: dict[str, Any], params: dict[str, Any], path: str, comment: Sequence[str] = ()) -> str:
    """YAML text of the full project config with ``params`` applied, headed by the command that runs it."""
    import yaml

    cfg = apply_params(base, params)
    header = [f"# python jobs/train.py --config {path}", *[f"# {c}" for c in comment]]
    return "\n".join(header) + "\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def plot_history(table, objective: ObjectiveConfig) -> bytes:
    """Optimization history: each trial's objective in trial order, and the running best."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot(111)
    t = table[table[OBJECTIVE].notna()].sort_values("number") if OBJECTIVE in table else table.iloc[0:0]
    x = np.arange(1, len(t) + 1)
    styles = {"completed": ("o", "tab:blue", "ran every epoch"), "stopped_early": ("x", "tab:orange", "stopped by ASHA"),
              "unfinished": ("s", "tab:gray", "unfinished"), "error": ("v", "tab:red", "error")}
    for status, (marker, color, label) in styles.items():
        mask = (t["status"] == status).to_numpy()
        if mask.any():
            ax.scatter(x[mask], t[OBJECTIVE].to_numpy()[mask], marker=marker, color=color, label=label)
    if len(t):
        ax.step(x, np.maximum.accumulate(t[OBJECTIVE].to_numpy()), where="post", color="black", label="best so far")
    name = objective.metric + (f" + {objective.sr_weight:g}·val_sr" if objective.sr_weight else "")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"objective ({name})")
    ax.set_title("Optimization history")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def param_importances(table, spec: SweepSpec) -> dict[str, float]:
    """Optuna's parameter importances over the finished trials (empty when there are too few)."""
    import optuna

    done = table[table["status"].isin(["completed", "stopped_early"]) & table[OBJECTIVE].notna()] \
        if OBJECTIVE in table else table.iloc[0:0]
    if len(done) < 3:
        return {}
    dists = {}
    for key, p in spec.space.items():
        if p.type == "choice":
            dists[key] = optuna.distributions.CategoricalDistribution(list(p.values))
        elif p.is_integer:
            dists[key] = optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.type == "logint")
        else:
            dists[key] = optuna.distributions.FloatDistribution(float(p.low), float(p.high), log=p.type == "loguniform")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for _, row in done.iterrows():
        study.add_trial(optuna.trial.create_trial(
            params={k: _plain(row[k]) for k in spec.space}, distributions=dists, value=float(row[OBJECTIVE])))
    for evaluator in (None, "fanova"):
        try:
            if evaluator == "fanova":
                ev = optuna.importance.FanovaImportanceEvaluator(seed=0)
                return dict(optuna.importance.get_param_importances(study, evaluator=ev))
            return dict(optuna.importance.get_param_importances(study))
        except Exception as exc:  # too few distinct values, a missing optional dependency, ...
            log.info("parameter importance (%s) unavailable: %s", evaluator or "default", exc)
    return {}


def plot_importance(importances: dict[str, float]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.5 + 0.45 * max(1, len(importances))))
    ax = fig.add_subplot(111)
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance (Optuna, normalised)")
    else:
        ax.text(0.5, 0.5, "too few finished trials for parameter importance", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title("Parameter importance")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# run_sweep
# --------------------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    name: str
    experiment_path: str
    results_dir: str
    complete: bool
    """False when the sweep was interrupted; run it again with ``resume=True`` to finish it."""
    best: dict[str, Any] | None
    """Best trial: trial_id, params, objective, val_f1, val_sr, best_epoch."""
    best_config_path: str | None
    summary: dict[str, Any]
    trials: Any
    """pandas DataFrame, one row per trial (also written as trials.parquet / trials.csv)."""


def default_sweep_name(cfg_path: str | None = None) -> str:
    stem = Path(cfg_path).stem if cfg_path else "sweep"
    return f"sweep-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_sweep(cfg: ProjectConfig, spec: SweepSpec, *, name: str | None = None, resume: bool = False,
              callbacks: Sequence[Any] = (), verbose: int = 1) -> SweepResult:
    """Run (or resume) a sweep on the connected Ray cluster and write its results.

    ``resume=True`` continues ``<train.storage_path>/<name>`` with ``Tuner.restore``: finished trials are
    kept as they are, unfinished ones continue from their last epoch checkpoint, missing ones are sampled.
    The stored config and space of that sweep are used (the ones passed in only locate it), and so are
    its callbacks: ``callbacks`` (extra Tune callbacks) apply to a new sweep only.
    """
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from ray_logmilp import storage
    from ray_logmilp.ingest.prepared import load_prepared

    if not resume:
        validate_spec(spec, cfg)
    name = name or default_sweep_name()
    fs, storage_root = storage.resolve_dir(cfg.train.storage_path, create=True)
    storage_uri = storage.uri(fs, storage_root)
    experiment = f"{storage_root}/{name}"
    experiment_uri = storage.uri(fs, experiment)
    results_dir = f"{experiment}/{RESULTS_DIR}"
    spec_file = f"{results_dir}/sweep_spec.json"

    if resume:
        if not tune.Tuner.can_restore(experiment_uri):
            raise ConfigError(f"--resume: no sweep to resume at {experiment_uri}")
        stored = json.loads(storage.read_text(fs, spec_file))
        if stored["base"] != to_dict(cfg) or stored["spec"] != spec_to_dict(spec):
            log.warning("resuming %s with the config and search space it started with (the ones given differ)", name)
        base = stored["base"]
        spec = parse_search_space(stored["spec"], source=spec_file)
        cfg = from_dict(ProjectConfig, base)
    else:
        if storage.exists(fs, experiment):
            raise ConfigError(f"a sweep named {name!r} already exists under {storage_uri}: resume it or pick a new name")
        base = to_dict(cfg)

    if not ray.is_initialized():
        ray.init()
    # A snapshot of the experiment state follows every checkpoint here by design; Tune's warning about
    # that is noise for epoch-level trials.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cpu, gpu, concurrency = plan_resources(spec, ray.cluster_resources())
    prepared_dir = cfg.train.prepared_dir or cfg.data.output_dir
    data = tuning_data(load_prepared(prepared_dir, splits=("train", "val")))
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=base, objective=to_dict(spec.objective), data=data),
        {"cpu": cpu, "gpu": gpu})
    clock_key = experiment_uri

    if resume:
        tuner = tune.Tuner.restore(experiment_uri, trainable=trainable, resume_errored=True)
    else:
        fs.create_dir(results_dir, recursive=True)
        storage.write_text(fs, spec_file, json.dumps({"base": base, "spec": spec_to_dict(spec)}, indent=1))
        # TPE, seeded; the sampler carries the seed (OptunaSearch ignores its own when given a sampler).
        sampler = optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=spec.search.n_startup)
        point = default_point(spec, cfg) if spec.search.include_defaults else {}
        searcher = OptunaSearch(sampler=sampler, points_to_evaluate=[point] if point else None)
        if spec.scheduler.kind == "asha":
            scheduler = ASHAScheduler(time_attr=EPOCHS_DONE, max_t=cfg.train.epochs,
                                      grace_period=spec.scheduler.grace_period,
                                      reduction_factor=spec.scheduler.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space=build_param_space(spec),
            tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", search_alg=searcher, scheduler=scheduler,
                                        num_samples=spec.search.num_samples, max_concurrent_trials=concurrency,
                                        reuse_actors=spec.resources.reuse_actors),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_uri, verbose=verbose,
                callbacks=[_trial_clock(clock_key), *callbacks],
                failure_config=tune.FailureConfig(max_failures=cfg.train.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
    log.info("sweep %s: %d trials, %d at a time (%g CPU%s each), results under %s", name,
             spec.search.num_samples, concurrency, cpu, f", {gpu:g} GPU" if gpu else "", experiment_uri)
    t0 = time.perf_counter()
    grid = tuner.fit()
    loop_seconds = time.perf_counter() - t0
    return _write_results(fs, results_dir, name, experiment_uri, grid, spec, base, cfg, concurrency, loop_seconds,
                          clock_key)


def _write_results(fs, results_dir: str, name: str, experiment_uri: str, grid, spec: SweepSpec, base: dict,
                   cfg: ProjectConfig, concurrency: int, loop_seconds: float, clock_key: str) -> SweepResult:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ray_logmilp import storage

    # Trial clock events: this session's plus those of earlier (interrupted) sessions.
    clock_file = f"{results_dir}/trial_clock.json"
    previous = json.loads(storage.read_text(fs, clock_file)) if storage.exists(fs, clock_file) else {}
    events = previous.get("events", []) + _CLOCK_EVENTS.pop(clock_key, [])
    loop_total = previous.get("loop_seconds", 0.0) + loop_seconds
    storage.write_text(fs, clock_file, json.dumps({"events": events, "loop_seconds": loop_total}))
    walls = trial_walls(events)

    results = list(grid)
    # Trial statuses as persisted: an interrupted run's unfinished trials load as PENDING (the in-memory
    # grid of an interrupted fit calls them terminated).
    from ray.tune import ExperimentAnalysis

    statuses = {t.trial_id: t.status for t in ExperimentAnalysis(experiment_uri).trials}
    complete = len(statuses) >= spec.search.num_samples and all(
        s in ("TERMINATED", "ERROR") for s in statuses.values())
    trials, epochs = build_tables(results, spec, max_epochs=cfg.train.epochs, walls=walls, statuses=statuses)
    summary = summarise(trials, max_epochs=cfg.train.epochs, concurrency=concurrency, loop_seconds=loop_total) \
        if len(trials) else {"trials": 0}
    summary.update({"name": name, "experiment_path": experiment_uri, "complete": bool(complete),
                    "num_samples": spec.search.num_samples, "max_epochs": cfg.train.epochs,
                    "concurrency": concurrency, "loop_seconds": loop_total,
                    "objective": to_dict(spec.objective)})

    if len(trials):
        pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), f"{results_dir}/trials.parquet",
                       filesystem=fs)
        storage.write_text(fs, f"{results_dir}/trials.csv", trials.to_csv(index=False))
    if len(epochs):
        pq.write_table(pa.Table.from_pandas(epochs, preserve_index=False), f"{results_dir}/epochs.parquet",
                       filesystem=fs)

    best, best_path = None, None
    scored = trials[trials[OBJECTIVE].notna()] if OBJECTIVE in trials else trials.iloc[0:0]
    if len(scored):
        row = scored.iloc[0]
        params = {k: _plain(row[k]) for k in spec.space}
        params = {k: (int(v) if spec.space[k].is_integer else v) for k, v in params.items()}
        best = {"trial_id": row["trial_id"], "params": params, OBJECTIVE: float(row[OBJECTIVE]),
                "val_f1": float(row["val_f1"]), "val_sr": float(row["val_sr"]), "best_epoch": int(row["best_epoch"]),
                "status": row["status"]}
        best_path = storage.uri(fs, f"{results_dir}/best.yaml")
        comment = [f"Best of sweep {name} ({'complete' if complete else 'INTERRUPTED, partial'}, "
                   f"{summary.get('finished', 0)} trials): trial {row['trial_id']}, objective {row[OBJECTIVE]:.4f} "
                   f"(val F1 {row['val_f1']:.4f}, val SR {row['val_sr']:.4f}, epoch {int(row['best_epoch'])})",
                   "Searched: " + ", ".join(f"{k}={v!r}" for k, v in params.items())]
        storage.write_text(fs, f"{results_dir}/best.yaml", best_config_yaml(base, params, best_path, comment))
        summary["best"] = best
        summary["best_config"] = best_path
    with fs.open_output_stream(f"{results_dir}/history.png") as out:
        out.write(plot_history(trials, spec.objective))
    importances = param_importances(trials, spec) if len(trials) else {}
    summary["param_importance"] = importances
    with fs.open_output_stream(f"{results_dir}/importance.png") as out:
        out.write(plot_importance(importances))
    storage.write_text(fs, f"{results_dir}/summary.json", json.dumps(summary, indent=1, default=str))
    return SweepResult(name=name, experiment_path=experiment_uri, results_dir=storage.uri(fs, results_dir),
                       complete=bool(complete), best=best, best_config_path=best_path, summary=summary, trials=trials)


# --------------------------------------------------------------------------------------------------
# The body of tune/sweep.py
# --------------------------------------------------------------------------------------------------

def format_summary(result: SweepResult, top: int = 10) -> str:
    s = result.summary
    lines = [f"sweep {result.name}: {'complete' if result.complete else 'INTERRUPTED (partial results)'}"]
    t = result.trials
    if len(t):
        cols = [c for c in ["trial_id", "status", "epochs", *list(t.columns[t.columns.get_loc("epochs") + 1:])]
                if c in t and c not in ("trial_dir", "trial_started_at", "segments", "actor_reused", "number",
                                        "last_objective", "val_auc")]
        with _pd_options():
            lines.append(t[cols].head(top).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if len(t) > top:
            lines.append(f"... {len(t) - top} more in trials.csv")
    if s.get("finished"):
        lines.append(f"ASHA stopped {s['stopped_early']}/{s['finished']} trials early "
                     f"({s['stopped_early_fraction']:.0%}); epochs run {s['epochs_run']}/{s['epochs_budget']} "
                     f"(compute saved {s['compute_saved_fraction']:.0%}"
                     + (f", ~{s['compute_saved_seconds']:.0f}s" if "compute_saved_seconds" in s else "") + ")")
    if "overhead_seconds" in s:
        o = s["overhead_seconds"]
        lines.append(f"per-trial overhead (wall − time in fit): mean {o['mean']:.2f}s, median {o['median']:.2f}s, "
                     f"max {o['max']:.2f}s ({o['fraction_of_wall']:.0%} of trial wall time)")
    if result.best:
        b = result.best
        lines.append(f"best trial {b['trial_id']}: objective {b[OBJECTIVE]:.4f} (val F1 {b['val_f1']:.4f}, "
                     f"val SR {b['val_sr']:.4f}, epoch {b['best_epoch']})")
        for k, v in b["params"].items():
            lines.append(f"  {k} = {v!r}")
        lines.append(f"best config written to {result.best_config_path}")
        lines.append(f"  train it: python jobs/train.py --config {result.best_config_path}")
    lines.append(f"results (trials.csv/.parquet, summary.json, history.png, importance.png): {result.results_dir}")
    if not result.complete:
        lines.append(f"resume with: python tune/sweep.py --config <same config> --name {result.name} --resume")
    return "\n".join(lines)


class _pd_options:
    def __enter__(self):
        import pandas as pd
        self._ctx = pd.option_context("display.width", 200, "display.max_columns", 30)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """(project-config overrides, search-space overrides): the search file's sections (objective, search,
    scheduler, resources, space) are not project-config sections, so the first dotted part decides."""
    sections = {f.name for f in dataclasses.fields(SweepSpec)}
    project, search = [], []
    for item in items:
        (search if item.lstrip("-").split(".", 1)[0] in sections else project).append(item)
    return project, search


def sweep_main(args) -> int:
    """``tune/sweep.py``: load and check config + space, (smoke: make a tiny corpus), sweep, print."""
    from ray_logmilp.config import load_project

    overrides, search_overrides = split_overrides(args.overrides)
    if args.resume and not args.name:
        raise ConfigError("--resume needs --name: the sweep to continue (printed when it started)")
    smoke_dir = None
    if args.smoke_test:
        from ray_logmilp.cli.smoke import smoke_overrides

        smoke_dir, smoke = smoke_overrides("logmilp-sweep-smoke-")
        overrides = smoke + overrides
    cfg = load_project(args.config, overrides)              # config errors surface here, before Ray starts
    if args.num_samples is not None:
        search_overrides.append(f"search.num_samples={args.num_samples}")
    elif args.smoke_test and not any(o.startswith("search.num_samples=") for o in search_overrides):
        search_overrides.append("search.num_samples=3")
    if args.smoke_test and not any(o.startswith("scheduler.grace_period=") for o in search_overrides):
        search_overrides.append("scheduler.grace_period=1")    # smoke trials run 2 epochs
    if args.seed is not None:
        search_overrides.append(f"search.seed={args.seed}")
    if args.max_concurrent is not None:
        search_overrides.append(f"search.max_concurrent={args.max_concurrent}")
    spec = load_search_space(args.search, search_overrides)
    if not args.resume:
        try:
            validate_spec(spec, cfg)                        # search-space errors too: no trial has started
        except ConfigError as exc:
            raise ConfigError(f"{args.search}: {exc}") from None

    import ray

    if not ray.is_initialized():
        ray.init(address=args.address)
    if smoke_dir is not None:
        from ray_logmilp.cli.jobs import format_prepare_summary
        from ray_logmilp.cli.smoke import write_smoke_corpus
        from ray_logmilp.ingest.pipeline import prepare

        write_smoke_corpus(smoke_dir)
        print(format_prepare_summary(prepare(cfg.data, progress=False)))
    name = args.name or default_sweep_name(args.config if not args.smoke_test else "smoke")
    result = run_sweep(cfg, spec, name=name, resume=args.resume, verbose=args.tune_verbose)
    print(format_summary(result))
    return 0 if result.complete else 3
