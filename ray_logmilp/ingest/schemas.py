"""The Arrow schemas of the prepare stage's line-level outputs, defined once.

``events.parquet`` holds :data:`EVENTS_SCHEMA`; :func:`ray_logmilp.ingest.parse.parse_chunk` returns the
same columns before templates are known (:data:`PARSED_SCHEMA`: no ``template_id``, ``file`` as a plain
string); every line that could not be parsed is one :data:`QUARANTINE_SCHEMA` row.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pyarrow as pa

__all__ = ["EVENTS_SCHEMA", "FILE_TYPE", "PARSED_SCHEMA", "QUARANTINE_REASONS", "QUARANTINE_SCHEMA", "RAW_CHARS",
           "empty_events", "empty_quarantine", "quarantine_table", "raw_text"]

RAW_CHARS = 200
"""How many characters of an offending line the quarantine keeps in ``raw``."""

# A chunk's lines all come from one file: ``file`` is stored dictionary-encoded, not as the path repeated
# on every line (tens of bytes per line through the object store and the writer).
FILE_TYPE = pa.dictionary(pa.int32(), pa.string())

EVENTS_SCHEMA = pa.schema([
    pa.field("file", FILE_TYPE, nullable=False),
    pa.field("line_no", pa.int64(), nullable=False),
    pa.field("timestamp", pa.float64(), nullable=False),
    pa.field("label", pa.int8(), nullable=False),
    pa.field("session", pa.string()),
    pa.field("template_id", pa.int32(), nullable=False),
    pa.field("content", pa.string(), nullable=False),
])
"""One row per parsed line: epoch-seconds timestamp, label (-1 unknown, 0 normal, 1 anomalous), the
line's template, and its content before masking."""

PARSED_SCHEMA = pa.schema([f.with_type(pa.string()) if f.name == "file" else f
                           for f in EVENTS_SCHEMA if f.name != "template_id"])
"""What :func:`~ray_logmilp.ingest.parse.parse_chunk` returns: the events before template mining."""

QUARANTINE_SCHEMA = pa.schema([
    pa.field("file", pa.string(), nullable=False),
    pa.field("line_no", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("raw", pa.string(), nullable=False),
])
"""One row per line that could not be parsed; ``raw`` holds its first :data:`RAW_CHARS` characters."""

QUARANTINE_REASONS = (
    "undecodable_bytes",
    "line_too_long",
    "empty_line",
    "header_mismatch",
    "bad_timestamp",
    "nul_byte",
    "truncated_gzip",
    "read_error",
)
"""Every reason a line can be quarantined for (the first six come from ``parse_chunk``, the last two from
the readers in :mod:`ray_logmilp.ingest.reading`)."""


def raw_text(data: bytes | str, limit: int = RAW_CHARS) -> str:
    """The first ``limit`` characters of a (possibly undecodable) line for the quarantine."""
    if isinstance(data, str):
        return data[:limit]
    return data[: 4 * limit].decode("utf-8", errors="replace")[:limit]


def empty_events() -> pa.Table:
    """A parsed-events table with no rows (:data:`PARSED_SCHEMA`)."""
    return PARSED_SCHEMA.empty_table()


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
