"""Window rules and label sources, on hand-made event streams (no Ray)."""
import numpy as np
import pyarrow as pa
import pytest

from ray_logmilp.config import LabelConfig, SplitConfig, WindowConfig
from ray_logmilp.ingest.windows import (
    BagLabeler,
    WindowError,
    alarm_labels,
    assign_splits,
    iter_bags,
    load_alarms,
    load_session_labels,
)


def stream(ts, labels=None, sessions=None):
    n = len(ts)
    return {
        "timestamp": np.asarray(ts, dtype=np.float64),
        "template_id": np.arange(n, dtype=np.int32),
        "file": np.array(["a.log"] * n, dtype=object),
        "line_no": np.arange(1, n + 1, dtype=np.int64),
        "label": np.asarray(labels if labels is not None else [0] * n, dtype=np.int8),
        "session": np.array(sessions if sessions is not None else [None] * n, dtype=object),
    }


def batches(cols, size):
    n = len(cols["timestamp"])
    for i in range(0, n, size):
        yield {k: v[i:i + size] for k, v in cols.items()}


def bags(cols, cfg, batch=3):
    tables = list(iter_bags(batches(cols, batch), cfg))
    return pa.concat_tables(tables).to_pylist() if tables else []


@pytest.mark.parametrize("batch", [1, 2, 7, 100])
def test_count_windows_slide_and_cover_every_line(batch):
    cols = stream(np.arange(10))
    out = bags(cols, WindowConfig(kind="count", size=4, stride=2), batch)
    assert [b["line_nos"] for b in out] == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8], [7, 8, 9, 10], [9, 10]]
    covered = {n for b in out for n in b["line_nos"]}
    assert covered == set(range(1, 11))


@pytest.mark.parametrize("batch", [1, 4, 100])
def test_time_windows_are_half_open_and_skip_empty_spans(batch):
    ts = [0, 1, 4.9, 5, 9, 30, 31]   # a gap: windows over 10..29 contain nothing
    out = bags(stream(ts), WindowConfig(kind="time", size=5, stride=5), batch)
    assert [(b["start"], b["end"], b["line_nos"]) for b in out] == [
        (0.0, 5.0, [1, 2, 3]), (5.0, 10.0, [4, 5]), (30.0, 35.0, [6, 7])]


def test_overlapping_time_windows_share_lines():
    out = bags(stream([0, 3, 6]), WindowConfig(kind="time", size=4, stride=2), 1)
    # [0,4) [2,6) [4,8) [6,10)
    assert [b["line_nos"] for b in out] == [[1, 2], [2], [3], [3]]


def test_long_window_is_split_never_truncated():
    out = bags(stream(np.zeros(10)), WindowConfig(kind="time", size=60, max_instances=4), 3)
    assert [b["num_instances"] for b in out] == [4, 4, 2]
    assert [b["part"] for b in out] == [0, 1, 2]
    assert sum((b["line_nos"] for b in out), []) == list(range(1, 11))


def test_sessions_group_interleaved_lines_in_first_seen_order():
    sessions = ["blk_2", "blk_1", None, "blk_2", "blk_1", "blk_3"]
    cfg = WindowConfig(kind="session")
    from ray_logmilp.ingest.windows import SessionWindower
    w = SessionWindower(cfg)
    for b in batches(stream(np.arange(6), sessions=sessions), 2):
        w.push(b)
    out = w.finish().to_pylist()
    assert [(b["session"], b["line_nos"]) for b in out] == [("blk_2", [1, 4]), ("blk_1", [2, 5]), ("blk_3", [6])]
    assert w.lines_without_session == 1


def test_unsorted_stream_is_rejected():
    with pytest.raises(WindowError, match="timestamp order"):
        bags(stream([0, 5, 3]), WindowConfig(kind="count", size=2), 10)


def test_line_labels_give_bag_max_and_keep_instance_labels():
    cols = stream(np.arange(6), labels=[0, 0, 1, 0, 0, 0])
    table = pa.concat_tables(list(iter_bags(batches(cols, 2), WindowConfig(kind="count", size=3))))
    labelled = BagLabeler(LabelConfig(source="lines"))(table).to_pylist()
    assert [b["label"] for b in labelled] == [1, 0]
    assert labelled[0]["instance_labels"] == [0, 0, 1]


def test_line_labels_missing_is_a_clear_error():
    cols = stream(np.arange(3), labels=[-1, -1, -1])
    table = pa.concat_tables(list(iter_bags(batches(cols, 3), WindowConfig(kind="count", size=3))))
    with pytest.raises(WindowError, match="no label field"):
        BagLabeler(LabelConfig(source="lines"))(table)


def test_alarm_overlap(tmp_path):
    path = tmp_path / "alarms.csv"
    path.write_text("start,end\n100,110\n10,12\n2024-01-01T00:00:00,2024-01-01T00:00:05\n")
    alarms = load_alarms(path)
    assert alarms[0, 0] == 10    # sorted by start
    starts = np.array([0, 5, 12.5, 105, 111, 1704067200 - 1])
    ends = starts + 5
    # [0,5] no; [5,10] touches 10 -> yes; [12.5,17.5] no; [105,110] yes; [111,116] no; ISO alarm -> yes
    assert alarm_labels(starts, ends, alarms).tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("content, message", [
    ("begin,end\n1,2\n", "start,end"),
    ("start,end\n5,1\n", "ends"),
    ("start,end\nyesterday,2\n", "cannot read time"),
])
def test_bad_alarm_files(tmp_path, content, message):
    path = tmp_path / "alarms.csv"
    path.write_text(content)
    with pytest.raises(WindowError, match=message):
        load_alarms(path)


def test_session_labels(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("BlockId,Label\nblk_1,Normal\nblk_2,Anomaly\nblk_3,1\n")
    assert load_session_labels(path) == {"blk_1": 0, "blk_2": 1, "blk_3": 1}
    path.write_text("BlockId,Label\nblk_1,maybe\n")
    with pytest.raises(WindowError, match="maybe"):
        load_session_labels(path)


def test_session_label_source_marks_unknown_sessions(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("BlockId,Label\nblk_1,Anomaly\n")
    from ray_logmilp.ingest.windows import SessionWindower
    w = SessionWindower(WindowConfig(kind="session"))
    w.push(stream([0, 1], sessions=["blk_1", "blk_9"]))
    labeler = BagLabeler(LabelConfig(source="sessions", session_labels_path=str(path)))
    out = labeler(w.finish()).to_pylist()
    assert [b["label"] for b in out] == [1, -1] and labeler.sessions_without_label == 1


def test_splits_chronological_and_random():
    starts = np.array([5, 1, 3, 2, 4, 0, 9, 8, 7, 6], dtype=float)
    names = assign_splits(starts, SplitConfig(train=0.6, val=0.2, test=0.2))
    order = np.argsort(starts)
    assert list(names[order]) == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    r1 = assign_splits(starts, SplitConfig(mode="random", seed=1))
    r2 = assign_splits(starts, SplitConfig(mode="random", seed=1))
    assert list(r1) == list(r2) and sorted(r1).count("train") == 6
