"""The parse stage's worker side: one read task -> parsed and quarantined rows, masked, in one table.

:class:`ParseTask` is the Ray Data UDF the pipeline maps over read tasks; it is plain Python (no Ray
import) so it can be tested and reused without a cluster. It reads the task's byte range in chunks
(:mod:`ray_logmilp.ingest.reading`), parses each chunk (:func:`~ray_logmilp.ingest.parse.parse_chunk`) and
masks the content of the parsed lines (:func:`~ray_logmilp.ingest.parsing.mask_array`).
"""
from __future__ import annotations

import json
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.ingest.format_spec import LogFormat
from ray_logmilp.ingest.parse import parse_chunk
from ray_logmilp.ingest.parsing import ParserConfig, mask_array
from ray_logmilp.ingest.reading import ReadTask, read_task_chunks
from ray_logmilp.ingest.schemas import FILE_TYPE

__all__ = ["MASKED_TYPE", "STAGE_SCHEMA", "ParseTask", "stage_table"]

# Masked messages travel dictionary-encoded: a chunk's distinct contents are masked once (logs repeat,
# 38% of a synthetic chunk's contents are distinct) and the driver looks up distinct values only.
MASKED_TYPE = pa.dictionary(pa.int32(), pa.string())

# What a parse task emits: parsed lines (reason null) and quarantined lines (reason set) in one table,
# so a single Ray Data stream carries both and nothing can fall between two outputs.
STAGE_SCHEMA = pa.schema([
    ("task", pa.int32()),
    ("file", FILE_TYPE),
    ("line_no", pa.int64()),
    ("timestamp", pa.float64()),
    ("label", pa.int8()),
    ("session", pa.string()),
    ("content", pa.string()),
    ("masked", MASKED_TYPE),
    ("reason", pa.string()),
    ("raw", pa.string()),
])



def _one_file_column(files: pa.ChunkedArray) -> pa.DictionaryArray:
    """The ``file`` column of one chunk's events (a single name) as a dictionary array, built without
    hashing every row."""
    names = [files[0].as_py()] if len(files) else []
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(files), np.int32)), pa.array(names, pa.string()))


def _mask_distinct(parser_cfg: ParserConfig, content: pa.Array) -> pa.DictionaryArray:
    """Masked content as a dictionary array: the regex passes run once per distinct content string."""
    encoded = pc.dictionary_encode(content)                                   # indices: int32 [n]
    return pa.DictionaryArray.from_arrays(encoded.indices, mask_array(parser_cfg, encoded.dictionary))


def stage_table(task_index: int, events: pa.Table, quarantine: pa.Table, parser_cfg: ParserConfig) -> pa.Table:
    n_e, n_q = events.num_rows, quarantine.num_rows
    masked = _mask_distinct(parser_cfg, events.column("content").combine_chunks()) if n_e else pa.nulls(0, MASKED_TYPE)
    parsed = pa.table({
        "task": pa.array(np.full(n_e, task_index, np.int32)),
        "file": _one_file_column(events.column("file")),
        "line_no": events.column("line_no"),
        "timestamp": events.column("timestamp"),
        "label": events.column("label"),
        "session": events.column("session"),
        "content": events.column("content"),
        "masked": masked,
        "reason": pa.nulls(n_e, pa.string()),
        "raw": pa.nulls(n_e, pa.string()),
    }, schema=STAGE_SCHEMA)
    if n_q == 0:
        return parsed
    bad = pa.table({
        "task": pa.array(np.full(n_q, task_index, np.int32)),
        "file": quarantine.column("file").cast(FILE_TYPE),
        "line_no": quarantine.column("line_no"),
        "timestamp": pa.nulls(n_q, pa.float64()),
        "label": pa.nulls(n_q, pa.int8()),
        "session": pa.nulls(n_q, pa.string()),
        "content": pa.nulls(n_q, pa.string()),
        "masked": pa.nulls(n_q, MASKED_TYPE),
        "reason": quarantine.column("reason"),
        "raw": quarantine.column("raw"),
    }, schema=STAGE_SCHEMA)
    # Keep file order: quarantined rows interleave with parsed ones by line number.
    both = pa.concat_tables([parsed, bad])
    return both.take(pc.sort_indices(both, [("line_no", "ascending")]))


class ParseTask:
    """Ray Data UDF: one read task (a file or a byte range of one) -> parsed + quarantined rows."""

    def __init__(self, fmt: LogFormat, parser_cfg: ParserConfig, chunk_lines: int):
        self.fmt = fmt
        self.parser_cfg = parser_cfg
        self.chunk_lines = chunk_lines

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for row in batch.to_pylist():
            task = ReadTask.from_dict(json.loads(row["task"]))
            for chunk in read_task_chunks(task, chunk_lines=self.chunk_lines, max_line_bytes=self.fmt.max_line_bytes):
                events, quarantine = parse_chunk(self.fmt, chunk.lines, chunk.file, chunk.first_line_no)
                reader_q = chunk.quarantine_table()
                if reader_q.num_rows:
                    quarantine = pa.concat_tables([reader_q, quarantine])
                yield stage_table(row["index"], events, quarantine, self.parser_cfg)

