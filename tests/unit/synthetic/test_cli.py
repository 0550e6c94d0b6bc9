"""``python -m ray_logmilp.synthetic``: flags and ``--set`` through the config engine, --print-config."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from ray_logmilp.config import to_dict
from ray_logmilp.synthetic import SyntheticConfig
from ray_logmilp.synthetic.cli import main

from ...conftest import REPO_ROOT


def test_cli_prints_summary(tmp_path, capsys):
    rc = main(["--out", str(tmp_path / "cli"), "--lines", "5000", "--seed", "3", "--corrupt",
               "--set", "kind_weights=0,0,0,1", "--set", "alarm_pad_seconds=2"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["lines_valid"] == 5000
    assert summary["lines_corrupt"] == 4 * SyntheticConfig().corrupt_per_kind
    assert summary["episodes"] == summary["episodes_by_kind"]["order"] > 0
    truth = json.loads((tmp_path / "cli" / "truth.json").read_text())
    assert truth["config"]["alarm_pad_seconds"] == 2.0


def test_named_flags_are_the_fields_they_set(tmp_path, capsys):
    flags = ["--lines", "3000", "--seed", "2", "--templates", "40", "--rate", "2", "--episode-rate", "6",
             "--burst-rate", "1", "--start-time", "1000", "--zipf", "1.3", "--alarm-pad", "3", "--gzip",
             "--corrupt", "--template-ids"]
    fields = ["n_lines=3000", "seed=2", "n_templates=40", "lines_per_second=2", "episode_rate=6",
              "burst_rate=1", "start_time=1000", "zipf_exponent=1.3", "alarm_pad_seconds=3", "gzip=true",
              "corrupt=true", "write_template_ids=true"]
    assert main(["--out", str(tmp_path / "flags"), *flags]) == 0
    assert main(["--out", str(tmp_path / "set"), *(a for f in fields for a in ("--set", f))]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in (tmp_path / "flags").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "set").iterdir())
    assert "corpus.log.gz" in names and "template_ids.i32" in names
    for name in names:
        assert (tmp_path / "flags" / name).read_bytes() == (tmp_path / "set" / name).read_bytes(), name


def test_cli_rejects_unknown_field_with_a_suggestion(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--set", "episode_rat=1"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: unknown key 'episode_rat'; did you mean 'episode_rate'?" in err
    assert main(["--out", str(tmp_path), "--episode-rate", "-1"]) == 2
    assert "configuration error: episode_rate: must be in [0, 20]" in capsys.readouterr().err
    assert main(["--out", str(tmp_path), "--set", "gzip=sometimes"]) == 2
    assert "gzip: expected true/false" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_out_is_required_to_write(capsys):
    assert main(["--lines", "10"]) == 2
    assert "--out" in capsys.readouterr().err


def test_print_config_shows_defaults_flags_and_sets_and_writes_nothing(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x"), "--lines", "5", "--set", "kind_weights=1,0,0,0",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == to_dict(SyntheticConfig(n_lines=5, kind_weights=(1, 0, 0, 0)))
    assert not (tmp_path / "x").exists()


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "ray_logmilp.synthetic", "--print-config", "--seed", "7"],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["seed"] == 7
