"""The synthetic generator: layout, determinism, planted anomalies and hard cases, speed, memory,
corrupt mode and gzip. Fast, no Ray."""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import re
import time
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from ray_logmilp.synthetic import ANOMALY_KINDS, CORRUPT_KINDS, SyntheticConfig, build_templates, generate

BGL_LINE = re.compile(
    r"^(?P<label>\S+) (?P<ts>\d+) (?P<date>\d{4}\.\d{2}\.\d{2}) (?P<node>\S+) "
    r"(?P<time>\d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}\.\d{6}) (?P<node2>\S+) (?P<type>RAS) "
    r"(?P<component>[A-Z_]+) (?P<level>[A-Z]+) (?P<content>\S.*)$")


class Corpus:
    """A generated corpus read back: per-line fields, template ids, episodes, alarms, truth."""

    def __init__(self, out: Path, summary: dict):
        self.out = out
        self.summary = summary
        self.truth = json.loads((out / "truth.json").read_text())
        self.raw = (out / "corpus.log").read_bytes().split(b"\n")
        assert self.raw[-1] == b"", "corpus must end with a newline"
        self.raw = self.raw[:-1]
        self.episodes = list(csv.DictReader(open(out / "episodes.csv")))
        with open(out / "alarms.csv") as f:
            assert f.readline() == "start,end\n"
            self.alarms = np.array([[int(v) for v in ln.split(",")] for ln in f], dtype=np.int64).reshape(-1, 2)
        tid_path = out / "template_ids.i32"
        self.tids = np.fromfile(tid_path, dtype="<i4") if tid_path.exists() else None
        bad = {c["line_no"] for c in self.truth["corrupt_lines"]}
        self.valid_line_no = np.array([i for i in range(1, len(self.raw) + 1) if i not in bad])
        parsed = [BGL_LINE.match(self.raw[i - 1].decode("utf-8")) for i in self.valid_line_no]
        assert all(parsed), "a valid line does not match the BGL layout"
        self.fields = parsed
        self.labels = np.array([m["label"] for m in parsed], dtype=object)
        self.labelled = self.labels != "-"
        self.ts = np.array([int(m["ts"]) for m in parsed], dtype=np.int64)
        self.content = [m["content"] for m in parsed]
        templates = self.truth["templates"]
        self.role = np.array([t["role"] for t in templates], dtype=object)
        self.group = np.array([t["group"] for t in templates])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    out = tmp_path_factory.mktemp("syn")
    summary = generate(SyntheticConfig(n_lines=120_000, seed=0, write_template_ids=True), out)
    return Corpus(out, summary)


@pytest.fixture(scope="module")
def corrupt_corpus(tmp_path_factory) -> Corpus:
    out = tmp_path_factory.mktemp("syn_bad")
    summary = generate(SyntheticConfig(n_lines=30_000, seed=3, corrupt=True, corrupt_per_kind=3,
                                       write_template_ids=True), out)
    return Corpus(out, summary)


def _last_before(mask: np.ndarray) -> np.ndarray:
    n = mask.size
    idx = np.where(mask, np.arange(n), -(10 ** 9))
    last = np.maximum.accumulate(idx)
    return np.concatenate([[-(10 ** 9)], last[:-1]])


# ------------------------------------------------------------------------------------------- layout
def test_every_line_matches_bgl_layout(corpus: Corpus):
    assert len(corpus.raw) == corpus.truth["counts"]["lines_total"] == 120_000
    for m in corpus.fields[:: max(1, len(corpus.fields) // 5000)]:
        assert m["node"] == m["node2"]
        ts = int(m["ts"])
        d = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
        assert m["date"] == d.strftime("%Y.%m.%d")
        assert m["time"].startswith(d.strftime("%Y-%m-%d-%H.%M.%S."))
        assert m["label"] == "-" or re.fullmatch(r"[A-Z]+", m["label"])
    assert np.all(np.diff(corpus.ts) >= 0), "timestamps must be non-decreasing"
    assert corpus.ts[0] == SyntheticConfig().start_time


def test_rate_controls_time_span(tmp_path):
    s1 = generate(SyntheticConfig(n_lines=20_000, lines_per_second=1.0), tmp_path / "a")
    s2 = generate(SyntheticConfig(n_lines=20_000, lines_per_second=4.0), tmp_path / "b")
    t1 = json.loads((tmp_path / "a" / "truth.json").read_text())["time_range"]
    t2 = json.loads((tmp_path / "b" / "truth.json").read_text())["time_range"]
    span1, span2 = t1[1] - t1[0], t2[1] - t2[0]
    assert 15_000 < span1 < 22_000  # ~1 line/s for ordinary lines, bursts are faster
    assert 3.0 < span1 / span2 < 5.0
    assert s1["lines_valid"] == s2["lines_valid"] == 20_000


# -------------------------------------------------------------------------------------- determinism
def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_deterministic_per_seed(tmp_path):
    cfg = dict(n_lines=20_000, corrupt=True)
    generate(SyntheticConfig(seed=5, **cfg), tmp_path / "a")
    generate(SyntheticConfig(seed=5, **cfg), tmp_path / "b")
    generate(SyntheticConfig(seed=6, **cfg), tmp_path / "c")
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a["corpus.log"] != c["corpus.log"]
    assert a["alarms.csv"] != c["alarms.csv"]


def test_gzip_output_is_deterministic_and_equal_to_plain(tmp_path):
    generate(SyntheticConfig(n_lines=15_000, seed=2), tmp_path / "plain")
    generate(SyntheticConfig(n_lines=15_000, seed=2, gzip=True), tmp_path / "gz1")
    generate(SyntheticConfig(n_lines=15_000, seed=2, gzip=True), tmp_path / "gz2")
    z1 = (tmp_path / "gz1" / "corpus.log.gz").read_bytes()
    assert z1 == (tmp_path / "gz2" / "corpus.log.gz").read_bytes()
    assert gzip.decompress(z1) == (tmp_path / "plain" / "corpus.log").read_bytes()
    assert not (tmp_path / "gz1" / "corpus.log").exists()


# ---------------------------------------------------------------------------------- labels / truth
def test_label_counts_match_truth(corpus: Corpus):
    counts = corpus.truth["counts"]
    assert int(corpus.labelled.sum()) == counts["lines_anomalous"] == corpus.summary["lines_anomalous"]
    assert int((~corpus.labelled).sum()) == counts["lines_normal"]
    assert counts["lines_valid"] == counts["lines_normal"] + counts["lines_anomalous"]
    by_tag = Counter(corpus.labels[corpus.labelled].tolist())
    assert dict(by_tag) == corpus.truth["labelled_lines_by_tag"]
    assert len(by_tag) >= 5, "alert tags should vary"
    assert sum(corpus.truth["labelled_lines_by_kind"].values()) == counts["lines_anomalous"]
    assert sum(corpus.truth["episodes_by_kind"].values()) == counts["episodes"] == len(corpus.episodes)


def test_episodes_csv_points_at_the_labelled_lines(corpus: Corpus):
    line_to_idx = {int(n): i for i, n in enumerate(corpus.valid_line_no)}
    planted = []
    for ep in corpus.episodes:
        lab = [int(v) for v in ep["labelled_lines"].split()]
        ctx = [int(v) for v in ep["context_lines"].split()]
        assert 1 <= len(lab) <= 3
        assert all(corpus.labelled[line_to_idx[n]] for n in lab)
        assert not any(corpus.labelled[line_to_idx[n]] for n in ctx)
        assert int(ep["start_line"]) <= min(lab + ctx) and max(lab + ctx) <= int(ep["end_line"])
        assert int(ep["end_line"]) - int(ep["start_line"]) <= 20
        planted += lab
    assert sorted(planted) == corpus.valid_line_no[corpus.labelled].tolist()


def test_every_kind_is_planted(corpus: Corpus):
    by_kind = corpus.truth["episodes_by_kind"]
    assert set(by_kind) == set(ANOMALY_KINDS)
    assert all(v >= 50 for v in by_kind.values()), by_kind
    assert all(v > 0 for v in corpus.truth["order_variants"].values())
    kinds = Counter(ep["kind"] for ep in corpus.episodes)
    assert dict(kinds) == by_kind
    nlab = Counter(len(ep["labelled_lines"].split()) for ep in corpus.episodes)
    assert set(nlab) == {1, 2, 3}


def test_positive_window_fraction_with_defaults(corpus: Corpus):
    win = corpus.truth["windows"]
    assert 0.20 <= win["fixed_positive_fraction"] <= 0.35
    assert 0.20 <= win["time_positive_fraction"] <= 0.35
    idx = np.flatnonzero(corpus.labelled)
    n_windows = -(-corpus.labelled.size // 64)
    assert np.unique(idx // 64).size / n_windows == pytest.approx(win["fixed_positive_fraction"])


# --------------------------------------------------------------------------- anomaly definitions hold
def test_anomaly_definitions_hold_line_by_line(corpus: Corpus):
    """The rules of docs/synthetic.md, checked on every line through the true template ids."""
    cfg = SyntheticConfig()
    tids, lab, role, group = corpus.tids, corpus.labelled, corpus.role, corpus.group
    assert tids.size == lab.size
    r = role[tids]
    ar = np.arange(tids.size)
    # labelled lines are exactly the anomaly-capable roles; rare templates never occur unlabelled
    assert set(r[lab].tolist()) == {"rare", "context_anomaly", "cooccur_y", "close"}
    assert not np.any((r == "rare") & ~lab)
    ctx_lines = {int(v) for ep in corpus.episodes for v in ep["context_lines"].split()}
    is_ctx = np.isin(corpus.valid_line_no, sorted(ctx_lines))
    for g in range(int(group.max()) + 1):
        for a_role, b_role in (("trigger", "context_anomaly"), ("cooccur_x", "cooccur_y")):
            a = np.flatnonzero((role == a_role) & (group == g))
            b = np.flatnonzero((role == b_role) & (group == g))
            if not a.size:
                continue
            is_a, is_b = tids == a[0], tids == b[0]
            dist_a = ar - _last_before(is_a)
            # the labelled B has its A at most context_lines before; a benign B has none within clean_lines
            assert np.all(dist_a[is_b & lab] <= cfg.context_lines)
            assert not np.any(is_b & ~lab & (dist_a <= cfg.clean_lines))
            assert np.any(is_b & ~lab), f"no benign occurrence of {b_role} {g}"
            if a_role == "cooccur_x":  # X after Y within clean_lines never happens in benign traffic
                assert not np.any(is_a & ~is_ctx & (ar - _last_before(is_b) <= cfg.clean_lines))
        o = np.flatnonzero((role == "open") & (group == g))
        c = np.flatnonzero((role == "close") & (group == g))
        if o.size:
            is_c = tids == c[0]
            dist_o = ar - _last_before(tids == o[0])
            assert np.all(dist_o[is_c & ~lab] <= cfg.order_max_gap), "benign close without its open"
            assert np.all(dist_o[is_c & lab] > cfg.clean_lines), "labelled close with an open before it"
            assert (is_c & ~lab).sum() > 5 * (is_c & lab).sum(), "close templates must be common"


def test_hard_cases_present(corpus: Corpus):
    hc = corpus.truth["hard_cases"]
    for key in ("benign_context_anomaly_lines", "benign_trigger_lines", "benign_cooccur_x_lines",
                "benign_cooccur_y_lines", "benign_close_lines"):
        assert hc[key] > 0, key
    # benign occurrences of anomaly templates really carry '-' in the corpus
    r = corpus.role[corpus.tids]
    for role in ("context_anomaly", "cooccur_y", "close"):
        assert np.any((r == role) & ~corpus.labelled) and np.any((r == role) & corpus.labelled)
    # benign contextual anomaly templates are a sizeable share of all their occurrences
    ctx = r == "context_anomaly"
    assert 0.25 < (ctx & ~corpus.labelled).sum() / ctx.sum() < 0.9
    # distractor bursts (runs of >= 10 identical templates) in windows with and without anomalies
    t = corpus.tids
    change = np.flatnonzero(np.diff(t) != 0) + 1
    starts = np.concatenate([[0], change])
    lens = np.diff(np.concatenate([starts, [t.size]]))
    runs = starts[lens >= 10]
    pos_windows = set((np.flatnonzero(corpus.labelled) // 64).tolist())
    in_pos = sum(1 for s in runs if s // 64 in pos_windows)
    assert in_pos >= 10 and len(runs) - in_pos >= 10, (in_pos, len(runs))
    assert hc["bursts"]["in_positive_window"] > 0 and hc["bursts"]["in_negative_window"] > 0
    # bursts are fast: a 10-line run spans far less time than 10 ordinary lines
    spans = [corpus.ts[s + 9] - corpus.ts[s] for s in runs[:200]]
    assert np.median(spans) < 3


def test_alarms_cover_every_anomalous_line(corpus: Corpus):
    al = corpus.alarms
    assert al.shape[0] == corpus.truth["counts"]["alarms"] == len(corpus.episodes)
    assert np.all(al[:, 0] < al[:, 1])
    assert np.all(np.diff(al[:, 0]) >= 0), "alarms are in time order"
    assert np.all(al[:, 1] - al[:, 0] <= 120), "alarms are short spans around an episode"
    lab_ts = corpus.ts[corpus.labelled]
    i = np.searchsorted(al[:, 0], lab_ts, side="right") - 1
    # an anomalous line lies inside the latest alarm started at or before it, or in an earlier one
    covered = np.array([any(al[k, 0] <= t <= al[k, 1] for k in range(max(j - 3, 0), j + 1))
                        for t, j in zip(lab_ts.tolist(), i.tolist())])
    assert covered.all()
    # each alarm covers its own episode's lines
    for ep, (a0, a1) in zip(corpus.episodes, al.tolist()):
        assert a0 <= int(ep["start_time"]) and int(ep["end_time"]) <= a1


# ------------------------------------------------------------------------------------------ templates
def test_many_distinct_templates(corpus: Corpus):
    masked = {re.sub(r"0x[0-9a-f]+|\d+", "<N>", c) for c in corpus.content}
    assert len(masked) >= 200
    normal = [t for t in corpus.truth["templates"] if t["role"] == "normal"]
    assert len(normal) == 300
    assert len({len(t["text"].split()) for t in normal}) >= 8, "token counts should vary"
    texts = [t["text"] for t in corpus.truth["templates"]]
    assert len(set(texts)) == len(texts)
    # different fixed words, not only different parameters
    fixed = {" ".join(w for w in t.split() if "<*>" not in w) for t in texts}
    assert len(fixed) == len(texts)


def test_zipf_frequencies(corpus: Corpus):
    normal_ids = [t["id"] for t in corpus.truth["templates"] if t["role"] == "normal"]
    counts = np.bincount(corpus.tids, minlength=len(corpus.truth["templates"]))[normal_ids]
    assert counts[0] > counts[9] > counts[99] > 0
    assert counts[0] / counts.sum() > 0.08


def test_drain3_recovers_templates(corpus: Corpus):
    drain = pytest.importorskip("drain3.drain")
    n = 30_000
    d = drain.Drain(sim_th=0.5, depth=4)
    pred = np.array([d.add_log_message(c)[0].cluster_id for c in corpus.content[:n]])
    truth = corpus.tids[:n]
    true_size = Counter(truth.tolist())
    members = defaultdict(list)
    for i, p in enumerate(pred.tolist()):
        members[p].append(i)
    correct = 0
    for idx in members.values():
        ts = set(truth[idx].tolist())
        if len(ts) == 1 and true_size[next(iter(ts))] == len(idx):
            correct += len(idx)
    assert correct / n >= 0.98


def test_build_templates_is_deterministic():
    a = [t.to_dict() for t in build_templates(SyntheticConfig(seed=4))]
    b = [t.to_dict() for t in build_templates(SyntheticConfig(seed=4))]
    c = [t.to_dict() for t in build_templates(SyntheticConfig(seed=5))]
    assert a == b and a != c
    assert [t["id"] for t in a] == list(range(len(a)))


# ---------------------------------------------------------------------------------------- corrupt mode
def test_corrupt_mode_plants_what_truth_lists(corrupt_corpus: Corpus):
    bad = corrupt_corpus.truth["corrupt_lines"]
    assert Counter(b["kind"] for b in bad) == {k: 3 for k in CORRUPT_KINDS}
    assert corrupt_corpus.truth["counts"]["lines_total"] == 30_000 + len(bad) == len(corrupt_corpus.raw)
    for b in bad:
        raw = corrupt_corpus.raw[b["line_no"] - 1]
        if b["kind"] == "undecodable_bytes":
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        elif b["kind"] == "empty_line":
            assert raw == b""
        else:
            text = raw.decode("utf-8")
            assert not BGL_LINE.match(text)
            if b["kind"] == "header_mismatch":
                assert len(text.split()) < 10
            else:  # bad_timestamp: right field count, non-numeric timestamp
                assert len(text.split(" ", 9)) == 10 and not text.split()[1].isdigit()
    # every other line is valid (checked by the fixture) and episodes still point at labelled lines
    line_to_idx = {int(n): i for i, n in enumerate(corrupt_corpus.valid_line_no)}
    for ep in corrupt_corpus.episodes:
        for n in ep["labelled_lines"].split():
            assert corrupt_corpus.labelled[line_to_idx[int(n)]]
    assert corrupt_corpus.tids.size == 30_000


def test_corrupt_off_by_default(corpus: Corpus):
    assert corpus.truth["corrupt_lines"] == []
    assert corpus.truth["counts"]["lines_corrupt"] == 0


# ------------------------------------------------------------------------------------- speed / memory
def test_speed_200k_lines(tmp_path):
    t0 = time.perf_counter()
    generate(SyntheticConfig(n_lines=200_000, seed=1), tmp_path)
    assert time.perf_counter() - t0 < 20.0


def test_memory_does_not_grow_with_line_count(tmp_path):
    # small blocks keep the test quick under tracemalloc; the peak is set by the block, not the corpus
    peaks = []
    for n in (50_000, 100_000):
        tracemalloc.start()
        try:
            generate(SyntheticConfig(n_lines=n, seed=1, block_lines=8192), tmp_path / str(n))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks
