"""A tiny bundle built by hand (parse + drain fit + hashing embedder + an untrained LogMILP), for tests of
the bundle and of serving that need a real bundle folder in seconds, without training."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ray_logmilp.bundle import write_bundle
from ray_logmilp.config import load_project
from ray_logmilp.ingest.embedding import HashingEmbedder
from ray_logmilp.ingest.format_spec import load_format
from ray_logmilp.ingest.mining import TemplateParser
from ray_logmilp.ingest.parse import parse_chunk
from ray_logmilp.ingest.parsing import ParserConfig, mask_array
from ray_logmilp.model.logmilp import LogMILP, ModelConfig
from ray_logmilp.synthetic.generator import SyntheticConfig, generate

REPO_ROOT = Path(__file__).resolve().parents[2]


def corpus_lines(out: Path, n_lines: int = 3000) -> list[str]:
    """A synthetic BGL corpus (seed 3) written under ``out``, as lines."""
    generate(SyntheticConfig(n_lines=n_lines, seed=3), out)
    return (out / "corpus.log").read_text().splitlines()


def write_tiny_bundle(root: Path, lines: list[str], threshold: float, key: bytes | None = None) -> str:
    """A bundle at ``root/model`` over ``lines``: real parser and embedder, random model weights (seed 0)."""
    fmt = load_format("bgl")
    events, _ = parse_chunk(fmt, [l.encode() for l in lines], file="c", first_line_no=1)
    pcfg = ParserConfig.from_format(fmt)
    parser = TemplateParser(pcfg)
    parser.fit_lines(mask_array(pcfg, events.column("content").combine_chunks()))
    frozen = parser.freeze()
    emb = HashingEmbedder(dim=32).fit(frozen.texts)
    vec = emb.embed(frozen.texts)
    prepared = root / "prepared"
    prepared.mkdir()
    pq.write_table(pa.table({
        "template_id": pa.array(np.arange(len(frozen), dtype=np.int32)),
        "template": pa.array(frozen.texts, pa.string()),
        "count": pa.array(frozen.counts),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vec.reshape(-1)), vec.shape[1]),
    }), prepared / "templates.parquet")
    (prepared / "parser.json").write_text(json.dumps(frozen.to_dict()))
    (prepared / "embedder.json").write_text(json.dumps(emb.spec()))
    torch.manual_seed(0)
    mcfg = ModelConfig(hidden_dim=16, ff_dim=32, num_prototypes=4, dropout=0.0)
    model = LogMILP(mcfg, 32)
    cfg = load_project(REPO_ROOT / "configs" / "synthetic.yaml", [])
    return write_bundle(str(root / "model"), cfg, model.state_dict(),
                        {"model_config": {**asdict(mcfg), "input_dim": 32}, "metrics": {"threshold": threshold},
                         "epoch": 0}, str(prepared), key=key)
