"""The model bundle: a self-describing folder that evaluation and serving load without training code.

Layout::

    bundle.json          format version, configs, threshold, the sha256 of every other file, model_version
                         (a sha256 over all of this manifest) and, when a key was configured, its signature
    weights.safetensors  model weights (no pickle anywhere)
    templates.parquet    template id, text, count, embedding
    parser.json          frozen drain3 state (our JSON)
    embedder.json        embedder spec (rebuilds the embedder for templates never seen in training)
    format.json          the log format (header, timestamp, label, masking) raw lines are parsed with
    metrics.json         validation metrics of the chosen epoch (evaluation adds test metrics)

Loading checks the manifest against its ``model_version`` and every file against its recorded sha256, so
an edited, tampered or truncated bundle is a clear :class:`BundleError`, never a silently different model.
With a key in ``RAY_LOGMILP_BUNDLE_KEY``, training signs the bundles it writes (HMAC-SHA256 over the
model_version) and loading refuses a bundle whose signature is missing or made with another key.
A bundle is written into a temporary folder beside its destination and committed by renaming it into
place, so a failed write leaves the previous bundle as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import io
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from ray_logmilp import storage
from ray_logmilp.config import ConfigError, ProjectConfig, from_dict, require, to_dict

log = logging.getLogger(__name__)

# 3: bundle.json carries model_version (a hash over the manifest, which lists every file's sha256) and may
# carry a signature. 2: model_config holds exactly ModelConfig's fields plus input_dim. 1: it may also hold
# options that have since left the config (REMOVED_MODEL_OPTIONS), or lack ones added later
# (LEGACY_MODEL_OPTIONS).
BUNDLE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# The user-held key that signs bundles when training writes them and, when set, must have signed every
# bundle that loads. An environment variable rather than a config field, so the secret never lands in a
# printed config, a report or a process list.
KEY_ENV = "RAY_LOGMILP_BUNDLE_KEY"
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
MANIFEST = "bundle.json"
# Manifest fields the model_version does not cover: the version itself and the signature over it.
SEAL_FIELDS = ("model_version", "signature")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(RuntimeError):
    """A bundle folder is missing files, has been modified, is unsigned where a key is configured, or is of
    an unknown version."""


@dataclass
class Manifest:
    """``bundle.json``: every field typed, so a malformed manifest fails naming the field."""

    bundle_version: int
    created: str
    model_config: dict[str, Any]
    loss_config: dict[str, Any]
    window: dict[str, Any]
    threshold: float
    epoch: int | None
    prepared_dir: str
    files: dict[str, Any]
    model_version: str | None = None
    signature: str | None = None

    def __post_init__(self):
        require(self.bundle_version in READABLE_VERSIONS, "bundle_version",
                f"{self.bundle_version} is not supported (this ray-logmilp reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))})")
        require(0.0 <= self.threshold <= 1.0, "threshold", f"must be a probability in [0, 1], got {self.threshold}")
        require(set(self.files) == set(PAYLOAD_FILES), "files",
                f"must list exactly {', '.join(PAYLOAD_FILES)} (got {', '.join(sorted(self.files)) or 'none'})")
        require(all(isinstance(v, str) and _HEX64.fullmatch(v) for v in self.files.values()), "files",
                "every checksum must be a sha256 in lowercase hex")
        if self.bundle_version >= 3:
            require(isinstance(self.model_version, str) and bool(_HEX64.fullmatch(self.model_version)),
                    "model_version", f"must be a sha256 in lowercase hex, got {self.model_version!r}")
            require(self.signature is None or bool(_HEX64.fullmatch(self.signature)), "signature",
                    f"must be an HMAC-SHA256 in lowercase hex, got {self.signature!r}")
        else:
            # Versions before 3 had no seal: one that carries it had its bundle_version edited.
            require(self.model_version is None and self.signature is None, "model_version",
                    f"a version-{self.bundle_version} bundle has no model_version or signature")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(fs, path: str) -> bytes:
    with fs.open_input_stream(path) as src:
        return src.read()


def _write_bytes(fs, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def bundle_key() -> bytes | None:
    """The signing / verification key from ``RAY_LOGMILP_BUNDLE_KEY`` (None when unset or empty)."""
    value = os.environ.get(KEY_ENV, "")
    return value.encode() if value else None


def manifest_version(manifest: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the manifest without its seal (model_version, signature). The
    manifest lists every payload file's sha256, so this covers every byte of the bundle."""
    body = {k: v for k, v in manifest.items() if k not in SEAL_FIELDS}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return _sha256(canonical.encode())


def _signature(key: bytes, version: str) -> str:
    return hmac.new(key, version.encode(), hashlib.sha256).hexdigest()


def seal(manifest: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The manifest with its model_version and, given a key, its signature (replacing any previous seal)."""
    body = {k: v for k, v in manifest.items() if k not in SEAL_FIELDS}
    version = manifest_version(body)
    return {**body, "model_version": version, **({"signature": _signature(key, version)} if key else {})}


def format_to_dict(fmt: Any) -> dict[str, Any]:
    if hasattr(fmt, "to_dict"):
        return fmt.to_dict()
    return to_dict(fmt) if dataclasses.is_dataclass(fmt) else dict(fmt)


def model_from_record(record: dict[str, Any], version: int, where: str) -> Any:
    """The LogMILP a bundle's ``model_config`` describes: ModelConfig fields plus ``input_dim`` and, in a
    version-1 bundle, the options older versions had (REMOVED_MODEL_OPTIONS, LEGACY_MODEL_OPTIONS).
    ``where`` names the bundle in errors."""
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
                 prepared_dir: str, key: bytes | None = None) -> str:
    """Write a bundle from a checkpoint's weights + the prepare outputs it was trained on, signed with
    ``key`` (default: :func:`bundle_key`) when there is one. Replaces a bundle already at ``bundle_dir``
    only once the new one is complete."""
    from safetensors.torch import save as save_safetensors

    from ray_logmilp.ingest.format_spec import load_format

    key = key or bundle_key()
    pfs, proot = storage.resolve_dir(prepared_dir)
    files: dict[str, bytes] = {
        "weights.safetensors": save_safetensors({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}),
        "templates.parquet": _read_bytes(pfs, f"{proot}/templates.parquet"),
        "parser.json": _read_bytes(pfs, f"{proot}/parser.json"),
        "embedder.json": _read_bytes(pfs, f"{proot}/embedder.json"),
        "format.json": json.dumps(format_to_dict(load_format(cfg.data.format)), indent=2).encode(),
        "metrics.json": json.dumps({"validation": meta.get("metrics", {})}, indent=2).encode(),
    }
    manifest = seal({
        "bundle_version": BUNDLE_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_config": meta["model_config"],
        "loss_config": to_dict(cfg.loss),
        "window": to_dict(cfg.data.window),
        "threshold": float(meta.get("metrics", {}).get("threshold", 0.5)),
        "epoch": meta.get("epoch"),
        "prepared_dir": str(prepared_dir),
        "files": {name: _sha256(data) for name, data in files.items()},
    }, key)
    _commit(bundle_dir, {**files, MANIFEST: json.dumps(manifest, indent=2).encode()})
    log.info("model bundle written to %s (version %s, threshold %.4f%s)", bundle_dir,
             manifest["model_version"][:12], manifest["threshold"], ", signed" if key else "")
    return bundle_dir


def _commit(bundle_dir: str, files: dict[str, bytes]) -> None:
    """Make ``files`` (bundle.json among them) the bundle in ``bundle_dir``, all or nothing: a failed write
    leaves the previous bundle, and a cut-short commit leaves no manifest (not a bundle), never a mix."""
    with storage.atomic_dir(bundle_dir, MANIFEST) as (fs, tmp):
        for name, data in files.items():
            _write_bytes(fs, f"{tmp}/{name}", data)


def _reject_constant(name: str) -> None:
    raise BundleError(f"{name} is not a JSON number")


def parse_manifest(raw: Any, where: str) -> Manifest:
    """The typed manifest of a parsed ``bundle.json``; BundleError naming the field when it is malformed."""
    if not isinstance(raw, dict):
        raise BundleError(f"{where}/{MANIFEST} must hold a JSON object, got a {type(raw).__name__}: {raw!r:.80}")
    if raw.get("bundle_version") not in READABLE_VERSIONS:
        # Before the field checks: a newer format may have fields this version does not know.
        raise BundleError(f"{where}: bundle version {raw.get('bundle_version')!r} is not supported "
                          f"(this ray-logmilp reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    try:
        return from_dict(Manifest, raw)
    except ConfigError as exc:
        raise BundleError(f"{where}/{MANIFEST}: {exc}") from None


def _check_seal(raw: dict[str, Any], manifest: Manifest, key: bytes | None, where: str) -> str:
    """The bundle's model_version, once the manifest matches it and, with a key, its signature does too."""
    version = manifest_version(raw)
    if manifest.bundle_version < 3:
        if key:
            raise BundleError(f"{where}: a version-{manifest.bundle_version} bundle is not signed and {KEY_ENV} is "
                              f"set, so only bundles signed with that key load; retrain it with the key set")
        log.warning("%s: a version-%d bundle has no manifest hash, so %s is unverified (its files are checked)",
                    where, manifest.bundle_version, MANIFEST)
        return version
    if not hmac.compare_digest(version, manifest.model_version):
        raise BundleError(f"{where}/{MANIFEST} was edited after the bundle was written: its contents no longer "
                          f"match its model_version")
    if key:
        if manifest.signature is None:
            raise BundleError(f"{where} is not signed and {KEY_ENV} is set, so only bundles signed with that key "
                              f"load; retrain it with the key set")
        if not hmac.compare_digest(_signature(key, version), manifest.signature):
            raise BundleError(f"{where}: its signature was not made with the key in {KEY_ENV}")
    return version


def _read_verified(bundle_dir: str, key: bytes | None) -> tuple[dict[str, Any], Manifest, str, dict[str, bytes]]:
    """(raw manifest, typed manifest, model_version, payload bytes) of a bundle that passed every check."""
    fs, root = storage.resolve_dir(bundle_dir)
    if not storage.exists(fs, f"{root}/{MANIFEST}"):
        raise BundleError(f"{bundle_dir} is not a model bundle: {MANIFEST} is missing")
    try:
        raw = json.loads(_read_bytes(fs, f"{root}/{MANIFEST}"), parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, BundleError) as exc:
        raise BundleError(f"{bundle_dir}/{MANIFEST} is not valid JSON: {exc}") from None
    manifest = parse_manifest(raw, bundle_dir)
    version = _check_seal(raw, manifest, key, bundle_dir)
    blobs: dict[str, bytes] = {}
    for name in PAYLOAD_FILES:
        if not storage.exists(fs, f"{root}/{name}"):
            raise BundleError(f"{bundle_dir}: {name} is missing")
        blobs[name] = _read_bytes(fs, f"{root}/{name}")
        if not hmac.compare_digest(_sha256(blobs[name]), manifest.files[name]):
            raise BundleError(f"{bundle_dir}: {name} does not match its checksum in {MANIFEST} "
                              f"(modified or truncated)")
    return raw, manifest, version, blobs


def verify_bundle(bundle_dir: str, key: bytes | None = None) -> str:
    """Check a bundle without building its model (manifest, seal, signature with ``key`` or
    :func:`bundle_key`, file checksums): its model_version, or BundleError. For jobs that should refuse a
    bad bundle before starting any work."""
    return _read_verified(bundle_dir, key or bundle_key())[2]


@dataclass
class Bundle:
    """A loaded bundle: the model in eval mode and everything needed to score raw lines."""

    path: str
    manifest: dict[str, Any]
    model_version: str             # sha256 over the manifest (see manifest_version)
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
        """The short model_version that serving reports."""
        return self.model_version[:12]


def load_bundle(bundle_dir: str, *, device: str | torch.device = "cpu", key: bytes | None = None) -> Bundle:
    """Load and verify a bundle folder (local or URI); with ``key`` (default: :func:`bundle_key`) it must be
    signed with that key."""
    from safetensors.torch import load as load_safetensors

    from ray_logmilp.ingest.embedding import embedder_from_spec
    from ray_logmilp.ingest.format_spec import LogFormat
    from ray_logmilp.ingest.frozen import FrozenParser

    raw, manifest, version, blobs = _read_verified(bundle_dir, key or bundle_key())
    model = model_from_record(manifest.model_config, manifest.bundle_version, bundle_dir)
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
        manifest=raw,
        model_version=version,
        model=model,
        embeddings=embeddings,
        template_texts=templates.column("template").to_pylist(),
        parser=FrozenParser.from_dict(json.loads(blobs["parser.json"])),
        embedder=embedder_from_spec(json.loads(blobs["embedder.json"])),
        format=LogFormat.from_dict(json.loads(blobs["format.json"]), source=f"{bundle_dir}/format.json"),
        metrics=json.loads(blobs["metrics.json"]),
    )


def update_metrics(bundle_dir: str, metrics: dict[str, Any], key: bytes | None = None) -> bool:
    """Merge evaluation results into metrics.json, refresh its checksum and the manifest's seal (re-signed
    with ``key`` or :func:`bundle_key`). A signed bundle is left as it was when there is no key to re-sign
    it with (returns False): an unsigned rewrite would stop it loading where the key is configured."""
    key = key or bundle_key()
    raw, manifest, _, blobs = _read_verified(bundle_dir, key)
    if manifest.signature is not None and not key:
        log.warning("%s is signed and %s is not set: its metrics.json keeps its earlier metrics", bundle_dir, KEY_ENV)
        return False
    current = json.loads(blobs["metrics.json"])
    current.update(metrics)
    blobs["metrics.json"] = json.dumps(current, indent=2, default=float).encode()
    raw = {**raw, "files": {**raw["files"], "metrics.json": _sha256(blobs["metrics.json"])}}
    if manifest.bundle_version >= 3:
        raw = seal(raw, key)
    _commit(bundle_dir, {**blobs, MANIFEST: json.dumps(raw, indent=2).encode()})
    return True
