"""drain3 template mining: fit masked messages into templates, once per distinct message.

:class:`TemplateParser` runs drain3 over masked messages and numbers templates densely;
:class:`TemplateAssigner` is what the prepare stage's driver uses: it feeds each new distinct message
once, in first-appearance order, and maps every line to its template id. :func:`sequential_drain_baseline`
and :func:`grouping_accuracy` are the plain alternative and the measure they are compared with.

Why fitting on distinct messages" below.
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

``sequential_drain_baseline`` masks with Python ``re`` (compiled with ``re.ASCII``, whose
``\\d``/``\\w``/``\\s`` agree with RE2's); for the rules shipped in ``format_specs`` the two engines agree
(tested), but exotic syntax (lookarounds, possessive quantifiers) is Python-only and rejected by RE2 at
config time.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.ingest.frozen import FrozenParser, Template
from ray_logmilp.ingest.parsing import ParserConfig, python_maskers

logger = logging.getLogger(__name__)

__all__ = ["Template", "TemplateAssigner", "TemplateParser", "distinct_in_order", "grouping_accuracy",
           "sequential_drain_baseline"]


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------
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


class TemplateAssigner:
    """Incremental drain3 over distinct masked messages, in order of first appearance."""

    def __init__(self, parser_cfg: ParserConfig):
        self.parser = TemplateParser(parser_cfg)
        self.known = pa.array([], pa.string())       # distinct masked messages seen so far
        self.known_ids = np.empty(0, np.int32)      # template id of each

    def assign(self, masked: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Template id per message (no nulls); new distinct messages are fitted in first-appearance order.

        Dictionary-encoded input (what parse workers send) is looked up once per distinct value that the
        rows use, taken in the order the rows first use them, so drain3 sees the same sequence as with
        plain strings whatever the dictionary holds (a sliced block keeps its whole dictionary)."""
        chunks = masked.chunks if isinstance(masked, pa.ChunkedArray) else [masked]
        parts = [self._assign_dictionary(c) if pa.types.is_dictionary(c.type) else self._assign_plain(c)
                 for c in chunks]
        return np.concatenate(parts) if parts else np.empty(0, np.int32)

    def _assign_dictionary(self, masked: pa.DictionaryArray) -> np.ndarray:
        codes = masked.indices.to_numpy(zero_copy_only=False)                   # [n]
        used = pc.unique(masked.indices)                                        # codes in first-use order
        ids_of_used = self._assign_plain(masked.dictionary.take(used))           # [len(used)]
        lookup = np.empty(len(masked.dictionary), np.int32)
        lookup[used.to_numpy(zero_copy_only=False)] = ids_of_used
        return lookup[codes]

    def _assign_plain(self, masked: pa.Array) -> np.ndarray:
        pos = pc.index_in(masked, value_set=self.known).to_numpy(zero_copy_only=False)
        missing = np.isnan(pos) if pos.dtype.kind == "f" else None
        if missing is None:
            return self.known_ids[pos]
        if missing.any():
            new_msgs = pc.unique(masked.filter(pa.array(missing)))   # unique keeps first-appearance order
            new_ids = self.parser.fit(new_msgs.to_pylist()).astype(np.int32)
            self.known = pa.concat_arrays([self.known, new_msgs.cast(pa.string())])
            self.known_ids = np.concatenate([self.known_ids, new_ids])
            pos = pc.index_in(masked, value_set=self.known).to_numpy(zero_copy_only=False)
        return self.known_ids[pos.astype(np.int64)]


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
    maskers = python_maskers(config.masking)
    out: list[int] = []
    for msg in messages:
        for rx, repl in maskers:
            msg = rx.sub(repl, msg)
        cluster, _ = drain.add_log_message(msg)
        out.append(cluster.cluster_id - 1)
    return np.asarray(out, dtype=np.int32)
