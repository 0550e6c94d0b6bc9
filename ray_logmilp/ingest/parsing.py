"""Log templates with drain3: explicit config, vectorised masking, fit -> frozen state -> match.

The life of a parser:

1. ``mask_array(rules, content)`` replaces variable substrings (ids, addresses, numbers) with ``<*>``
   for a whole Arrow column at once (RE2 via ``pyarrow.compute.replace_substring_regex``).
2. ``TemplateParser(config).fit(messages)`` runs drain3's ``Drain.add_log_message`` sequentially over
   masked messages and returns a dense template id (0..T-1, order of cluster creation) per message.
   The pipeline passes each DISTINCT masked message once, in first-appearance order (``fit_lines``
   does that grouping for you); see "

The parser lives in three modules: this one (:class:`ParserConfig`, masking), :mod:`ray_logmilp.ingest.mining`
(drain3 fitting) and :mod:`ray_logmilp.ingest.frozen` (the frozen template set that matches).

Masking equivalence: ``mask_text`` uses the very same pyarrow call on a one-element array, so it is
identical to ``mask_array``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["PARAM_STR", "ParserConfig", "mask_array", "mask_text", "python_maskers"]

#: The wildcard drain3 writes into templates (and the replacement our masking rules use).
PARAM_STR = "<*>"

MaskRule = tuple[str, str]

_DRAIN_KEYS = ("depth", "sim_th", "max_children", "max_clusters", "extra_delimiters",
               "parametrize_numeric_tokens")


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParserConfig:
    """Everything that decides how raw message text becomes a template. Immutable and JSON-able."""

    depth: int = 4
    """Depth of drain's prefix tree, counting the root and the token-count layer (drain3: >= 3).
    ``depth - 2`` leading tokens route a message to a leaf before similarity is computed."""
    sim_th: float = 0.4
    """Similarity threshold in [0, 1]: a message joins the best cluster of its leaf only if the
    fraction of template tokens equal to its own reaches ``sim_th``; otherwise a new cluster opens."""
    max_children: int = 100
    """Maximum children of an internal tree node; beyond it, new tokens route through ``<*>``."""
    max_clusters: int | None = None
    """Cap on live clusters during fit (drain3 evicts least recently used ones); None = unlimited.
    Evicted templates keep their ids and stay in the frozen template set."""
    extra_delimiters: tuple[str, ...] = ()
    """Strings treated like whitespace when splitting a message into tokens (e.g. ``("_",)``)."""
    parametrize_numeric_tokens: bool = True
    """Route tokens containing a digit through the ``<*>`` tree node (drain3's default)."""
    masking: tuple[MaskRule, ...] = ()
    """Ordered ``(pattern, replacement)`` rules, RE2 syntax, applied one after the other before
    drain sees the message. Replacement may use ``\\1`` group references."""

    def __post_init__(self) -> None:
        # Normalise sequences loaded from YAML/JSON (lists) into tuples, then validate.
        object.__setattr__(self, "extra_delimiters", tuple(str(d) for d in self.extra_delimiters))
        object.__setattr__(self, "masking", tuple(_as_rule(r, i) for i, r in enumerate(self.masking)))
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 3:
            raise ValueError(f"drain.depth must be an integer >= 3, got {self.depth!r}")
        if isinstance(self.sim_th, bool) or not isinstance(self.sim_th, (int, float)) \
                or not 0.0 <= float(self.sim_th) <= 1.0:
            raise ValueError(f"drain.sim_th must be a number in [0, 1], got {self.sim_th!r}")
        object.__setattr__(self, "sim_th", float(self.sim_th))
        if isinstance(self.max_children, bool) or not isinstance(self.max_children, int) \
                or self.max_children < 2:
            raise ValueError(f"drain.max_children must be an integer >= 2, got {self.max_children!r}")
        if self.max_clusters is not None and (isinstance(self.max_clusters, bool)
                                              or not isinstance(self.max_clusters, int)
                                              or self.max_clusters < 1):
            raise ValueError(f"drain.max_clusters must be a positive integer or null, "
                             f"got {self.max_clusters!r}")
        if any(d == "" for d in self.extra_delimiters):
            raise ValueError("drain.extra_delimiters must not contain an empty string")
        if not isinstance(self.parametrize_numeric_tokens, bool):
            raise ValueError(f"drain.parametrize_numeric_tokens must be true/false, "
                             f"got {self.parametrize_numeric_tokens!r}")
        _validate_rules(self.masking)

    # -- construction helpers ----------------------------------------------------------------
    @classmethod
    def from_format(cls, fmt: Any) -> "ParserConfig":
        """Build from a log format: a ``LogFormat`` (attributes ``masking``, ``drain``) or a mapping
        with keys ``masking`` (list of ``{pattern, replacement}``) and ``drain`` (dict of the fields
        above). Unknown ``drain`` keys are errors."""
        if isinstance(fmt, Mapping):
            masking, drain = fmt.get("masking"), fmt.get("drain")
        else:
            masking, drain = getattr(fmt, "masking", None), getattr(fmt, "drain", None)
        return cls.from_sections(masking=masking, drain=drain)

    from_format_dict = from_format

    @classmethod
    def from_sections(cls, masking: Any = None, drain: Any = None) -> "ParserConfig":
        """Build from the ``masking:`` and ``drain:`` sections of a format YAML."""
        if drain is None:
            drain = {}
        elif dataclasses.is_dataclass(drain) and not isinstance(drain, type):
            drain = dataclasses.asdict(drain)
        elif not isinstance(drain, Mapping):
            raise ValueError(f"drain: expected a mapping of {list(_DRAIN_KEYS)}, got {type(drain).__name__}")
        unknown = sorted(set(drain) - set(_DRAIN_KEYS))
        if unknown:
            raise ValueError(f"drain: unknown key(s) {unknown}; expected some of {list(_DRAIN_KEYS)}")
        # A key left unset (None) keeps this config's default (max_clusters' default is None anyway).
        kwargs = {k: v for k, v in drain.items() if v is not None}
        return cls(masking=tuple(masking or ()), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; ``ParserConfig.from_dict`` inverts it."""
        return {"depth": self.depth, "sim_th": self.sim_th, "max_children": self.max_children,
                "max_clusters": self.max_clusters, "extra_delimiters": list(self.extra_delimiters),
                "parametrize_numeric_tokens": self.parametrize_numeric_tokens,
                "masking": [{"pattern": p, "replacement": r} for p, r in self.masking]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ParserConfig":
        unknown = sorted(set(d) - set(_DRAIN_KEYS) - {"masking"})
        if unknown:
            raise ValueError(f"parser config: unknown key(s) {unknown}")
        return cls(**dict(d))

    def new_drain(self, *, unlimited: bool = False):
        """A fresh ``drain3.drain.Drain`` built from this config, never from a ``drain3.ini``."""
        from drain3.drain import Drain  # imported here: no work at import time

        return Drain(depth=self.depth, sim_th=self.sim_th, max_children=self.max_children,
                     max_clusters=None if unlimited else self.max_clusters,
                     extra_delimiters=self.extra_delimiters, param_str=PARAM_STR,
                     parametrize_numeric_tokens=self.parametrize_numeric_tokens)


def _as_rule(rule: Any, index: int) -> MaskRule:
    if isinstance(rule, Mapping):
        unknown = sorted(set(rule) - {"pattern", "replacement"})
        if "pattern" not in rule or unknown:
            raise ValueError(f"masking[{index}]: expected {{pattern, replacement}}, got {dict(rule)!r}")
        pattern, replacement = rule["pattern"], rule.get("replacement", PARAM_STR)
    elif hasattr(rule, "pattern") and not isinstance(rule, (str, bytes)):
        pattern, replacement = rule.pattern, getattr(rule, "replacement", PARAM_STR)
    elif isinstance(rule, Sequence) and not isinstance(rule, (str, bytes)) and len(rule) == 2:
        pattern, replacement = rule
    else:
        raise ValueError(f"masking[{index}]: expected {{pattern, replacement}} or a pair, got {rule!r}")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"masking[{index}].pattern must be a non-empty string, got {pattern!r}")
    if not isinstance(replacement, str):
        raise ValueError(f"masking[{index}].replacement must be a string, got {replacement!r}")
    return (pattern, replacement)


def _validate_rules(rules: Sequence[MaskRule]) -> None:
    probe = pa.array([""], pa.string())  # RE2 compiles lazily: an empty array would not raise
    for i, (pattern, replacement) in enumerate(rules):
        try:
            pc.replace_substring_regex(probe, pattern=pattern, replacement=replacement)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ValueError(f"masking[{i}].pattern {pattern!r} is not a valid RE2 regex "
                             f"(or replacement {replacement!r} is invalid): {e}") from e


# ----------------------------------------------------------------------------------------------
# Masking
# ----------------------------------------------------------------------------------------------
def _rules_of(rules: ParserConfig | Sequence[Any]) -> tuple[MaskRule, ...]:
    if isinstance(rules, ParserConfig):
        return rules.masking
    return tuple(_as_rule(r, i) for i, r in enumerate(rules))


def mask_array(rules: ParserConfig | Sequence[Any], arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Apply masking rules, in order, to every string of ``arr`` (vectorised RE2). Nulls stay null.

    ``rules`` is a ``ParserConfig`` or a sequence of ``(pattern, replacement)`` / ``{pattern,
    replacement}``. Returns an array of the same type and length (chunked in, chunked out).
    """
    if not isinstance(arr, (pa.Array, pa.ChunkedArray)):
        arr = pa.array(list(arr), pa.string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
            or pa.types.is_string_view(arr.type)):
        raise TypeError(f"mask_array: expected a string array, got {arr.type}")
    for pattern, replacement in _rules_of(rules):
        arr = pc.replace_substring_regex(arr, pattern=pattern, replacement=replacement)
    return arr


def mask_text(rules: ParserConfig | Sequence[Any], text: str) -> str:
    """Mask one string; identical to ``mask_array`` (it is the same pyarrow call on one element)."""
    return mask_array(rules, pa.array([text], pa.string()))[0].as_py()


def python_maskers(rules: Sequence[MaskRule]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(p, re.ASCII), r) for p, r in rules]
