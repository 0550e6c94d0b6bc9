"""Sweep plumbing without Ray: search-space files, their validation, param spaces, best-YAML round trip."""
from __future__ import annotations

import dataclasses

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ray_logmilp.config import ConfigError, load_project, to_dict
from ray_logmilp.tuning.sweep import (ObjectiveConfig, apply_params, best_config_yaml, default_point, load_search_space,
                                objective_value, parse_search_space, plan_resources, split_overrides,
                                summarise, trial_walls, tuning_data, validate_spec)

REPO = Path(__file__).resolve().parents[2]
SEARCH_FILES = sorted((REPO / "configs" / "search").glob("*.yaml"))


@pytest.fixture(scope="module")
def base_cfg():
    return load_project(REPO / "configs" / "synthetic.yaml", ["train.epochs=6"])


@pytest.mark.parametrize("path", SEARCH_FILES, ids=lambda p: p.name)
def test_shipped_search_spaces_load_and_validate(path, base_cfg):
    assert path.read_text().startswith("# python tune/sweep.py "), "each YAML starts with the command that runs it"
    spec = load_search_space(path)
    validate_spec(spec, base_cfg)


def test_default_space_covers_the_issue():
    spec = load_search_space(REPO / "configs" / "search" / "default.yaml")
    for key in ("loss.lambda_p", "loss.lambda_a", "loss.lambda_c"):
        assert spec.space[key].type == "loguniform"
    n = spec.space["model.num_prototypes"]
    assert (n.type, n.low, n.high) == ("logint", 2, 64)
    assert spec.objective.metric == "val_f1" and spec.scheduler.kind == "asha"


GOOD = {"loss.lambda_p": {"type": "loguniform", "low": 0.01, "high": 1.0}}


@pytest.mark.parametrize("doc, needle", [
    ({"space": {"loss.lambda_x": {"type": "loguniform", "low": 0.01, "high": 1.0}}}, "space.loss.lambda_x"),
    ({"space": {"los.lambda_p": {"type": "loguniform", "low": 0.01, "high": 1.0}}}, "space.los.lambda_p"),
    ({"space": {"data.window.size": {"type": "int", "low": 16, "high": 64}}}, "space.data.window.size"),
    ({"space": {"train.epochs": {"type": "int", "low": 2, "high": 8}}}, "space.train.epochs"),
    ({"space": {"model.input_dim": {"type": "int", "low": 2, "high": 8}}}, "space.model.input_dim"),
    ({"space": {"model": {"type": "int", "low": 2, "high": 8}}}, "space.model"),
    ({"space": {"model.num_prototypes": {"type": "loguniform", "low": 2, "high": 64}}}, "int or logint"),
    ({"space": {"loss.lambda_p": {"type": "loguniform", "low": 0, "high": 1}}}, "space.loss.lambda_p.low"),
    ({"space": {"loss.lambda_p": {"type": "uniform", "low": 1, "high": 0.5}}}, "space.loss.lambda_p.high"),
    ({"space": {"loss.lambda_p": {"type": "gaussian", "low": 0.1, "high": 1}}}, "space.loss.lambda_p.type"),
    ({"space": {"loss.lambda_p": {"type": "uniform", "low": 0.1, "hgih": 1}}}, "space.loss.lambda_p.hgih"),
    ({"space": {"model.num_prototypes": {"type": "int", "low": 2.5, "high": 8}}}, "space.model.num_prototypes.low"),
    ({"space": {"loss.focal_alpha": {"type": "uniform", "low": 0.1, "high": 2.0}}}, "space.loss.focal_alpha"),
    ({"space": {"loss.perturbation": {"type": "choice", "values": ["zero", "drop"]}}}, "space.loss.perturbation"),
    ({"space": {"model.hidden_dim": {"type": "choice", "values": [30, 64]}}}, "space.model.hidden_dim"),
    ({"space": GOOD, "objective": {"metric": "test_f1"}}, "objective.metric"),
    ({"space": GOOD, "serach": {"num_samples": 4}}, "'serach'"),
    ({"space": GOOD, "search": {"num_sample": 4}}, "'search.num_sample'"),
    ({"space": GOOD, "scheduler": {"grace_period": 50}}, "scheduler.grace_period"),
    ({"space": {}}, "space"),
    ({"objective": {"metric": "val_f1"}}, "space"),
])
def test_invalid_search_space_names_the_bad_key(tmp_path, base_cfg, doc, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        validate_spec(load_search_space(path), base_cfg)
    assert needle in str(err.value)


def test_search_overrides_and_default_point(base_cfg):
    spec = load_search_space(REPO / "configs" / "search" / "default.yaml",
                             ["search.num_samples=5", "space.loss.lambda_a.low=0.005"])
    assert spec.search.num_samples == 5
    point = default_point(spec, base_cfg)
    # The base lambda_a (0.001) lies below the narrowed range: trial 1 takes the nearest bound. The point
    # names every key, because Ray's OptunaSearch rejects a partial warm-start point.
    assert point["loss.lambda_a"] == 0.005
    assert set(point) == set(spec.space)
    assert point["loss.lambda_p"] == base_cfg.loss.lambda_p
    assert point["model.num_prototypes"] == base_cfg.model.num_prototypes
    wide = dataclasses.replace(base_cfg, model=dataclasses.replace(base_cfg.model, num_prototypes=64))
    assert default_point(spec, wide)["model.num_prototypes"] == spec.space["model.num_prototypes"].high


def test_cli_overrides_split_between_config_and_search_space(base_cfg):
    project, search = split_overrides(["train.epochs=4", "model.num_prototypes=8", "search.num_samples=5",
                                       "space.train.lr=null", "scheduler.grace_period=2",
                                       "space.loss.delta_c={type: uniform, low: 0.1, high: 0.9}"])
    assert project == ["train.epochs=4", "model.num_prototypes=8"]
    spec = load_search_space(REPO / "configs" / "search" / "default.yaml", search)
    assert spec.search.num_samples == 5 and spec.scheduler.grace_period == 2
    assert "train.lr" not in spec.space and spec.space["loss.delta_c"].type == "uniform"
    validate_spec(spec, base_cfg)


def test_param_space_bounds_are_inclusive():
    pytest.importorskip("ray.tune")
    from ray_logmilp.tuning.sweep import build_param_space

    spec = parse_search_space({"space": {
        "model.num_prototypes": {"type": "logint", "low": 2, "high": 4},
        "train.batch_size": {"type": "int", "low": 8, "high": 9},
        "loss.lambda_c": {"type": "loguniform", "low": 0.1, "high": 10},
        "loss.delta_c": {"type": "uniform", "low": 0.1, "high": 0.9},
        "loss.perturbation": {"type": "choice", "values": ["zero", "mask"]},
    }})
    space = build_param_space(spec)
    np.random.seed(0)
    n = space["model.num_prototypes"].sample(size=300)
    assert set(n) == {2, 3, 4}
    assert set(space["train.batch_size"].sample(size=100)) == {8, 9}
    c = np.array(space["loss.lambda_c"].sample(size=300))
    assert c.min() >= 0.1 and c.max() <= 10 and (c < 1).mean() > 0.3       # log scale: half below 1
    assert set(space["loss.perturbation"].sample(size=50)) == {"zero", "mask"}


def test_objective_uses_validation_metrics_only():
    obj = ObjectiveConfig(metric="val_f1", sr_weight=0.1)
    assert objective_value({"val_f1": 0.8, "val_sr": 0.5}, obj) == pytest.approx(0.85)
    assert objective_value({"val_f1": 0.8, "val_sr": float("nan")}, obj) == pytest.approx(0.8)
    assert objective_value({"val_f1": 0.8, "val_sr": 0.5}, ObjectiveConfig(sr_weight=0)) == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="metric"):
        ObjectiveConfig(metric="loc@1")


def test_plan_resources():
    spec = parse_search_space({"space": GOOD, "search": {"num_samples": 16}})
    assert plan_resources(spec, {"CPU": 2}) == (1.0, 0.0, 2)
    assert plan_resources(spec, {"CPU": 16, "GPU": 1}) == (1.0, 0.25, 4)      # fractional GPUs
    assert plan_resources(spec, {"CPU": 64, "GPU": 8}) == (1.0, 0.25, 16)     # capped by num_samples
    spec = parse_search_space({"space": GOOD, "search": {"max_concurrent": 3}, "resources": {"cpu": 2, "gpu": 0.5}})
    assert plan_resources(spec, {"CPU": 64, "GPU": 8}) == (2.0, 0.5, 3)


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


def test_tuning_data_has_no_instance_labels_and_no_test_split():
    from ray_logmilp.ingest.prepared import BagSet, PreparedData

    def bags(n):
        return BagSet(bag_ids=np.arange(n), labels=np.array([0, 1] * (n // 2), np.int8),
                      offsets=np.arange(0, 3 * n + 1, 3), template_ids=np.zeros(3 * n, np.int32),
                      instance_labels=np.ones(3 * n, np.int8))

    data = PreparedData(root="x", embeddings=np.zeros((1, 8), np.float32),
                        splits={"train": bags(4), "val": bags(2), "test": bags(2)}, manifest={"a": 1})
    out = tuning_data(data)
    assert set(out.splits) == {"train", "val"}
    for split in out.splits.values():
        assert (split.instance_labels == -1).all() and len(split.instance_labels) == len(split.template_ids)
    assert (data.splits["train"].instance_labels == 1).all()          # the original is untouched


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


def test_importing_the_module_and_the_cli_starts_nothing():
    code = ("import importlib.util, sys\n"
            "import ray_logmilp.tuning\n"
            f"spec = importlib.util.spec_from_file_location('sweep_cli', {str(REPO / 'tune' / 'sweep.py')!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "heavy = [m for m in ('ray', 'torch', 'optuna', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
