"""The body of ``tune/sweep.py``: load and check the project config and the search space, then sweep.

Both are checked before Ray starts, so a bad flag or search-space key exits 2 at once. ``--print-config``
prints both as YAML and exits without Ray; ``--smoke-test`` writes and prepares a tiny synthetic corpus
and sweeps 3 trials of 2 epochs.
"""

from __future__ import annotations

import argparse

import yaml

from ray_logmilp.config import ConfigError, ProjectConfig, load_project, to_dict
from ray_logmilp.tuning.results import SweepResult
from ray_logmilp.tuning.space import SweepSpec, load_search_space, spec_to_dict, split_overrides, validate_spec
from ray_logmilp.tuning.trainable import OBJECTIVE

#: Per-trial columns too detailed for the console table (they are in trials.csv).
_HIDDEN_COLUMNS = ("trial_dir", "trial_started_at", "segments", "actor_reused", "number", "last_objective", "val_auc")


def format_summary(result: SweepResult, top: int = 10) -> str:
    """The console report of a sweep: the best ``top`` trials, early stopping, overhead, the best config."""
    import pandas as pd

    s = result.summary
    lines = [f"sweep {result.name}: {'complete' if result.complete else 'INTERRUPTED (partial results)'}"]
    t = result.trials
    if len(t):
        cols = [c for c in ["trial_id", "status", "epochs", *list(t.columns[t.columns.get_loc("epochs") + 1:])]
                if c in t and c not in _HIDDEN_COLUMNS]
        with pd.option_context("display.width", 200, "display.max_columns", 30):
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
        lines.extend(f"  {k} = {v!r}" for k, v in b["params"].items())
        lines.append(f"best config written to {result.best_config_path}")
        lines.append(f"  train it: python jobs/train.py --config {result.best_config_path}")
    lines.append(f"results (trials.csv/.parquet, summary.json, history.png, importance.png): {result.results_dir}")
    if not result.complete:
        lines.append(f"resume with: python tune/sweep.py --config <same config> --name {result.name} --resume")
    return "\n".join(lines)


def format_config(cfg: ProjectConfig, spec: SweepSpec) -> str:
    """Two YAML documents: the project config (a ``--config`` file) and the search space (a ``--search`` file)."""
    return ("# project config: the base of every trial\n"
            + yaml.safe_dump(to_dict(cfg), sort_keys=False)
            + "---\n# search space\n"
            + yaml.safe_dump(spec_to_dict(spec), sort_keys=False))


def _search_overrides(args: argparse.Namespace, search_overrides: list[str]) -> list[str]:
    """The search-space overrides with the flags (--num-samples, --seed, ...) and the smoke defaults added."""
    out = list(search_overrides)

    def given(key: str) -> bool:
        return any(o.lstrip("-").startswith(f"{key}=") for o in out)

    if args.num_samples is not None:
        out.append(f"search.num_samples={args.num_samples}")
    if args.seed is not None:
        out.append(f"search.seed={args.seed}")
    if args.max_concurrent is not None:
        out.append(f"search.max_concurrent={args.max_concurrent}")
    if args.smoke_test:
        if not given("search.num_samples"):
            out.append("search.num_samples=3")
        if not given("scheduler.grace_period"):
            out.append("scheduler.grace_period=1")    # smoke trials run 2 epochs
    return out


def sweep_main(args: argparse.Namespace) -> int:
    """``tune/sweep.py``: load and check config + space, (smoke: make a tiny corpus), sweep, print."""
    overrides, search_overrides = split_overrides(args.overrides)
    if args.resume and not args.name:
        raise ConfigError("--resume needs --name: the sweep to continue (printed when it started)")
    smoke_dir = None
    if args.smoke_test:
        from ray_logmilp.cli.smoke import smoke_overrides

        smoke_dir, smoke = smoke_overrides("logmilp-sweep-smoke-")
        overrides = smoke + overrides
    cfg = load_project(args.config, overrides)              # config errors surface here, before Ray starts
    spec = load_search_space(args.search, _search_overrides(args, search_overrides))
    if not args.resume:
        try:
            validate_spec(spec, cfg)                        # search-space errors too: no trial has started
        except ConfigError as exc:
            raise ConfigError(f"{args.search}: {exc}") from None
    if args.print_config:
        print(format_config(cfg, spec), end="")
        return 0

    import ray

    from ray_logmilp.tuning.run import default_sweep_name, run_sweep

    if not ray.is_initialized():
        ray.init(address=args.address)
    if smoke_dir is not None:
        from ray_logmilp.cli.prepare import format_prepare_summary
        from ray_logmilp.cli.smoke import write_smoke_corpus
        from ray_logmilp.ingest.pipeline import prepare

        write_smoke_corpus(smoke_dir)
        print(format_prepare_summary(prepare(cfg.data, progress=False)))
    name = args.name or default_sweep_name(args.config if not args.smoke_test else "smoke")
    result = run_sweep(cfg, spec, name=name, resume=args.resume, verbose=args.tune_verbose)
    print(format_summary(result))
    return 0 if result.complete else 3
