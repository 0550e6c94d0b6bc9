"""The model bundle: a self-describing folder that evaluation and serving load without training code.

Layout::

    bundle.json          format version, configs, threshold, the sha256 of every other file
    weights.safetensors  model weights (no pickle anywhere)
    templates.parquet    template id, text, count, embedding
    parser.json          frozen drain3 state (our JSON)
    embedder.json        embedder spec (rebuilds the embedder for templates never seen in training)
    format.json          the log format (header, timestamp, label, masking) raw lines are parsed with
    metrics.json         validation metrics of the chosen epoch (evaluation adds test metrics)

Loading checks every file against its recorded sha256, so a tampered or truncated file is a clear
error, never a silently different model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ray_logmilp import storage
from ray_logmilp.config import ProjectConfig, to_dict

log = logging.getLogger(__name__)

# 2: model_config holds exactly ModelConfig's fields plus input_dim. 1: it may also hold options that have
# since left the config (REMOVED_MODEL_OPTIONS), or lack ones added later (LEGACY_MODEL_OPTIONS).
BUNDLE_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Model options added after version-1 bundles were first written, with the value that reproduces a bundle
# written before the option existed (it was trained without it). Today's defaults differ, so a missing key
# must not silently take today's default.
LEGACY_MODEL_OPTIONS = {"history_window": 0, "attention_input": "encoder", "pooled_values": "encoder",
                        "witness_scores": False, "evidence_counts": False,
                        "localizer_head": False}
# Model options that left the config, with the one value this version builds. A bundle that recorded it
# (or, through LEGACY_MODEL_OPTIONS, was written before it existed) with any other value was trained with
# a model this version no longer has. attention_dim is derived from hidden_dim, checked in model_from_record.
REMOVED_MODEL_OPTIONS = {"relative_window": 0, "pooled_values": "local", "witness_scores": False,
                         "localizer_head": False, "evidence_counts": False, "bag_classifier": "concat",
                         "attention_input": "local", "positional_encoding": True, "positional_scale": 0.1,
                         "norm_first": True, "assignment_temperature": 0.1}
# Recorded by older bundles, with no bearing on the weights: the position table's length (rows depend
# only on the position), now the constant logmilp.MAX_LEN.
IGNORED_MODEL_OPTIONS = ("max_len",)
PAYLOAD_FILES = ("weights.safetensors", "templates.parquet", "parser.json", "embedder.json", "format.json",
                 "metrics.json")


class BundleError(RuntimeError):
    """A bundle folder is missing files, has been modified, or is of an unknown version."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as src:
        return src.read()


def _write_bytes(fs, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def format_to_dict(fmt: Any) -> dict[str, Any]:
    if hasattr(fmt, "to_dict"):
        return fmt.to_dict()
    return to_dict(fmt) if dataclasses.is_dataclass(fmt) else dict(fmt)


def model_from_record(record: dict[str, Any], version: int, where: str) -> Any:
    """The LogMILP a bundle's ``model_config`` describes: ModelConfig fields plus ``input_dim`` and, in a
    version-1 bundle, the options older versions had (REMOVED_MODEL_OPTIONS, LEGACY_MODEL_OPTIONS).
    ``where`` names the bundle in errors."""
    from ray_logmilp.config import ConfigError, from_dict
    from ray_logmilp.model.logmilp import LogMILP, ModelConfig, attention_dim

    record = {**LEGACY_MODEL_OPTIONS, **record} if version == 1 else dict(record)
    for key in IGNORED_MODEL_OPTIONS:
        record.pop(key, None)
    input_dim = record.pop("input_dim", None)
    if not isinstance(input_dim, int) or input_dim < 1:
        raise BundleError(f"{where}: model_config has no valid input_dim (got {input_dim!r})")
    supported = {**REMOVED_MODEL_OPTIONS, "attention_dim": attention_dim(record.get("hidden_dim", ModelConfig.hidden_dim))}
    for key, value in supported.items():
        recorded = record.pop(key, value)
        if recorded != value:
            raise BundleError(f"{where}: the model was trained with model.{key}={recorded!r}, which this version "
                              f"of ray-logmilp no longer supports (it builds only model.{key}={value!r})")
    try:
        cfg = from_dict(ModelConfig, record, prefix="model.")
    except ConfigError as exc:
        raise BundleError(f"{where}: model_config is not valid for this version of ray-logmilp: {exc}") from None
    return LogMILP(cfg, input_dim)


def write_bundle(bundle_dir: str, cfg: ProjectConfig, state_dict: dict[str, torch.Tensor], meta: dict[str, Any],
                 prepared_dir: str) -> str:
    """Write a bundle from a checkpoint's weights + the prepare outputs it was trained on."""
    from safetensors.torch import save as save_safetensors

    from ray_logmilp.ingest.format_spec import load_format

    fs, root = storage.resolve_dir(bundle_dir, create=True)
    pfs, proot = storage.resolve_dir(prepared_dir)
    files: dict[str, bytes] = {
        "weights.safetensors": save_safetensors({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}),
        "templates.parquet": _read_bytes(pfs, f"{proot}/templates.parquet"),
        "parser.json": _read_bytes(pfs, f"{proot}/parser.json"),
        "embedder.json": _read_bytes(pfs, f"{proot}/embedder.json"),
        "format.json": json.dumps(format_to_dict(load_format(cfg.data.format)), indent=2).encode(),
        "metrics.json": json.dumps({"validation": meta.get("metrics", {})}, indent=2).encode(),
    }
    for name, data in files.items():
        _write_bytes(fs, f"{root}/{name}", data)
    manifest = {
        "bundle_version": BUNDLE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_config": meta["model_config"],
        "loss_config": to_dict(cfg.loss),
        "window": to_dict(cfg.data.window),
        "threshold": float(meta.get("metrics", {}).get("threshold", 0.5)),
        "epoch": meta.get("epoch"),
        "prepared_dir": str(prepared_dir),
        "files": {name: _sha256(data) for name, data in files.items()},
    }
    _write_bytes(fs, f"{root}/bundle.json", json.dumps(manifest, indent=2).encode())
    log.info("model bundle written to %s (threshold %.4f)", bundle_dir, manifest["threshold"])
    return bundle_dir


@dataclass
class Bundle:
    """A loaded bundle: the model in eval mode and everything needed to score raw lines."""

    path: str
    manifest: dict[str, Any]
    model: Any                     # LogMILP
    embeddings: np.ndarray         # [T, d] float32
    template_texts: list[str]
    parser: Any                    # FrozenParser
    embedder: Any
    format: Any                    # LogFormat
    metrics: dict[str, Any]

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    @property
    def version(self) -> str:
        return self.manifest["files"]["weights.safetensors"][:12]


def load_bundle(bundle_dir: str, *, device: str | torch.device = "cpu", verify: bool = True) -> Bundle:
    """Load and verify a bundle folder (local or URI)."""
    from safetensors.torch import load as load_safetensors

    from ray_logmilp.ingest.embedding import embedder_from_spec
    from ray_logmilp.ingest.format_spec import LogFormat
    from ray_logmilp.ingest.frozen import FrozenParser

    fs, root = storage.resolve_dir(bundle_dir)
    if not storage.exists(fs, f"{root}/bundle.json"):
        raise BundleError(f"{bundle_dir} is not a model bundle: bundle.json is missing")
    try:
        manifest = json.loads(_read_bytes(fs, f"{root}/bundle.json"))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{bundle_dir}/bundle.json is not valid JSON: {exc}") from None
    if manifest.get("bundle_version") not in READABLE_VERSIONS:
        raise BundleError(f"{bundle_dir}: bundle version {manifest.get('bundle_version')!r} is not supported "
                          f"(this ray-logmilp reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    blobs: dict[str, bytes] = {}
    for name in PAYLOAD_FILES:
        if not storage.exists(fs, f"{root}/{name}"):
            raise BundleError(f"{bundle_dir}: {name} is missing")
        blobs[name] = _read_bytes(fs, f"{root}/{name}")
        expected = manifest.get("files", {}).get(name)
        if verify and _sha256(blobs[name]) != expected:
            raise BundleError(f"{bundle_dir}: {name} does not match its checksum in bundle.json "
                              f"(modified or truncated)")
    model = model_from_record(manifest["model_config"], manifest["bundle_version"], bundle_dir)
    try:
        model.load_state_dict(load_safetensors(blobs["weights.safetensors"]))
    except RuntimeError as exc:
        raise BundleError(f"{bundle_dir}: weights do not fit the model config: {exc}") from None
    model.to(device).eval()
    templates = pq.read_table(io.BytesIO(blobs["templates.parquet"]))
    emb = templates.column("embedding").combine_chunks()
    embeddings = emb.flatten().to_numpy().astype(np.float32).reshape(-1, emb.type.list_size)
    return Bundle(
        path=bundle_dir,
        manifest=manifest,
        model=model,
        embeddings=embeddings,
        template_texts=templates.column("template").to_pylist(),
        parser=FrozenParser.from_dict(json.loads(blobs["parser.json"])),
        embedder=embedder_from_spec(json.loads(blobs["embedder.json"])),
        format=LogFormat.from_dict(json.loads(blobs["format.json"]), source=f"{bundle_dir}/format.json"),
        metrics=json.loads(blobs["metrics.json"]),
    )


def update_metrics(bundle_dir: str, metrics: dict[str, Any]) -> None:
    """Merge evaluation results into metrics.json and refresh its checksum."""
    fs, root = storage.resolve_dir(bundle_dir)
    current = json.loads(_read_bytes(fs, f"{root}/metrics.json"))
    current.update(metrics)
    data = json.dumps(current, indent=2, default=float).encode()
    _write_bytes(fs, f"{root}/metrics.json", data)
    manifest = json.loads(_read_bytes(fs, f"{root}/bundle.json"))
    manifest["files"]["metrics.json"] = _sha256(data)
    _write_bytes(fs, f"{root}/bundle.json", json.dumps(manifest, indent=2).encode())

