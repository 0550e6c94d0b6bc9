"""Finding and reading raw logs: expansion, split ranges, gzip damage, over-long lines, accounting."""
from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest

from ray_logmilp.ingest import reading
from ray_logmilp.ingest.format_spec import load_format
from ray_logmilp.ingest.parse import parse_chunk
from ray_logmilp.ingest.reading import (
    LineChunk,
    LineNumbering,
    ReadTask,
    plan_read_tasks,
    read_file_events,
    read_task_chunks,
)
from ray_logmilp.ingest.schemas import QUARANTINE_REASONS
from ray_logmilp.ingest.sources import InputError, InputFile, expand_inputs, list_inputs
from tests.conftest import loghub_file


def _line(i: int) -> bytes:
    return b"2020-01-01 00:%02d:%02d.%03d event number %d" % ((i // 60) % 60, i % 60, i % 1000, i)


def _count_lines(data: bytes) -> int:
    """Lines as the reader defines them: newline-terminated, plus a final unterminated one."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _read_all(task: ReadTask, **kw) -> tuple[list[tuple[int, bytes]], list[dict]]:
    lines, quarantine = [], []
    for chunk in read_task_chunks(task, **kw):
        assert isinstance(chunk, LineChunk)
        lines.extend((chunk.first_line_no + i, line) for i, line in enumerate(chunk.lines))
        quarantine.extend(chunk.quarantine)
    return lines, quarantine


def _only(path) -> InputFile:
    (f,) = expand_inputs([str(path)])
    return f


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "logs" / "b").mkdir(parents=True)
    (tmp_path / "logs" / "a.log").write_bytes(_line(1) + b"\n")
    (tmp_path / "logs" / "b" / "c.log").write_bytes(_line(2) + b"\n")
    (tmp_path / "logs" / "b" / "d.txt").write_bytes(_line(3) + b"\n")
    (tmp_path / "logs" / "z.log.gz").write_bytes(gzip.compress(_line(4) + b"\n"))
    (tmp_path / "logs" / ".hidden").write_bytes(b"x\n")
    (tmp_path / "empty").mkdir()
    return tmp_path


# ---------------------------------------------------------------------------------------------- expansion
def test_expand_file_dir_glob_and_uri(tree):
    logs = tree / "logs"
    assert [f.name for f in expand_inputs([str(logs / "a.log")])] == [str(logs / "a.log")]
    names = [f.name for f in expand_inputs([str(logs)])]
    assert names == sorted(names) == [str(logs / "a.log"), str(logs / "b" / "c.log"), str(logs / "b" / "d.txt"),
                                      str(logs / "z.log.gz")]  # recursive, sorted, hidden file skipped
    assert [f.name for f in expand_inputs([str(logs / "*.log")])] == [str(logs / "a.log")]
    assert [f.name for f in expand_inputs([str(logs / "**" / "*.log")])] == [str(logs / "a.log"),
                                                                            str(logs / "b" / "c.log")]
    assert [f.name for f in expand_inputs([str(logs / "[ab]*")])] == [str(logs / "a.log"), str(logs / "b" / "c.log"),
                                                                     str(logs / "b" / "d.txt")]
    uri = [f for f in expand_inputs([f"file://{logs}/a.log"])]
    assert [(f.name, f.fs_uri) for f in uri] == [(str(logs / "a.log"), None)]
    assert [f.name for f in expand_inputs([f"file://{logs}/b/*.log"])] == [str(logs / "b" / "c.log")]
    gz = expand_inputs([str(logs / "z.log.gz")])[0]
    assert gz.compression == "gzip" and gz.size > 0


def test_literal_name_with_glob_characters(tmp_path):
    path = tmp_path / "run[1].log"
    path.write_bytes(_line(1) + b"\n")
    assert [f.name for f in expand_inputs([str(path)])] == [str(path)]


def test_expand_relative_glob_and_dedup(tree, monkeypatch):
    monkeypatch.chdir(tree / "logs")
    files = expand_inputs(["*.log", "a.log", str(tree / "logs" / "a.log")])
    assert [f.name for f in files] == [str(tree / "logs" / "a.log")]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.log", "not found"),
        ("empty", "contains no files"),
        ("logs/*.nothing", "no files match"),
        ("nodir/*.log", "no files match"),
    ],
)
def test_expand_errors(tree, spec, message):
    with pytest.raises(InputError, match=message):
        expand_inputs([str(tree / spec)])


def test_expand_no_paths_and_bad_uri(tree):
    with pytest.raises(InputError, match="no input paths"):
        expand_inputs([])
    with pytest.raises(InputError, match="not found"):
        expand_inputs([f"file://{tree}/nothing-here.log"])
    with pytest.raises(InputError, match="filesystem"):
        expand_inputs(["nosuchscheme://bucket/x.log"])


def test_directory_symlink_loop_reads_each_file_once_and_is_reported(tree, caplog):
    logs = tree / "logs"
    (logs / "b" / "up").symlink_to("..")             # logs/b/up -> logs: a loop
    (logs / "b" / "self").symlink_to("self")         # a link to itself inside the directory
    (logs / "b" / "gone").symlink_to("nowhere")      # a link to nothing
    expected = [str(logs / "a.log"), str(logs / "b" / "c.log"), str(logs / "b" / "d.txt"), str(logs / "z.log.gz")]
    with caplog.at_level("WARNING", logger="ray_logmilp.ingest.sources"):
        listing = list_inputs([str(logs)])
    assert [f.name for f in listing.files] == expected
    assert listing.symlink_loops == [str(logs / "b" / "up")]
    assert sorted(listing.broken_links) == [str(logs / "b" / "gone"), str(logs / "b" / "self")]
    assert "symlink loop" in caplog.text
    # the glob walks the same tree: still every file once
    assert [f.name for f in expand_inputs([str(logs / "**" / "*.log")])] == [expected[0], expected[1]]


def test_one_file_named_several_ways_is_listed_once(tree):
    logs = tree / "logs"
    (tree / "alias.log").symlink_to(logs / "a.log")
    (tree / "linked").symlink_to(logs)
    listing = list_inputs([str(logs / "a.log"), str(tree / "alias.log"), str(tree / "linked" / "b"),
                           f"file://{logs}/b/c.log", str(logs / "b" / ".." / "a.log"), str(logs)])
    names = [f.name for f in listing.files]
    assert names == [str(logs / "a.log"), str(tree / "linked" / "b" / "c.log"), str(tree / "linked" / "b" / "d.txt"),
                     str(logs / "z.log.gz")]
    assert listing.duplicates == 6 and listing.skipped()["duplicates"] == 6


def test_symlink_loop_and_dangling_link_given_as_input_say_what_they_are(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling").symlink_to("missing.log")
    with pytest.raises(InputError, match="input path is a symlink loop: .*loop"):
        expand_inputs([str(tmp_path / "loop")])
    with pytest.raises(InputError, match="symlink that points to a missing file: .*dangling.*missing.log"):
        expand_inputs([str(tmp_path / "dangling")])
    with pytest.raises(InputError, match="input path not found"):
        expand_inputs([str(tmp_path / "nothing.log")])


# ---------------------------------------------------------------------------------------------- tasks
def test_read_task_is_small_and_picklable(tree):
    task = plan_read_tasks(expand_inputs([str(tree / "logs")]))[0]
    assert ReadTask.from_dict(task.to_dict()) == task
    assert pickle.loads(pickle.dumps(task)) == task
    assert len(pickle.dumps(task)) < 512
    assert set(task.to_dict()) == {"name", "path", "start", "end", "first_line_no", "compression", "fs_uri"}


@pytest.mark.parametrize("final_newline", [True, False])
@pytest.mark.parametrize("target", [1, 97, 1000, 10**9])
def test_split_ranges_match_whole_file(tmp_path, final_newline, target):
    data = b"\n".join(_line(i) for i in range(1, 501)) + (b"\n" if final_newline else b"")
    data = data.replace(_line(250), b"x" * 3000)  # a line longer than several ranges
    path = tmp_path / "big.log"
    path.write_bytes(data)
    f = _only(path)
    whole, wq = _read_all(ReadTask.whole_file(f), chunk_lines=64)
    tasks = plan_read_tasks([f], target_bytes=target)
    if target < len(data) // 2:
        assert len(tasks) > 1
    # ranges tile the file and start on line boundaries
    assert tasks[0].start == 0 and tasks[-1].end in (None, len(data))
    for prev, nxt in zip(tasks, tasks[1:]):
        assert prev.end == nxt.start and data[nxt.start - 1 : nxt.start] == b"\n"
    assert tasks[0].first_line_no == 1 and all(t.first_line_no is None for t in tasks[1:])
    split, sq = [], []
    numbering = LineNumbering(tasks)
    for k, task in enumerate(tasks):
        got, q = _read_all(ReadTask.from_dict(task.to_dict()), chunk_lines=7)
        file_line_nos = numbering.apply(np.full(len(got), k), np.array([n for n, _ in got], np.int64))
        split.extend(zip(file_line_nos.tolist(), (line for _, line in got)))
        sq.extend(q)
    assert split == whole and sq == wq == []
    assert [n for n, _ in whole] == list(range(1, 501))
    assert whole[-1][1] == _line(500)


def test_numbering_across_batches_and_after_a_read_error(tmp_path):
    data = b"".join(_line(i) + b"\n" for i in range(1, 301))
    path = tmp_path / "big.log"
    path.write_bytes(data)
    tasks = plan_read_tasks([_only(path)], target_bytes=len(data) // 3)
    assert len(tasks) == 3
    truth = [len(_read_all(t)[0]) for t in tasks]                     # lines per range
    numbering = LineNumbering(tasks)
    # task 0 in two batches, then a batch holding the end of task 0 and all of task 1
    a = numbering.apply(np.zeros(5, int), np.arange(1, 6))
    b = numbering.apply(np.array([0] * (truth[0] - 5) + [1] * truth[1]),
                        np.concatenate([np.arange(6, truth[0] + 1), np.arange(1, truth[1] + 1)]))
    assert a.tolist() + b.tolist() == list(range(1, truth[0] + truth[1] + 1))
    # task 2's read failed after 0 lines: one read_error row; nothing comes after it, nothing to recount
    c = numbering.apply(np.array([2]), np.array([1]), pa.array(["read_error"]))
    assert c.tolist() == [truth[0] + truth[1] + 1]

    # a read error cuts range 0 short: range 1 starts after range 0's real line count (recounted)
    numbering = LineNumbering(tasks)
    numbering.apply(np.zeros(4, int), np.arange(1, 5), pa.array([None, None, None, "read_error"], pa.string()))
    assert numbering.apply(np.array([1]), np.array([1])).tolist() == [truth[0] + 1]
    # ... and when the range cannot be read again either, the lines after it cannot be numbered
    numbering = LineNumbering(tasks)
    numbering.apply(np.zeros(1, int), np.arange(1, 2), pa.array(["read_error"]))
    path.unlink()
    with pytest.raises(InputError, match="cannot be numbered"):
        numbering.apply(np.array([1]), np.array([1]))


def test_gzip_is_one_task(tmp_path):
    path = tmp_path / "a.log.gz"
    path.write_bytes(gzip.compress(b"".join(_line(i) + b"\n" for i in range(5000))))
    tasks = plan_read_tasks(expand_inputs([str(path)]), target_bytes=100)
    assert len(tasks) == 1 and tasks[0].compression == "gzip" and tasks[0].end is None


# ---------------------------------------------------------------------------------------------- reading
def test_chunks_respect_chunk_lines_and_number_lines(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"".join(_line(i) + b"\n" for i in range(1, 1001)))
    chunks = list(read_task_chunks(ReadTask.whole_file(_only(path)), chunk_lines=300))
    assert [len(c.lines) for c in chunks] == [300, 300, 300, 100]
    assert [c.first_line_no for c in chunks] == [1, 301, 601, 901]
    assert chunks[1].lines[0] == _line(301)


def test_empty_file_reads_zero_lines(tmp_path):
    (tmp_path / "e.log").write_bytes(b"")
    (tmp_path / "e.log.gz").write_bytes(gzip.compress(b""))
    for f in expand_inputs([str(tmp_path)]):
        assert list(read_task_chunks(ReadTask.whole_file(f))) == []


def test_multi_member_gzip(tmp_path):
    path = tmp_path / "m.log.gz"
    lines = [_line(i) for i in range(1, 3001)]
    path.write_bytes(gzip.compress(b"\n".join(lines[:1000]) + b"\n") + gzip.compress(b"\n".join(lines[1000:])))
    got, q = _read_all(ReadTask.whole_file(_only(path)))
    assert [line for _, line in got] == lines and q == []


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated_gzip_keeps_complete_lines_and_one_row(tmp_path, cut):
    lines = [_line(i) for i in range(1, 20001)]
    blob = gzip.compress(b"\n".join(lines) + b"\n")
    path = tmp_path / "t.log.gz"
    path.write_bytes(blob[: int(len(blob) * cut)])
    got, q = _read_all(ReadTask.whole_file(_only(path)))
    assert 0 < len(got) < len(lines)
    assert [line for _, line in got] == lines[: len(got)]
    assert len(q) == 1 and q[0]["reason"] == "truncated_gzip" and q[0]["line_no"] == len(got) + 1
    assert lines[len(got)].decode().startswith(q[0]["raw"]) or q[0]["raw"].startswith("compressed")


def test_corrupt_gzip_and_fake_gzip(tmp_path):
    lines = [_line(i) for i in range(1, 20001)]
    blob = bytearray(gzip.compress(b"\n".join(lines) + b"\n"))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = b"\x00" * 64
    (tmp_path / "c.log.gz").write_bytes(bytes(blob))
    (tmp_path / "fake.log.gz").write_bytes(b"plain text, not gzip\n")
    for name in ("c.log.gz", "fake.log.gz"):
        got, q = _read_all(ReadTask.whole_file(_only(tmp_path / name)))
        assert [line for _, line in got] == lines[: len(got)]
        assert [r["reason"] for r in q] == ["truncated_gzip"] and q[0]["line_no"] == len(got) + 1


def test_over_long_lines_are_dropped_early(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "_BLOCK_BYTES", 64 * 1024)  # make the long lines span many blocks
    huge = b"H" * 1_000_000
    data = b"\n".join([_line(1), huge, _line(3), b"J" * 70_000, _line(5), b"K" * 2_000_000]) + b"\n" + b"T" * 90_000
    path = tmp_path / "long.log"
    path.write_bytes(data)
    got, q = _read_all(ReadTask.whole_file(_only(path)), max_line_bytes=65536)
    assert got == [(1, _line(1)), (3, _line(3)), (5, _line(5))]
    assert [(r["line_no"], r["reason"]) for r in q] == [(2, "line_too_long"), (4, "line_too_long"),
                                                       (6, "line_too_long"), (7, "line_too_long")]
    assert [r["raw"][0] for r in q] == ["H", "J", "K", "T"] and all(len(r["raw"]) == 200 for r in q)


def test_read_error_is_quarantined_not_raised(tmp_path):
    path = tmp_path / "gone.log"
    path.write_bytes(_line(1) + b"\n")
    task = ReadTask.whole_file(_only(path))
    path.unlink()
    got, q = _read_all(task)
    assert got == [] and [(r["line_no"], r["reason"]) for r in q] == [(1, "read_error")]
    assert "gone.log" in q[0]["raw"] or "No such file" in q[0]["raw"]


# ---------------------------------------------------------------------------------------------- end to end
def test_planted_bad_input_accounting(tmp_path):
    """Bad UTF-8, garbage, a 1 MB line, blank lines, CRLF, a truncated gzip and a missing final newline:
    every line read is either parsed or quarantined, with the expected reasons."""
    good = [_line(i) for i in range(1, 11)]
    plain = b"".join([
        good[0] + b"\n",
        b"2020-01-01 00:00:01 bad utf8 \xff\xfe here\n",
        b"garbage\n",
        b"2020-01-01 00:00:02 " + b"z" * 1_000_000 + b"\n",
        b"\n",
        good[1] + b"\r\n",
        good[2] + b"\r\n",
        b"2020-99-99 00:00:00 impossible date\n",
        b"2020-01-01 00:00:03 binary \x00\x00 junk\n",
        good[3],  # no final newline
    ])
    (tmp_path / "plain.log").write_bytes(plain)
    blob = gzip.compress(b"".join(_line(i) + b"\n" for i in range(1, 20001)))
    (tmp_path / "cut.log.gz").write_bytes(blob[: len(blob) // 2])
    events, quarantine = read_file_events(str(tmp_path), "generic")

    files = {f.name: f for f in expand_inputs([str(tmp_path)])}
    for name, f in files.items():
        n_ev = sum(1 for x in events.column("file").to_pylist() if x == name)
        n_q = sum(1 for x in quarantine.column("file").to_pylist() if x == name)
        if f.compression is None:
            assert n_ev + n_q == _count_lines(plain) == 10
        else:
            n_read = sum(c.n_read for c in read_task_chunks(ReadTask.whole_file(f)))
            assert n_ev + n_q == n_read and n_q == 1
    reasons = {(os.path.basename(r["file"]), r["line_no"]): r["reason"] for r in quarantine.to_pylist()}
    plain_reasons = {k[1]: v for k, v in reasons.items() if k[0] == "plain.log"}
    assert plain_reasons == {2: "undecodable_bytes", 3: "header_mismatch", 4: "line_too_long", 5: "empty_line",
                             8: "bad_timestamp", 9: "nul_byte"}
    assert [v for k, v in reasons.items() if k[0] == "cut.log.gz"] == ["truncated_gzip"]
    assert set(quarantine.column("reason").to_pylist()) <= set(QUARANTINE_REASONS)
    plain_events = events.filter(pa.compute.equal(events["file"], str(tmp_path / "plain.log")))
    assert plain_events.column("line_no").to_pylist() == [1, 6, 7, 10]
    assert plain_events.column("content").to_pylist() == [b.decode().split(" ", 2)[2] for b in good[:4]]


def test_read_file_events_on_loghub_sample_matches_parse_chunk():
    path = loghub_file("BGL")
    fmt = load_format("bgl")
    events, quarantine = read_file_events(path, fmt, chunk_lines=300)
    data = path.read_bytes()
    lines = data.split(b"\n")[: _count_lines(data)]
    whole, _ = parse_chunk(fmt, lines, str(path), 1)
    assert whole.num_rows == 2000
    assert quarantine.num_rows == 0
    assert set(events.column("file").to_pylist()) == {os.path.abspath(path)}
    assert events.drop_columns(["file"]).equals(whole.drop_columns(["file"]))


def test_uri_input_end_to_end(tmp_path):
    path = tmp_path / "u.log"
    path.write_bytes(b"".join(_line(i) + b"\n" for i in range(1, 101)))
    events, quarantine = read_file_events(f"file://{path}", "generic")
    assert events.num_rows == 100 and quarantine.num_rows == 0
    assert set(events.column("file").to_pylist()) == {str(path)}
