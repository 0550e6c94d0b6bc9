"""The prepare stage on Ray Data: raw log corpora -> events, templates and bags.

Design (see docs/ingest.md for the why):

1. **Read + format + mask, in parallel** (Ray Data ``map_batches`` over read tasks). Big uncompressed
   files are split into newline-aligned byte ranges, so one large file still uses every core. Header
   parsing and masking run on whole Arrow batches (pyarrow RE2 kernels), not line by line. Every line
   comes out either parsed or quarantined with a reason.
2. **Template discovery, sequential and cheap** (driver). Batches arrive in corpus order; the driver
   feeds only the *distinct* masked messages it has not seen before to one drain3 instance, in order of
   first appearance, so the template of every line is the one a plain sequential drain3 pass would
   assign, while drain3 sees a tiny fraction of the lines (logs repeat heavily). Lines are mapped to
   template ids with a vectorised ``pyarrow.compute.index_in``.
3. **Bagging, streaming** (driver, numpy). Time-ordered input is bagged on the fly; input that is not
   time-ordered (several files, clock skew) is first written as events and sorted by Ray Data.

Outputs in ``output_dir``: ``events.parquet``, ``quarantine.parquet``, ``templates.parquet``
(id, text, count, embedding), ``parser.json`` (frozen drain3 state, our JSON), ``embedder.json``,
``bags.parquet`` and ``manifest.json`` (counts; ``read == parsed + quarantined`` always holds).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_logmilp import storage
from ray_logmilp.config import DataConfig, to_dict
from ray_logmilp.ingest.embedding import embedder_from_config
from ray_logmilp.ingest.formats import LogFormat, load_format, parse_chunk
from ray_logmilp.ingest.parsing import ParserConfig, TemplateParser, mask_array
from ray_logmilp.ingest.sources import InputError, LineNumbering, ReadTask, expand_inputs, plan_read_tasks, read_task_chunks
from ray_logmilp.ingest.windows import BAG_SCHEMA, BagLabeler, assign_splits, make_windower

log = logging.getLogger(__name__)

# A chunk's lines all come from one file: ``file`` travels and is stored dictionary-encoded, not as the
# path repeated on every line (tens of bytes per line through the object store and the writer).
_FILE_TYPE = pa.dictionary(pa.int32(), pa.string())
# Masked messages travel dictionary-encoded: a chunk's distinct contents are masked once (logs repeat,
# 38% of a synthetic chunk's contents are distinct) and the driver looks up distinct values only.
_MASKED_TYPE = pa.dictionary(pa.int32(), pa.string())

EVENTS_SCHEMA = pa.schema([
    ("file", _FILE_TYPE),
    ("line_no", pa.int64()),
    ("timestamp", pa.float64()),
    ("label", pa.int8()),
    ("session", pa.string()),
    ("template_id", pa.int32()),
    ("content", pa.string()),
])
QUARANTINE_SCHEMA = pa.schema([
    ("file", pa.string()),
    ("line_no", pa.int64()),
    ("reason", pa.string()),
    ("raw", pa.string()),
])
# What a parse task emits: parsed lines (reason null) and quarantined lines (reason set) in one table,
# so a single Ray Data stream carries both and nothing can fall between two outputs.
_STAGE_SCHEMA = pa.schema([
    ("task", pa.int32()),
    ("file", _FILE_TYPE),
    ("line_no", pa.int64()),
    ("timestamp", pa.float64()),
    ("label", pa.int8()),
    ("session", pa.string()),
    ("content", pa.string()),
    ("masked", _MASKED_TYPE),
    ("reason", pa.string()),
    ("raw", pa.string()),
])


PARSE_BUFFER_BYTES = 512 * 1024 * 1024   # parsed-but-not-consumed data allowed in the object store


class PrepareError(RuntimeError):
    """The prepare stage cannot go on (strict mode hit a bad line, labels missing, ...)."""


# --------------------------------------------------------------------------------------------------
# Stage 1: runs inside Ray Data workers.
# --------------------------------------------------------------------------------------------------

def _one_file_column(files: pa.ChunkedArray) -> pa.DictionaryArray:
    """The ``file`` column of one chunk's events (a single name) as a dictionary array, built without
    hashing every row."""
    names = [files[0].as_py()] if len(files) else []
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(files), np.int32)), pa.array(names, pa.string()))


def _mask_distinct(parser_cfg: ParserConfig, content: pa.Array) -> pa.DictionaryArray:
    """Masked content as a dictionary array: the regex passes run once per distinct content string."""
    encoded = pc.dictionary_encode(content)                                   # indices: int32 [n]
    return pa.DictionaryArray.from_arrays(encoded.indices, mask_array(parser_cfg, encoded.dictionary))


def _stage_table(task_index: int, events: pa.Table, quarantine: pa.Table, parser_cfg: ParserConfig) -> pa.Table:
    n_e, n_q = events.num_rows, quarantine.num_rows
    masked = _mask_distinct(parser_cfg, events.column("content").combine_chunks()) if n_e else pa.nulls(0, _MASKED_TYPE)
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
    }, schema=_STAGE_SCHEMA)
    if n_q == 0:
        return parsed
    bad = pa.table({
        "task": pa.array(np.full(n_q, task_index, np.int32)),
        "file": quarantine.column("file").cast(_FILE_TYPE),
        "line_no": quarantine.column("line_no"),
        "timestamp": pa.nulls(n_q, pa.float64()),
        "label": pa.nulls(n_q, pa.int8()),
        "session": pa.nulls(n_q, pa.string()),
        "content": pa.nulls(n_q, pa.string()),
        "masked": pa.nulls(n_q, _MASKED_TYPE),
        "reason": quarantine.column("reason"),
        "raw": quarantine.column("raw"),
    }, schema=_STAGE_SCHEMA)
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
                yield _stage_table(row["index"], events, quarantine, self.parser_cfg)


# --------------------------------------------------------------------------------------------------
# Stage 2+3: the driver's streaming consumer.
# --------------------------------------------------------------------------------------------------

@dataclass
class _Counts:
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


class _TemplateAssigner:
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


def _add_counts(counts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Running per-template line counts; grows as new templates appear."""
    add = np.bincount(ids)
    if len(add) > len(counts):
        counts = np.pad(counts, (0, len(add) - len(counts)))
    counts[: len(add)] += add
    return counts


def _events_from_stage(table: pa.Table, template_ids: np.ndarray) -> pa.Table:
    return pa.table({
        "file": table.column("file"), "line_no": table.column("line_no"),
        "timestamp": table.column("timestamp"), "label": table.column("label"),
        "session": table.column("session"), "template_id": pa.array(template_ids, pa.int32()),
        "content": table.column("content"),
    }, schema=EVENTS_SCHEMA)


def _plain_file_names(events: pa.Table) -> pa.Table:
    i = events.schema.get_field_index("file")
    return events.set_column(i, "file", events.column(i).cast(pa.string()))


def _window_batch(events: pa.Table) -> dict[str, np.ndarray]:
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


class _BagSink:
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


def _check_inputs(cfg: DataConfig) -> tuple[LogFormat, list, ParserConfig, BagLabeler]:
    """Everything that can fail on bad configuration or input, before any Ray work."""
    fmt = load_format(cfg.format)
    files = expand_inputs(cfg.inputs)
    if all(getattr(f, "size", 1) == 0 for f in files):
        raise PrepareError(f"the input is empty: {', '.join(str(storage.describe(f)) for f in files)} "
                           f"contain{'s' if len(files) == 1 else ''} no bytes")
    if cfg.labels.source == "lines" and fmt.label is None:
        raise PrepareError(f"data.labels.source is 'lines' but format '{fmt.name}' has no label field; "
                           "use data.labels.source=alarms (with data.labels.alarms_path), sessions or none")
    if cfg.window.kind == "session" and fmt.session is None:
        raise PrepareError(f"data.window.kind is 'session' but format '{fmt.name}' defines no session key")
    parser_cfg = ParserConfig.from_format(fmt)
    labeler = BagLabeler(cfg.labels)
    return fmt, files, parser_cfg, labeler


def _parse_pool(cfg: DataConfig, n_tasks: int):
    """Actor pool for parsing: a fixed size when configured; otherwise it may grow from one actor up to
    the cluster's CPUs (an autoscaling cluster can start with none, so today's count is no ceiling)."""
    import ray

    if cfg.parse_concurrency:
        return ray.data.ActorPoolStrategy(size=min(n_tasks, cfg.parse_concurrency))
    now = max(1, int(ray.available_resources().get("CPU", 1)))
    total = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return ray.data.ActorPoolStrategy(min_size=min(n_tasks, now), max_size=max(1, min(n_tasks, max(now, total))))


def prepare(cfg: DataConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run the whole prepare stage; returns the manifest (also written to ``manifest.json``)."""
    import ray

    t0 = time.perf_counter()
    fmt, files, parser_cfg, labeler = _check_inputs(cfg)
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round(now - mark, 3)
        mark = now

    tasks = plan_read_tasks(files, target_bytes=cfg.read_block_bytes)
    lap("plan")
    fs, out_dir = storage.resolve_dir(cfg.output_dir, create=True)
    log.info("prepare: %d input file(s), %d read task(s), format %s -> %s", len(files), len(tasks), fmt.name,
             cfg.output_dir)

    if not ray.is_initialized():
        ray.init()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True   # the driver relies on corpus order (first appearance)
    # Bound what parse workers may run ahead of the driver: without a cap, parsed blocks pile up in the
    # object store and memory grows with the corpus instead of staying flat.
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
        object_store_memory=PARSE_BUFFER_BYTES)
    ctx.enable_progress_bars = progress

    items = [{"index": i, "task": json.dumps(t.to_dict())} for i, t in enumerate(tasks)]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ParseTask, fn_constructor_args=(fmt, parser_cfg, cfg.chunk_lines), batch_size=1,
        batch_format="pyarrow", compute=_parse_pool(cfg, len(items)),
        num_cpus=1,
    )

    lap("ray_setup")
    counts = _Counts()
    assigner = _TemplateAssigner(parser_cfg)
    windower = make_windower(cfg.window)
    events_path, bags_tmp = f"{out_dir}/events.parquet", f"{out_dir}/bags.unsplit.arrows"
    # Dictionary-encode only the low-cardinality columns: building (and abandoning) a dictionary for the
    # content column was the biggest single cost of the driver's loop.
    events_writer = pq.ParquetWriter(events_path, EVENTS_SCHEMA, filesystem=fs,
                                     use_dictionary=["file", "session", "label"])
    quarantine_writer = pq.ParquetWriter(f"{out_dir}/quarantine.parquet", QUARANTINE_SCHEMA, filesystem=fs)
    sink = _BagSink(fs, bags_tmp, labeler)
    numbering = LineNumbering(tasks)   # ranges after a file's first number their lines from 1
    template_counts = np.zeros(0, np.int64)
    sorted_so_far, last_ts = True, -np.inf
    last_report = time.perf_counter()

    try:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            try:
                line_nos = numbering.apply(table.column("task").to_numpy(), table.column("line_no").to_numpy(),
                                           table.column("reason"))
            except InputError as exc:
                raise PrepareError(str(exc)) from None
            table = table.set_column(table.schema.get_field_index("line_no"), "line_no", pa.array(line_nos))
            counts.add(table)
            bad_mask = pc.is_valid(table.column("reason"))
            if counts.read != counts.parsed:   # some line of this batch (or an earlier one) is quarantined
                bad = table.filter(bad_mask)
                if bad.num_rows:
                    if cfg.strict:
                        first = bad.slice(0, 1).to_pylist()[0]
                        raise PrepareError(f"strict mode: {first['file']}:{first['line_no']}: {first['reason']} "
                                           f"(line starts {first['raw'][:80]!r})")
                    quarantine_writer.write_table(bad.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA))
                table = table.filter(pc.invert(bad_mask))
            if table.num_rows == 0:
                continue
            tids = assigner.assign(table.column("masked"))
            template_counts = _add_counts(template_counts, tids)
            events = _events_from_stage(table, tids)
            events_writer.write_table(events)
            ts = events.column("timestamp").to_numpy()
            if sorted_so_far and (ts[0] < last_ts or np.any(np.diff(ts) < 0)):
                sorted_so_far = False
                sink.reset()
                log.info("input is not in time order: events will be sorted before bagging")
            last_ts = max(last_ts, float(ts.max()))
            if sorted_so_far:
                sink.write(windower.push(_window_batch(events)))
            if progress and time.perf_counter() - last_report > 10:
                last_report = time.perf_counter()
                log.info("prepare: %d lines read, %d quarantined, %d templates, %d bags so far",
                         counts.read, counts.read - counts.parsed, assigner.parser.num_templates, sink.count)
    finally:
        events_writer.close()
        quarantine_writer.close()

    lap("stream")
    if counts.read == 0:
        sink.close()
        raise PrepareError(f"no lines were read from {cfg.inputs}: the input files are empty")
    if counts.parsed == 0:
        sink.close()
        raise PrepareError(f"none of the {counts.read} lines matched format '{fmt.name}'; "
                           f"quarantine reasons: {dict(counts.quarantined)} — is data.format right?")

    if sorted_so_far:
        sink.write(windower.finish())
    else:
        # Out-of-order input: sort the written events by time with Ray Data, then bag in one stream.
        windower = make_windower(cfg.window)
        # Arrow cannot sort on a dictionary column: file names go back to plain strings for the sort.
        sorted_ds = (ray.data.read_parquet(events_path, filesystem=fs)
                     .map_batches(_plain_file_names, batch_format="pyarrow", batch_size=None)
                     .sort(["timestamp", "file", "line_no"]))
        for batch in sorted_ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if batch.num_rows:
                sink.write(windower.push(_window_batch(batch)))
        sink.write(windower.finish())
    sink.close()
    lap("bagging_tail")
    lines_without_session = getattr(windower, "lines_without_session", 0)

    # Templates with embeddings and the frozen parser.
    frozen = assigner.parser.freeze()
    texts = frozen.texts
    embedder = embedder_from_config(cfg.embedding, texts)
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

    lap("templates")
    split_counts = _finalize_bags(fs, bags_tmp, f"{out_dir}/bags.parquet", cfg)
    lap("splits")

    manifest = {
        "version": 1,
        "inputs": [str(f) for f in cfg.inputs],
        "files": [storage.describe(f) for f in files],
        "format": fmt.name,
        "lines": {
            "read": counts.read,
            "parsed": counts.parsed,
            "quarantined": int(sum(counts.quarantined.values())),
            "quarantined_by_reason": dict(sorted(counts.quarantined.items())),
            "per_file": counts.per_file,
            "without_session": int(lines_without_session),
        },
        "templates": len(texts),
        "bags": {"total": sink.count, "by_split": split_counts,
                 "sessions_without_label": labeler.sessions_without_label},
        "time_ordered_input": sorted_so_far,
        "seconds": round(time.perf_counter() - t0, 3),
        "timings": timings,
        "config": to_dict(cfg),
    }
    if manifest["lines"]["read"] != manifest["lines"]["parsed"] + manifest["lines"]["quarantined"]:
        raise PrepareError(f"line accounting broke: {manifest['lines']}")   # a bug, never bad input
    storage.write_text(fs, f"{out_dir}/manifest.json", json.dumps(manifest, indent=2))
    return manifest


def _unsplit_batches(fs, path: str) -> Iterator[pa.RecordBatch]:
    with fs.open_input_stream(path) as fh:
        yield from pa.ipc.open_stream(fh)


def _finalize_bags(fs, tmp_path: str, final_path: str, cfg: DataConfig) -> dict[str, dict[str, int]]:
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
