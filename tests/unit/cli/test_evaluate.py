"""jobs/evaluate.py --ablation: which rows it trains is settled (or refused) before any training."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import ray_logmilp.cli.evaluate as evaluate_job
import ray_logmilp.evaluation.ablations as ablations

REPO_ROOT = Path(__file__).resolve().parents[3]


def _script_main():
    spec = importlib.util.spec_from_file_location("evaluate_script", REPO_ROOT / "jobs" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


class _TrainingStarted(Exception):
    pass


@pytest.fixture
def chosen(monkeypatch) -> list:
    """The rows the job selected; training is replaced by an exception, so nothing trains."""
    seen: list = []
    real = ablations.select_rows

    def spy(rows, selection):
        seen.extend(real(rows, selection))
        return seen

    def no_training(*_args, **_kwargs):
        raise _TrainingStarted

    monkeypatch.setattr(ablations, "select_rows", spy)
    monkeypatch.setattr(evaluate_job, "_train_seeds", no_training)
    return seen


@pytest.mark.parametrize("argv,names", [
    (["--ablation"], [r.name for r in ablations.load_ablations()]),
    (["--ablation", "w/o L_inst,mask"], ["w/o L_inst", "mask perturbation"]),
    (["train.epochs=3", "--ablation=w/o hist"], ["w/o history window"]),
    ([], []),
])
def test_ablation_flag_picks_all_rows_or_the_named_ones(chosen, argv, names):
    with pytest.raises(_TrainingStarted):
        _script_main()(argv)
    assert [r.name for r in chosen] == names


def test_unknown_ablation_row_fails_with_the_row_names_before_training(chosen, capsys):
    assert _script_main()(["--ablation", "w/o protoypes"]) == 2
    err = capsys.readouterr().err
    assert "configuration error: --ablation 'w/o protoypes' matches no row; did you mean 'w/o prototypes'?" in err
    assert "'mask perturbation'" in err and chosen == []


@pytest.mark.parametrize("manifest", ["[1, 2]", '{"bundle_version": 3, "threshold": "high"}'])
def test_a_bad_bundle_fails_in_one_line_before_any_work(chosen, tmp_path, capsys, manifest):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bundle.json").write_text(manifest)
    assert _script_main()(["--bundle", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {bad}/bundle.json") and "Traceback" not in "\n".join(err)
    assert chosen == []
