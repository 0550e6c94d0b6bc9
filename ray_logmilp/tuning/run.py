"""Running a sweep: Ray Tune + Optuna (TPE) + ASHA over a search space, new or resumed.

:func:`run_sweep` checks the space (:func:`~ray_logmilp.tuning.space.validate_spec`), loads the train and
validation splits once (instance labels blanked, see :func:`~ray_logmilp.tuning.trainable.tuning_data`),
plans how many trials run at once (:func:`plan_resources`), runs the trials and writes the results
(:func:`~ray_logmilp.tuning.results.write_results`). Ray imports stay inside functions: importing this
module starts nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from ray_logmilp.config import ConfigError, ProjectConfig, from_dict, to_dict
from ray_logmilp.tuning.results import SweepResult, write_results
from ray_logmilp.tuning.space import SweepSpec, default_point, parse_search_space, spec_to_dict, validate_spec
from ray_logmilp.tuning.trainable import EPOCHS_DONE, OBJECTIVE, tune_trial, tuning_data

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
SPEC_FILE = "sweep_spec.json"


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
            from ray_logmilp.tuning.run import record_clock_event

            record_clock_event(self.key, trial.trial_id, event)

        def on_trial_start(self, iteration, trials, trial, **info):
            self._add(trial, "start")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._add(trial, "complete")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._add(trial, "error")

    return TrialClock(key)


# --------------------------------------------------------------------------------------------------
# run_sweep
# --------------------------------------------------------------------------------------------------

def default_sweep_name(cfg_path: str | None = None) -> str:
    stem = Path(cfg_path).stem if cfg_path else "sweep"
    return f"sweep-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _new_tuner(trainable, cfg: ProjectConfig, spec: SweepSpec, *, name: str, storage_uri: str, verbose: int,
               concurrency: int, callbacks: Sequence[Any]):
    """A Tuner for a new sweep: seeded TPE (trial 1 the base config), ASHA or FIFO."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    # The sampler carries the seed (OptunaSearch ignores its own when given a sampler).
    sampler = optuna.samplers.TPESampler(seed=spec.search.seed, n_startup_trials=spec.search.n_startup)
    point = default_point(spec, cfg) if spec.search.include_defaults else {}
    searcher = OptunaSearch(sampler=sampler, points_to_evaluate=[point] if point else None)
    if spec.scheduler.kind == "asha":
        scheduler = ASHAScheduler(time_attr=EPOCHS_DONE, max_t=cfg.train.epochs,
                                  grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=build_param_space(spec),
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max", search_alg=searcher, scheduler=scheduler,
                                    num_samples=spec.search.num_samples, max_concurrent_trials=concurrency,
                                    reuse_actors=spec.resources.reuse_actors),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_uri, verbose=verbose, callbacks=list(callbacks),
            failure_config=tune.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )


def run_sweep(cfg: ProjectConfig, spec: SweepSpec, *, name: str | None = None, resume: bool = False,
              callbacks: Sequence[Any] = (), verbose: int = 1) -> SweepResult:
    """Run (or resume) a sweep on the connected Ray cluster (or a new local one) and write its results.

    ``resume=True`` continues ``<train.storage_path>/<name>`` with ``Tuner.restore``: finished trials are
    kept as they are, unfinished ones continue from their last epoch checkpoint, missing ones are sampled.
    The stored config and space of that sweep are used (the ones passed in only locate it), and so are
    its callbacks: ``callbacks`` (extra Tune callbacks) apply to a new sweep only.
    """
    import ray
    from ray import tune

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
    spec_file = f"{results_dir}/{SPEC_FILE}"

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
    data = tuning_data(load_prepared(cfg.train.prepared_dir or cfg.data.output_dir, splits=("train", "val")))
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=base, objective=to_dict(spec.objective), data=data),
        {"cpu": cpu, "gpu": gpu})
    clock_key = experiment_uri

    if resume:
        tuner = tune.Tuner.restore(experiment_uri, trainable=trainable, resume_errored=True)
    else:
        fs.create_dir(results_dir, recursive=True)
        storage.write_text(fs, spec_file, json.dumps({"base": base, "spec": spec_to_dict(spec)}, indent=1))
        tuner = _new_tuner(trainable, cfg, spec, name=name, storage_uri=storage_uri, verbose=verbose,
                           concurrency=concurrency, callbacks=[_trial_clock(clock_key), *callbacks])
    log.info("sweep %s: %d trials, %d at a time (%g CPU%s each), results under %s", name,
             spec.search.num_samples, concurrency, cpu, f", {gpu:g} GPU" if gpu else "", experiment_uri)
    t0 = time.perf_counter()
    grid = tuner.fit()
    loop_seconds = time.perf_counter() - t0
    # Trial statuses as persisted: an interrupted run's unfinished trials load as PENDING (the in-memory
    # grid of an interrupted fit calls them terminated).
    statuses = {t.trial_id: t.status for t in tune.ExperimentAnalysis(experiment_uri).trials}
    return write_results(fs, results_dir, name=name, experiment_uri=experiment_uri, results=list(grid),
                         statuses=statuses, spec=spec, base=base, cfg=cfg, concurrency=concurrency,
                         loop_seconds=loop_seconds, clock_events=_CLOCK_EVENTS.pop(clock_key, []))
