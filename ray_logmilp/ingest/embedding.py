"""Template text -> fixed-size float32 vector.

``HashingEmbedder`` (the default) needs no model files and no network: it tokenises a template,
hashes word uni-/bi-grams into ``dim`` signed buckets with a stable keyed hash (BLAKE2b, so the same
text gives the same vector in every process and on every machine), weights each n-gram by an IDF
fitted on the template set, and L2-normalises. Its whole state (config + IDF table) is a JSON-able
``spec()``; ``embedder_from_spec(spec)`` rebuilds an identical embedder, which is how the model
bundle and the serve path embed templates they have never seen.

``SentenceTransformerEmbedder`` wraps a sentence-transformers model from a LOCAL directory
(optional extra: ``pip install ray-logmilp[embed]``). It never downloads anything.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

#: Placeholder drain3 writes for a variable part of a template.
PARAM_STR = "<*>"
#: Token that stands for a ``<*>`` placeholder (cannot collide: real tokens are alphanumeric).
PARAM_TOKEN = "<*>"
#: Hashed in place of the features of a template that has no tokens at all.
EMPTY_TOKEN = "<empty>"
#: The spec ``kind`` of each embedder.
HASHING_KIND = "hashing"
SENTENCE_TRANSFORMER_KIND = "sentence_transformers"
#: Hashing buckets when none are given; EmbeddingConfig.dim (config.py) says why 512.
DEFAULT_HASHING_DIM = 512
_KIND_ALIASES = {"sentence_transformer": SENTENCE_TRANSFORMER_KIND, "sentence-transformers": SENTENCE_TRANSFORMER_KIND}

_TOKEN_RE = re.compile(r"<\*>|[A-Za-z0-9]+")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


@runtime_checkable
class Embedder(Protocol):
    """What the pipeline, the model bundle and the serve path need from an embedder."""

    dim: int

    def fit(self, texts: Sequence[str]) -> "Embedder":
        """Learn corpus statistics (if any) from the template texts; returns self."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]``."""
        ...

    def spec(self) -> dict[str, Any]:
        """JSON-able description from which ``embedder_from_spec`` rebuilds an identical embedder."""
        ...


# ----------------------------------------------------------------------------------------------
# Hashing embedder
# ----------------------------------------------------------------------------------------------
def tokenize(text: str, *, lowercase: bool = True, split_camel: bool = True) -> list[str]:
    """Template text -> tokens.

    Splits on every non-alphanumeric character; each ``<*>`` placeholder becomes the token ``<*>``
    (so "failed <*> times" and "failed times" differ); camelCase words are split into their parts
    ("NIOServerCnxn" -> "nio", "server", "cnxn") when ``split_camel``; then lower-cased.
    """
    out: list[str] = []
    for tok in _TOKEN_RE.findall(text):
        if tok == PARAM_STR:
            out.append(PARAM_TOKEN)
            continue
        parts = _CAMEL_RE.findall(tok) if split_camel else [tok]
        if not parts:
            parts = [tok]
        out.extend([p.lower() for p in parts] if lowercase else parts)
    return out


class HashingEmbedder:
    """Signed feature hashing of word n-grams with IDF weights, L2-normalised, float32.

    Deterministic: the bucket and sign of each n-gram come from BLAKE2b keyed with ``seed``
    (never Python's per-process salted ``hash``). An unfitted embedder weights all n-grams 1.
    A template with no tokens maps to a fixed unit vector (the hashed ``<empty>`` feature).
    """

    def __init__(self, dim: int = DEFAULT_HASHING_DIM, ngram: tuple[int, int] = (1, 2), seed: int = 0, *,
                 lowercase: bool = True, split_camel: bool = True, sublinear_tf: bool = True) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"embedding.dim must be an integer >= 2, got {dim!r}")
        ngram = tuple(int(n) for n in ngram)
        if len(ngram) != 2 or not 1 <= ngram[0] <= ngram[1]:
            raise ValueError(f"embedding.ngram must be (min_n, max_n) with 1 <= min_n <= max_n, got {ngram!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"embedding.seed must be an integer >= 0, got {seed!r}")
        self.dim = dim
        self.ngram: tuple[int, int] = (ngram[0], ngram[1])
        self.seed = seed
        self.lowercase = bool(lowercase)
        self.split_camel = bool(split_camel)
        self.sublinear_tf = bool(sublinear_tf)
        self._n_docs = 0
        self._df: dict[str, int] = {}
        self._key = hashlib.blake2b(f"ray-logmilp/hashing-embedder/{seed}".encode(), digest_size=32).digest()
        self._hash_cache: dict[str, tuple[int, float]] = {}

    # -- features -------------------------------------------------------------------------------
    def features(self, text: str) -> list[str]:
        """The n-gram features of one text (n-gram tokens joined by a space)."""
        toks = tokenize(text, lowercase=self.lowercase, split_camel=self.split_camel)
        lo, hi = self.ngram
        feats: list[str] = []
        for n in range(lo, hi + 1):
            feats.extend(" ".join(toks[i:i + n]) for i in range(len(toks) - n + 1))
        return feats

    def _bucket(self, feature: str) -> tuple[int, float]:
        hit = self._hash_cache.get(feature)
        if hit is None:
            h = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8, key=self._key).digest(),
                               "little")
            hit = (h % self.dim, 1.0 if (h >> 63) & 1 else -1.0)
            if len(self._hash_cache) < 1_000_000:
                self._hash_cache[feature] = hit
        return hit

    def idf(self, feature: str) -> float:
        """Smoothed IDF, ``ln((1 + N) / (1 + df)) + 1``; 1.0 before ``fit``."""
        if self._n_docs == 0:
            return 1.0
        return math.log((1 + self._n_docs) / (1 + self._df.get(feature, 0))) + 1.0

    # -- API ------------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str]) -> "HashingEmbedder":
        """Fit document frequencies on the template texts (each text one document); replaces any
        earlier fit."""
        df: Counter[str] = Counter()
        n = 0
        for t in texts:
            df.update(set(self.features(t)))
            n += 1
        self._n_docs = n
        self._df = dict(df)
        return self

    @property
    def fitted(self) -> bool:
        return self._n_docs > 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``float32 [len(texts), dim]``, each row of unit L2 norm."""
        texts = list(texts)
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for r, text in enumerate(texts):
            counts = Counter(self.features(text))
            if not counts:
                counts = Counter({EMPTY_TOKEN: 1})
            for feat, tf in counts.items():
                col, sign = self._bucket(feat)
                w = (1.0 + math.log(tf)) if self.sublinear_tf else float(tf)
                rows.append(r)
                cols.append(col)
                vals.append(sign * w * self.idf(feat))
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        if rows:
            np.add.at(out, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
                      np.asarray(vals, dtype=np.float64))
        norms = np.linalg.norm(out, axis=1)
        dead = norms < 1e-12  # every feature cancelled out in its buckets (or no features)
        if dead.any():
            col, sign = self._bucket(EMPTY_TOKEN)
            out[dead] = 0.0
            out[dead, col] = sign
            norms[dead] = 1.0
        out /= norms[:, None]
        return out.astype(np.float32)

    def spec(self) -> dict[str, Any]:
        """Config and fitted IDF state, JSON-able. Document frequencies are listed sorted by
        feature, so equal embedders give byte-identical JSON."""
        return {"kind": HASHING_KIND, "version": 1, "dim": self.dim, "ngram": list(self.ngram),
                "seed": self.seed, "lowercase": self.lowercase, "split_camel": self.split_camel,
                "sublinear_tf": self.sublinear_tf, "n_docs": self._n_docs,
                "df": [[f, c] for f, c in sorted(self._df.items())]}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "HashingEmbedder":
        if spec.get("kind") != HASHING_KIND:
            raise ValueError(f"embedder spec: kind is {spec.get('kind')!r}, expected {HASHING_KIND!r}")
        if spec.get("version", 1) != 1:
            raise ValueError(f"embedder spec: unsupported version {spec.get('version')!r}")
        known = {"kind", "version", "dim", "ngram", "seed", "lowercase", "split_camel", "sublinear_tf",
                 "n_docs", "df"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"embedder spec: unknown key(s) {unknown}")
        emb = cls(dim=spec.get("dim", 128), ngram=tuple(spec.get("ngram", (1, 2))), seed=spec.get("seed", 0),
                  lowercase=spec.get("lowercase", True), split_camel=spec.get("split_camel", True),
                  sublinear_tf=spec.get("sublinear_tf", True))
        n_docs = spec.get("n_docs", 0)
        if isinstance(n_docs, bool) or not isinstance(n_docs, int) or n_docs < 0:
            raise ValueError(f"embedder spec: n_docs must be an integer >= 0, got {n_docs!r}")
        df: dict[str, int] = {}
        for i, item in enumerate(spec.get("df", [])):
            if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                    or isinstance(item[1], bool) or not isinstance(item[1], int) or not 0 < item[1] <= n_docs):
                raise ValueError(f"embedder spec: df[{i}] must be [feature, count] with 0 < count <= n_docs, "
                                 f"got {item!r}")
            df[item[0]] = item[1]
        emb._n_docs, emb._df = n_docs, df
        return emb

    def __repr__(self) -> str:
        return (f"HashingEmbedder(dim={self.dim}, ngram={self.ngram}, seed={self.seed}, "
                f"fitted_on={self._n_docs} templates)")


# ----------------------------------------------------------------------------------------------
# Sentence-transformers (optional, local model only)
# ----------------------------------------------------------------------------------------------
class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a LOCAL directory; never downloads.

    Needs the optional extra: ``pip install ray-logmilp[embed]``. Placeholders ``<*>`` are kept in
    the text (models see them as punctuation). Output is float32, L2-normalised when ``normalize``.
    """

    def __init__(self, model_path: str | os.PathLike, *, device: str | None = None, batch_size: int = 64,
                 normalize: bool = True) -> None:
        path = Path(model_path).expanduser()
        if not path.is_dir():
            raise ValueError(f"SentenceTransformerEmbedder: model_path {str(model_path)!r} is not a local "
                             f"directory (models are never downloaded; copy the model files there first)")
        try:
            import sentence_transformers  # noqa: F401  (optional dependency, imported lazily)
        except ImportError as e:
            raise ImportError("SentenceTransformerEmbedder needs sentence-transformers: "
                              "pip install ray-logmilp[embed]") from e
        from sentence_transformers import SentenceTransformer

        self.model_path = str(path)
        self.device = device
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        try:
            self._model = SentenceTransformer(self.model_path, device=device, local_files_only=True)
        except TypeError:  # sentence-transformers older than local_files_only
            self._model = SentenceTransformer(self.model_path, device=device)
        self.dim = int(self._model.get_sentence_embedding_dimension())
        logger.info("loaded sentence-transformers model from %s (dim %d)", self.model_path, self.dim)

    def fit(self, texts: Sequence[str]) -> "SentenceTransformerEmbedder":
        return self

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=self.normalize, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def spec(self) -> dict[str, Any]:
        return {"kind": SENTENCE_TRANSFORMER_KIND, "version": 1, "model_path": self.model_path,
                "dim": self.dim, "normalize": self.normalize, "batch_size": self.batch_size}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> "SentenceTransformerEmbedder":
        emb = cls(spec["model_path"], batch_size=spec.get("batch_size", 64), normalize=spec.get("normalize", True))
        if "dim" in spec and spec["dim"] != emb.dim:
            raise ValueError(f"embedder spec: model at {emb.model_path} has dim {emb.dim}, spec says {spec['dim']}")
        return emb


# ----------------------------------------------------------------------------------------------
def _kind(kind: Any) -> Any:
    return _KIND_ALIASES.get(kind, kind)


def embedder_from_spec(spec: Mapping[str, Any]) -> Embedder:
    """Rebuild the embedder that produced ``spec`` (from ``Embedder.spec()``)."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"embedder spec must be a mapping, got {type(spec).__name__}")
    kind = _kind(spec.get("kind"))
    if kind == HASHING_KIND:
        return HashingEmbedder.from_spec(spec)
    if kind == SENTENCE_TRANSFORMER_KIND:
        return SentenceTransformerEmbedder.from_spec(spec)
    raise ValueError(f"embedder spec: unknown kind {spec.get('kind')!r} (expected {HASHING_KIND!r} or "
                     f"{SENTENCE_TRANSFORMER_KIND!r})")


def make_embedder(kind: str = HASHING_KIND, **kwargs: Any) -> Embedder:
    """Construct an (unfitted) embedder by kind name: ``hashing`` (kwargs of ``HashingEmbedder``) or
    ``sentence_transformers`` (``model_path=`` a local directory, ...)."""
    kind = _kind(kind)
    if kind == HASHING_KIND:
        return HashingEmbedder(**kwargs)
    if kind == SENTENCE_TRANSFORMER_KIND:
        return SentenceTransformerEmbedder(**kwargs)
    raise ValueError(f"embedding.kind: unknown {kind!r} (expected {HASHING_KIND!r} or "
                     f"{SENTENCE_TRANSFORMER_KIND!r})")


def embedder_from_config(cfg: Any, texts: Sequence[str] | None = None) -> Embedder:
    """Build the embedder an ``EmbeddingConfig`` (or a mapping with the same keys) describes and,
    when ``texts`` are given, fit it on them (the template set).

    Keys: ``kind`` (``hashing`` | ``sentence_transformers``), ``dim``, ``model_path``, and optionally
    ``ngram`` and ``seed`` for the hashing embedder.
    """
    get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d=None: getattr(cfg, k, d))
    kind = _kind(get("kind", HASHING_KIND))
    if kind == HASHING_KIND:
        kwargs: dict[str, Any] = {"dim": get("dim", DEFAULT_HASHING_DIM)}
        if get("ngram") is not None:
            kwargs["ngram"] = tuple(get("ngram"))
        if get("seed") is not None:
            kwargs["seed"] = get("seed")
        emb: Embedder = HashingEmbedder(**kwargs)
    elif kind == SENTENCE_TRANSFORMER_KIND:
        if not get("model_path"):
            raise ValueError("embedding.model_path is required for kind sentence_transformers")
        emb = SentenceTransformerEmbedder(get("model_path"))
    else:
        raise ValueError(f"embedding.kind: unknown {get('kind')!r} (expected {HASHING_KIND!r} or "
                         f"{SENTENCE_TRANSFORMER_KIND!r})")
    if texts is not None:
        emb.fit(list(texts))
    return emb
