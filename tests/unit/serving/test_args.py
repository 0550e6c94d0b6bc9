"""The serving app's settings: AppArgs and user_config checked by the config engine, and --print-config."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_logmilp.config import ConfigError, to_dict
from ray_logmilp.serving.args import (DEFAULT_HOST, AppArgs, BatchingConfig, app_args, batching, builder_app,
                                      http_options, load_config)

REPO_ROOT = Path(__file__).resolve().parents[3]
SERVE_CONFIG = REPO_ROOT / "serve" / "config.yaml"


def test_the_shipped_config_args_are_valid():
    args = app_args(builder_app(load_config(SERVE_CONFIG)).args)
    assert isinstance(args, AppArgs) and args.bundle and args.default_top_k <= args.max_top_k


@pytest.mark.parametrize("raw,message", [
    ({"bundle": "b", "max_top_kk": 3}, "unknown key 'args.max_top_kk'; did you mean 'args.max_top_k'?"),
    ({"max_top_k": 3}, "args.bundle: is required"),
    ({"bundle": "b", "default_top_k": 7, "max_top_k": 5}, "args.default_top_k: (7) must be <= max_top_k (5)"),
    ({"bundle": "b", "device": "gpu"}, "args.device: 'gpu' is not one of ['auto', 'cpu', 'cuda']"),
    ({"bundle": "b", "max_body_bytes": 0}, "args.max_body_bytes: must be >= 1"),
    ({"bundle": "b", "max_windows_per_request": "many"}, "args.max_windows_per_request: expected an integer"),
    ({"bundle": "b", "request_timeout_s": 0}, "args.request_timeout_s: must be > 0"),
    ({"bundle": "b", "body_timeout_s": -1}, "args.body_timeout_s: must be > 0"),
    ({"bundle": "b", "torch_threads": 0}, "args.torch_threads: must be >= 1"),
])
def test_bad_app_args_name_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        app_args(raw)
    assert message in str(err.value)


def test_the_shipped_config_listens_on_this_machine_and_the_app_times_out_before_the_proxy():
    config = load_config(SERVE_CONFIG)
    http = http_options(config)
    assert http["host"] == DEFAULT_HOST == "127.0.0.1"
    args = app_args(builder_app(config).args)
    # The app's own answers (408 for a stalled body, 503 for a busy model) come before the proxy's 408.
    assert http["request_timeout_s"] > args.body_timeout_s + args.request_timeout_s
    assert http["keep_alive_timeout_s"] < type(config.http_options).model_fields["keep_alive_timeout_s"].default


def test_http_options_keep_the_files_timeouts_under_the_flags(tmp_path):
    raw = yaml.safe_load(SERVE_CONFIG.read_text())
    del raw["http_options"]["host"]
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    assert http_options(config)["host"] == DEFAULT_HOST  # a file that names no host still binds locally
    http = http_options(config, host="0.0.0.0", port=None)
    assert http["host"] == "0.0.0.0" and http["port"] == raw["http_options"]["port"]
    assert http["request_timeout_s"] == raw["http_options"]["request_timeout_s"]


def test_batching_keeps_unset_keys_and_names_bad_ones():
    current = batching({"max_batch_size": 8})
    assert current == BatchingConfig(max_batch_size=8)
    assert batching({"batch_wait_timeout_s": 0}, current) == BatchingConfig(8, 0.0)
    for raw, message in (({"max_batch_size": 0}, "user_config.max_batch_size: must be >= 1"),
                         ({"max_batch_size": True}, "user_config.max_batch_size: expected an integer"),
                         ({"batch_wait_timeout_s": -1}, "user_config.batch_wait_timeout_s: must be >= 0"),
                         ({"max_batch": 4}, "did you mean 'user_config.max_batch_size'?")):
        with pytest.raises(ConfigError) as err:
            batching(raw, current)
        assert message in str(err.value)


def _serve_script(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ADDRESS": "local"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "serve" / "app.py"), *argv], capture_output=True,
                          text=True, timeout=120, env=env, cwd=REPO_ROOT)


def test_print_config_shows_the_resolved_args_without_starting_ray(tmp_path):
    proc = _serve_script("--print-config", "--bundle", str(tmp_path / "model"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = yaml.safe_load(proc.stdout)
    expected = {**builder_app(load_config(SERVE_CONFIG)).args, "bundle": str(tmp_path / "model")}
    assert printed == to_dict(app_args(expected))
    assert "Started a local Ray instance" not in proc.stderr


def test_a_bad_app_arg_in_the_config_file_exits_2_naming_it(tmp_path):
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["applications"][0]["args"]["max_top_kk"] = 3
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = _serve_script("--config", str(path), "--print-config")
    assert proc.returncode == 2
    assert "unknown key 'args.max_top_kk'; did you mean 'args.max_top_k'?" in proc.stderr


def test_a_tampered_bundle_fails_the_serve_cli_in_one_line_before_ray(tmp_path, capsys, monkeypatch):
    """python serve/app.py --bundle BAD: the bundle is verified where the app is built, not in each replica."""
    import json

    from ray_logmilp.serving.cli import main
    from tests.unit.tiny_bundle import corpus_lines, write_tiny_bundle

    import ray

    monkeypatch.delenv("RAY_LOGMILP_BUNDLE_KEY", raising=False)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started before the bundle was checked"))
    bundle = Path(write_tiny_bundle(tmp_path, corpus_lines(tmp_path / "corpus", 1500), 0.5))
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["threshold"] = 0.0                              # the edit: flips every verdict
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    rc = main(["--bundle", str(bundle)], default_config=REPO_ROOT / "serve" / "config.yaml")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "args.bundle" in err[0] and "edited" in err[0], err
