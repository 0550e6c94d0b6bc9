"""WindowScorer: raw windows -> detection + localization, without Ray.

A tiny bundle is built by hand (``tests/unit/tiny_bundle.py``: no training), so these
tests check the plumbing (parsing, quarantine, unseen templates, index mapping, batching) in seconds;
detection quality is the integration tests' business.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ray_logmilp.ingest.parse import parse_chunk
from ray_logmilp.serving.scorer import WindowScorer
from ray_logmilp.model.localize import localize
from ray_logmilp.ingest.parsing import ParserConfig, mask_array

from .. import tiny_bundle as tiny_bundle_helpers

THRESHOLD = 0.5


@pytest.fixture(scope="module")
def corpus_lines(tmp_path_factory) -> list[str]:
    return tiny_bundle_helpers.corpus_lines(tmp_path_factory.mktemp("syn"))


@pytest.fixture(scope="module")
def tiny_bundle(corpus_lines, tmp_path_factory) -> str:
    """A bundle over the first 2000 corpus lines: real parser and embedder, random model weights."""
    return tiny_bundle_helpers.write_tiny_bundle(tmp_path_factory.mktemp("tiny"), corpus_lines[:2000], THRESHOLD)


@pytest.fixture(scope="module")
def scorer(tiny_bundle) -> WindowScorer:
    return WindowScorer.from_path(tiny_bundle, max_line_bytes=400)


def test_scores_match_the_model_on_training_embeddings(scorer, corpus_lines):
    window = corpus_lines[100:140]
    res = scorer.score_windows([window], top_k=3)[0]
    assert res.error is None and res.n_lines == res.n_scored == 40 and res.quarantined == []
    # The same window the way training sees it: template ids -> bundle embeddings -> localize.
    b = scorer.bundle
    events, _ = parse_chunk(b.format, [l.encode() for l in window], file="x", first_line_no=0)
    ids = b.parser.match_many(mask_array(ParserConfig.from_format(b.format), events.column("content")))
    assert (ids >= 0).all()
    x = torch.from_numpy(b.embeddings[ids])[None]
    loc = localize(b.model, x, torch.ones(1, len(ids), dtype=torch.bool), top_k=3)[0]
    assert res.score == pytest.approx(loc.p_orig, abs=1e-6)
    assert [t.index for t in res.top] == loc.indices
    assert res.anomalous == (res.score >= THRESHOLD) and res.threshold == THRESHOLD
    assert res.counterfactual.removed_index == res.top[0].index
    assert res.counterfactual.score_without_top == pytest.approx(loc.p_pert, abs=1e-6)
    assert res.counterfactual.drop == pytest.approx(res.score - res.counterfactual.score_without_top, abs=1e-6)
    for t in res.top:
        assert t.line == window[t.index]
        assert t.template == b.template_texts[t.template_id]
    assert sum(1 for _ in res.top) == 3 and res.top[0].weight >= res.top[1].weight >= res.top[2].weight


def test_quarantined_lines_are_reported_and_indices_map_back(scorer, corpus_lines):
    good = corpus_lines[200:210]
    window = [good[0], b"\xff\xfe not utf-8", good[1], "x" * 500, "", "no header here", good[2], "a\ud800b", good[3]]
    res = scorer.score_windows([window], top_k=10)[0]
    reasons = {q.index: q.reason for q in res.quarantined}
    assert reasons == {1: "undecodable_bytes", 3: "line_too_long", 4: "empty_line", 5: "header_mismatch",
                       7: "undecodable_bytes"}
    assert res.n_lines == 9 and res.n_scored == 4
    assert sorted(t.index for t in res.top) == [0, 2, 6, 8]        # only parsed lines, request indices
    for t in res.top:
        assert t.line == window[t.index]
    assert len(res.quarantined[1].raw) <= 200


@pytest.mark.parametrize("undecodable", [False, True], ids=["text lines", "with undecodable bytes"])
def test_lines_with_a_nul_byte_are_quarantined_as_nul_byte(scorer, corpus_lines, undecodable):
    from ray_logmilp.ingest.schemas import raw_text

    good = corpus_lines[300:303]
    nul = good[1][:20] + "\x00" + good[1][20:]  # otherwise a line that parses
    window = [good[0], nul, good[2], "\x00"] + ([b"\xff not utf-8"] if undecodable else [])
    res = scorer.score_windows([window], top_k=3)[0]
    reasons = {q.index: q.reason for q in res.quarantined}
    assert reasons == {1: "nul_byte", 3: "nul_byte", **({4: "undecodable_bytes"} if undecodable else {})}
    assert res.quarantined[0].raw == raw_text(nul) and res.n_scored == 2
    assert sorted(t.index for t in res.top) == [0, 2]


def test_window_with_every_line_quarantined_gets_an_error_not_a_crash(scorer, corpus_lines):
    res = scorer.score_windows([["", "garbage"], corpus_lines[5:8]], top_k=2)
    assert res[0].score is None and res[0].anomalous is None and "quarantined" in res[0].error
    assert [q.reason for q in res[0].quarantined] == ["empty_line", "header_mismatch"]
    assert res[1].error is None and res[1].score is not None
    json.dumps([r.model_dump() for r in res])


def test_unseen_template_embedded_from_masked_text_without_mutating_the_parser(scorer, corpus_lines):
    parser_state = json.dumps(scorer.bundle.parser.to_dict())
    head = corpus_lines[300].split(" ")[:9]
    novel = " ".join(head + ["zebra", "quokka", "wombat", "exploded", "at", "0x1f", "after", "42", "tries"])
    window = corpus_lines[300:305] + [novel]
    res = scorer.score_windows([window], top_k=6)[0]
    assert res.unseen_templates == 1
    top = {t.index: t for t in res.top}
    assert top[5].template_id == -1 and top[5].template == "zebra quokka wombat exploded at <*> after <*> tries"
    assert json.dumps(scorer.bundle.parser.to_dict()) == parser_state
    assert len(scorer.bundle.parser) == len(scorer.bundle.template_texts)
    # The model saw exactly the embedder's vector of the masked text.
    vec = scorer._embed_unseen([top[5].template])[0]
    np.testing.assert_allclose(vec, scorer.bundle.embedder.embed([top[5].template])[0], atol=1e-7)
    again = scorer.score_windows([window], top_k=6)[0]                   # served from the cache
    assert again.score == pytest.approx(res.score, abs=1e-7)


def test_batched_and_single_windows_agree(scorer, corpus_lines):
    windows = [corpus_lines[i:i + n] for i, n in ((0, 64), (500, 17), (900, 100), (1500, 1))]
    batched = scorer.score_windows(windows, top_k=[3, 5, 1, 4])
    for w, k, b in zip(windows, [3, 5, 1, 4], batched):
        s = scorer.score_windows([w], top_k=k)[0]
        assert b.score == pytest.approx(s.score, abs=1e-5)
        assert [t.index for t in b.top] == [t.index for t in s.top]
        assert len(b.top) == min(k, len(w))
    small = WindowScorer(scorer.bundle, max_windows_per_forward=2).score_windows(windows, top_k=3)
    assert [r.score for r in small] == pytest.approx([r.score for r in batched], abs=1e-5)


def test_bad_calls_raise_value_errors(scorer, corpus_lines):
    with pytest.raises(ValueError, match="empty"):
        scorer.score_windows([corpus_lines[:3], []])
    with pytest.raises(ValueError, match="top_k"):
        scorer.score_windows([corpus_lines[:3]], top_k=0)
    with pytest.raises(ValueError, match="max_len"):
        scorer.score_windows([["x"] * (scorer.max_window_lines + 1)])
    assert scorer.score_windows([]) == []


def test_health_probe_and_info(scorer):
    assert 0.0 <= scorer.check() <= 1.0
    info = scorer.info()
    assert info["templates"] == len(scorer.bundle.template_texts) > 0
    assert info["threshold"] == THRESHOLD and info["format"] == "bgl" and info["max_line_bytes"] == 400
    assert info["version"] == scorer.bundle.version
    assert info["model"]["input_dim"] == 32 and info["embedder"]["dim"] == 32
    json.dumps(info)


def test_results_serialise_to_the_http_response_shape(scorer, corpus_lines):
    # The JSON body of POST /v1/detect is the results' model_dump: keys and order are the API.
    ok, bad = scorer.score_windows([corpus_lines[10:14], ["", corpus_lines[20]]], top_k=1)
    window_keys = ["score", "anomalous", "threshold", "n_lines", "n_scored", "unseen_templates", "top",
                   "counterfactual", "quarantined", "error"]
    for res in (ok.model_dump(), bad.model_dump()):
        assert list(res) == window_keys
    assert list(ok.model_dump()["top"][0]) == ["index", "line", "template_id", "template", "weight"]
    assert list(ok.model_dump()["counterfactual"]) == ["removed_index", "score_without_top", "drop"]
    assert bad.model_dump()["quarantined"] == [{"index": 0, "reason": "empty_line", "raw": ""}]
    assert json.loads(json.dumps([ok.model_dump(), bad.model_dump()]))[1]["error"] is None
