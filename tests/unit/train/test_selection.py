"""Which epoch becomes the bundle: the highest val_select = val_f1 + SELECT_SR_WEIGHT · val_sr (0.5).

Validation F1 alone saturated within two epochs on the serve tests' small corpus, so the first epoch that
detected was kept, before localization had formed (test Loc@3 0.20, SR 0.00, against 0.83 / 0.69 for
the epoch kept by F1 + 0.5·SR). These tests pin the score and the choice, without Ray.
"""
import math

import numpy as np
import pytest

from ray_logmilp.train import SELECT_METRIC, LocalContext, validation_metrics
from ray_logmilp.train.loop import SELECT_SR_WEIGHT


def _scores():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p_orig = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.95])
    p_pert = np.array([0.1, 0.2, 0.3, 0.2, 0.75, 0.1, 0.9])    # removing the top line: drops of .7 .05 .6 .05
    return y, p_orig, p_pert


def test_val_select_adds_the_weighted_success_rate():
    y, p_orig, p_pert = _scores()
    m = validation_metrics(y, p_orig, p_pert, delta_sr=0.1)
    assert m["val_f1"] == pytest.approx(1.0)
    assert m["val_sr"] == pytest.approx(0.5)                    # 2 of 4 positive bags drop by more than 0.1
    assert SELECT_SR_WEIGHT == 0.5 and m[SELECT_METRIC] == pytest.approx(1.0 + 0.5 * 0.5)


def test_val_select_without_positive_bags_is_defined():
    m = validation_metrics(np.zeros(4, int), np.full(4, 0.2), np.full(4, 0.2), 0.1)
    assert m[SELECT_METRIC] == 0.0 and math.isnan(m["val_sr"])


def test_the_kept_epoch_is_the_best_by_val_select_not_by_f1(tmp_path):
    ctx = LocalContext(str(tmp_path / "run"))
    history = [  # F1 saturates at epoch 1; epoch 2 localizes
        {"epoch": 0, "val_f1": 0.7, "val_sr": 0.0},
        {"epoch": 1, "val_f1": 1.0, "val_sr": 0.05},
        {"epoch": 2, "val_f1": 0.93, "val_sr": 0.55},
        {"epoch": 3, "val_f1": 0.8, "val_sr": 0.5},
    ]
    for m in history:
        ckpt = tmp_path / f"ckpt_{m['epoch']}"
        ckpt.mkdir()
        ctx.report({**m, SELECT_METRIC: m["val_f1"] + 0.5 * m["val_sr"]}, str(ckpt))
    assert ctx.best[1].endswith("checkpoint_0002")

