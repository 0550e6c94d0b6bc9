"""Bagging: turning a time-ordered stream of parsed lines into multi-instance bags.

A *bag* is a window of consecutive lines; its label comes from the line labels (max), from an alarms file
of time spans (a window overlapping an alarm is positive: what operators actually have), or from a
session label file. Instance labels, when the data has them, ride along for evaluation only.

The windowers are streaming: feed them column batches in time order and they emit every window as soon
as no later line can fall into it, so memory is bounded by one window plus one batch, not the corpus.

Windows longer than ``max_instances`` lines are split into consecutive bags (``part`` 0, 1, ...), so no
line is ever dropped; every bag records the window it came from.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_logmilp.config import LabelConfig, SplitConfig, WindowConfig

log = logging.getLogger(__name__)

# Columns a windower reads from each batch (numpy arrays of equal length, already in time order).
EVENT_COLUMNS = ("timestamp", "template_id", "file", "line_no", "label", "session")

BAG_SCHEMA = pa.schema([
    ("bag_id", pa.int64()),
    ("window", pa.int64()),          # window index (time/count) or session ordinal
    ("part", pa.int32()),            # > 0 when a window over max_instances was split
    ("session", pa.string()),        # session key for kind=session, else null
    ("start", pa.float64()),         # epoch seconds of the window start (time) or first line
    ("end", pa.float64()),           # epoch seconds of the window end (time) or last line
    ("num_instances", pa.int32()),
    ("template_ids", pa.list_(pa.int32())),
    ("line_files", pa.list_(pa.dictionary(pa.int32(), pa.string()))),   # few files, millions of lines
    ("line_nos", pa.list_(pa.int64())),
    ("instance_labels", pa.list_(pa.int8())),   # -1 where unknown; evaluation only
    ("line_label", pa.int8()),       # max of instance labels (-1 if unknown)
])


class WindowError(ValueError):
    """Bad bagging input (unsorted stream, unreadable alarms or session label file)."""


@dataclass
class _Buffer:
    """Columns of the lines not yet emitted, as numpy arrays."""

    cols: dict[str, np.ndarray]

    @classmethod
    def empty(cls) -> "_Buffer":
        return cls({})

    def __len__(self) -> int:
        return 0 if not self.cols else len(self.cols["timestamp"])

    def extend(self, batch: dict[str, np.ndarray]) -> None:
        if not self.cols:
            self.cols = {k: np.asarray(v) for k, v in batch.items()}
        else:
            self.cols = {k: np.concatenate([self.cols[k], np.asarray(batch[k])]) for k in self.cols}

    def keep(self, index: np.ndarray | slice) -> None:
        self.cols = {k: v[index] for k, v in self.cols.items()}


class _FileCodes:
    """File names as int32 codes. A corpus has a handful of files and millions of lines: the buffers carry
    codes and ``line_files`` is dictionary-encoded, so bagging builds no Python string per line."""

    def __init__(self) -> None:
        self._code: dict[str, int] = {}         # name -> code, in order of first appearance

    def _codes_of(self, names) -> np.ndarray:
        return np.array([self._code.setdefault(str(n), len(self._code)) for n in names], np.int32)

    def encode(self, files) -> np.ndarray:
        """Codes of a batch's ``file`` column (a pyarrow array, or any sequence of names)."""
        if isinstance(files, pa.ChunkedArray):
            files = files.combine_chunks()
        if isinstance(files, pa.Array):
            enc = files if pa.types.is_dictionary(files.type) else pc.dictionary_encode(files)
            return self._codes_of(enc.dictionary.to_pylist())[enc.indices.to_numpy(zero_copy_only=False)]
        uniq, inverse = np.unique(np.asarray(files, dtype=object).astype(str), return_inverse=True)
        return self._codes_of(uniq)[inverse.reshape(-1)]

    def values(self, codes: np.ndarray) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(list(self._code), pa.string()))


def _bags_table(window_ids: np.ndarray, members: np.ndarray, cols: dict[str, np.ndarray],
                max_instances: int, starts: np.ndarray | None, ends: np.ndarray | None,
                files: _FileCodes, sessions: list[str | None] | None = None) -> pa.Table:
    """Build bag rows from (window id, member line index) pairs sorted by window then line.

    ``starts``/``ends`` give each distinct window's time span (or None: first/last line time);
    ``cols["file"]`` holds codes of ``files``.
    """
    if len(members) == 0:
        return BAG_SCHEMA.empty_table()
    # Boundaries of each window's run of members.
    change = np.flatnonzero(np.diff(window_ids)) + 1
    run_starts = np.concatenate([[0], change])
    run_lens = np.diff(np.concatenate([run_starts, [len(members)]]))
    # Split windows over the cap into consecutive parts of at most max_instances lines.
    parts_per_run = -(-run_lens // max_instances)
    run_of_part = np.repeat(np.arange(len(run_starts)), parts_per_run)
    part_index = np.arange(len(run_of_part)) - np.repeat(np.cumsum(parts_per_run) - parts_per_run, parts_per_run)
    part_start = run_starts[run_of_part] + part_index * max_instances
    part_len = np.minimum(max_instances, run_lens[run_of_part] - part_index * max_instances)
    offsets = np.concatenate([[0], np.cumsum(part_len)]).astype(np.int32)
    # members are contiguous per window already, so parts are contiguous slices: values = members.
    ts = cols["timestamp"][members]
    labels = cols["label"][members].astype(np.int8)
    first, last = part_start, part_start + part_len - 1
    win = window_ids[run_starts][run_of_part]
    if starts is None:
        start_col, end_col = ts[first], ts[last]
    else:
        start_col, end_col = starts[run_of_part], ends[run_of_part]
    # Max instance label per part: -1 unknown stays -1 only when every label is unknown.
    line_label = np.maximum.reduceat(labels, part_start) if len(part_start) else np.empty(0, np.int8)
    return pa.table({
        "bag_id": pa.array(np.full(len(part_start), -1, np.int64)),  # assigned by the writer
        "window": pa.array(win.astype(np.int64)),
        "part": pa.array(part_index.astype(np.int32)),
        "session": pa.array([sessions[r] for r in run_of_part] if sessions is not None else [None] * len(part_start),
                            pa.string()),
        "start": pa.array(start_col.astype(np.float64)),
        "end": pa.array(end_col.astype(np.float64)),
        "num_instances": pa.array(part_len.astype(np.int32)),
        "template_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols["template_id"][members].astype(np.int32))),
        "line_files": pa.ListArray.from_arrays(pa.array(offsets), files.values(cols["file"][members])),
        "line_nos": pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols["line_no"][members].astype(np.int64))),
        "instance_labels": pa.ListArray.from_arrays(pa.array(offsets), pa.array(labels)),
        "line_label": pa.array(line_label.astype(np.int8)),
    }, schema=BAG_SCHEMA)


class SlidingWindower:
    """Sliding (or tumbling) windows over time (seconds) or over line counts.

    Window ``j`` covers ``[origin + j*stride, origin + j*stride + size)`` in the chosen axis (timestamp
    for ``time``, the running line index for ``count``). A line belongs to every window covering it, so
    overlapping windows share lines. Windows with no lines produce no bag.
    """

    def __init__(self, cfg: WindowConfig):
        if cfg.kind not in ("time", "count"):
            raise ValueError(f"SlidingWindower handles kind time/count, not {cfg.kind!r}")
        self.cfg = cfg
        self.size = float(cfg.size)
        self.stride = float(cfg.step)
        self._buf = _Buffer.empty()
        self._origin: float | None = None
        self._next_window = 0            # windows below this index were emitted already
        self._lines_seen = 0             # running line index for kind=count
        self._last_ts = -math.inf
        self._files = _FileCodes()

    def _axis(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        return cols["timestamp"] if self.cfg.kind == "time" else cols["_pos"]

    def push(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Add a time-ordered batch; return the bags of every window that can no longer grow."""
        n = len(batch["timestamp"])
        if n == 0:
            return BAG_SCHEMA.empty_table()
        batch = dict(batch)
        batch["file"] = self._files.encode(batch["file"])
        ts = np.asarray(batch["timestamp"], dtype=np.float64)
        if ts[0] < self._last_ts or np.any(np.diff(ts) < 0):
            raise WindowError("lines must arrive in non-decreasing timestamp order for time/count windows")
        self._last_ts = float(ts[-1])
        batch["_pos"] = np.arange(self._lines_seen, self._lines_seen + n, dtype=np.float64)
        self._lines_seen += n
        if self._origin is None:
            first = float(self._axis(batch)[0])
            # Align time windows to the stride so window boundaries are stable and readable.
            self._origin = math.floor(first / self.stride) * self.stride if self.cfg.kind == "time" else 0.0
        self._buf.extend(batch)
        # A window is complete once its end is <= the newest line's position: later lines come after it.
        newest = float(self._axis(batch)[-1]) - self._origin
        last_complete = math.floor((newest - self.size) / self.stride)
        if self.cfg.kind == "count":
            # For counts the newest line at position p means positions <= p exist; window j ends at
            # j*stride+size (exclusive) so it is complete when j*stride+size <= p+1.
            last_complete = math.floor((newest + 1 - self.size) / self.stride)
        return self._emit(last_complete)

    def finish(self) -> pa.Table:
        """Emit every remaining window (end of stream)."""
        if len(self._buf) == 0:
            return BAG_SCHEMA.empty_table()
        newest = float(self._axis(self._buf.cols)[-1]) - self._origin
        return self._emit(math.floor(newest / self.stride))

    def _emit(self, last_window: int) -> pa.Table:
        if last_window < self._next_window or len(self._buf) == 0:
            return BAG_SCHEMA.empty_table()
        cols = self._buf.cols
        pos = self._axis(cols) - self._origin                         # [n] offset from origin
        lo = np.floor((pos - self.size) / self.stride).astype(np.int64) + 1
        hi = np.floor(pos / self.stride).astype(np.int64)
        # For 'time', a line exactly at a window's end belongs to the next window only (half-open);
        # the floor above already gives that. Restrict to windows not yet emitted and now complete.
        lo = np.maximum(lo, self._next_window)
        hi_emit = np.minimum(hi, last_window)
        counts = np.maximum(hi_emit - lo + 1, 0)                      # windows each line joins now
        line_idx = np.repeat(np.arange(len(pos)), counts)             # [pairs]
        win = np.repeat(lo, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        order = np.lexsort((line_idx, win))                           # by window, then line order
        win, line_idx = win[order], line_idx[order]
        starts = ends = None
        if self.cfg.kind == "time" and len(win):
            uniq = win[np.concatenate([[True], np.diff(win) != 0])]
            starts = self._origin + uniq * self.stride
            ends = starts + self.size
        table = _bags_table(win, line_idx, cols, self.cfg.max_instances, starts, ends, self._files)
        self._next_window = last_window + 1
        # Drop lines that belong to no future window.
        self._buf.keep(hi > last_window)
        return table


class SessionWindower:
    """One bag per session key (e.g. an HDFS block id), lines in stream order within each session.

    Sessions can span the whole corpus, so every open session is held until :meth:`finish`; lines with
    no session key are counted in ``lines_without_session`` (reported in the manifest, not bagged).
    """

    def __init__(self, cfg: WindowConfig):
        self.cfg = cfg
        self._buf = _Buffer.empty()
        self.lines_without_session = 0
        self._files = _FileCodes()

    def push(self, batch: dict[str, np.ndarray]) -> pa.Table:
        batch = dict(batch)
        batch["file"] = self._files.encode(batch["file"])
        sessions = np.asarray(batch["session"], dtype=object)
        has = np.array([s is not None and s == s and s != "" for s in sessions], dtype=bool)
        self.lines_without_session += int((~has).sum())
        self._buf.extend({k: np.asarray(v)[has] for k, v in batch.items()})
        return BAG_SCHEMA.empty_table()

    def finish(self) -> pa.Table:
        if len(self._buf) == 0:
            return BAG_SCHEMA.empty_table()
        cols = self._buf.cols
        keys = cols["session"].astype(str)
        uniq, first_seen, inverse = np.unique(keys, return_index=True, return_inverse=True)
        # Number sessions by first appearance so bag order follows the stream.
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(first_seen, kind="stable")] = np.arange(len(uniq))
        win = rank[inverse]
        order = np.lexsort((np.arange(len(win)), win))
        names = list(uniq[np.argsort(rank)])
        table = _bags_table(win[order], order, cols, self.cfg.max_instances, None, None, self._files)
        # _bags_table gives runs in window order; attach the session key of each part.
        return table.set_column(table.schema.get_field_index("session"), "session",
                                pa.array([names[w] for w in table.column("window").to_numpy()], pa.string()))


def make_windower(cfg: WindowConfig) -> SlidingWindower | SessionWindower:
    return SessionWindower(cfg) if cfg.kind == "session" else SlidingWindower(cfg)


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------

def _parse_time(value: str, path: Path, row: int) -> float:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return np.datetime64(value.replace(" ", "T"), "us").astype("int64") / 1e6
    except ValueError:
        raise WindowError(f"{path}:{row}: cannot read time {value!r} (epoch seconds or ISO 8601 expected)") from None


def load_alarms(path: str | Path) -> np.ndarray:
    """Read an alarms CSV (``start,end`` per row) into a float array [n, 2] sorted by start."""
    p = Path(path)
    if not p.exists():
        raise WindowError(f"alarms file {p} does not exist")
    spans = []
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"start", "end"} <= set(reader.fieldnames):
            raise WindowError(f"alarms file {p} needs a header with columns 'start,end', got {reader.fieldnames}")
        for row_no, row in enumerate(reader, start=2):
            start, end = _parse_time(row["start"], p, row_no), _parse_time(row["end"], p, row_no)
            if end < start:
                raise WindowError(f"{p}:{row_no}: alarm ends ({end}) before it starts ({start})")
            spans.append((start, end))
    arr = np.array(spans, dtype=np.float64).reshape(-1, 2)
    return arr[np.argsort(arr[:, 0], kind="stable")]


def alarm_labels(starts: np.ndarray, ends: np.ndarray, alarms: np.ndarray) -> np.ndarray:
    """1 where the bag span [start, end] overlaps any alarm span [a0, a1], else 0."""
    if len(alarms) == 0:
        return np.zeros(len(starts), np.int8)
    a_start, a_end = alarms[:, 0], alarms[:, 1]
    prefix_max_end = np.maximum.accumulate(a_end)
    # Alarms that start no later than the bag ends; the latest end among them must reach the bag start.
    idx = np.searchsorted(a_start, ends, side="right")
    reach = np.where(idx > 0, prefix_max_end[np.maximum(idx - 1, 0)], -np.inf)
    return (reach >= starts).astype(np.int8)


_POSITIVE = {"1", "anomaly", "anomalous", "abnormal", "true", "yes", "fail", "failure"}
_NEGATIVE = {"0", "normal", "false", "no", "success", "ok"}


def load_session_labels(path: str | Path) -> dict[str, int]:
    """Read a session label CSV: first column the session key, a ``label`` column (or the second column)."""
    p = Path(path)
    if not p.exists():
        raise WindowError(f"session label file {p} does not exist")
    out: dict[str, int] = {}
    with p.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or len(header) < 2:
            raise WindowError(f"session label file {p} needs a header row with a key and a label column")
        lower = [h.strip().lower() for h in header]
        label_col = lower.index("label") if "label" in lower else 1
        key_col = 0 if label_col != 0 else 1
        for row_no, row in enumerate(reader, start=2):
            if not row:
                continue
            value = row[label_col].strip().lower()
            if value in _POSITIVE:
                out[row[key_col].strip()] = 1
            elif value in _NEGATIVE:
                out[row[key_col].strip()] = 0
            else:
                raise WindowError(f"{p}:{row_no}: label {row[label_col]!r} is neither normal (0/Normal) "
                                  f"nor anomalous (1/Anomaly)")
    return out


class BagLabeler:
    """Assigns the bag label column according to :class:`LabelConfig`."""

    def __init__(self, cfg: LabelConfig):
        self.cfg = cfg
        self.alarms = load_alarms(cfg.alarms_path) if cfg.source == "alarms" else None
        self.session_labels = load_session_labels(cfg.session_labels_path) if cfg.source == "sessions" else None
        self.sessions_without_label = 0

    def __call__(self, bags: pa.Table) -> pa.Table:
        n = bags.num_rows
        if self.cfg.source == "lines":
            label = bags.column("line_label").to_numpy().astype(np.int8)
            if n and (label < 0).any():
                raise WindowError("labels.source is 'lines' but some lines have no label "
                                  "(the format has no label field); use alarms, sessions or none")
        elif self.cfg.source == "alarms":
            label = alarm_labels(bags.column("start").to_numpy(), bags.column("end").to_numpy(), self.alarms)
        elif self.cfg.source == "sessions":
            keys = bags.column("session").to_pylist()
            label = np.array([self.session_labels.get(k, -1) for k in keys], np.int8)
            self.sessions_without_label += int((label < 0).sum())
        else:
            label = np.full(n, -1, np.int8)
        return bags.append_column("label", pa.array(label, pa.int8()))


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------

def assign_splits(starts: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """Split name per bag: chronological by start time (ties by order), or random by seed."""
    n = len(starts)
    if cfg.mode == "chronological":
        order = np.argsort(starts, kind="stable")
    else:
        order = np.random.default_rng(cfg.seed).permutation(n)
    n_train = int(round(cfg.train * n))
    n_val = int(round(cfg.val * n))
    names = np.empty(n, dtype=object)
    names[order[:n_train]] = "train"
    names[order[n_train:n_train + n_val]] = "val"
    names[order[n_train + n_val:]] = "test"
    return names


def iter_bags(batches: Iterator[dict[str, np.ndarray]], cfg: WindowConfig) -> Iterator[pa.Table]:
    """Convenience: run a windower over an iterator of column batches, yielding non-empty bag tables."""
    windower = make_windower(cfg)
    for batch in batches:
        table = windower.push(batch)
        if table.num_rows:
            yield table
    table = windower.finish()
    if table.num_rows:
        yield table
