"""The prepare stage end to end on a real local Ray (2 CPUs)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ray_logmilp.config import load_project
from ray_logmilp.ingest import reading
from ray_logmilp.ingest.format_spec import load_format
from ray_logmilp.ingest.mining import grouping_accuracy, sequential_drain_baseline
from ray_logmilp.ingest.parsing import ParserConfig
from ray_logmilp.ingest.pipeline import PrepareError, prepare
from ray_logmilp.ingest.prepared import DataError, load_prepared

from ..conftest import REPO_ROOT, loghub_file

pytestmark = pytest.mark.integration


def cfg_for(inputs, out, *overrides):
    return load_project(None, [f"data.inputs=[{', '.join(str(i) for i in inputs)}]", f"data.output_dir={out}",
                               "data.format=bgl", *overrides]).data


def count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "rb") as fh:
        try:
            for _ in fh:
                n += 1
        except EOFError:     # truncated gzip: what could be read counts
            n += 1
    return n


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """A synthetic corpus with planted bad lines, plus a truncated gzip and a file with a 1 MB line."""
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("bad")
    generate(SyntheticConfig(n_lines=20_000, seed=3, corrupt=True), root / "a")
    truth = json.loads((root / "a" / "truth.json").read_text())
    good = (root / "a" / "corpus.log").read_bytes().splitlines(keepends=True)
    # Truncated gzip: the compressed stream cut in the middle of the file.
    data = gzip.compress(b"".join(good[:3000]))
    (root / "b.log.gz").write_bytes(data[: len(data) // 2])
    # A 1 MB line between two good lines, and a file without a final newline.
    (root / "c.log").write_bytes(good[100] + b"- 1 2005.06.03 X " + b"x" * (1 << 20) + b"\n" + good[101].rstrip(b"\n"))
    return root, truth


def test_nothing_is_lost_on_planted_bad_input(ray_local, bad_corpus, tmp_path, monkeypatch):
    root, truth = bad_corpus
    files = [root / "a" / "corpus.log", root / "b.log.gz", root / "c.log"]
    monkeypatch.setattr(reading, "READ_BLOCK_BYTES", 200000)   # several byte ranges per file
    manifest = prepare(cfg_for(files, tmp_path / "out"), progress=False)
    lines = manifest["lines"]
    assert lines["read"] == lines["parsed"] + lines["quarantined"]
    # Read counts agree with an independent count of the files (the truncated gzip: what was decodable).
    assert lines["per_file"][str(files[0])] == count_lines(files[0])
    assert lines["per_file"][str(files[2])] == 3
    reasons = lines["quarantined_by_reason"]
    assert reasons.get("truncated_gzip") == 1
    assert reasons.get("line_too_long") == 1
    assert reasons.get("undecodable_bytes", 0) >= 1 and reasons.get("header_mismatch", 0) >= 1
    assert sum(reasons.values()) == lines["quarantined"]
    # The quarantine file holds exactly the counted rows, with file and line numbers.
    q = pq.read_table(tmp_path / "out" / "quarantine.parquet")
    events = pq.read_table(tmp_path / "out" / "events.parquet")
    assert q.num_rows == lines["quarantined"] and events.num_rows == lines["parsed"]
    # Every planted bad line of the synthetic file is quarantined at its line number, for its reason.
    planted = {int(r["line_no"]): r["kind"] for r in truth["corrupt_lines"]}
    assert len(planted) >= 8
    got = {n: r for f, n, r in zip(q.column("file").to_pylist(), q.column("line_no").to_pylist(),
                                   q.column("reason").to_pylist()) if f == str(files[0])}
    assert got == planted


def test_strict_mode_names_file_line_and_reason(ray_local, bad_corpus, tmp_path):
    root, _ = bad_corpus
    with pytest.raises(PrepareError, match=r"corpus\.log:\d+: \w+"):
        prepare(cfg_for([root / "a" / "corpus.log"], tmp_path / "out", "data.strict=true"), progress=False)


def test_a_failed_prepare_leaves_the_previous_output_loadable(ray_local, synthetic_corpus, bad_corpus, tmp_path):
    """The issue's reproduction: prepare into X, then a strict run on dirty input into X fails. X still
    holds the first run's complete output (no partial events.parquet), and a hand-made mix is refused."""
    out = tmp_path / "out"
    first = prepare(cfg_for([synthetic_corpus / "corpus.log"], out), progress=False)
    with pytest.raises(PrepareError, match="strict mode"):
        prepare(cfg_for([bad_corpus[0] / "a" / "corpus.log"], out, "data.strict=true"), progress=False)
    assert pq.read_metadata(out / "events.parquet").num_rows == first["lines"]["parsed"]
    assert load_prepared(str(out)).manifest["lines"] == first["lines"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]          # no temporary folder left behind
    pq.write_table(pq.read_table(out / "events.parquet").slice(0, 1000), out / "events.parquet")
    with pytest.raises(DataError, match=r"events\.parquet is .*'rows': 1000.*re-run jobs/prepare\.py"):
        load_prepared(str(out))


def test_symlink_loop_reads_each_file_once_and_nul_lines_are_counted(ray_local, synthetic_corpus, tmp_path):
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    lines = (synthetic_corpus / "corpus.log").read_bytes().splitlines(keepends=True)[:2000]
    (logs / "a.log").write_bytes(b"".join(lines[:1000]))
    (logs / "sub" / "b.log").write_bytes(b"".join(lines[1000:1500]) + b"\x00\x00 binary junk\n" + b"".join(lines[1500:]))
    (logs / "sub" / "up").symlink_to("..")                 # the loop that used to multiply the corpus
    manifest = prepare(cfg_for([logs, logs / "a.log"], tmp_path / "out"), progress=False)
    assert manifest["files"] == [str(logs / "a.log"), str(logs / "sub" / "b.log")]
    assert manifest["inputs_skipped"] == {"symlink_loops": [str(logs / "sub" / "up")], "broken_links": [],
                                          "duplicates": 1}
    lines_ = manifest["lines"]
    assert lines_["read"] == 2001 == lines_["parsed"] + lines_["quarantined"]
    assert lines_["quarantined_by_reason"] == {"nul_byte": 1}
    (row,) = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert (row["file"], row["line_no"], row["reason"]) == (str(logs / "sub" / "b.log"), 501, "nul_byte")


def test_parallel_grouping_equals_sequential_drain(ray_local, synthetic_corpus, tmp_path, monkeypatch):
    # Several read tasks (small blocks) so the driver really merges parallel output.
    monkeypatch.setattr(reading, "READ_BLOCK_BYTES", 300000)
    manifest = prepare(cfg_for([synthetic_corpus / "corpus.log"], tmp_path / "out"),
                       progress=False)
    assert manifest["lines"]["quarantined"] == 0
    events = pq.read_table(tmp_path / "out" / "events.parquet", columns=["line_no", "template_id", "content"])
    order = np.argsort(events.column("line_no").to_numpy())
    # the driver numbered the ranges' lines: every line of the file once, 1..N
    np.testing.assert_array_equal(events.column("line_no").to_numpy()[order], np.arange(1, events.num_rows + 1))
    contents = [events.column("content").to_pylist()[i] for i in order]
    ours = events.column("template_id").to_numpy()[order]
    baseline = sequential_drain_baseline(contents, ParserConfig.from_format(load_format("bgl")))
    assert grouping_accuracy(ours, baseline) >= 0.99


def test_time_windows_with_alarm_labels(ray_local, synthetic_corpus, tmp_path):
    cfg = cfg_for([synthetic_corpus / "corpus.log"], tmp_path / "out", "data.window.kind=time", "data.window.size=60",
                  "data.window.stride=30", "data.labels.source=alarms",
                  f"data.labels.alarms_path={synthetic_corpus / 'alarms.csv'}")
    manifest = prepare(cfg, progress=False)
    bags = pq.read_table(tmp_path / "out" / "bags.parquet").to_pandas()
    assert manifest["bags"]["total"] == len(bags) > 0
    assert ((bags["end"] - bags["start"]) == 60).all()
    # Every bag holding a labelled anomalous line overlaps an alarm, so it is positive.
    has_anomaly = bags["instance_labels"].map(lambda v: int(max(v)) == 1)
    assert (bags.loc[has_anomaly, "label"] == 1).all()
    assert 0 < bags["label"].mean() < 1
    assert set(bags["split"]) == {"train", "val", "test"}


def test_count_windows_with_line_labels_cover_every_line(ray_local, synthetic_corpus, tmp_path):
    cfg = cfg_for([synthetic_corpus / "corpus.log"], tmp_path / "out", "data.window.size=64", "data.window.stride=32")
    manifest = prepare(cfg, progress=False)
    bags = pq.read_table(tmp_path / "out" / "bags.parquet").to_pandas()
    covered = set(np.concatenate(bags["line_nos"].to_numpy()))
    assert len(covered) == manifest["lines"]["parsed"]
    assert (bags["label"] == bags["instance_labels"].map(max)).all()
    # Chronological split: every train bag starts before every test bag.
    assert bags.loc[bags.split == "train", "start"].max() <= bags.loc[bags.split == "test", "start"].min()


def test_sessions_on_hdfs_sample_with_session_labels(ray_local, tmp_path):
    sample = loghub_file("HDFS")
    from ray_logmilp.ingest.reading import read_file_events
    events, _ = read_file_events(sample, load_format("hdfs"))
    blocks = sorted({s for s in events.column("session").to_pylist() if s})
    labels = tmp_path / "labels.csv"
    labels.write_text("BlockId,Label\n" + "".join(f"{b},{'Anomaly' if i % 5 == 0 else 'Normal'}\n"
                                                   for i, b in enumerate(blocks)))
    cfg = load_project(None, [f"data.inputs=[{sample}]", f"data.output_dir={tmp_path / 'out'}", "data.format=hdfs",
                              "data.window.kind=session", "data.labels.source=sessions",
                              f"data.labels.session_labels_path={labels}"]).data
    manifest = prepare(cfg, progress=False)
    bags = pq.read_table(tmp_path / "out" / "bags.parquet").to_pandas()
    assert set(bags["session"]) == set(blocks) and manifest["bags"]["total"] == len(blocks)
    expected = {b: int(i % 5 == 0) for i, b in enumerate(blocks)}
    assert all(expected[s] == lab for s, lab in zip(bags["session"], bags["label"]))


def test_out_of_order_files_are_sorted_before_bagging(ray_local, synthetic_corpus, tmp_path):
    lines = (synthetic_corpus / "corpus.log").read_bytes().splitlines(keepends=True)[:4000]
    (tmp_path / "odd.log").write_bytes(b"".join(lines[1::2]))
    (tmp_path / "even.log").write_bytes(b"".join(lines[0::2]))
    manifest = prepare(cfg_for([tmp_path / "odd.log", tmp_path / "even.log"], tmp_path / "out",
                               "data.window.size=100"), progress=False)
    assert manifest["time_ordered_input"] is False
    bags = pq.read_table(tmp_path / "out" / "bags.parquet").to_pandas()
    ts = np.concatenate(bags.sort_values("bag_id")["line_nos"].to_numpy())
    assert len(ts) == 4000
    first = bags.sort_values("bag_id").iloc[0]
    # The first bag interleaves both files, as time says.
    assert set(os.path.basename(f) for f in first["line_files"]) == {"odd.log", "even.log"}


def test_uri_inputs_and_outputs(ray_local, synthetic_corpus, tmp_path):
    manifest = prepare(cfg_for([f"file://{synthetic_corpus / 'corpus.log'}"], f"file://{tmp_path / 'out'}"),
                       progress=False)
    assert manifest["lines"]["read"] == 30_000
    assert (tmp_path / "out" / "bags.parquet").exists()


def test_bgl_sample_prepares(ray_local, tmp_path):
    manifest = prepare(load_project(REPO_ROOT / "configs" / "bgl.yaml",
                                    [f"data.inputs=[{loghub_file('BGL')}]",
                                     f"data.output_dir={tmp_path / 'out'}"]).data, progress=False)
    assert manifest["lines"] == {**manifest["lines"], "read": 2000, "parsed": 2000, "quarantined": 0}
    bags = pq.read_table(tmp_path / "out" / "bags.parquet").to_pandas()
    assert int(np.concatenate(bags["instance_labels"].to_numpy()).clip(0).sum()) >= 143   # overlapping windows


@pytest.mark.parametrize("args, message", [
    (["data.inputs=[/nonexistent/x.log]"], "not found"),
    (["data.format=nosuchformat"], "nosuchformat"),
    (["data.window.sise=3"], "data.window.sise"),
])
def test_bad_invocations_fail_before_ray_starts(tmp_path, args, message, synthetic_corpus):
    base = [f"data.inputs=[{synthetic_corpus / 'corpus.log'}]", f"data.output_dir={tmp_path}"]
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "prepare.py"), *base, *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout


def test_empty_input_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.log"
    empty.write_text("")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "prepare.py"), f"data.inputs=[{empty}]",
                           f"data.output_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "empty" in proc.stderr.lower()


@pytest.mark.slow
def test_parallel_grouping_equals_sequential_drain_on_a_million_lines(ray_local, tmp_path):
    """The agreement bar at scale: ≥ 1M synthetic lines, several read tasks, ≥ 0.99 against plain drain3."""
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    generate(SyntheticConfig(n_lines=1_000_000, seed=1), tmp_path / "corpus")
    prepare(cfg_for([tmp_path / "corpus" / "corpus.log"], tmp_path / "out"), progress=False)
    events = pq.read_table(tmp_path / "out" / "events.parquet", columns=["line_no", "template_id", "content"])
    events = events.sort_by("line_no")
    assert events.num_rows == 1_000_000
    baseline = sequential_drain_baseline(events.column("content").to_pylist(),
                                         ParserConfig.from_format(load_format("bgl")))
    assert grouping_accuracy(events.column("template_id").to_numpy(), baseline) >= 0.99
