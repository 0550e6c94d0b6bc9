"""The Ray Serve app on a real local Ray, called over real HTTP (serve/app.py, serve/config.yaml).

One app per module (settings from serve/config.yaml, one replica, a free port), shared by every test.
"""
from __future__ import annotations

import csv
import importlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ray_logmilp.serving.args import builder_app, deployment_options, http_options, load_config

from ..conftest import REPO_ROOT, SMALL_MODEL

SERVE_CONFIG = REPO_ROOT / "serve" / "config.yaml"

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.integration

WINDOW = 64  # the training window size (configs/synthetic.yaml)
MAX_BODY = 1_000_000  # args.max_body_bytes of the app under test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# Windows cut from the synthetic corpus: one around a planted anomalous line, one with none.
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def serve_corpus(tmp_path_factory):
    """A synthetic corpus whose anomalies are all of kind 'rare', drawn from 4 anomaly templates.

    These tests check the serving path (same parser, embedder, model and threshold as training, the
    right lines reported back), so they need a model that reliably detects *something* after a few
    seconds of training. The harder anomaly kinds are the model-quality benchmark's business
    (jobs/evaluate.py on configs/synthetic.yaml), not this module's.
    """
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    out = tmp_path_factory.mktemp("serve") / "corpus"
    generate(SyntheticConfig(n_lines=30_000, seed=1, kind_weights=(1, 0, 0, 0), n_rare_templates=4), out)
    return out


@pytest.fixture(scope="module")
def serve_bundle(ray_local, serve_corpus, tmp_path_factory):
    """The serve corpus prepared by the real pipeline and a model trained on it in-process."""
    from ray_logmilp.config import load_project
    from ray_logmilp.ingest.pipeline import prepare
    from ray_logmilp.train import train_local

    root = tmp_path_factory.mktemp("serve_run")
    cfg = load_project(REPO_ROOT / "configs" / "synthetic.yaml", [
        f"data.inputs=[{serve_corpus / 'corpus.log'}]", f"data.output_dir={root / 'prepared'}",
        f"train.bundle_dir={root / 'model'}", "train.epochs=8", "train.steps_per_epoch=40", *SMALL_MODEL])
    prepare(cfg.data, progress=False)
    return train_local(cfg).bundle_dir


@pytest.fixture(scope="module")
def corpus_windows(serve_corpus):
    lines = (Path(serve_corpus) / "corpus.log").read_text().splitlines()
    episodes = list(csv.DictReader(open(Path(serve_corpus) / "episodes.csv")))
    busy = set()  # every line of every episode, its context included (1-based)
    for e in episodes:
        busy.update(range(int(e["start_line"]) - 12, int(e["end_line"]) + 1))
        busy.update(int(x) for x in (e["context_lines"] or "").split())
    test_start = int(0.8 * len(lines))  # the chronological test split: never trained on
    # Positive: the first 'rare' episode of the test split with one labelled line, alone in its window.
    for e in episodes:
        planted = int(e["labelled_lines"].split()[0])
        if e["kind"] != "rare" or len(e["labelled_lines"].split()) != 1 or planted < test_start:
            continue
        first = planted - WINDOW // 2                     # 1-based line number of the window's first line
        others = busy - set(range(int(e["start_line"]) - 12, int(e["end_line"]) + 1))
        if not others & set(range(first, first + WINDOW)):
            positive = (lines[first - 1:first - 1 + WINDOW], planted - first)
            break
    else:
        pytest.fail("no isolated single-line 'rare' episode in the test split of the synthetic corpus")
    # Normal: the first window of the test split that touches no episode.
    first = test_start
    while busy & set(range(first, first + WINDOW)):
        first += 8
    normal = lines[first - 1:first - 1 + WINDOW]
    return {"positive": positive[0], "planted": positive[1], "normal": normal, "lines": lines}


# --------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_url(ray_local, serve_bundle):
    from ray import serve

    from ray_logmilp.serving.deployment import app_from_config

    port = _free_port()
    serve.start(http_options=http_options(load_config(SERVE_CONFIG), host="127.0.0.1", port=port))
    app, prefix = app_from_config(SERVE_CONFIG, args={"bundle": str(serve_bundle), "max_body_bytes": MAX_BODY},
                                  deployment={"num_replicas": 1})
    serve.run(app, name="logmilp-test", route_prefix=prefix)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.delete("logmilp-test")
        serve.shutdown()


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def _detect(client, body):
    r = client.post("/v1/detect", json=body)
    assert r.status_code == 200, r.text
    return r.json()["windows"]


def test_health_model_and_openapi(client, serve_bundle):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    info = client.get("/v1/model").json()
    bundle = json.loads((Path(serve_bundle) / "bundle.json").read_text())
    assert info["threshold"] == pytest.approx(bundle["threshold"])
    assert info["version"] == bundle["model_version"][:12]
    assert info["templates"] > 0 and info["model"]["hidden_dim"] == bundle["model_config"]["hidden_dim"]
    assert info["batching"]["max_batch_size"] >= 1 and info["limits"]["max_lines_per_window"] >= WINDOW
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/detect", "/v1/model", "/healthz"} <= set(paths)


def test_positive_window_is_anomalous(client, corpus_windows):
    res = _detect(client, {"lines": corpus_windows["positive"], "top_k": 3})[0]
    assert res["anomalous"] is True, f"score {res['score']:.4f} below threshold {res['threshold']:.4f}"


def test_positive_window_has_the_planted_line_in_the_top_3(client, corpus_windows):
    res = _detect(client, {"lines": corpus_windows["positive"], "top_k": 3})[0]
    top = [t["index"] for t in res["top"]]
    assert corpus_windows["planted"] in top, f"planted line {corpus_windows['planted']} not in top-3 {top}"


def test_normal_window_is_not_anomalous(client, corpus_windows):
    res = _detect(client, {"lines": corpus_windows["normal"]})[0]
    assert res["anomalous"] is False, f"score {res['score']:.4f} >= threshold {res['threshold']:.4f}"


def test_response_shape(client, corpus_windows):
    window = corpus_windows["positive"]
    res = _detect(client, {"lines": window, "top_k": 4})[0]
    assert res["n_lines"] == res["n_scored"] == WINDOW and res["quarantined"] == [] and res["error"] is None
    assert len(res["top"]) == 4
    for t in res["top"]:
        assert t["line"] == window[t["index"]] and t["template"] and 0 <= t["weight"] <= 1
    cf = res["counterfactual"]
    assert cf["removed_index"] == res["top"][0]["index"]
    assert cf["drop"] == pytest.approx(res["score"] - cf["score_without_top"], abs=1e-6)


def test_batch_single_and_concurrent_requests_agree(client, corpus_windows):
    lines = corpus_windows["lines"]
    windows = [corpus_windows["positive"], corpus_windows["normal"]] + [lines[i:i + 100] for i in range(0, 1200, 100)]
    batch = _detect(client, {"windows": windows, "top_k": 3})
    with ThreadPoolExecutor(8) as pool:  # concurrent single-window requests: batched together server-side
        singles = list(pool.map(lambda w: _detect(client, {"lines": w, "top_k": 3})[0], windows))
    for b, s in zip(batch, singles):
        assert b["score"] == pytest.approx(s["score"], abs=1e-5)
        assert [t["index"] for t in b["top"]] == [t["index"] for t in s["top"]]
        assert b["counterfactual"]["removed_index"] == s["counterfactual"]["removed_index"]


def test_bad_lines_are_quarantined_and_reported(client, corpus_windows):
    good = corpus_windows["normal"][:3]
    body = ('{"windows": [[' + ", ".join(json.dumps(l) for l in good[:2]) + ', "\xff\xfebytes", "", '
            + json.dumps("x" * 20000) + ', "a\\ud800b", ' + json.dumps(good[2]) + '], ["", "junk"]]}')
    r = client.post("/v1/detect", content=body.encode("latin-1"), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    first, all_bad = r.json()["windows"]
    assert {q["index"]: q["reason"] for q in first["quarantined"]} == {
        2: "undecodable_bytes", 3: "empty_line", 4: "line_too_long", 5: "undecodable_bytes"}
    assert first["n_scored"] == 3 and sorted(t["index"] for t in first["top"]) == [0, 1, 6]
    assert all_bad["score"] is None and all_bad["error"] and len(all_bad["quarantined"]) == 2


BAD_REQUESTS = [
    # (name, raw body, status, text that must appear in the response: the field or the problem)
    ("not json", b"this is not json", 422, "json"),
    ("not an object", b"[1, 2]", 422, "body"),
    ("lines not a list", b'{"lines": "one line"}', 422, "lines"),
    ("line not a string", b'{"lines": ["ok", 3]}', 422, "lines"),
    ("windows not nested", b'{"windows": ["a", "b"]}', 422, "windows"),
    ("top_k a string", b'{"lines": ["a"], "top_k": "3"}', 422, "top_k"),
    ("top_k zero", b'{"lines": ["a"], "top_k": 0}', 422, "top_k"),
    ("top_k too large", b'{"lines": ["a"], "top_k": 100000}', 422, "top_k"),
    ("unknown field", b'{"lines": ["a"], "threshold": 0.1}', 422, "threshold"),
    ("neither lines nor windows", b'{"top_k": 3}', 422, "lines"),
    ("both lines and windows", b'{"lines": ["a"], "windows": [["a"]]}', 422, "windows"),
    ("empty window", b'{"lines": []}', 422, "lines"),
    ("empty window among many", b'{"windows": [["a"], []]}', 422, "windows"),
    ("no windows", b'{"windows": []}', 422, "windows"),
    ("empty body", b"", 422, "body"),
    ("too many lines", json.dumps({"lines": ["a"] * 5000}).encode(), 413, "lines"),
    ("too many lines in one of many", json.dumps({"windows": [["a"], ["a"] * 5000]}).encode(), 413, "windows[1]"),
    ("too many windows", json.dumps({"windows": [["a"]] * 300}).encode(), 413, "windows"),
    ("body too large", json.dumps({"lines": ["x" * 1000] * 1001}).encode(), 413, "body"),
    ("top_k NaN", b'{"lines": ["a"], "top_k": NaN}', 422, "top_k"),
    ("top_k Infinity", b'{"lines": ["a"], "top_k": Infinity}', 422, "top_k"),
    ("top_k -Infinity", b'{"lines": ["a"], "top_k": -Infinity}', 422, "top_k"),
    ("top_k 1e400", b'{"lines": ["a"], "top_k": 1e400}', 422, "top_k"),
    ("line NaN", b'{"lines": [NaN]}', 422, "lines"),
    ("line Infinity among windows", b'{"windows": [["a"], [Infinity]]}', 422, "windows"),
    ("unknown field NaN", b'{"lines": ["a"], "threshold": NaN}', 422, "threshold"),
]


@pytest.mark.parametrize("name,body,status,mention", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_its_status_code(client, name, body, status, mention):
    r = client.post("/v1/detect", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert mention in r.text


def test_shipped_config_is_valid():
    from ray_logmilp.serving.args import DEPLOYMENT_NAME, app_args, load_config

    config = load_config(REPO_ROOT / "serve" / "config.yaml")
    (app,) = config.applications
    assert app.import_path == "serve.app:build_app"
    module, attr = app.import_path.split(":")  # what `serve run` imports from the repo root
    assert callable(getattr(importlib.import_module(module), attr))
    app_args(app.args)
    (dep,) = app.deployments
    assert dep.name == DEPLOYMENT_NAME
    assert dep.max_ongoing_requests >= dep.user_config["max_batch_size"]  # else batches are silently capped
    assert dep.autoscaling_config["min_replicas"] <= dep.autoscaling_config["max_replicas"]


def test_max_ongoing_requests_below_batch_size_is_refused(serve_bundle):
    from ray_logmilp.serving.deployment import build

    with pytest.raises(ValueError, match="max_ongoing_requests"):
        build({"bundle": str(serve_bundle)}, max_ongoing_requests=5, user_config={"max_batch_size": 32})
    with pytest.raises(ValueError, match="bundle"):
        build({"bundle": "/nonexistent/model"})


def test_live_reconfigure_of_batching(client, serve_bundle, corpus_windows):
    """Last in this module: changes the running app's batching through user_config, without a restart."""
    from ray import serve

    from ray_logmilp.serving.deployment import app_from_config

    before = _detect(client, {"lines": corpus_windows["normal"]})[0]
    app, prefix = app_from_config(SERVE_CONFIG, args={"bundle": str(serve_bundle)}, deployment={
        "num_replicas": 1, "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.001}})
    serve.run(app, name="logmilp-test", route_prefix=prefix)
    assert client.get("/v1/model").json()["batching"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.001}
    after = _detect(client, {"windows": [corpus_windows["normal"]] * 6})
    assert all(w["score"] == pytest.approx(before["score"], abs=1e-5) for w in after)



def _status_or_closed(sock: socket.socket, deadline: float) -> "int | None":
    """The status code of the response on ``sock``, or None when the server closed it without one."""
    data = b""
    while b"\r\n" not in data:
        sock.settimeout(max(deadline - time.monotonic(), 0.1))
        chunk = sock.recv(4096)  # raises socket.timeout if neither a response nor a close arrives in time
        if not chunk:
            return None
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_stalled_request_bodies_do_not_block_the_service(client, base_url, corpus_windows):
    """More clients than the replica has request slots send headers, then a body that never completes.
    /healthz and /v1/detect still answer within the body-read deadline (plus a few seconds), and every
    stalled request is answered 408 or closed."""
    body_timeout = client.get("/v1/model").json()["limits"]["body_timeout_s"]
    slots = deployment_options(builder_app(load_config(SERVE_CONFIG)))["max_ongoing_requests"]
    host, port = base_url.removeprefix("http://").split(":")
    head = (f"POST /v1/detect HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n\r\n" '{"lines": [').encode()
    socks: list[socket.socket] = []
    try:
        for _ in range(slots + 12):
            s = socket.create_connection((host, int(port)), timeout=10)
            s.sendall(head)
            socks.append(s)
        start = time.monotonic()
        with httpx.Client(base_url=base_url, timeout=body_timeout + 20) as fresh:
            assert fresh.get("/healthz").status_code == 200
            waited = time.monotonic() - start
            r = fresh.post("/v1/detect", json={"lines": corpus_windows["normal"]})
            assert r.status_code == 200, r.text
        assert waited < body_timeout + 10, f"/healthz took {waited:.1f} s"
        deadline = time.monotonic() + body_timeout + 20
        statuses = [_status_or_closed(s, deadline) for s in socks]
        assert all(code is None or 400 <= code < 500 for code in statuses), statuses
    finally:
        for s in socks:
            s.close()


def test_a_line_with_a_nul_byte_is_quarantined(client, corpus_windows):

    good = corpus_windows["normal"][:3]
    window = [good[0], good[1][:10] + "\x00" + good[1][10:], good[2]]
    (res,) = _detect(client, {"lines": window})
    assert [(q["index"], q["reason"]) for q in res["quarantined"]] == [(1, "nul_byte")]
    assert res["n_scored"] == 2 and res["score"] is not None
