"""The entry scripts' shared plumbing: fast config errors, --print-config, overrides among the flags."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

import pytest
import yaml

from ray_logmilp.cli.common import job_parser, print_config, run_job
from ray_logmilp.config import ProjectConfig, from_dict, load_project

from ...conftest import REPO_ROOT

CONFIG = str(REPO_ROOT / "configs" / "synthetic.yaml")
JOBS = ("jobs/prepare.py", "jobs/train.py", "jobs/evaluate.py")

# Runs an entry script as `python jobs/x.py ...` would, then reports which heavy modules it imported.
_PROBE = """
import runpy, sys
script, *sys.argv[1:] = sys.argv[1:]
sys.argv[0] = script
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "ray", "pandas", "pyarrow") if m in sys.modules)
print("heavy modules:", heavy, file=sys.stderr)
sys.exit(code)
"""


def _run_fresh(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT)
    return proc, time.perf_counter() - t0


@pytest.mark.parametrize("script", JOBS)
@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "configuration error: unknown key 'train.epoch'; did you mean 'train.epochs'?"),
    ("train.epochs=x", "configuration error: train.epochs: expected an integer, got 'x'"),
])
def test_a_config_error_is_one_fast_line_before_torch_or_ray(script, override, message):
    proc, seconds = _run_fresh(script, "--config", CONFIG, override)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(message), proc.stderr
    assert lines[1:] == ["heavy modules: []"]
    assert seconds < 2.0


def _script(relpath: str):
    spec = importlib.util.spec_from_file_location(relpath.replace("/", "_")[:-3], REPO_ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script, flag", [("jobs/prepare.py", ["--verbose"]), ("jobs/train.py", ["--prepare"]),
                                          ("jobs/evaluate.py", ["--report-dir", "REPORT"])])
def test_overrides_anywhere_among_the_flags_and_print_config(script, flag, capsys):
    argv = ["--config", CONFIG, "train.epochs=3", *flag, "model.hidden_dim=48", "--print-config", "eval.top_k=[2]"]
    assert _script(script).main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = load_project(CONFIG, ["train.epochs=3", "model.hidden_dim=48", "eval.top_k=[2]"])
    assert from_dict(ProjectConfig, printed) == expected
    assert printed["train"]["epochs"] == 3 and printed["model"]["hidden_dim"] == 48


def test_print_config_with_smoke_test_is_refused():
    with pytest.raises(SystemExit) as exc:
        _script("jobs/train.py").main(["--smoke-test", "--print-config"])
    assert exc.value.code == 2


def test_a_job_without_a_resolver_handles_print_config_itself():
    """The sweep prints two documents (config and search space), so its body sees the flag."""
    seen = []
    assert run_job(lambda args: seen.append(args.print_config), job_parser("x"), ["--print-config"]) == 0
    assert seen == [True]


def test_the_resolver_runs_first_and_its_errors_exit_2(capsys):
    ran = []
    rc = run_job(ran.append, job_parser("x"), ["train.epoch=3"],
                 resolve=lambda args: load_project(args.config, args.overrides))
    assert rc == 2 and ran == []
    assert "did you mean 'train.epochs'" in capsys.readouterr().err


def test_print_config_accepts_mappings_of_sections(capsys):
    print_config({"project": load_project(None), "extra": {"a": (1, 2)}})
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["extra"] == {"a": [1, 2]}
    assert from_dict(ProjectConfig, printed["project"]) == load_project(None)
