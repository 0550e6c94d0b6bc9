"""A sweep's results: the per-trial and per-epoch tables, the summary, ``best.yaml`` and the plots.

Everything here works on what Tune hands back (a list of trial results: ``metrics_dataframe``,
``config``, ``path``, ``error``) and plain data, so it needs no running Ray. :func:`write_results` puts,
under ``<train.storage_path>/<name>/results/``: ``trials.parquet``/``trials.csv`` (one row per trial),
``epochs.parquet`` (every reported epoch), ``best.yaml`` (a full project config that
``jobs/train.py --config`` accepts unchanged), ``summary.json``, ``history.png`` and ``importance.png``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ray_logmilp.config import ProjectConfig, to_dict
from ray_logmilp.tuning.space import ObjectiveConfig, SweepSpec, apply_params, plain
from ray_logmilp.tuning.trainable import EPOCHS_DONE, OBJECTIVE

log = logging.getLogger(__name__)

CLOCK_FILE = "trial_clock.json"


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
        params = {k: plain(result.config.get(k)) for k in spec.space}
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
    return _png(fig)


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
            params={k: plain(row[k]) for k in spec.space}, distributions=dists, value=float(row[OBJECTIVE])))
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
    """Bar chart of parameter importances (a note instead when there are none)."""
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
    return _png(fig)


@dataclass
class SweepResult:
    """What :func:`~ray_logmilp.tuning.run.run_sweep` returns: where the results are and the best trial."""

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


def write_results(fs, results_dir: str, *, name: str, experiment_uri: str, results: list, statuses: dict[str, str],
                  spec: SweepSpec, base: dict[str, Any], cfg: ProjectConfig, concurrency: int, loop_seconds: float,
                  clock_events: list[dict[str, Any]]) -> SweepResult:
    """Write every results file of a sweep (adding to those of its earlier, interrupted sessions).

    ``results`` are Tune's trial results, ``statuses`` the trial statuses as Tune persisted them (an
    interrupted run's unfinished trials load as PENDING), ``clock_events`` this session's trial start/end
    events.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ray_logmilp import storage

    # Trial clock events: this session's plus those of earlier (interrupted) sessions.
    clock_file = f"{results_dir}/{CLOCK_FILE}"
    previous = json.loads(storage.read_text(fs, clock_file)) if storage.exists(fs, clock_file) else {}
    events = previous.get("events", []) + list(clock_events)
    loop_total = previous.get("loop_seconds", 0.0) + loop_seconds
    storage.write_text(fs, clock_file, json.dumps({"events": events, "loop_seconds": loop_total}))
    walls = trial_walls(events)

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
        params = {k: plain(row[k]) for k in spec.space}
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


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
