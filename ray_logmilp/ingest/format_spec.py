"""Log formats: the format YAML's schema, checked by the config engine, and :func:`load_format`.

A :class:`LogFormat` is data, loaded from a small YAML file (built-ins live in
``ray_logmilp/ingest/format_specs/``; users write their own, see ``docs/formats.md``). It says how one
raw line becomes (timestamp, label, session, content): the header template is compiled by
:mod:`ray_logmilp.ingest.header`, and :func:`ray_logmilp.ingest.parse.parse_chunk` applies it.

The YAML is read with :func:`ray_logmilp.config.from_dict`, like every other config: each section is a
dataclass, and an error names the dotted key (``format.timestamp.format``) and, for an unknown key, the
closest known one. Loading raises :class:`FormatError` (a :class:`~ray_logmilp.config.ConfigError`)
whose message starts with the file it came from.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.config import ConfigError, from_dict, require, to_dict
from ray_logmilp.ingest.header import CompiledHeader, check_re2, compile_header

__all__ = ["DEFAULT_MAX_LINE_BYTES", "DrainOptions", "FormatError", "LabelRule", "LogFormat", "MaskRule",
           "SessionRule", "TimestampRule", "builtin_formats", "load_format"]

DEFAULT_MAX_LINE_BYTES = 65536
"""Lines longer than this many bytes (after removing the newline) are quarantined as ``line_too_long``."""


class FormatError(ConfigError):
    """A log format definition is invalid; the message names the file and the offending key."""


@dataclass(frozen=True)
class TimestampRule:
    """How to turn header fields into epoch seconds.

    Attributes:
        fields: header fields whose values are joined with a single space before parsing (one name may
            be written without a list).
        format: ``"epoch"`` (seconds since 1970, a decimal fraction is allowed) or a ``strptime``
            format (naive times are read as UTC). A trailing ``%f`` after one separator character
            (``%S,%f`` or ``%S.%f``) reads 1-9 fractional digits after ``,`` or ``.``; the fraction
            may be absent in the data.
    """

    fields: tuple[str, ...] | str
    format: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", (self.fields,) if isinstance(self.fields, str) else tuple(self.fields))
        require(bool(self.fields), "fields", "must list at least one header field")
        require(bool(self.format), "format", "must be 'epoch' or a strptime format string")

    @property
    def is_epoch(self) -> bool:
        return self.format == "epoch"


@dataclass(frozen=True)
class LabelRule:
    """Per-line labels: a line is normal (0) when ``field`` equals ``normal``, anomalous (1) otherwise.
    (Quote ``'-'`` in YAML.)"""

    field: str
    normal: str


@dataclass(frozen=True)
class SessionRule:
    """Session key: the first capture group of ``pattern`` searched in ``field`` (whole match if the
    pattern has no group); lines without a match get a null session."""

    field: str
    pattern: str

    def __post_init__(self) -> None:
        require(bool(self.pattern), "pattern", "must be a non-empty regular expression")


@dataclass(frozen=True)
class MaskRule:
    """A masking rule applied to content before template mining (RE2 ``pattern`` → ``replacement``).

    Supports ``rule["pattern"]`` as well as ``rule.pattern``.
    """

    pattern: str
    replacement: str = "<*>"

    def __post_init__(self) -> None:
        require(bool(self.pattern), "pattern", "must be a non-empty regular expression")

    def __getitem__(self, key: str) -> str:
        if key not in ("pattern", "replacement"):
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, str]:
        return {"pattern": self.pattern, "replacement": self.replacement}


@dataclass(frozen=True)
class DrainOptions:
    """drain3's options under ``drain:`` (see :class:`ray_logmilp.ingest.templates.ParserConfig` for what
    each does); a key left out keeps the parser's default. Read-only."""

    sim_th: float | None = None
    depth: int | None = None
    max_children: int | None = None
    max_clusters: int | None = None
    extra_delimiters: tuple[str, ...] | None = None
    parametrize_numeric_tokens: bool | None = None

    def __post_init__(self) -> None:
        if self.sim_th is not None:
            require(0.0 < self.sim_th <= 1.0, "sim_th", f"must be in (0, 1], got {self.sim_th!r}")
        if self.depth is not None:
            require(self.depth >= 3, "depth", f"must be >= 3 (drain3's minimum), got {self.depth!r}")
        for key in ("max_children", "max_clusters"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """The keys that are set (what the YAML said)."""
        return {k: v for k, v in to_dict(self).items() if v is not None}


@dataclass(frozen=True)
class LogFormat:
    """A validated log format. Build it with :func:`load_format` or :meth:`from_dict`.

    Attributes:
        name: short identifier (``bgl``, ``hdfs``, ...).
        header: Loghub-style template, e.g. ``<Date> <Time> <Level> <Content>``; must contain
            ``<Content>``. Spaces match any run of whitespace; other literal text is an RE2 fragment.
        timestamp: which fields hold the time and how to read them.
        label: per-line label rule, or None when the logs carry no labels (labels are then -1).
        session: session-key rule, or None.
        masking: content masking rules for template mining (used by :mod:`ray_logmilp.ingest.templates`).
        drain: drain3 options.
        max_line_bytes: longer lines are quarantined as ``line_too_long``.
        description: one line for humans.
        source: where the definition came from (file path or ``builtin:<name>``); set by
            :meth:`from_dict`, not compared.

    Direct construction also accepts plain mappings for the rules; an invalid definition raises
    :class:`~ray_logmilp.config.ConfigError` naming the key.
    """

    name: str
    header: str
    timestamp: TimestampRule
    label: LabelRule | None = None
    session: SessionRule | None = None
    masking: tuple[MaskRule, ...] = ()
    drain: DrainOptions = field(default_factory=DrainOptions)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    description: str = ""
    source: str = field(default="", init=False, compare=False)
    _compiled: CompiledHeader = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Direct construction with plain mappings: check them the way the YAML is checked.
        for key, cls in (("timestamp", TimestampRule), ("label", LabelRule), ("session", SessionRule),
                         ("drain", DrainOptions)):
            if isinstance(getattr(self, key), Mapping):
                object.__setattr__(self, key, from_dict(cls, dict(getattr(self, key)), prefix=f"{key}."))
        object.__setattr__(self, "masking", tuple(
            from_dict(MaskRule, dict(m), prefix=f"masking[{i}].") if isinstance(m, Mapping) else m
            for i, m in enumerate(self.masking)))
        require(bool(self.name), "name", "must be a non-empty string")
        require(bool(self.header), "header", "must be a non-empty string")
        require(self.max_line_bytes >= 1, "max_line_bytes", f"must be a positive integer, got {self.max_line_bytes!r}")

        ts = self.timestamp
        refs = {"timestamp.fields": ts.fields, "label.field": [self.label.field] if self.label else [],
                "session.field": [self.session.field] if self.session else []}
        needed = list(dict.fromkeys(["Content", *(name for names in refs.values() for name in names)]))
        compiled = compile_header(self.header, needed, refs, ts.format,
                                  self.session.pattern if self.session else None)
        for i, rule in enumerate(self.masking):
            check_re2(rule.pattern, f"masking[{i}].pattern", replacement=rule.replacement)
        object.__setattr__(self, "_compiled", compiled)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    # ---- derived views ----
    @property
    def fields(self) -> tuple[str, ...]:
        """All header field names, in template order."""
        return self._compiled.fields

    @property
    def header_regex(self) -> str:
        """The RE2 regex (Loghub semantics) the header template compiles to, every field named."""
        return self._compiled.header_regex

    def split_line(self, line: str) -> dict[str, str] | None:
        """All header fields of one line as a dict, or None if the header does not match (debug aid)."""
        res = pc.extract_regex(pa.array([line], pa.string()), pattern=self._compiled.header_regex)[0]
        return None if not res.is_valid else {k: v for k, v in res.as_py().items()}

    # ---- (de)serialisation ----
    def to_dict(self) -> dict[str, Any]:
        """The YAML-shaped definition (round-trips through :meth:`from_dict`)."""
        out = {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}
        out["drain"] = self.drain.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any, source: str = "") -> "LogFormat":
        """Check a YAML-shaped mapping and build a LogFormat. Unknown keys are errors (with a did-you-mean).

        Raises:
            FormatError: the message starts with ``source`` and names the dotted key (``format.header``).
        """
        try:
            if isinstance(data, Mapping):
                # An empty section (``masking:`` with nothing under it) means "not given".
                data = {k: v for k, v in data.items() if v is not None}
                for key in ("name", "header", "timestamp"):
                    require(key in data, f"format.{key}", "is required")
            fmt = from_dict(cls, data if not isinstance(data, Mapping) else dict(data), prefix="format.")
        except ConfigError as exc:
            raise FormatError(f"{source or 'format definition'}: {exc}") from None
        object.__setattr__(fmt, "source", source)
        return fmt


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def _specs_dir():
    return importlib.resources.files("ray_logmilp.ingest").joinpath("format_specs")


def builtin_formats() -> list[str]:
    """Names of the formats shipped in ``ray_logmilp/ingest/format_specs`` (sorted)."""
    return sorted(p.name[: -len(".yaml")] for p in _specs_dir().iterdir() if p.name.endswith(".yaml"))


def _parse_yaml(text: str, source: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(f"{source}: not valid YAML: {exc}") from None


def load_format(name_or_path: "str | os.PathLike[str] | LogFormat") -> LogFormat:
    """Load a built-in format by name (``"bgl"``) or a user format from a YAML file path.

    Raises:
        FormatError: unknown name (the message lists the built-ins), missing file, invalid YAML,
            unknown keys, invalid regexes or inconsistent fields.
    """
    if isinstance(name_or_path, LogFormat):
        return name_or_path
    text = os.fspath(name_or_path)
    looks_like_path = (
        isinstance(name_or_path, os.PathLike) or text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text
    )
    if looks_like_path or (os.path.isfile(text) and text not in builtin_formats()):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FormatError(f"format file not found: {path}")
        data = _parse_yaml(path.read_text(encoding="utf-8"), str(path))
        if isinstance(data, Mapping) and "name" not in data:
            data = {"name": path.stem.split(".")[0], **data}
        return LogFormat.from_dict(data, source=str(path))
    spec = _specs_dir().joinpath(f"{text}.yaml")
    if not spec.is_file():
        known = builtin_formats()
        raise FormatError(
            f"unknown log format {text!r}; built-in formats: {', '.join(known)} "
            f"(or give the path of a format YAML, see docs/formats.md)"
        )
    data = _parse_yaml(spec.read_text(encoding="utf-8"), f"builtin:{text}")
    return LogFormat.from_dict(data, source=f"builtin:{text}")
