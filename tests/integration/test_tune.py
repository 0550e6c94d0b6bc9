"""Sweeps on a real local Ray (2 CPUs): the smoke sweep, its best YAML through jobs/train.py, restoring an
interrupted sweep, and a bad search space failing before any trial starts."""
from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402

from ray_logmilp.config import load_project  # noqa: E402
from ray_logmilp.tuning import load_search_space, run_sweep  # noqa: E402

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _script(relpath: str):
    """Load an entry script (tune/sweep.py, jobs/train.py) as a module, to call its main(argv) in-process."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_sweep(ray_local, tmp_path_factory):
    """``python tune/sweep.py --smoke-test`` run in-process on the test session's Ray."""
    storage = tmp_path_factory.mktemp("sweeps")
    t0 = time.perf_counter()
    rc = _script("tune/sweep.py").main(["--smoke-test", "--name", "smoke", "--tune-verbose", "0",
                                         f"train.storage_path={storage}"])
    return {"rc": rc, "seconds": time.perf_counter() - t0, "results": storage / "smoke" / "results"}


def test_smoke_sweep_finishes_quickly_and_writes_the_best_yaml(smoke_sweep):
    import pandas as pd

    assert smoke_sweep["rc"] == 0
    assert smoke_sweep["seconds"] < 180, f"smoke sweep took {smoke_sweep['seconds']:.0f}s"
    results = smoke_sweep["results"]
    for name in ("best.yaml", "trials.csv", "trials.parquet", "epochs.parquet", "summary.json", "history.png",
                 "importance.png"):
        assert (results / name).stat().st_size > 0, name
    trials = pd.read_parquet(results / "trials.parquet")
    assert len(trials) == 3 and set(trials["status"]) <= {"completed", "stopped_early"}
    assert (trials["fit_seconds"] > 0).all() and trials["overhead_seconds"].notna().all()
    assert not any(c.startswith("test_") or "instance" in c for c in trials.columns)
    assert (results / "best.yaml").read_text().startswith("# python jobs/train.py --config ")


def test_best_yaml_trains_unchanged_with_jobs_train(smoke_sweep):
    best = smoke_sweep["results"] / "best.yaml"
    cfg = load_project(best)
    rc = _script("jobs/train.py").main(["--config", str(best)])
    assert rc == 0
    assert (Path(cfg.train.bundle_dir) / "bundle.json").exists()


class InterruptOnce(tune.Callback):
    """Ctrl-C as a user would press it (Tune's SIGUSR1 handler does the same), once, after the first trial ends."""

    def __init__(self, marker: str):
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text("interrupted")
            os.kill(os.getpid(), signal.SIGUSR1)


def test_restored_sweep_skips_finished_trials(smoke_sweep, tmp_path):
    base = load_project(smoke_sweep["results"] / "best.yaml",      # the smoke corpus, prepared already
                        [f"train.storage_path={tmp_path}", "train.epochs=3", "train.steps_per_epoch=3"])
    spec = load_search_space(REPO / "configs" / "search" / "smoke.yaml", ["search.num_samples=3"])

    first = run_sweep(base, spec, name="resumable", verbose=0,
                      callbacks=[InterruptOnce(str(tmp_path / "interrupted.marker"))])
    assert not first.complete
    done_before = first.trials[first.trials["status"].isin(["completed", "stopped_early"])]
    assert 1 <= len(done_before) < 3

    second = run_sweep(base, spec, name="resumable", resume=True, verbose=0)
    assert second.complete and len(second.trials) == 3
    after = second.trials.set_index("trial_id")
    for _, row in done_before.iterrows():
        # Same process start and the same training time: the finished trial was not run again.
        assert after.loc[row["trial_id"], "trial_started_at"] == row["trial_started_at"]
        assert after.loc[row["trial_id"], "fit_seconds"] == row["fit_seconds"]
    assert set(after["status"]) <= {"completed", "stopped_early"}
    assert (tmp_path / "resumable" / "results" / "best.yaml").exists()


def test_invalid_search_space_fails_before_any_trial(ray_local, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  loss.lambda_p: {type: loguniform, low: 0.01, high: 1.0}\n"
                   "  loss.lambda_x: {type: loguniform, low: 0.01, high: 1.0}\n")
    rc = _script("tune/sweep.py").main(["--config", str(REPO / "configs" / "synthetic.yaml"), "--search", str(bad),
                                        "--name", "bad", f"train.storage_path={tmp_path / 'runs'}"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "loss.lambda_x" in err and str(bad) in err
    assert not (tmp_path / "runs" / "bad").exists()                  # no experiment, so no trial
