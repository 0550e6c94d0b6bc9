"""A tiny in-memory prepared corpus for fit() unit tests (no Ray, no files)."""
from __future__ import annotations

import numpy as np

from ray_logmilp.ingest.prepared import BagSet, PreparedData

# A model small enough to train a few steps in well under a second on CPU.
TINY_MODEL = ["model.hidden_dim=16", "model.ff_dim=16", "model.num_prototypes=2"]


def tiny_prepared(n_bags: int = 24, w: int = 6, d: int = 8) -> PreparedData:
    """n_bags bags of w lines over 5 templates; template 4 occurs only in the positive (odd) bags."""
    rng = np.random.default_rng(0)
    labels = (np.arange(n_bags) % 2).astype(np.int8)
    ids = rng.integers(0, 4, size=(n_bags, w)).astype(np.int32)
    ids[labels == 1, 2] = 4
    bags = BagSet(np.arange(n_bags, dtype=np.int64), labels, np.arange(0, n_bags * w + 1, w, dtype=np.int64),
                  ids.reshape(-1), np.zeros(n_bags * w, np.int8))
    emb = rng.standard_normal((5, d)).astype(np.float32)
    return PreparedData(root="", embeddings=emb, splits={"train": bags, "val": bags}, manifest={})
