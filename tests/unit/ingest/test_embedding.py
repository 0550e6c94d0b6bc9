"""Template embeddings: determinism, geometry, spec round trip, optional sentence-transformers."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ray_logmilp.ingest.embedding import (
    Embedder,
    HashingEmbedder,
    SentenceTransformerEmbedder,
    embedder_from_config,
    embedder_from_spec,
    make_embedder,
    tokenize,
)
from tests.conftest import REPO_ROOT

TEMPLATES = [
    "instruction cache parity error corrected",
    "data cache parity error corrected",
    "generating <*>",
    "ciod: failed to read message prefix on control stream (CioStream socket to <*>",
    "NIOServerCnxn: Closed socket connection for client /<*> which had sessionid <*>",
    "Received block <*> of size <*> from <*>",
    "PacketResponder <*> for block <*> terminating",
    "Verification succeeded for <*>",
    "",
]


def fitted(**kw) -> HashingEmbedder:
    return HashingEmbedder(**kw).fit(TEMPLATES)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_tokenize_keeps_placeholder_marker_and_splits():
    assert tokenize("NIOServerCnxn: Closed socket <*> for /<*>:<*>") == [
        "nio", "server", "cnxn", "closed", "socket", "<*>", "for", "<*>", "<*>"]
    assert tokenize("a_b-c.d") == ["a", "b", "c", "d"]
    assert tokenize("") == [] and tokenize("::") == []
    assert tokenize("IOException", split_camel=False, lowercase=False) == ["IOException"]


def test_shapes_dtype_and_unit_norm():
    emb = fitted(dim=64)
    assert isinstance(emb, Embedder)
    out = emb.embed(TEMPLATES)
    assert out.shape == (len(TEMPLATES), 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert emb.embed([]).shape == (0, 64)
    assert HashingEmbedder().embed(["x"]).shape == (1, 512)  # unfitted works, idf = 1


def test_empty_template_gets_fixed_nonzero_vector():
    emb = fitted()
    a, b = emb.embed(["", "::: ,,"])
    assert np.linalg.norm(a) == pytest.approx(1.0) and np.array_equal(a, b)
    assert np.count_nonzero(a) == 1
    assert not np.array_equal(a, emb.embed(["<*>"])[0])  # a bare placeholder is not "empty"


def test_placeholder_changes_the_vector():
    emb = fitted()
    a, b = emb.embed(["failed <*> times", "failed times"])
    assert not np.allclose(a, b)


def test_similar_templates_are_closer_than_unrelated():
    emb = fitted()
    v = emb.embed(["instruction cache parity error corrected", "data cache parity error corrected",
                   "Received block <*> of size <*> from <*>", "PacketResponder <*> for block <*> terminating"])
    assert cos(v[0], v[1]) > 0.5
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.3
    assert cos(v[0], v[1]) > cos(v[0], v[3]) + 0.3
    assert cos(v[2], v[3]) > cos(v[0], v[2])  # the two block templates share "block <*>"


def test_idf_downweights_common_ngrams():
    emb = HashingEmbedder().fit(["common a", "common b", "common c", "rare d"])
    assert emb.idf("common") < emb.idf("rare") < emb.idf("never seen")
    assert HashingEmbedder().idf("anything") == 1.0


def test_seed_and_dim_change_the_hashing():
    a = fitted(seed=0).embed(TEMPLATES[:3])
    assert not np.allclose(a, fitted(seed=1).embed(TEMPLATES[:3]))
    assert fitted(dim=32).embed(TEMPLATES[:3]).shape == (3, 32)


def test_spec_round_trip_is_identical_and_json():
    emb = fitted(dim=96, ngram=(1, 3), seed=5)
    spec = json.loads(json.dumps(emb.spec()))
    again = embedder_from_spec(spec)
    assert isinstance(again, HashingEmbedder)
    assert again.spec() == emb.spec()
    unseen = ["a brand new template <*> never fitted", "data cache parity error corrected"]
    assert np.array_equal(again.embed(TEMPLATES + unseen), emb.embed(TEMPLATES + unseen))
    assert json.dumps(emb.spec()) == json.dumps(fitted(dim=96, ngram=(1, 3), seed=5).spec())


@pytest.mark.parametrize("bad, message", [
    ({"kind": "word2vec"}, "unknown kind"),
    ({"kind": "hashing", "dim": 1}, "dim"),
    ({"kind": "hashing", "ngram": [2, 1]}, "ngram"),
    ({"kind": "hashing", "bogus": 1}, "unknown key"),
    ({"kind": "hashing", "n_docs": 1, "df": [["a", 5]]}, "df[0]"),
])
def test_spec_validation(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        embedder_from_spec(bad)


def test_deterministic_across_fresh_process():
    emb = fitted(dim=128, seed=3)
    code = (
        "import json, sys, numpy as np\n"
        "from ray_logmilp.ingest.embedding import embedder_from_spec, HashingEmbedder\n"
        "spec = json.loads(sys.stdin.read())\n"
        "texts = spec.pop('_texts')\n"
        "a = embedder_from_spec(spec).embed(texts)\n"
        "b = HashingEmbedder(dim=128, seed=3).fit(texts).embed(texts)\n"
        "print(json.dumps([a.tobytes().hex(), b.tobytes().hex()]))\n"
    )
    payload = dict(emb.spec(), _texts=TEMPLATES)
    env = dict(os.environ, PYTHONHASHSEED="12345",
               PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], input=json.dumps(payload), env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    a_hex, b_hex = json.loads(res.stdout.strip().splitlines()[-1])
    expected = emb.embed(TEMPLATES).tobytes().hex()
    assert a_hex == expected and b_hex == expected


def test_make_embedder():
    assert isinstance(make_embedder("hashing", dim=16), HashingEmbedder)
    with pytest.raises(ValueError, match="embedding.kind"):
        make_embedder("nope")


def test_embedder_from_config_builds_and_fits():
    emb = embedder_from_config({"kind": "hashing", "dim": 32, "model_path": None}, TEMPLATES)
    assert isinstance(emb, HashingEmbedder) and emb.dim == 32 and emb.fitted
    assert np.array_equal(emb.embed(TEMPLATES), HashingEmbedder(dim=32).fit(TEMPLATES).embed(TEMPLATES))
    try:
        from ray_logmilp.config import EmbeddingConfig
    except ImportError:
        return
    emb = embedder_from_config(EmbeddingConfig(), TEMPLATES)
    assert emb.dim == EmbeddingConfig().dim and emb.spec()["n_docs"] == len(TEMPLATES)
    with pytest.raises(ValueError, match="model_path"):
        embedder_from_config({"kind": "sentence_transformers"})


def test_sentence_transformer_requires_local_dir(tmp_path):
    with pytest.raises(ValueError, match="not a local directory"):
        SentenceTransformerEmbedder("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="not a local directory"):
        SentenceTransformerEmbedder(tmp_path / "missing")


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is not None,
                    reason="sentence-transformers is installed")
def test_sentence_transformer_missing_dependency_message(tmp_path):
    with pytest.raises(ImportError, match=r"pip install ray-logmilp\[embed\]"):
        SentenceTransformerEmbedder(tmp_path)


def test_the_project_default_and_the_embedder_default_agree():
    from ray_logmilp.config import EmbeddingConfig
    from ray_logmilp.ingest.embedding import DEFAULT_HASHING_DIM, embedder_from_config

    assert EmbeddingConfig().dim == DEFAULT_HASHING_DIM == HashingEmbedder().dim
    assert embedder_from_config({"kind": "hashing"}).dim == DEFAULT_HASHING_DIM
