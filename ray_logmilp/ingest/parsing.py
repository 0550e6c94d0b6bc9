"""Log templates with drain3: explicit config, vectorised masking, fit -> frozen state -> match.

The life of a parser:

1. ``mask_array(rules, content)`` replaces variable substrings (ids, addresses, numbers) with ``<*>``
   for a whole Arrow column at once (RE2 via ``pyarrow.compute.replace_substring_regex``).
2. ``TemplateParser(config).fit(messages)`` runs drain3's ``Drain.add_log_message`` sequentially over
   masked messages and returns a dense template id (0..T-1, order of cluster creation) per message.
   The pipeline passes each DISTINCT masked message once, in first-appearance order (``fit_lines``
   does that grouping for you); see "Why fitting on distinct messages" below.
3. ``TemplateParser.freeze()`` -> ``FrozenParser``: an immutable template set with a drain prefix tree
   rebuilt for matching. ``match_many`` never creates or changes templates, so one frozen parser may
   serve concurrent requests. ``save``/``load`` use plain JSON that this module defines (config +
   template tokens + counts); drain3's jsonpickle snapshots are never written or read.

Why fitting on distinct messages gives the same grouping as a pass over every line
-------------------------------------------------------------------------------------
Drain clusters never merge and a message, once added, stays in the cluster it joined; a cluster's
template only ever generalises (tokens turn into ``<*>``). When a message repeats, drain3 almost
always routes it to the same cluster again (its tokens still agree with every non-wildcard template
token it agreed with before), so the repeat changes only that cluster's count. Skipping the repeats
and adding their multiplicity to the count therefore yields the same clusters, templates and
assignment as the plain sequential pass, while calling drain3 once per distinct message instead of
once per line (logs repeat heavily, so this is the speed lever).

Where the two can differ (measured grouping agreement with the shipped settings: 1.0 on the BGL,
Zookeeper and Thunderbird Loghub samples, 0.999 on HDFS, >= 0.99 on repeated streams; see
tests/unit/test_parsing.py and docs/parsing.md):

* A repeat of a message whose cluster template moved in between. Drain's tree search uses
  ``include_params=False``: similarity counts only non-wildcard template tokens that equal the
  message's tokens. As more template tokens become ``<*>``, the same message's similarity drops and
  may fall below ``sim_th``; the sequential pass then opens a new cluster for the repeat (and later
  messages may join it), whereas the distinct pass keeps the first assignment.
* A repeat that takes a different path down the prefix tree: a token that first went through the
  ``<*>`` child of a node can later find an exact-token child created after it, and miss its cluster.
  Example: "id2 disk full", "x disk full", "x other thing", "x disk full" -> sequential ids
  0, 0, 1, 2; distinct ids 0, 0, 1, 0.
* ``max_clusters`` (LRU eviction) depends on how often clusters are touched, which differs when
  repeats are skipped.

Both effects put one message into several clusters in the sequential pass; the distinct pass never
does, and ``FrozenParser`` matching (tree search + full-search fallback) agrees with it. With a high
``sim_th`` the sequential pass degrades badly (BGL at sim_th 0.6: 0.52 grouping accuracy sequential,
0.88 distinct), so the shortcut is also the more stable of the two.

Masking equivalence: ``mask_text`` uses the very same pyarrow call on a one-element array, so it is
identical to ``mask_array``. ``sequential_drain_baseline`` masks with Python ``re`` (compiled with
``re.ASCII``, whose ``\\d``/``\\w``/``\\s`` agree with RE2's); for the rules shipped in
``format_specs`` the two engines agree (tested), but exotic syntax (lookarounds, possessive
quantifiers) is Python-only and rejected by RE2 at config time.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

#: The wildcard drain3 writes into templates (and the replacement our masking rules use).
PARAM_STR = "<*>"
#: Identifies the JSON produced by ``FrozenParser.to_dict``.
STATE_FORMAT = "ray-logmilp/drain-templates"
STATE_VERSION = 1

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
        kwargs = dict(drain)
        if kwargs.get("extra_delimiters") is None:
            kwargs.pop("extra_delimiters", None)
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


def _python_maskers(rules: Sequence[MaskRule]) -> list[tuple[re.Pattern, str]]:
    return [(re.compile(p, re.ASCII), r) for p, r in rules]


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """One template of a frozen parser."""

    id: int
    text: str
    count: int


def _strings(messages: Iterable[str] | pa.Array | pa.ChunkedArray) -> Iterator[str]:
    if isinstance(messages, (pa.Array, pa.ChunkedArray)):
        messages = messages.to_pylist()
    for m in messages:
        if m is None:
            raise ValueError("parser: null message (mask/fill nulls before fitting)")
        yield m


def distinct_in_order(messages: Iterable[str] | pa.Array | pa.ChunkedArray
                      ) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Distinct values in first-appearance order, the index of each input in them, and their counts.

    Returns ``(uniques: pa.Array[string], inverse: int64[n], counts: int64[len(uniques)])`` so that
    ``uniques.take(inverse)`` equals the input. Nulls are not allowed. Vectorised (Arrow hashing).
    """
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    elif not isinstance(messages, pa.Array):
        messages = pa.array(list(messages), pa.string())
    if messages.null_count:
        raise ValueError(f"parser: {messages.null_count} null message(s); mask/fill nulls first")
    encoded = pc.dictionary_encode(messages)  # dictionary in first-appearance order
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    inverse = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    counts = np.bincount(inverse, minlength=len(encoded.dictionary)).astype(np.int64)
    return encoded.dictionary, inverse, counts


class TemplateParser:
    """Incremental drain3 fitting with dense template ids and line counts.

    ``fit`` may be called any number of times; clusters, ids and counts carry over between calls.
    """

    def __init__(self, config: ParserConfig | None = None) -> None:
        self.config = config or ParserConfig()
        self._drain = self.config.new_drain()
        # Every cluster ever created, by dense id (cluster_id - 1). Kept here too so that clusters
        # evicted by max_clusters still have a template in freeze().
        self._clusters: list[Any] = []
        self._counts: list[int] = []

    @property
    def num_templates(self) -> int:
        return len(self._clusters)

    def fit(self, masked_messages: Iterable[str] | pa.Array | pa.ChunkedArray,
            counts: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Add masked messages to drain, in the given order; return their template ids (int32).

        ``counts[i]`` (default 1) is how many lines message ``i`` stands for; it is added to its
        template's count. The pipeline passes distinct masked messages in first-appearance order
        with their multiplicities (see ``fit_lines``). Ids are dense, in order of cluster creation,
        and final: drain clusters never merge.
        """
        add = self._drain.add_log_message
        clusters, tcounts = self._clusters, self._counts
        messages: Iterable[str] = _strings(masked_messages)
        weights = None
        if counts is not None:
            weights = np.asarray(counts, dtype=np.int64)
            messages = list(messages)
            if weights.shape != (len(messages),):
                raise ValueError(f"fit: {len(messages)} messages but counts has shape {weights.shape}")
            if len(weights) and weights.min() < 0:
                raise ValueError("fit: counts must be >= 0")
        out: list[int] = []
        for i, msg in enumerate(messages):
            cluster, _ = add(msg)
            tid = cluster.cluster_id - 1
            if tid == len(clusters):
                clusters.append(cluster)
                tcounts.append(0)
            tcounts[tid] += 1 if weights is None else int(weights[i])
            out.append(tid)
        logger.debug("fit: %d messages, %d templates so far", len(out), len(clusters))
        return np.asarray(out, dtype=np.int32)

    def fit_lines(self, masked_lines: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Fit on the distinct lines (first-appearance order, with counts) and return the template
        id of every input line. Equals a sequential pass over all lines except for the rare cases
        described in the module docstring."""
        uniques, inverse, counts = distinct_in_order(masked_lines)
        ids = self.fit(uniques, counts)
        return ids[inverse]

    def freeze(self) -> "FrozenParser":
        """An immutable snapshot of the templates, with a prefix tree rebuilt for matching.

        Built exactly as ``FrozenParser.from_dict`` builds it, so a saved and reloaded parser
        matches identically.
        """
        tokens = [list(c.log_template_tokens) for c in self._clusters]
        return FrozenParser(self.config, tokens, list(self._counts))


# ----------------------------------------------------------------------------------------------
# Frozen parser
# ----------------------------------------------------------------------------------------------
class FrozenParser:
    """A fixed template set that matches messages and never changes.

    ``match_many`` performs drain3's ``match(..., full_search_strategy="fallback")``: a message
    matches a template when every non-wildcard template token equals the message's token at the
    same position (and the token counts agree). Nothing is created, counted or cached on the
    object, so concurrent matching from many threads is safe.
    """

    def __init__(self, config: ParserConfig, template_tokens: Sequence[Sequence[str]],
                 counts: Sequence[int]) -> None:
        from drain3.drain import LogCluster

        if len(template_tokens) != len(counts):
            raise ValueError(f"frozen parser: {len(template_tokens)} templates but {len(counts)} counts")
        self.config = config
        self._drain = config.new_drain(unlimited=True)
        self._tokens: tuple[tuple[str, ...], ...] = tuple(tuple(str(t) for t in toks)
                                                          for toks in template_tokens)
        self._counts = np.asarray(counts, dtype=np.int64)
        for tid, toks in enumerate(self._tokens):
            cluster = LogCluster(list(toks), tid + 1)
            cluster.size = int(self._counts[tid])
            self._drain.id_to_cluster[cluster.cluster_id] = cluster
            self._drain.add_seq_to_prefix_tree(self._drain.root_node, cluster)
        self._drain.clusters_counter = len(self._tokens)

    # -- templates ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def templates(self) -> list[Template]:
        return [Template(i, " ".join(t), int(c)) for i, (t, c) in enumerate(zip(self._tokens, self._counts))]

    @property
    def texts(self) -> list[str]:
        return [" ".join(t) for t in self._tokens]

    @property
    def counts(self) -> np.ndarray:
        return self._counts.copy()

    def to_table(self) -> pa.Table:
        """``template_id: int32, template: string, count: int64``, one row per template."""
        return pa.table({"template_id": pa.array(np.arange(len(self), dtype=np.int32)),
                         "template": pa.array(self.texts, pa.string()),
                         "count": pa.array(self._counts)})

    # -- matching -------------------------------------------------------------------------------
    def match(self, masked_message: str) -> int:
        """Template id of one masked message, or -1."""
        cluster = self._drain.match(masked_message, full_search_strategy="fallback")
        return -1 if cluster is None else cluster.cluster_id - 1

    def match_many(self, masked_messages: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Template id (int32) for each masked message; -1 where no template matches or the
        message is null. Each distinct message is matched once."""
        if isinstance(masked_messages, pa.ChunkedArray):
            masked_messages = masked_messages.combine_chunks()
        elif not isinstance(masked_messages, pa.Array):
            masked_messages = pa.array(list(masked_messages), pa.string())
        if len(masked_messages) == 0:
            return np.zeros(0, dtype=np.int32)
        encoded = pc.dictionary_encode(masked_messages)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        match = self._drain.match
        ids = np.fromiter(((-1 if (c := match(m, full_search_strategy="fallback")) is None
                            else c.cluster_id - 1) for m in encoded.dictionary.to_pylist()),
                          dtype=np.int32, count=len(encoded.dictionary))
        indices = encoded.indices
        out = ids[indices.fill_null(0).to_numpy(zero_copy_only=False)]
        if indices.null_count:
            out[indices.is_null().to_numpy(zero_copy_only=False)] = -1
        return out.astype(np.int32, copy=False)

    def mask_and_match(self, raw_messages: Iterable[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """``match_many(mask_array(config.masking, raw_messages))``."""
        if not isinstance(raw_messages, (pa.Array, pa.ChunkedArray)):
            raw_messages = pa.array(list(raw_messages), pa.string())
        return self.match_many(mask_array(self.config, raw_messages))

    # -- persistence ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: config and, per template, its tokens and line count."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "config": self.config.to_dict(),
                "templates": [{"id": i, "tokens": list(t), "count": int(c)}
                              for i, (t, c) in enumerate(zip(self._tokens, self._counts))]}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> "FrozenParser":
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"frozen parser state: 'format' is {state.get('format')!r}, expected {STATE_FORMAT!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"frozen parser state: unsupported version {state.get('version')!r} "
                             f"(this code reads version {STATE_VERSION})")
        templates = state.get("templates")
        if not isinstance(templates, list):
            raise ValueError("frozen parser state: 'templates' must be a list")
        tokens, counts = [], []
        for i, t in enumerate(templates):
            if not isinstance(t, Mapping) or t.get("id") != i:
                raise ValueError(f"frozen parser state: templates[{i}] must be an object with id={i}")
            toks = t.get("tokens")
            if not isinstance(toks, list) or not all(isinstance(x, str) for x in toks):
                raise ValueError(f"frozen parser state: templates[{i}].tokens must be a list of strings")
            count = t.get("count", 0)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"frozen parser state: templates[{i}].count must be an integer >= 0")
            tokens.append(toks)
            counts.append(count)
        return cls(ParserConfig.from_dict(state.get("config", {})), tokens, counts)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict()`` as JSON (atomically: temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, ensure_ascii=False, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FrozenParser":
        path = Path(path)
        try:
            with path.open("r", encoding="utf-8") as f:
                state = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a frozen parser JSON file: {e}") from e
        try:
            return cls.from_dict(state)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


# ----------------------------------------------------------------------------------------------
# Evaluation and the plain alternative
# ----------------------------------------------------------------------------------------------
def grouping_accuracy(pred: Sequence[Any] | np.ndarray, truth: Sequence[Any] | np.ndarray) -> float:
    """Loghub's Group Accuracy: the fraction of lines whose predicted group contains exactly the
    same set of lines as their ground-truth group.

    A predicted group is correct when all its lines share one ground-truth label and that label
    has no other lines. Labels are compared as values (any hashable; -1 is just another label).
    """
    import pandas as pd

    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 1:
        raise ValueError(f"grouping_accuracy: pred and truth must be 1-D of equal length, "
                         f"got {pred.shape} and {truth.shape}")
    n = len(pred)
    if n == 0:
        return math.nan
    p, _ = pd.factorize(pred, use_na_sentinel=False)
    t, _ = pd.factorize(truth, use_na_sentinel=False)
    p_size = np.bincount(p)
    t_size = np.bincount(t)
    pair = p.astype(np.int64) * (int(t.max()) + 1) + t
    pairs, pair_size = np.unique(pair, return_counts=True)
    pair_p, pair_t = pairs // (int(t.max()) + 1), pairs % (int(t.max()) + 1)
    # A pair (P, T) is a whole predicted group and a whole true group at once.
    correct = (pair_size == p_size[pair_p]) & (pair_size == t_size[pair_t])
    return float(pair_size[correct].sum()) / n


def sequential_drain_baseline(messages: Iterable[str], config: ParserConfig) -> np.ndarray:
    """The plain alternative: per line, mask with Python ``re`` and call ``add_log_message``.

    Returns the template id (cluster creation order, int32) of every line. Used as the reference in
    the agreement test and as the baseline in the benchmark.
    """
    drain = config.new_drain()
    maskers = _python_maskers(config.masking)
    out: list[int] = []
    for msg in messages:
        for rx, repl in maskers:
            msg = rx.sub(repl, msg)
        cluster, _ = drain.add_log_message(msg)
        out.append(cluster.cluster_id - 1)
    return np.asarray(out, dtype=np.int32)
