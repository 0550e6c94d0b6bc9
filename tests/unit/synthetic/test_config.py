"""SyntheticConfig: every field documented, checked through the config engine with the field named."""
from __future__ import annotations

import inspect
import re

import pytest

from ray_logmilp.config import ConfigError, from_dict
from ray_logmilp.synthetic import SyntheticConfig


@pytest.mark.parametrize("kw, field", [
    (dict(n_lines=0), "n_lines"),
    (dict(kind_weights=(0, 0, 0, 0)), "kind_weights"),
    (dict(kind_weights=(1, 1)), "kind_weights"),
    (dict(clean_lines=10), "clean_lines"),
    (dict(lines_per_second=0), "lines_per_second"),
    (dict(burst_length=(30, 10)), "burst_length"),
])
def test_config_validation_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        SyntheticConfig(**kw)


def test_config_fields_have_docstrings():
    src = inspect.getsource(SyntheticConfig)
    for name in SyntheticConfig.__dataclass_fields__:
        assert re.search(rf"\n    {name}: .*\n    \"\"\"", src), f"{name} lacks a docstring"


def test_wrong_types_and_unknown_fields_name_the_field():
    with pytest.raises(ConfigError, match="^n_lines: expected an integer, got 'many'"):
        from_dict(SyntheticConfig, {"n_lines": "many"})
    with pytest.raises(ConfigError, match=r"^kind_weights\[2\]: expected a number"):
        from_dict(SyntheticConfig, {"kind_weights": [1, 1, "x", 1]})
    with pytest.raises(ConfigError, match="did you mean 'episode_rate'"):
        from_dict(SyntheticConfig, {"episode_rat": 3})


def test_a_config_changed_after_construction_is_checked_again(tmp_path):
    from ray_logmilp.synthetic import generate

    cfg = SyntheticConfig(n_lines=2000)
    cfg.clean_lines = 5
    with pytest.raises(ConfigError, match="^clean_lines: "):
        generate(cfg, tmp_path)


def test_round_trip_through_dict():
    cfg = SyntheticConfig(kind_weights=(1, 0, 0, 0), burst_length=(5, 9), seed=3)
    data = cfg.to_dict()
    assert data["kind_weights"] == [1.0, 0.0, 0.0, 0.0] and data["burst_length"] == [5, 9]
    assert from_dict(SyntheticConfig, data) == cfg
