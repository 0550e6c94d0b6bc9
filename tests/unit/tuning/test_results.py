"""A sweep's results without Ray: trial clocks, the summary, the tables and files, best.yaml round trip."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ray_logmilp.config import load_project, to_dict
from ray_logmilp.tuning import (apply_params, best_config_yaml, build_tables, parse_search_space, summarise,
                                trial_walls, write_results)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def base_cfg():
    return load_project(REPO / "configs" / "synthetic.yaml", ["train.epochs=4"])


def test_best_yaml_round_trip(tmp_path, base_cfg):
    params = {"loss.lambda_p": np.float64(0.05), "model.num_prototypes": np.int64(7), "train.lr": 0.0005}
    path = tmp_path / "best.yaml"
    text = best_config_yaml(to_dict(base_cfg), params, str(path), ["Best of sweep x"])
    path.write_text(text)
    assert text.splitlines()[0] == f"# python jobs/train.py --config {path}"
    loaded = load_project(path)                        # what jobs/train.py --config does
    assert loaded == apply_params(base_cfg, params)
    assert loaded.loss.lambda_p == 0.05 and loaded.model.num_prototypes == 7 and loaded.train.lr == 0.0005
    assert to_dict(loaded.data) == to_dict(base_cfg.data) and loaded.train.epochs == base_cfg.train.epochs
    assert "numpy" not in text


def test_trial_walls_and_summary():
    events = [{"trial_id": "a", "event": "start", "time": 0.0}, {"trial_id": "a", "event": "complete", "time": 10.0},
              {"trial_id": "b", "event": "start", "time": 1.0}, {"trial_id": "b", "event": "complete", "time": 4.0},
              {"trial_id": "c", "event": "start", "time": 4.5}]
    walls = trial_walls(events)
    assert walls["a"] == {"wall_seconds": 10.0, "segments": 1, "ended": "complete"}
    assert walls["c"]["segments"] == 0 and walls["c"]["ended"] is None
    trials = pd.DataFrame([
        {"status": "completed", "epochs": 4, "fit_seconds": 8.0, "wall_seconds": 10.0, "segments": 1,
         "overhead_seconds": 2.0, "actor_reused": False},
        {"status": "stopped_early", "epochs": 1, "fit_seconds": 2.0, "wall_seconds": 3.0, "segments": 1,
         "overhead_seconds": 1.0, "actor_reused": True},
        {"status": "stopped_early", "epochs": 1, "fit_seconds": 2.0, "wall_seconds": 2.5, "segments": 1,
         "overhead_seconds": 0.5, "actor_reused": True},
        {"status": "unfinished", "epochs": 2, "fit_seconds": 4.0, "wall_seconds": None, "segments": 0,
         "overhead_seconds": None, "actor_reused": False},
    ])
    s = summarise(trials, max_epochs=4, concurrency=2, loop_seconds=10.0)
    assert s["finished"] == 3 and s["stopped_early"] == 2
    assert s["stopped_early_fraction"] == pytest.approx(2 / 3)
    assert s["compute_saved_fraction"] == pytest.approx(1 - 6 / 12)
    assert s["overhead_seconds"]["mean"] == pytest.approx(3.5 / 3)
    assert s["overhead_seconds"]["mean_reused_actor"] == pytest.approx(0.75)
    assert s["slot_overhead_seconds_per_trial"] == pytest.approx((20 - 12) / 3)


@dataclass
class FakeResult:
    """The part of a Tune ``Result`` the tables read."""

    path: str
    config: dict[str, Any]
    metrics_dataframe: pd.DataFrame | None
    metrics: dict[str, Any]
    error: Exception | None = None


def _trial(trial_id: str, number: int, lambda_p: float, objectives: list[float], pid: int, started: float):
    hist = pd.DataFrame({"epochs_done": range(1, len(objectives) + 1), "objective": objectives,
                         "val_f1": objectives, "val_sr": [0.5] * len(objectives),
                         "fit_seconds": [2.0 * (i + 1) for i in range(len(objectives))],
                         "pid": pid, "trial_started_at": started, "train_loss": 1.0})
    return FakeResult(path=f"/x/tune_trial_{trial_id}_{number:05d}_0_lambda_p={lambda_p}",
                      config={"loss.lambda_p": np.float64(lambda_p)}, metrics_dataframe=hist,
                      metrics={"trial_id": trial_id})


def test_tables_and_results_files(tmp_path, base_cfg):
    from ray_logmilp import storage

    spec = parse_search_space({"space": {"loss.lambda_p": {"type": "loguniform", "low": 0.01, "high": 1.0}},
                               "search": {"num_samples": 4}})
    results = [_trial("a", 1, 0.02, [0.5, 0.6, 0.9, 0.7], pid=1, started=0.0),
               _trial("b", 2, 0.2, [0.4], pid=2, started=1.0),
               _trial("c", 3, 0.5, [0.45, 0.5, 0.55, 0.6], pid=1, started=11.0),
               FakeResult(path="/x/tune_trial_d_00004_0", config={"loss.lambda_p": 0.3}, metrics_dataframe=None,
                          metrics={"trial_id": "d"}, error=RuntimeError("boom"))]
    statuses = {"a": "TERMINATED", "b": "TERMINATED", "c": "TERMINATED", "d": "ERROR"}
    events = [{"trial_id": t, "event": e, "time": s} for t, e, s in
              [("a", "start", 0.0), ("a", "complete", 10.0), ("b", "start", 0.5), ("b", "complete", 3.0),
               ("c", "start", 10.5), ("c", "complete", 20.0)]]

    trials, epochs = build_tables(results, spec, max_epochs=4, walls=trial_walls(events), statuses=statuses)
    assert list(trials["trial_id"]) == ["a", "c", "b", "d"]             # by objective, then val SR
    a = trials.iloc[0]
    assert (a["status"], a["best_epoch"], a["objective"], a["last_objective"]) == ("completed", 3, 0.9, 0.7)
    assert a["overhead_seconds"] == pytest.approx(10.0 - 8.0)
    assert trials.set_index("trial_id").loc["b", "status"] == "stopped_early"
    assert trials.set_index("trial_id").loc["d", "status"] == "error"
    assert trials.set_index("trial_id")["actor_reused"].to_dict() == {"a": False, "c": True, "b": False, "d": False}
    assert len(epochs) == 9 and "train_loss" in epochs and "pid" not in epochs

    fs, root = storage.resolve_dir(tmp_path / "results", create=True)
    out = write_results(fs, root, name="s", experiment_uri=str(tmp_path), results=results, statuses=statuses,
                        spec=spec, base=to_dict(base_cfg), cfg=base_cfg, concurrency=2, loop_seconds=20.0,
                        clock_events=events)
    assert out.complete and out.best["trial_id"] == "a" and out.best["params"] == {"loss.lambda_p": 0.02}
    for name in ("trials.csv", "trials.parquet", "epochs.parquet", "best.yaml", "summary.json", "history.png",
                 "importance.png", "trial_clock.json"):
        assert (tmp_path / "results" / name).stat().st_size > 0, name
    assert load_project(out.best_config_path).loss.lambda_p == 0.02
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["finished"] == 3 and summary["stopped_early"] == 1 and summary["epochs_run"] == 9
