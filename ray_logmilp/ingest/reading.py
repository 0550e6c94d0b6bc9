"""Reading inputs: planning byte ranges, streaming them as line chunks, numbering their lines.

Plain Python (the Ray pipeline ships :class:`ReadTask` objects to its workers):

1. :func:`plan_read_tasks` splits big uncompressed files into newline-aligned byte ranges of about
   :data:`READ_BLOCK_BYTES` so they can be read in parallel, reading a few bytes at each cut, never the
   whole file. A range after a file's first does not know the number of its first line: it numbers its
   lines from 1 and :class:`LineNumbering` turns those into file line numbers from the line counts of the
   earlier ranges, as the ranges' output arrives in order.
2. :func:`read_task_chunks` streams one task as :class:`LineChunk` objects (lists of raw lines). Damage
   never raises: a truncated or corrupt gzip keeps every complete line before the damage and adds one
   ``truncated_gzip`` quarantine row, a failing read adds one ``read_error`` row, and an over-long line
   is reduced to a ``line_too_long`` row as soon as it is seen.

Accounting rule: for every file, lines read == sum of ``len(chunk.lines)`` + quarantine rows, and after
:func:`ray_logmilp.ingest.parse.parse_chunk`, lines read == events rows + quarantine rows.
"""
from __future__ import annotations

import logging
import os
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.ingest.format_spec import (
    DEFAULT_MAX_LINE_BYTES,
    LogFormat,
    load_format,
)
from ray_logmilp.ingest.parse import parse_chunk
from ray_logmilp.ingest.schemas import (
    RAW_CHARS,
    empty_events,
    empty_quarantine,
    quarantine_table,
    raw_text,
)
from ray_logmilp.ingest.sources import InputError, InputFile, expand_inputs, filesystem

logger = logging.getLogger(__name__)

__all__ = ["CHUNK_LINES", "READ_BLOCK_BYTES", "LineChunk", "LineNumbering", "ReadTask", "count_lines",
           "plan_read_tasks", "read_file_events", "read_task_chunks"]

READ_BLOCK_BYTES = 32 * 1024 * 1024
"""Uncompressed files larger than this are split into byte ranges of about this size, read in parallel."""

CHUNK_LINES = 65536
"""Lines per :class:`LineChunk` (one Arrow batch inside a read task)."""

_BLOCK_BYTES = 4 * 1024 * 1024  # read size for plain files and decompressed output
_PROBE_BYTES = 64 * 1024  # read size when looking for the newline at a range cut
_GZ_READ_BYTES = 1024 * 1024  # compressed bytes fed to zlib at a time
_KEEP_HEAD_BYTES = 4 * RAW_CHARS  # bytes kept of an over-long line (enough for RAW_CHARS characters)


@dataclass(frozen=True)
class ReadTask:
    """A unit of reading work: bytes ``[start, end)`` of one file (``end`` None = to the end).

    Small and picklable; :meth:`to_dict` / :meth:`from_dict` give a plain-dict form for Ray Data rows.
    ``first_line_no`` is the 1-based line number of the first line in the range, or None where planning
    did not count it: the reader then numbers the range's lines from 1 (see :class:`LineNumbering`).
    """

    name: str
    path: str
    start: int = 0
    end: int | None = None
    first_line_no: int | None = 1
    compression: str | None = None
    fs_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReadTask":
        first_line_no = data.get("first_line_no", 1)
        return cls(
            name=str(data["name"]),
            path=str(data["path"]),
            start=int(data.get("start") or 0),
            end=None if data.get("end") is None else int(data["end"]),
            first_line_no=None if first_line_no is None else int(first_line_no),
            compression=data.get("compression") or None,
            fs_uri=data.get("fs_uri") or None,
        )

    @classmethod
    def whole_file(cls, f: InputFile) -> "ReadTask":
        return cls(name=f.name, path=f.path, compression=f.compression, fs_uri=f.fs_uri)


@dataclass
class LineChunk:
    """Consecutive raw lines of one file, newline removed: ``lines[i]`` is line ``first_line_no + i``.

    ``quarantine`` holds rows (dicts with file, line_no, reason, raw) for lines the reader already
    rejected (``line_too_long``, ``truncated_gzip``, ``read_error``); they are not in ``lines`` and
    their line numbers follow the chunk's lines.
    """

    file: str
    first_line_no: int
    lines: list[bytes]
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_read(self) -> int:
        """Lines this chunk accounts for (parsed candidates plus reader quarantine)."""
        return len(self.lines) + len(self.quarantine)

    def quarantine_table(self) -> pa.Table:
        return quarantine_table(self.quarantine)


# --------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------
def _next_line_start(fh, pos: int, size: int) -> int:
    """Offset just after the first newline at or after ``pos - 1`` (``size`` if there is none)."""
    fh.seek(pos - 1)
    offset = pos - 1
    while True:
        block = fh.read(_PROBE_BYTES)
        if not block:
            return size
        idx = block.find(b"\n")
        if idx >= 0:
            return offset + idx + 1
        offset += len(block)


def _plan_file(f: InputFile, target_bytes: int) -> list[ReadTask]:
    if f.compression is not None or f.size <= target_bytes:
        return [ReadTask.whole_file(f)]
    fs = filesystem(f.fs_uri)
    tasks: list[ReadTask] = []
    start = 0
    with fs.open_input_file(f.path) as fh:
        while start + target_bytes < f.size:
            end = _next_line_start(fh, start + target_bytes, f.size)
            if end >= f.size:
                break
            tasks.append(ReadTask(f.name, f.path, start, end, 1 if start == 0 else None, f.compression, f.fs_uri))
            start = end
    tasks.append(ReadTask(f.name, f.path, start, f.size, 1 if start == 0 else None, f.compression, f.fs_uri))
    return tasks


def plan_read_tasks(files: Sequence[InputFile], target_bytes: int | None = None) -> list[ReadTask]:
    """Split files into read tasks. Uncompressed files over ``target_bytes`` become newline-aligned
    byte ranges of about ``target_bytes`` (default :data:`READ_BLOCK_BYTES`) each (a short read at each cut finds the next newline); gzip
    files and small files are one task each. Ranges after a file's first have ``first_line_no=None``:
    number their output with :class:`LineNumbering`, in task order."""
    target_bytes = READ_BLOCK_BYTES if target_bytes is None else target_bytes   # read now: tests patch it
    if target_bytes < 1:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    tasks: list[ReadTask] = []
    for f in files:
        tasks.extend(_plan_file(f, target_bytes))
    return tasks


def count_lines(task: ReadTask) -> int:
    """Lines in a task's byte range, counted by reading it (used after a read error cut a range short)."""
    n, last = 0, b"\n"
    for block in _plain_blocks(task):
        n += block.count(b"\n")
        last = block[-1:]
    return n + (last != b"\n")


class LineNumbering:
    """File line numbers for the output of read tasks planned by :func:`plan_read_tasks`.

    A range with ``first_line_no=None`` numbers its lines from 1. Every line becomes exactly one row
    (parsed or quarantined), so once a range's rows have all been seen, the next range of the same file
    starts after them; feed the rows in task order (:meth:`apply`). The one exception is a ``read_error``
    row, which stands for the rest of its range: that range's lines are then counted by reading it again
    (and if that fails too, the lines after it cannot be numbered: :class:`InputError`).
    """

    def __init__(self, tasks: Sequence[ReadTask]):
        self.tasks = list(tasks)
        self.rows = np.zeros(len(self.tasks), np.int64)        # rows seen per task so far
        self.offset = np.zeros(len(self.tasks), np.int64)      # added to a task's own line numbers
        self.known = np.zeros(len(self.tasks), bool)            # offset worked out
        self.cut_short: set[int] = set()                        # tasks whose read failed midway

    def _resolve(self, k: int) -> None:
        todo = []
        while not self.known[k]:
            todo.append(k)
            if self.tasks[k].first_line_no is not None:
                break
            k -= 1                  # a range without a number always follows a range of the same file
        for j in reversed(todo):
            if self.tasks[j].first_line_no is None:
                # the previous range's first line in the file, plus its lines, is this range's line 1
                prev = self.tasks[j - 1]
                prev_first = self.offset[j - 1] + (1 if prev.first_line_no is None else prev.first_line_no)
                self.offset[j] = prev_first + self._lines_of(j - 1) - 1
            self.known[j] = True

    def _lines_of(self, k: int) -> int:
        if k not in self.cut_short:
            return int(self.rows[k])
        try:
            return count_lines(self.tasks[k])
        except _ReadFailure as exc:
            task = self.tasks[k]
            raise InputError(f"{task.name}: bytes {task.start}-{task.end} cannot be read ({exc.message}), so the "
                             "lines after them cannot be numbered") from None

    def apply(self, tasks: np.ndarray, line_nos: np.ndarray, reasons: "pa.Array | None" = None) -> np.ndarray:
        """File line numbers for one batch of rows (``tasks``: task index per row, non-decreasing across
        calls; ``line_nos``: the readers' numbers; ``reasons``: quarantine reason per row or None)."""
        present, counts = np.unique(tasks, return_counts=True)
        for k, n in zip(present.tolist(), counts.tolist()):
            self._resolve(k)
            self.rows[k] += n
        if reasons is not None and reasons.null_count < len(reasons):
            read_errors = np.asarray(pc.fill_null(pc.equal(reasons, "read_error"), False), bool)
            self.cut_short.update(np.unique(tasks[read_errors]).tolist())
        return line_nos + self.offset[tasks]


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
class _ReadFailure(Exception):
    """Internal: the byte source hit damage; ``reason`` is a quarantine reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def _plain_blocks(task: ReadTask) -> Iterator[bytes]:
    fs = filesystem(task.fs_uri)
    try:
        if task.start == 0 and task.end is None:
            with fs.open_input_stream(task.path, compression=None) as fh:
                while True:
                    block = fh.read(_BLOCK_BYTES)
                    if not block:
                        return
                    yield block
        else:
            with fs.open_input_file(task.path) as fh:
                fh.seek(task.start)
                remaining = None if task.end is None else task.end - task.start
                while remaining is None or remaining > 0:
                    block = fh.read(_BLOCK_BYTES if remaining is None else min(_BLOCK_BYTES, remaining))
                    if not block:
                        return
                    if remaining is not None:
                        remaining -= len(block)
                    yield block
    except (OSError, pa.ArrowException) as exc:
        raise _ReadFailure("read_error", f"{type(exc).__name__}: {exc}") from None


def _gzip_blocks(task: ReadTask) -> Iterator[bytes]:
    """Decompressed blocks of a (multi-member) gzip file; damage raises _ReadFailure('truncated_gzip')."""
    fs = filesystem(task.fs_uri)
    try:
        fh = fs.open_input_stream(task.path, compression=None)
    except (OSError, pa.ArrowException) as exc:
        raise _ReadFailure("read_error", f"{type(exc).__name__}: {exc}") from None
    with fh:
        d = zlib.decompressobj(wbits=31)
        started = False  # has the current member produced/consumed anything
        pending = b""
        while True:
            if not pending:
                try:
                    pending = fh.read(_GZ_READ_BYTES)
                except (OSError, pa.ArrowException) as exc:
                    raise _ReadFailure("read_error", f"{type(exc).__name__}: {exc}") from None
                if not pending:
                    if started and not d.eof:
                        try:
                            rest = d.flush()  # output zlib may still hold for consumed input
                        except zlib.error as exc:
                            raise _ReadFailure("truncated_gzip", f"corrupt gzip data: {exc}") from None
                        if rest:
                            yield rest
                        if not d.eof:
                            raise _ReadFailure("truncated_gzip",
                                               "compressed stream ended before the end of the gzip member")
                    return
            if d.eof:
                # start of another gzip member, or trailing padding
                if not pending.strip(b"\x00"):
                    pending = b""
                    continue
                d = zlib.decompressobj(wbits=31)
                started = False
            try:
                out = d.decompress(pending, _BLOCK_BYTES)
            except zlib.error as exc:
                raise _ReadFailure("truncated_gzip", f"corrupt gzip data: {exc}") from None
            started = True
            pending = d.unconsumed_tail if not d.eof else d.unused_data
            if out:
                yield out


def read_task_chunks(
    task: ReadTask,
    chunk_lines: int = CHUNK_LINES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[LineChunk]:
    """Stream the lines of one task as :class:`LineChunk` objects of at most ``chunk_lines`` lines.

    Never raises for damaged input: an over-long line (more than ``max_line_bytes`` bytes) becomes a
    ``line_too_long`` quarantine row as soon as it is seen (only its first bytes are kept); a truncated
    or corrupt gzip stream yields every complete line before the damage plus ONE ``truncated_gzip``
    row (line number = the next line, raw = the partial line if any); an I/O failure yields one
    ``read_error`` row the same way. A last line without a trailing newline counts as a line.
    """
    if chunk_lines < 1:
        raise ValueError(f"chunk_lines must be positive, got {chunk_lines}")
    name = task.name
    lines: list[bytes] = []
    first = 1 if task.first_line_no is None else task.first_line_no  # line number of lines[0]
    partial: list[bytes] = []  # pieces of the current, unfinished line
    partial_len = 0
    overlong = False  # the current line already exceeds max_line_bytes; only its head is kept

    def take(chunk_q: list[dict[str, Any]] | None = None) -> LineChunk:
        nonlocal lines, first
        chunk = LineChunk(name, first, lines, chunk_q or [])
        first += len(lines) + len(chunk.quarantine)
        lines = []
        return chunk

    def too_long_row(line_no: int, head: bytes) -> dict[str, Any]:
        return {"file": name, "line_no": line_no, "reason": "line_too_long", "raw": raw_text(head)}

    blocks = _gzip_blocks(task) if task.compression == "gzip" else _plain_blocks(task)
    failure: _ReadFailure | None = None
    try:
        for block in blocks:
            parts = block.split(b"\n")
            tail = parts.pop()  # unfinished (possibly empty) last piece
            if parts:
                # complete the pending partial line with the first piece
                if partial or overlong:
                    head = parts[0]
                    if overlong or partial_len + len(head) > max_line_bytes:
                        joined = b"".join(partial) + head[:_KEEP_HEAD_BYTES]
                        row = too_long_row(first + len(lines), joined)
                        yield take([row])
                        parts = parts[1:]
                    else:
                        parts[0] = b"".join(partial) + head
                    partial, partial_len, overlong = [], 0, False
                if parts and max(map(len, parts)) > max_line_bytes:
                    for line in parts:
                        if len(line) > max_line_bytes:
                            yield take([too_long_row(first + len(lines), line[:_KEEP_HEAD_BYTES])])
                        else:
                            lines.append(line)
                            if len(lines) >= chunk_lines:
                                yield take()
                    parts = []
                # append complete lines, emitting full chunks
                i = 0
                while i < len(parts):
                    room = chunk_lines - len(lines)
                    lines.extend(parts[i : i + room])
                    i += room
                    if len(lines) >= chunk_lines:
                        yield take()
            # keep the unfinished tail, but never more than the head of an over-long line
            if tail:
                if overlong:
                    pass
                elif partial_len + len(tail) > max_line_bytes:
                    keep = b"".join(partial) + tail
                    partial, partial_len, overlong = [keep[:_KEEP_HEAD_BYTES]], len(keep), True
                else:
                    partial.append(tail)
                    partial_len += len(tail)
    except _ReadFailure as exc:
        failure = exc

    q: list[dict[str, Any]] = []
    if failure is not None:
        head = b"".join(partial)
        raw = raw_text(head) if (failure.reason == "truncated_gzip" and head) else failure.message
        if failure.reason == "read_error" and head:
            raw = f"{failure.message} (partial line: {raw_text(head, 100)})"
        q.append({"file": name, "line_no": first + len(lines), "reason": failure.reason, "raw": raw_text(raw)})
        logger.warning("%s: %s at line %d: %s", name, failure.reason, first + len(lines), failure.message)
    elif overlong:
        q.append(too_long_row(first + len(lines), b"".join(partial)))
    elif partial:
        lines.append(b"".join(partial))  # final line without a trailing newline
    if lines or q:
        yield take(q)


def read_file_events(
    path: "str | os.PathLike[str] | Sequence[str]",
    fmt: "LogFormat | str",
    chunk_lines: int = CHUNK_LINES,
) -> tuple[pa.Table, pa.Table]:
    """Read and parse small inputs in-process: ``(events, quarantine)`` concatenated over all files
    that ``path`` expands to. For big corpora use the Ray pipeline instead."""
    fmt = load_format(fmt)
    events, quarantine = [empty_events()], [empty_quarantine()]
    for f in expand_inputs(path if isinstance(path, (list, tuple)) else [path]):
        for chunk in read_task_chunks(ReadTask.whole_file(f), chunk_lines, fmt.max_line_bytes):
            ev, q = parse_chunk(fmt, chunk.lines, chunk.file, chunk.first_line_no)
            events.append(ev)
            quarantine.append(q)
            if chunk.quarantine:
                quarantine.append(chunk.quarantine_table())
    q_all = pa.concat_tables(quarantine)
    if q_all.num_rows:
        q_all = q_all.sort_by([("file", "ascending"), ("line_no", "ascending")])
    return pa.concat_tables(events), q_all
