"""Log formats: how one raw line becomes (timestamp, label, session, content).

A :class:`LogFormat` is data, loaded from a small YAML file (built-ins live in
``ray_logmilp/ingest/format_specs/``; users write their own, see ``docs/formats.md``). The header is a
Loghub-style template such as ``<Date> <Time> <Level> <Component>: <Content>``: every ``<Field>`` is a
named field, runs of spaces between fields match any run of whitespace, and the literal text between
fields is a regular-expression fragment (RE2 syntax, as used by pyarrow), so
``<Component>(\\[<PID>\\])?: <Content>`` is allowed.

:func:`parse_chunk` is the hot path: it parses a whole chunk of lines with a handful of vectorised
Arrow kernels (``extract_regex``, ``strptime``, casts) and returns two tables, the events and the
quarantine, such that every input line lands in exactly one of them.

Field semantics follow Loghub's ``generate_logformat_regex`` exactly (every field ``(.*?)``, the
template anchored at both ends). For speed the chunk is first matched with an equivalent, cheaper
regex (fields before a space become ``\\S+``, fields before a literal character ``c`` become
``[^c]*``) that RE2 can run in one pass; lines that the fast regex rejects are re-matched with the
exact Loghub regex, so the result is always the Loghub result. A header whose fields are separated by
spaces only (BGL: ``<Label> <Timestamp> ... <Level> <Content>``) skips the regex altogether for the
lines it can: an ASCII-whitespace split gives the exact regex's captures for every line that splits
into ``len(fields)`` pieces and holds no ``\\v`` (the one ASCII whitespace that RE2's ``\\s`` leaves
out); any other line takes the regex path. The split costs a third of the regex.
"""
from __future__ import annotations

import importlib.resources
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DRAIN_KEYS",
    "EVENTS_SCHEMA",
    "QUARANTINE_REASONS",
    "QUARANTINE_SCHEMA",
    "RAW_CHARS",
    "FormatError",
    "LabelRule",
    "LogFormat",
    "MaskRule",
    "SessionRule",
    "TimestampRule",
    "builtin_formats",
    "empty_events",
    "empty_quarantine",
    "load_format",
    "parse_chunk",
    "quarantine_table",
    "raw_text",
]

DEFAULT_MAX_LINE_BYTES = 65536
"""Lines longer than this many bytes (after removing the newline) are quarantined as ``line_too_long``."""

RAW_CHARS = 200
"""How many characters of an offending line the quarantine keeps in ``raw``."""

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("timestamp", pa.float64(), nullable=False),
        pa.field("label", pa.int8(), nullable=False),
        pa.field("session", pa.string()),
        pa.field("content", pa.string(), nullable=False),
    ]
)
"""One row per parsed line: epoch-seconds timestamp, label (-1 unknown, 0 normal, 1 anomalous)."""

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
    ]
)
"""One row per line that could not be parsed; ``raw`` holds its first :data:`RAW_CHARS` characters."""

QUARANTINE_REASONS = (
    "undecodable_bytes",
    "line_too_long",
    "empty_line",
    "header_mismatch",
    "bad_timestamp",
    "truncated_gzip",
    "read_error",
)
"""Every reason a line can be quarantined for (the first five come from :func:`parse_chunk`, the
last two from :mod:`ray_logmilp.sources`)."""

DRAIN_KEYS = {
    "sim_th": (float, int),
    "depth": (int,),
    "max_children": (int,),
    "max_clusters": (int, type(None)),
    "extra_delimiters": (list,),
    "parametrize_numeric_tokens": (bool,),
}
"""Keys allowed under ``drain:`` in a format YAML (drain3's options) and their accepted types."""

_TOP_KEYS = ("name", "description", "header", "timestamp", "label", "session", "masking", "drain",
             "max_line_bytes")
_PLACEHOLDER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")
_REGEX_META = set(".^$*+?()[]{}|\\")
_FRACTION_SEPARATORS = ".,:"
_EPOCH_PATTERN = r"^\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*$"
_FRACTION_TAIL = r"[.,]\d{1,9}$"
_FRACTION_DIGITS = r"[.,](?P<frac>\d{1,9})$"


class FormatError(ValueError):
    """A log format definition is invalid; the message names the file and the offending key."""


# --------------------------------------------------------------------------------------------------
# Rules (small frozen dataclasses; all picklable so a LogFormat can be shipped to Ray workers)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimestampRule:
    """How to turn header fields into epoch seconds.

    Attributes:
        fields: header fields whose values are joined with a single space before parsing.
        format: ``"epoch"`` (seconds since 1970, a decimal fraction is allowed) or a ``strptime``
            format (naive times are read as UTC). A trailing ``%f`` after one separator character
            (``%S,%f`` or ``%S.%f``) reads 1-9 fractional digits after ``,`` or ``.``; the fraction
            may be absent in the data.
    """

    fields: tuple[str, ...]
    format: str

    @property
    def is_epoch(self) -> bool:
        return self.format == "epoch"


@dataclass(frozen=True)
class LabelRule:
    """Per-line labels: a line is normal (0) when ``field`` equals ``normal``, anomalous (1) otherwise."""

    field: str
    normal: str


@dataclass(frozen=True)
class SessionRule:
    """Session key: the first capture group of ``pattern`` searched in ``field`` (whole match if the
    pattern has no group); lines without a match get a null session."""

    field: str
    pattern: str


@dataclass(frozen=True)
class MaskRule:
    """A masking rule applied to content before template mining (RE2 ``pattern`` → ``replacement``).

    Supports ``rule["pattern"]`` as well as ``rule.pattern``.
    """

    pattern: str
    replacement: str = "<*>"

    def __getitem__(self, key: str) -> str:
        if key not in ("pattern", "replacement"):
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, str]:
        return {"pattern": self.pattern, "replacement": self.replacement}


class _FrozenDict(dict):
    """A read-only, picklable dict (drain options of a shared LogFormat must not be mutated)."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("LogFormat.drain is read-only; build a new format with dataclasses.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]

    def __reduce__(self):  # pickle through a plain dict, never through __setitem__
        return (_FrozenDict, (dict(self),))

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------------------
# Header template → regexes
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Compiled:
    """Derived, validated regexes of a format (computed once in LogFormat.__post_init__)."""

    fields: tuple[str, ...]
    needed: tuple[str, ...]
    header_regex: str  # exact Loghub regex, every field captured (for humans and split_line)
    exact_regex: str  # exact Loghub regex, only needed fields captured
    fast_regex: str  # equivalent regex that RE2 can usually run one-pass
    fast_is_exact: bool  # fast == exact (nothing could be sped up)
    whitespace_only: bool  # fields separated by spaces only: the split fast path applies
    session_regex: str | None
    ts_base_format: str | None  # strptime format without the fraction part
    ts_has_fraction: bool


def _regex_pieces(pattern: str):
    """Split a regex into (index, piece): an escape (``\\x``), a whole character class (``[...]``, where a
    ``]`` right after ``[`` or ``[^`` is a member), or one character. Rewriters act on the ``(`` pieces and
    copy the rest, so a ``(`` inside a class or after a backslash is never mistaken for a group."""
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            yield i, pattern[i:i + 2]
            i += 2
        elif ch == "[":
            j = i + 1
            if pattern.startswith("^", j):
                j += 1
            if pattern.startswith("]", j):
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            yield i, pattern[i:j + 1]
            i = j + 1
        else:
            yield i, ch
            i += 1


def _rewrite_groups(fragment: str, where: str) -> str:
    """Turn unnamed capturing groups ``(`` of a regex fragment into ``(?:`` (pyarrow's
    ``extract_regex`` accepts named groups only). Named groups are rejected."""
    out: list[str] = []
    for i, piece in _regex_pieces(fragment):
        if piece == "(":
            if fragment.startswith("(?P<", i) or fragment.startswith("(?<", i):
                raise FormatError(f"{where}: named groups are not allowed here ({fragment!r})")
            piece = "(" if fragment.startswith("(?", i) else "(?:"
        out.append(piece)
    return "".join(out)


def _literal_tokens(literal: str) -> list[tuple[str, str]]:
    """Tokenise a header literal into ('sep', ' ') for space runs, ('char', c) for a literal
    character (plain or escaped punctuation) and ('complex', text) for anything else."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(literal)
    while i < n:
        ch = literal[i]
        if ch == " ":
            while i < n and literal[i] == " ":
                i += 1
            tokens.append(("sep", " "))
            continue
        if ch == "\\":
            nxt = literal[i + 1 : i + 2]
            if nxt and not nxt.isalnum() and nxt != "_":
                tokens.append(("char", nxt))
            else:
                tokens.append(("complex", literal[i : i + 2]))
            i += 2
            continue
        if ch in _REGEX_META:
            tokens.append(("complex", ch))
        else:
            tokens.append(("char", ch))
        i += 1
    return tokens


def _char_class_escape(c: str) -> str:
    return c if c.isalnum() else "\\" + c


def _compile_header(header: str, needed: Sequence[str], where: str) -> tuple[tuple[str, ...], str, str, str, bool]:
    """Build (fields, header_regex, exact_regex, fast_regex, fast_is_exact) from a template."""
    parts = _PLACEHOLDER.split(header)
    literals = parts[0::2]  # len(fields) + 1 literals around the fields
    fields = tuple(parts[1::2])
    if not fields:
        raise FormatError(f"{where}: header {header!r} has no <Field> placeholders")
    dupes = sorted({f for f in fields if fields.count(f) > 1})
    if dupes:
        raise FormatError(f"{where}: header repeats field(s) {dupes}")
    for lit in literals:
        bad = re.search(r"<[A-Za-z_][^<>\s]*>", lit)
        if bad:
            raise FormatError(f"{where}: header field {bad.group(0)!r} is not a valid name "
                              "(letters, digits and '_', not starting with a digit)")
        if lit.endswith("(?P") or lit.endswith("(?"):
            raise FormatError(f"{where}: named groups are not allowed in the header literal {lit!r}")
    # Loghub: runs of spaces -> \s+, the rest of a literal is a regex fragment.
    lit_rx = [_rewrite_groups(re.sub(" +", r"\\s+", lit), f"{where}: header") for lit in literals]
    last_is_field = literals[-1] == ""
    n = len(fields)

    def exact(capture: Iterable[str]) -> str:
        capture = set(capture)
        out = ["^", lit_rx[0]]
        for i, name in enumerate(fields):
            body = ".*" if (i == n - 1 and last_is_field) else ".*?"
            out.append(f"(?P<{name}>{body})" if name in capture else f"(?:{body})")
            out.append(lit_rx[i + 1])
        out.append("$")
        return "".join(out)

    header_regex = exact(fields)
    exact_regex = exact(needed)

    # Fast regex: restrict fields while every literal so far is simple (see module docstring).
    needed_set = set(needed)
    out = ["^", lit_rx[0]]
    simple = all(kind != "complex" for kind, _ in _literal_tokens(literals[0]))
    changed = False
    for i, name in enumerate(fields):
        nxt = _literal_tokens(literals[i + 1])
        is_last = i == n - 1 and last_is_field
        if is_last:
            prev = _literal_tokens(literals[i])
            if prev and prev[-1][0] == "sep":
                body = r"(?:\S.*)?"  # same language as '\s+.*$', but unambiguous for RE2
                changed = True
            else:
                body = ".*"
        elif simple and nxt and nxt[0][0] == "sep":
            body, changed = r"\S+", True
        elif simple and nxt and nxt[0][0] == "char":
            c = _char_class_escape(nxt[0][1])
            prev = _literal_tokens(literals[i])
            # after a space run the field must not start with whitespace: keeps RE2 one-pass
            body = f"(?:[^{c}\\s][^{c}]*)?" if prev and prev[-1][0] == "sep" else f"[^{c}]*"
            changed = True
        else:
            body = ".*?"
            simple = False
        if not is_last and any(kind == "complex" for kind, _ in nxt):
            simple = False
        out.append(f"(?P<{name}>{body})" if name in needed_set else f"(?:{body})")
        out.append(lit_rx[i + 1])
    out.append("$")
    fast_regex = "".join(out)
    return fields, header_regex, exact_regex, fast_regex, not changed


def _whitespace_only(header: str) -> bool:
    """True when the header is ``<F1> <F2> ... <Fn>``: starts and ends with a field, spaces in between."""
    literals = _PLACEHOLDER.split(header)[0::2]
    return (len(literals) > 2 and literals[0] == "" and literals[-1] == ""
            and all(lit and not lit.strip(" ") for lit in literals[1:-1]))


def _check_re2(pattern: str, where: str, replacement: str | None = None) -> None:
    """Compile ``pattern`` with RE2 (pyarrow) and raise FormatError with RE2's message if invalid."""
    probe = pa.array(["probe"], pa.string())
    try:
        if replacement is None:
            pc.match_substring_regex(probe, pattern=pattern)
        else:
            pc.replace_substring_regex(probe, pattern=pattern, replacement=replacement)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FormatError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None


def _session_regex(pattern: str, where: str) -> str:
    """Name the single capture group of a session pattern 'session' (or wrap the whole pattern)."""
    try:
        groups = re.compile(pattern).groups
    except re.error:
        groups = None  # not Python syntax; RE2 will judge it below
    _check_re2(pattern, where)
    if groups is None:
        groups = pattern.count("(") - pattern.count("(?") - pattern.count("\\(")
    if groups == 0:
        return f"(?P<session>{pattern})"
    if groups > 1:
        raise FormatError(f"{where}: session pattern {pattern!r} must have at most one capture group, has {groups}")
    # rewrite the single capturing group to a named one
    out: list[str] = []
    skip_to = 0
    for i, piece in _regex_pieces(pattern):
        if i < skip_to:
            continue
        if piece == "(" and pattern.startswith("(?P<", i):
            skip_to = pattern.index(">", i) + 1           # drop the user's group name
            piece = "(?P<session>"
        elif piece == "(" and not pattern.startswith("(?", i):
            piece = "(?P<session>"
        out.append(piece)
    return "".join(out)


# --------------------------------------------------------------------------------------------------
# LogFormat
# --------------------------------------------------------------------------------------------------
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
        masking: content masking rules for template mining (used by :mod:`ray_logmilp.parsing`).
        drain: drain3 options (keys in :data:`DRAIN_KEYS`); read-only.
        max_line_bytes: longer lines are quarantined as ``line_too_long``.
        description: one line for humans.
        source: where the definition came from (file path or ``builtin:<name>``); not compared.
    """

    name: str
    header: str
    timestamp: TimestampRule
    label: LabelRule | None = None
    session: SessionRule | None = None
    masking: tuple[MaskRule, ...] = ()
    drain: Mapping[str, Any] = field(default_factory=dict)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    description: str = ""
    source: str = field(default="", compare=False)
    _compiled: _Compiled = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"format {self.name!r}" + (f" ({self.source})" if self.source else "")
        if not isinstance(self.name, str) or not self.name:
            raise FormatError(f"{where}: 'name' must be a non-empty string")
        if not isinstance(self.header, str) or not self.header:
            raise FormatError(f"{where}: 'header' must be a non-empty string")
        if isinstance(self.max_line_bytes, bool) or not isinstance(self.max_line_bytes, int) or self.max_line_bytes < 1:
            raise FormatError(f"{where}: 'max_line_bytes' must be a positive integer, got {self.max_line_bytes!r}")
        # convenience for direct construction: plain mappings become the rule dataclasses
        if isinstance(self.timestamp, Mapping):
            object.__setattr__(self, "timestamp", TimestampRule(tuple(self.timestamp.get("fields") or ()),
                                                                self.timestamp.get("format", "")))
        if isinstance(self.label, Mapping):
            object.__setattr__(self, "label", LabelRule(self.label.get("field"), self.label.get("normal")))
        if isinstance(self.session, Mapping):
            object.__setattr__(self, "session", SessionRule(self.session.get("field"), self.session.get("pattern")))
        object.__setattr__(self, "masking", tuple(
            MaskRule(m.get("pattern"), m.get("replacement", "<*>")) if isinstance(m, Mapping) else m
            for m in self.masking
        ))
        if not isinstance(self.timestamp, TimestampRule):
            raise FormatError(f"{where}: 'timestamp' must be a TimestampRule, got {type(self.timestamp).__name__}")
        object.__setattr__(self, "timestamp", TimestampRule(tuple(self.timestamp.fields), self.timestamp.format))
        object.__setattr__(self, "drain", _FrozenDict(self.drain))

        ts = self.timestamp
        if not ts.fields:
            raise FormatError(f"{where}: 'timestamp.fields' must list at least one header field")
        needed: list[str] = ["Content", *ts.fields]
        if self.label is not None:
            needed.append(self.label.field)
        if self.session is not None:
            needed.append(self.session.field)
        needed = list(dict.fromkeys(needed))
        fields, header_regex, exact_regex, fast_regex, fast_is_exact = _compile_header(self.header, needed, where)
        for key, names in (("timestamp.fields", ts.fields), ("label.field", [self.label.field] if self.label else []),
                           ("session.field", [self.session.field] if self.session else [])):
            for name in names:
                if name not in fields:
                    raise FormatError(f"{where}: '{key}' names {name!r}, which is not a header field {list(fields)}")
        if "Content" not in fields:
            raise FormatError(f"{where}: header {self.header!r} must contain a <Content> field")
        _check_re2(header_regex, f"{where}: header {self.header!r} (as regex)")
        _check_re2(fast_regex, f"{where}: header {self.header!r} (fast regex)")

        base, has_frac = None, False
        if not ts.is_epoch:
            fmt = ts.format
            if "%" not in fmt:
                raise FormatError(f"{where}: 'timestamp.format' must be 'epoch' or a strptime format, got {fmt!r}")
            if "%f" in fmt:
                if not (fmt.endswith("%f") and fmt.count("%f") == 1 and len(fmt) >= 3 and fmt[-3] in _FRACTION_SEPARATORS):
                    raise FormatError(
                        f"{where}: 'timestamp.format' {fmt!r}: %f is only supported at the very end, after one "
                        f"of {_FRACTION_SEPARATORS!r} (e.g. '%H:%M:%S,%f')"
                    )
                base, has_frac = fmt[:-3], True
            else:
                base = fmt
            try:
                pc.strptime(pa.array(["x"]), format=base, unit="s", error_is_null=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise FormatError(f"{where}: 'timestamp.format' {fmt!r} is not usable: {exc}") from None

        session_rx = None
        if self.session is not None:
            session_rx = _session_regex(self.session.pattern, f"{where}: 'session.pattern'")
            _check_re2(session_rx, f"{where}: 'session.pattern'")
        for i, rule in enumerate(self.masking):
            if not isinstance(rule, MaskRule):
                raise FormatError(f"{where}: masking[{i}] must be a MaskRule, got {type(rule).__name__}")
            _check_re2(rule.pattern, f"{where}: masking[{i}].pattern", replacement=rule.replacement)
        _validate_drain(dict(self.drain), where)

        object.__setattr__(
            self,
            "_compiled",
            _Compiled(fields, tuple(needed), header_regex, exact_regex, fast_regex, fast_is_exact,
                      _whitespace_only(self.header), session_rx, base, has_frac),
        )

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
        return {
            "name": self.name,
            "description": self.description,
            "header": self.header,
            "timestamp": {"fields": list(self.timestamp.fields), "format": self.timestamp.format},
            "label": None if self.label is None else {"field": self.label.field, "normal": self.label.normal},
            "session": None if self.session is None else {"field": self.session.field, "pattern": self.session.pattern},
            "masking": [m.to_dict() for m in self.masking],
            "drain": dict(self.drain),
            "max_line_bytes": self.max_line_bytes,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> "LogFormat":
        """Validate a YAML-shaped mapping and build a LogFormat. Unknown keys are errors."""
        where = source or "format definition"
        if not isinstance(data, Mapping):
            raise FormatError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        _no_unknown_keys(data, _TOP_KEYS, where, "")
        for key in ("name", "header", "timestamp"):
            if key not in data or data[key] is None:
                raise FormatError(f"{where}: missing required key {key!r}")
        name = _expect(data, "name", str, where)
        where = f"{where} (format {name!r})" if source else f"format {name!r}"
        header = _expect(data, "header", str, where)
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise FormatError(f"{where}: 'description' must be a string")

        ts = _expect(data, "timestamp", Mapping, where)
        _no_unknown_keys(ts, ("fields", "format"), where, "timestamp.")
        ts_fields = ts.get("fields")
        if isinstance(ts_fields, str):
            ts_fields = [ts_fields]
        if not isinstance(ts_fields, list) or not ts_fields or not all(isinstance(f, str) for f in ts_fields):
            raise FormatError(f"{where}: 'timestamp.fields' must be a non-empty list of field names")
        ts_format = ts.get("format")
        if not isinstance(ts_format, str) or not ts_format:
            raise FormatError(f"{where}: 'timestamp.format' must be 'epoch' or a strptime format string")

        label = None
        if data.get("label") is not None:
            lab = _expect(data, "label", Mapping, where)
            _no_unknown_keys(lab, ("field", "normal"), where, "label.")
            lab_field, normal = lab.get("field"), lab.get("normal")
            if not isinstance(lab_field, str) or not isinstance(normal, str):
                raise FormatError(f"{where}: 'label' needs string keys 'field' and 'normal' (quote '-' in YAML)")
            label = LabelRule(lab_field, normal)

        session = None
        if data.get("session") is not None:
            ses = _expect(data, "session", Mapping, where)
            _no_unknown_keys(ses, ("field", "pattern"), where, "session.")
            ses_field, pattern = ses.get("field"), ses.get("pattern")
            if not isinstance(ses_field, str) or not isinstance(pattern, str) or not pattern:
                raise FormatError(f"{where}: 'session' needs string keys 'field' and 'pattern'")
            session = SessionRule(ses_field, pattern)

        masking: list[MaskRule] = []
        raw_masking = data.get("masking") or []
        if not isinstance(raw_masking, list):
            raise FormatError(f"{where}: 'masking' must be a list of {{pattern, replacement}} mappings")
        for i, rule in enumerate(raw_masking):
            if not isinstance(rule, Mapping):
                raise FormatError(f"{where}: masking[{i}] must be a mapping with 'pattern' and 'replacement'")
            _no_unknown_keys(rule, ("pattern", "replacement"), where, f"masking[{i}].")
            pattern, replacement = rule.get("pattern"), rule.get("replacement", "<*>")
            if not isinstance(pattern, str) or not pattern or not isinstance(replacement, str):
                raise FormatError(f"{where}: masking[{i}] needs a non-empty string 'pattern' and a string 'replacement'")
            masking.append(MaskRule(pattern, replacement))

        drain = data.get("drain") or {}
        if not isinstance(drain, Mapping):
            raise FormatError(f"{where}: 'drain' must be a mapping")
        max_line_bytes = data.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)
        if max_line_bytes is None:
            max_line_bytes = DEFAULT_MAX_LINE_BYTES
        return cls(
            name=name,
            header=header,
            timestamp=TimestampRule(tuple(ts_fields), ts_format),
            label=label,
            session=session,
            masking=tuple(masking),
            drain=dict(drain),
            max_line_bytes=max_line_bytes,
            description=description,
            source=source,
        )


def _no_unknown_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str, prefix: str) -> None:
    unknown = [str(k) for k in data if k not in allowed]
    if unknown:
        raise FormatError(
            f"{where}: unknown key(s) {', '.join(repr(prefix + k) for k in unknown)}; "
            f"allowed: {', '.join(prefix + a for a in allowed)}"
        )


def _expect(data: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, typ):
        kind = "mapping" if typ is Mapping else typ.__name__
        raise FormatError(f"{where}: {key!r} must be a {kind}, got {type(value).__name__}")
    return value


def _validate_drain(drain: dict[str, Any], where: str) -> None:
    _no_unknown_keys(drain, tuple(DRAIN_KEYS), where, "drain.")
    for key, value in drain.items():
        types = DRAIN_KEYS[key]
        if isinstance(value, bool) and bool not in types:
            raise FormatError(f"{where}: 'drain.{key}' must be {'/'.join(t.__name__ for t in types)}, got {value!r}")
        if not isinstance(value, types):
            raise FormatError(f"{where}: 'drain.{key}' must be {'/'.join(t.__name__ for t in types)}, got {value!r}")
    sim_th = drain.get("sim_th")
    if sim_th is not None and not 0.0 < float(sim_th) <= 1.0:
        raise FormatError(f"{where}: 'drain.sim_th' must be in (0, 1], got {sim_th!r}")
    depth = drain.get("depth")
    if depth is not None and depth < 3:
        raise FormatError(f"{where}: 'drain.depth' must be >= 3 (drain3's minimum), got {depth!r}")
    for key in ("max_children", "max_clusters"):
        if drain.get(key) is not None and drain[key] < 1:
            raise FormatError(f"{where}: 'drain.{key}' must be >= 1, got {drain[key]!r}")
    delims = drain.get("extra_delimiters")
    if delims is not None and not all(isinstance(d, str) for d in delims):
        raise FormatError(f"{where}: 'drain.extra_delimiters' must be a list of strings")


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


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------
def raw_text(data: bytes | str, limit: int = RAW_CHARS) -> str:
    """The first ``limit`` characters of a (possibly undecodable) line for the quarantine."""
    if isinstance(data, str):
        return data[:limit]
    return data[: 4 * limit].decode("utf-8", errors="replace")[:limit]


def empty_events() -> pa.Table:
    return EVENTS_SCHEMA.empty_table()


def empty_quarantine() -> pa.Table:
    return QUARANTINE_SCHEMA.empty_table()


def quarantine_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A quarantine table from dict rows ``{file, line_no, reason, raw}``."""
    if not rows:
        return empty_quarantine()
    for row in rows:
        if row["reason"] not in QUARANTINE_REASONS:
            raise ValueError(f"unknown quarantine reason {row['reason']!r}")
    return pa.Table.from_pylist([{k: row[k] for k in QUARANTINE_SCHEMA.names} for row in rows],
                                schema=QUARANTINE_SCHEMA)


def _as_binary_array(lines: "Sequence[bytes] | pa.Array | pa.ChunkedArray") -> tuple[pa.Array, bool]:
    """(array, already_text): a binary (or string) Arrow array of the lines, built without a Python
    loop over lines for list input (one join + lengths)."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    if isinstance(lines, pa.Array):
        t = lines.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return lines, True
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return lines, False
        if pa.types.is_string_view(t):
            return lines.cast(pa.large_string()), True
        if pa.types.is_binary_view(t):
            return lines.cast(pa.large_binary()), False
        raise TypeError(f"parse_chunk: lines must be a binary or string Arrow array, got {t}")
    n = len(lines)
    if n == 0:
        return pa.array([], pa.binary()), False
    if isinstance(lines[0], str):
        return pa.array(lines, pa.large_string()), True
    lengths = np.fromiter(map(len, lines), dtype=np.int64, count=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = b"".join(lines)
    if offsets[-1] < 2**31 - 1:
        arr = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
    else:
        arr = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return arr, False


def _np_bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


# Reason codes (index into _REASON_CODES); 0 = parsed.
_REASON_CODES = ("", "line_too_long", "undecodable_bytes", "empty_line", "header_mismatch", "bad_timestamp")
_TOO_LONG, _UNDECODABLE, _EMPTY, _MISMATCH, _BAD_TS = 1, 2, 3, 4, 5


def _parse_timestamps(fmt: LogFormat, values: pa.Array) -> pa.Array:
    """float64 epoch seconds for each (joined) timestamp string; null where it does not parse."""
    comp = fmt._compiled
    if fmt.timestamp.is_epoch:
        ok = pc.match_substring_regex(values, pattern=_EPOCH_PATTERN)
        safe = pc.if_else(ok, pc.utf8_trim_whitespace(values), pa.scalar("0", values.type))
        out = pc.cast(safe, pa.float64())
        ok = pc.and_(ok, pc.is_finite(out))  # '1e400' parses to inf
        return pc.if_else(ok, out, pa.scalar(None, pa.float64()))
    if not comp.ts_has_fraction:
        ts = pc.strptime(values, format=comp.ts_base_format, unit="s", error_is_null=True)
        return pc.cast(pc.cast(ts, pa.int64()), pa.float64())
    # both searches are anchored at the end only, so RE2 runs them with its DFA (fast)
    main = pc.replace_substring_regex(values, pattern=_FRACTION_TAIL, replacement="", max_replacements=1)
    frac = pc.struct_field(pc.extract_regex(values, pattern=_FRACTION_DIGITS), "frac")
    ts = pc.strptime(main, format=comp.ts_base_format, unit="s", error_is_null=True)
    secs = pc.cast(pc.cast(ts, pa.int64()), pa.float64()).to_numpy(zero_copy_only=False)
    frac = pc.fill_null(frac, "")
    flen = pc.utf8_length(frac).to_numpy(zero_copy_only=False).astype(np.int64)
    fval = pc.cast(pc.if_else(pc.equal(flen, 0), "0", frac), pa.int64()).to_numpy(zero_copy_only=False)
    out = secs + fval / np.power(10.0, flen)
    return pa.array(out, pa.float64(), mask=np.isnan(secs))


def _regex_header(comp: _Compiled, text: pa.Array, candidates: np.ndarray) -> pa.StructArray:
    """Needed fields per line (null where the header does not match): fast regex, exact on its misses."""
    matched = pc.extract_regex(text, pattern=comp.fast_regex)
    if comp.fast_is_exact:
        return matched
    miss_idx = np.flatnonzero(candidates & ~_np_bool(pc.is_valid(matched)))
    if len(miss_idx) == 0:
        return matched
    slow = pc.extract_regex(text.take(pa.array(miss_idx)), pattern=comp.exact_regex)
    return _merge_rows(matched, slow.cast(matched.type), miss_idx)


def _merge_rows(base: pa.Array, patch: pa.Array, patch_idx: np.ndarray) -> pa.Array:
    """``base`` with rows ``patch_idx`` replaced by the rows of ``patch``, in order."""
    take_idx = np.arange(len(base), dtype=np.int64)
    take_idx[patch_idx] = len(base) + np.arange(len(patch_idx))
    return pc.take(pa.concat_arrays([base, patch]), pa.array(take_idx))


def _split_header(comp: _Compiled, text: pa.Array) -> tuple[pa.StructArray, np.ndarray]:
    """Needed fields of a whitespace-only header by splitting on ASCII-whitespace runs; returns the fields
    (null where the split cannot vouch for the regex's answer) and a bool mask of those rows."""
    n_fields = len(comp.fields)
    pieces = pc.ascii_split_whitespace(text, max_splits=n_fields - 1)       # list<string> [n]
    offsets = pieces.offsets.to_numpy()                                      # [n + 1] into pieces.values
    values = pieces.values
    first = offsets[:-1]
    # Loghub's fields are lazy (.*?) and its separators greedy (\s+): with n - 1 whitespace runs to spend
    # and .* last, each field ends at the first run, exactly where the split cuts (a leading blank gives
    # an empty first field in both). Fewer pieces: the regex path decides (a run may serve twice there).
    ok = np.diff(offsets) == n_fields
    data = text.buffers()[2]
    if data is not None and (np.frombuffer(data, np.uint8) == 0x0B).any():
        ok &= ~_np_bool(pc.match_substring(text, "\v"))                     # \v splits here, not in RE2
    not_ok = ~ok
    arrays = [values.take(pa.array(first + comp.fields.index(name), mask=not_ok)) for name in comp.needed]
    return pa.StructArray.from_arrays(arrays, names=list(comp.needed), mask=pa.array(not_ok)), ok


def _match_header(comp: _Compiled, text: pa.Array, candidates: np.ndarray) -> pa.StructArray:
    """The needed header fields of every line, exactly as the Loghub regex captures them (null on no
    match). ``candidates`` marks the lines worth matching; others may come back null."""
    if not comp.whitespace_only:
        return _regex_header(comp, text, candidates)
    matched, ok = _split_header(comp, text)
    rest = np.flatnonzero(candidates & ~ok)
    if len(rest) == 0:
        return matched
    by_regex = _regex_header(comp, text.take(pa.array(rest)), np.ones(len(rest), bool))
    return _merge_rows(matched, by_regex.cast(matched.type), rest)


def parse_chunk(
    fmt: LogFormat,
    lines: "Sequence[bytes] | pa.Array | pa.ChunkedArray",
    file: str,
    first_line_no: int,
) -> tuple[pa.Table, pa.Table]:
    """Parse consecutive lines (newlines already removed) into ``(events, quarantine)``.

    Line ``i`` of ``lines`` is line number ``first_line_no + i`` of ``file``. A trailing ``\\r`` is
    removed. Every line ends up in exactly one of the two tables (schemas :data:`EVENTS_SCHEMA`,
    :data:`QUARANTINE_SCHEMA`); quarantine reasons, checked in this order: ``line_too_long`` (over
    ``fmt.max_line_bytes`` bytes), ``undecodable_bytes`` (not UTF-8), ``empty_line`` (empty or only
    whitespace), ``header_mismatch``, ``bad_timestamp``.
    """
    arr, is_text = _as_binary_array(lines)
    n = len(arr)
    if n == 0:
        return empty_events(), empty_quarantine()
    comp = fmt._compiled
    line_nos = np.arange(first_line_no, first_line_no + n, dtype=np.int64)
    code = np.zeros(n, dtype=np.int8)

    # 1. trailing '\r' (CRLF files); ASCII, so safe on bytes
    cr = pc.ends_with(arr, "\r")
    if pc.any(cr).as_py():
        arr = pc.if_else(cr, pc.binary_slice(arr, 0, -1) if not is_text else pc.utf8_slice_codeunits(arr, 0, -1), arr)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()

    # 2. over-long lines: blank them before decoding so megabytes are never decoded
    lengths = pc.binary_length(arr.cast(pa.large_binary()) if is_text else arr).to_numpy(zero_copy_only=False)
    too_long = lengths > fmt.max_line_bytes
    special_raw: dict[int, str] = {}
    blank = pa.scalar("" if is_text else b"", arr.type)
    if too_long.any():
        for i in np.flatnonzero(too_long):
            special_raw[int(i)] = raw_text(arr[int(i)].as_py())
        code[too_long] = _TOO_LONG
        arr = pc.if_else(pa.array(too_long), blank, arr)

    # 3. UTF-8: validate the whole chunk at once; per line only if that fails
    if is_text:
        text = arr
    else:
        try:
            text = arr.cast(pa.large_string() if pa.types.is_large_binary(arr.type) else pa.string())
        except pa.ArrowInvalid:
            values = arr.to_pylist()
            decoded: list[str] = []
            for i, value in enumerate(values):
                try:
                    decoded.append(value.decode("utf-8"))
                except UnicodeDecodeError:
                    decoded.append("")
                    if code[i] == 0:
                        code[i] = _UNDECODABLE
                        special_raw[i] = raw_text(value)
            text = pa.array(decoded, pa.large_string() if pa.types.is_large_binary(arr.type) else pa.string())

    # 4. blank lines (counted, never silently skipped)
    empty = (lengths == 0) | _np_bool(pc.utf8_is_space(text))
    code[(code == 0) & empty] = _EMPTY

    # 5. header: whitespace split or fast regex on everything, exact Loghub regex on what they reject
    matched = _match_header(comp, text, code == 0)
    header_ok = _np_bool(pc.is_valid(matched))
    code[(code == 0) & ~header_ok] = _MISMATCH

    # 6. timestamps
    ts_cols = [pc.struct_field(matched, f) for f in fmt.timestamp.fields]
    ts_text = ts_cols[0] if len(ts_cols) == 1 else pc.binary_join_element_wise(*ts_cols, pa.scalar(" ", ts_cols[0].type))
    ts = _parse_timestamps(fmt, ts_text)
    ts_ok = _np_bool(pc.is_valid(ts))
    code[(code == 0) & ~ts_ok] = _BAD_TS

    ok = code == 0
    ok_arr = pa.array(ok)
    k = int(ok.sum())

    # events
    content = pc.struct_field(matched, "Content").filter(ok_arr)
    if fmt.label is not None:
        lab = pc.struct_field(matched, fmt.label.field).filter(ok_arr)
        label = pc.cast(pc.not_equal(lab, fmt.label.normal), pa.int8())
    else:
        label = pa.array(np.full(k, -1, dtype=np.int8))
    if fmt.session is not None:
        src = pc.struct_field(matched, fmt.session.field).filter(ok_arr)
        session = pc.struct_field(pc.extract_regex(src, pattern=comp.session_regex), "session")
    else:
        session = pa.nulls(k, pa.string())
    events = pa.Table.from_arrays(
        [
            pa.repeat(pa.scalar(file, pa.string()), k),
            pa.array(line_nos[ok]),
            ts.filter(ok_arr),
            label,
            session.cast(pa.string()),
            content.cast(pa.string()),
        ],
        schema=EVENTS_SCHEMA,
    )

    # quarantine (in line order)
    bad = np.flatnonzero(~ok)
    if len(bad) == 0:
        return events, empty_quarantine()
    raws = pc.utf8_slice_codeunits(text.take(pa.array(bad)), 0, RAW_CHARS).to_pylist()
    for j, i in enumerate(bad):
        if int(i) in special_raw:
            raws[j] = special_raw[int(i)]
    reasons = pc.take(pa.array(_REASON_CODES, pa.string()), pa.array(code[bad]))
    quarantine = pa.Table.from_arrays(
        [pa.repeat(pa.scalar(file, pa.string()), len(bad)), pa.array(line_nos[bad]), reasons,
         pa.array(raws, pa.string())],
        schema=QUARANTINE_SCHEMA,
    )
    return events, quarantine
