"""``tune/sweep.py`` without Ray: importing starts nothing, --print-config, errors before any work."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

from ray_logmilp.config import ProjectConfig, from_dict, load_project
from ray_logmilp.tuning import load_search_space, parse_search_space

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tune" / "sweep.py"
HEAVY = ("ray", "torch", "optuna", "matplotlib")


def _fresh(body: str) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter with tune/sweep.py loaded as ``module``; fail if a heavy module
    got imported, else exit with ``rc`` (0 unless the body sets it)."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('sweep_cli', {str(SCRIPT)!r})\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "spec.loader.exec_module(module)\n"
            "rc = 0\n"
            f"{body}\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "sys.exit(rc)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_importing_the_package_and_the_cli_starts_nothing():
    proc = _fresh("import ray_logmilp.tuning, ray_logmilp.cli.sweep")
    assert proc.returncode == 0, proc.stderr


def test_print_config_prints_both_files_and_exits_without_ray():
    argv = ["--config", str(REPO / "configs" / "synthetic.yaml"), "--print-config", "--num-samples", "5",
            "train.epochs=4", "space.train.lr=null"]
    proc = _fresh(f"rc = module.main({argv!r})")
    assert proc.returncode == 0, proc.stderr
    project, search = yaml.safe_load_all(proc.stdout)
    cfg = from_dict(ProjectConfig, project)
    assert cfg == load_project(REPO / "configs" / "synthetic.yaml", ["train.epochs=4"])
    spec = parse_search_space(search)
    assert spec == load_search_space(REPO / "configs" / "search" / "default.yaml",
                                     ["search.num_samples=5", "space.train.lr=null"])


def test_a_bad_search_key_exits_2_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("space:\n  loss.lambda_x: {type: loguniform, low: 0.01, high: 1.0}\n")
    argv = ["--config", str(REPO / "configs" / "synthetic.yaml"), "--search", str(bad), "--print-config"]
    proc = _fresh(f"rc = module.main({argv!r})")
    assert proc.returncode == 2
    assert f"{bad}: space.loss.lambda_x: unknown key" in proc.stderr
    assert "did you mean 'space.loss.lambda_" in proc.stderr
    assert proc.stdout == ""


def test_resume_needs_a_name():
    spec = importlib.util.spec_from_file_location("sweep_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--resume"]) == 2
