"""The config engine every stage uses: dataclasses checked field by field, YAML files, dotted overrides.

A section is a dataclass whose fields carry type annotations; :func:`from_dict` builds one from a plain
mapping, checking each value against its annotation. Every error is a :class:`ConfigError` whose
message starts with the dotted flag (``train.epochs: expected an integer, got 'x'``); an unknown key
also names the closest known one (``did you mean 'train.epochs'?``). Nothing here imports torch or
Ray, so a bad flag is reported in well under a second.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the dotted key."""


# --------------------------------------------------------------------------------------------------
# Generic machinery: dict <-> dataclass with type checks and named errors.
# --------------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert the harmless cases (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1 and dataclasses.is_dataclass(options[0]):
            return _coerce(value, options[0], key)   # an optional section: its own error names the inner key
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "3e-3" (no dot) as a string; users write it that way in overrides and files.
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
            if not math.isfinite(value):
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", localns: dict[str, Any] | None = None) -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, localns=localns)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], names, prefix))
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        # __post_init__ validation names the field relative to its dataclass; add the dotted prefix.
        msg = str(exc)
        raise ConfigError(f"{prefix}{msg}" if not msg.startswith(":") else f"{prefix.rstrip('.')}{msg}") from None
    except TypeError as exc:  # a required field missing
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from None
    return obj


def suggest(key: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``key`` (difflib's ratio >= 0.6), or None."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_key_message(key: str, known: Iterable[str], prefix: str = "") -> str:
    """``unknown key 'train.epoch'; did you mean 'train.epochs'? (train accepts: ...)``"""
    known = sorted(known)
    guess = suggest(key, known)
    hint = f"; did you mean '{prefix}{guess}'?" if guess else ""
    section = prefix.rstrip(".") or "the top level"
    return f"unknown key '{prefix}{key}'{hint} ({section} accepts: {', '.join(known)})"


def get_dotted(obj: Any, dotted: str) -> Any:
    """The value at ``a.b.c`` in a dataclass tree or nested mapping; ConfigError naming the flag if absent."""
    node, done = obj, []
    for part in dotted.split("."):
        if dataclasses.is_dataclass(node):
            names = [f.name for f in dataclasses.fields(node)]
            if part not in names:
                raise ConfigError(unknown_key_message(part, names, "".join(p + "." for p in done)))
            node = getattr(node, part)
        elif isinstance(node, dict):
            if part not in node:
                raise ConfigError(unknown_key_message(part, node, "".join(p + "." for p in done)))
            node = node[part]
        else:
            raise ConfigError(f"{'.'.join(done)} is a value, not a section (in '{dotted}')")
        done.append(part)
    return node


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``a.b.c = value`` in a nested dict, creating sections; in place, returns ``data``."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value
    return data


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (tuples become lists) suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        dotted, raw = item.split("=", 1)
        dotted = dotted.strip().lstrip("-")
        if not dotted:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {dotted}: cannot parse value {raw!r}: {exc}") from None
        set_dotted(data, dotted, value)
    return data


def require(cond: bool, key: str, message: str) -> None:
    """Validation inside ``__post_init__``: ``key`` is the field name ('' for the whole section)."""
    if not cond:
        raise ConfigError(f"{key}: {message}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict (an empty file is an empty config)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: the top level must be a mapping of stages")
    return data


def load_stage(cls: type, path: str | Path | None, overrides: list[str] | None = None,
               section: str | None = None) -> Any:
    """Load one stage's dataclass from ``path`` (optionally one ``section`` of it) plus overrides."""
    data = load_yaml(path) if path else {}
    if section is not None:
        data = data.get(section) or {}
        overrides = [o[len(section) + 1:] for o in (overrides or []) if o.startswith(section + ".")]
    apply_overrides(data, overrides or [])
    return from_dict(cls, data, prefix=f"{section}." if section else "")
