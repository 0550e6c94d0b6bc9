"""The frozen parser: a fixed template set that matches messages to templates and never changes.

Built by :meth:`ray_logmilp.ingest.mining.TemplateParser.freeze` or read back from ``parser.json``
(plain JSON this module defines: config + template tokens + counts; drain3's jsonpickle snapshots are
never written or read).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.ingest.parsing import ParserConfig, mask_array

__all__ = ["STATE_FORMAT", "STATE_VERSION", "FrozenParser", "Template"]

#: Identifies the JSON produced by ``FrozenParser.to_dict``.
STATE_FORMAT = "ray-logmilp/drain-templates"
STATE_VERSION = 1



@dataclass(frozen=True)
class Template:
    """One template of a frozen parser."""

    id: int
    text: str
    count: int


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
