"""The one smoke-test setup every job's ``--smoke-test`` uses: a tiny synthetic corpus and a small model."""
from __future__ import annotations

import tempfile
from pathlib import Path

SMOKE_LINES = 20_000
#: A model small enough to train 2 epochs in about a minute on one CPU core.
SMOKE_OVERRIDES = ["train.epochs=2", "model.hidden_dim=32", "model.ff_dim=64",
                   "model.num_prototypes=4", "data.window.size=32", "data.window.stride=32"]


def smoke_overrides(prefix: str = "logmilp-smoke-") -> tuple[Path, list[str]]:
    """A fresh temp folder and the overrides that point every stage into it (the corpus is not written yet:
    see :func:`write_smoke_corpus`, so config errors still surface before any work)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    return root, SMOKE_OVERRIDES + [
        f"data.inputs=[{root / 'corpus' / 'corpus.log'}]", f"data.output_dir={root / 'prepared'}",
        "data.format=bgl", "data.labels.source=lines", "train.prepared_dir=null",
        f"train.bundle_dir={root / 'model'}", f"train.storage_path={root / 'ray_results'}"]


def write_smoke_corpus(root: Path) -> None:
    """The synthetic corpus (seed 0) under ``root/corpus``."""
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    generate(SyntheticConfig(n_lines=SMOKE_LINES, seed=0), root / "corpus")


def with_smoke_corpus(overrides: list[str]) -> list[str]:
    """Write the smoke corpus; the overrides that point every stage at it come first, the user's after."""
    root, smoke = smoke_overrides()
    write_smoke_corpus(root)
    return smoke + overrides
