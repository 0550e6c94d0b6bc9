"""The prepare stage on Ray Data: raw log corpora -> events, templates and bags.

This module holds the Ray part: it plans read tasks, maps :class:`~ray_logmilp.ingest.stage.ParseTask`
over them with Ray Data, and consumes the stream on the driver (see docs/ingest.md for the why):

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
``bags.parquet`` and ``manifest.json`` (counts, ``read == parsed + quarantined`` always holds; the files
read and the inputs skipped; each output's size and row count or hash). They are written to a temporary
folder and moved into ``output_dir`` when the run succeeds, the manifest last
(:func:`ray_logmilp.storage.atomic_dir`), so a failed run leaves the previous output as it was.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ray_logmilp import storage
from ray_logmilp.config import DataConfig, to_dict
from ray_logmilp.ingest import reading
from ray_logmilp.ingest.format_spec import LogFormat, load_format
from ray_logmilp.ingest.mining import TemplateAssigner
from ray_logmilp.ingest.outputs import (
    BagSink,
    LineCounts,
    add_counts,
    events_from_stage,
    finalize_bags,
    plain_file_names,
    window_batch,
    write_templates,
)
from ray_logmilp.ingest.parsing import ParserConfig
from ray_logmilp.ingest.prepared import MANIFEST, output_record
from ray_logmilp.ingest.reading import LineNumbering, plan_read_tasks
from ray_logmilp.ingest.schemas import EVENTS_SCHEMA, QUARANTINE_SCHEMA
from ray_logmilp.ingest.sources import InputError, InputListing, list_inputs
from ray_logmilp.ingest.stage import ParseTask
from ray_logmilp.ingest.windows import BagLabeler, make_windower

log = logging.getLogger(__name__)

PARSE_BUFFER_BYTES = 512 * 1024 * 1024   # parsed-but-not-consumed data allowed in the object store

OUTPUT_FILES = ("events.parquet", "quarantine.parquet", "templates.parquet", "parser.json", "embedder.json",
                "bags.parquet")
"""What a prepare run writes besides ``manifest.json``, which records each of them."""


class PrepareError(RuntimeError):
    """The prepare stage cannot go on (strict mode hit a bad line, labels missing, ...)."""


def _check_inputs(cfg: DataConfig) -> tuple[LogFormat, InputListing, ParserConfig, BagLabeler]:
    """Everything that can fail on bad configuration or input, before any Ray work."""
    fmt = load_format(cfg.format)
    listing = list_inputs(cfg.inputs)
    files = listing.files
    if all(getattr(f, "size", 1) == 0 for f in files):
        raise PrepareError(f"the input is empty: {', '.join(f.name for f in files)} "
                           f"contain{'s' if len(files) == 1 else ''} no bytes")
    if cfg.labels.source == "lines" and fmt.label is None:
        raise PrepareError(f"data.labels.source is 'lines' but format '{fmt.name}' has no label field; "
                           "use data.labels.source=alarms (with data.labels.alarms_path), sessions or none")
    if cfg.window.kind == "session" and fmt.session is None:
        raise PrepareError(f"data.window.kind is 'session' but format '{fmt.name}' defines no session key")
    parser_cfg = ParserConfig.from_format(fmt)
    labeler = BagLabeler(cfg.labels)
    return fmt, listing, parser_cfg, labeler


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
    """Run the whole prepare stage; returns the manifest (also written to ``manifest.json``).

    Nothing in ``cfg.output_dir`` changes unless the run succeeds (see the module docstring)."""
    t0 = time.perf_counter()
    checked = _check_inputs(cfg)
    with storage.atomic_dir(cfg.output_dir, marker=MANIFEST) as (fs, out_dir):
        return _prepare_into(fs, out_dir, cfg, checked, progress, t0)


def _prepare_into(fs, out_dir: str, cfg: DataConfig, checked: tuple, progress: bool, t0: float) -> dict[str, Any]:
    import ray

    fmt, listing, parser_cfg, labeler = checked
    files = listing.files
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        timings[name] = round(now - mark, 3)
        mark = now

    tasks = plan_read_tasks(files)
    lap("plan")
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
        ParseTask, fn_constructor_args=(fmt, parser_cfg, reading.CHUNK_LINES), batch_size=1,
        batch_format="pyarrow", compute=_parse_pool(cfg, len(items)),
        num_cpus=1,
    )

    lap("ray_setup")
    counts = LineCounts()
    assigner = TemplateAssigner(parser_cfg)
    windower = make_windower(cfg.window)
    events_path, bags_tmp = f"{out_dir}/events.parquet", f"{out_dir}/bags.unsplit.arrows"
    # Dictionary-encode only the low-cardinality columns: building (and abandoning) a dictionary for the
    # content column was the biggest single cost of the driver's loop.
    events_writer = pq.ParquetWriter(events_path, EVENTS_SCHEMA, filesystem=fs,
                                     use_dictionary=["file", "session", "label"])
    quarantine_writer = pq.ParquetWriter(f"{out_dir}/quarantine.parquet", QUARANTINE_SCHEMA, filesystem=fs)
    sink = BagSink(fs, bags_tmp, labeler)
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
            template_counts = add_counts(template_counts, tids)
            events = events_from_stage(table, tids)
            events_writer.write_table(events)
            ts = events.column("timestamp").to_numpy()
            if sorted_so_far and (ts[0] < last_ts or np.any(np.diff(ts) < 0)):
                sorted_so_far = False
                sink.reset()
                log.info("input is not in time order: events will be sorted before bagging")
            last_ts = max(last_ts, float(ts.max()))
            if sorted_so_far:
                sink.write(windower.push(window_batch(events)))
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
                     .map_batches(plain_file_names, batch_format="pyarrow", batch_size=None)
                     .sort(["timestamp", "file", "line_no"]))
        for batch in sorted_ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if batch.num_rows:
                sink.write(windower.push(window_batch(batch)))
        sink.write(windower.finish())
    sink.close()
    lap("bagging_tail")
    lines_without_session = getattr(windower, "lines_without_session", 0)

    n_templates = write_templates(fs, out_dir, assigner.parser.freeze(), template_counts, cfg.embedding)
    lap("templates")
    split_counts = finalize_bags(fs, bags_tmp, f"{out_dir}/bags.parquet", cfg)
    lap("splits")

    manifest = {
        "version": 2,   # 2: records every output file ("outputs") and the skipped inputs
        "inputs": [str(f) for f in cfg.inputs],
        "files": [f.name for f in files],
        "inputs_skipped": listing.skipped(),
        "format": fmt.name,
        "lines": {
            "read": counts.read,
            "parsed": counts.parsed,
            "quarantined": int(sum(counts.quarantined.values())),
            "quarantined_by_reason": dict(sorted(counts.quarantined.items())),
            "per_file": counts.per_file,
            "without_session": int(lines_without_session),
        },
        "templates": n_templates,
        "bags": {"total": sink.count, "by_split": split_counts,
                 "sessions_without_label": labeler.sessions_without_label},
        "time_ordered_input": sorted_so_far,
        "seconds": round(time.perf_counter() - t0, 3),
        "timings": timings,
        "config": to_dict(cfg),
        "outputs": {name: output_record(fs, f"{out_dir}/{name}") for name in OUTPUT_FILES},
    }
    if manifest["lines"]["read"] != manifest["lines"]["parsed"] + manifest["lines"]["quarantined"]:
        raise PrepareError(f"line accounting broke: {manifest['lines']}")   # a bug, never bad input
    storage.write_text(fs, f"{out_dir}/{MANIFEST}", json.dumps(manifest, indent=2))
    return manifest
