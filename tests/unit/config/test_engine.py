"""The config engine: named errors with suggestions, dotted keys, type checks, ``require`` in sections."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from ray_logmilp.config import (ConfigError, apply_overrides, from_dict, get_dotted, require, set_dotted, suggest,
                                to_dict, unknown_key_message)


@dataclass
class Inner:
    mode: Literal["fast", "slow"] = "fast"
    size: int = 4
    rate: float = 0.5
    names: tuple[str, ...] = ("a",)
    limit: int | None = None

    def __post_init__(self) -> None:
        require(self.size >= 1, "size", f"must be >= 1, got {self.size}")
        require(self.rate < self.size, "", "rate must be below size")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    enabled: bool = True


def build(data: dict) -> Outer:
    return from_dict(Outer, data)


def test_unknown_nested_key_names_the_dotted_flag_and_the_closest_one():
    with pytest.raises(ConfigError) as exc:
        build({"inner": {"sise": 3}})
    assert str(exc.value).startswith("unknown key 'inner.sise'; did you mean 'inner.size'?")
    assert "(inner accepts: limit, mode, names, rate, size)" in str(exc.value)


def test_unknown_key_far_from_every_name_has_no_suggestion():
    assert suggest("zzzz", ["size", "rate"]) is None
    assert unknown_key_message("zzzz", ["size", "rate"]) == "unknown key 'zzzz' (the top level accepts: rate, size)"


@pytest.mark.parametrize("data, message", [
    ({"inner": {"size": "x"}}, "inner.size: expected an integer, got 'x'"),
    ({"inner": {"size": True}}, "inner.size: expected an integer, got True"),
    ({"inner": {"rate": "fast"}}, "inner.rate: expected a number, got 'fast'"),
    ({"inner": {"rate": "inf"}}, "inner.rate: expected a finite number, got inf"),
    ({"inner": {"names": "a"}}, "inner.names: expected a list, got 'a'"),
    ({"inner": {"names": ["a", 3]}}, "inner.names[1]: expected a string, got 3"),
    ({"inner": {"limit": "many"}}, "inner.limit: 'many' is not a valid"),
    ({"enabled": "yes please"}, "enabled: expected true/false, got 'yes please'"),
    ({"inner": 3}, "inner: expected a mapping of Inner fields, got 3"),
])
def test_wrong_types_name_the_flag(data, message):
    with pytest.raises(ConfigError) as exc:
        build(data)
    assert str(exc.value).startswith(message)


def test_literal_choices_are_listed():
    with pytest.raises(ConfigError, match=r"inner\.mode: 'medium' is not one of \['fast', 'slow'\]"):
        build({"inner": {"mode": "medium"}})
    assert build({"inner": {"mode": "slow"}}).inner.mode == "slow"


def test_require_errors_carry_the_dotted_prefix():
    with pytest.raises(ConfigError) as exc:
        build({"inner": {"size": 0}})
    assert str(exc.value) == "inner.size: must be >= 1, got 0"
    # key '' names the whole section
    with pytest.raises(ConfigError) as exc:
        build({"inner": {"size": 2, "rate": 3}})
    assert str(exc.value) == "inner: rate must be below size"


def test_harmless_conversions():
    cfg = build({"inner": {"rate": 2, "names": ["x", "y"], "limit": None}})
    assert cfg.inner.rate == 2.0 and isinstance(cfg.inner.rate, float)
    assert cfg.inner.names == ("x", "y")
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert to_dict(cfg)["inner"]["names"] == ["x", "y"]


def test_get_dotted_walks_dataclasses_and_mappings():
    cfg = build({"inner": {"size": 7}})
    assert get_dotted(cfg, "inner.size") == 7
    assert get_dotted({"a": {"b": 1}}, "a.b") == 1
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.sise'; did you mean 'inner\.size'\?"):
        get_dotted(cfg, "inner.sise")
    with pytest.raises(ConfigError, match=r"inner\.size is a value, not a section"):
        get_dotted(cfg, "inner.size.bits")


def test_set_dotted_creates_sections_and_refuses_to_descend_into_a_value():
    data: dict = {"a": 1}
    assert set_dotted(data, "b.c.d", 2) == {"a": 1, "b": {"c": {"d": 2}}}
    with pytest.raises(ConfigError, match=r"a\.x: 'a' is a value, not a section"):
        set_dotted(data, "a.x", 3)


def test_apply_overrides_reads_yaml_values():
    data = apply_overrides({}, ["inner.names=[p, q]", "inner.limit=null", "enabled=false", "inner.rate=3e-3"])
    cfg = build(data)
    assert cfg.inner.names == ("p", "q") and cfg.inner.limit is None and cfg.enabled is False
    assert cfg.inner.rate == pytest.approx(0.003)
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["inner.size"])
    with pytest.raises(ConfigError, match="empty key"):
        apply_overrides({}, ["=3"])
