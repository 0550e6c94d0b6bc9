"""Quality bars, measured the way users measure them: `jobs/evaluate.py` on a synthetic corpus.

The issue's full bars (F1 >= 0.95, Loc@3 >= 0.85, SR >= 0.95 on the 1M-line benchmark corpus, 3 seeds)
take an hour of CPU and are not met yet; the figures are on the issue. This test runs a smaller corpus
and a shorter training (one seed, about 5 minutes on 2 cores) with looser bars. The bars sit below what
this configuration measured, so they catch a model, loss or sampler change that breaks learning or
localization, which is what they are for:
- detection: the model learns all anomaly kinds from window labels alone (F1, AUC);
- localization: the heads point at the labelled line, not at any line of an anomalous window (Loc@3;
  a model whose heads pick lines at random gets about 3 / 64 ~ 0.05 here);
- reliability: removing the top line lowers the score of a good share of positive windows (SR).
"""
from __future__ import annotations

import json

import pytest

from ..conftest import REPO_ROOT
from .test_jobs import run_job

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CORPUS_LINES = 400_000
TRAINING = ["train.epochs=8", "train.steps_per_epoch=150", "train.resources_per_worker={CPU: 2}", "eval.seeds=[0]"]
# Measured with this configuration (2-core CPU, 2026-11-25, 512-dim embedding): with L_inst on (the default
# since then) F1 0.833, AUC 0.947, Loc@3 0.852, SR 0.778 (SR control 0.016); before it, F1 0.868, AUC 0.967,
# Loc@3 0.897, SR 0.835 (SR control 0.019). With the 128-dim embedding it was F1 0.770, AUC 0.909,
# Loc@3 0.254, SR 0.298, so the bars below also catch a return to that. Without both counterfactual
# terms the 1M-line run had Loc@3 0.25 and SR 0.11, so the localization bars fail when they stop working.
BARS = {"f1": 0.80, "auc": 0.93, "loc@3": 0.75, "sr": 0.65}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from ray_logmilp.synthetic.generator import SyntheticConfig, generate

    work = tmp_path_factory.mktemp("quality")
    generate(SyntheticConfig(n_lines=CORPUS_LINES, seed=0), work / "corpus")
    overrides = [f"data.inputs=[{work / 'corpus' / 'corpus.log'}]", f"data.output_dir={work / 'prepared'}",
                 f"train.bundle_dir={work / 'model'}", f"train.storage_path={work / 'ray_results'}", *TRAINING]
    config = str(REPO_ROOT / "configs" / "synthetic.yaml")
    prep = run_job("jobs/prepare.py", "--config", config, *overrides)
    assert prep.returncode == 0, prep.stderr[-3000:]
    proc = run_job("jobs/evaluate.py", "--config", config, *overrides, "--report-dir", str(work / "report"),
                   timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "report" / "metrics.json").read_text()), proc.stdout


@pytest.mark.parametrize("metric", sorted(BARS))
def test_evaluation_meets_the_ci_bar(evaluated, metric):
    metrics, stdout = evaluated
    value = metrics["summary"][metric]["mean"]
    assert value >= BARS[metric], f"{metric} = {value:.3f} < {BARS[metric]} (report:\n{stdout[-2500:]})"


def test_sr_is_well_above_its_control(evaluated):
    # SR only says the model relies on its top line if removing a random other line does not lower
    # the score just as often (a model can learn to react to the perturbation itself).
    metrics, stdout = evaluated
    sr, control = metrics["summary"]["sr"]["mean"], metrics["summary"]["sr_other_line"]["mean"]
    assert sr >= control + 0.1, f"SR {sr:.3f} vs control {control:.3f} (report:\n{stdout[-2500:]})"
