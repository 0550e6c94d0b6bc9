"""The prepare stage's outputs, written by the driver as the parsed stream arrives.

Events go to ``events.parquet`` (:data:`~ray_logmilp.ingest.schemas.EVENTS_SCHEMA`), bags to
``bags.parquet`` through an unsplit IPC stream (:class:`BagSink`, then :func:`finalize_bags` adds the
split column), templates with their embeddings to ``templates.parquet`` next to ``parser.json`` and
``embedder.json`` (:func:`write_templates`). :class:`LineCounts` keeps the line accounting for the manifest.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_logmilp import storage
from ray_logmilp.config import DataConfig, EmbeddingConfig
from ray_logmilp.ingest.embedding import embedder_from_config
from ray_logmilp.ingest.frozen import FrozenParser
from ray_logmilp.ingest.schemas import EVENTS_SCHEMA
from ray_logmilp.ingest.windows import BAG_SCHEMA, BagLabeler, assign_splits

__all__ = ["BagSink", "LineCounts", "add_counts", "events_from_stage", "finalize_bags", "plain_file_names",
           "window_batch", "write_templates"]


@dataclass
class LineCounts:
    read: int = 0
    parsed: int = 0
    quarantined: Counter = field(default_factory=Counter)
    per_file: dict = field(default_factory=dict)

    def add(self, table: pa.Table) -> None:
        n = table.num_rows
        reasons = table.column("reason")
        n_bad = n - reasons.null_count
        self.read += n
        self.parsed += n - n_bad
        if n_bad:
            for item in pc.value_counts(reasons.drop_null()).to_pylist():
                self.quarantined[item["values"]] += item["counts"]
        for item in pc.value_counts(table.column("file")).to_pylist():
            self.per_file[item["values"]] = self.per_file.get(item["values"], 0) + item["counts"]


def add_counts(counts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Running per-template line counts; grows as new templates appear."""
    add = np.bincount(ids)
    if len(add) > len(counts):
        counts = np.pad(counts, (0, len(add) - len(counts)))
    counts[: len(add)] += add
    return counts


def events_from_stage(table: pa.Table, template_ids: np.ndarray) -> pa.Table:
    return pa.table({
        "file": table.column("file"), "line_no": table.column("line_no"),
        "timestamp": table.column("timestamp"), "label": table.column("label"),
        "session": table.column("session"), "template_id": pa.array(template_ids, pa.int32()),
        "content": table.column("content"),
    }, schema=EVENTS_SCHEMA)


def plain_file_names(events: pa.Table) -> pa.Table:
    i = events.schema.get_field_index("file")
    return events.set_column(i, "file", events.column(i).cast(pa.string()))


def window_batch(events: pa.Table) -> dict[str, np.ndarray]:
    return {
        "timestamp": events.column("timestamp").to_numpy(),
        "template_id": events.column("template_id").to_numpy(),
        "file": events.column("file"),          # the windower keeps files as codes, never as Python strings
        "line_no": events.column("line_no").to_numpy(),
        "label": events.column("label").to_numpy(),
        "session": events.column("session").to_numpy(zero_copy_only=False),
    }


# Parquet dictionary pages only where values repeat: on line numbers and labels the writer would build
# a dictionary per page and abandon it, a third of the bags' write time (8M-line corpus: 1.46 -> 0.99 s).
_BAG_DICT_COLUMNS = ["session", "template_ids", "line_files"]


class BagSink:
    """Labels bag tables and appends them, numbered in order, to an Arrow IPC stream: the unsplit bags are
    read back to add the split column, and an IPC stream costs next to nothing to write and read where a
    parquet file would be encoded and decoded once more (the stream format because ``line_files``
    dictionaries grow from batch to batch)."""

    def __init__(self, fs, path: str, labeler: BagLabeler):
        self.labeler = labeler
        self.fs, self.path = fs, path
        self.schema = BAG_SCHEMA.append(pa.field("label", pa.int8()))
        self.stream = self.writer = None
        self.reset()

    def reset(self) -> None:
        """Start over (bags cut before the stream turned out not to be in time order are discarded)."""
        self.close()
        self.stream = self.fs.open_output_stream(self.path)
        self.writer = pa.ipc.new_stream(self.stream, self.schema)
        self.count = 0

    def write(self, bags: pa.Table) -> None:
        if bags.num_rows == 0:
            return
        bags = bags.set_column(0, "bag_id", pa.array(np.arange(self.count, self.count + bags.num_rows, dtype=np.int64)))
        self.count += bags.num_rows
        self.writer.write_table(self.labeler(bags))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.stream.close()
            self.writer = self.stream = None


def write_templates(fs, out_dir: str, frozen: FrozenParser, template_counts: np.ndarray,
                    embedding: EmbeddingConfig) -> int:
    """Write ``templates.parquet`` (id, text, line count, embedding), ``parser.json`` and ``embedder.json``;
    returns the number of templates."""
    texts = frozen.texts
    embedder = embedder_from_config(embedding, texts)
    vectors = embedder.embed(texts)                                     # [T, dim]
    templates = pa.table({
        "template_id": pa.array(np.arange(len(texts), dtype=np.int32)),
        "template": pa.array(texts, pa.string()),
        "count": pa.array(template_counts[: len(texts)].astype(np.int64)),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1).astype(np.float32)),
                                                       vectors.shape[1]),
    })
    pq.write_table(templates, f"{out_dir}/templates.parquet", filesystem=fs)
    storage.write_text(fs, f"{out_dir}/parser.json", json.dumps(frozen.to_dict()))
    storage.write_text(fs, f"{out_dir}/embedder.json", json.dumps(embedder.spec()))
    return len(texts)


def _unsplit_batches(fs, path: str) -> Iterator[pa.RecordBatch]:
    with fs.open_input_stream(path) as fh:
        yield from pa.ipc.open_stream(fh)


def finalize_bags(fs, tmp_path: str, final_path: str, cfg: DataConfig) -> dict[str, dict[str, int]]:
    """Write ``bags.parquet``: the unsplit bags plus the split column (which needs every bag's start time),
    in two streaming passes over the IPC file."""
    starts = [batch.column("start").to_numpy() for batch in _unsplit_batches(fs, tmp_path)]
    splits = assign_splits(np.concatenate(starts) if starts else np.empty(0), cfg.split)
    schema = BAG_SCHEMA.append(pa.field("label", pa.int8())).append(pa.field("split", pa.string()))
    counts: dict[str, dict[str, int]] = {}
    with pq.ParquetWriter(final_path, schema, filesystem=fs, use_dictionary=[*_BAG_DICT_COLUMNS, "split"]) as writer:
        offset = 0
        for batch in _unsplit_batches(fs, tmp_path):
            part = splits[offset: offset + batch.num_rows]
            offset += batch.num_rows
            writer.write_table(pa.Table.from_batches([batch]).append_column("split", pa.array(part.tolist(), pa.string())))
            labels = batch.column("label").to_numpy()
            for split in np.unique(part):
                in_split = labels[part == split]
                c = counts.setdefault(str(split), {"positive": 0, "negative": 0, "unlabelled": 0})
                c["positive"] += int((in_split == 1).sum())
                c["negative"] += int((in_split == 0).sum())
                c["unlabelled"] += int((in_split < 0).sum())
    fs.delete_file(tmp_path)
    return counts
