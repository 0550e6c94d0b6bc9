"""The model bundle: what loading refuses (edited manifests, malformed fields, bad signatures, mismatched
files), how older bundles still load, and that writing one is all or nothing."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import torch

import ray_logmilp.bundle as bundle_module
from ray_logmilp.bundle import (KEY_ENV, REMOVED_MODEL_OPTIONS, BundleError, load_bundle, manifest_version, seal,
                                update_metrics, verify_bundle)

from . import tiny_bundle as tiny

THRESHOLD = 0.4985
KEY = b"a key only the user holds"


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> list[str]:
    return tiny.corpus_lines(tmp_path_factory.mktemp("syn"), n_lines=1500)


@pytest.fixture(scope="module")
def tiny_bundle(lines, tmp_path_factory) -> str:
    return tiny.write_tiny_bundle(tmp_path_factory.mktemp("tiny"), lines, THRESHOLD)


@pytest.fixture(scope="module")
def signed_bundle(lines, tmp_path_factory) -> str:
    return tiny.write_tiny_bundle(tmp_path_factory.mktemp("signed"), lines, THRESHOLD, key=KEY)


@pytest.fixture(autouse=True)
def no_key_from_the_environment(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def _copy(bundle_dir, tmp_path, name="copy") -> Path:
    copy = tmp_path / name
    shutil.copytree(bundle_dir, copy)
    return copy


def _edit_manifest(bundle_dir, tmp_path, edit, name="copy", reseal=False) -> str:
    """A copy of the bundle whose bundle.json ``edit`` changed (a function of the parsed manifest returning
    the new one), written back as JSON and, with ``reseal``, given a fresh, consistent model_version."""
    copy = _copy(bundle_dir, tmp_path, name)
    manifest = edit(json.loads((copy / "bundle.json").read_text()))
    (copy / "bundle.json").write_text(json.dumps(seal(manifest, None) if reseal else manifest))
    return str(copy)


def _as_version(n: int):
    """The edit that makes a manifest what version ``n`` (before the manifest hash) wrote: no seal."""
    def edit(manifest):
        manifest.pop("model_version", None)
        manifest.pop("signature", None)
        return {**manifest, "bundle_version": n}
    return edit


def _setting(key, value):
    return lambda manifest: {**manifest, key: value}


# -- the manifest is covered ----------------------------------------------------------------------------------

def test_editing_the_threshold_fails_the_load(tiny_bundle, tmp_path):
    assert load_bundle(tiny_bundle).threshold == THRESHOLD
    edited = _edit_manifest(tiny_bundle, tmp_path, _setting("threshold", 0.0))
    with pytest.raises(BundleError, match="bundle.json was edited after the bundle was written"):
        load_bundle(edited)


def test_a_consistent_edit_changes_the_model_version(tiny_bundle, tmp_path):
    original = load_bundle(tiny_bundle)
    edited = load_bundle(_edit_manifest(tiny_bundle, tmp_path, _setting("threshold", 0.0), reseal=True))
    assert edited.threshold == 0.0
    assert edited.version != original.version and edited.model_version != original.model_version
    assert original.model_version == manifest_version(original.manifest) == original.manifest["model_version"]
    assert original.version == original.model_version[:12]


def test_the_version_covers_every_file_through_its_checksum(tiny_bundle, tmp_path):
    copy = _copy(tiny_bundle, tmp_path)
    (copy / "metrics.json").write_text('{"validation": {"f1": 1.0}}')
    with pytest.raises(BundleError, match="metrics.json does not match its checksum"):
        load_bundle(str(copy))
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["files"]["metrics.json"] = bundle_module._sha256((copy / "metrics.json").read_bytes())
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="was edited"):
        load_bundle(str(copy))


@pytest.mark.parametrize("edit,message", [
    (lambda m: [1, 2], r"must hold a JSON object, got a list"),
    (lambda m: "bundle", r"must hold a JSON object, got a str"),
    (_setting("threshold", "high"), r"threshold: expected a number, got 'high'"),
    (_setting("threshold", 1.5), r"threshold: must be a probability in \[0, 1\], got 1.5"),
    (_setting("threshold", None), r"threshold: expected a number, got None"),
    (lambda m: {k: v for k, v in m.items() if k != "window"}, r"missing 1 required positional argument: 'window'"),
    (_setting("thresold", 0.2), r"unknown key 'thresold'"),
    (_setting("bundle_version", 99), r"bundle version 99 is not supported"),
    (_setting("bundle_version", "3"), r"bundle version '3' is not supported"),
    (_setting("files", {"weights.safetensors": "0" * 64}), r"files: must list exactly weights.safetensors"),
    (lambda m: {**m, "files": {**m["files"], "parser.json": "not a checksum"}}, r"files: every checksum"),
    (_setting("model_version", "abc"), r"model_version: must be a sha256"),
    (_setting("signature", 42), r"signature: 42 is not a valid str"),
])
def test_a_malformed_manifest_is_a_bundle_error_naming_the_field(tiny_bundle, tmp_path, edit, message):
    with pytest.raises(BundleError, match=message):
        load_bundle(_edit_manifest(tiny_bundle, tmp_path, edit))


def test_a_manifest_that_is_not_json_or_holds_nan_is_a_bundle_error(tiny_bundle, tmp_path):
    copy = _copy(tiny_bundle, tmp_path)
    text = (copy / "bundle.json").read_text()
    (copy / "bundle.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="bundle.json is not valid JSON"):
        load_bundle(str(copy))
    (copy / "bundle.json").write_text(text.replace(f'"threshold": {THRESHOLD}', '"threshold": NaN'))
    with pytest.raises(BundleError, match="NaN is not a JSON number"):
        load_bundle(str(copy))


def test_an_unknown_model_key_is_a_bundle_error(tiny_bundle, tmp_path):
    edit = lambda m: {**m, "model_config": {**m["model_config"], "hiden_dim": 8}}   # noqa: E731
    with pytest.raises(BundleError, match="model_config is not valid.*unknown key 'model.hiden_dim'"):
        load_bundle(_edit_manifest(tiny_bundle, tmp_path, edit, reseal=True))


# -- signing ------------------------------------------------------------------------------------------------

def test_a_signed_bundle_loads_with_its_key_and_without_one(signed_bundle, monkeypatch):
    manifest = json.loads((Path(signed_bundle) / "bundle.json").read_text())
    assert len(manifest["signature"]) == 64
    assert load_bundle(signed_bundle, key=KEY).threshold == THRESHOLD
    assert load_bundle(signed_bundle).threshold == THRESHOLD          # no key configured: checksums only
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    assert verify_bundle(signed_bundle) == manifest["model_version"]


def test_with_a_key_configured_unsigned_and_wrongly_signed_bundles_are_refused(tiny_bundle, signed_bundle,
                                                                              monkeypatch, tmp_path):
    with pytest.raises(BundleError, match="its signature was not made with the key in RAY_LOGMILP_BUNDLE_KEY"):
        load_bundle(signed_bundle, key=b"another key")
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    with pytest.raises(BundleError, match="is not signed and RAY_LOGMILP_BUNDLE_KEY is set"):
        load_bundle(tiny_bundle)
    # Whoever can write the folder can make a consistent unsigned bundle, but not a signed one.
    forged = _edit_manifest(signed_bundle, tmp_path, _setting("threshold", 0.0), reseal=True)
    with pytest.raises(BundleError, match="is not signed"):
        load_bundle(forged)
    resigned = _edit_manifest(signed_bundle, tmp_path, lambda m: seal({**m, "threshold": 0.0}, b"guess"), "g")
    with pytest.raises(BundleError, match="its signature was not made with the key"):
        load_bundle(resigned)


def test_training_signs_with_the_key_from_the_environment(lines, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    written = tiny.write_tiny_bundle(tmp_path, lines[:500], THRESHOLD)
    assert load_bundle(written, key=KEY).threshold == THRESHOLD


# -- bundles written before the manifest hash -----------------------------------------------------------------

def _rewrite_model_config(bundle_dir, tmp_path, name, version=1, **recorded):
    """A copy of the bundle whose manifest records ``recorded`` in its model_config, as ``version`` of the
    bundle format wrote it (no seal; the weights are unchanged)."""
    edit = _as_version(version)
    return _edit_manifest(bundle_dir, tmp_path, lambda m: edit({**m, "model_config": {**m["model_config"], **recorded}}),
                          name)


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_bundle_loads_with_a_warning_and_a_recomputed_version(tiny_bundle, tmp_path, caplog, version):
    old = _rewrite_model_config(tiny_bundle, tmp_path, "old", version, **REMOVED_MODEL_OPTIONS, attention_dim=8)
    with caplog.at_level(logging.WARNING, logger="ray_logmilp.bundle"):
        loaded = load_bundle(old)
    assert f"a version-{version} bundle has no manifest hash" in caplog.text
    assert loaded.model_version == manifest_version(json.loads((Path(old) / "bundle.json").read_text()))
    assert loaded.model_version != load_bundle(tiny_bundle).model_version
    with pytest.raises(BundleError, match=rf"a version-{version} bundle is not signed"):
        load_bundle(old, key=KEY)


def test_an_old_version_number_with_a_seal_is_refused(tiny_bundle, tmp_path):
    downgraded = _edit_manifest(tiny_bundle, tmp_path, _setting("bundle_version", 2))
    with pytest.raises(BundleError, match="a version-2 bundle has no model_version or signature"):
        load_bundle(downgraded)


def test_a_bundle_that_recorded_removed_options_at_their_shipped_value_loads(tiny_bundle, tmp_path):
    old = _rewrite_model_config(tiny_bundle, tmp_path, "old", **REMOVED_MODEL_OPTIONS, attention_dim=8, max_len=2048)
    x, mask = torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(load_bundle(old).model(x, mask).prob, load_bundle(tiny_bundle).model(x, mask).prob)
    assert load_bundle(old).model.input_dim == 32


@pytest.mark.parametrize("recorded", [{"localizer_head": True}, {"attention_input": "encoder"},
                                      {"witness_scores": True}, {"positional_encoding": False},
                                      {"attention_dim": 64}])
def test_a_bundle_that_recorded_a_removed_option_on_fails_naming_it(tiny_bundle, tmp_path, recorded):
    # A version-1 bundle records every option of its day; all but one at the value this version builds.
    old = _rewrite_model_config(tiny_bundle, tmp_path, "old", **{**REMOVED_MODEL_OPTIONS, "attention_dim": 8, **recorded})
    (key, value), = recorded.items()
    with pytest.raises(BundleError, match=rf"model\.{key}={value!r}.*no longer supports"):
        load_bundle(old)


def test_a_bundle_from_before_the_local_pooling_heads_fails_clearly(tiny_bundle, tmp_path):
    # Version-1 bundles written before attention_input / pooled_values existed lack the keys; they were
    # trained with the paper's encoder-pooled heads, which this version no longer builds.
    old = _rewrite_model_config(tiny_bundle, tmp_path, "older", witness_scores=False)
    with pytest.raises(BundleError, match="model.pooled_values='encoder'.*no longer supports"):
        load_bundle(old)


# -- evaluation's metrics -------------------------------------------------------------------------------------

def test_update_metrics_reseals_and_re_signs(tiny_bundle, signed_bundle, tmp_path):
    copy = str(_copy(tiny_bundle, tmp_path))
    assert update_metrics(copy, {"test": {"f1": 0.5}})
    updated = load_bundle(copy)
    assert updated.metrics["test"] == {"f1": 0.5} and updated.model_version != load_bundle(tiny_bundle).model_version
    signed = str(_copy(signed_bundle, tmp_path, "signed"))
    assert update_metrics(signed, {"test": {"f1": 0.5}}, key=KEY)
    assert load_bundle(signed, key=KEY).metrics["test"] == {"f1": 0.5}


def test_update_metrics_leaves_a_signed_bundle_alone_without_the_key(signed_bundle, tmp_path, caplog):
    signed = _copy(signed_bundle, tmp_path)
    before = {p.name: p.read_bytes() for p in signed.iterdir()}
    with caplog.at_level(logging.WARNING, logger="ray_logmilp.bundle"):
        assert not update_metrics(str(signed), {"test": {"f1": 0.5}})
    assert "is signed and RAY_LOGMILP_BUNDLE_KEY is not set" in caplog.text
    assert {p.name: p.read_bytes() for p in signed.iterdir()} == before
    assert load_bundle(str(signed), key=KEY).threshold == THRESHOLD


# -- writing is all or nothing --------------------------------------------------------------------------------

def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_rewriting_a_bundle_replaces_it_and_keeps_what_else_the_folder_held(lines, tmp_path):
    written = Path(tiny.write_tiny_bundle(tmp_path, lines[:500], THRESHOLD))
    (written / "report").mkdir()
    (written / "report" / "report.md").write_text("kept")
    update_metrics(str(written), {"test": {"f1": 0.1}})
    assert load_bundle(str(written)).metrics["test"] == {"f1": 0.1}
    assert (written / "report" / "report.md").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "prepared"], "staging folders were left"


def _failing_on(name: str, real):
    """``real`` (open or _write_bytes), interrupted when it is asked to write the file ``name``."""
    def write(*args, **kwargs):
        if any(isinstance(a, str) and a.endswith(name) for a in args):
            raise KeyboardInterrupt(f"interrupted while writing {name}")
        return real(*args, **kwargs)
    return write


def test_an_interrupted_write_leaves_the_previous_bundle_loading(tiny_bundle, tmp_path, monkeypatch):
    copy = _copy(tiny_bundle, tmp_path)
    before = _snapshot(copy)
    monkeypatch.setattr(bundle_module, "_write_bytes", _failing_on("templates.parquet", bundle_module._write_bytes))
    with pytest.raises(KeyboardInterrupt):
        update_metrics(str(copy), {"test": {"f1": 0.9}})
    assert _snapshot(copy) == before
    assert "test" not in load_bundle(str(copy)).metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"], "the staging folder was left behind"


def test_a_commit_cut_short_leaves_no_manifest_never_a_mix(tiny_bundle, tmp_path, monkeypatch):
    """The old bundle.json goes first and the new one comes last (storage.atomic_dir): a commit that stops
    halfway leaves a folder that is no bundle at all, rather than new files under the old manifest."""
    copy = _copy(tiny_bundle, tmp_path)

    class FullDisk:
        """The local filesystem, whose move of the weights fails (pyarrow's own types cannot be patched)."""
        def __init__(self, fs):
            self.fs = fs

        def __getattr__(self, name):
            return getattr(self.fs, name)

        def move(self, src, dst):
            if src.endswith("weights.safetensors"):
                raise OSError("no space left on device")
            return self.fs.move(src, dst)

    real = bundle_module.storage.resolve_dir
    monkeypatch.setattr(bundle_module.storage, "resolve_dir",
                        lambda path, create=False: (FullDisk(real(path, create)[0]), real(path, create)[1]))
    with pytest.raises(OSError, match="no space left"):
        update_metrics(str(copy), {"test": {"f1": 0.9}})
    with pytest.raises(BundleError, match="is not a model bundle: bundle.json is missing"):
        load_bundle(str(copy))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"], "the staging folder was left behind"
