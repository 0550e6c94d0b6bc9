"""Search-space files without Ray: loading, overrides, validation against the project config, trial 1."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from ray_logmilp.config import ConfigError, load_project, to_dict
from ray_logmilp.tuning import (ParamSpec, apply_params, default_point, load_search_space, parse_search_space,
                                spec_to_dict, split_overrides, validate_spec)

REPO = Path(__file__).resolve().parents[3]
SEARCH_FILES = sorted((REPO / "configs" / "search").glob("*.yaml"))
GOOD = {"loss.lambda_p": {"type": "loguniform", "low": 0.01, "high": 1.0}}


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


@pytest.mark.parametrize("doc, needle", [
    ({"space": {"loss.lambda_x": {"type": "loguniform", "low": 0.01, "high": 1.0}}},
     "space.loss.lambda_x: unknown key 'space.loss.lambda_x'; did you mean 'space.loss.lambda_"),
    ({"space": {"los.lambda_p": {"type": "loguniform", "low": 0.01, "high": 1.0}}},
     "space.los.lambda_p: unknown key 'space.los'; did you mean 'space.loss'?"),
    ({"space": {"model.hidden_dim.x": {"type": "int", "low": 2, "high": 8}}}, "space.model.hidden_dim.x"),
    ({"space": {"data.window.size": {"type": "int", "low": 16, "high": 64}}}, "space.data.window.size"),
    ({"space": {"train.epochs": {"type": "int", "low": 2, "high": 8}}}, "space.train.epochs: cannot be searched"),
    ({"space": {"model.input_dim": {"type": "int", "low": 2, "high": 8}}}, "space.model.input_dim"),
    ({"space": {"model": {"type": "int", "low": 2, "high": 8}}}, "space.model: is a section"),
    ({"space": {"model.num_prototypes": {"type": "loguniform", "low": 2, "high": 64}}}, "int or logint"),
    ({"space": {"loss.lambda_p": {"type": "loguniform", "low": 0, "high": 1}}}, "space.loss.lambda_p.low"),
    ({"space": {"loss.lambda_p": {"type": "uniform", "low": 1, "high": 0.5}}}, "space.loss.lambda_p.high"),
    ({"space": {"loss.lambda_p": {"type": "gaussian", "low": 0.1, "high": 1}}}, "space.loss.lambda_p.type"),
    ({"space": {"loss.lambda_p": {"type": "uniform", "low": 0.1, "hgih": 1}}},
     "did you mean 'space.loss.lambda_p.high'?"),
    ({"space": {"loss.lambda_p": {"type": "choice", "values": [0.1], "low": 0.1}}}, "space.loss.lambda_p.low"),
    ({"space": {"model.num_prototypes": {"type": "int", "low": 2.5, "high": 8}}}, "space.model.num_prototypes.low"),
    ({"space": {"model.dropout": {"type": "uniform", "low": 0.1, "high": 2.0}}}, "space.model.dropout"),
    ({"space": {"loss.perturbation": {"type": "choice", "values": ["zero", "drop"]}}}, "space.loss.perturbation"),
    ({"space": {"model.hidden_dim": {"type": "choice", "values": [30, 64]}}}, "space.model.hidden_dim"),
    ({"space": GOOD, "objective": {"metric": "test_f1"}}, "objective.metric"),
    ({"space": GOOD, "objective": {"sr_weight": -1}}, "objective.sr_weight"),
    ({"space": GOOD, "serach": {"num_samples": 4}}, "'serach'; did you mean 'search'?"),
    ({"space": GOOD, "search": {"num_sample": 4}}, "did you mean 'search.num_samples'?"),
    ({"space": GOOD, "search": {"num_samples": 0}}, "search.num_samples"),
    ({"space": GOOD, "scheduler": {"grace_period": 50}}, "scheduler.grace_period"),
    ({"space": GOOD, "resources": {"cpu": 0}}, "resources.cpu"),
    ({"space": {}}, "space"),
    ({"space": None}, "space"),
    ({"objective": {"metric": "val_f1"}}, "space"),
])
def test_invalid_search_space_names_the_bad_key(tmp_path, base_cfg, doc, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        validate_spec(load_search_space(path), base_cfg)
    assert needle in str(err.value)


def test_parse_errors_name_the_source():
    with pytest.raises(ConfigError, match=r"^mine\.yaml: space\.loss\.lambda_p\.high: must be > low"):
        parse_search_space({"space": {"loss.lambda_p": {"type": "uniform", "low": 1, "high": 0.5}}}, "mine.yaml")


def test_integer_bounds_become_ints_and_the_spec_round_trips():
    spec = parse_search_space({"space": {"model.num_prototypes": {"type": "int", "low": 2.0, "high": 8.0},
                                         **GOOD}})
    p = spec.space["model.num_prototypes"]
    assert (p.low, p.high) == (2, 8) and isinstance(p.low, int)
    assert p.contains(4) and not p.contains(4.5) and not p.contains(9) and not p.contains(True)
    data = spec_to_dict(spec)
    assert "values" not in data["space"]["loss.lambda_p"]
    assert parse_search_space(data) == spec
    assert ParamSpec(type="choice", values=["a", "b"]).ends() == ("a", "b")


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


def test_default_point_moves_base_values_into_the_space(base_cfg):
    spec = parse_search_space({"space": {"loss.perturbation": {"type": "choice", "values": ["mask"]},
                                         "model.dropout": {"type": "uniform", "low": 0.2, "high": 0.3}}})
    cfg = dataclasses.replace(base_cfg, model=dataclasses.replace(base_cfg.model, dropout=0.1),
                              loss=dataclasses.replace(base_cfg.loss, perturbation="zero"))
    assert default_point(spec, cfg) == {"loss.perturbation": "mask", "model.dropout": 0.2}


def test_cli_overrides_split_between_config_and_search_space(base_cfg):
    project, search = split_overrides(["train.epochs=4", "model.num_prototypes=8", "search.num_samples=5",
                                       "space.train.lr=null", "scheduler.grace_period=2",
                                       "space.loss.delta_c={type: uniform, low: 0.1, high: 0.9}"])
    assert project == ["train.epochs=4", "model.num_prototypes=8"]
    spec = load_search_space(REPO / "configs" / "search" / "default.yaml", search)
    assert spec.search.num_samples == 5 and spec.scheduler.grace_period == 2
    assert "train.lr" not in spec.space and spec.space["loss.delta_c"].type == "uniform"
    validate_spec(spec, base_cfg)


def test_malformed_space_override():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_search_space(REPO / "configs" / "search" / "smoke.yaml", ["space.loss.lambda_p"])


def test_apply_params_leaves_the_base_alone(base_cfg):
    base = to_dict(base_cfg)
    cfg = apply_params(base, {"loss.lambda_p": np.float64(0.05), "model.num_prototypes": np.int64(7)})
    assert cfg.loss.lambda_p == 0.05 and type(cfg.model.num_prototypes) is int
    assert base == to_dict(base_cfg)
    with pytest.raises(ConfigError, match="model.num_prototypes"):
        apply_params(base_cfg, {"model.num_prototypes": 0})
